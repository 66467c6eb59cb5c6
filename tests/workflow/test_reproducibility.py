"""Reproducibility: the checksum manifest hashes science content (not wall-clock fields),
`dsa110-contimg compare` reports differences by product, and two runs of one archive from
scratch through the default workflow give identical manifests."""

import json
import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.io import fits

from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.cli import main
from dsa110_contimg.reproducibility import (
    MANIFEST,
    checksums,
    product_checksum,
    read_manifest,
    science_products,
    write_manifest,
)

from pipeline import BIN, REPO


def _fits(path, data, date="2026-12-01T10:00:00", host="vm", results=None):
    prov = {
        "software": "dsa110-contimg",
        "created_utc": date + "+00:00",
        "host": host,
        "inputs": [f"{results or path.parent}/ms/x.ms"],
        "config_hash": "abc",
        "settings": {"niter": 100},
    }
    header = fits.Header()
    header["DATE"] = date
    header["BMAJ"] = 0.01
    header["PROVJSON"] = json.dumps(prov)
    header["HISTORY"] = f"wsclean -name {path.parent}/.work-{host}/img"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)
    return path


def test_fits_hash_ignores_the_date_and_sees_one_ulp(tmp_path):
    data = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    a = _fits(tmp_path / "a" / "image.fits", data, results=tmp_path / "a")
    b = _fits(
        tmp_path / "b" / "image.fits",
        data,
        date="2027-01-02T03:04:05",
        host="other",
        results=tmp_path / "b",
    )
    assert a.read_bytes() != b.read_bytes()
    assert product_checksum(a, tmp_path / "a") == product_checksum(b, tmp_path / "b")
    bumped = data.copy()
    bumped[3, 4] = np.nextafter(bumped[3, 4], np.float32(2))
    c = _fits(tmp_path / "c" / "image.fits", bumped, results=tmp_path / "c")
    assert product_checksum(c, tmp_path / "c") != product_checksum(a, tmp_path / "a")
    with fits.open(a) as hdus:
        hdus[0].header["BMAJ"] = 0.0100000001
        hdus.writeto(tmp_path / "beam.fits")
    assert product_checksum(tmp_path / "beam.fits", tmp_path) != product_checksum(a, tmp_path / "a")


def test_parquet_hash_is_of_the_table_not_the_file(tmp_path):
    df = pd.DataFrame(
        {
            "source_id": ["S1", "S2", None],
            "flux_jy": [1.0, np.nan, 3.0],
            "n": [1, 2, 3],
            "flag": [True, False, True],
        }
    )
    write_parquet(df, tmp_path / "a.parquet", metadata={"created_utc": "2026-12-01T10:00:00"})
    write_parquet(df, tmp_path / "b.parquet", metadata={"created_utc": "2026-12-01T11:00:00"})
    assert (tmp_path / "a.parquet").read_bytes() != (tmp_path / "b.parquet").read_bytes()
    assert product_checksum(tmp_path / "a.parquet", tmp_path) == product_checksum(
        tmp_path / "b.parquet", tmp_path
    )
    df.loc[0, "flux_jy"] = np.nextafter(1.0, 2.0)
    write_parquet(df, tmp_path / "c.parquet")
    assert product_checksum(tmp_path / "c.parquet", tmp_path) != product_checksum(
        tmp_path / "a.parquet", tmp_path
    )
    write_parquet(df[["n", "source_id", "flux_jy", "flag"]], tmp_path / "d.parquet")
    assert product_checksum(tmp_path / "d.parquet", tmp_path) != product_checksum(
        tmp_path / "c.parquet", tmp_path
    )


def test_json_hash_drops_wall_clock_fields_only(tmp_path):
    def record(seconds, created, rms):
        return {
            "metrics": {"rms_jy": rms},
            "seconds": seconds,
            "provenance": {"created_utc": created, "host": "vm", "version": "0.1.0"},
        }

    (tmp_path / "a.json").write_text(json.dumps(record(1.5, "2026-12-01T10:00:00", 0.01)))
    (tmp_path / "b.json").write_text(json.dumps(record(9.0, "2026-12-02T10:00:00", 0.01), indent=1))
    (tmp_path / "c.json").write_text(json.dumps(record(1.5, "2026-12-01T10:00:00", 0.0100000001)))
    sums = {p: product_checksum(tmp_path / p, tmp_path) for p in ("a.json", "b.json", "c.json")}
    assert sums["a.json"] == sums["b.json"] != sums["c.json"]


