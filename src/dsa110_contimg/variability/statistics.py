"""Variability statistics of light curves, with VAST's definitions, and data cleaning.

Per source, over its N measurements S_i with errors s_i (finite flux, positive error)
and weights w_i = 1 / s_i^2:

    V   = std(S, ddof=1) / mean(S)                       (0 when N = 1)
    eta = N / (N - 1) * ( <w S^2> - <w S>^2 / <w> )
        = sum w_i (S_i - S_w)^2 / (N - 1),  S_w = sum w S / sum w   (0 when N = 1)

(the "coefficient of variation" V and the weighted reduced chi^2 eta of the VAST
pipeline; <x> is the mean over the N measurements). The two-epoch metrics of a pair of
measurements (a earlier than b) are

    Vs = (S_a - S_b) / sqrt(s_a^2 + s_b^2)
    m  = 2 (S_a - S_b) / (S_a + S_b)

and are given for the most significant pair of consecutive measurements (largest |Vs|):
vs, m and the pair's epochs mjd_a, mjd_b. Also n, mean, weighted mean, std and the
largest deviation from the weighted mean in units of the error.

Cleaning before the ESE search (see `ese`): each source's errors are scaled up (never
down) by the robust rms of its point-to-point differences in units of their expected
error (`error_scale`); a smooth baseline (polynomial in time, iteratively clipped) is
fitted (`robust_trend`); and single-epoch outliers are rejected: a point more than
`outlier_sigma` from the baseline whose neighbours in time do not deviate the same way
(`isolated_outliers`). An ESE lasts several epochs, so its points support each other.
"""

import numpy as np

from dsa110_contimg.stats import MAD_TO_SIGMA


def variability_stats(src, mjd, flux, err, n_sources):
    """Per-source statistics (DataFrame, one row per source index) from long arrays."""
    import pandas as pd

    w = 1.0 / err**2
    count = np.bincount(src, minlength=n_sources).astype(float)
    s_f = np.bincount(src, flux, n_sources)
    s_w = np.bincount(src, w, n_sources)
    s_wf = np.bincount(src, w * flux, n_sources)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s_f / count
        wmean = s_wf / s_w
        # second moments about the (weighted) mean, summed again for round-off
        var = np.bincount(src, (flux - mean[src]) ** 2, n_sources)
        chi2 = np.bincount(src, w * (flux - wmean[src]) ** 2, n_sources)
        std = np.where(count > 1, np.sqrt(var / (count - 1)), np.nan)
        v = np.where(count > 1, std / mean, np.where(count == 1, 0.0, np.nan))
        eta = np.where(count > 1, chi2 / (count - 1), np.where(count == 1, 0.0, np.nan))
        dev = np.abs(flux - wmean[src]) / err
    max_dev = np.full(n_sources, np.nan)
    np.fmax.at(max_dev, src, dev)
    first = np.full(n_sources, np.inf)
    last = np.full(n_sources, -np.inf)
    np.minimum.at(first, src, mjd)
    np.maximum.at(last, src, mjd)
    pairs = two_epoch_metrics(src, mjd, flux, err, n_sources)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame(
            {
                "n": count.astype(np.int64),
                "mjd_first": np.where(count > 0, first, np.nan),
                "mjd_last": np.where(count > 0, last, np.nan),
                "mean_jy": mean,
                "wmean_jy": wmean,
                "wmean_err_jy": 1.0 / np.sqrt(s_w),
                "std_jy": std,
                "v": v,
                "eta": eta,
                "max_dev_sigma": max_dev,
            }
        )
    for key, values in pairs.items():
        table[key] = values
    return table


def time_order(src, mjd):
    """Indices sorting measurements by (source, time); a cheap check first, since
    time series are usually stored in that order already."""
    ds = np.diff(src)
    if np.all((ds > 0) | ((ds == 0) & (np.diff(mjd) >= 0))):
        return np.arange(src.size)
    return np.lexsort((mjd, src))


