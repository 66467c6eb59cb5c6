"""Benchmark: is the cost linear in the archive? The whole pipeline (the README's command
with the demo overlay, `--cores 2`) on one observation group and on ten groups of the same
day, each from an empty results directory. Printed per run: wall seconds, peak memory,
job-seconds summed from the rules' benchmark files (per-group rules and aggregates
apart), and the ratio ten groups / one group, which should be <= 10.5.

    flock /tmp/dsa110-bench.lock nice .venv/bin/python benchmarks/linear.py

The archive: the demo preset (20 stations, 16 x 2 channels, 24 integrations), one day of
10 groups with the calibrator J0834+555 transiting in the first, simulated once into
WORKDIR/archive. The one-group run reads a view of it (links to the first group's files
and the sky catalog), so both runs calibrate on the same transit.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from measure import CLI, REPO, measure, run

CALIBRATOR = "J0834+555"
PER_GROUP = {
    "convert",
    "calibrate_solve",
    "calibrate_apply",
    "image",
    "qa_image",
    "photometry_image",
}


def prepare(workdir, n_groups):
    """The simulated day (reused when it has the right size) and the one-group view."""
    archive = workdir / "archive"
    if len(list(archive.glob("*.hdf5"))) != 16 * n_groups:
        shutil.rmtree(archive, ignore_errors=True)
        run(
            [CLI, "simulate", "--preset", "demo", "--n-days", 1, "--n-groups", n_groups,
             "--calibrator", f"{CALIBRATOR}:0",
             "--calibrator-catalog", REPO / "config" / "calibrators.csv", "--out", archive]
        )  # fmt: skip
    view = workdir / "archive_1"
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir()
    # file names start with their time: the first group's 16 subbands are the 16 earliest
    for f in [*sorted(archive.glob("*.hdf5"))[:16], *archive.glob("*.csv")]:
        (view / f.name).symlink_to(f)
    return {1: view, n_groups: archive}


def job_seconds(results):
    """Summed wall seconds of the jobs' benchmark files: (per-group rules, aggregates)."""
    per_group = aggregate = 0.0
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        seconds = float(pd.read_csv(tsv, sep="\t")["s"].sum())
        rule = tsv.parent.name
        if rule in PER_GROUP:
            per_group += seconds
        else:
            aggregate += seconds
    return per_group, aggregate


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/dsa110-linear"))
    p.add_argument("--groups", type=int, default=10)
    args = p.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    archives = prepare(workdir, args.groups)
    figures = {}
    for n, archive in archives.items():
        results = workdir / f"results_{n}"
        shutil.rmtree(results, ignore_errors=True)
        cmd = [CLI, "run", "--", "--cores", "2", "--configfile", "config/demo.yaml",
               "--config", f"archive_dir={archive}", f"results_dir={results}"]  # fmt: skip
        with open(workdir / f"run_{n}.log", "w") as log:
            wall, peak = measure(cmd, stdout=log, stderr=log)
        per_group, aggregate = job_seconds(results)
        figures[n] = (wall, peak, per_group, aggregate)
        print(
            f"{n} group(s): wall {wall:.1f} s, peak {peak:.2f} GiB, job-seconds per-group "
            f"rules {per_group:.1f}, aggregates {aggregate:.1f}",
            flush=True,
        )
    (w1, _, g1, a1), (wn, _, gn, an) = figures[1], figures[args.groups]
    print(f"| figure | 1 group | {args.groups} groups | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, one, many in (
        ("wall seconds", w1, wn),
        ("job-seconds, per-group rules", g1, gn),
        ("job-seconds, aggregates", a1, an),
        ("job-seconds, all", g1 + a1, gn + an),
    ):
        print(f"| {name} | {one:.1f} | {many:.1f} | {many / one:.2f} |")
    print(f"wall_ratio={wn / w1:.2f} job_seconds_ratio={(gn + an) / (g1 + a1):.2f}")


if __name__ == "__main__":
    main()
