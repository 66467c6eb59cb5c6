"""The ESE detection stage: variability statistics and Extreme Scattering Event candidates
from a light-curve table (normalized.parquet or timeseries.parquet).

Per source: the variability statistics of `variability` (VAST's V, eta and the two-epoch
Vs, m) and the best ESE fit of `esefit` against the null models (constant + trend,
single-epoch outliers rejected), with the evidence that the dip is in the data
(ese_low_epochs, ese_dip_ok) and whether it is still going on (ese_in_progress).
Candidates: ese_sigma >= min_sigma and ese_dip_ok.

When the table has sub-band photometry, for each source with ese_sigma >= min_sigma the
centre and duration are refined off the search grid (ese_mjd_fit, ese_duration_fit_days;
the grid's cell and duration steps would bias the sub-band depths alike and so the
slope) and, with the sub-band photometry (columns flux_sb<k>_jy, flux_err_sb<k>_jy,
freq_sb<k>_hz, k = 0..K-1; see `photometry.forced`), the depth is fitted in each sub-band
at that centre and duration (ese_depth_sb<k>, ese_depth_err_sb<k>, freq_sb<k>_hz) and a
straight line in lambda^2 gives ese_lambda2_slope (per m^2), its error and
ese_lambda2_sigma = slope / error. Sub-band fluxes are divided by the epoch's norm_factor
when the table is normalized.

Products (under `outdir`): variability_stats.parquet (one row per source, with the ESE
fit and the state for incremental runs: n and mjd_last per source, settings in the
metadata), ese_candidates.parquet and .csv. Without `recompute`, only sources whose n or
last mjd changed (or new ones) are fitted. Alerts: see `alerts`.

The table is read in blocks of whole sources (`source_blocks`), fitted by worker
processes, so memory does not grow with the number of sources; that needs it sorted by
source (as `photometry.forced.gather_timeseries` writes it), otherwise it is read whole.
"""

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import atomic_output, write_parquet
from dsa110_contimg.configuration import StageSettings
from dsa110_contimg.io import read_table
from dsa110_contimg.memory import keep_freed_memory
from dsa110_contimg.provenance import provenance
from dsa110_contimg.variability.alerts import read_alerts, update_alerts  # noqa: F401  (the stage's public API)
from dsa110_contimg.variability.esefit import (
    DEFAULT_DURATIONS_DAYS,
    detect_ese,
    lambda2_slope,
    refine,
    subband_depths,
)
from dsa110_contimg.variability.statistics import (  # noqa: F401
    error_scale,
    time_order,
    variability_stats,
)

log = logging.getLogger(__name__)

STATS_FILE = "variability_stats.parquet"
CANDIDATES_FILE = "ese_candidates.parquet"
CANDIDATES_CSV = "ese_candidates.csv"
BLOCK_ROWS = 2_000_000  # rows of the time series read and fitted at once (~0.5 GiB)
MAX_WORKERS = 2

CANDIDATE_COLUMNS = [
    "source_id",
    "ra",
    "dec",
    "ese_sigma",
    "ese_mjd",
    "ese_duration_days",
    "ese_depth",
    "ese_shoulder",
    "ese_delta_chi2",
    "n",
    "mjd_first",
    "mjd_last",
    "wmean_jy",
    "v",
    "eta",
    "ese_in_progress",
    "ese_low_epochs",
    "ese_dip_epochs",
    "ese_ingress_epochs",
    "ese_egress_epochs",
    "n_outliers",
    "ese_mjd_fit",
    "ese_duration_fit_days",
    "ese_lambda2_slope",
    "ese_lambda2_slope_err",
    "ese_lambda2_sigma",
    "vs",
    "m",
]
SUBBAND = re.compile(r"^flux_sb(\d+)_jy$")
DETECT_DEFAULTS = {
    "durations_days": DEFAULT_DURATIONS_DAYS,
    "cadence_days": 1.0,
    "min_dip_epochs": 4,
    "min_baseline_epochs": 5,
    "rescale_errors": True,
    "trend_degree": 1,
    "outlier_sigma": 5.0,
    "low_sigma": 3.0,
    "min_side_epochs": 2,
}


