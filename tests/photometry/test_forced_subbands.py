"""Forced photometry per sub-band: a cube image's FREQ planes, or separate sub-band files."""

import numpy as np
import pandas as pd
import pytest

from dsa110_contimg.photometry import forced
from dsa110_contimg.primary_beam import airy_power, angular_separation
from dsa110_contimg.simulation import lightcurves

CENTRE = (150.0, 37.0)
FREQS = 1311e6 + 47e6 * (np.arange(4) + 0.5)
NU0 = 1405e6


@pytest.fixture(scope="module")
def catalog():
    return lightcurves.grid_catalog(
        16, CENTRE, 0.25, 0.1, flux_range=(0.05, 0.5), seed=51, spectral_index=-0.7
    )


def _apparent(catalog, nu):
    d2r = np.deg2rad
    sep = angular_separation(
        d2r(catalog["ra_deg"].to_numpy()),
        d2r(catalog["dec_deg"].to_numpy()),
        d2r(CENTRE[0]),
        d2r(CENTRE[1]),
    )
    return catalog["flux_jy"].to_numpy() * (nu / NU0) ** -0.7 * airy_power(sep, nu)


def test_cube_planes_are_measured_per_subband(tmp_path, catalog):
    cube = tmp_path / "cube.fits"
    lightcurves.make_test_image(
        cube,
        catalog,
        npix=200,
        cell_arcsec=12.0,
        centre_deg=CENTRE,
        rms_jy=1e-3,
        freq_hz=NU0,
        seed=52,
        subband_freqs_hz=FREQS,
    )
    table, meta = forced.forced_photometry(cube, catalog, error_model="white")
    assert meta["subbands_hz"] == pytest.approx(list(FREQS))
    pulls = []
    for k, nu in enumerate(FREQS):
        assert np.allclose(table[f"freq_sb{k}_hz"], nu, rtol=1e-9)
        truth = _apparent(catalog, nu)
        pulls.append((table[f"flux_sb{k}_jy"] - truth) / table[f"flux_err_sb{k}_jy"])
    pulls = np.concatenate(pulls)
    wide_truth = np.mean([_apparent(catalog, nu) for nu in FREQS], axis=0)
    ratio = table["flux_jy"] / wide_truth
    print(
        f"\ncube of 4 sub-bands: sub-band flux pulls rms {np.std(pulls):.2f}, max "
        f"{np.max(np.abs(pulls)):.1f}; wide-band / truth median {np.median(ratio):.4f}"
    )
    assert np.max(np.abs(pulls)) < 5
    assert abs(np.median(ratio) - 1) < 0.01
    # the spectral slope across the band is measured: the brightest source
    i = int(np.argmax(catalog["flux_jy"]))
    fluxes = np.array([table[f"flux_sb{k}_jy"][i] for k in range(4)])
    slope = np.polyfit(np.log(FREQS), np.log(fluxes), 1)[0]
    expected = np.polyfit(np.log(FREQS), np.log([_apparent(catalog, nu)[i] for nu in FREQS]), 1)[0]
    assert slope == pytest.approx(expected, abs=0.3)


