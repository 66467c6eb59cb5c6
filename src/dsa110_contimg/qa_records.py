"""The one shape of a QA record, and the one place where products that failed QA are left
out downstream.

Every QA-producing step (flagging, calibration solve and apply, image and mosaic QA)
writes ``qa/{stage}/{name}.json`` with the top-level keys RECORD_KEYS:

- ``stage``: flag, cal, apply, image or mosaic; ``name``: the group or mosaic;
- ``status``: pass, warn or fail (the worst of the checks);
- ``failed`` / ``warned``: names of the checks that failed / warned (lists);
- ``metrics``: {check or measurement: number, string or null};

followed by what the step adds (product, reason, thresholds, settings, provenance and
its own details). `summarize` gathers the records into ``qa/summary.parquet`` reading
these keys and nothing else, so it needs no per-stage translation; `passed_products` is
where mosaics and the time series leave out the products whose QA failed.
"""

import json
import logging
from pathlib import Path

from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.provenance import provenance

log = logging.getLogger(__name__)

PASS, WARN, FAIL = "pass", "warn", "fail"
STATUS_RANK = {PASS: 0, WARN: 1, FAIL: 2}
RECORD_KEYS = ("stage", "name", "status", "failed", "warned", "metrics")


def qa_record(stage, name, status, failed=(), warned=(), metrics=None, **details):
    """A QA record: RECORD_KEYS first, then `details` (product, reason, provenance, ...)."""
    record = {
        "stage": stage,
        "name": name,
        "status": status,
        "failed": list(failed),
        "warned": list(warned),
        "metrics": dict(metrics or {}),
        **details,
    }
    check_record(record, f"QA record {stage}/{name}")
    return record


def check_record(record, source):
    """ValueError naming `source` when `record` lacks a RECORD_KEYS key or its status or
    lists are not of the shape."""
    if not isinstance(record, dict):
        raise ValueError(f"{source}: a QA record is a JSON object, not {type(record).__name__}")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"{source}: QA record lacks {', '.join(missing)}")
    if record["status"] not in STATUS_RANK:
        raise ValueError(
            f"{source}: QA status {record['status']!r} is not one of {', '.join(STATUS_RANK)}"
        )
    for key in ("failed", "warned"):
        if not isinstance(record[key], list):
            raise ValueError(f"{source}: QA {key} must be a list of check names")
    if record["status"] == FAIL and not record["failed"]:
        raise ValueError(f"{source}: QA status fail names no failed check")


def load_report(path):
    """The QA record at `path` (ValueError naming the file if unreadable or misshapen)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable QA report ({err})") from err
    check_record(record, path)
    return record


def passed(report_path):
    """True unless the QA record at `report_path` says the product failed."""
    return load_report(report_path)["status"] != FAIL


def passed_products(products, *report_lists):
    """Split `products` into those whose every QA record passed and those left out.

    `report_lists` are lists parallel to `products` (e.g. each image's image QA and its
    group's flagging QA; None where a product has no record). Returns (kept products,
    {left-out product: [its failed records, each with `report` = its path]}). Mosaics and
    the time series leave out failed products here and nowhere else."""
    kept, excluded = [], {}
    for product, *reports in zip(products, *report_lists, strict=True):
        records = [{**load_report(r), "report": str(r)} for r in reports if r is not None]
        failed = [r for r in records if r["status"] == FAIL]
        if failed:
            excluded[product] = failed
        else:
            kept.append(product)
    return kept, excluded


def describe_failures(records):
    """`image/2026-01-01T000000 (flux_ratio_error)`, ...: the failed records in a line."""
    return ", ".join(f"{r['stage']}/{r['name']} ({', '.join(r['failed'])})" for r in records)


def summarize(report_paths, out_path):
    """Gather QA records (qa_records.RECORD_KEYS, every stage alike) into one Parquet
    table, one row per product with its metrics as columns; logs failures."""
    import pandas as pd

    rows = []
    for path in report_paths:
        report = load_report(path)
        row = {
            "stage": report["stage"],
            "name": report["name"],
            "status": report["status"],
            "failed": ",".join(report["failed"]),
            "warned": ",".join(report["warned"]),
            "product": report.get("product"),
            "report": str(path),
        }
        for key, value in report["metrics"].items():
            row[key] = value if value is None or isinstance(value, (int, float)) else str(value)
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["stage", "name"]).reset_index(drop=True)
    for r in df.itertuples() if len(df) else []:
        if r.status == FAIL:
            log.warning("QA failed: %s %s (%s), excluded downstream", r.stage, r.name, r.failed)
    write_parquet(df, out_path, provenance(report_paths))
    counts = df.status.value_counts().to_dict() if len(df) else {}
    log.info("QA summary of %d products: %s -> %s", len(df), counts, out_path)
    return df