def two_epoch_metrics(src, mjd, flux, err, n_sources):
    """Vs and m of each source's most significant consecutive pair (dict of arrays)."""
    order = time_order(src, mjd)
    s, t, f, e = src[order], mjd[order], flux[order], err[order]
    same = s[1:] == s[:-1]
    vs = (f[:-1] - f[1:]) / np.sqrt(e[:-1] ** 2 + e[1:] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = 2.0 * (f[:-1] - f[1:]) / (f[:-1] + f[1:])
    idx = np.flatnonzero(same)
    out = {
        "vs": np.full(n_sources, np.nan),
        "m": np.full(n_sources, np.nan),
        "vs_mjd_a": np.full(n_sources, np.nan),
        "vs_mjd_b": np.full(n_sources, np.nan),
    }
    if idx.size == 0:
        return out
    # per source the pair with the largest |Vs|, the latest of equals (pairs are in
    # source order: a maximum per run of one source, no sort)
    size = np.abs(vs[idx])
    starts, counts = _runs(s[idx])
    top = size == np.repeat(np.maximum.reduceat(size, starts), counts)
    pick, who = idx[top], s[idx][top]
    best = pick[np.r_[who[1:] != who[:-1], True]]
    who = s[best]
    out["vs"][who] = vs[best]
    out["m"][who] = m[best]
    out["vs_mjd_a"][who] = t[best]
    out["vs_mjd_b"][who] = t[best + 1]
    return out


def _runs(groups):
    """(start, length) of each run of equal values in a sorted array."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    return starts, np.diff(np.r_[starts, groups.size])


def error_scale(src, mjd, flux, err, n_sources):
    """Per-source factor (>= 1) by which the errors understate point-to-point scatter.

    Robust rms (scaled MAD about zero) of (S_j+1 - S_j) / sqrt(s_j^2 + s_j+1^2) over
    consecutive measurements; 1 where fewer than 5 differences exist.
    """
    order = time_order(src, mjd)
    s, f, e = src[order], flux[order], err[order]
    same = s[1:] == s[:-1]
    z = np.abs(np.diff(f)) / np.sqrt(e[1:] ** 2 + e[:-1] ** 2)
    z, s_pair = z[same], s[1:][same]
    scale = np.ones(n_sources)
    if z.size == 0:
        return scale
    # medians per source: the runs of one length at once, as rows of a 2-d array
    starts, counts = _runs(s_pair)
    for length in np.unique(counts[counts >= 5]):
        these = counts == length
        rows = np.sort(z[starts[these, None] + np.arange(length)], axis=1)
        median = 0.5 * (rows[:, (length - 1) // 2] + rows[:, length // 2])
        scale[s_pair[starts[these]]] = np.maximum(1.0, MAD_TO_SIGMA * median)
    return scale


def time_basis(src, mjd, n_sources):
    """Per-measurement tau in [-1, 1] over each source's span, and (centre, half-span)."""
    first = np.full(n_sources, np.inf)
    last = np.full(n_sources, -np.inf)
    np.minimum.at(first, src, mjd)
    np.maximum.at(last, src, mjd)
    centre = np.where(np.isfinite(first), 0.5 * (first + last), 0.0)
    half = np.where(np.isfinite(first), np.maximum(0.5 * (last - first), 1.0), 1.0)
    return (mjd - centre[src]) / half[src], centre, half


def normal_sums(src, tau, flux, w, n_sources, degree):
    """Per-source normal equations of a weighted polynomial fit in tau:
    (sum w tau^(a+b), sum w S tau^a), shapes (n_sources, k, k) and (n_sources, k)."""
    k = degree + 1
    ata = np.empty((n_sources, k, k))
    atb = np.empty((n_sources, k))
    wp = w.copy()
    for p in range(2 * k - 1):
        if p < k:
            atb[:, p] = np.bincount(src, wp * flux, n_sources)
        total = np.bincount(src, wp, n_sources)
        for a in range(max(0, p - k + 1), min(p, k - 1) + 1):
            ata[:, a, p - a] = total
        wp *= tau
    return ata, atb


def solve_normal(ata, atb):
    """Coefficients from normal equations; sources with too few points for the degree
    get a ridge (1e-12 of the trace) so that the solve works."""
    k = atb.shape[1]
    ridge = 1e-12 * np.maximum(np.trace(ata, axis1=1, axis2=2), 1e-300)
    return np.linalg.solve(ata + ridge[:, None, None] * np.eye(k), atb[..., None])[..., 0]


def weighted_polyfit(src, tau, flux, w, n_sources, degree):
    """Per-source weighted least-squares polynomial in tau: coefficients (n_sources, k)."""
    return solve_normal(*normal_sums(src, tau, flux, w, n_sources, degree))


def poly_eval(coef, src, tau):
    """Evaluate per-source polynomial coefficients at each measurement."""
    out = np.zeros_like(tau)
    for p in range(coef.shape[1] - 1, -1, -1):
        out = out * tau + coef[src, p]
    return out


def robust_trend(src, tau, flux, err, n_sources, degree=1, clip=3.0, iterations=5):
    """Polynomial baseline per source, refitted without points beyond `clip` sigma.

    A refit changes the normal equations only by the points that crossed the clip, so
    those alone are added (weight +w) or taken out (-w) of the sums."""
    keep = np.ones(flux.shape, dtype=bool)
    w = 1.0 / err**2
    ata, atb = normal_sums(src, tau, flux, w, n_sources, degree)
    for _ in range(iterations):
        coef = solve_normal(ata, atb)
        z = (flux - poly_eval(coef, src, tau)) / err
        new = np.abs(z) <= clip
        moved = np.flatnonzero(new != keep)
        if moved.size == 0:
            break
        signed = np.where(new[moved], w[moved], -w[moved])
        d_ata, d_atb = normal_sums(src[moved], tau[moved], flux[moved], signed, n_sources, degree)
        ata += d_ata
        atb += d_atb
        keep = new
    return coef


def isolated_outliers(src, mjd, dev, outlier_sigma=5.0, support=0.5):
    """Mask of single-epoch outliers from deviations `dev` (in sigma) from a baseline.

    A point is an outlier when |dev| > outlier_sigma and no neighbour in time (previous
    or next measurement of the same source) deviates in the same direction by at least
    max(3, support * |dev|).
    """
    order = time_order(src, mjd)
    s, d = src[order], dev[order]
    n = d.size
    prev_ok = np.zeros(n, dtype=bool)
    next_ok = np.zeros(n, dtype=bool)
    need = np.maximum(3.0, support * np.abs(d))
    if n > 1:
        same = s[1:] == s[:-1]
        agree_prev = same & (np.sign(d[:-1]) == np.sign(d[1:])) & (np.abs(d[:-1]) >= need[1:])
        agree_next = same & (np.sign(d[1:]) == np.sign(d[:-1])) & (np.abs(d[1:]) >= need[:-1])
        prev_ok[1:] = agree_prev
        next_ok[:-1] = agree_next
    bad_sorted = (np.abs(d) > outlier_sigma) & ~prev_ok & ~next_ok
    bad = np.empty(n, dtype=bool)
    bad[order] = bad_sorted
    return bad
