"""Snakemake adapter: choose the calibrator group of every group."""

from dsa110_contimg.calibration.select import write_selection
from dsa110_contimg.cli import configure_logging

configure_logging(filename=snakemake.log[0])
write_selection(
    snakemake.input.manifest,
    list(snakemake.input.qa),
    snakemake.output.selection,
    snakemake.output.report,
    validity_hours=snakemake.params.validity_hours,
    fallback=snakemake.params.fallback,
)
