"""Products that open and look right but are wrong are not published: each check of
module sanity on a damaged real product, and the stages that run them (convert, image,
photometry) on inputs that would have produced plausible garbage."""

import json
import shutil
import subprocess

import h5py
import numpy as np
import pandas as pd
import pytest
from casacore import tables

from dsa110_contimg.ingest.convert import convert_group
from dsa110_contimg.ingest.manifest import build_manifest, find_archive_files
from dsa110_contimg.qa_records import load_report
from dsa110_contimg.sanity import (
    EXIT_REJECTED,
    Product,
    ProductRejected,
    check_image,
    check_ms,
    check_photometry,
    find_rejections,
    rejection_path,
)

from pipeline import REPO, env


@pytest.fixture(scope="module")
def small_ms(small_archive, tmp_path_factory):
    groups, _ = build_manifest(find_archive_files(small_archive))
    g = groups.iloc[0]
    out = tmp_path_factory.mktemp("sanity")
    return convert_group(list(g.files), out / "good.ms", g.group), g


def _damaged(ms, tmp_path, damage):
    copy = tmp_path / "ms" / "damaged.ms"
    shutil.copytree(ms, copy)
    with tables.table(str(copy), readonly=False, ack=False) as t:
        damage(t)
    return copy


def _reject(call):
    with pytest.raises(ProductRejected) as info:
        call()
    return info.value


def _set(column, fn, table="main"):
    def damage(t):
        tab = (
            t if table == "main" else tables.table(f"{t.name()}/{table}", readonly=False, ack=False)
        )
        values = tab.getcol(column)
        tab.putcol(column, fn(values))
        if tab is not t:
            tab.close()

    return damage


def _nan_first_row(v):
    v = v.copy()
    v[0] = np.nan
    return v


def _negative_first_rows(v):
    v = v.copy()
    v[:3] = -1.0
    return v


@pytest.mark.parametrize(
    "damage, check, detail",
    [
        (_set("UVW", _nan_first_row), "uvw", "1 of 440 rows have non-finite UVW"),
        (
            _set("WEIGHT_SPECTRUM", _negative_first_rows),
            "weights",
            "192 WEIGHT_SPECTRUM values are negative or NaN",
        ),
        (_set("FLAG", np.ones_like), "all_flagged", "no unflagged data"),
        (_set("DATA", np.zeros_like), "visibilities", "every unflagged DATA value is zero"),
        (_set("DATA", lambda v: np.full_like(v, np.nan)), "visibilities", None),
        (_set("PHASE_DIR", lambda v: np.full_like(v, np.nan), "FIELD"), "phase_centre", None),
    ],
)
def test_damaged_measurement_set_is_rejected_and_recorded(
    small_ms, tmp_path, damage, check, detail
):
    ms, group = small_ms
    bad = _damaged(ms, tmp_path, damage)
    product = Product(tmp_path / "ms" / "final.ms", "convert", group.group, "group files")
    err = _reject(lambda: check_ms(bad, product))
    assert err.check == check
    if detail:
        assert err.detail == detail
        assert str(err) == (
            f"group files: convert product {product.path} rejected ({check}): {detail}"
        )
    record = load_report(rejection_path(product.path))
    assert (record["stage"], record["name"], record["status"], record["failed"]) == (
        "convert",
        group.group,
        "fail",
        [check],
    )
    assert record["product"] == str(product.path) and record["input"] == "group files"
    assert find_rejections(tmp_path) == [rejection_path(product.path)]
    check_ms(ms, product)
    assert not rejection_path(product.path).exists(), "a product that passes clears its record"


def test_good_measurement_set_passes(small_ms, tmp_path):
    check_ms(small_ms[0], Product(tmp_path / "x.ms", "convert", "g", "files"))
    assert find_rejections(tmp_path) == []


