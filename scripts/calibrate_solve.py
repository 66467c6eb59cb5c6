"""Snakemake adapter: solve one calibrator group (a failed solve is written to its QA)."""

from dsa110_contimg.calibration.calibrate import settings_from_config, solve_from_manifest
from dsa110_contimg.cli import configure_logging

configure_logging(filename=snakemake.log[0])
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
