"""Snakemake adapter: the reference catalog from every imaged group (images whose QA
failed are left out and named in the log); the file lists stay off the command line."""

import json

from dsa110_contimg.cli import configure_logging
from dsa110_contimg.reference_catalog import ReferenceCatalogSettings, build_reference_catalog

configure_logging(filename=snakemake.log[0])
build_reference_catalog(
    snakemake.input.images,
    snakemake.input.pbs,
    snakemake.output.catalog,
    snakemake.output.deep,
    residuals=snakemake.input.residuals,
    reports=snakemake.input.qa,
    sky_catalog=snakemake.input.catalog[0] if snakemake.input.catalog else None,
    settings=ReferenceCatalogSettings.from_config(json.loads(snakemake.params.cfg)),
    beam_arcsec=snakemake.params.beam_arcsec,
    confusion_arcsec=snakemake.params.confusion_arcsec,
)