def test_converter_publishes_nothing_from_zeroed_raw_data(small_archive, tmp_path):
    """Raw files whose visibilities are all zero (valid samples, valid headers): the
    converter writes no MS; the command exits EXIT_REJECTED naming the group and check."""
    groups, _ = build_manifest(find_archive_files(small_archive))
    files = []
    for path in groups.iloc[0].files:
        files.append(tmp_path / "raw" / path.split("/")[-1])
        files[-1].parent.mkdir(exist_ok=True)
        shutil.copy(path, files[-1])
        with h5py.File(files[-1], "r+") as fh:
            fh["Data/visdata"][...] = 0
    out = tmp_path / "ms" / "zero.ms"
    proc = subprocess.run(
        [str(REPO / ".venv/bin/dsa110-contimg"), "convert", *map(str, files)]
        + ["--group", groups.group[0], "--out", str(out)],
        capture_output=True,
        text=True,
        env=env(),
    )
    assert proc.returncode == EXIT_REJECTED == 3, proc.stderr
    message = (
        f"group {groups.group[0]} (16 subband files in {tmp_path / 'raw'}): convert product "
        f"{out} rejected (visibilities): every unflagged DATA value is zero"
    )
    assert message in proc.stderr
    assert list(out.parent.iterdir()) == [rejection_path(out)]
    assert load_report(rejection_path(out))["failed"] == ["visibilities"]


def test_all_zero_image_is_not_published(small_ms, tmp_path):
    """An MS whose calibrated data are all zero (as a calibration that zeroed them
    would leave): WSClean makes an image of zeros; the image command publishes none."""
    ms, group = small_ms
    zero = _damaged(ms, tmp_path, _set("CORRECTED_DATA", np.zeros_like))
    out_dir = tmp_path / "images" / group.group
    proc = subprocess.run(
        [str(REPO / ".venv/bin/dsa110-contimg"), "image", str(zero), "--out-dir", str(out_dir)]
        + ["--config-json", json.dumps({"imsize": 256, "niter": 100})],
        capture_output=True,
        text=True,
        env=env(),
    )
    assert proc.returncode == EXIT_REJECTED, proc.stderr
    image = out_dir / "image.fits"
    assert (
        f"{zero}: image product {image} rejected (image_zero): every pixel of the "
        "image.fits is zero" in proc.stderr
    )
    assert sorted(p.name for p in out_dir.iterdir()) == ["image.fits.rejected.json"]
    assert load_report(rejection_path(image))["stage"] == "image"


@pytest.mark.parametrize(
    "data, check, detail",
    [
        (np.zeros((8, 8)), "image_zero", "every pixel of the image is zero"),
        (np.full((8, 8), np.nan), "image_nan", "every pixel of the image is NaN or infinite"),
        (np.ones((8, 8)), "image_noise", "the image's noise (robust rms) is 0.0"),
    ],
)
def test_image_checks(tmp_path, data, check, detail):
    product = Product(tmp_path / "image.fits", "image", "g", "x.ms")
    err = _reject(lambda: check_image(data, product))
    assert (err.check, err.detail) == (check, detail)
    rng = np.random.default_rng(1)
    check_image(
        np.where(np.arange(64).reshape(8, 8) < 20, np.nan, rng.normal(size=(8, 8))), product
    )
    assert not rejection_path(product.path).exists()


def test_photometry_row_checks(tmp_path):
    table = pd.DataFrame({"flux_jy": [1.0, np.nan, np.nan], "flux_err_jy": [0.1, np.nan, 0.1]})
    product = Product(tmp_path / "phot.parquet", "photometry", "g", "image.fits")
    check_photometry(table, 3, [True, False, False], product)
    err = _reject(lambda: check_photometry(table, 4, [True, False, False], product))
    assert err.detail == "3 rows for a catalog of 4 sources"
    err = _reject(lambda: check_photometry(table, 3, [True, True, True], product))
    assert err.detail == (
        "1 measured of 3 catalog sources in view (2 without a finite flux and error)"
    )
