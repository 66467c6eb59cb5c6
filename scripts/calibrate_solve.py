"""Snakemake adapter: solve one calibrator group (a failed solve is written to its QA)."""

import logging

from dsa110_contimg.calibration.calibrate import settings_from_config, solve_from_manifest

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
solve_from_manifest(
    snakemake.input.ms,
    snakemake.input.manifest,
    snakemake.input.catalog,
    snakemake.wildcards.calgroup,
    snakemake.output.cal,
    snakemake.output.qa,
    snakemake.output.png,
    settings_from_config(snakemake.params.settings),
)
