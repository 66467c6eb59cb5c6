"""End-to-end: forced photometry and ESE detection on the reference catalog made from the
data alone, against the run with the simulator's truth catalog.

Needs the demo archive and its results with the truth catalog (`make demo`). Makes a view
of the archive without sky_catalog.csv (symbolic links to the raw files and truth/), so
that no stage can read the simulator's catalog, and runs the whole pipeline on it with
`photometry_catalog=reference`: the reference catalog is built from the QA-passed images,
and photometry, normalization and ESE detection read it alone. Prints, as JSON, the ESE
candidates of both runs within one beam of the injected ESE source (ESE001 of the truth
catalog) and the other candidates of the reference run.

    .venv/bin/python benchmarks/reference_ese.py [--archive demo/archive]
        [--truth-results demo/results] [--workdir benchmarks/work/reference_ese]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BEAM_ARCSEC = 75.0


def archive_view(archive, view):
    """`view`: the archive's raw files and truth/ as symbolic links, no sky_catalog.csv."""
    view.mkdir(parents=True, exist_ok=True)
    for path in archive.rglob("*"):
        rel = path.relative_to(archive)
        if path.is_dir() or rel.name == "sky_catalog.csv":
            continue
        link = view / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path.resolve())


def near(candidates, ra, dec, radius_arcsec=BEAM_ARCSEC):
    """Candidates within radius_arcsec of (ra, dec) (deg)."""
    dra = (candidates.ra - ra + 180) % 360 - 180
    sep = np.hypot(dra * np.cos(np.radians(dec)), candidates.dec - dec) * 3600
    return candidates.assign(sep_arcsec=sep)[sep <= radius_arcsec]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", type=Path, default=REPO / "demo" / "archive")
    p.add_argument("--truth-results", type=Path, default=REPO / "demo" / "results")
    p.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "work" / "reference_ese")
    args = p.parse_args(argv)
    truth = pd.read_csv(args.archive / "sky_catalog.csv")
    ese = truth[truth.source_id == "ESE001"].iloc[0]
    view, results = args.workdir / "archive", args.workdir / "results"
    archive_view(args.archive, view)
    bin_dir = Path(sys.executable).parent
    status = subprocess.run(
        [
            str(bin_dir / "dsa110-contimg"),
            "run",
            "--",
            "--configfile",
            "config/demo.yaml",
            "--config",
            f"archive_dir={view}",
            f"results_dir={results}",
            "photometry_catalog=reference",
        ],
        cwd=REPO,
    ).returncode
    if status != 0:
        sys.exit(f"pipeline on {view} failed (status {status})")
    with_truth = pd.read_parquet(args.truth_results / "ese" / "ese_candidates.parquet")
    with_ref = pd.read_parquet(results / "ese" / "ese_candidates.parquet")
    reference = pd.read_parquet(results / "catalog" / "reference.parquet")
    columns = ["source_id", "ra", "dec", "ese_sigma", "ese_mjd", "ese_depth", "sep_arcsec"]
    found_ref = near(with_ref, ese.ra_deg, ese.dec_deg)
    print(
        json.dumps(
            {
                "reference_sources": len(reference),
                "truth_run_ese": near(with_truth, ese.ra_deg, ese.dec_deg)[columns].to_dict(
                    "records"
                ),
                "reference_run_ese": found_ref[columns].to_dict("records"),
                "reference_run_other_candidates": with_ref[
                    ~with_ref.source_id.isin(found_ref.source_id)
                ].source_id.tolist(),
            },
            indent=2,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
