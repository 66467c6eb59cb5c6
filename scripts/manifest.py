"""Snakemake adapter for the manifest checkpoint: every raw file under the archive
directory (the rule's `archive_state` parameter says when that set changed)."""

from dsa110_contimg.cli import configure_logging
from dsa110_contimg.ingest.manifest import find_archive_files, write_manifest
from dsa110_contimg.ingest.pointings import write_pointings

configure_logging(filename=snakemake.log[0])
groups, _ = write_manifest(
    find_archive_files(snakemake.params.archive),
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
