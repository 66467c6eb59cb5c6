"""Variability statistics, Extreme Scattering Event (ESE) detection and alerts (DESIGN.md 5).

Variability per source (all measurements with finite flux and positive error): n, mean,
weighted mean, std, V = std/mean, eta = reduced chi^2 about the weighted mean, and the
largest deviation from the weighted mean in units of the measurement error.

ESE detection fits, for every source, the Gaussian-lens light curve

    S(t) = a + b D(x) + c B(x),  x = (t - t0) / sigma,  sigma = duration / 2.355,
    D = exp(-x^2/2) (the dip, b < 0),  B = (e/2) x^2 exp(-x^2/2) (caustic shoulders, c >= 0)

against a constant a, over a grid of centre epochs t0 (every cell of a regular time grid
of `cadence_days`) and durations (FWHM of the dip, `durations_days`, weeks to months).
For fixed (t0, duration) the model is linear, so the improvement delta chi^2 over the
constant follows from weighted sums that are correlations of the gridded weights and
weighted fluxes with D, B, D^2, B^2 and DB: these are done with FFTs for all sources and
centres at once. The constrained fit (b < 0, c >= 0, else the dip alone) is compared
with the constant by the chi^2 (2 dof) tail probability of the best delta chi^2, which
is conservative for the constrained fit; the look-elsewhere effect is accounted for
with an effective number of independent trials, N = sum over durations of
max(1, span / duration) (span of the source's light curve), via
p = 1 - (1 - p_local)^N. The significance is the one-sided Gaussian equivalent of p.

Measurement errors are only trusted after a check: each source's errors are scaled up
(never down) by the robust rms of its point-to-point differences in units of their
expected error, which an ESE lasting several epochs barely changes but unmodelled
noise does. Without this a source with underestimated errors is a false ESE.

Products (under `outdir`): variability_stats.parquet (one row per source, with the ESE
fit and the state for incremental runs: n and mjd_last per source, settings in the
metadata), ese_candidates.parquet and .csv (sources with ese_sigma >= min_sigma).
Without `recompute`, only sources whose n or last mjd changed (or new ones) are fitted.
`update_alerts` appends to alerts.jsonl the candidates not alerted before.
"""

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np

from .atomic import atomic_output, write_parquet
from .photometry import read_table
from .provenance import provenance

log = logging.getLogger(__name__)

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
MAD_TO_SIGMA = 1.4826
DEFAULT_DURATIONS_DAYS = (3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, 90.0)

STATS_FILE = "variability_stats.parquet"
CANDIDATES_FILE = "ese_candidates.parquet"
CANDIDATES_CSV = "ese_candidates.csv"
ALERTS_FILE = "alerts.jsonl"

CANDIDATE_COLUMNS = [
    "source_id", "ra", "dec", "ese_sigma", "ese_mjd", "ese_duration_days", "ese_depth",
    "ese_shoulder", "ese_delta_chi2", "n", "mjd_first", "mjd_last", "wmean_jy", "v", "eta",
]


def flux_columns(table):
    """(flux, error) column names: normalized fluxes when present, else raw photometry."""
    if "flux_norm_jy" in table.columns and "flux_norm_err_jy" in table.columns:
        return "flux_norm_jy", "flux_norm_err_jy"
    return "flux_jy", "flux_err_jy"


def _usable(table, flux_col, err_col):
    f = table[flux_col].to_numpy(float)
    e = table[err_col].to_numpy(float)
    return np.isfinite(f) & np.isfinite(e) & (e > 0) & np.isfinite(table["mjd"].to_numpy(float))


