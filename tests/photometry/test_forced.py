"""Forced photometry against synthetic images with known fluxes (lightcurves.make_test_image)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dsa110_contimg import cli
from dsa110_contimg.io import read_image
from dsa110_contimg.photometry import forced
from dsa110_contimg.simulation import lightcurves

CENTRE = (150.0, 37.0)
RMS = 1e-3


def _measure(tmp_path, seed, correlated=False, error_model="white"):
    cat = lightcurves.grid_catalog(150, CENTRE, 0.38, 0.05, flux_range=(2e-3, 0.5), seed=seed)
    image, pb = tmp_path / f"image{seed}.fits", tmp_path / f"pb{seed}.fits"
    lightcurves.make_test_image(
        image, cat, pb_path=pb, npix=256, rms_jy=RMS, seed=seed + 100, correlated_noise=correlated
    )
    table, meta = forced.forced_photometry(image, cat, pb_path=pb, error_model=error_model)
    table = table.merge(
        cat[["source_id", "flux_jy"]].rename(columns={"flux_jy": "true_jy"}), on="source_id"
    )
    return table, meta


@pytest.fixture(scope="module")
def white_noise_tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("phot")
    return pd.concat([_measure(tmp, seed)[0] for seed in (1, 2)], ignore_index=True)


def test_bright_sources_within_3_percent(white_noise_tables):
    t = white_noise_tables
    assert t["flags"].eq(0).all()
    frac = (t["flux_jy"] / t["true_jy"] - 1.0).abs()
    snr50 = t["snr"] > 50
    snr100 = t["snr"] > 100
    print(
        f"\nSNR>50: n={snr50.sum()} median |dS/S|={frac[snr50].median():.4f} "
        f"max={frac[snr50].max():.4f}; SNR>100 max={frac[snr100].max():.4f}"
    )
    assert snr50.sum() > 100
    assert frac[snr100].max() < 0.03
    assert (frac[snr50] < 0.03).mean() >= 0.95
    assert frac[snr50].median() < 0.01


def test_faint_sources_unbiased_with_honest_errors(white_noise_tables):
    t = white_noise_tables
    pull = (t["flux_jy"] - t["true_jy"]) / t["flux_err_jy"]
    faint = t["snr"] < 50
    print(
        f"\npulls: n={len(pull)} mean={pull.mean():.3f} std={pull.std():.3f}; "
        f"faint n={faint.sum()} mean={pull[faint].mean():.3f} std={pull[faint].std():.3f}"
    )
    assert faint.sum() > 100
    assert abs(pull.mean()) < 0.2
    assert abs(pull[faint].mean()) < 0.25
    assert 0.85 < pull.std() < 1.15
    assert 0.8 < pull[faint].std() < 1.2
    # errors follow the image noise through the kernel and the primary beam
    assert np.allclose(t["local_rms_jy"].median(), RMS, rtol=0.1)


def test_beam_correlated_noise_needs_beam_error_model(tmp_path):
    beam, _ = _measure(tmp_path, 3, correlated=True, error_model="beam")
    white, _ = _measure(tmp_path, 3, correlated=True, error_model="white")
    pull_beam = (beam["flux_jy"] - beam["true_jy"]) / beam["flux_err_jy"]
    pull_white = (white["flux_jy"] - white["true_jy"]) / white["flux_err_jy"]
    print(
        f"\ncorrelated noise: pull std beam model {pull_beam.std():.2f}, "
        f"white model {pull_white.std():.2f}"
    )
    assert 0.75 < pull_beam.std() < 1.25
    assert pull_white.std() > 2.0
    np.testing.assert_allclose(beam["flux_jy"], white["flux_jy"])


@pytest.mark.parametrize("correlated", [False, True])
def test_measured_error_model_is_honest_on_white_and_correlated_noise(tmp_path, correlated):
    """The measured noise scale f follows the noise: ~1 on white noise, the beam model's
    factor on beam-correlated noise; pulls against truth have unit spread either way."""
    table, meta = _measure(tmp_path, 4, correlated=correlated, error_model="measured")
    white, _ = _measure(tmp_path, 4, correlated=correlated, error_model="white")
    pull = (table["flux_jy"] - table["true_jy"]) / table["flux_err_jy"]
    print(
        f"\ncorrelated={correlated}: noise scale {meta['noise_scale']:.3f} from "
        f"{meta['noise_samples']} positions, pull std {pull.std():.3f}"
    )
    assert meta["noise_samples"] >= forced.MIN_NOISE_SAMPLES
    assert 0.85 < pull.std() < 1.15
    if correlated:
        assert meta["noise_scale"] > 2.0
    else:
        assert 0.9 < meta["noise_scale"] < 1.1
    np.testing.assert_allclose(table["flux_jy"], white["flux_jy"])
    np.testing.assert_allclose(table["flux_err_jy"], white["flux_err_jy"] * meta["noise_scale"])


def test_measured_error_model_without_free_sky_falls_back_to_beam(tmp_path, monkeypatch):
    monkeypatch.setattr(forced, "MIN_NOISE_SAMPLES", 10**6)
    measured, meta = _measure(tmp_path, 5, correlated=True, error_model="measured")
    beam, _ = _measure(tmp_path, 5, correlated=True, error_model="beam")
    assert meta["noise_scale"] is None
    np.testing.assert_allclose(measured["flux_err_jy"], beam["flux_err_jy"])


def test_unmeasurable_sources_are_flagged_rows(tmp_path):
    cat = lightcurves.grid_catalog(20, CENTRE, 0.3, 0.1, flux_range=(0.05, 0.1), seed=4)
    extra = pd.DataFrame(
        {
            "source_id": ["far_off", "low_pb", "edge"],
            "ra_deg": [CENTRE[0] + 5.0, CENTRE[0], CENTRE[0]],
            "dec_deg": [CENTRE[1], CENTRE[1] + 0.4245, CENTRE[1] - 0.4245],
            "flux_jy": [0.1, 0.1, 0.1],
            "spectral_index": [-0.7] * 3,
        }
    )
    cat = pd.concat([cat, extra], ignore_index=True)
    image, pb = tmp_path / "image.fits", tmp_path / "pb.fits"
    lightcurves.make_test_image(image, cat, pb_path=pb, npix=256, rms_jy=RMS, seed=5)
    # pb at 0.4245 deg is ~0.93: a cut of 0.95 removes it, leaves the centre sources
    table, _ = forced.forced_photometry(image, cat, pb_path=pb, pb_cut=0.95)
    assert len(table) == len(cat)
    row = table.set_index("source_id")
    assert row.loc["far_off", "flags"] == forced.OFF_IMAGE
    assert np.isnan(row.loc["far_off", "flux_jy"]) and np.isnan(row.loc["far_off", "pb_response"])
    assert row.loc["low_pb", "flags"] & forced.BELOW_PB_CUT
    assert np.isnan(row.loc["low_pb", "flux_jy"])
    assert 0.9 < row.loc["low_pb", "pb_response"] < 0.95
    # the southern edge source sits 1.5 pixels inside the image: kernel truncated
    table, _ = forced.forced_photometry(image, cat, pb_path=pb, pb_cut=0.2)
    row = table.set_index("source_id")
    assert row.loc["edge", "flags"] == forced.NEAR_EDGE
    assert abs(row.loc["edge", "flux_jy"] / 0.1 - 1) < 0.1
    assert forced.describe_flags(row.loc["edge", "flags"]) == ["NEAR_EDGE"]


def test_blanked_pixels(tmp_path):
    from astropy.io import fits

    cat = lightcurves.grid_catalog(9, CENTRE, 0.12, 0.06, flux_range=(0.05, 0.1), seed=6)
    image = tmp_path / "image.fits"
    lightcurves.make_test_image(image, cat, npix=128, rms_jy=RMS, seed=7)
    table0, _ = forced.forced_photometry(image, cat)
    _, wcs, _ = read_image(image)
    x, y = wcs.world_to_pixel_values(cat["ra_deg"].to_numpy(), cat["dec_deg"].to_numpy())
    with fits.open(image, mode="update") as hdul:
        # blank the source 0 pixel itself, and one pixel two columns off source 1
        hdul[0].data[0, 0, int(round(y[0])), int(round(x[0]))] = np.nan
        hdul[0].data[0, 0, int(round(y[1])), int(round(x[1])) + 2] = np.nan
    table, _ = forced.forced_photometry(image, cat)
    assert table["flags"].tolist()[:2] == [forced.NAN_PIXELS] * 2
    assert np.isnan(table["flux_jy"].iloc[0])
    assert (
        abs(table["flux_jy"].iloc[1] - table0["flux_jy"].iloc[1])
        < 3 * table0["flux_err_jy"].iloc[1]
    )
    assert (table["flags"].iloc[2:] == 0).all()


def test_image_without_beam_names_the_file(tmp_path):
    cat = lightcurves.grid_catalog(4, CENTRE, 0.1, 0.05, seed=8)
    image = tmp_path / "nobeam.fits"
    lightcurves.make_test_image(image, cat, npix=64, beam_keywords=False)
    with pytest.raises(ValueError, match=r"nobeam\.fits: no BMAJ/BMIN/BPA beam keywords"):
        forced.forced_photometry(image, cat)


def test_corrupt_parquet_names_the_file(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(ValueError, match=r"broken\.parquet: not a readable Parquet"):
        forced.gather_timeseries([bad], tmp_path / "ts.parquet")
    assert not (tmp_path / "ts.parquet").exists()


def test_cli_photometry_and_gather(tmp_path, capsys):
    cat = lightcurves.grid_catalog(30, CENTRE, 0.3, 0.08, flux_range=(0.02, 0.2), seed=9)
    cat_csv = tmp_path / "sky_catalog.csv"
    cat.to_csv(cat_csv, index=False)
    outs = []
    for day, date in enumerate(["2025-01-01T12:00:00", "2025-01-03T12:00:00"]):
        group = tmp_path / "images" / f"2025-01-0{1 + 2 * day}T12:00:00"
        group.mkdir(parents=True)
        lightcurves.make_test_image(
            group / "image.fits",
            cat,
            pb_path=group / "pb.fits",
            npix=256,
            rms_jy=RMS,
            seed=10 + day,
            date_obs=date,
        )
        out = tmp_path / "photometry" / f"{group.name}.parquet"
        assert (
            cli.main(
                [
                    "photometry",
                    str(group / "image.fits"),
                    "--catalog",
                    str(cat_csv),
                    "--out",
                    str(out),
                    "--pb",
                    str(group / "pb.fits"),
                ]
            )
            == 0
        )
        outs.append(out)
    meta = json.loads(pq.read_schema(outs[0]).metadata[b"dsa110_contimg"])
    assert meta["photometry"]["beam_deg"][2] == 30.0
    assert str(cat_csv) in meta["inputs"]
    ts_path = tmp_path / "timeseries.parquet"
    assert cli.main(["gather", *map(str, outs), "--out", str(ts_path)]) == 0
    ts = pd.read_parquet(ts_path)
    assert list(ts.columns) == forced.COLUMNS
    assert len(ts) == 60
    assert ts.groupby("source_id")["mjd"].apply(list).map(lambda m: m == [60676.5, 60678.5]).all()
    assert set(ts["image_id"]) == {"2025-01-01T12:00:00", "2025-01-03T12:00:00"}
    ratio = ts.merge(cat, on="source_id").eval("flux_jy_x / flux_jy_y")
    assert abs(ratio.median() - 1) < 0.01
    # measuring the same image twice is refused, naming the table
    with pytest.raises(ValueError, match="same \\(source_id, image_id\\) twice"):
        forced.gather_timeseries([outs[0], outs[0]], tmp_path / "dup.parquet")
