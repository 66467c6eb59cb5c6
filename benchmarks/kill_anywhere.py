"""Kill anywhere: SIGKILL the whole workflow at seeded random moments, rerun the README's
command, and compare every product with a clean run's.

The archive (simulated once into WORKDIR/archive and reused): the 'test' preset (10
stations, 16 subbands x 2 channels, 8 integrations), two groups a day for five days (10
groups), J0834+555 transiting in each day's first group, so every day is calibrated from
its own calibrator group; 30 field sources, 3% gain error per group. It goes through
conversion, calibration (CASA solve and apply), WSClean imaging and QA, a mosaic per day,
forced photometry, light curves and ESE detection.

Every run is the README's command, `dsa110-contimg run -- --config archive_dir=...
results_dir=...`, with the demo overlay (each day's two images make one mosaic) and the
tests' fast-imaging overlay. Steps:

1. a clean run into WORKDIR/clean (reused when WORKDIR/clean.json exists): its wall time,
   the jobs' timeline from its Snakemake log, and the checksums of every science product
   (`dsa110_contimg.reproducibility`: FITS data and headers, Parquet tables, JSON; for MSs
   and calibration tables the main table's columns);
2. for each of K kill points: a fresh results directory, the same command started in its
   own session, and at a moment drawn (seeded) from the clean run's timeline SIGKILL to
   the whole process group (snakemake, the runner and every job). The moments cycle
   through CASA jobs (calibrate_solve/apply), imaging (image: drift subtraction, then
   WSClean), aggregate jobs (mosaics, light curves, ESE, QA summary, checksums) and any
   moment; a job kind's moment is kept as (that job, seconds into it), so it lands in
   that job however loaded the machine is. Printed: the jobs the log shows running at
   the kill and the processes alive;
3. then the same command again, once, to completion; the products' checksums compared
   with the clean run's, `.partial-` leftovers, Snakemake locks left in .snakemake/locks,
   and whether the run lock (RESULTS/.dsa110-contimg-run.lock) is free; any other file or
   directory the clean run does not have (hidden work directories included) is listed.

    flock /tmp/dsa110-bench.lock nice .venv/bin/python benchmarks/kill_anywhere.py \
        --kills 5 --seed 2

Exit status 1 when any product differs, is missing or extra, or a leftover or stale lock
is found.
"""

import argparse
import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil

from measure import CLI, REPO, run

CASA = {"calibrate_solve", "calibrate_apply"}
IMAGING = {"image"}
AGGREGATE = {
    "mosaic",
    "qa_mosaic",
    "photometry_mosaic",
    "gather_timeseries",
    "normalize",
    "ese_detect",
    "ese_candidates_page",
    "alerts",
    "qa_summary",
    "checksums",
}
KINDS = [("CASA", CASA), ("imaging", IMAGING), ("aggregate", AGGREGATE), ("any", None)]
OVERLAYS = ["config/demo.yaml", "tests/fast-imaging.yaml"]

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
_ERROR = re.compile(r"^Error in rule (\w+):$")


def readme_command(archive, results):
    """The README's command on this archive and results directory."""
    return [
        CLI,
        "run",
        "--",
        "--cores",
        "2",
        "--configfile",
        *OVERLAYS,
        "--config",
        f"archive_dir={archive}",
        f"results_dir={results}",
    ]


def simulate(archive):
    if (archive / "truth" / "simulation.json").exists():
        return
    run(
        [
            CLI,
            "simulate",
            "--preset",
            "test",
            "--n-groups",
            2,
            "--n-days",
            5,
            "--n-sources",
            30,
            "--gain-error",
            0.03,
            "--calibrator",
            "J0834+555:0",
            "--calibrator-catalog",
            REPO / "config" / "calibrators.csv",
            "--out",
            archive,
        ]
    )


