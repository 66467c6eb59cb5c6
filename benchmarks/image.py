"""Benchmark: image one full-size DSA-110 group (96 antennas, 16 x 48 channels,
24 integrations) with tclean and with WSClean at the default imaging settings; print wall
time, peak memory (whole process tree) and the ratio, and check the bright sources.
The archive's sky catalog is given, so the drifting sources are fitted and subtracted
(module drift); the time of that step is printed from drift_sources.parquet
(`--no-drift` images without it).

    flock /tmp/dsa110-bench.lock .venv/bin/python benchmarks/image.py [--workdir DIR]

The group is simulated once with the 'full' preset and gains off (a stand-in for a
calibrated group: CORRECTED_DATA = DATA after convert) into WORKDIR/archive, converted
with convert.convert_group into WORKDIR/group.ms, and reused. Each imager runs
`dsa110-contimg image` in a fresh process; memory is measured as in measure.py (peak summed
PSS of the process and its children, WSClean being a child, sampled every 100 ms).
"""

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from measure import CLI, REPO, measure


def ensure_ms(workdir):
    from dsa110_contimg.ingest.convert import convert_group

    archive, ms = workdir / "archive", workdir / "group.ms"
    if len(list(archive.glob("*.hdf5"))) != 16:
        shutil.rmtree(archive, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(
            [CLI, "simulate", "--preset", "full", "--no-gains", "--out", str(archive)], check=True
        )
        print(f"simulated one full-size group in {time.perf_counter() - t0:.0f} s", flush=True)
        shutil.rmtree(ms, ignore_errors=True)
    if not (ms / "table.dat").exists():
        t0 = time.perf_counter()
        convert_group(sorted(str(p) for p in archive.glob("*.hdf5")), ms, "2026-01-01T000000")
        print(f"converted in {time.perf_counter() - t0:.0f} s", flush=True)
    return archive, ms


def drift_facts(path):
    """The drift-fit facts recorded in drift_sources.parquet's metadata."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"dsa110_contimg", b"{}")).get("drift", {})


def main():
    from dsa110_contimg.qa import qa_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "work" / "image")
    parser.add_argument("--imagers", nargs="+", default=["tclean", "wsclean"])
    parser.add_argument("--no-drift", action="store_true", help="no drift subtraction")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    archive, ms = ensure_ms(args.workdir)
    results = {}
    for imager in args.imagers:
        out = args.workdir / imager
        shutil.rmtree(out, ignore_errors=True)
        cmd = [CLI, "image", str(ms), "--out-dir", str(out), "--imager", imager]
        if not args.no_drift:
            cmd += ["--sky-catalog", str(archive / "sky_catalog.csv")]
        results[imager] = measure(cmd)
        facts = drift_facts(out / "drift_sources.parquet")
        print(
            f"{imager}: drift subtraction of {facts.get('n_sources', 0)} sources took "
            f"{facts.get('seconds', 0.0):.1f} s ({facts.get('reason', 'fitted')})",
            flush=True,
        )
        report, table, _ = qa_image(
            out / "image.fits", out / "pb.fits", out / "residual.fits", archive / "sky_catalog.csv"
        )
        m = report["metrics"]
        bright = table[table.predicted_snr >= 30]
        results[imager] += (m, bright)
        print(
            f"{imager}: {results[imager][0]:.0f} s, peak {results[imager][1]:.2f} GiB; "
            f"rms {m['rms_jy'] * 1e3:.3f} mJy = {m['rms_thermal_ratio']:.2f} x thermal, "
            f"beam {m['bmaj_arcsec']:.1f} x {m['bmin_arcsec']:.1f} arcsec; bright sources: "
            + json.dumps(
                bright[["source_id", "pb", "flux_ratio", "offset_beam"]]
                .round(4)
                .to_dict(orient="records")
            ),
            flush=True,
        )
    print(
        "group: 96 antennas, 768 channels, 24 integrations, 2 pols; image 2560 x 2560 at "
        "9 arcsec (defaults)"
    )
    print(f"{'imager':<10}{'seconds':>10}{'peak GiB':>10}{'rms/thermal':>13}{'flux ratio':>12}")
    for imager, (sec, mem, m, _) in results.items():
        print(
            f"{imager:<10}{sec:>10.1f}{mem:>10.2f}{m['rms_thermal_ratio']:>13.2f}"
            f"{(m['flux_ratio'] or float('nan')):>12.3f}"
        )
    if {"tclean", "wsclean"} <= set(results):
        print(
            f"tclean / wsclean: time {results['tclean'][0] / results['wsclean'][0]:.2f}x, "
            f"memory {results['tclean'][1] / results['wsclean'][1]:.2f}x"
        )


if __name__ == "__main__":
    main()
