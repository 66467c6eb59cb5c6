# The reference catalog made from the data: deep images of the QA-passed images per
# field, searched by PyBDSF (results/catalog/reference.parquet); and, for
# photometry_catalog: union, the sky catalog joined with it.

from dsa110_contimg.reference_catalog import ReferenceCatalogSettings


rule reference_catalog:
    """D = sum(P I / s^2) / sum(P^2 / s^2) per field, PyBDSF sources, reference flags,
    matched to the sky catalog when there is one."""
    input:
        images=imaged("image"),
        pbs=imaged("pb"),
        residuals=imaged("residual"),
        qa=photometry_qa_reports,
        catalog=[SKY_CATALOG] if SKY_CATALOG else [],
    output:
        catalog=f"{RESULTS}/catalog/reference.parquet",
        deep=directory(f"{RESULTS}/catalog/deep"),
    log:
        f"{RESULTS}/logs/reference_catalog/reference_catalog.log",
    benchmark:
        f"{RESULTS}/benchmarks/reference_catalog/reference_catalog.tsv"
    conda:
        "../envs/contimg.yaml"
    threads: config["reference_catalog"]["ncores"]
    resources:
        mem_mb=scaled_by_attempt("reference_catalog", "mem_mb"),
        runtime=scaled_by_attempt("reference_catalog", "runtime_min"),
    params:
        cfg=json_config("reference_catalog", ReferenceCatalogSettings),
        beam_arcsec=config["photometry"]["reference_max_size_arcsec"],
        confusion_arcsec=config["photometry"]["reference_confusion_arcsec"],
    script:
        "../scripts/reference_catalog.py"


rule photometry_catalog_union:
    """Every sky-catalog source and the reference sources it lacks."""
    input:
        catalog=SKY_CATALOG or [],
        reference=f"{RESULTS}/catalog/reference.parquet",
    output:
        f"{RESULTS}/catalog/union.parquet",
    log:
        f"{RESULTS}/logs/photometry_catalog/union.log",
    conda:
        "../envs/contimg.yaml"
    params:
        radius=config["reference_catalog"]["match_radius_arcsec"],
    shell:
        "dsa110-contimg photometry-catalog union --catalog {input.catalog:q}"
        " --reference {input.reference:q} --match-radius-arcsec {params.radius}"
        " --out {output:q} 2> {log:q}"
