"""Numba kernel of the ESE grid search (module `esefit`), at module level so that numba's
on-disk cache (cache=True) is found by every later process.

For one duration and a block of sources it takes the correlations of the gridded normal
equations with the dip D and shoulder B templates (FFTs, `esefit._fit_chunk`) and, per
source and centre, forms the Schur complements

    A = T'WT - T'WX M T'WX',  r = T'Wr - T'WX beta0,  M = (X'WX)^-1,

checks the sampling limits and keeps the centre of largest delta chi^2 = r' A^-1 r
(constrained: b < 0, c >= 0, else the dip alone): one pass, where numpy needed ~90 passes
over (sources x centres) arrays.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def _dip_amplitudes(a11, a22, a12, b1, b2):
    """(delta chi^2, dip b, shoulder c) of the constrained fit; delta chi^2 = -inf when
    neither the pair (b < 0, c >= 0) nor the dip alone (b < 0) is allowed."""
    det = a11 * a22 - a12 * a12
    if det > 1e-6 * a11 * a22:
        beta_d = (a22 * b1 - a12 * b2) / det
        beta_b = (a11 * b2 - a12 * b1) / det
        if beta_d < 0.0 and beta_b >= 0.0:
            return (a22 * b1 * b1 - 2.0 * a12 * b1 * b2 + a11 * b2 * b2) / det, beta_d, beta_b
    if b1 < 0.0:
        return b1 * b1 / a11, b1 / a11, 0.0
    return -np.inf, 0.0, 0.0


@numba.njit(cache=True)
def _beats(peak, a11, a22, a12, b1, b2):
    """Whether the constrained fit's delta chi^2 exceeds `peak`, without a division
    (det > 0 keeps the signs of b and c those of their numerators)."""
    det = a11 * a22 - a12 * a12
    if det > 1e-6 * a11 * a22 and a22 * b1 - a12 * b2 < 0.0 and a11 * b2 - a12 * b1 >= 0.0:
        return a22 * b1 * b1 - 2.0 * a12 * b1 * b2 + a11 * b2 * b2 > peak * det
    return b1 < 0.0 and b1 * b1 > peak * a11


@numba.njit(parallel=True, cache=True)
def search_duration(corr, minv, beta0, cum, sw, fwhm, limits, best, best_c, best_fit):
    """Best centre of one duration for each source; updates the running best in place.

    corr (2k + 5, sources, >= cells): correlations with D of W tau^p (p < k), with B of
    the same, of W with D^2, B^2, DB, and of the weighted residuals with D and B;
    minv (sources, k, k) and beta0 (sources, k): the null's inverse normal matrix and
    fit; cum (sources, cells): cumulative count of measured cells; sw: sum of weights;
    limits: (min_dip_epochs, min_baseline_epochs, min_side_epochs). best, best_c: the
    best delta chi^2 and centre cell so far; best_fit (sources, k + 3): the null
    coefficients at the best fit, then dip b, shoulder c and duration.
    """
    n_src, n_cells = cum.shape
    k = minv.shape[1]
    half_box = int(np.floor(0.5 * fwhm))
    lag = int(np.ceil(fwhm))
    min_dip, min_base, min_side = limits
    for i in numba.prange(n_src):
        n_meas = cum[i, n_cells - 1]
        u_d = np.empty(k)
        u_b = np.empty(k)
        p_d = np.empty(k)
        p_b = np.empty(k)
        peak, at, at_d, at_b = -np.inf, -1, 0.0, 0.0
        for c in range(n_cells):
            hi = min(c + half_box, n_cells - 1)
            in_dip = cum[i, hi] - (cum[i, c - half_box - 1] if c > half_box else 0)
            if in_dip < min_dip or n_meas - in_dip < min_base:
                continue
            if (cum[i, c - lag] if c >= lag else 0) < min_side:
                continue
            for a in range(k):
                u_d[a] = corr[a, i, c]
                u_b[a] = corr[k + a, i, c]
            a11 = float(corr[2 * k, i, c])
            a22 = float(corr[2 * k + 1, i, c])
            a12 = float(corr[2 * k + 2, i, c])
            b1 = float(corr[2 * k + 3, i, c])
            b2 = float(corr[2 * k + 4, i, c])
            for a in range(k):
                p_d[a] = 0.0
                p_b[a] = 0.0
                for b in range(k):
                    p_d[a] += minv[i, a, b] * u_d[b]
                    p_b[a] += minv[i, a, b] * u_b[b]
            for a in range(k):
                a11 -= u_d[a] * p_d[a]
                a22 -= u_b[a] * p_b[a]
                a12 -= u_d[a] * p_b[a]
                b1 -= u_d[a] * beta0[i, a]
                b2 -= u_b[a] * beta0[i, a]
            if not a11 > 1e-9 * sw[i]:
                continue
            if _beats(peak, a11, a22, a12, b1, b2):
                peak, at_d, at_b = _dip_amplitudes(a11, a22, a12, b1, b2)
                at = c
        if at < 0 or not peak > best[i]:
            continue
        best[i] = peak
        best_c[i] = at
        for a in range(k):
            p_d[a] = 0.0
            p_b[a] = 0.0
            for b in range(k):
                p_d[a] += minv[i, a, b] * corr[b, i, at]
                p_b[a] += minv[i, a, b] * corr[k + b, i, at]
            best_fit[i, a] = beta0[i, a] - p_d[a] * at_d - p_b[a] * at_b
        best_fit[i, k] = at_d
        best_fit[i, k + 1] = at_b
        best_fit[i, k + 2] = fwhm
