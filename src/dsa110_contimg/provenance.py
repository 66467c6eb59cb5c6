"""Provenance recorded in every product: package version, time, inputs, config hash."""

import datetime as dt
import hashlib
import json
import platform

from dsa110_contimg import __version__


def config_hash(config):
    """Stable short hash of a (JSON-serialisable) configuration mapping."""
    blob = json.dumps(config or {}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def provenance(inputs=(), config=None, **extra):
    """Return a provenance dict for a product derived from `inputs` under `config`."""
    record = {
        "software": "dsa110-contimg",
        "version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "inputs": [str(p) for p in inputs],
        "config_hash": config_hash(config),
    }
    record.update(extra)
    return record
