"""`snakemake --report`: one self-contained HTML page with the job graph, runtimes and the
QA plots registered with report(); and the manifest QA those plots start with."""

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from dsa110_contimg.workflow import timeline

from pipeline import SMALL_GROUPS, failure_report, product_targets, run

pytestmark = pytest.mark.workflow


def _report_vars(html):
    """The JSON data the report page is built from (`var NAME = {...};` script blocks)."""
    found = dict(re.findall(r'<script id="(\w[\w-]*)">\s*var \w+ = (.*?);\s*</script>', html, re.S))
    return {k: json.loads(v) for k, v in found.items() if v.startswith(("{", "["))}


def test_report_has_dag_runtimes_and_qa_plots(small_archive, clean_small_run, tmp_path):
    html_path = tmp_path / "report.html"
    status, log = run(
        small_archive,
        clean_small_run,
        *product_targets(clean_small_run),
        "--report",
        str(html_path),
    )
    assert status == 0, failure_report(log)
    html = html_path.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and html.rstrip().endswith("</html>")
    data = _report_vars(html)

    timeline = clean_small_run / "qa" / "manifest" / "timeline.png"
    entry = data["results"][str(timeline)]
    assert entry["mime_type"] == "image/png"
    assert entry["job_properties"]["rule"] == "qa_manifest"
    assert "Archive manifest" in entry["caption"]
    png = base64.b64decode(entry["data_uri"].split("base64,", 1)[1])
    assert png == timeline.read_bytes() and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert "QA" in json.dumps(data["categories"])

    nodes = {
        n["rule"]
        for d in data["rulegraph"]["data"]
        if d["name"] == "node-data"
        for n in d["values"]
    }
    assert {"manifest", "convert", "qa_manifest"} <= nodes, nodes
    runtimes = data["runtimes"]["data"]["values"]
    assert sorted(r["rule"] for r in runtimes) == ["convert"] * len(SMALL_GROUPS) + [
        "manifest",
        "qa_manifest",
    ]
    assert all(r["runtime"] > 0 for r in runtimes)
    assert str(clean_small_run) in html  # the workflow description names the products


def _tables():
    groups = pd.DataFrame(
        {
            "group": ["2026-01-01T000000", "2026-01-01T000144", "2026-01-02T000000"],
            "subbands": [list(range(16)), list(range(16)), list(range(16))],
        }
    )
    rejected = pd.DataFrame(
        {
            "path": ["a_sb03.hdf5", "a_sb07.hdf5", "junk.hdf5"],
            "group": ["2026-01-01T000400", "2026-01-01T000400", ""],
            "subband": [3, 7, -1],
            "reason": [
                "incomplete group: missing sb00, ...",
                "incomplete group",
                "unreadable HDF5",
            ],
        }
    )
    return groups, rejected


def test_manifest_states_and_summary_counts():
    groups, rejected = _tables()
    ids, states = timeline.subband_states(groups, rejected, 16, ["2026-01-01T000144"])
    assert ids == [
        "2026-01-01T000000",
        "2026-01-01T000144",
        "2026-01-01T000400",
        "2026-01-02T000000",
    ]
    assert (states[0] == timeline.USED).all() and (states[1] == timeline.QUARANTINED).all()
    assert list(np.flatnonzero(states[2] == timeline.REJECTED)) == [3, 7]
    assert (states[2] == timeline.MISSING).sum() == 14
    s = timeline.summarize(groups, rejected, 16, ["2026-01-01T000144", "2026-02-01T000000"])
    assert s["n_groups_used"] == 2 and s["quarantined"] == ["2026-01-01T000144"]
    assert s["quarantine_not_in_manifest"] == ["2026-02-01T000000"]
    assert s["incomplete_groups"] == ["2026-01-01T000400"]
    assert s["unreadable_files"] == ["junk.hdf5"]
    assert s["n_subband_files"] == {"used": 32, "quarantined": 16, "rejected": 2, "missing": 14}


def test_manifest_qa_writes_png_and_json(tmp_path):
    groups, rejected = _tables()
    groups.to_parquet(tmp_path / "g.parquet")
    rejected.to_parquet(tmp_path / "r.parquet")
    summary = timeline.manifest_qa(
        tmp_path / "g.parquet",
        tmp_path / "r.parquet",
        tmp_path / "qa" / "timeline.png",
        tmp_path / "qa" / "s.json",
    )
    from PIL import Image

    with Image.open(tmp_path / "qa" / "timeline.png") as im:
        assert im.format == "PNG" and im.size == (1000, 380)
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = {
        tuple(int(timeline.STATE_COLOURS[s][i : i + 2], 16) for i in (1, 3, 5))
        for s in (timeline.USED, timeline.REJECTED)
    }
    assert all((pixels == c).all(axis=1).any() for c in colours)
    on_disk = json.loads((tmp_path / "qa" / "s.json").read_text())
    assert on_disk["n_subband_files"] == summary["n_subband_files"]
    assert on_disk["provenance"]["software"] == "dsa110-contimg"
    assert list((tmp_path / "qa").iterdir()) and not list((tmp_path / "qa").glob("*.partial-*"))
