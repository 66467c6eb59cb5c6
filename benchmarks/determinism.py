"""Benchmark: the price of deterministic imaging. A batch of demo-size groups (20
antennas, 16 x 4 channels, 24 integrations) is imaged by the workflow's `image` rule
(`snakemake --cores 2`, drift subtraction with the archive's sky catalog) with WSClean

- deterministic (the default, `image.deterministic: true`): one thread per job, so
  Snakemake images two groups at once;
- nondeterministic (`image.deterministic: false`, `image.threads: 2`), the fastest
  setting: one job at a time on two threads;

and optionally with tclean (`--imagers`), which is deterministic with any setting. Printed:
wall seconds for the batch and per group, and whether two deterministic batches gave the
same image checksums.

    flock /tmp/dsa110-bench.lock .venv/bin/python benchmarks/determinism.py [--groups 4]

The archive is simulated once with gains off (a stand-in for calibrated data), and
converted by `snakemake calibrated` (no calibrator: the uncalibrated fallback copies DATA
to CORRECTED_DATA); both are reused from WORKDIR.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

import yaml

from measure import CLI, REPO, measure, run

MODES = {
    "wsclean-deterministic": {"imager": "wsclean", "deterministic": True},
    "wsclean-2-threads": {"imager": "wsclean", "deterministic": False, "threads": 2},
    "tclean": {"imager": "tclean"},
}


def snakemake(workdir, overlay, *args):
    """The README's command (`dsa110-contimg run`, all cores) on the benchmark's archive."""
    archive, results = workdir / "archive", workdir / "results"
    return [
        CLI,
        "run",
        "--",
        *args,
        "--configfile",
        str(overlay),
        "--config",
        f"archive_dir={archive}",
        f"results_dir={results}",
    ]


def prepare(workdir, n_groups):
    archive = workdir / "archive"
    if len(list(archive.glob("*.hdf5"))) != 16 * n_groups:
        shutil.rmtree(workdir / "archive", ignore_errors=True)
        shutil.rmtree(workdir / "results", ignore_errors=True)
        run(
            [
                CLI,
                "simulate",
                "--preset",
                "demo",
                "--n-days",
                1,
                "--n-groups",
                n_groups,
                "--no-gains",
                "--out",
                archive,
            ]
        )
    overlay = workdir / "base.yaml"
    overlay.write_text(yaml.safe_dump({"calibrate": {"fallback": "uncalibrated"}}))
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    run(snakemake(workdir, overlay, "calibrated"))
    groups = sorted(p.name[:-3] for p in (workdir / "results" / "ms_cal").glob("*.ms"))
    if len(groups) != n_groups:
        raise SystemExit(f"expected {n_groups} calibrated groups in {workdir}, found {groups}")
    return groups


def image_batch(workdir, groups, mode):
    """Wall seconds of imaging every group with `mode`, and {group: image checksum}."""
    from dsa110_contimg.reproducibility import product_checksum

    overlay = workdir / f"{mode}.yaml"
    overlay.write_text(yaml.safe_dump({"image": MODES[mode]}))
    results = workdir / "results"
    targets = [str(results / "images" / g / "image.fits") for g in groups]
    seconds, _ = measure(snakemake(workdir, overlay, *targets, "--forcerun", "image"), cwd=REPO)
    sums = {g: product_checksum(results / "images" / g / "image.fits", results) for g in groups}
    return seconds, sums


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/dsa110-determinism"))
    p.add_argument("--groups", type=int, default=4)
    p.add_argument(
        "--imagers",
        nargs="+",
        default=["wsclean-deterministic", "wsclean-2-threads", "wsclean-deterministic"],
        choices=sorted(MODES),
        help="batches to run, in order",
    )
    args = p.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)
    groups = prepare(workdir, args.groups)
    seen = {}
    print(f"| setting | batch of {len(groups)} groups | per group |")
    print("| --- | --- | --- |")
    for mode in args.imagers:
        seconds, sums = image_batch(workdir, groups, mode)
        print(f"| {mode} | {seconds:.0f} s | {seconds / len(groups):.1f} s |", flush=True)
        seen.setdefault(mode, []).append(sums)
    for mode, batches in seen.items():
        if len(batches) > 1:
            same = sum(all(b[g] == batches[0][g] for b in batches[1:]) for g in groups)
            print(f"{mode}: {same} of {len(groups)} images identical over {len(batches)} batches")


if __name__ == "__main__":
    main()