@dataclass
class ESESettings(StageSettings):
    """ESE detection options (config section `ese`; alert_command is the alerts'):
    candidates need ese_sigma >= min_sigma; the others are `esefit.detect_ese`'s."""

    SECTION = "ese"
    OTHER_KEYS = frozenset({"alert_command"})

    min_sigma: float = 5.0
    min_dip_epochs: int = DETECT_DEFAULTS["min_dip_epochs"]
    low_sigma: float = DETECT_DEFAULTS["low_sigma"]
    trend_degree: int = DETECT_DEFAULTS["trend_degree"]
    outlier_sigma: float = DETECT_DEFAULTS["outlier_sigma"]


def flux_columns(table):
    """(flux, error) column names: normalized fluxes when present, else raw photometry."""
    if "flux_norm_jy" in table.columns and "flux_norm_err_jy" in table.columns:
        return "flux_norm_jy", "flux_norm_err_jy"
    return "flux_jy", "flux_err_jy"


def subband_indices(table):
    """Sub-band numbers k with flux_sb<k>_jy, flux_err_sb<k>_jy and freq_sb<k>_hz columns."""
    found = sorted(int(m.group(1)) for c in table.columns if (m := SUBBAND.match(c)))
    return [
        k
        for k in found
        if f"flux_err_sb{k}_jy" in table.columns and f"freq_sb{k}_hz" in table.columns
    ]


def _usable(table, flux_col, err_col):
    f = table[flux_col].to_numpy(float)
    e = table[err_col].to_numpy(float)
    return np.isfinite(f) & np.isfinite(e) & (e > 0) & np.isfinite(table["mjd"].to_numpy(float))


def source_codes(ids):
    """(codes 0..N-1, sorted unique ids as str) for a source_id column, cheap for categoricals."""
    import pandas as pd

    if isinstance(ids.dtype, pd.CategoricalDtype):
        codes = ids.cat.codes.to_numpy()
        names = np.asarray(ids.cat.categories.astype(str), dtype=object)
        used = np.bincount(codes, minlength=len(names)) > 0
        order = np.argsort(names[used], kind="stable")
        rank = np.full(len(names), -1, dtype=np.int64)
        rank[np.flatnonzero(used)[order]] = np.arange(order.size)
        return rank[codes], names[used][order]
    codes, uniques = pd.factorize(ids.astype(str), sort=True)
    return codes, np.asarray(uniques, dtype=object)


def analyse_sources(table, min_sigma=ESESettings.min_sigma, mjd_range=None, **settings):
    """Variability statistics and ESE fit for every source in a long time-series table.

    `settings` are those of `esefit.detect_ese` (defaults DETECT_DEFAULTS); sources with
    ese_sigma >= min_sigma get the refined fit and the in-band depths. `mjd_range`: the
    span of the search grid (default the table's), the whole series' when the table is
    one block of its sources.
    """
    opts = {**DETECT_DEFAULTS, **settings}
    flux_col, err_col = flux_columns(table)
    use = _usable(table, flux_col, err_col)
    codes, ids = source_codes(table["source_id"])
    n_sources = len(ids)
    src = codes[use]
    mjd = table["mjd"].to_numpy(float)[use]
    order = time_order(src, mjd)
    src, mjd = src[order], mjd[order]
    flux = table[flux_col].to_numpy(float)[use][order]
    err = table[err_col].to_numpy(float)[use][order]
    stats = variability_stats(src, mjd, flux, err, n_sources)
    stats.insert(0, "source_id", np.asarray(ids, dtype=object))
    for coord in ("ra", "dec"):
        if coord in table.columns:
            stats.insert(
                1 if coord == "ra" else 2,
                coord,
                np.bincount(codes, table[coord].to_numpy(float), n_sources)
                / np.maximum(np.bincount(codes, minlength=n_sources), 1),
            )
    if mjd_range is None and use.any():
        mjd_range = (mjd.min(), mjd.max())
    fit = detect_ese(src, mjd, flux, err, n_sources, mjd_range=mjd_range, **opts)
    for key, values in fit.items():
        stats[key] = values
    _refine_candidates(stats, table, use, codes, flux_col, err_col, min_sigma, opts)
    return stats


