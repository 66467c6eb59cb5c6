"""Helpers for tests that run the real workflow: run snakemake, read which jobs ran,
compare products with a clean run's."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL_GROUPS = ["2026-01-01T000000", "2026-01-01T000144"]
MS_COLUMNS = (
    "TIME",
    "ANTENNA1",
    "ANTENNA2",
    "UVW",
    "DATA",
    "CORRECTED_DATA",
    "MODEL_DATA",
    "FLAG",
    "WEIGHT_SPECTRUM",
)


def env(**extra):
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e['PATH']}"
    e.update({k: str(v) for k, v in extra.items()})
    return e


FAST_IMAGING = Path(__file__).with_name("fast-imaging.yaml")


def failure_report(log, tail_lines=40):
    """What a failed run's output says went wrong, short enough to survive a truncated CI
    log: each `Error in rule` block of snakemake's output, the last `tail_lines` lines of
    every log file it names, then the end of the output itself."""
    parts = []
    for block in re.findall(r"Error in rule .*?(?=\n\S|\Z)", log, flags=re.S):
        parts.append(block.strip())
        for name in re.findall(r"log: (\S+)", block):
            path = Path(name)
            text = path.read_text(errors="replace") if path.is_file() else "(no such file)"
            last = "\n".join(text.splitlines()[-tail_lines:])
            parts.append(f"--- last lines of {path}:\n{last}")
    parts.append("--- end of the run's output:\n" + log[-3000:])
    return "\n".join(parts)


def _test_options(archive, results, config=()):
    """Snakemake options for a test run: 2 cores, the fast imaging overlay, the archive
    and results directories (and further `config` key=value items)."""
    return [
        "--cores",
        "2",
        "--configfile",
        str(FAST_IMAGING),
        "--config",
        f"archive_dir={archive}",
        f"results_dir={results}",
        *config,
    ]


def snakemake_cmd(archive, results, *args, profile="profiles/local", config=()):
    """The pipeline command line for a test archive and results directory."""
    return [
        str(BIN / "snakemake"),
        *args,
        "--profile",
        profile,
        *_test_options(archive, results, config),
    ]


def readme_run(archive, results, *args, config=(), **popen):
    """The README's command (`dsa110-contimg run -- --config archive_dir=... results_dir=...`)
    on a test archive, with the test imaging overlay (and further `config` items)."""
    cmd = [
        str(BIN / "dsa110-contimg"),
        "run",
        "--",
        *args,
        *_test_options(archive, results, config),
    ]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def run(
    archive, results, *args, profile="profiles/local", config=(), timeout=900, wrap=(), **env_extra
):
    """Run snakemake to completion; returns (exit status, combined output)."""
    cmd = [*wrap, *snakemake_cmd(archive, results, *args, profile=profile, config=config)]
    out = subprocess.run(
        cmd,
        cwd=REPO,
        env=env(**env_extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return out.returncode, out.stdout


def product_targets(results, groups=SMALL_GROUPS):
    """Explicit targets for the stages every test needs: the MSs and the manifest QA."""
    return [str(Path(results) / "ms" / f"{g}.ms") for g in groups] + [
        str(Path(results) / "qa" / "manifest" / "timeline.png")
    ]


_JOB_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")


def executed_jobs(log):
    """(rule, wildcards dict) of every job a snakemake log shows starting, in order
    (retried attempts appear again)."""
    jobs = []
    for line in log.splitlines():
        m = _JOB_START.match(line.strip()) if not line.startswith(" ") else None
        if m:
            jobs.append((m.group(1), {}))
            continue
        w = _WILDCARDS.match(line)
        if w and jobs:
            jobs[-1][1].update(dict(kv.split("=", 1) for kv in w.group(1).split(", ")))
    return [(rule, wc) for rule, wc in jobs if rule != "all"]


def slurm_job_ids(log):
    """{SLURM job id: (snakemake rule, wildcards path)} from the plugin's submission lines."""
    found = re.findall(
        r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/?(\S*?)/\d+\.log\)", log
    )
    return {int(j): (rule, wc) for j, rule, wc in found}


def ms_table(ms):
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        cols = {c: t.getcol(c) for c in MS_COLUMNS}
    with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
        cols["CHAN_FREQ"] = t.getcol("CHAN_FREQ")
    return cols


def assert_ms_equal(a, b):
    ta, tb = ms_table(a), ms_table(b)
    for col in ta:
        assert np.array_equal(ta[col], tb[col]), f"{a} and {b} differ in {col}"


def manifest_table(results):
    g = pd.read_parquet(Path(results) / "manifest" / "groups.parquet")
    return g.drop(columns=["files"]).reset_index(drop=True)


def assert_products_equal(results, clean, groups=SMALL_GROUPS):
    """The MSs of `groups`, the manifest and the manifest QA counts equal the clean run's."""
    results, clean = Path(results), Path(clean)
    ms = sorted(p.name for p in (results / "ms").iterdir())
    assert ms == sorted(f"{g}.ms" for g in groups), ms
    for g in groups:
        assert_ms_equal(results / "ms" / f"{g}.ms", clean / "ms" / f"{g}.ms")
    pd.testing.assert_frame_equal(manifest_table(results), manifest_table(clean))
    qa, qa_clean = (
        json.loads((r / "qa" / "manifest" / "summary.json").read_text()) for r in (results, clean)
    )
    for key in ("n_groups_complete", "n_groups_used", "n_subband_files", "incomplete_groups"):
        assert qa[key] == qa_clean[key], key


def no_partials(results):
    """Leftovers of interrupted atomic writes under `results`."""
    return sorted(str(p) for p in Path(results).rglob("*.partial-*"))
