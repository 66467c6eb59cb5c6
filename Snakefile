# dsa110-contimg: raw DSA-110 UVH5 archive -> manifest -> Measurement Sets (flagged) ->
# calibration -> images -> QA -> mosaics -> forced photometry -> ESE candidates and alerts.
# See README.md and docs/design.md.
import gc

from snakemake.utils import min_version

from dsa110_contimg.configuration import check_config

min_version("9.0")

# A month of archive is ~54,000 jobs, millions of small objects in Snakemake's DAG that
# Python's cyclic garbage collector would walk again and again as the DAG grows. Young
# objects are still collected, the old generation rarely: the month's dry run 136 s ->
# 115 s at the same peak memory (benchmarks/README.md).
gc.set_threshold(50_000, 20, 100)


configfile: "config/config.yaml"


# Every value against config/schema.yaml and every input the config names, before any job
# runs: one message listing each bad key. `snakemake --lint` checks the values only (it
# skips the run's environment, as it skips `envvars:`), so it works before the demo exists.
check_config(config, f"{workflow.basedir}/config/schema.yaml", check_paths=workflow.check_envvars)


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/manifest.smk"
include: "rules/convert.smk"
include: "rules/calibrate.smk"
include: "rules/timeline.smk"
include: "rules/image.smk"
include: "rules/mosaic.smk"
include: "rules/qa.smk"
include: "rules/reference_catalog.smk"
include: "rules/photometry.smk"


# Everything a full run makes; rules/checksums.smk checksums them.
RUN_PRODUCTS = [
    all_measurement_sets,
    all_calibrated_measurement_sets,
    f"{RESULTS}/qa/manifest/timeline.png",
    all_images,
    all_mosaics,
    f"{RESULTS}/qa/summary.parquet",
    all_photometry,
]


include: "rules/checksums.smk"


rule all:
    default_target: True
    input:
        *RUN_PRODUCTS,
        f"{RESULTS}/checksums.sha256",


rule calibrated:
    """Stop at calibrated Measurement Sets (results/ms_cal): `snakemake calibrated`."""
    input:
        all_calibrated_measurement_sets,
