"""Sanity checks a product passes before it is renamed into place.

A fault upstream (a raw file missing a keyword, negative sample counts, a calibration
that zeroed the data) can yield a product that opens, has the right shape and is wrong:
a Measurement Set of NaN, an image of zeros. Each stage checks what it is about to publish
and, when a check fails, publishes nothing: the job fails with exit status EXIT_REJECTED
and a message naming the input and the check, and a QA record (qa_records shape, status
fail) is left beside where the product would have been, ``<product>.rejected.json``, which
``qa/summary.parquet`` lists. The record is removed when the product is later made and
passes.

The checks, by product:

- Measurement Set: finite phase centre (FIELD::PHASE_DIR) and UVW; weights finite and
  >= 0 (WEIGHT_SPECTRUM, else WEIGHT); some unflagged data; the unflagged visibilities
  of the data column finite and not all zero.
- calibration table: at least one unflagged, finite, non-zero solution.
- image: some finite pixels, not all zero; a finite, positive noise (robust rms).
- forced-photometry table: one row per catalog source, and a finite flux with a finite,
  positive error for every source in view.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import write_text
from dsa110_contimg.qa_records import FAIL, qa_record
from dsa110_contimg.stats import robust_rms

log = logging.getLogger(__name__)

EXIT_REJECTED = 3
"""Exit status of a stage command whose product failed a sanity check."""

REJECTED_SUFFIX = ".rejected.json"
ROWS_PER_CHUNK = 20_000
"""Main-table rows read at a time when checking a Measurement Set's weights and data."""


REJECTION_GLOBS = ("ms", "ms_cal", "cal", "images/*", "mosaics/*", "photometry/*")
"""Folders of a results directory whose products may carry a rejection record."""


def find_rejections(results):
    """Every rejection record under the results directory `results`, sorted."""
    results = Path(results)
    return sorted(
        path for folder in REJECTION_GLOBS for path in results.glob(f"{folder}/*{REJECTED_SUFFIX}")
    )


def describe_rejections(results):
    """One line per rejection record under `results`: stage, name, reason, record."""
    lines = []
    for path in find_rejections(results):
        try:
            record = json.loads(path.read_text())
            lines.append(f"{record['stage']} {record['name']}: {record['reason']} ({path})")
        except (OSError, ValueError, KeyError) as err:
            lines.append(f"{path}: unreadable rejection record ({err})")
    return lines


class ProductRejected(ValueError):
    """A product failed a sanity check and was not published."""

    def __init__(self, product, check, detail):
        self.product, self.check, self.detail = product, check, detail
        super().__init__(
            f"{product.source}: {product.stage} product {product.path} rejected ({check}): {detail}"
        )


def rejection_path(path):
    """Where the rejection record of the product at `path` is kept."""
    path = Path(path)
    return path.with_name(path.name + REJECTED_SUFFIX)


@dataclass(frozen=True)
class Product:
    """A product about to be published: its final `path`, the QA `stage` and `name` (the
    group or mosaic) it is listed under, and the `source` it was made from (named in
    messages: a file, or a group and its files)."""

    path: Path
    stage: str
    name: str
    source: str

    def reject(self, check, detail):
        """Record the failed check beside the product's path and raise ProductRejected."""
        err = ProductRejected(self, check, detail)
        record = qa_record(
            self.stage,
            self.name,
            FAIL,
            [check],
            [],
            {},
            product=str(self.path),
            input=self.source,
            reason=f"rejected: {detail}",
        )
        write_text(json.dumps(record, indent=2), rejection_path(self.path))
        log.error("%s", err)
        raise err

    def accept(self):
        """The product passed: remove a rejection record an earlier attempt left."""
        rejection_path(self.path).unlink(missing_ok=True)


def _count(mask):
    return int(np.count_nonzero(mask))


