# Image and mosaic QA: qa/{image,mosaic}/{name}.json + .png, and
# qa/summary.parquet over every QA report (calibration's included).

from dsa110_contimg.qa import QASettings


rule qa_image:
    """Noise, beam, dynamic range and the catalog comparison of one image."""
    input:
        image=f"{RESULTS}/images/{{group}}/image.fits",
        pb=f"{RESULTS}/images/{{group}}/pb.fits",
        residual=f"{RESULTS}/images/{{group}}/residual.fits",
        catalog=[SKY_CATALOG] if SKY_CATALOG else [],
    output:
        json=f"{RESULTS}/qa/image/{{group}}.json",
        png=report(
            f"{RESULTS}/qa/image/{{group}}.png",
            category="QA",
            subcategory="images",
            labels={"image": "{group}"},
        ),
    log:
        f"{RESULTS}/logs/qa_image/{{group}}.log",
    # Cluster job of the group's chain from calibrate_apply (rules/calibrate.smk).
    group:
        "imaging"
    conda:
        "../envs/contimg.yaml"
    params:
        catalog=catalog_option,
        cfg=json_config("qa", QASettings),
    shell:
        "dsa110-contimg qa-image {input.image:q} --pb {input.pb:q}"
        " --residual {input.residual:q} {params.catalog} --config-json {params.cfg:q}"
        " --json {output.json:q} --png {output.png:q} 2> {log:q}"


rule qa_mosaic:
    """Noise, beam, dynamic range and the catalog comparison of one mosaic."""
    input:
        mosaic=f"{RESULTS}/mosaics/{{mosaic}}/mosaic.fits",
        weight=f"{RESULTS}/mosaics/{{mosaic}}/weight.fits",
        catalog=[SKY_CATALOG] if SKY_CATALOG else [],
    output:
        json=f"{RESULTS}/qa/mosaic/{{mosaic}}.json",
        png=report(
            f"{RESULTS}/qa/mosaic/{{mosaic}}.png",
            category="QA",
            subcategory="mosaics",
            labels={"mosaic": "{mosaic}"},
        ),
    log:
        f"{RESULTS}/logs/qa_mosaic/{{mosaic}}.log",
    # In its mosaic's cluster job (rules/mosaic.smk).
    group:
        "mosaic"
    conda:
        "../envs/contimg.yaml"
    params:
        catalog=catalog_option,
        cfg=json_config("qa", QASettings),
    shell:
        "dsa110-contimg qa-mosaic {input.mosaic:q} --weight {input.weight:q}"
        " {params.catalog} --config-json {params.cfg:q} --json {output.json:q} --png {output.png:q}"
        " 2> {log:q}"


rule qa_summary:
    """One row per QA'd product; failed products named in the log and the table."""
    input:
        all_qa_reports,
    output:
        f"{RESULTS}/qa/summary.parquet",
    log:
        f"{RESULTS}/logs/qa_summary/qa_summary.log",
    conda:
        "../envs/contimg.yaml"
    shell:
        "dsa110-contimg qa-summary {input:q} --out {output:q} 2> {log:q}"
