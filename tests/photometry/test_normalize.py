"""Relative flux normalization: removes common per-epoch gain errors, rejects variable
references."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dsa110_contimg import cli
from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.photometry import normalize
from dsa110_contimg.simulation import lightcurves


@pytest.fixture(scope="module")
def gain_errors():
    """300 sources x 120 epochs, 10% rms common gain error, 10 bright sources with ESEs."""
    sim = lightcurves.simulate_lightcurves(
        n_sources=300,
        n_epochs=120,
        seed=11,
        snr_range=(20.0, 2000.0),
        gain_error=0.10,
        n_ese=10,
        ese_depth=(0.3, 0.5),
        ese_fwhm_days=(5.0, 20.0),
    )
    # make the ESE sources bright, so they would be references if not rejected
    sim["flux"][:10] *= 20.0
    sim["truth"].loc[:9, "true_flux_jy"] *= 20.0
    table, info = normalize.normalize_timeseries(lightcurves.lightcurves_to_table(sim))
    return sim, table.merge(sim["truth"], on="source_id"), info


def _scatter(rows, column):
    ratio = rows[column] / rows["true_flux_jy"]
    return ratio.groupby(rows["source_id"], observed=True).std()


def test_common_gain_error_removed(gain_errors):
    sim, t, info = gain_errors
    bright = t[~t["ese"] & (t["true_flux_jy"] > 0.2)]  # per-epoch SNR > 200
    raw, norm = _scatter(bright, "flux_jy"), _scatter(bright, "flux_norm_jy")
    print(
        f"\n{bright['source_id'].nunique()} constant bright sources: fractional scatter "
        f"raw median {raw.median():.4f}, normalized median {norm.median():.4f} "
        f"max {norm.max():.4f}; references {info['n_references']}"
    )
    assert raw.median() > 0.08
    assert norm.median() < 0.005
    assert norm.max() < 0.01
    # the factors follow the injected gains up to one overall scale
    c = t.groupby("image_id", observed=True)["norm_factor"].first().to_numpy()
    ratio = c / sim["gain"]
    assert np.std(ratio / np.median(ratio)) < 0.002


def test_normalized_errors_are_honest(gain_errors):
    _, t, _ = gain_errors
    const = t[~t["ese"]]
    resid = const["flux_norm_jy"] - const.groupby("source_id", observed=True)[
        "flux_norm_jy"
    ].transform("mean")
    pull = resid / const["flux_norm_err_jy"]
    print(f"\nnormalized pulls of constant sources: std {pull.std():.3f}")
    assert 0.85 < pull.std() < 1.1
    assert (t["norm_factor_err"] > 0).all()
    assert (t["flux_norm_err_jy"] >= t["flux_err_jy"] / t["norm_factor"]).all()


def test_variable_references_rejected(gain_errors):
    _, t, info = gain_errors
    ese_ids = set(t.loc[t["ese"], "source_id"].astype(str))
    print(
        f"\nrejected {len(info['rejected_references'])} references; ESE sources rejected "
        f"{len(ese_ids & set(info['rejected_references']))}/10"
    )
    assert ese_ids <= set(info["rejected_references"])
    assert not ese_ids & set(info["references"])
    assert len(info["rejected_references"]) <= 15
    # a dip survives normalization: depth at the injected centre within 5% of truth
    row = t[t["ese"]].drop_duplicates("source_id").iloc[0]
    lc = t[t["source_id"] == row["source_id"]]
    centre = lc.iloc[np.argmin(np.abs(lc["mjd"] - row["ese_mjd"]))]
    base = lc["flux_norm_jy"].median()
    expected = 1 - lightcurves.ese_profile(
        centre["mjd"], row["ese_mjd"], row["ese_fwhm_days"], row["ese_depth"], row["ese_shoulder"]
    )
    assert abs((1 - centre["flux_norm_jy"] / base) - expected) < 0.05


def test_epoch_without_references_is_flagged(tmp_path):
    sim = lightcurves.simulate_lightcurves(
        n_sources=40, n_epochs=30, seed=12, snr_range=(100, 1000)
    )
    table = lightcurves.lightcurves_to_table(sim)
    table["image_id"] = table["image_id"].astype(str)
    table = pd.concat(
        [
            table,
            pd.DataFrame(
                {
                    "source_id": ["lonely"],
                    "ra": [0.0],
                    "dec": [0.0],
                    "image_id": ["other_field"],
                    "mjd": [60100.0],
                    "flux_jy": [0.01],
                    "flux_err_jy": [0.001],
                    "local_rms_jy": [0.001],
                    "snr": [10.0],
                    "pb_response": [1.0],
                    "flags": [0],
                }
            ),
        ],
        ignore_index=True,
    )
    table["source_id"] = table["source_id"].astype(str)
    src, out = tmp_path / "timeseries.parquet", tmp_path / "normalized.parquet"
    write_parquet(table, src)
    assert cli.main(["normalize", str(src), str(out)]) == 0
    norm = pd.read_parquet(out)
    lonely = norm[norm["source_id"] == "lonely"].iloc[0]
    assert lonely["flags"] == normalize.NO_REFERENCE and np.isnan(lonely["flux_norm_jy"])
    assert (norm.loc[norm["source_id"] != "lonely", "flags"] == 0).all()
    meta = json.loads(pq.read_schema(out).metadata[b"dsa110_contimg"])
    assert meta["normalize"]["epochs_without_reference"] == 1
    assert meta["inputs"] == [str(src)]


def test_too_few_references_leaves_fluxes_unnormalized_and_flagged(caplog):
    sim = lightcurves.simulate_lightcurves(n_sources=20, n_epochs=20, seed=13, snr_range=(5, 30))
    table = lightcurves.lightcurves_to_table(sim)
    norm, info = normalize.normalize_timeseries(table)
    assert "only 0 reference sources (need 3" in caplog.text
    assert info["n_references"] == 0 and info["epochs_without_reference"] == 20
    assert (norm["norm_factor"] == 1.0).all()
    assert np.array_equal(norm["flux_norm_jy"].to_numpy(), table["flux_jy"].to_numpy())
    assert (norm["flags"] & normalize.NO_REFERENCE).astype(bool).all()
