"""Apply calibration: copy the group's MS to `ms_cal/{group}.ms` and fill
CORRECTED_DATA (casatools' calibrater, as applycal), or (fallback) leave
CORRECTED_DATA = DATA and mark the MS uncalibrated. The main table keyword
`DSA110_CALIBRATION` records which."""

import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from dsa110_contimg.atomic import atomic_output, write_text
from dsa110_contimg.calibration.solutions import BANDPASS_TABLE, GAIN_TABLE
from dsa110_contimg.provenance import provenance
from dsa110_contimg.qa_records import PASS, WARN, qa_record
from dsa110_contimg.sanity import Product, check_ms

log = logging.getLogger(__name__)

MS_KEYWORD = "DSA110_CALIBRATION"


def apply_calibration(ms, out_ms, qa_json, selection_row, cal_dir=None, interp="nearest"):
    """Copy `ms` to `out_ms` and apply the selected tables into CORRECTED_DATA; with no
    calibrator, CORRECTED_DATA = DATA and the MS is marked uncalibrated. Writes the
    apply QA json; returns it."""
    from casacore import tables

    row = dict(selection_row)
    status = row["status"]
    if status == "skip":
        raise ValueError(
            f"group {row['group']}: selection says skip ({row['reason']}); nothing to apply"
        )
    record = {
        "group": row["group"],
        "calibration": status,
        "calgroup": row["calgroup"],
        "separation_hours": (
            None if pd.isna(row["separation_hours"]) else float(row["separation_hours"])
        ),
        "reason": row["reason"],
        "tables": [],
        "warnings": [],
    }
    with atomic_output(out_ms) as tmp:
        shutil.copytree(ms, tmp)
        if status == "calibrated":
            gaintables = [str(Path(cal_dir) / BANDPASS_TABLE), str(Path(cal_dir) / GAIN_TABLE)]
            for tab in gaintables:
                if not Path(tab).exists():
                    raise FileNotFoundError(
                        f"group {row['group']}: calibration table {tab} is missing"
                    )
            correct_data(tmp, gaintables, interp)
            record["tables"] = gaintables
        else:
            with tables.table(str(tmp), readonly=False, ack=False) as t:
                for start in range(0, t.nrows(), 20000):
                    n = min(20000, t.nrows() - start)
                    t.putcol("CORRECTED_DATA", t.getcol("DATA", start, n), start, n)
            record["warnings"].append(f"UNCALIBRATED: {row['reason']}")
            log.warning(
                "group %s: writing UNCALIBRATED data (CORRECTED_DATA = DATA): %s",
                row["group"],
                row["reason"],
            )
        with tables.table(str(tmp), readonly=False, ack=False) as t:
            t.putkeyword(
                MS_KEYWORD,
                {
                    "status": status,
                    "calgroup": row["calgroup"] or "",
                    "reason": row["reason"] or "",
                    "tables": ",".join(record["tables"]),
                },
            )
            flag = t.getcol("FLAG")
        record["flagged_fraction"] = float(flag.mean())
        check_ms(
            tmp,
            Product(Path(out_ms), "apply", row["group"], str(ms)),
            data_column="CORRECTED_DATA",
        )
    record["provenance"] = provenance([ms, *record["tables"]], {"interp": interp})
    record = qa_record(
        "apply",
        row["group"],
        PASS if status == "calibrated" else WARN,
        [],
        [] if status == "calibrated" else ["calibration"],
        {
            "calibration": status,
            "separation_hours": record["separation_hours"],
            "flagged_fraction": record["flagged_fraction"],
        },
        product=str(out_ms),
        **record,
    )
    write_text(json.dumps(record, indent=2, default=str), qa_json)
    return record


def correct_data(ms, gaintables, interp):
    """CORRECTED_DATA = DATA corrected by `gaintables` (flags from failed solutions
    applied, weights untouched): casatools' calibrater directly, the same computation as
    applycal(calwt=False) without importing casatasks (5 s per job)."""
    from dsa110_contimg.casaenv import casatools

    cb = casatools().calibrater()
    try:
        cb.open(filename=str(ms), compress=False, addcorr=True, addmodel=False)
        cb.selectvis()
        for table in gaintables:
            cb.setapply(table=table, interp=interp, calwt=False)
        cb.correct(applymode="calflag")
    finally:
        cb.close()


def calibration_status(ms):
    """The `DSA110_CALIBRATION` record of a calibrated MS (status, calgroup, reason, tables)."""
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        if MS_KEYWORD not in t.keywordnames():
            raise ValueError(f"{ms}: no {MS_KEYWORD} keyword (not written by apply)")
        return dict(t.getkeyword(MS_KEYWORD))


def apply_from_selection(
    ms, selection_path, group, out_ms, qa_json, cal_dir=None, interp="nearest"
):
    """Apply what `selection_path` chose for `group`; `cal_dir` holds the chosen
    calibrator group's tables (results/cal/{calgroup})."""
    sel = pd.read_parquet(selection_path)
    row = sel[sel.group == group]
    if row.empty:
        raise ValueError(f"{selection_path}: no group {group!r}")
    row = row.iloc[0].to_dict()
    if row["calgroup"] and (cal_dir is None or Path(cal_dir).name != row["calgroup"]):
        raise ValueError(
            f"group {group}: selection chose {row['calgroup']} but the "
            f"calibration directory given is {cal_dir}"
        )
    return apply_calibration(ms, out_ms, qa_json, row, cal_dir, interp)


def _run_apply(args):
    sel = pd.read_parquet(args.selection)
    calgroup = sel.calgroup[sel.group == args.group]
    cal_dir = Path(args.cal_root) / calgroup.iloc[0] if len(calgroup) and calgroup.iloc[0] else None
    apply_from_selection(
        args.ms, args.selection, args.group, args.out, args.qa_json, cal_dir, args.interp
    )


def register_cli(sub):
    p = sub.add_parser("calibrate-apply", help="write ms_cal/{group}.ms with CORRECTED_DATA")
    p.add_argument("ms")
    p.add_argument("--selection", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--cal-root", required=True, help="directory holding {calgroup}/ tables")
    p.add_argument("--out", required=True)
    p.add_argument("--qa-json", required=True)
    p.add_argument("--interp", default="nearest")
    p.set_defaults(func=_run_apply)
