"""The command line: each subcommand is registered by the module COMMANDS names, so a
workflow job imports only its own stage."""

import argparse
import importlib
import subprocess

from dsa110_contimg.cli import COMMANDS, STAGE_MODULES, build_parser

from pipeline import BIN


def test_every_module_registers_the_commands_mapped_to_it():
    registered = {}
    for name in STAGE_MODULES:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"dsa110_contimg.{name}").register_cli(sub)
        registered.update({command: name for command in sub.choices})
    assert registered == COMMANDS


def test_a_command_builds_only_its_module():
    parser = build_parser(["-v", "mosaic-plan", "--help"])
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(commands.choices) == ["mosaic", "mosaic-plan"]
    everything = build_parser(["--help"])
    commands = next(a for a in everything._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(commands.choices) == sorted(COMMANDS)


def test_a_job_does_not_import_other_stages():
    code = (
        "import sys; from dsa110_contimg.cli import build_parser; "
        "build_parser(['checksums', 'x']); "
        "print(sorted(m for m in sys.modules if m.startswith('dsa110_contimg.')))"
    )
    out = subprocess.run(
        [str(BIN / "python"), "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "dsa110_contimg.reproducibility" in out
    assert "dsa110_contimg.imaging" not in out and "dsa110_contimg.photometry" not in out
