"""The `dsa110-contimg` command: one subcommand per pipeline stage.

Each stage module listed in STAGE_MODULES defines `register_cli(subparsers)`, which adds
its subcommand(s) and sets `func` on the parser; heavy imports stay inside the handlers
so `dsa110-contimg --help` is fast.
"""

import argparse
import importlib
import logging
import sys

from dsa110_contimg import __version__

STAGE_MODULES = [
    "simulation.visibilities",
    "ingest.manifest",
    "workflow.timeline",
    "ingest.convert",
    "flagging",
    "calibration.solve",
    "calibration.select",
    "calibration.apply",
    "imaging.image",
    "qa",
    "mosaic",
    "catalogs",
    "reference_catalog",
    "photometry.forced",
    "photometry.normalize",
    "variability.ese",
    "workflow.runner",
    "summary",
    "reproducibility",
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="dsa110-contimg",
        description="DSA-110 continuum imaging pipeline, stage by stage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(f"dsa110_contimg.{name}").register_cli(sub)
    return parser


def configure_logging(verbose=False, filename=None):
    """Log lines with time, level and module, INFO and up (DEBUG with `verbose`), to
    `filename` (a Snakemake rule's log) or else to stderr."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        **({"filename": filename} if filename else {"stream": sys.stderr}),
    )


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        from dsa110_contimg.workflow.faults import fail_once_if_requested

        fail_once_if_requested(args.command, getattr(args, "group", None))
        return args.func(args) or 0
    except (FileNotFoundError, ValueError, OSError) as err:
        logging.getLogger("dsa110_contimg").error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
