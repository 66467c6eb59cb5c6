"""Numba kernel of the ESE grid search (module `esefit`), at module level so that numba's
on-disk cache (cache=True) is found by every later process.

For one duration and a block of sources it takes the correlations of the gridded normal
equations with the dip D and shoulder B templates (FFTs, `esefit._fit_chunk`) and, per
source and centre, forms the Schur complements

    A = T'WT - T'WX M T'WX',  r = T'Wr - T'WX beta0,  M = (X'WX)^-1,

checks the sampling limits and keeps the centre of largest delta chi^2 = r' A^-1 r
(constrained: b < 0, c >= 0, else the dip alone): a few passes over each source's centres
in cache, where numpy needed ~90 over (sources x centres) arrays.
"""

import numba
import numpy as np


@numba.njit(cache=True, error_model="numpy")
def search_duration(corr, minv, beta0, cum, sw, fwhm, limits, best, best_c, best_fit):
    """Best centre of one duration for each source; updates the running best in place.

    corr (2k + 5, sources, >= cells): correlations with D of W tau^p (p < k), with B of
    the same, of W with D^2, B^2, DB, and of the weighted residuals with D and B;
    minv (sources, k, k) and beta0 (sources, k): the null's inverse normal matrix and
    fit; cum (sources, cells): cumulative count of measured cells; sw: sum of weights;
    limits: (min_dip_epochs, min_baseline_epochs, min_side_epochs). best, best_c: the
    best delta chi^2 and centre cell so far; best_fit (sources, k + 3): the null
    coefficients at the best fit, then dip b, shoulder c and duration.

    Per source, loops over all centres without branches (so they vectorize), then the
    first centre of largest delta chi^2: with det = a11 a22 - a12^2 > 1e-6 a11 a22,
    b = (a22 r1 - a12 r2) / det < 0 and c = (a11 r2 - a12 r1) / det >= 0 it is
    (a22 r1^2 - 2 a12 r1 r2 + a11 r2^2) / det, else r1^2 / a11 when r1 < 0.
    """
    n_src, n_cells = cum.shape
    k = minv.shape[1]
    half_box = int(np.floor(0.5 * fwhm))
    lag = int(np.ceil(fwhm))
    min_dip, min_base, min_side = limits
    for i in range(n_src):
        ok = _allowed(cum[i], half_box, lag, min_dip, min_base, min_side)
        a11 = corr[2 * k, i, :n_cells].astype(np.float64)
        a22 = corr[2 * k + 1, i, :n_cells].astype(np.float64)
        a12 = corr[2 * k + 2, i, :n_cells].astype(np.float64)
        r1 = corr[2 * k + 3, i, :n_cells].astype(np.float64)
        r2 = corr[2 * k + 4, i, :n_cells].astype(np.float64)
        for a in range(k):
            u_a, v_a, null_a = corr[a, i], corr[k + a, i], beta0[i, a]
            for c in range(n_cells):
                r1[c] -= u_a[c] * null_a
                r2[c] -= v_a[c] * null_a
            for b in range(k):
                m, u_b, v_b = minv[i, a, b], corr[b, i], corr[k + b, i]
                for c in range(n_cells):
                    a11[c] -= m * u_a[c] * u_b[c]
                    a22[c] -= m * v_a[c] * v_b[c]
                    a12[c] -= m * u_a[c] * v_b[c]
        floor = 1e-9 * sw[i]
        dchi2 = np.empty(n_cells)
        for c in range(n_cells):
            x, y, z, p, q = a11[c], a22[c], a12[c], r1[c], r2[c]
            det = x * y - z * z
            two = (det > 1e-6 * x * y) & (y * p - z * q < 0.0) & (x * q - z * p >= 0.0)
            one = p * p / x if p < 0.0 else -np.inf
            d = (y * p * p - 2.0 * z * p * q + x * q * q) / det if two else one
            dchi2[c] = d if ok[c] & (x > floor) else -np.inf
        at = np.argmax(dchi2)
        if not dchi2[at] > best[i]:
            continue
        x, y, z, p, q = a11[at], a22[at], a12[at], r1[at], r2[at]
        det = x * y - z * z
        if (det > 1e-6 * x * y) & (y * p - z * q < 0.0) & (x * q - z * p >= 0.0):
            dip, shoulder = (y * p - z * q) / det, (x * q - z * p) / det
        else:
            dip, shoulder = p / x, 0.0
        best[i] = dchi2[at]
        best_c[i] = at
        for a in range(k):
            p_d = 0.0
            p_b = 0.0
            for b in range(k):
                p_d += minv[i, a, b] * corr[b, i, at]
                p_b += minv[i, a, b] * corr[k + b, i, at]
            best_fit[i, a] = beta0[i, a] - p_d * dip - p_b * shoulder
        best_fit[i, k] = dip
        best_fit[i, k + 1] = shoulder
        best_fit[i, k + 2] = fwhm


@numba.njit(cache=True)
def _allowed(cum, half_box, lag, min_dip, min_base, min_side):
    """Centres whose dip (|t - t0| <= half_box cells) holds >= min_dip measurements,
    with >= min_base outside it and >= min_side at or before t0 - lag."""
    n_cells = cum.size
    n_meas = cum[n_cells - 1]
    ok = np.empty(n_cells, dtype=np.bool_)
    for c in range(n_cells):
        in_dip = cum[min(c + half_box, n_cells - 1)] - (
            cum[c - half_box - 1] if c > half_box else 0
        )
        before = cum[c - lag] if c >= lag else 0
        ok[c] = (in_dip >= min_dip) & (n_meas - in_dip >= min_base) & (before >= min_side)
    return ok