def test_results_paths_are_replaced_as_whole_components(tmp_path):
    """Products that name the results directory compare equal across directories; a
    sibling whose name starts with the results directory's (the archive next to results
    'a') is a different path."""
    for run in ("a", "b"):
        (tmp_path / f"{run}.json").write_text(
            json.dumps(
                {"product": f"{tmp_path / run}/ms/g.ms", "inputs": [str(tmp_path / "archive")]}
            )
        )
    a = product_checksum(tmp_path / "a.json", tmp_path / "a")
    assert a == product_checksum(tmp_path / "b.json", tmp_path / "b")
    (tmp_path / "c.json").write_text(
        json.dumps({"product": f"{tmp_path / 'a'}/ms/g.ms", "inputs": [str(tmp_path / "archivf")]})
    )
    assert product_checksum(tmp_path / "c.json", tmp_path / "a") != a


def _results(root, rms=0.01, extra=False):
    """A small results directory: products plus what the manifest leaves out."""
    (root / "qa" / "image").mkdir(parents=True)
    (root / "qa" / "image" / "g1.json").write_text(
        json.dumps({"product": f"{root}/images/g1/image.fits", "metrics": {"rms_jy": rms}})
    )
    (root / "qa" / "image" / "g1.png").write_bytes(os.urandom(64))
    (root / "cal").mkdir()
    (root / "cal" / "no_calibrator.txt").write_text("# none\n")
    for skipped in (
        "logs/image/g1.log",
        "benchmarks/image/g1.tsv",
        ".snakemake/x",
        "ese/candidates.html",
        "images/.g1.work-abc/img.fits",
    ):
        (root / skipped).parent.mkdir(parents=True, exist_ok=True)
        (root / skipped).write_text(str(os.urandom(8)))
    if extra:
        (root / "cal" / "extra.txt").write_text("x\n")
    return root


def test_manifest_lists_science_products_only(tmp_path):
    res = _results(tmp_path / "results")
    assert science_products(res) == ["cal/no_calibrator.txt", "qa/image/g1.json"]
    path = write_manifest(res)
    assert path == res / MANIFEST
    lines = path.read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["cal/no_calibrator.txt", "qa/image/g1.json"]
    assert all(len(line.split("  ")[0]) == 64 for line in lines)
    assert read_manifest(path) == checksums(res)
    assert checksums(res, workers=2) == checksums(res)
    assert science_products(res) == ["cal/no_calibrator.txt", "qa/image/g1.json"]


def test_compare_same_runs_in_different_places(tmp_path, capsys):
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "same       cal/no_calibrator.txt",
        "same       qa/image/g1.json",
        "2 products compared, 0 differ",
    ]