def start(archive, results, log):
    """The README's command in its own session (process group), output to `log`."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    with open(log, "w") as out:
        return psutil.Popen(
            readme_command(archive, results),
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def timeline(log):
    """[(rule, jobid, start epoch, end epoch or None)] of the jobs a Snakemake log shows,
    from its second-resolution timestamps."""
    jobs, pending, stamp = {}, None, None
    for line in Path(log).read_text(errors="replace").splitlines():
        line = line.rstrip()
        if m := _STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
        elif m := _START.match(line):
            pending = m.group(1) if m.group(1) != "all" else None
        elif (m := _JOBID.match(line)) and pending:
            jobs[int(m.group(1))] = [pending, int(m.group(1)), stamp, None]
            pending = None
        elif m := _FINISHED.match(line):
            if int(m.group(1)) in jobs:
                jobs[int(m.group(1))][3] = stamp
    return [tuple(j) for j in jobs.values()]


def running_rules(log):
    """Rules of the jobs the log shows started and not finished (sorted, with counts)."""
    counts = {}
    for rule, _, _, end in timeline(log):
        if end is None:
            counts[rule] = counts.get(rule, 0) + 1
    return ", ".join(f"{r} x{n}" if n > 1 else r for r, n in sorted(counts.items())) or "none"


def process_labels(procs):
    """Short names of the processes alive: tools (wsclean, casa...), package stages
    (`dsa110-contimg image`) and workflow scripts."""
    labels = set()
    for p in procs:
        try:
            argv = p.cmdline()
        except psutil.Error:
            continue
        if not argv:
            continue
        if Path(argv[0]).name.startswith("python"):
            argv = [a for a in argv[1:] if not a.startswith("-")] or argv
        name = Path(argv[0]).name
        if name == "dsa110-contimg" and len(argv) > 1:
            labels.add(f"dsa110-contimg {argv[1]}")
        elif name.endswith(".py"):
            labels.add(name.split(".", 1)[1] if name.startswith("tmp") else name)
        elif name not in ("snakemake", "sh", "bash", "flock", "nice"):
            labels.add(name)
    return ", ".join(sorted(labels - {"dsa110-contimg run"})) or "none"


def kill_moments(jobs, duration, k, rng):
    """K kill points cycling through KINDS, as dicts (kind, and for a job kind: rule, the
    ordinal of that rule's job among its starts, delay into it in seconds; for 'any':
    moment in seconds after the start). A job kind's point is uniform over the moments of
    the clean run when a job of that kind ran, kept as (job, delay) so that it lands in
    such a job however fast the machine is that day."""
    ordered = sorted((s, jobid, rule, e) for rule, jobid, s, e in jobs)
    ordinals, seen = {}, {}
    for _, jobid, rule, _ in ordered:
        ordinals[jobid] = seen.get(rule, 0)
        seen[rule] = ordinals[jobid] + 1
    points = []
    for i in range(k):
        kind, rules = KINDS[i % len(KINDS)]
        spans = [
            (jobid, rule, e - s)
            for s, jobid, rule, e in ordered
            if rules is not None and rule in rules and e is not None and e > s
        ]
        if not spans:
            points.append({"kind": "any", "moment": rng.uniform(1.0, duration - 1.0)})
            continue
        x = rng.uniform(0, sum(length for *_, length in spans))
        for jobid, rule, length in spans:
            if x <= length:
                points.append({"kind": kind, "rule": rule, "ordinal": ordinals[jobid], "delay": x})
                break
            x -= length
    return points


def describe(point):
    if "rule" in point:
        return (
            f"{point['kind']}: {point['rule']} job {point['ordinal'] + 1} + {point['delay']:.1f} s"
        )
    return f"any: {point['moment']:.1f} s after the first job"


def wait_for_moment(proc, log, point, offset):
    """Wait until the kill point (its job's start in the log plus its delay, or its
    moment plus the clean run's delay before its first job); False when the run
    finished first."""

    def alive_after(seconds):
        try:
            proc.wait(timeout=seconds)
            return False
        except psutil.TimeoutExpired:
            return True

    if "rule" not in point:
        return alive_after(point["moment"] + offset)
    while sum(1 for rule, *_ in timeline(log) if rule == point["rule"]) <= point["ordinal"]:
        if not alive_after(0.5):
            return False
    return alive_after(point["delay"])


def _pgid(proc):
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


def run_lock_free(results):
    """True when nobody holds the runner's lock on `results` (or there is none)."""
    path = results / ".dsa110-contimg-run.lock"
    if not path.exists():
        return True
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def snakemake_locks():
    return sorted((REPO / ".snakemake" / "locks").glob("*.lock"))


def partials(results):
    from dsa110_contimg.atomic import PARTIAL

    return sorted(str(p.relative_to(results)) for p in results.rglob(f"*{PARTIAL}*"))


def tree_paths(results):
    """Relative paths of every file and directory under `results` (a casacore table
    counted as one), hidden ones included: what a run leaves behind."""
    found = []
    for root, dirs, files in os.walk(results):
        rel = Path(root).relative_to(results)
        tables = [d for d in dirs if (Path(root) / d / "table.dat").exists()]
        dirs[:] = [d for d in dirs if d not in tables]
        found += [(rel / name).as_posix() for name in dirs + tables + files]
    return sorted(found)


def clean_run(workdir, archive):
    """Wall seconds, timeline and product checksums of a clean run (cached in clean.json)."""
    from dsa110_contimg.reproducibility import checksums

    record = workdir / "clean.json"
    if record.exists():
        return json.loads(record.read_text())
    results, log = workdir / "clean", workdir / "clean.log"
    shutil.rmtree(results, ignore_errors=True)
    t0 = time.time()
    status = start(archive, results, log).wait()
    seconds = time.time() - t0
    if status:
        raise SystemExit(f"the clean run failed with status {status}; see {log}")
    for table in ("photometry/timeseries.parquet", "ese/ese_candidates.parquet"):
        if not (results / table).exists():
            raise SystemExit(f"the clean run made no {table}: the archive does not reach ESE")
    clean = {
        "start": t0,
        "seconds": seconds,
        "jobs": timeline(log),
        "checksums": checksums(results),
        "paths": tree_paths(results),
    }
    record.write_text(json.dumps(clean, indent=1))
    return clean


def kill_point(workdir, archive, index, point, offset, clean):
    """Start, SIGKILL at the kill point, rerun, compare. Returns a dict of figures."""
    from dsa110_contimg.reproducibility import checksums, compare

    results = workdir / f"kill{index}"
    log, relog = workdir / f"kill{index}.log", workdir / f"kill{index}.rerun.log"
    shutil.rmtree(results, ignore_errors=True)
    t0 = time.time()
    proc = start(archive, results, log)
    finished_before_kill = not wait_for_moment(proc, log, point, offset)
    tree, outside, alive = [], [], "none"
    if not finished_before_kill:
        tree = [proc] + proc.children(recursive=True)
        alive = process_labels(tree)
        outside = [p for p in tree if _pgid(p) not in (proc.pid, None)]
        os.killpg(proc.pid, signal.SIGKILL)
        for p in outside:
            p.kill()
    killed_at = time.time() - t0
    running = running_rules(log)
    _, survivors = psutil.wait_procs(tree, timeout=30)
    at_kill = {
        "partials": len(partials(results)),
        "snakemake_locks": len(snakemake_locks()),
        "run_lock_free": run_lock_free(results),
    }
    t1 = time.time()
    status = start(archive, results, relog).wait()
    rerun_s = time.time() - t1
    rows = compare(clean["checksums"], checksums(results))
    bad = [(rel, verdict) for rel, verdict in rows if verdict != "same"]
    return {
        "point": index,
        **point,
        "killed_at_s": killed_at,
        "finished_before_kill": finished_before_kill,
        "running": running,
        "processes": alive,
        "outside_group": len(outside),
        "survivors": len(survivors),
        "at_kill": at_kill,
        "rerun_status": status,
        "rerun_s": rerun_s,
        "compared": sum(1 for _, v in rows if v in ("same", "differs")),
        "differences": bad,
        "partials": partials(results),
        "extra_paths": sorted(set(tree_paths(results)) - set(clean["paths"])),
        "snakemake_locks": [str(p) for p in snakemake_locks()],
        "run_lock_free": run_lock_free(results),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/dsa110-killharness"))
    p.add_argument("--kills", type=int, default=5, help="kill points (K)")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep each kill point's results")
    args = p.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / "archive"
    simulate(archive)
    clean = clean_run(workdir, archive)
    jobs = clean["jobs"]
    t0 = min(s for _, _, s, _ in jobs)
    print(
        f"clean run: {clean['seconds']:.0f} s, {len(jobs)} jobs, "
        f"{len(clean['checksums'])} products checksummed",
        flush=True,
    )
    offset = t0 - clean["start"]
    plan = kill_moments(jobs, clean["seconds"] - offset, args.kills, random.Random(args.seed))
    points = []
    for i, planned in enumerate(plan, 1):
        point = kill_point(workdir, archive, i, planned, offset, clean)
        points.append(point)
        when = (
            "the run finished first"
            if point["finished_before_kill"]
            else f"killed at {point['killed_at_s']:.1f} s"
        )
        print(
            f"kill {i} ({describe(planned)}): {when}; running {point['running']}; "
            f"processes {point['processes']}; at the kill {point['at_kill']['partials']} "
            f".partial, {point['at_kill']['snakemake_locks']} snakemake lock(s), run lock "
            f"{'free' if point['at_kill']['run_lock_free'] else 'HELD'}; rerun status "
            f"{point['rerun_status']} in {point['rerun_s']:.0f} s; {point['compared']} products "
            f"compared, {len(point['differences'])} differences, {len(point['partials'])} "
            f".partial leftovers, {len(point['snakemake_locks'])} stale locks, run lock "
            f"{'free' if point['run_lock_free'] else 'HELD'}",
            flush=True,
        )
        for rel, verdict in point["differences"]:
            print(f"    {verdict}: {rel}")
        for rel in point["partials"]:
            print(f"    leftover: {rel}")
        for rel in point["extra_paths"]:
            print(f"    not in the clean run's results: {rel}")
        if not (args.keep or point["differences"] or point["partials"] or point["extra_paths"]):
            shutil.rmtree(workdir / f"kill{i}")
        (workdir / f"kills-seed{args.seed}.json").write_text(json.dumps(points, indent=1))
    failed = [
        pt
        for pt in points
        if pt["differences"]
        or pt["partials"]
        or pt["snakemake_locks"]
        or not pt["run_lock_free"]
        or pt["rerun_status"]
    ]
    print(
        f"{len(points)} kill points, {sum(pt['compared'] for pt in points)} products compared, "
        f"{sum(len(pt['differences']) for pt in points)} differences, "
        f"{sum(len(pt['partials']) for pt in points)} .partial leftovers, "
        f"{sum(len(pt['snakemake_locks']) for pt in points)} stale locks, "
        f"{sum(len(pt['extra_paths']) for pt in points)} other paths not in the clean run; "
        f"wall: clean {clean['seconds']:.0f} s, kill runs + reruns "
        f"{sum(pt['killed_at_s'] + pt['rerun_s'] for pt in points):.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