def _refine_candidates(stats, table, use, codes, flux_col, err_col, min_sigma, opts):
    """Off-grid centre and duration, and in-band depths, for the significant sources
    (only with sub-band photometry: the refinement costs ~10-40 ms per source)."""
    bands = subband_indices(table)
    stats["ese_mjd_fit"] = np.nan
    stats["ese_duration_fit_days"] = np.nan
    for k in bands:
        stats[f"freq_sb{k}_hz"] = np.nan
        stats[f"ese_depth_sb{k}"] = np.nan
        stats[f"ese_depth_err_sb{k}"] = np.nan
    for col in ("ese_lambda2_slope", "ese_lambda2_slope_err", "ese_lambda2_sigma"):
        stats[col] = np.nan
    todo = np.flatnonzero((stats["ese_sigma"] >= min_sigma).to_numpy())
    if todo.size == 0 or not bands:
        return
    rows_of = _rows_by_source(codes, use, todo)
    norm = table["norm_factor"].to_numpy(float) if "norm_factor" in table.columns else None
    for i in todo:
        rows = rows_of[i]
        t = table["mjd"].to_numpy(float)[rows]
        f = table[flux_col].to_numpy(float)[rows]
        e = table[err_col].to_numpy(float)[rows] * stats.at[i, "error_scale"]
        t0, fwhm = refine(
            t, f, e, stats.at[i, "ese_mjd"], stats.at[i, "ese_duration_days"], opts["trend_degree"]
        )
        stats.at[i, "ese_mjd_fit"] = t0
        stats.at[i, "ese_duration_fit_days"] = fwhm
        f_sb = np.column_stack([table[f"flux_sb{k}_jy"].to_numpy(float)[rows] for k in bands])
        e_sb = np.column_stack([table[f"flux_err_sb{k}_jy"].to_numpy(float)[rows] for k in bands])
        if norm is not None:
            f_sb = f_sb / norm[rows, None]
            e_sb = e_sb / norm[rows, None]
        freqs = [float(np.nanmedian(table[f"freq_sb{k}_hz"].to_numpy(float)[rows])) for k in bands]
        depths, errs = subband_depths(t, f_sb, e_sb, t0, fwhm, opts["trend_degree"])
        for k, nu, d, de in zip(bands, freqs, depths, errs):
            stats.at[i, f"freq_sb{k}_hz"] = nu
            stats.at[i, f"ese_depth_sb{k}"] = d
            stats.at[i, f"ese_depth_err_sb{k}"] = de
        slope, slope_err = lambda2_slope(freqs, depths, errs)
        stats.at[i, "ese_lambda2_slope"] = slope
        stats.at[i, "ese_lambda2_slope_err"] = slope_err
        stats.at[i, "ese_lambda2_sigma"] = slope / slope_err


def _rows_by_source(codes, use, wanted):
    """{source index: its usable row numbers} for the `wanted` sources."""
    rows = np.flatnonzero(use & np.isin(codes, wanted))
    order = np.argsort(codes[rows], kind="stable")
    rows = rows[order]
    split = np.searchsorted(codes[rows], wanted, side="left")
    ends = np.searchsorted(codes[rows], wanted, side="right")
    return {i: rows[a:b] for i, a, b in zip(wanted, split, ends)}


