"""Benchmark: variability statistics + ESE detection on 10,000 sources x 1,000 epochs.

Simulates (simulation.lightcurves) constant sources with per-epoch SNR 20-1000 and 10% of
them with an injected ESE (depth 30-60%, duration 5-60 days); the other sources have one 10-sigma
single-epoch outlier each (half low, half high) and a linear trend of 0-30% over the span,
the things the null models must not call ESEs. Writes the time series to Parquet, then
runs `ese-detect` on it in a fresh process (so the peak memory is that of the stage
alone) and prints wall time, peak PSS (measure.py), completeness and false candidates. A
second, incremental run with no new data shows the cost of the no-op case.

    .venv/bin/python benchmarks/ese.py [--sources 10000] [--epochs 1000] [--workdir benchmarks/work]
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import atomic_output

from measure import measure_cpu


def detect(timeseries, outdir, recompute):
    """Child process: run the stage, report its seconds (imports excluded) as JSON."""
    from dsa110_contimg.variability.ese import run_ese_detect

    start = time.perf_counter()
    stats, cand = run_ese_detect(timeseries, outdir, recompute=recompute)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "sources": len(stats),
                "candidates": len(cand),
            }
        )
    )


def write_simulation(path, args, chunk=10000):
    """Simulate the light curves in chunks of `chunk` sources (seed, seed + 1, ...) and
    write them, sorted by source, to one Parquet file; returns the truth table. 10,000
    sources are one chunk, as simulated before chunking; ids stay S%05d up to 100,000."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsa110_contimg.simulation import lightcurves

    truths, writer = [], None
    with atomic_output(path) as tmp:
        for k, start in enumerate(range(0, args.sources, chunk)):
            n = min(chunk, args.sources - start)
            sim = lightcurves.simulate_lightcurves(
                n_sources=n,
                n_epochs=args.epochs,
                seed=args.seed + k,
                snr_range=(20.0, 1000.0),
                n_ese=int(args.ese_fraction * n),
                ese_depth=(0.3, 0.6),
                ese_fwhm_days=(5.0, 60.0),
                ese_shoulder=(0.0, 0.3),
                outliers_per_source=1,
                outlier_sigma=10.0,
                trend=(0.0, 0.3),
            )
            ids = np.array([f"S{start + i:05d}" for i in range(n)])
            sim["truth"]["source_id"] = ids
            table = lightcurves.lightcurves_to_table(sim)
            truths.append(sim["truth"])
            del sim
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            del table
            if writer is None:
                writer = pq.ParquetWriter(tmp, arrow.schema)
            writer.write_table(arrow.cast(writer.schema))
            del arrow
        writer.close()
    return pd.concat(truths, ignore_index=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--ese-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--workdir", default=str(Path(__file__).parent / "work"))
    parser.add_argument(
        "--child", nargs=3, metavar=("TIMESERIES", "OUTDIR", "RECOMPUTE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        detect(args.child[0], args.child[1], args.child[2] == "1")
        return

    import pandas as pd

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    timeseries = work / "timeseries.parquet"
    outdir = work / "ese"
    n_ese = int(args.ese_fraction * args.sources)
    t0 = time.perf_counter()
    truth = write_simulation(timeseries, args)
    print(
        f"simulated {args.sources} sources x {args.epochs} epochs ({n_ese} ESEs) "
        f"in {time.perf_counter() - t0:.1f} s -> {timeseries}"
    )

    runs = {}
    for label, recompute in (("full (--recompute)", "1"), ("incremental, no new data", "0")):
        report = work / "child.json"
        with open(report, "w") as out:
            cmd = [sys.executable, __file__, "--child", str(timeseries), str(outdir), recompute]
            _, peak_gib, cpu = measure_cpu(cmd, stdout=out)
        runs[label] = r = json.loads(report.read_text().strip().splitlines()[-1])
        print(
            f"ese-detect {label}: {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU "
            f"(this process, incl. imports), {cpu:.1f} s CPU (with its workers), "
            f"peak PSS {peak_gib:.2f} GiB, "
            f"{r['sources']} sources, {r['candidates']} candidates"
        )

    stats = pd.read_parquet(outdir / "variability_stats.parquet")
    m = truth.merge(stats, on="source_id", suffixes=("_true", ""))
    injected, constant = m[m["ese"]], m[~m["ese"]]
    found = (injected["ese_sigma"] >= 5.0) & injected["ese_dip_ok"]
    false = int(((constant["ese_sigma"] >= 5.0) & constant["ese_dip_ok"]).sum())
    good = injected[found]
    dt = (good["ese_mjd"] - good["ese_mjd_true"]).abs()
    print(
        f"completeness (depth 30-60%, FWHM 5-60 d, SNR 20-1000): "
        f"{found.mean():.4f} ({int(found.sum())}/{len(injected)})"
    )
    print(
        f"false candidates: {false} of {len(constant)} sources without an ESE "
        f"(outliers rejected: {int(constant['n_outliers'].sum())}; fraction with "
        f"sigma > 3 = {(constant['ese_sigma'] > 3).mean():.2e}, Gaussian 1.35e-03)"
    )
    print(
        f"recovered epoch: median |dt| = {dt.median():.2f} d; duration ratio median "
        f"{(good['ese_duration_days'] / good['ese_fwhm_days']).median():.2f}; depth ratio "
        f"median {(good['ese_depth'] / good['ese_depth_true']).median():.2f}"
    )


if __name__ == "__main__":
    main()
