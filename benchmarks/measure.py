"""Timing and memory of a command, the one way every benchmark here measures them.

Memory is the peak of the summed proportional set size (PSS) of the process and all its
children, sampled every `interval_s`: shared pages are split between the processes that
share them, so forked workers and shared libraries are not counted twice (a sum of RSS
would be). psutil comes with snakemake.
"""

import resource
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
    return measure_cpu(cmd, interval_s, **popen)[:2]


def measure_cpu(cmd, interval_s=0.1, **popen):
    """As `measure`, plus the CPU seconds (user + system) of the command and every
    descendant its processes waited for: (wall s, peak GiB, CPU s)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, **popen)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc))
        time.sleep(interval_s)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed with status {proc.returncode}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, peak / 2**30, cpu


def run(cmd):
    """Run a set-up command (not measured), failing loudly."""
    subprocess.run([str(c) for c in cmd], check=True)
