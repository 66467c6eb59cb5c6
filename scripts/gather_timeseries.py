"""Snakemake adapter: gather per-image photometry into the time series, leaving out
images whose QA failed (named in the log)."""

from dsa110_contimg.cli import configure_logging
from dsa110_contimg.photometry.forced import gather_timeseries

configure_logging(filename=snakemake.log[0])
gather_timeseries(
    snakemake.input.photometry, snakemake.output[0], snakemake.input.qa, snakemake.input.flag_qa
)
