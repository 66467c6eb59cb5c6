"""Atomic outputs: every product is written under a temporary name in its final
directory and renamed into place only when complete, so a killed job never leaves
something that looks finished.
"""

import contextlib
import json
import os
import shutil
from pathlib import Path

PARTIAL = ".partial-"


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_stale_partials(final):
    """Remove leftovers of earlier killed attempts at writing `final`."""
    final = Path(final)
    for stale in final.parent.glob(final.name + PARTIAL + "*"):
        _remove(stale)


@contextlib.contextmanager
def atomic_output(final, overwrite=True):
    """Yield a temporary path next to `final` (file or directory); rename on success.

    On any exception the temporary is removed and `final` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists and overwrite=False")
    tmp = final.with_name(f"{final.name}{PARTIAL}{os.getpid()}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp} for {final}")
        if final.exists():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
        raise


def write_parquet(df, path, metadata=None):
    """Write a DataFrame to Parquet atomically, with optional JSON provenance metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[b"dsa110_contimg"] = json.dumps(metadata, default=str).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)


def write_text(text, path):
    """Write a text file atomically."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)
