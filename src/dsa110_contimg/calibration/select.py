"""Calibrator selection: each group takes the nearest calibrator group whose solve
passed QA, within a validity window; the others are reported with a reason and either
imaged uncalibrated (marked) or skipped."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg.atomic import write_parquet, write_text
from dsa110_contimg.provenance import provenance

log = logging.getLogger(__name__)

SELECTION_COLUMNS = ["group", "calgroup", "separation_hours", "status", "reason"]
FALLBACKS = ("uncalibrated", "skip")


def read_cal_qa(paths):
    """{calgroup: QA dict} from solve QA json files."""
    out = {}
    for p in paths:
        qa = json.loads(Path(p).read_text())
        out[qa["calgroup"]] = qa
    return out


def select_calibrations(groups, cal_qa, validity_hours=12.0, fallback="uncalibrated"):
    """One row per group (SELECTION_COLUMNS): the nearest calibrator group (by mid time)
    whose solve passed QA and lies within `validity_hours`. Without one, status is
    `fallback` ("uncalibrated": imaged uncalibrated with a warning; "skip") and the
    reason names the nearest candidates."""
    if fallback not in FALLBACKS:
        raise ValueError(f"calibrate fallback {fallback!r}: choose one of {FALLBACKS}")
    cal_rows = groups[groups.has_calibrator] if "has_calibrator" in groups else groups.iloc[:0]
    mids = dict(zip(groups.group, groups.mid_mjd))
    usable = {c: mids[c] for c in cal_rows.group if c in cal_qa and cal_qa[c].get("passed")}
    failed = {
        c: cal_qa.get(c, {}).get("reasons", ["no QA record"])
        for c in cal_rows.group
        if c not in usable
    }
    rows = []
    for g in groups.itertuples():
        seps = sorted(((abs(m - g.mid_mjd) * 24.0, c) for c, m in usable.items()))
        if seps and seps[0][0] <= validity_hours:
            rows.append((g.group, seps[0][1], seps[0][0], "calibrated", ""))
            continue
        parts = [f"no calibrator group passed QA within {validity_hours:g} h"]
        if seps:
            parts.append(f"nearest usable: {seps[0][1]} at {seps[0][0]:.2f} h")
        near_failed = sorted(
            (abs(mids[c] - g.mid_mjd) * 24.0, c)
            for c in failed
            if abs(mids[c] - g.mid_mjd) * 24.0 <= validity_hours
        )
        for sep, c in near_failed:
            parts.append(f"{c} at {sep:.2f} h failed QA ({'; '.join(failed[c])})")
        rows.append(
            (
                g.group,
                "",
                np.nan,
                fallback if fallback == "skip" else "uncalibrated",
                "; ".join(parts),
            )
        )
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)


def write_selection(
    groups_path, qa_paths, selection_path, report_path, validity_hours=12.0, fallback="uncalibrated"
):
    """Selection Parquet and the human-readable list of groups without a calibrator."""
    groups = pd.read_parquet(groups_path)
    sel = select_calibrations(groups, read_cal_qa(qa_paths), validity_hours, fallback)
    meta = provenance(
        [groups_path, *qa_paths], {"validity_hours": validity_hours, "fallback": fallback}
    )
    write_parquet(sel, selection_path, meta)
    missing = sel[sel.status != "calibrated"]
    lines = [
        f"# groups without a usable calibrator within {validity_hours:g} h "
        f"(fallback: {fallback}); {len(missing)} of {len(sel)}",
        "# group\tstatus\treason",
    ]
    lines += [f"{r.group}\t{r.status}\t{r.reason}" for r in missing.itertuples()]
    write_text("\n".join(lines) + "\n", report_path)
    for r in missing.itertuples():
        log.warning("group %s has no calibrator (%s): %s", r.group, r.status, r.reason)
    log.info(
        "calibration selection: %d calibrated, %d without calibrator",
        (sel.status == "calibrated").sum(),
        len(missing),
    )
    return sel


def _run_select(args):
    write_selection(
        args.manifest, args.qa, args.out, args.report, args.validity_hours, args.fallback
    )


def register_cli(sub):
    p = sub.add_parser("calibrate-select", help="choose a calibrator group for every group")
    p.add_argument("qa", nargs="*", help="solve QA json files")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="selection Parquet")
    p.add_argument("--report", required=True, help="text list of groups without calibrator")
    p.add_argument("--validity-hours", type=float, default=12.0)
    p.add_argument("--fallback", choices=FALLBACKS, default="uncalibrated")
    p.set_defaults(func=_run_select)
