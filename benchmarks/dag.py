"""Benchmark: Snakemake's dry run on a month of archive (~8,400 groups, ~134,000 files).

Writes a synthetic archive of EMPTY subband files (names only: the dry run reads no data)
and the products that exist once the manifest checkpoint has run (groups.parquet), then
times `snakemake -n` twice: in that state, and once the calibrator groups are solved and
the calibration-selection checkpoint has run (placeholders for their products), when the
whole per-group DAG is known. Prints seconds, peak memory and the number of jobs.

With `--profile slurm` the dry run takes the cluster profile, so Snakemake forms its group
jobs (rule `group:` directives); the job info it then prints is read to count what SLURM
would receive: sbatch jobs in all, and per observation group (the submissions that hold
one of its jobs). The printed job info makes that dry run slower than the quiet one.

    .venv/bin/python benchmarks/dag.py [--days 30] [--workdir benchmarks/work/dag]
        [--profile slurm]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from measure import REPO, measure  # noqa: E402

GROUP_S = 309.237
GROUPS_PER_DAY = 279
SIDEREAL_DAY_S = 86164.0905
CALIBRATOR = "J0834+555"
CALIBRATOR_RA_DEG = 128.728767


def synthesize_archive(archive, days, start):
    """Empty `YYYY-MM-DDTHH:MM:SS_sbNN.hdf5` files, 16 per group, names jittered."""
    rng = np.random.default_rng(1)
    archive.mkdir(parents=True, exist_ok=True)
    t0 = pd.Timestamp(start)
    groups = []
    for day in range(days):
        for g in range(GROUPS_PER_DAY):
            start_time = t0 + pd.Timedelta(seconds=day * 86400 + g * GROUP_S)
            files = []
            for sb in range(16):
                t = start_time + pd.Timedelta(seconds=float(rng.uniform(0, 50)))
                path = archive / f"{t:%Y-%m-%dT%H:%M:%S}_sb{sb:02d}.hdf5"
                path.touch()
                files.append(str(path))
            groups.append((start_time, files))
    return groups


def manifest_table(groups):
    """groups.parquet as the manifest writes it; one calibrator transit per day."""
    from astropy.time import Time

    from dsa110_contimg.ingest.manifest import GROUP_COLUMNS

    rows = []
    for start, files in groups:
        t = Time([start.to_pydatetime(), (start + pd.Timedelta(seconds=GROUP_S)).to_pydatetime()])
        lst = t.sidereal_time("apparent", longitude=-118.2825).deg
        rows.append(
            {
                "group": f"{start:%Y-%m-%dT%H%M%S}",
                "start_time": t[0].isot,
                "end_time": t[1].isot,
                "start_mjd": t[0].mjd,
                "end_mjd": t[1].mjd,
                "mid_mjd": (t[0].mjd + t[1].mjd) / 2,
                "lst_start_deg": lst[0],
                "lst_end_deg": lst[1],
                "dec_deg": 54.5734,
                "n_subbands": 16,
                "subbands": list(range(16)),
                "files": files,
                "n_times": 24,
                "n_antennas": 96,
                "n_channels": 768,
                "freq_min_hz": 1311.4e6,
                "freq_max_hz": 1498.6e6,
                "has_calibrator": bool(lst[0] <= CALIBRATOR_RA_DEG < lst[1]),
                "calibrator": CALIBRATOR if lst[0] <= CALIBRATOR_RA_DEG < lst[1] else "",
            }
        )
    table = pd.DataFrame(rows)
    for col in GROUP_COLUMNS:
        if col not in table:
            table[col] = np.nan
    return table[GROUP_COLUMNS]


def solved_calibrators(results, table):
    """Placeholders for the calibrator groups' products (MS and flagging QA, solutions and
    their QA), and the selection checkpoint."""
    from dsa110_contimg.calibration.select import write_selection

    qa = []
    for g in table.group[table.has_calibrator]:
        (results / "ms" / f"{g}.ms").mkdir(parents=True, exist_ok=True)
        (results / "qa" / "flag").mkdir(parents=True, exist_ok=True)
        (results / "qa" / "flag" / f"{g}.json").write_text("{}")
        (results / "qa" / "flag" / f"{g}.png").touch()
        (results / "cal" / g).mkdir(parents=True, exist_ok=True)
        (results / "qa" / "cal").mkdir(parents=True, exist_ok=True)
        path = results / "qa" / "cal" / f"{g}.json"
        path.write_text(json.dumps({"calgroup": g, "passed": True, "reasons": []}))
        (results / "qa" / "cal" / f"{g}.png").touch()
        qa.append(str(path))
    write_selection(
        results / "manifest" / "groups.parquet",
        qa,
        results / "cal" / "selection.parquet",
        results / "cal" / "no_calibrator.txt",
    )


_GROUP_JOB = re.compile(r"^\S.* Group job (\w+) \(jobs in lexicogr. order\):$")
_TOP_JOB = re.compile(r"^(localrule|rule|checkpoint) (\w+):$")
_MEMBER_JOB = re.compile(r"^    (?:rule|checkpoint) (\w+):$")
_WILDCARD_GROUP = re.compile(r"^\s+wildcards: .*?\b(?:group|calgroup)=([\dT-]+)")


# Target rules without an action: Snakemake finishes them itself, submitting nothing.
NO_ACTION = {"all", "calibrated"}


def cluster_submissions(text):
    """The submissions a cluster executor would make, from a dry run's job info:
    [(group name or None, [rules], {observation groups})], one per group job or
    ungrouped job with an action that is not a local rule."""
    submissions = []
    for line in text.splitlines():
        if m := _GROUP_JOB.match(line):
            submissions.append([m.group(1), [], set()])
        elif m := _TOP_JOB.match(line):
            local = m.group(1) == "localrule" or m.group(2) in NO_ACTION
            submissions.append(None if local else [None, [m.group(2)], set()])
        elif submissions and submissions[-1] is not None:
            if m := _MEMBER_JOB.match(line):
                submissions[-1][1].append(m.group(1))
            elif m := _WILDCARD_GROUP.match(line):
                submissions[-1][2].add(m.group(1))
    return [tuple(s) for s in submissions if s is not None]


def per_group_counts(submissions):
    """{number of submissions holding a group's jobs: number of observation groups}, and
    the submissions tied to no observation group (the aggregates)."""
    per_group = {}
    for _, _, groups in submissions:
        for group in groups:
            per_group[group] = per_group.get(group, 0) + 1
    histogram = {}
    for n in per_group.values():
        histogram[n] = histogram.get(n, 0) + 1
    return dict(sorted(histogram.items())), sum(1 for s in submissions if not s[2])


def dry_run(archive, results, catalog, log, profile=None):
    quiet = ["--quiet", "rules"] if profile is None else ["--profile", str(profile)]
    cmd = [
        str(Path(sys.executable).with_name("snakemake")),
        "-n",
        "--cores",
        "2",
        "--directory",
        str(REPO),
        *quiet,
        "--config",
        f"archive_dir={archive}",
        f"results_dir={results}",
        f"sky_catalog={catalog}",
    ]
    with open(log, "w") as out:
        seconds, gib = measure(cmd, stdout=out, stderr=subprocess.STDOUT)
    text = Path(log).read_text()
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", text, re.M)}
    return seconds, gib, jobs, cluster_submissions(text)


def main():
    from dsa110_contimg.ingest.pointings import write_pointings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", default="2026-01-01T00:00:00")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "work" / "dag")
    parser.add_argument(
        "--profile",
        help="a Snakemake profile of the checkout (e.g. slurm): its group jobs are counted",
    )
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    archive, results = args.workdir / "archive", args.workdir / "results"
    t0 = time.perf_counter()
    groups = synthesize_archive(archive, args.days, args.start)
    old = time.time() - 3600
    for path in archive.iterdir():
        os.utime(path, (old, old))
    catalog = args.workdir / "sky.csv"
    pd.DataFrame(
        {
            "source_id": ["S0"],
            "ra_deg": [128.7],
            "dec_deg": [54.6],
            "flux_jy": [1.0],
            "spectral_index": [-0.7],
        }
    ).to_csv(catalog, index=False)
    os.utime(catalog, (old, old))
    table = manifest_table(groups)
    (results / "manifest").mkdir(parents=True)
    table.to_parquet(results / "manifest" / "groups.parquet")
    pd.DataFrame(columns=["path", "group", "subband", "reason"]).to_parquet(
        results / "manifest" / "rejected.parquet"
    )
    # Every output of the manifest checkpoint: with one missing, Snakemake takes the
    # checkpoint as not done and leaves out every job whose input function asks for it
    # (QA, mosaics, photometry).
    write_pointings(
        table, REPO / "config" / "calibrators.csv", results / "manifest" / "pointings.parquet"
    )
    n_files = len(groups) * 16
    print(
        f"synthetic month: {args.days} days, {len(groups)} groups, {n_files} files, "
        f"{int(table.has_calibrator.sum())} calibrator groups "
        f"(written in {time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    print(f"{'state':<34}{'seconds':>9}{'peak GiB':>10}{'jobs':>8}")
    for state in ("manifest done", "calibration selected"):
        if state == "calibration selected":
            solved_calibrators(results, table)
        seconds, gib, jobs, submissions = dry_run(
            archive,
            results,
            catalog,
            args.workdir / f"dryrun-{state.split()[0]}.log",
            profile=args.profile,
        )
        print(f"{state:<34}{seconds:>9.1f}{gib:>10.2f}{jobs.get('total', 0):>8}", flush=True)
        detail = ", ".join(f"{k} {v}" for k, v in jobs.items() if k != "total")
        print(f"  {detail}", flush=True)
        if args.profile is not None:
            kinds = {}
            for name, rules, _ in submissions:
                key = f"group {name} ({'+'.join(sorted(set(rules)))})" if name else rules[0]
                kinds[key] = kinds.get(key, 0) + 1
            histogram, aggregates = per_group_counts(submissions)
            print(f"  sbatch jobs ({args.profile}): {len(submissions)}", flush=True)
            print("    " + ", ".join(f"{k} {v}" for k, v in kinds.items()), flush=True)
            print(
                "    per observation group: "
                + ", ".join(f"{n} sbatch jobs: {g} groups" for n, g in histogram.items())
                + f"; aggregates and checkpoints: {aggregates}",
                flush=True,
            )


if __name__ == "__main__":
    main()
