"""Snakemake adapter: gather per-image photometry into the time series, leaving out
images whose QA failed (named in the log)."""

import logging

from dsa110_contimg.cli import configure_logging
from dsa110_contimg.photometry.forced import gather_timeseries
from dsa110_contimg.qa import passed_products

configure_logging(filename=snakemake.log[0])
log = logging.getLogger("gather_timeseries")
keep, excluded = passed_products(
    snakemake.input.photometry, snakemake.input.qa, snakemake.input.flag_qa
)
for parquet, reports in excluded.items():
    log.warning("left out %s: QA failed (%s)", parquet, ", ".join(reports))
if not keep:
    log.warning("no image passed QA: the time series is empty")
gather_timeseries(keep, snakemake.output[0])
log.info("time series from %d of %d images", len(keep), len(snakemake.input.photometry))
