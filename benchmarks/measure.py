"""Timing and memory of a command, the one way every benchmark here measures them.

Memory is the peak of the summed proportional set size (PSS) of the process and all its
children, sampled every `interval_s`: shared pages are split between the processes that
share them, so forked workers and shared libraries are not counted twice (a sum of RSS
would be). psutil comes with snakemake.
"""

import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("dsa110-contimg"))


def tree_pss(proc):
    """Summed PSS (bytes) of `proc` and its descendants; processes that end meanwhile
    are skipped."""
    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def measure(cmd, interval_s=0.1, **popen):
    """Run `cmd` to completion; returns (wall seconds, peak PSS of the tree in GiB).
    A failing command stops the benchmark with its exit status."""
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, **popen)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc))
        time.sleep(interval_s)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed with status {proc.returncode}")
    return time.perf_counter() - t0, peak / 2**30


def run(cmd):
    """Run a set-up command (not measured), failing loudly."""
    subprocess.run([str(c) for c in cmd], check=True)