def _settings_hash(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _read_state(stats_path, settings_hash):
    """Previous variability_stats table, or None when absent or made with other settings."""
    import pyarrow.parquet as pq

    if not stats_path.exists():
        return None
    prev = read_table(stats_path, ["source_id", "n", "mjd_last", "ese_sigma"])
    meta = pq.read_schema(stats_path).metadata or {}
    record = json.loads(meta.get(b"dsa110_contimg", b"{}"))
    if record.get("ese_settings_hash") != settings_hash:
        log.info("%s: made with other detection settings; recomputing all sources", stats_path)
        return None
    return prev


def run_ese_detect(
    timeseries_path,
    outdir,
    min_sigma=ESESettings.min_sigma,
    recompute=False,
    source_ids=None,
    block_rows=BLOCK_ROWS,
    workers=None,
    **settings,
):
    """Update variability_stats and the ESE candidate tables in `outdir`; returns both.

    Only sources with new measurements (changed n or last mjd) are refitted unless
    `recompute`; `source_ids` refits just those sources (they must be in the input).
    The time series is read and fitted in blocks of whole sources of ~`block_rows`
    rows (`source_blocks`), so memory does not grow with the number of sources; the
    blocks are fitted by `workers` processes (default: one per CPU available, at most
    MAX_WORKERS).
    `settings`: detection settings of `esefit.detect_ese` (defaults DETECT_DEFAULTS).
    """
    import pandas as pd

    timeseries_path, outdir = Path(timeseries_path), Path(outdir)
    names = _parquet_columns(timeseries_path)
    keep_freed_memory()
    missing = [c for c in ("source_id", "mjd", "flux_jy", "flux_err_jy") if c not in names]
    if missing:
        raise ValueError(f"{timeseries_path}: missing columns {missing}")
    wanted = [
        "source_id",
        "mjd",
        "ra",
        "dec",
        "flux_jy",
        "flux_err_jy",
        "flux_norm_jy",
        "flux_norm_err_jy",
        "norm_factor",
    ]
    wanted += [c for c in names if re.match(r"^(flux|flux_err|freq)_sb\d+_(jy|hz)$", c)]
    columns = [c for c in wanted if c in names]
    schema = pd.DataFrame(columns=columns)
    flux_col, err_col = flux_columns(schema)
    opts = {**DETECT_DEFAULTS, **settings}
    record = {k: (list(map(float, v)) if k == "durations_days" else v) for k, v in opts.items()}
    record.update(flux_column=flux_col, subbands=subband_indices(schema), min_sigma=min_sigma)
    settings_hash = _settings_hash(record)
    stats_path = outdir / STATS_FILE
    prev = None if recompute else _read_state(stats_path, settings_hash)
    old = None if prev is None else prev.set_index("source_id")[["n", "mjd_last"]]
    wanted_ids = pd.Index([str(s) for s in source_ids]) if source_ids else None
    mjd_range = _mjd_range(timeseries_path)

    seen, fresh, n_todo = [], [], 0
    with _BlockPool(workers) as pool:
        for block in source_blocks(timeseries_path, columns, block_rows):
            ids, todo = _block_todo(block, flux_col, err_col, old, wanted_ids)
            seen.append(ids)
            if len(todo) or not fresh:
                subset = block if len(todo) == len(ids) else block[block["source_id"].isin(todo)]
                fresh.append(pool.submit(analyse_sources, subset, min_sigma, mjd_range, **opts))
            n_todo += len(todo)
    fresh = [f.result() for f in fresh]
    all_ids = pd.Index(np.concatenate(seen))
    if wanted_ids is not None:
        unknown = wanted_ids.difference(all_ids)
        if len(unknown):
            raise ValueError(f"{timeseries_path}: no measurements of source(s) {list(unknown)}")
    log.info("ese-detect: fitted %d of %d sources", n_todo, len(all_ids))
    fresh = pd.concat([f for f in fresh if len(f)] or fresh[:1], ignore_index=True)
    todo_ids = fresh["source_id"]
    if prev is not None or (source_ids and stats_path.exists()):
        base = prev if prev is not None else read_table(stats_path, ["source_id"])
        keep = base[base["source_id"].isin(all_ids) & ~base["source_id"].isin(todo_ids)]
        stats = pd.concat([keep, fresh], ignore_index=True) if len(keep) else fresh
    else:
        stats = fresh
    stats = stats.sort_values("source_id", kind="stable").reset_index(drop=True)

    candidates = candidates_from_stats(stats, min_sigma)
    meta = provenance(
        [timeseries_path],
        config=record,
        ese_settings=record,
        ese_settings_hash=settings_hash,
        min_sigma=min_sigma,
        refitted_sources=n_todo,
    )
    write_parquet(stats, stats_path, metadata=meta)
    write_parquet(candidates, outdir / CANDIDATES_FILE, metadata=meta)
    with atomic_output(outdir / CANDIDATES_CSV) as tmp:
        candidates.to_csv(tmp, index=False, float_format="%.6g")
    log.info(
        "ese-detect: %d candidates with significance >= %.1f sigma", len(candidates), min_sigma
    )
    return stats, candidates


class _BlockPool:
    """Blocks of sources fitted in worker processes, at most two blocks queued per worker
    so that memory stays bounded; with one worker, in this process. The workers are
    forked on entry, while this process is small (nothing to import, no main script run
    again as with spawn, and no copy-on-write of the blocks read later)."""

    def __init__(self, workers=None):
        import os

        self.workers = workers or min(MAX_WORKERS, len(os.sched_getaffinity(0)))
        self.executor = None
        self.queued = []

    def __enter__(self):
        if self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=keep_freed_memory,
            )
            self.executor.submit(int).result()
        return self

    def submit(self, func, *args, **kwargs):
        """A future of func(*args, **kwargs); waits while too many blocks are queued."""
        from concurrent.futures import Future

        if self.executor is None:
            future = Future()
            future.set_result(func(*args, **kwargs))
            return future
        self.queued = [f for f in self.queued if not f.done()]
        while len(self.queued) >= 2 * self.workers:
            self.queued.pop(0).result()
        future = self.executor.submit(func, *args, **kwargs)
        self.queued.append(future)
        return future

    def __exit__(self, *exc):
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=exc[0] is not None)
        return False


