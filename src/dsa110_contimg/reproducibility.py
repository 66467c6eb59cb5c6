"""Checksums of a run's science products, so that two runs (a rerun, a reprocessing, a
regression check) can be compared product by product.

`results/checksums.sha256` has one line per product, "<sha256 hex>  <path relative to the
results directory>", as `sha256sum` writes them. The digest is of the product's science
content, not its bytes, where the bytes legitimately differ between identical runs:

- FITS: every HDU's data array (dtype, shape, bytes) and its header cards except the
  wall-clock, machine and provenance ones (FITS_SKIP_KEYWORDS: DATE, HISTORY with the
  imager's temporary paths, CASA's MEMAVAIL); PROVJSON counts without its wall-clock fields.
- Parquet: the table (column names and types in the order written, then the values),
  not the file (its metadata carries the creation time and host).
- JSON (and JSON lines, VOEvent XML): the document without wall-clock fields
  (WALL_CLOCK_KEYS: creation times, hosts, durations).
- Measurement Sets and calibration tables: keywords, columns and subtables (python-casacore),
  without the HISTORY subtable.
- Other text (CSV, TXT): the text.

Paths of the results directory inside a product are replaced by "{results}" first, so two
result directories in different places compare equal when their science agrees. Logs,
benchmarks, Snakemake's records, plots (PNG), HTML pages and hidden files are not products.
"""

import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import PARTIAL, write_text

log = logging.getLogger(__name__)

MANIFEST = "checksums.sha256"

SKIP_DIRS = {"logs", "benchmarks", ".snakemake"}
SKIP_SUFFIXES = {".png", ".html", ".log", ".lock", ".tsv", ".sha256"}

# Fields that record when, where or how long something ran, not what it produced.
WALL_CLOCK_KEYS = {
    "created_utc",
    "alerted_utc",
    "host",
    "hostname",
    "node",
    "seconds",
    "elapsed_s",
    "wall_s",
}
# Wall-clock and machine keywords: the file's date, the imager's command history (with
# its temporary paths), checksums of the bytes, CASA's memory and MPI figures.
FITS_SKIP_KEYWORDS = {
    "DATE",
    "HISTORY",
    "CHECKSUM",
    "DATASUM",
    "IRAF-TLM",
    "MEMAVAIL",
    "MEMREQ",
    "MPIPROCS",
}

RESULTS_TOKEN = "{results}"
# A temporary name's process id (atomic.PARTIAL + pid), e.g. the scratch MS a calibration
# table records as its MSName.
_PARTIAL_PID = re.compile(re.escape(PARTIAL) + r"\d+")
_ROWS_PER_CHUNK = 20000


class _Digest:
    """sha256 over tagged chunks (tag, length, bytes), so that no two different
    sequences of chunks give the same stream."""

    def __init__(self):
        self._h = hashlib.sha256()

    def add(self, tag, data):
        if isinstance(data, str):
            data = data.encode()
        self._h.update(f"{tag}:{len(data)}:".encode())
        self._h.update(data)

    def add_array(self, tag, array):
        array = np.ascontiguousarray(array)
        self.add(tag, f"{array.dtype.str}{array.shape}")
        if array.dtype == object:
            self.add(tag, json.dumps(array.tolist(), default=str))
        else:
            self.add(tag, array.tobytes())

    def hexdigest(self):
        return self._h.hexdigest()


class _Paths:
    """Replaces the results directory's path (absolute, and relative to the working
    directory) inside strings by RESULTS_TOKEN."""

    def __init__(self, results):
        absolute = str(Path(results).resolve())
        forms = {absolute}
        relative = os.path.relpath(absolute)
        if not relative.startswith(".."):
            forms.add(relative)
        forms.add(str(results))
        forms = sorted((f.rstrip("/") for f in forms if f not in ("", ".")), key=len, reverse=True)
        # whole paths only: not /x/results_old, nor the relative results inside /y/results
        self.pattern = re.compile(
            r"(?<![\w.~/-])(?:"
            + "|".join(re.escape(f) for f in forms)
            + ")"
            + r"(?![^/\s\"',;:)\]}])"
        )

    def __call__(self, value):
        if isinstance(value, str):
            return _PARTIAL_PID.sub(PARTIAL, self.pattern.sub(RESULTS_TOKEN, value))
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items() if k not in WALL_CLOCK_KEYS}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        return value


def _canonical_json(obj):
    return json.dumps(obj, sort_keys=True, default=str, allow_nan=True)