def variability_stats(src, mjd, flux, err, n_sources):
    """Per-source variability statistics from long arrays (src = source index 0..N-1)."""
    import pandas as pd

    w = 1.0 / err**2
    count = np.bincount(src, minlength=n_sources).astype(float)
    s_f = np.bincount(src, flux, n_sources)
    s_ff = np.bincount(src, flux**2, n_sources)
    s_w = np.bincount(src, w, n_sources)
    s_wf = np.bincount(src, w * flux, n_sources)
    s_wff = np.bincount(src, w * flux**2, n_sources)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s_f / count
        var = np.maximum(s_ff - count * mean**2, 0.0) / (count - 1)
        std = np.sqrt(np.where(count > 1, var, np.nan))
        wmean = s_wf / s_w
        chi2 = np.maximum(s_wff - s_wf**2 / s_w, 0.0)
        eta = np.where(count > 1, chi2 / (count - 1), np.nan)
        dev = np.abs(flux - wmean[src]) / err
    max_dev = np.full(n_sources, np.nan)
    np.fmax.at(max_dev, src, dev)
    first = np.full(n_sources, np.inf)
    last = np.full(n_sources, -np.inf)
    np.minimum.at(first, src, mjd)
    np.maximum.at(last, src, mjd)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "n": count.astype(np.int64),
            "mjd_first": np.where(count > 0, first, np.nan),
            "mjd_last": np.where(count > 0, last, np.nan),
            "mean_jy": mean,
            "wmean_jy": wmean,
            "wmean_err_jy": 1.0 / np.sqrt(s_w),
            "std_jy": std,
            "v": std / mean,
            "eta": eta,
            "max_dev_sigma": max_dev,
        })


def error_scale(src, mjd, flux, err, n_sources):
    """Per-source factor (>= 1) by which the errors understate point-to-point scatter.

    Robust rms (scaled MAD about zero) of (S_j+1 - S_j) / sqrt(s_j^2 + s_j+1^2) over
    consecutive measurements; 1 where fewer than 5 differences exist.
    """
    order = np.lexsort((mjd, src))
    s, f, e = src[order], flux[order], err[order]
    same = s[1:] == s[:-1]
    z = np.abs(np.diff(f)) / np.sqrt(e[1:] ** 2 + e[:-1] ** 2)
    z, s_pair = z[same], s[1:][same]
    scale = np.ones(n_sources)
    if z.size == 0:
        return scale
    order = np.lexsort((z, s_pair))
    z, s_pair = z[order], s_pair[order]
    counts = np.bincount(s_pair, minlength=n_sources)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts >= 5
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    median = 0.5 * (z[lo] + z[hi])
    scale[has] = np.maximum(1.0, MAD_TO_SIGMA * median)
    return scale


def _kernel_spectrum(kernel, length):
    """rfft of a symmetric kernel wrapped about index 0 (correlation = convolution)."""
    half = (len(kernel) - 1) // 2
    wrapped = np.zeros(length)
    wrapped[:half + 1] = kernel[half:]
    if half:
        wrapped[-half:] = kernel[:half]
    return np.fft.rfft(wrapped)


def ese_templates(fwhm_cells):
    """Dip D, shoulder B and in-dip box on integer lags for a duration of `fwhm_cells`."""
    sigma = fwhm_cells * FWHM_TO_SIGMA
    half = int(np.ceil(5.0 * sigma))
    lag = np.arange(-half, half + 1)
    x = lag / sigma
    dip = np.exp(-0.5 * x**2)
    shoulder = 0.5 * np.e * x**2 * dip
    box = (np.abs(lag) <= 0.5 * fwhm_cells).astype(float)
    return dip, shoulder, box


