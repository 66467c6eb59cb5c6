"""Benchmark: is the cost linear in the archive? The whole pipeline (the README's command
with the demo overlay, `--cores 2`) on one observation group and on ten groups of the same
day, each from an empty results directory. Printed per run: wall seconds and peak memory;
then per rule the CPU seconds of its jobs' benchmark files, and the ratio ten groups / one
group, which should be <= 10.5 for the per-group chain.

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


def rule_costs(results):
    """{rule: (jobs, wall seconds, CPU seconds)} summed from the jobs' benchmark files."""
    costs = {}
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        table = pd.read_csv(tsv, sep="\t")
        n, wall, cpu = costs.get(tsv.parent.name, (0, 0.0, 0.0))
        costs[tsv.parent.name] = (n + 1, wall + table["s"].sum(), cpu + table["cpu_time"].sum())
    return costs


def chain(costs, column):
    """The per-group chain's seconds (column 1: wall, 2: CPU), the daily solve apart."""
    return sum(v[column] for k, v in costs.items() if k in PER_GROUP and k != "calibrate_solve")


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
        figures[n] = (wall, peak, rule_costs(results))
        print(f"{n} group(s): wall {wall:.1f} s, peak {peak:.2f} GiB", flush=True)
    report(figures, args.groups)


def report(figures, n_groups):
    (w1, _, c1), (wn, _, cn) = figures[1], figures[n_groups]
    print(f"| figure | 1 group | {n_groups} groups | ratio |")
    print("| --- | ---: | ---: | ---: |")
    rows = [("wall seconds of the run", w1, wn)]
    for rule in sorted(set(c1) | set(cn)):
        one, many = c1.get(rule, (0, 0.0, 0.0)), cn.get(rule, (0, 0.0, 0.0))
        rows.append((f"{rule}: CPU s ({one[0]} / {many[0]} jobs)", one[2], many[2]))
    rows.append(("per-group chain (convert, apply, image): CPU s", chain(c1, 2), chain(cn, 2)))
    rows.append(("the same: job wall seconds", chain(c1, 1), chain(cn, 1)))
    for name, one, many in rows:
        ratio = f"{many / one:.2f}" if one else "-"
        print(f"| {name} | {one:.1f} | {many:.1f} | {ratio} |")
    print(f"wall_ratio={wn / w1:.2f} chain_cpu_ratio={chain(cn, 2) / chain(c1, 2):.2f}")


if __name__ == "__main__":
    main()
