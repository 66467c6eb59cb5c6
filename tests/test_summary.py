"""The end-of-run summary on a hand-made results directory: QA counts per stage, epochs
per light curve, eta of the constant sources, and the candidates against injected truth."""

import numpy as np
import pandas as pd
import pytest

from dsa110_contimg.summary import format_summary, summarize, visit_spacing


def _results(tmp_path, candidates):
    results, archive = tmp_path / "results", tmp_path / "archive"
    for d in ("qa", "photometry", "ese", "mosaics/m1"):
        (results / d).mkdir(parents=True)
    (archive / "truth").mkdir(parents=True)
    (results / "mosaics" / "m1" / "mosaic.fits").write_bytes(b"")
    (results / "manifest").mkdir()
    pd.DataFrame({"group": ["g0", "g1", "g2"]}).to_parquet(results / "manifest" / "groups.parquet")
    pd.DataFrame({"file": ["x.hdf5"]}).to_parquet(results / "manifest" / "rejected.parquet")
    pd.DataFrame(
        {
            "stage": ["image"] * 3 + ["flag"] * 3,
            "status": ["pass", "pass", "fail", "pass", "warn", "pass"],
        }
    ).to_parquet(results / "qa" / "summary.parquet")
    mjd = 61000.0 + np.arange(10.0)
    rows = [
        {"source_id": s, "image_id": f"g{i}", "mjd": m, "n_references": 4}
        for s in ("A", "B", "ESE001")
        for i, m in enumerate(mjd)
    ]
    pd.DataFrame(rows).to_parquet(results / "photometry" / "normalized.parquet")
    pd.DataFrame(
        {"source_id": ["A", "B", "ESE001"], "n": [10, 10, 10], "eta": [0.9, 1.3, 40.0]}
    ).to_parquet(results / "ese" / "variability_stats.parquet")
    pd.DataFrame(candidates).to_parquet(results / "ese" / "ese_candidates.parquet")
    pd.DataFrame(
        {
            "source_id": ["A", "B", "ESE001"],
            "ra_deg": [1.0, 2.0, 3.0],
            "dec_deg": [54.0] * 3,
            "flux_jy": [1.0, 1.0, 0.5],
            "ese_mjd": [np.nan, np.nan, 61005.0],
            "ese_fwhm_days": [np.nan, np.nan, 4.0],
            "ese_depth": [np.nan, np.nan, 0.4],
        }
    ).to_csv(archive / "sky_catalog.csv", index=False)
    return results, archive


def test_found_ese_and_figures(tmp_path):
    results, archive = _results(
        tmp_path,
        {
            "source_id": ["ESE001"],
            "ese_mjd": [61006.5],
            "ese_duration_days": [4.2],
            "ese_depth": [0.34],
            "ese_sigma": [12.0],
        },
    )
    s = summarize(results, archive)
    assert s["groups"] == 3 and s["rejected_files"] == 1 and s["mosaics"] == 1
    assert s["qa"]["image"] == {"pass": 2, "fail": 1}
    lc = s["light_curves"]
    assert lc["n_sources"] == 3 and lc["epochs_median"] == 10 and lc["references_median"] == 4
    assert lc["eta_median"] == 1.1 and lc["eta_sources"] == 2  # the ESE source left out
    (t,) = s["injected"]
    assert t["found"] and t["offset_epochs"] == 1.5 and t["depth_ratio"] == 0.34 / 0.4
    assert s["false_candidates"] == []
    text = format_summary(s)
    assert "QA image: 2 of 3 passed (1 fail, 2 pass)" in text
    assert "injected ESE ESE001: found; centre off by +1.50 d (+1.50 epochs)" in text
    assert "candidates that are not injected ESEs: 0" in text


def test_missed_ese_and_false_candidate(tmp_path):
    results, archive = _results(
        tmp_path,
        {
            "source_id": ["B"],
            "ese_mjd": [61003.0],
            "ese_duration_days": [3.0],
            "ese_depth": [0.3],
            "ese_sigma": [6.0],
        },
    )
    s = summarize(results, archive)
    assert not s["injected"][0]["found"]
    assert s["false_candidates"] == ["B"]
    assert "injected ESE ESE001: NOT found" in format_summary(s)


def test_epoch_offset_counts_daily_visits_not_images():
    """Two overlapping groups a day see a source twice, 5 minutes apart: an offset of 0.41 d
    is 0.41 epochs of its daily visits, not 114 of its 5-minute image spacing."""
    day = np.arange(20.0)
    mjd = np.sort(np.concatenate([61000.4 + day, 61000.4035 + day]))
    assert visit_spacing(mjd) == pytest.approx(1.0)
    assert np.isnan(visit_spacing([61000.4, 61000.4035]))
