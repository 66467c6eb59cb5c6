"""Snakemake adapter: choose the calibrator group of every group."""

import logging

from dsa110_contimg.calibration.calibrate import write_selection

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
write_selection(
    snakemake.input.manifest,
    list(snakemake.input.qa),
    snakemake.output.selection,
    snakemake.output.report,
    validity_hours=snakemake.params.validity_hours,
    fallback=snakemake.params.fallback,
)