def _block_todo(block, flux_col, err_col, old, wanted_ids):
    """(ids of the block's sources, those to fit): `wanted_ids` when given, else all of
    them without a previous state `old`, else those whose n or last mjd changed."""
    import pandas as pd

    use = _usable(block, flux_col, err_col)
    codes, ids = source_codes(block["source_id"])
    if wanted_ids is not None:
        return ids, ids[np.isin(ids, wanted_ids)]
    if old is None:
        return ids, ids
    n_cur = np.bincount(codes[use], minlength=len(ids))
    last_cur = np.full(len(ids), -np.inf)
    np.maximum.at(last_cur, codes[use], block["mjd"].to_numpy(float)[use])
    last_cur = np.where(n_cur > 0, last_cur, np.nan)
    before = old.reindex(pd.Index(ids))
    same_last = (before["mjd_last"].to_numpy() == last_cur) | (
        before["mjd_last"].isna().to_numpy() & np.isnan(last_cur)
    )
    same = (before["n"].to_numpy() == n_cur) & same_last
    return ids, ids[~same]


def source_blocks(path, columns, block_rows=BLOCK_ROWS):
    """DataFrames of whole sources, ~`block_rows` rows each, read from a Parquet table.

    Row groups are streamed when they follow each other in source_id order (the largest
    id of one <= the smallest of the next, by the row groups' statistics: the time
    series is written sorted by source), the rows of each block's last source carried
    over to the next block. Otherwise the whole table is one block. source_id is a
    categorical of str.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, read_dictionary=["source_id"])
    meta = pf.metadata
    bounds = _column_bounds(meta, "source_id")
    n_groups = meta.num_row_groups
    ordered = bounds is not None and all(a[1] <= b[0] for a, b in zip(bounds, bounds[1:]))
    if n_groups == 0 or not ordered:
        if n_groups > 1:
            log.warning("%s: not sorted by source_id; read as one block", path)
        yield _frame(pf.read(columns))
        return
    pending, n_pending = [], 0
    for i in range(n_groups):
        pending.append(pf.read_row_group(i, columns=columns))
        n_pending += pending[-1].num_rows
        if n_pending < block_rows and i < n_groups - 1:
            continue
        table = pa.concat_tables(pending)
        frame = _frame(table)
        pending, n_pending = [], 0
        if i == n_groups - 1:
            yield frame
            return
        carry = (frame["source_id"] == bounds[i][1]).to_numpy()
        n_pending = int(carry.sum())
        if carry[len(carry) - n_pending :].all():  # sorted within the row group: a tail
            pending = [table.slice(len(carry) - n_pending)]
            rest = frame.iloc[: len(carry) - n_pending]
        else:
            pending = [table.filter(pa.array(carry))]
            rest = frame[~carry].reset_index(drop=True)
        if len(rest):
            yield rest


def _frame(table):
    """DataFrame of a light-curve table, source_id a categorical of str."""
    import pandas as pd

    frame = table.to_pandas()
    ids = frame["source_id"]
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        ids = ids.astype("category")
    frame["source_id"] = ids.cat.rename_categories(str)
    return frame


def _column_bounds(meta, name):
    """[(min, max)] of a column per row group from the Parquet statistics, or None."""
    if meta.num_row_groups == 0:
        return []
    names = [meta.row_group(0).column(j).path_in_schema for j in range(meta.num_columns)]
    if name not in names:
        return None
    j = names.index(name)
    bounds = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(j).statistics
        if stats is None or not stats.has_min_max:
            return None
        bounds.append((stats.min, stats.max))
    return bounds


def _mjd_range(path):
    """(first, last) MJD of a time series, from the row groups' statistics when present."""
    import pyarrow.parquet as pq

    bounds = _column_bounds(pq.ParquetFile(path).metadata, "mjd")
    if bounds is None:
        mjd = read_table(path, ["mjd"], select=["mjd"])["mjd"].to_numpy(float)
        bounds = [(np.nanmin(mjd), np.nanmax(mjd))] if np.isfinite(mjd).any() else []
    bounds = [(lo, hi) for lo, hi in bounds if np.isfinite(lo) and np.isfinite(hi)]
    if not bounds:
        return None
    return min(lo for lo, _ in bounds), max(hi for _, hi in bounds)


