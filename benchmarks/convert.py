"""Benchmark: convert one full-size DSA-110 group in the telescope's raw layout (96 of 117
stations correlated, 16 x 48 channels, 24 integrations) to a Measurement Set with
pyuvdata's reader + the correct meridian phasing + write_ms and with the project's direct
writer; print wall time, peak memory (whole process tree) and ratios.

    .venv/bin/python benchmarks/convert.py [--workdir benchmarks/work] [--workers 2]

The simulated group is written once to WORKDIR/archive and reused. Each writer runs in a
fresh process; memory is the peak of the summed proportional set size (PSS: shared
pages split between the processes sharing them, so forked workers are not counted twice)
of that process and its children, sampled every 100 ms (measure.py).
"""

import argparse
import shutil
import subprocess
import time
from pathlib import Path

from measure import CLI, REPO, measure


def _is_telescope_layout(files):
    from dsa110_contimg.ingest.uvh5 import HeaderError, read_header

    try:
        return all(read_header(f)["n_antennas"] == 96 for f in files)
    except HeaderError:
        return False


def ensure_archive(workdir):
    archive = workdir / "archive"
    files = sorted(archive.glob("*.hdf5"))
    if len(files) == 16 and _is_telescope_layout(files):
        return archive
    shutil.rmtree(archive, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(
        [
            CLI,
            "simulate",
            "--preset",
            "full",
            "--out",
            str(archive),
        ],
        check=True,
    )
    print(f"simulated one full-size group in {time.perf_counter() - t0:.0f} s")
    return archive


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "work")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    archive = ensure_archive(args.workdir)
    files = sorted(str(p) for p in archive.glob("*.hdf5"))
    size_gb = sum(Path(f).stat().st_size for f in files) / 1e9
    from dsa110_contimg.ingest.manifest import build_manifest

    groups, _ = build_manifest(files)
    group = groups.group[0]

    results = {}
    for writer in ("pyuvdata", "direct"):
        out = args.workdir / f"{writer}.ms"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [
            CLI,
            "convert",
            *files,
            "--group",
            group,
            "--out",
            str(out),
            "--writer",
            writer,
            "--workers",
            str(args.workers),
        ]
        results[writer] = measure(cmd)
        shutil.rmtree(out, ignore_errors=True)
    (t_ref, m_ref), (t_dir, m_dir) = results["pyuvdata"], results["direct"]
    print(
        "group: 96 of 117 stations, 768 channels, 24 integrations, 2 pols; "
        f"{size_gb:.2f} GB of UVH5"
    )
    print(f"{'writer':<24}{'seconds':>10}{'peak GiB':>10}")
    print(f"{'pyuvdata read+phase+ms':<24}{t_ref:>10.1f}{m_ref:>10.2f}")
    print(f"{'direct (workers=%d)' % args.workers:<24}{t_dir:>10.1f}{m_dir:>10.2f}")
    print(f"speed-up {t_ref / t_dir:.2f}x, memory ratio {m_ref / m_dir:.2f}x (pyuvdata / direct)")


if __name__ == "__main__":
    main()
