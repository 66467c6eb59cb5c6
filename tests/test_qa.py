"""QA of images and mosaics: an uncalibrated image fails with the metric that failed;
grading, the summary table and the exclusion helper."""

import json

import numpy as np
import pandas as pd
import pytest

from dsa110_contimg import qa, qa_records

from imaging_fixtures import _truth

pytestmark = pytest.mark.casa


def test_uncalibrated_image_fails_qa(uncalibrated_image, tmp_path):
    _, catalog = _truth(uncalibrated_image["archive"])
    paths = uncalibrated_image["image"]["paths"]
    report, table, image = qa.qa_image(
        paths["image.fits"], paths["pb.fits"], paths["residual.fits"], catalog
    )
    assert report["status"] == "fail"
    assert "flux_ratio_error" in report["failed"], report["metrics"]
    assert report["metrics"]["flux_ratio"] < 0.5
    written = qa.write_report(report, table, image, tmp_path / "qa.json", tmp_path / "qa.png")
    assert (tmp_path / "qa.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not qa_records.passed(tmp_path / "qa.json")
    assert json.loads((tmp_path / "qa.json").read_text())["failed"] == written["failed"]


def test_grade_limits_and_missing_metrics():
    status, grades, failed, warned = qa.grade(
        {
            "dynamic_range": 50.0,
            "flux_ratio_error": 0.35,
            "position_offset_beam": None,
            "rms_thermal_ratio": 1.2,
        }
    )
    assert grades == {
        "dynamic_range": "warn",
        "flux_ratio_error": "fail",
        "rms_thermal_ratio": "pass",
    }
    assert (status, failed, warned) == ("fail", ["flux_ratio_error"], ["dynamic_range"])
    status, _, failed, _ = qa.grade({"dynamic_range": 50.0}, {"dynamic_range": [40, 30]})
    assert (status, failed) == ("pass", [])
    with pytest.raises(ValueError, match="unknown QA threshold 'snr'"):
        qa.grade({}, {"snr": [1, 2]})


def test_summary_names_failed_products(tmp_path, caplog):
    good = {
        "stage": "image",
        "name": "2026-01-01T000000",
        "status": "pass",
        "failed": [],
        "warned": [],
        "metrics": {"rms_jy": 0.001},
    }
    bad = dict(
        good,
        name="2026-01-01T000509",
        status="fail",
        failed=["flux_ratio_error"],
        metrics={"rms_jy": 0.003, "calibration_status": "uncalibrated"},
    )
    cal = {
        "stage": "cal",
        "name": "2026-01-01T001019",
        "status": "fail",
        "failed": ["bandpass_median_snr"],
        "warned": [],
        "metrics": {"bandpass_median_snr": 3.0},
        "reason": "bandpass: median solution SNR 3.0 < 10",
    }
    paths = []
    for rep in (good, bad):
        paths.append(tmp_path / "image" / f"{rep['name']}.json")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_text(json.dumps(rep))
    (tmp_path / "cal").mkdir()
    paths.append(tmp_path / "cal" / "2026-01-01T001019.json")
    paths[-1].write_text(json.dumps(cal))
    with caplog.at_level("WARNING"):
        df = qa_records.summarize(paths, tmp_path / "summary.parquet")
    back = pd.read_parquet(tmp_path / "summary.parquet")
    assert list(back.status) == ["fail", "pass", "fail"]
    assert list(back.stage) == ["cal", "image", "image"]
    assert back.failed.tolist() == ["bandpass_median_snr", "", "flux_ratio_error"]
    assert back.bandpass_median_snr[0] == 3.0
    assert np.isclose(back.rms_jy[2], 0.003) and len(df) == 3
    assert "QA failed: image 2026-01-01T000509 (flux_ratio_error)" in caplog.text
    assert qa_records.passed(paths[0]) and not qa_records.passed(paths[1])
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json: not a readable QA report"):
        qa_records.summarize([tmp_path / "broken.json"], tmp_path / "s2.parquet")
    # a record of another shape is an error naming the file, not a translated row
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"calgroup": "g", "passed": False, "reasons": ["x"]}))
    with pytest.raises(
        ValueError, match=r"legacy.json: QA record lacks stage, name, status, failed, warned"
    ):
        qa_records.summarize([legacy], tmp_path / "s3.parquet")
