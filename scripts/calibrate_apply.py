"""Snakemake adapter: write results/ms_cal/{group}.ms as the selection says."""

import logging

from dsa110_contimg.calibration.calibrate import apply_from_selection

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
apply_from_selection(
    snakemake.input.ms,
    snakemake.input.selection,
    snakemake.wildcards.group,
    snakemake.output.ms,
    snakemake.output.qa,
    cal_dir=snakemake.input.cal[0] if len(snakemake.input.cal) else None,
    interp=snakemake.params.interp,
)
