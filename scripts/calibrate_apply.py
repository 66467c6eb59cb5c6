"""Snakemake adapter: write results/ms_cal/{group}.ms as the selection says."""

from dsa110_contimg.calibration.apply import apply_from_selection
from dsa110_contimg.cli import configure_logging

configure_logging(filename=snakemake.log[0])
apply_from_selection(
    snakemake.input.ms,
    snakemake.input.selection,
    snakemake.wildcards.group,
    snakemake.output.ms,
    snakemake.output.qa,
    cal_dir=snakemake.input.cal[0] if len(snakemake.input.cal) else None,
    interp=snakemake.params.interp,
)
