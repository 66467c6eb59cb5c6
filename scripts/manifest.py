"""Snakemake adapter for the manifest checkpoint: the archive's files come as the rule's
input (no command-line length limit for a month of archive)."""

from dsa110_contimg.cli import configure_logging
from dsa110_contimg.ingest.manifest import write_manifest
from dsa110_contimg.ingest.pointings import write_pointings

configure_logging(filename=snakemake.log[0])
groups, _ = write_manifest(
    snakemake.input.files,
    snakemake.output.groups,
    snakemake.output.rejected,
    tolerance_s=snakemake.params.tolerance,
    expected_subbands=range(snakemake.params.n_subbands),
    start=snakemake.params.start,
    end=snakemake.params.end,
    calibrators=snakemake.input.calibrators,
    beam_fraction=snakemake.params.beam_fraction,
)
write_pointings(
    groups, snakemake.input.calibrators, snakemake.output.pointings, snakemake.params.beam_fraction
)
