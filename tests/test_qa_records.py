"""One QA record shape for every stage, and the one place where failed products are left
out of mosaics and the time series."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dsa110_contimg import qa
from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.flagging import FlagSettings, flag_qa_record
from dsa110_contimg.photometry.forced import COLUMNS, gather_timeseries
from dsa110_contimg.qa_records import (
    RECORD_KEYS,
    load_report,
    passed_products,
    qa_record,
    summarize,
)


def _write(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _flag_stats(fraction):
    return {
        "flag_fraction": fraction,
        "bad_fraction": 0.01,
        "rfi_fraction": fraction - 0.01,
        "dead_fraction": 0.0,
        "dead_antennas": [],
        "per_antenna": {},
        "per_channel": [],
        "per_integration": [],
        "freq_mhz": [],
    }


def test_every_stage_writes_the_same_top_level_keys(tmp_path):
    """Flagging's, the image QA's and a hand-built record share RECORD_KEYS (first, in
    order), so the summary reads each the same way."""
    flag = flag_qa_record(_flag_stats(0.6), "g.ms", "2026-01-01T000000", FlagSettings())
    assert [k for k in flag if k in RECORD_KEYS] == list(RECORD_KEYS)
    assert (flag["status"], flag["failed"], flag["metrics"]["flag_fraction"]) == (
        "fail",
        ["flag_fraction"],
        0.6,
    )
    image = qa._report(
        "image",
        tmp_path / "2026-01-01T000000" / "image.fits",
        {"dynamic_range": 50.0, "rms_jy": 0.002},
        None,
        {},
        [],
    )
    assert list(image)[:6] == list(RECORD_KEYS)
    assert (image["status"], image["warned"]) == ("warn", ["dynamic_range"])
    apply = qa_record("apply", "2026-01-01T000144", "warn", [], ["calibration"], {"x": 1})
    paths = [
        _write(tmp_path / "flag" / "a.json", flag),
        _write(tmp_path / "image" / "b.json", image),
        _write(tmp_path / "apply" / "c.json", apply),
    ]
    table = summarize(paths, tmp_path / "summary.parquet")
    assert table[["stage", "status", "failed", "warned"]].values.tolist() == [
        ["apply", "warn", "", "calibration"],
        ["flag", "fail", "flag_fraction", ""],
        ["image", "warn", "", "dynamic_range"],
    ]
    assert table.flag_fraction.tolist()[1] == 0.6 and table.rms_jy.tolist()[2] == 0.002


def test_misshapen_records_are_errors_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"^QA record cal/g: QA status 'passed' is not one of"):
        qa_record("cal", "g", "passed")
    with pytest.raises(ValueError, match=r"^QA record cal/g: QA status fail names no failed"):
        qa_record("cal", "g", "fail")
    bad = _write(tmp_path / "x.json", {**qa_record("image", "g", "pass"), "failed": "a,b"})
    with pytest.raises(ValueError, match=rf"^{bad}: QA failed must be a list of check names$"):
        load_report(bad)


def test_passed_products_leaves_out_any_failed_record(tmp_path):
    ok = _write(tmp_path / "ok.json", qa_record("image", "a", "pass"))
    warn = _write(tmp_path / "warn.json", qa_record("flag", "b", "warn", [], ["flag_fraction"]))
    bad = _write(tmp_path / "bad.json", qa_record("flag", "c", "fail", ["flag_fraction"]))
    kept, out = passed_products(["p1", "p2", "p3"], [ok, ok, None], [warn, bad, ok])
    assert kept == ["p1", "p3"]
    assert list(out) == ["p2"] and out["p2"][0]["name"] == "c"
    assert out["p2"][0]["report"] == str(bad)
    with pytest.raises(ValueError):  # the lists must be parallel
        passed_products(["p1", "p2"], [ok])


def test_time_series_leaves_out_images_that_failed_qa(tmp_path, caplog):
    """gather_timeseries with the images' QA and their flagging QA keeps only the images
    whose every record passed, and names the others."""
    parquets, image_qa, flag_qa = [], [], []
    statuses = [("pass", "pass"), ("fail", "pass"), ("pass", "fail"), ("warn", "warn")]
    for i, (image_status, flag_status) in enumerate(statuses):
        name = f"2026-01-0{i + 1}T000000"
        table = pd.DataFrame(
            {
                "source_id": ["s1", "s2"],
                "ra": [10.0, 11.0],
                "dec": [54.0, 54.5],
                "image_id": name,
                "mjd": 61041.0 + i,
                "flux_jy": [1.0, 2.0],
                "flux_err_jy": 0.01,
                "local_rms_jy": 0.001,
                "snr": [100.0, 200.0],
                "pb_response": 0.9,
                "flags": np.int64(0),
            }
        )[COLUMNS]
        parquets.append(tmp_path / f"{name}.parquet")
        write_parquet(table, parquets[-1])
        for stage, status, paths in (
            ("image", image_status, image_qa),
            ("flag", flag_status, flag_qa),
        ):
            failed = ["metric"] if status == "fail" else []
            warned = ["metric"] if status == "warn" else []
            record = qa_record(stage, name, status, failed, warned)
            paths.append(_write(tmp_path / stage / f"{name}.json", record))
    out = tmp_path / "timeseries.parquet"
    with caplog.at_level("WARNING"):
        ts = gather_timeseries(parquets, out, image_qa, flag_qa)
    assert sorted(ts.image_id.unique()) == ["2026-01-01T000000", "2026-01-04T000000"]
    assert len(ts) == 4
    meta = json.loads(pq.read_schema(out).metadata[b"dsa110_contimg"])
    assert meta["left_out"] == [str(parquets[1]), str(parquets[2])]
    assert f"left out {parquets[1]}, failed QA: image/2026-01-02T000000 (metric)" in caplog.text
    assert f"left out {parquets[2]}, failed QA: flag/2026-01-03T000000 (metric)" in caplog.text
