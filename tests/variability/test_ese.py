"""Variability statistics, ESE injection-recovery, false-positive rate, incremental runs, alerts."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dsa110_contimg import cli
from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.photometry import normalize
from dsa110_contimg.simulation import lightcurves
from dsa110_contimg.variability import ese


def _detect(sim, **kwargs):
    src = np.repeat(np.arange(sim["flux"].shape[0]), sim["flux"].shape[1])
    mjd = np.tile(sim["mjd"], sim["flux"].shape[0])
    flux, err = sim["flux"].ravel(), sim["flux_err"].ravel()
    ok = np.isfinite(flux)
    return ese.detect_ese(src[ok], mjd[ok], flux[ok], err[ok], sim["flux"].shape[0], **kwargs)


def test_variability_stats_match_direct_computation():
    sim = lightcurves.simulate_lightcurves(
        n_sources=5, n_epochs=50, seed=21, snr_range=(10, 100), missing_fraction=0.2, n_ese=1
    )
    table = lightcurves.lightcurves_to_table(sim)
    stats = ese.analyse_sources(table).set_index("source_id")
    for sid, lc in table.groupby("source_id", observed=True):
        f, e = lc["flux_jy"].to_numpy(), lc["flux_err_jy"].to_numpy()
        w = 1 / e**2
        wmean = np.sum(w * f) / np.sum(w)
        row = stats.loc[sid]
        assert row["n"] == len(f)
        np.testing.assert_allclose(row["mean_jy"], f.mean())
        np.testing.assert_allclose(row["std_jy"], f.std(ddof=1))
        np.testing.assert_allclose(row["wmean_jy"], wmean)
        np.testing.assert_allclose(row["v"], f.std(ddof=1) / f.mean())
        np.testing.assert_allclose(row["eta"], np.sum(w * (f - wmean) ** 2) / (len(f) - 1))
        np.testing.assert_allclose(row["max_dev_sigma"], np.max(np.abs(f - wmean) / e))
        assert row["mjd_last"] == lc["mjd"].max()
    assert stats["eta"].iloc[0] > 5 * stats["eta"].iloc[1:].max()  # the ESE source


def test_injection_recovery_after_normalization():
    """ESEs of depth >= 30% lasting >= 5 epochs at per-epoch SNR >= 20, with 5% gain errors."""
    sim = lightcurves.simulate_lightcurves(
        n_sources=2000,
        n_epochs=200,
        seed=22,
        snr_range=(20.0, 1000.0),
        gain_error=0.05,
        n_ese=400,
        ese_depth=(0.3, 0.6),
        ese_fwhm_days=(5.0, 40.0),
        ese_shoulder=(0.0, 0.3),
        missing_fraction=0.05,
    )
    table, _ = normalize.normalize_timeseries(lightcurves.lightcurves_to_table(sim))
    stats = ese.analyse_sources(table).merge(sim["truth"], on="source_id", suffixes=("", "_true"))
    injected = stats[stats["ese"]]
    found = injected["ese_sigma"] >= 5.0
    false = int((stats.loc[~stats["ese"], "ese_sigma"] >= 5.0).sum())
    good = injected[found]
    dt = (good["ese_mjd"] - good["ese_mjd_true"]).abs()
    print(
        f"\ncompleteness {found.mean():.3f} ({found.sum()}/{len(injected)}), "
        f"false {false}/1600, median |dt| {dt.median():.2f} d, median depth ratio "
        f"{(good['ese_depth'] / good['ese_depth_true']).median():.3f}"
    )
    assert found.mean() >= 0.90
    assert false == 0
    assert dt.median() < 1.0
    assert (dt < good["ese_fwhm_days"]).mean() > 0.95
    assert abs((good["ese_depth"] / good["ese_depth_true"]).median() - 1) < 0.05
    assert abs((good["ese_duration_days"] / good["ese_fwhm_days"]).median() - 1) < 0.25


def test_false_candidates_in_10000_constant_sources():
    sim = lightcurves.simulate_lightcurves(
        n_sources=10000, n_epochs=200, seed=23, snr_range=(5.0, 1000.0), missing_fraction=0.1
    )
    fit = _detect(sim)
    sigma = fit["ese_sigma"]
    print(
        f"\n10000 constant sources: {int((sigma >= 5).sum())} candidates >= 5 sigma; "
        f"fraction > 3 sigma {(sigma > 3).mean():.2e} (Gaussian 1.35e-03), "
        f"> 2 sigma {(sigma > 2).mean():.2e} (2.28e-02)"
    )
    assert (sigma >= 5).sum() <= 1
    # the trials correction is calibrated, not just conservative
    assert 2e-4 < (sigma > 3).mean() < 4e-3
    assert 0.01 < (sigma > 2).mean() < 0.04


def test_underestimated_errors_do_not_make_candidates():
    sim = lightcurves.simulate_lightcurves(
        n_sources=2000, n_epochs=200, seed=24, snr_range=(20.0, 500.0)
    )
    sim["flux_err"] = sim["flux_err"] / 2.0  # errors reported 2x too small
    fit = _detect(sim)
    naive = _detect(sim, rescale_errors=False)
    print(
        f"\nerrors 2x too small: {int((naive['ese_sigma'] >= 5).sum())} false candidates "
        f"unscaled, {int((fit['ese_sigma'] >= 5).sum())} with error rescaling "
        f"(median scale {np.median(fit['error_scale']):.2f})"
    )
    assert (naive["ese_sigma"] >= 5).sum() > 20
    assert (fit["ese_sigma"] >= 5).sum() == 0
    assert abs(np.median(fit["error_scale"]) - 2.0) < 0.1


def test_short_bright_light_curves_keep_their_dips():
    """14 epochs, SNR ~100, a 40% dip of FWHM 4 days: the consecutive differences alone
    would scale the errors ~5x and hide the dip; the scale about the best fit does not.
    Constant sources with errors 2x too small beside them still make no candidate."""
    sim = lightcurves.simulate_lightcurves(
        n_sources=400,
        n_epochs=14,
        seed=27,
        snr_range=(80.0, 120.0),
        n_ese=200,
        ese_depth=(0.35, 0.45),
        ese_fwhm_days=(4.0, 4.0),
        ese_shoulder=(0.0, 0.0),
    )
    sim["flux_err"][200:] /= 2.0
    fit = _detect(sim)
    candidate = (fit["ese_sigma"] >= 5.0) & fit["ese_dip_ok"]
    print(
        f"\n14-epoch ESEs: {candidate[:200].mean():.3f} found, median error scale "
        f"{np.median(fit['error_scale'][:200]):.2f}; constant sources with errors 2x too "
        f"small: {int(candidate[200:].sum())} candidates, median scale "
        f"{np.median(fit['error_scale'][200:]):.2f}"
    )
    assert candidate[:200].mean() >= 0.97  # 0.900 with the consecutive-difference scale alone
    assert candidate[200:].sum() == 0
    assert np.median(fit["error_scale"][200:]) > 1.6


@pytest.fixture
def small_run(tmp_path):
    sim = lightcurves.simulate_lightcurves(
        n_sources=200,
        n_epochs=150,
        seed=25,
        snr_range=(30.0, 300.0),
        n_ese=5,
        ese_depth=(0.4, 0.6),
        ese_fwhm_days=(10.0, 30.0),
    )
    table = lightcurves.lightcurves_to_table(sim)
    table["source_id"] = table["source_id"].astype(str)
    table["image_id"] = table["image_id"].astype(str)
    path = tmp_path / "normalized.parquet"
    write_parquet(table, path)
    return sim, table, path, tmp_path / "ese"


def test_incremental_runs_refit_only_new_measurements(small_run):
    sim, table, path, outdir = small_run
    assert cli.main(["ese-detect", "--timeseries", str(path), "--outdir", str(outdir)]) == 0
    first = pd.read_parquet(outdir / "variability_stats.parquet")
    cands = pd.read_csv(outdir / "ese_candidates.csv")
    assert sorted(cands["source_id"]) == [f"S{i:05d}" for i in range(5)]
    assert (cands["ese_sigma"] >= 5).all()

    def refitted():
        meta = pq.read_schema(outdir / "variability_stats.parquet").metadata
        return json.loads(meta[b"dsa110_contimg"])["refitted_sources"]

    assert refitted() == 200
    ese.run_ese_detect(path, outdir)
    assert refitted() == 0
    # one new measurement of one source
    extra = table[table["source_id"] == "S00100"].iloc[[-1]].assign(mjd=60200.0)
    write_parquet(pd.concat([table, extra], ignore_index=True), path)
    ese.run_ese_detect(path, outdir)
    assert refitted() == 1
    second = pd.read_parquet(outdir / "variability_stats.parquet")
    assert second.loc[second["source_id"] == "S00100", "n"].item() == 151
    others = second["source_id"] != "S00100"
    pd.testing.assert_frame_equal(
        second[others].reset_index(drop=True),
        first[first["source_id"] != "S00100"].reset_index(drop=True),
    )
    ese.run_ese_detect(path, outdir, recompute=True)
    assert refitted() == 200
    # other settings invalidate the stored state
    ese.run_ese_detect(path, outdir, durations_days=(5.0, 20.0))
    assert refitted() == 200


def test_single_source_and_threshold(small_run, capsys):
    _, _, path, outdir = small_run
    assert (
        cli.main(
            [
                "ese-detect",
                "--timeseries",
                str(path),
                "--outdir",
                str(outdir),
                "--source-id",
                "S00003",
                "--min-sigma",
                "3",
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)[0]
    assert row["source_id"] == "S00003" and row["ese_sigma"] > 5
    stats = pd.read_parquet(outdir / "variability_stats.parquet")
    assert list(stats["source_id"]) == ["S00003"]
    with pytest.raises(ValueError, match="no measurements of source"):
        ese.run_ese_detect(path, outdir, source_ids=["nope"])


def test_alerts_only_once_and_command(small_run, tmp_path):
    _, _, path, outdir = small_run
    ese.run_ese_detect(path, outdir)
    alerts = outdir / "alerts.jsonl"
    log = tmp_path / "commands.log"
    command = f'echo "$ESE_SOURCE_ID $ESE_MJD $ESE_SIGMA" >> {log}'
    assert (
        cli.main(
            [
                "alerts",
                "--candidates",
                str(outdir / "ese_candidates.parquet"),
                "--out",
                str(alerts),
                "--command",
                command,
            ]
        )
        == 0
    )
    lines = alerts.read_text().splitlines()
    assert len(lines) == 5
    sent = [json.loads(line) for line in lines]
    assert {a["source_id"] for a in sent} == {f"S{i:05d}" for i in range(5)}
    assert all(a["command_returncode"] == 0 and a["ese_sigma"] >= 5 for a in sent)
    assert len(log.read_text().splitlines()) == 5
    before = alerts.read_bytes()
    # re-running detection and alerts sends nothing new
    ese.run_ese_detect(path, outdir, recompute=True)
    assert ese.update_alerts(outdir / "ese_candidates.parquet", alerts, command=command) == []
    assert alerts.read_bytes() == before
    assert len(log.read_text().splitlines()) == 5


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "normalized.parquet"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"normalized\.parquet: not a readable Parquet"):
        ese.run_ese_detect(bad, tmp_path / "ese")
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text('{"source_id": "a"}\nnot json\n')
    cand = tmp_path / "cand.parquet"
    write_parquet(
        pd.DataFrame(
            {
                "source_id": ["b"],
                "ese_sigma": [6.0],
                "ese_mjd": [1.0],
                "ese_duration_days": [5.0],
                "ese_depth": [0.3],
            }
        ),
        cand,
    )
    with pytest.raises(ValueError, match=r"alerts\.jsonl: line 2 is not JSON"):
        ese.update_alerts(cand, alerts)


def test_sources_with_too_few_measurements_are_not_fitted():
    """A few epochs of a few images (the demo's one day) or a source whose every
    measurement is rejected: statistics are computed, no dip is fitted, no candidate."""
    sim = lightcurves.simulate_lightcurves(n_sources=6, n_epochs=4, seed=3)
    sim["flux"][0, 1:] = np.nan
    sim["flux"][1, :] = np.nan
    src = np.repeat(np.arange(6), 4)
    mjd = np.tile(sim["mjd"], 6)
    flux, err = sim["flux"].ravel(), sim["flux_err"].ravel()
    ok = np.isfinite(flux)
    out = ese.detect_ese(src[ok], mjd[ok], flux[ok], err[ok], 6, min_dip_epochs=2)
    assert not np.any(out["ese_dip_ok"])
    assert np.isnan(out["ese_mjd"][1])


def test_blocks_of_sources_give_the_whole_table_results(tmp_path):
    sim = lightcurves.simulate_lightcurves(
        n_sources=120,
        n_epochs=120,
        seed=7,
        snr_range=(30.0, 300.0),
        n_ese=12,
        ese_depth=(0.3, 0.6),
        ese_fwhm_days=(8.0, 30.0),
        outliers_per_source=1,
        trend=(0.0, 0.3),
    )
    table = lightcurves.lightcurves_to_table(sim)
    path = tmp_path / "normalized.parquet"
    # row groups of 1000 rows: sources straddle row groups and blocks
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path, row_group_size=1000)
    assert pq.ParquetFile(path).metadata.num_row_groups == 15
    whole, _ = ese.run_ese_detect(path, tmp_path / "whole", block_rows=10**9)
    blocks, cand = ese.run_ese_detect(path, tmp_path / "blocks", block_rows=1700, workers=2)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "blocks" / "variability_stats.parquet"),
        pd.read_parquet(tmp_path / "whole" / "variability_stats.parquet"),
        check_exact=True,
    )
    assert len(whole) == 120 and len(cand) >= 10
    ese.run_ese_detect(path, tmp_path / "blocks", block_rows=1700)
    meta = pq.read_schema(tmp_path / "blocks" / "variability_stats.parquet").metadata
    assert json.loads(meta[b"dsa110_contimg"])["refitted_sources"] == 0
    some = ["S00003", "S00050", "S00119"]
    ese.run_ese_detect(path, tmp_path / "blocks", source_ids=some, block_rows=1700)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "blocks" / "variability_stats.parquet"), whole, check_exact=True
    )


def test_a_time_series_not_sorted_by_source_is_read_whole(tmp_path, caplog):
    sim = lightcurves.simulate_lightcurves(n_sources=40, n_epochs=60, seed=3)
    table = lightcurves.lightcurves_to_table(sim).sample(frac=1.0, random_state=1)
    path = tmp_path / "normalized.parquet"
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path, row_group_size=500)
    sorted_path = tmp_path / "sorted.parquet"
    write_parquet(table.sort_values(["source_id", "mjd"]), sorted_path)
    shuffled, _ = ese.run_ese_detect(path, tmp_path / "a", block_rows=600)
    assert "not sorted by source_id" in caplog.text
    reference, _ = ese.run_ese_detect(sorted_path, tmp_path / "b")
    pd.testing.assert_frame_equal(shuffled, reference, rtol=1e-6)