def test_compare_reports_each_product_and_fails(tmp_path, capsys):
    a = _results(tmp_path / "a")
    b = _results(tmp_path / "b", rms=0.02, extra=True)
    write_manifest(a)
    assert main(["compare", str(a / MANIFEST), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "only in B  cal/extra.txt",
        "same       cal/no_calibrator.txt",
        "differs    qa/image/g1.json",
        "2 products compared, 1 differ, 1 only in B",
    ]
    assert main(["compare", str(b), str(a / MANIFEST), "--quiet"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "only in A  cal/extra.txt",
        "differs    qa/image/g1.json",
        "2 products compared, 1 differ, 1 only in A",
    ]
    assert main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    bad = tmp_path / "bad.sha256"
    bad.write_text("not a checksum line\n")
    with pytest.raises(ValueError, match=r"bad.sha256 line 1: not '<sha256 hex>  <path>'"):
        read_manifest(bad)


def test_ms_hash_covers_keywords_and_subtables(small_archive, tmp_path):
    """An MS in two results directories hashes alike; a changed station position (the
    ANTENNA subtable) changes it; a temporary name's process id does not."""
    import shutil

    from casacore import tables

    from dsa110_contimg.ingest.convert import convert_group
    from dsa110_contimg.ingest.manifest import build_manifest, find_archive_files

    groups, _ = build_manifest(find_archive_files(small_archive))
    a = tmp_path / "a" / "ms" / "g.ms"
    convert_group(list(groups.files[0]), a, groups.group[0])
    b = tmp_path / "b" / "ms" / "g.ms"
    shutil.copytree(a, b)
    for results, pid in ((tmp_path / "a", 123), (tmp_path / "b", 456)):
        with tables.table(str(results / "ms" / "g.ms"), readonly=False, ack=False) as t:
            t.putkeyword("SCRATCH", f"{results}/cal/g.partial-{pid}/scratch.ms")
    digest = product_checksum(a, tmp_path / "a")
    assert product_checksum(b, tmp_path / "b") == digest
    with tables.table(str(b / "ANTENNA"), readonly=False, ack=False) as t:
        pos = t.getcol("POSITION")
        pos[3, 0] += 0.001
        t.putcol("POSITION", pos)
    assert product_checksum(b, tmp_path / "b") != digest


@pytest.mark.workflow
def test_two_runs_from_scratch_give_identical_checksums(tmp_path):
    """Two groups, 3C48 transiting in the first (the manifest and calibration checkpoints
    run; the second group is calibrated with its solutions), through imaging with the
    default imager and settings of config/config.yaml, QA, a mosaic of both, forced
    photometry and ESE detection, twice from scratch into two results directories: every
    science product has the same checksum. The grid is coarse (512 x 18 arcsec) to keep
    the test short."""
    from dsa110_contimg.calibrators import read_calibrator_catalog
    from dsa110_contimg.simulation.visibilities import (
        SimulationSettings,
        calibrator_placement,
        simulate_archive,
    )

    cals = read_calibrator_catalog(REPO / "config" / "calibrators.csv")
    archive = tmp_path / "archive"
    simulate_archive(
        archive,
        SimulationSettings(
            n_antennas=10,
            n_channels=2,
            n_integrations=8,
            n_sources=8,
            seed=11,
            n_groups=2,
            calibrators=[calibrator_placement(cals, "3C48", 0)],
        ),
    )
    overlay = tmp_path / "small.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "image": {"imsize": 512, "cell_arcsec": 18.0},
                "mosaic": {"groups_per_mosaic": 2, "stride": 1},
            }
        )
    )
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    manifests = []
    for run in ("a", "b"):
        results = tmp_path / run
        out = subprocess.run(
            [
                str(BIN / "snakemake"),
                "--profile",
                "profiles/local",
                "--cores",
                "2",
                "--configfile",
                str(overlay),
                "--config",
                f"archive_dir={archive}",
                f"results_dir={results}",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        manifests.append(results / MANIFEST)
    a, b = (read_manifest(m) for m in manifests)
    images = sorted(p for p in a if p.endswith("/image.fits"))
    assert len(images) == 2, sorted(a)
    default_imager = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["image"][
        "imager"
    ]
    assert fits.getheader(tmp_path / "a" / images[0])["IMAGER"] == default_imager
    calgroup = images[0].split("/")[1]
    for product in (
        f"cal/{calgroup}/bandpass.b",
        f"cal/{calgroup}/gain.g",
        f"ms_cal/{images[1].split('/')[1]}.ms",
        f"mosaics/{calgroup}/mosaic.fits",
        f"photometry/mosaics/{calgroup}.parquet",
        "photometry/normalized.parquet",
        "ese/variability_stats.parquet",
        "qa/summary.parquet",
    ):
        assert product in a, (product, sorted(a))
    out = subprocess.run(
        [str(BIN / "dsa110-contimg"), "compare", "--quiet", *map(str, manifests)],
        capture_output=True,
        text=True,
    )
    print(out.stdout)
    assert out.stdout.splitlines() == [f"{len(a)} products compared, 0 differ"], out.stdout
    assert out.returncode == 0
    assert a == b
    assert checksums(tmp_path / "b") == b
