"""The ESE alert ledger: each candidate is alerted once, as a JSON line, a VOEvent 2.0
packet and (optionally) a configured shell command.

A candidate is old news when the same source was alerted for a dip overlapping in time
(centre within a duration). New alerts are appended to alerts.jsonl (the ledger, kept
across runs); each is also written as a VOEvent packet under voevents/ beside the ledger
(see `voevent`), whose path the ledger line records.
"""

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import atomic_output
from dsa110_contimg.io import read_table
from dsa110_contimg.variability import voevent

log = logging.getLogger(__name__)


def read_alerts(alerts_path):
    """Alerts already sent (list of dicts); a malformed line raises ValueError naming it."""
    alerts_path = Path(alerts_path)
    if not alerts_path.exists():
        return []
    alerts = []
    for number, line in enumerate(alerts_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            alerts.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{alerts_path}: line {number} is not JSON ({err})") from err
    return alerts


def _same_event(cand, alert):
    """True when a candidate is an event already alerted: same source, overlapping dip."""
    if str(alert.get("source_id")) != str(cand["source_id"]):
        return False
    window = max(float(cand["ese_duration_days"]), float(alert.get("ese_duration_days", 0)))
    return abs(float(cand["ese_mjd"]) - float(alert.get("ese_mjd", np.inf))) <= window


def update_alerts(candidates_path, alerts_path, command=None, timeout_s=60):
    """Append to `alerts_path` one JSON line per candidate not alerted before.

    A candidate is old news when the same source was alerted for a dip overlapping in
    time (centre within a duration). For each new alert, `command` (a shell command) is
    run with the candidate in environment variables ESE_SOURCE_ID, ESE_MJD,
    ESE_DURATION_DAYS, ESE_DEPTH, ESE_SIGMA, ESE_RA, ESE_DEC, the VOEvent packet's path
    in ESE_VOEVENT and the JSON line in ESE_ALERT; its exit code is recorded in the
    alert. Returns the new alerts.
    """
    import datetime as dt

    candidates_path, alerts_path = Path(candidates_path), Path(alerts_path)
    cand = read_table(
        candidates_path, ["source_id", "ese_sigma", "ese_mjd", "ese_duration_days", "ese_depth"]
    )
    cand = cand.sort_values(["ese_sigma", "source_id"], ascending=[False, True], kind="stable")
    previous = read_alerts(alerts_path)
    new = []
    for row in cand.to_dict("records"):
        if any(_same_event(row, old) for old in previous + new):
            continue
        alert = {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()
        }
        alert = json.loads(json.dumps(alert, default=_json_default))
        alert["alerted_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        alert["candidates"] = str(candidates_path)
        new.append(alert)
    packets = alerts_path.parent / "voevents"
    for alert in new:
        alert["voevent"] = str(voevent.write_packet(alert, packets))
        if command:
            alert["command_returncode"] = _run_alert_command(command, alert, timeout_s)
    if new or not alerts_path.exists():
        old_text = alerts_path.read_text() if alerts_path.exists() else ""
        if old_text and not old_text.endswith("\n"):
            old_text += "\n"
        lines = "".join(json.dumps(a, sort_keys=True) + "\n" for a in new)
        with atomic_output(alerts_path) as tmp:
            Path(tmp).write_text(old_text + lines)
    log.info("alerts: %d new of %d candidates -> %s", len(new), len(cand), alerts_path)
    return new


def _json_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return str(value)


def _run_alert_command(command, alert, timeout_s):
    env = dict(os.environ)
    for key in ("source_id", "ese_mjd", "ese_duration_days", "ese_depth", "ese_sigma", "ra", "dec"):
        name = "ESE_" + key.upper().removeprefix("ESE_")
        env[name] = "" if alert.get(key) is None else str(alert[key])
    env["ESE_VOEVENT"] = str(alert.get("voevent", ""))
    env["ESE_ALERT"] = json.dumps(alert, sort_keys=True)
    try:
        done = subprocess.run(
            command, shell=True, env=env, timeout=timeout_s, capture_output=True, text=True
        )
    except subprocess.TimeoutExpired:
        log.error("alert command timed out after %ss for %s", timeout_s, alert["source_id"])
        return None
    if done.returncode:
        log.error(
            "alert command exited %d for %s: %s",
            done.returncode,
            alert["source_id"],
            done.stderr.strip()[-500:],
        )
    return done.returncode


def register_cli(subparsers):
    """Add the `alerts` subcommand."""
    a = subparsers.add_parser("alerts", help="alert ESE candidates not alerted before")
    a.add_argument("--candidates", required=True, help="ese_candidates.parquet")
    a.add_argument("--out", required=True, help="alerts.jsonl")
    a.add_argument("--command", help="shell command run per new alert (ESE_* env vars)")
    a.set_defaults(func=_cli_alerts)


def _cli_alerts(args):
    new = update_alerts(args.candidates, args.out, command=args.command)
    print(json.dumps({"new_alerts": len(new), "voevents": [a["voevent"] for a in new]}))
