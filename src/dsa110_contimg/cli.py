"""The `dsa110-contimg` command: one subcommand per pipeline stage.

Each stage module named in COMMANDS defines `register_cli(subparsers)`, which adds its
subcommand(s) and sets `func` on the parser; a command imports only the module that
registers it, and heavy imports stay inside the handlers.
"""

import argparse
import importlib
import logging
import sys

from dsa110_contimg import __version__
from dsa110_contimg.sanity import EXIT_REJECTED, ProductRejected

COMMANDS = {
    "simulate": "simulation.visibilities",
    "manifest": "ingest.manifest",
    "qa-manifest": "workflow.timeline",
    "convert": "ingest.convert",
    "flag": "flagging",
    "calibrate-solve": "calibration.solve",
    "calibrate-select": "calibration.select",
    "calibrate-apply": "calibration.apply",
    "image": "imaging.image",
    "qa-image": "qa",
    "qa-mosaic": "qa",
    "qa-summary": "qa",
    "mosaic": "mosaic",
    "mosaic-plan": "mosaic",
    "catalog": "catalogs",
    "reference-catalog": "reference_catalog",
    "photometry-catalog": "reference_catalog",
    "photometry": "photometry.forced",
    "gather": "photometry.forced",
    "normalize": "photometry.normalize",
    "ese-detect": "variability.ese",
    "alerts": "variability.ese",
    "ese-page": "variability.ese",
    "run": "workflow.runner",
    "summary": "summary",
    "checksums": "reproducibility",
    "compare": "reproducibility",
}
"""{subcommand: the module that registers it}: a workflow job imports only its own stage
(each module's imports cost ~0.5-1 s of every job's start-up)."""
STAGE_MODULES = list(dict.fromkeys(COMMANDS.values()))


def _command(argv):
    """The subcommand named in `argv` (the first argument not an option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv=None):
    """The parser, with the subcommands of every stage module, or only those of the module
    registering the subcommand `argv` names."""
    parser = argparse.ArgumentParser(
        prog="dsa110-contimg",
        description="DSA-110 continuum imaging pipeline, stage by stage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    command = _command(sys.argv[1:] if argv is None else argv)
    modules = [COMMANDS[command]] if command in COMMANDS else STAGE_MODULES
    for name in modules:
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
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        from dsa110_contimg.workflow.faults import fail_once_if_requested

        fail_once_if_requested(args.command, getattr(args, "group", None))
        return args.func(args) or 0
    except ProductRejected:
        return EXIT_REJECTED
    except (FileNotFoundError, ValueError, OSError) as err:
        logging.getLogger("dsa110_contimg").error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