def hash_fits(path, paths):
    from astropy.io import fits

    d = _Digest()
    with fits.open(path, memmap=False, do_not_scale_image_data=True) as hdus:
        for i, hdu in enumerate(hdus):
            for key, value in hdu.header.items():
                if key in FITS_SKIP_KEYWORDS:
                    continue
                if key == "PROVJSON":
                    try:
                        value = _canonical_json(paths(json.loads(value)))
                    except ValueError:
                        value = paths(value)
                d.add(f"hdu{i}:{key}", repr(paths(value)))
            if hdu.data is not None:
                d.add_array(f"hdu{i}:data", np.asarray(hdu.data))
    return d.hexdigest()


def _column_values(column, paths):
    import pyarrow as pa

    t = column.type
    if column.null_count == 0 and (
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
    ):
        return column.to_numpy(zero_copy_only=False)
    return np.array(_canonical_json(paths(column.to_pylist())), dtype=object)


def hash_parquet(path, paths):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    d = _Digest()
    d.add("rows", str(table.num_rows))
    for name, column in zip(table.column_names, table.columns):
        d.add("column", f"{name}:{column.type}")
        d.add_array(name, _column_values(column.combine_chunks(), paths))
    return d.hexdigest()


def hash_json(path, paths):
    d = _Digest()
    d.add("json", _canonical_json(paths(json.loads(Path(path).read_text()))))
    return d.hexdigest()


def hash_json_lines(path, paths):
    d = _Digest()
    for line in Path(path).read_text().splitlines():
        if line.strip():
            d.add("line", _canonical_json(paths(json.loads(line))))
    return d.hexdigest()


_XML_DATE = re.compile(r"<Date>[^<]*</Date>")


def hash_text(path, paths):
    raw = Path(path).read_bytes()
    d = _Digest()
    try:
        text = paths(raw.decode())
    except UnicodeDecodeError:
        d.add("bytes", raw)
        return d.hexdigest()
    if Path(path).suffix == ".xml":
        text = _XML_DATE.sub("<Date/>", text)
    d.add("text", text)
    return d.hexdigest()


def hash_table(path, paths):
    """A casacore table (MS or calibration table): its keywords, every column read in row
    chunks (cells of variable shape or undefined row by row), and then its subtables
    (ANTENNA, FIELD, SPECTRAL_WINDOW, ...) the same way, by name; HISTORY, the log of
    what ran when, is left out."""
    from casacore import tables

    d = _Digest()
    with tables.table(str(path), ack=False) as t:
        keywords = t.getkeywords()
        subtables = sorted(
            name
            for name, value in keywords.items()
            if isinstance(value, str) and value.startswith("Table: ")
        )
        plain = {k: v for k, v in keywords.items() if k not in subtables}
        d.add("keywords", _canonical_json(paths(plain)))
        _hash_columns(t, d, paths)
    for name in subtables:
        if name != "HISTORY" and (Path(path) / name / "table.dat").exists():
            d.add("subtable", name)
            d.add("digest", hash_table(Path(path) / name, paths))
    return d.hexdigest()


def _hash_columns(t, d, paths):
    """Add every column of the open table `t` to the digest `d`, in row chunks."""
    nrows = t.nrows()
    d.add("rows", str(nrows))
    for col in t.colnames():
        d.add("column", col)
        for start in range(0, nrows, _ROWS_PER_CHUNK):
            n = min(_ROWS_PER_CHUNK, nrows - start)
            try:
                values = t.getcol(col, start, n)
            except RuntimeError:
                _hash_cells(t, col, start, n, d, paths)
                continue
            if isinstance(values, list):
                values = np.array(_canonical_json(paths(values)), dtype=object)
            d.add_array(col, values)


def _hash_cells(t, col, start, n, d, paths):
    """Rows of a column that getcol cannot read whole: cells of variable shape or
    undefined (getvarcol), or records (one cell at a time, as JSON)."""
    try:
        cells = t.getvarcol(col, start, n)
    except RuntimeError:
        for row in range(start, start + n):
            d.add(f"{col}r{row}", _canonical_json(paths(t.getcell(col, row))))
        return
    for key in sorted(cells, key=lambda k: int(k[1:])):
        cell = cells[key]
        d.add_array(f"{col}{key}", np.asarray(cell if cell is not None else []))


HASHERS = {
    ".fits": hash_fits,
    ".parquet": hash_parquet,
    ".json": hash_json,
    ".jsonl": hash_json_lines,
}


def _is_casacore_table(path):
    return path.is_dir() and (path / "table.dat").exists()


