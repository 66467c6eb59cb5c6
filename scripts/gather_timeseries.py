"""Snakemake adapter: gather per-image photometry into the time series, leaving out
images whose QA failed (named in the log)."""

import logging

from dsa110_contimg.photometry import gather_timeseries
from dsa110_contimg.qa import passed

logging.basicConfig(filename=snakemake.log[0], level=logging.INFO,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("gather_timeseries")
keep = []
for parquet, report in zip(snakemake.input.photometry, snakemake.input.qa):
    if passed(report):
        keep.append(parquet)
    else:
        log.warning("left out %s: image QA failed (%s)", parquet, report)
if not keep:
    log.warning("no image passed QA: the time series is empty")
gather_timeseries(keep, snakemake.output[0])
log.info("time series from %d of %d images", len(keep), len(snakemake.input.photometry))
