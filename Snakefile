# dsa110-contimg: raw DSA-110 UVH5 archive -> Measurement Sets (-> calibration, images,
# mosaics, light curves as later stages land). See README.md and ../DESIGN.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"
include: "rules/manifest.smk"
include: "rules/convert.smk"


rule all:
    input:
        all_measurement_sets,
    default_target: True