def science_products(results):
    """Relative paths (sorted) of the science products under `results`: files and
    casacore tables, without logs, benchmarks, plots, pages, hidden and partial files."""
    results = Path(results)
    found = []
    for root, dirs, files in os.walk(results):
        root = Path(root)
        rel_root = root.relative_to(results)
        keep = []
        for name in sorted(dirs):
            if (
                name.startswith(".")
                or PARTIAL in name
                or (rel_root == Path(".") and name in SKIP_DIRS)
            ):
                continue
            if _is_casacore_table(root / name):
                found.append((rel_root / name).as_posix())
            else:
                keep.append(name)
        dirs[:] = keep
        for name in files:
            if (
                name.startswith(".")
                or PARTIAL in name
                or Path(name).suffix.lower() in SKIP_SUFFIXES
            ):
                continue
            found.append((rel_root / name).as_posix())
    return sorted(found)


def product_checksum(path, results):
    """sha256 of the science content of one product under `results` (see module doc)."""
    path = Path(path)
    paths = _Paths(results)
    if _is_casacore_table(path):
        return hash_table(path, paths)
    hasher = HASHERS.get(path.suffix.lower(), hash_text)
    try:
        return hasher(path, paths)
    except (ValueError, OSError) as err:
        raise ValueError(
            f"{path}: cannot read it as {path.suffix or 'text'} to checksum it: {err}"
        ) from err


def _checksum_of(rel, results):
    return product_checksum(results / rel, results)


def checksums(results, workers=1):
    """{relative path: sha256} of every science product under `results`, hashed in
    `workers` processes (the same digests for any number)."""
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"results directory {results} does not exist")
    rels = science_products(results)
    if workers <= 1 or len(rels) < 2:
        return {rel: _checksum_of(rel, results) for rel in rels}
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    with ProcessPoolExecutor(max_workers=workers) as pool:
        digests = pool.map(partial(_checksum_of, results=results), rels, chunksize=4)
        return dict(zip(rels, digests))


def format_manifest(sums):
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(sums.items()))


def write_manifest(results, out=None, workers=1):
    """Write the checksum manifest of `results` (default results/checksums.sha256)
    atomically; returns its path."""
    out = Path(out) if out else Path(results) / MANIFEST
    sums = checksums(results, workers)
    write_text(format_manifest(sums), out)
    log.info("%s: checksums of %d products", out, len(sums))
    return out


_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def read_manifest(path):
    """{relative path: sha256} from a manifest file."""
    sums = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"{path} line {n}: not '<sha256 hex>  <path>': {line!r}")
        sums[m.group(2)] = m.group(1)
    return sums


def load(source):
    """Checksums of a results directory (computed now) or a manifest file."""
    source = Path(source)
    if source.is_dir():
        return checksums(source)
    if source.is_file():
        return read_manifest(source)
    raise FileNotFoundError(f"{source}: neither a results directory nor a checksum file")


def compare(a, b):
    """[(relative path, verdict)] over both sets, verdict one of "same", "differs",
    "only in A", "only in B"."""
    rows = []
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            rows.append((rel, "only in A"))
        elif rel not in a:
            rows.append((rel, "only in B"))
        else:
            rows.append((rel, "same" if a[rel] == b[rel] else "differs"))
    return rows


def summary_line(rows):
    """'N products compared, M differ' (plus those found on one side only)."""
    counts = {
        v: sum(1 for _, verdict in rows if verdict == v)
        for v in ("same", "differs", "only in A", "only in B")
    }
    line = f"{counts['same'] + counts['differs']} products compared, {counts['differs']} differ"
    extra = [f"{counts[v]} {v}" for v in ("only in A", "only in B") if counts[v]]
    return line + (", " + ", ".join(extra) if extra else "")


def _run_checksums(args):
    out = write_manifest(args.results, args.out, args.workers)
    print(out)
    return 0


def _run_compare(args):
    rows = compare(load(args.a), load(args.b))
    for rel, verdict in rows:
        if verdict != "same" or not args.quiet:
            print(f"{verdict:9s}  {rel}")
    print(summary_line(rows))
    sys.stdout.flush()
    return 1 if any(verdict != "same" for _, verdict in rows) else 0


def register_cli(sub):
    p = sub.add_parser("checksums", help="write RESULTS/checksums.sha256 over the science products")
    p.add_argument("results", help="results directory")
    p.add_argument("--out", help="manifest to write (default RESULTS/checksums.sha256)")
    p.add_argument("--workers", type=int, default=1, help="processes hashing products")
    p.set_defaults(func=_run_checksums)
    p = sub.add_parser(
        "compare",
        help="compare two runs' science products by checksum (exit status 1 when any differ)",
    )
    p.add_argument("a", help="results directory or checksum file")
    p.add_argument("b", help="results directory or checksum file")
    p.add_argument("--quiet", action="store_true", help="print only the products that differ")
    p.set_defaults(func=_run_compare)