def test_separate_subband_images_and_gather(tmp_path, catalog):
    wide = tmp_path / "image.fits"
    lightcurves.make_test_image(wide, catalog, npix=200, centre_deg=CENTRE, freq_hz=NU0, seed=53)
    subs = []
    for k, nu in enumerate(FREQS):
        cat = catalog.assign(flux_jy=catalog["flux_jy"] * (nu / NU0) ** -0.7)
        subs.append(tmp_path / f"sb{k}.fits")
        lightcurves.make_test_image(
            subs[-1], cat, npix=200, centre_deg=CENTRE, freq_hz=nu, seed=60 + k
        )
    out = tmp_path / "phot.parquet"
    table = forced.run_photometry(wide, catalog, out, subband_images=[str(p) for p in subs])
    for k, nu in enumerate(FREQS):
        pull = (table[f"flux_sb{k}_jy"] - _apparent(catalog, nu)) / table[f"flux_err_sb{k}_jy"]
        assert np.max(np.abs(pull)) < 5
        assert np.allclose(table[f"freq_sb{k}_hz"], nu, rtol=1e-9)
    plain = tmp_path / "plain.parquet"
    forced.run_photometry(wide, catalog, plain, image_id="other")
    ts = forced.gather_timeseries([out, plain], tmp_path / "timeseries.parquet")
    assert "flux_sb3_jy" in ts.columns
    assert ts.loc[ts["image_id"] == "other", "flux_sb0_jy"].isna().all()
    assert ts.loc[ts["image_id"] != "other", "flux_sb0_jy"].notna().all()
    with pytest.raises(ValueError, match=r"sb0\.fits: a sub-band image must be one plane"):
        small = tmp_path / "sb0.fits"
        lightcurves.make_test_image(small, catalog, npix=64, centre_deg=CENTRE, seed=70)
        forced.forced_photometry(wide, catalog, subband_images=[small])
    assert isinstance(ts, pd.DataFrame)


def test_lambda2_ese_from_subband_images_end_to_end(tmp_path):
    """Sub-band images of a field where one source has a lambda^2 ESE -> photometry ->
    time series -> ese-detect: the candidate's depth grows with lambda^2."""
    from dsa110_contimg.variability import ese

    catalog = lightcurves.grid_catalog(
        9, CENTRE, 0.085, 0.04, flux_range=(0.2, 0.5), seed=90, spectral_index=-0.7
    )
    lam2 = (299792458.0 / FREQS) ** 2
    mjd = 60000.0 + np.arange(40)
    tables = []
    for j, t in enumerate(mjd):
        subs, band_flux = [], []
        for k, nu in enumerate(FREQS):
            depth = 0.5 * lam2[k] / lam2.mean()
            lens = np.ones(len(catalog))
            lens[0] = lightcurves.ese_profile(t, 60020.0, 8.0, depth)
            cat = catalog.assign(flux_jy=catalog["flux_jy"] * (nu / NU0) ** -0.7 * lens)
            band_flux.append(cat["flux_jy"].to_numpy())
            subs.append(tmp_path / f"e{j}" / f"sb{k}.fits")
            lightcurves.make_test_image(
                subs[-1],
                cat,
                npix=80,
                centre_deg=CENTRE,
                freq_hz=nu,
                seed=1000 * j + k,
                date_obs="2025-01-01T00:00:00",
            )
        # the wide-band image: the sub-band mean sky, noise / sqrt(4)
        wide = tmp_path / f"e{j}" / "image.fits"
        lightcurves.make_test_image(
            wide,
            catalog.assign(flux_jy=np.mean(band_flux, axis=0)),
            npix=80,
            centre_deg=CENTRE,
            freq_hz=NU0,
            rms_jy=5e-4,
            seed=j,
        )
        table, _ = forced.forced_photometry(
            wide, catalog, image_id=f"e{j}", subband_images=subs, box_size=32
        )
        table["mjd"] = t
        tables.append(table)
    ts = pd.concat(tables, ignore_index=True)
    stats = ese.analyse_sources(ts).set_index("source_id")
    row = stats.loc[catalog["source_id"][0]]
    depths = [row[f"ese_depth_sb{k}"] for k in range(4)]
    truth = 0.5 / lam2.mean()
    print(
        f"\nlambda^2 ESE through sub-band images: {row['ese_sigma']:.1f} sigma, depths "
        f"{np.round(depths, 3)}, slope {row['ese_lambda2_slope']:.2f} +- "
        f"{row['ese_lambda2_slope_err']:.2f} m^-2 (truth {truth:.2f})"
    )
    assert row["ese_sigma"] >= 5 and row["ese_dip_ok"]
    assert abs(row["ese_lambda2_slope"] - truth) < 3 * row["ese_lambda2_slope_err"]
    assert row["ese_lambda2_sigma"] > 3
    others = stats.drop(index=catalog["source_id"][0])
    assert not ((others["ese_sigma"] >= 5) & others["ese_dip_ok"]).any()
