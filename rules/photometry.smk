# Forced photometry per image and per mosaic -> time series -> normalization ->
# variability and ESE candidates -> alerts: all chained in the DAG once images exist.

from dsa110_contimg.photometry.forced import PhotometrySettings
from dsa110_contimg.photometry.normalize import NormalizeSettings
from dsa110_contimg.variability.ese import ESESettings


rule photometry_image:
    """Forced photometry of one group's image at catalog positions."""
    input:
        image=f"{RESULTS}/images/{{group}}/image.fits",
        pb=f"{RESULTS}/images/{{group}}/pb.fits",
        catalog=photometry_catalog,
    output:
        f"{RESULTS}/photometry/images/{{group}}.parquet",
    log:
        f"{RESULTS}/logs/photometry_image/{{group}}.log",
    # In the group's imaging cluster job when it measures the input sky catalog; the
    # reference and union catalogs are made from every group's image, so with those it is
    # a job of its own (inside the group job it would wait on a job that waits on it).
    group:
        "imaging" if PHOTOMETRY_CATALOG == "input" else None
    conda:
        "../envs/contimg.yaml"
    params:
        cfg=json_config("photometry", PhotometrySettings),
    shell:
        "dsa110-contimg photometry {input.image:q} --pb {input.pb:q} --catalog {input.catalog:q}"
        " --out {output:q} --image-id {wildcards.group} --config-json {params.cfg:q}"
        " > {log:q} 2>&1"


rule photometry_mosaic:
    """Forced photometry of one mosaic (already primary-beam corrected)."""
    input:
        image=f"{RESULTS}/mosaics/{{mosaic}}/mosaic.fits",
        catalog=photometry_catalog,
    output:
        f"{RESULTS}/photometry/mosaics/{{mosaic}}.parquet",
    log:
        f"{RESULTS}/logs/photometry_mosaic/{{mosaic}}.log",
    # In its mosaic's cluster job (rules/mosaic.smk); the reference catalog it may read
    # is made from the groups' images, not from mosaics.
    group:
        "mosaic"
    conda:
        "../envs/contimg.yaml"
    params:
        cfg=json_config("photometry", PhotometrySettings),
    shell:
        "dsa110-contimg photometry {input.image:q} --no-pb-correct --catalog {input.catalog:q}"
        " --out {output:q} --image-id {wildcards.mosaic} --config-json {params.cfg:q}"
        " > {log:q} 2>&1"


rule gather_timeseries:
    """All per-image photometry as one time series, without images that failed QA."""
    input:
        photometry=photometry_parquets,
        qa=photometry_qa_reports,
        flag_qa=photometry_flag_reports,
    output:
        f"{RESULTS}/photometry/timeseries.parquet",
    log:
        f"{RESULTS}/logs/gather_timeseries/gather.log",
    conda:
        "../envs/contimg.yaml"
    script:
        "../scripts/gather_timeseries.py"


rule normalize:
    """Per-epoch relative flux normalization against stable bright reference sources."""
    input:
        timeseries=f"{RESULTS}/photometry/timeseries.parquet",
        catalog=photometry_catalog,
    output:
        f"{RESULTS}/photometry/normalized.parquet",
    log:
        f"{RESULTS}/logs/normalize/normalize.log",
    conda:
        "../envs/contimg.yaml"
    params:
        cfg=json_config("photometry", NormalizeSettings),
    shell:
        "dsa110-contimg normalize {input.timeseries:q} {output:q} --catalog {input.catalog:q}"
        " --config-json {params.cfg:q} > {log:q} 2>&1"


rule ese_detect:
    """Variability statistics and ESE candidates from the normalized light curves."""
    input:
        f"{RESULTS}/photometry/normalized.parquet",
    output:
        stats=f"{RESULTS}/ese/variability_stats.parquet",
        candidates=f"{RESULTS}/ese/ese_candidates.parquet",
        csv=f"{RESULTS}/ese/ese_candidates.csv",
    log:
        f"{RESULTS}/logs/ese_detect/ese_detect.log",
    conda:
        "../envs/contimg.yaml"
    threads: 2
    params:
        outdir=lambda wildcards, output: str(Path(output.stats).parent),
        cfg=json_config("ese", ESESettings),
    shell:
        "dsa110-contimg ese-detect --timeseries {input:q} --outdir {params.outdir:q}"
        " --config-json {params.cfg:q} --recompute --workers {threads} > {log:q} 2>&1"


rule ese_candidates_page:
    """A page to vet the candidates: light curve with the ESE and null models, depth per
    sub-band, image cutouts before/during/after the dip, the table row."""
    input:
        candidates=f"{RESULTS}/ese/ese_candidates.parquet",
        timeseries=f"{RESULTS}/photometry/normalized.parquet",
    output:
        report(
            f"{RESULTS}/ese/candidates.html",
            caption="../report/ese_candidates.rst",
            category="ESE",
        ),
    log:
        f"{RESULTS}/logs/ese_candidates_page/page.log",
    conda:
        "../envs/contimg.yaml"
    params:
        images=f"{RESULTS}/images",
    shell:
        "dsa110-contimg ese-page --candidates {input.candidates:q}"
        " --timeseries {input.timeseries:q} --images-dir {params.images:q}"
        " --out {output:q} > {log:q} 2>&1"


rule alerts:
    """Append candidates not alerted before to ese/alerts.jsonl (a ledger kept across
    runs, so it is not a rule output Snakemake would delete) and write each as a VOEvent
    2.0 packet in ese/voevents/; alerts.last.json says what this run added."""
    input:
        f"{RESULTS}/ese/ese_candidates.parquet",
    output:
        f"{RESULTS}/ese/alerts.last.json",
    log:
        f"{RESULTS}/logs/alerts/alerts.log",
    conda:
        "../envs/contimg.yaml"
    params:
        ledger=lambda wildcards, output: str(Path(output[0]).with_name("alerts.jsonl")),
        command=(
            f"--command {shlex.quote(config['ese']['alert_command'])}"
            if config["ese"]["alert_command"]
            else ""
        ),
    shell:
        "dsa110-contimg alerts --candidates {input:q} --out {params.ledger:q} {params.command}"
        " > {output:q} 2> {log:q}"