def detect_ese(
    src,
    mjd,
    flux,
    err,
    n_sources,
    durations_days=DEFAULT_DURATIONS_DAYS,
    cadence_days=1.0,
    min_dip_epochs=3,
    min_baseline_epochs=5,
    rescale_errors=True,
    chunk=1000,
):
    """Best ESE fit for every source; returns a dict of per-source arrays.

    Inputs are long arrays (one element per measurement; src = source index 0..N-1).
    Keys: ese_sigma, ese_delta_chi2, ese_mjd, ese_duration_days, ese_depth,
    ese_shoulder, ese_trials, error_scale.
    """
    from scipy.fft import next_fast_len
    from scipy.special import ndtri_exp

    src = np.asarray(src, dtype=np.int64)
    mjd, flux, err = (np.asarray(a, dtype=float) for a in (mjd, flux, err))
    scale = error_scale(src, mjd, flux, err, n_sources) if rescale_errors \
        else np.ones(n_sources)
    out = {
        "ese_sigma": np.full(n_sources, np.nan),
        "ese_delta_chi2": np.full(n_sources, np.nan),
        "ese_mjd": np.full(n_sources, np.nan),
        "ese_duration_days": np.full(n_sources, np.nan),
        "ese_depth": np.full(n_sources, np.nan),
        "ese_shoulder": np.full(n_sources, np.nan),
        "ese_trials": np.full(n_sources, np.nan),
        "error_scale": scale,
    }
    if src.size == 0:
        return out
    cell = np.floor(mjd / cadence_days + 0.5).astype(np.int64)
    c0 = int(cell.min())
    cell -= c0
    n_cells = int(cell.max()) + 1
    w_all = 1.0 / (err * scale[src]) ** 2
    fwhm_cells = np.asarray(durations_days, dtype=float) / cadence_days
    templates = [ese_templates(f) for f in fwhm_cells]
    max_half = max((len(t[0]) - 1) // 2 for t in templates)
    length = next_fast_len(n_cells + max_half + 1, real=True)
    spectra = []
    for dip, shoulder, box in templates:
        spectra.append([_kernel_spectrum(k, length) for k in
                        (dip, shoulder, dip**2, shoulder**2, dip * shoulder, box)])

    order = np.argsort(src, kind="stable")
    bounds = np.searchsorted(src[order], np.arange(0, n_sources + chunk, chunk))
    for start in range(0, n_sources, chunk):
        stop = min(n_sources, start + chunk)
        rows = order[bounds[start // chunk]:bounds[start // chunk + 1]]
        if rows.size == 0:
            continue
        n_rows = stop - start
        flat = (src[rows] - start) * n_cells + cell[rows]
        size = n_rows * n_cells
        weight = np.bincount(flat, w_all[rows], size).reshape(n_rows, n_cells)
        wflux = np.bincount(flat, w_all[rows] * flux[rows], size).reshape(n_rows, n_cells)
        present = (weight > 0).astype(float)
        _fit_chunk(out, slice(start, stop), weight, wflux, present, spectra, fwhm_cells,
                   length, n_cells, min_dip_epochs, min_baseline_epochs)

    dchi2 = out["ese_delta_chi2"]
    trials = out["ese_trials"]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_p_local = -0.5 * dchi2
        p_local = np.exp(log_p_local)
        approx = trials * p_local < 1e-3
        log_p = np.where(approx, np.log(trials) + log_p_local,
                         np.log(-np.expm1(trials * np.log1p(-np.minimum(p_local, 1 - 1e-16)))))
        sigma = np.maximum(-ndtri_exp(np.minimum(log_p, 0.0)), 0.0)
    out["ese_sigma"] = np.where(np.isfinite(dchi2), sigma, np.nan)
    out["ese_mjd"] = (out["ese_mjd"] + c0) * cadence_days
    return out


def _fit_chunk(out, sl, weight, wflux, present, spectra, fwhm_cells, length, n_cells,
               min_dip_epochs, min_baseline_epochs):
    """Grid search over centres and durations for one block of sources (in place)."""
    irfft = np.fft.irfft
    f_w = np.fft.rfft(weight, length, axis=1)
    f_wf = np.fft.rfft(wflux, length, axis=1)
    f_m = np.fft.rfft(present, length, axis=1)
    sw = weight.sum(axis=1)[:, None]
    swf = wflux.sum(axis=1)[:, None]
    n_meas = present.sum(axis=1)
    measured = np.flatnonzero(n_meas > 0)
    first = np.argmax(present > 0, axis=1)
    last = n_cells - 1 - np.argmax(present[:, ::-1] > 0, axis=1)
    span = np.where(n_meas > 0, last - first + 1, 0)

    n = weight.shape[0]
    best = np.full(n, -np.inf)
    best_centre = np.zeros(n)
    best_fwhm = np.full(n, np.nan)
    best_depth = np.full(n, np.nan)
    best_shoulder = np.full(n, np.nan)
    trials = np.zeros(n)
    rows = np.arange(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        for (k_d, k_b, k_dd, k_bb, k_db, k_box), fwhm in zip(spectra, fwhm_cells):
            s_d = irfft(f_w * k_d, length, axis=1)[:, :n_cells]
            s_b = irfft(f_w * k_b, length, axis=1)[:, :n_cells]
            a11 = irfft(f_w * k_dd, length, axis=1)[:, :n_cells] - s_d**2 / sw
            a22 = irfft(f_w * k_bb, length, axis=1)[:, :n_cells] - s_b**2 / sw
            a12 = irfft(f_w * k_db, length, axis=1)[:, :n_cells] - s_d * s_b / sw
            b1 = irfft(f_wf * k_d, length, axis=1)[:, :n_cells] - swf * s_d / sw
            b2 = irfft(f_wf * k_b, length, axis=1)[:, :n_cells] - swf * s_b / sw
            in_dip = np.rint(irfft(f_m * k_box, length, axis=1)[:, :n_cells])
            ok = (in_dip >= min_dip_epochs) & (n_meas[:, None] - in_dip >= min_baseline_epochs)
            ok &= a11 > 1e-9 * sw
            det = a11 * a22 - a12**2
            two = ok & (det > 1e-6 * a11 * a22)
            beta_d2 = (a22 * b1 - a12 * b2) / det
            beta_b2 = (a11 * b2 - a12 * b1) / det
            use2 = two & (beta_d2 < 0) & (beta_b2 >= 0)
            use1 = ok & ~use2 & (b1 < 0)
            dchi2 = np.where(use2, (a22 * b1**2 - 2 * a12 * b1 * b2 + a11 * b2**2) / det,
                             np.where(use1, b1**2 / a11, -np.inf))
            beta_d = np.where(use2, beta_d2, b1 / a11)
            beta_b = np.where(use2, beta_b2, 0.0)
            idx = np.argmax(dchi2, axis=1)
            peak = dchi2[rows, idx]
            better = peak > best
            if better.any():
                bd, bb = beta_d[rows, idx], beta_b[rows, idx]
                base = (swf[:, 0] - bd * s_d[rows, idx] - bb * s_b[rows, idx]) / sw[:, 0]
                best[better] = peak[better]
                best_centre[better] = idx[better]
                best_fwhm[better] = fwhm
                best_depth[better] = (-bd / base)[better]
                best_shoulder[better] = (bb / base)[better]
            trials += np.maximum(1.0, span / fwhm)
    done = np.zeros(n, dtype=bool)
    done[measured] = True
    found = np.isfinite(best)
    target = np.arange(sl.start, sl.stop)
    out["ese_delta_chi2"][target] = np.where(found, best, np.where(done, 0.0, np.nan))
    out["ese_trials"][target] = np.where(done, trials, np.nan)
    out["ese_mjd"][target] = np.where(found, best_centre, np.nan)
    out["ese_duration_days"][target] = best_fwhm
    out["ese_depth"][target] = best_depth
    out["ese_shoulder"][target] = best_shoulder


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


def source_codes(ids):
    """(codes 0..N-1, sorted unique ids as str) for a source_id column, cheap for categoricals."""
    import pandas as pd

    if isinstance(ids.dtype, pd.CategoricalDtype):
        ids = ids.cat.remove_unused_categories()
        names = np.asarray(ids.cat.categories.astype(str), dtype=object)
        order = np.argsort(names, kind="stable")
        rank = np.empty(len(names), dtype=np.int64)
        rank[order] = np.arange(len(names))
        return rank[ids.cat.codes.to_numpy()], names[order]
    codes, uniques = pd.factorize(ids.astype(str), sort=True)
    return codes, np.asarray(uniques, dtype=object)


def analyse_sources(table, durations_days=DEFAULT_DURATIONS_DAYS, cadence_days=1.0,
                    min_dip_epochs=3, min_baseline_epochs=5, rescale_errors=True):
    """Variability statistics and ESE fit for every source in a long time-series table."""
    flux_col, err_col = flux_columns(table)
    use = _usable(table, flux_col, err_col)
    codes, ids = source_codes(table["source_id"])
    n_sources = len(ids)
    src = codes[use]
    mjd = table["mjd"].to_numpy(float)[use]
    flux = table[flux_col].to_numpy(float)[use]
    err = table[err_col].to_numpy(float)[use]
    stats = variability_stats(src, mjd, flux, err, n_sources)
    stats.insert(0, "source_id", np.asarray(ids, dtype=object))
    for coord in ("ra", "dec"):
        if coord in table.columns:
            stats.insert(1 if coord == "ra" else 2, coord,
                         np.bincount(codes, table[coord].to_numpy(float), n_sources)
                         / np.maximum(np.bincount(codes, minlength=n_sources), 1))
    fit = detect_ese(src, mjd, flux, err, n_sources, durations_days=durations_days,
                     cadence_days=cadence_days, min_dip_epochs=min_dip_epochs,
                     min_baseline_epochs=min_baseline_epochs, rescale_errors=rescale_errors)
    for key, values in fit.items():
        stats[key] = values
    return stats


def run_ese_detect(
    timeseries_path,
    outdir,
    min_sigma=5.0,
    recompute=False,
    source_ids=None,
    durations_days=DEFAULT_DURATIONS_DAYS,
    cadence_days=1.0,
    min_dip_epochs=3,
    min_baseline_epochs=5,
    rescale_errors=True,
):
    """Update variability_stats and the ESE candidate tables in `outdir`; returns both.

    Only sources with new measurements (changed n or last mjd) are refitted unless
    `recompute`; `source_ids` refits just those sources (they must be in the input).
    """
    import pandas as pd

    timeseries_path, outdir = Path(timeseries_path), Path(outdir)
    table = read_table(
        timeseries_path, ["source_id", "mjd", "flux_jy", "flux_err_jy"],
        select=["source_id", "mjd", "ra", "dec", "flux_jy", "flux_err_jy", "flux_norm_jy",
                "flux_norm_err_jy"],
        categorical=["source_id"])
    if not isinstance(table["source_id"].dtype, pd.CategoricalDtype):
        table["source_id"] = table["source_id"].astype("category")
    table["source_id"] = table["source_id"].cat.rename_categories(str)
    flux_col, err_col = flux_columns(table)
    settings = {
        "durations_days": [float(d) for d in durations_days], "cadence_days": cadence_days,
        "min_dip_epochs": min_dip_epochs, "min_baseline_epochs": min_baseline_epochs,
        "rescale_errors": rescale_errors, "flux_column": flux_col,
    }
    settings_hash = _settings_hash(settings)
    stats_path = outdir / STATS_FILE
    prev = None if recompute else _read_state(stats_path, settings_hash)

    use = _usable(table, flux_col, err_col)
    codes, names = source_codes(table["source_id"])
    all_ids = pd.Index(names)
    n_cur = np.bincount(codes[use], minlength=len(names))
    last_cur = np.full(len(names), -np.inf)
    np.maximum.at(last_cur, codes[use], table["mjd"].to_numpy(float)[use])
    current = pd.DataFrame({"n": n_cur, "mjd_last": np.where(n_cur > 0, last_cur, np.nan)},
                           index=all_ids)
    if source_ids:
        wanted = pd.Index([str(s) for s in source_ids])
        unknown = wanted.difference(all_ids)
        if len(unknown):
            raise ValueError(f"{timeseries_path}: no measurements of source(s) {list(unknown)}")
        todo = wanted
    elif prev is None:
        todo = all_ids
    else:
        old = prev.set_index("source_id")[["n", "mjd_last"]].reindex(all_ids)
        cur = current.reindex(all_ids)
        same_last = (old["mjd_last"] == cur["mjd_last"]) | (
            old["mjd_last"].isna() & cur["mjd_last"].isna())
        same = (old["n"] == cur["n"].fillna(0)) & same_last
        todo = all_ids[~same.to_numpy()]
    log.info("ese-detect: fitting %d of %d sources", len(todo), len(all_ids))

    subset = table if len(todo) == len(all_ids) else table[table["source_id"].isin(todo)]
    fresh = analyse_sources(subset, durations_days=durations_days,
                            cadence_days=cadence_days, min_dip_epochs=min_dip_epochs,
                            min_baseline_epochs=min_baseline_epochs,
                            rescale_errors=rescale_errors)
    if prev is not None or (source_ids and stats_path.exists()):
        base = prev if prev is not None else read_table(stats_path, ["source_id"])
        keep = base[base["source_id"].isin(all_ids) & ~base["source_id"].isin(todo)]
        stats = pd.concat([keep, fresh], ignore_index=True) if len(keep) else fresh
    else:
        stats = fresh
    stats = stats.sort_values("source_id", kind="stable").reset_index(drop=True)

    candidates = candidates_from_stats(stats, min_sigma)
    meta = provenance([timeseries_path], config=settings, ese_settings=settings,
                      ese_settings_hash=settings_hash, min_sigma=min_sigma,
                      refitted_sources=len(todo))
    write_parquet(stats, stats_path, metadata=meta)
    write_parquet(candidates, outdir / CANDIDATES_FILE, metadata=meta)
    with atomic_output(outdir / CANDIDATES_CSV) as tmp:
        candidates.to_csv(tmp, index=False, float_format="%.6g")
    log.info("ese-detect: %d candidates with significance >= %.1f sigma", len(candidates),
             min_sigma)
    return stats, candidates


def candidates_from_stats(stats, min_sigma=5.0):
    """ESE candidates: sources with ese_sigma >= min_sigma, most significant first."""
    cols = [c for c in CANDIDATE_COLUMNS if c in stats.columns]
    cand = stats.loc[stats["ese_sigma"] >= min_sigma, cols]
    return cand.sort_values("ese_sigma", ascending=False, kind="stable").reset_index(drop=True)


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
    ESE_DURATION_DAYS, ESE_DEPTH, ESE_SIGMA, ESE_RA, ESE_DEC and the JSON line in
    ESE_ALERT; its exit code is recorded in the alert. Returns the new alerts.
    """
    import datetime as dt

    candidates_path, alerts_path = Path(candidates_path), Path(alerts_path)
    cand = read_table(candidates_path, ["source_id", "ese_sigma", "ese_mjd",
                                        "ese_duration_days", "ese_depth"])
    previous = read_alerts(alerts_path)
    new = []
    for row in cand.to_dict("records"):
        if any(_same_event(row, old) for old in previous + new):
            continue
        alert = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                 for k, v in row.items()}
        alert = json.loads(json.dumps(alert, default=_json_default))
        alert["alerted_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        alert["candidates"] = str(candidates_path)
        new.append(alert)
    for alert in new:
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
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return str(value)


def _run_alert_command(command, alert, timeout_s):
    env = dict(os.environ)
    for key in ("source_id", "ese_mjd", "ese_duration_days", "ese_depth", "ese_sigma",
                "ra", "dec"):
        name = "ESE_" + key.upper().removeprefix("ESE_")
        env[name] = "" if alert.get(key) is None else str(alert[key])
    env["ESE_ALERT"] = json.dumps(alert, sort_keys=True)
    try:
        done = subprocess.run(command, shell=True, env=env, timeout=timeout_s,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        log.error("alert command timed out after %ss for %s", timeout_s, alert["source_id"])
        return None
    if done.returncode:
        log.error("alert command exited %d for %s: %s", done.returncode, alert["source_id"],
                  done.stderr.strip()[-500:])
    return done.returncode


def register_cli(subparsers):
    """Add the `ese-detect` and `alerts` subcommands."""
    p = subparsers.add_parser("ese-detect",
                              help="variability statistics and ESE candidates from a time series")
    p.add_argument("--timeseries", required=True,
                   help="normalized.parquet (or timeseries.parquet)")
    p.add_argument("--outdir", required=True, help="directory for the ese products")
    p.add_argument("--source-id", action="append", dest="source_ids",
                   help="refit only this source (repeatable)")
    p.add_argument("--min-sigma", type=float, default=5.0, help="candidate threshold (5)")
    p.add_argument("--recompute", action="store_true", help="refit every source")
    p.add_argument("--durations", default=",".join(f"{d:g}" for d in DEFAULT_DURATIONS_DAYS),
                   help="comma-separated ESE durations (FWHM, days) to search")
    p.add_argument("--cadence", type=float, default=1.0, help="time grid step (days)")
    p.add_argument("--min-dip-epochs", type=int, default=3)
    p.set_defaults(func=_cli_detect)

    a = subparsers.add_parser("alerts", help="alert ESE candidates not alerted before")
    a.add_argument("--candidates", required=True, help="ese_candidates.parquet")
    a.add_argument("--out", required=True, help="alerts.jsonl")
    a.add_argument("--command", help="shell command run per new alert (ESE_* env vars)")
    a.set_defaults(func=_cli_alerts)


def _cli_detect(args):
    durations = [float(d) for d in args.durations.split(",") if d.strip()]
    stats, cand = run_ese_detect(
        args.timeseries, args.outdir, min_sigma=args.min_sigma, recompute=args.recompute,
        source_ids=args.source_ids, durations_days=durations, cadence_days=args.cadence,
        min_dip_epochs=args.min_dip_epochs,
    )
    if args.source_ids:
        rows = stats[stats["source_id"].isin(args.source_ids)]
        print(rows.to_json(orient="records", double_precision=6))
    else:
        print(json.dumps({"sources": len(stats), "candidates": len(cand)}))


def _cli_alerts(args):
    new = update_alerts(args.candidates, args.out, command=args.command)
    print(json.dumps({"new_alerts": len(new)}))