def _parquet_columns(path):
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except Exception as err:  # pyarrow's errors on a corrupt file
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file") from err
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from err


def candidates_from_stats(stats, min_sigma=ESESettings.min_sigma):
    """ESE candidates: ese_sigma >= min_sigma with the dip seen in the data, most
    significant first (sub-band columns included)."""
    extra = [c for c in stats.columns if re.match(r"^(freq_sb\d+_hz|ese_depth(_err)?_sb\d+)$", c)]
    cols = [c for c in CANDIDATE_COLUMNS + extra if c in stats.columns]
    ok = (stats["ese_sigma"] >= min_sigma) & stats["ese_dip_ok"].astype(bool)
    cand = stats.loc[ok, cols]
    return cand.sort_values("ese_sigma", ascending=False, kind="stable").reset_index(drop=True)


def register_cli(subparsers):
    """Add the `ese-detect`, `alerts` and `ese-page` subcommands."""
    from dsa110_contimg.variability import alerts, candidates_page

    p = subparsers.add_parser(
        "ese-detect", help="variability statistics and ESE candidates from a time series"
    )
    p.add_argument("--timeseries", required=True, help="normalized.parquet (or timeseries.parquet)")
    p.add_argument("--outdir", required=True, help="directory for the ese products")
    p.add_argument(
        "--source-id",
        action="append",
        dest="source_ids",
        help="refit only this source (repeatable)",
    )
    p.add_argument("--recompute", action="store_true", help="refit every source")
    p.add_argument(
        "--workers",
        type=int,
        help=f"processes fitting blocks of sources (default: CPUs available, <= {MAX_WORKERS})",
    )
    p.add_argument(
        "--durations",
        default=",".join(f"{d:g}" for d in DEFAULT_DURATIONS_DAYS),
        help="comma-separated ESE durations (FWHM, days) to search",
    )
    p.add_argument(
        "--cadence",
        type=float,
        default=DETECT_DEFAULTS["cadence_days"],
        help="time grid step (days)",
    )
    ESESettings.add_arguments(p)
    p.set_defaults(func=_cli_detect)
    alerts.register_cli(subparsers)
    candidates_page.register_cli(subparsers)


def _cli_detect(args):
    durations = [float(d) for d in args.durations.split(",") if d.strip()]
    stats, cand = run_ese_detect(
        args.timeseries,
        args.outdir,
        recompute=args.recompute,
        source_ids=args.source_ids,
        workers=args.workers,
        durations_days=durations,
        cadence_days=args.cadence,
        **asdict(ESESettings.from_args(args)),
    )
    if args.source_ids:
        rows = stats[stats["source_id"].isin(args.source_ids)]
        print(rows.to_json(orient="records", double_precision=6))
    else:
        print(
            json.dumps(
                {
                    "sources": len(stats),
                    "candidates": len(cand),
                    "in_progress": int(cand["ese_in_progress"].sum())
                    if "ese_in_progress" in cand
                    else 0,
                }
            )
        )