def check_ms(ms, product, data_column="DATA"):
    """Check the Measurement Set at `ms` (the product's temporary path); reject `product`
    on the first failed check."""
    from casacore import tables

    with tables.table(str(Path(ms) / "FIELD"), ack=False) as field:
        phase_dir = field.getcol("PHASE_DIR")
    if not np.all(np.isfinite(phase_dir)):
        product.reject("phase_centre", f"phase centre (FIELD::PHASE_DIR) is {phase_dir.ravel()}")
    with tables.table(str(ms), ack=False) as t:
        nrows = t.nrows()
        if nrows == 0:
            product.reject("no_data", "the main table has no rows")
        uvw = t.getcol("UVW")
        bad_uvw = ~np.all(np.isfinite(uvw), axis=1)
        if bad_uvw.any():
            product.reject("uvw", f"{_count(bad_uvw)} of {nrows} rows have non-finite UVW")
        weight_column = "WEIGHT_SPECTRUM" if "WEIGHT_SPECTRUM" in t.colnames() else "WEIGHT"
        bad_weights = unflagged = nonzero = 0
        bad_data = 0
        for start in range(0, nrows, ROWS_PER_CHUNK):
            n = min(ROWS_PER_CHUNK, nrows - start)
            weights = t.getcol(weight_column, start, n)
            bad_weights += _count(~(weights >= 0))
            good = ~t.getcol("FLAG", start, n)
            unflagged += _count(good)
            data = t.getcol(data_column, start, n)
            bad_data += _count(good & ~np.isfinite(data))
            nonzero += _count(good & (data != 0))
    if bad_weights:
        product.reject("weights", f"{bad_weights} {weight_column} values are negative or NaN")
    if unflagged == 0:
        product.reject("all_flagged", "no unflagged data")
    if bad_data:
        product.reject(
            "visibilities",
            f"{bad_data} of {unflagged} unflagged {data_column} values are not finite",
        )
    if nonzero == 0:
        product.reject("visibilities", f"every unflagged {data_column} value is zero")
    product.accept()


def caltable_problem(table):
    """None when the calibration table at `table` holds at least one unflagged, finite,
    non-zero solution; else the problem, in words."""
    from casacore import tables

    with tables.table(str(table), ack=False) as t:
        if t.nrows() == 0:
            return f"{Path(table).name} has no solutions"
        column = "CPARAM" if "CPARAM" in t.colnames() else "FPARAM"
        values, flags = t.getcol(column), t.getcol("FLAG")
    valid = ~flags & np.isfinite(values) & (values != 0)
    if not valid.any():
        return f"{Path(table).name}: none of its {values.size} solutions is valid"
    return None


def check_image(data, product, kind="image"):
    """Check an image plane (array) before writing it; reject `product` when it has no
    finite pixel, is all zero, or its robust rms is not finite and positive."""
    data = np.asarray(data)
    finite = np.isfinite(data)
    if not finite.any():
        product.reject("image_nan", f"every pixel of the {kind} is NaN or infinite")
    if not np.any(data[finite] != 0):
        product.reject("image_zero", f"every pixel of the {kind} is zero")
    noise = robust_rms(data)
    if not (np.isfinite(noise) and noise > 0):
        product.reject("image_noise", f"the {kind}'s noise (robust rms) is {noise}")
    product.accept()


def check_photometry(table, n_catalog, in_view, product):
    """Check a forced-photometry table before writing it: `n_catalog` rows, and for every
    row where `in_view` is true (catalog sources on the image and above the primary-beam
    cut) a finite flux and a finite, positive error."""
    if len(table) != n_catalog:
        product.reject("photometry_rows", f"{len(table)} rows for a catalog of {n_catalog} sources")
    in_view = np.asarray(in_view, bool)
    flux = table["flux_jy"].to_numpy(float)
    err = table["flux_err_jy"].to_numpy(float)
    measured = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    missing = in_view & ~measured
    if missing.any():
        product.reject(
            "photometry_rows",
            f"{_count(in_view & measured)} measured of {_count(in_view)} catalog sources "
            f"in view ({_count(missing)} without a finite flux and error)",
        )
    product.accept()
