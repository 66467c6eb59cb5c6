"""Fitting Extreme Scattering Events (ESEs) to light curves, against null models of what
is not an ESE.

Model (Gaussian plasma lens, fractional flux 1 - depth D + shoulder B on a baseline):

    S(t) = P(tau) + b D(x) + c B(x),  x = (t - t0) / sigma,  sigma = duration / 2.355,
    D = exp(-x^2/2) (the dip, b < 0),  B = (e/2) x^2 exp(-x^2/2) (caustic shoulders, c >= 0)

P is the null model: a polynomial of degree `trend_degree` (default 1: constant + linear
trend) in tau, the time scaled to [-1, 1] over the source's span, so a slowly varying
quasar is not an ESE. Before the search, errors are rescaled and single-epoch outliers
(RFI, a failed calibration, an image artefact) are rejected (see `variability`).

The rescaling factor s1 (from consecutive differences) also grows with a real, well
sampled dip: an ESE of a 0.5 Jy source at SNR 100 lasting a third of a short light curve
has consecutive differences of many sigma, s1 ~5, and would lose its dip. So after the
search s1 is checked against the scatter about the best fit: s = clip(s1 sqrt(chi2_fit /
dof), 1, s1), with dof = n - (trend_degree + 1) - 4 (baseline, dip and shoulder
amplitudes, centre and duration). A constant source with understated errors keeps s ~ s1
(the fit cannot absorb its scatter); a real ESE gets the errors its residuals show.
Uniform per-source scaling leaves the best fit unchanged and divides delta chi^2 by
(s / s1)^2.

Grid search: for every centre t0 on a regular grid of `cadence_days` and every duration
(FWHM) in `durations_days`, the model is linear, so the improvement delta chi^2 of the
ESE over the null follows from weighted sums that are correlations of the gridded
weights w tau^p and weighted fluxes with D, B, D^2, B^2 and DB (FFTs, all sources and
centres at once). With X the null's regressors and T = (D, B):

    A = T'WT - T'WX (X'WX)^-1 X'WT,   r = T'Wy - T'WX (X'WX)^-1 X'Wy,   dchi2 = r' A^-1 r

(constrained: b < 0, c >= 0, else the dip alone). A grid point is allowed when the dip
(|t - t0| <= duration/2) holds >= `min_dip_epochs` measurements, >= `min_baseline_epochs`
lie outside it, and >= `min_side_epochs` lie before the ingress (t <= t0 - duration).
Significance: chi^2 (2 dof) tail of the best dchi2, with the look-elsewhere effect
through N = sum over durations of max(1, span / duration) trials, p = 1 - (1 - p1)^N,
as a one-sided Gaussian sigma.

A dip must be seen in the data, not only in the template: at the best fit, the epochs
inside the dip that lie `low_sigma` or more below the fitted baseline are counted
(ese_low_epochs); `ese_dip_ok` needs >= `min_dip_epochs` of them, at least half of the
epochs inside the dip, and the ingress covered. When fewer than `min_side_epochs`
measurements follow the egress (t >= t0 + duration) the event is `ese_in_progress`:
still reported, since a live ESE is the one to follow up.
"""

import numpy as np

from dsa110_contimg.stats import FWHM_TO_SIGMA
from dsa110_contimg.variability import statistics as var

DEFAULT_DURATIONS_DAYS = (3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, 90.0)


def lens_templates(t, t0, fwhm):
    """Dip D and shoulder B at times t for a lens centred on t0 with duration fwhm."""
    x = (np.asarray(t, dtype=float) - t0) / (fwhm * FWHM_TO_SIGMA)
    dip = np.exp(-0.5 * x**2)
    return dip, 0.5 * np.e * x**2 * dip


def _kernel_spectrum(kernel, length):
    """rfft of a symmetric kernel wrapped about index 0 (correlation = convolution)."""
    half = (len(kernel) - 1) // 2
    wrapped = np.zeros(length)
    wrapped[: half + 1] = kernel[half:]
    if half:
        wrapped[-half:] = kernel[:half]
    return np.fft.rfft(wrapped)


def _kernels(fwhm_cells):
    """Dip and shoulder templates on the grid, out to 5 sigma either side."""
    sigma = fwhm_cells * FWHM_TO_SIGMA
    half = int(np.ceil(5.0 * sigma))
    return lens_templates(np.arange(-half, half + 1), 0.0, fwhm_cells)


def detect_ese(
    src,
    mjd,
    flux,
    err,
    n_sources,
    durations_days=DEFAULT_DURATIONS_DAYS,
    cadence_days=1.0,
    min_dip_epochs=4,
    min_baseline_epochs=5,
    rescale_errors=True,
    trend_degree=1,
    outlier_sigma=5.0,
    low_sigma=3.0,
    min_side_epochs=2,
    mjd_range=None,
    chunk=256,
):
    """Best ESE fit for every source from long arrays (src = source index 0..N-1).

    The grid of centres spans `mjd_range` (first, last MJD; default the data's): a caller
    fitting blocks of sources gives each the same range, so each source's fit does not
    depend on which others share its block.

    Returns a dict of per-source arrays: ese_sigma, ese_delta_chi2, ese_mjd,
    ese_duration_days, ese_depth, ese_shoulder, ese_trials, error_scale, n_outliers,
    ese_low_epochs, ese_dip_epochs, ese_ingress_epochs, ese_egress_epochs,
    ese_in_progress, ese_dip_ok.
    """
    from scipy.fft import next_fast_len

    src = np.asarray(src, dtype=np.int64)
    mjd, flux, err = (np.asarray(a, dtype=float) for a in (mjd, flux, err))
    scale = (
        var.error_scale(src, mjd, flux, err, n_sources) if rescale_errors else np.ones(n_sources)
    )
    nan = np.full(n_sources, np.nan)
    out = {
        k: nan.copy()
        for k in (
            "ese_sigma",
            "ese_delta_chi2",
            "ese_mjd",
            "ese_duration_days",
            "ese_depth",
            "ese_shoulder",
            "ese_trials",
        )
    }
    out["error_scale"] = scale
    for k in (
        "n_outliers",
        "ese_low_epochs",
        "ese_dip_epochs",
        "ese_ingress_epochs",
        "ese_egress_epochs",
    ):
        out[k] = np.zeros(n_sources, dtype=np.int64)
    out["ese_in_progress"] = np.zeros(n_sources, dtype=bool)
    out["ese_dip_ok"] = np.zeros(n_sources, dtype=bool)
    if src.size == 0:
        return out
    e_s = err * scale[src]
    tau, centre, half = var.time_basis(src, mjd, n_sources)
    trend = var.robust_trend(src, tau, flux, e_s, n_sources, trend_degree)
    resid = flux - var.poly_eval(trend, src, tau)
    bad = var.isolated_outliers(src, mjd, resid / e_s, outlier_sigma)
    out["n_outliers"] = np.bincount(src[bad], minlength=n_sources)
    keep = ~bad
    src, mjd, flux, e_s, tau, resid = (a[keep] for a in (src, mjd, flux, e_s, tau, resid))

    cell = np.floor(mjd / cadence_days + 0.5).astype(np.int64)
    if mjd_range is not None:
        first, last = np.floor(np.asarray(mjd_range, dtype=float) / cadence_days + 0.5)
    else:
        first, last = cell.min(), cell.max()
    c0 = int(first)
    cell -= c0
    n_cells = int(last) - c0 + 1
    w_all = 1.0 / e_s**2
    fwhm_cells = np.asarray(durations_days, dtype=float) / cadence_days
    kernels = [_kernels(f) for f in fwhm_cells]
    max_half = max((len(k[0]) - 1) // 2 for k in kernels)
    length = next_fast_len(n_cells + max_half + 1, real=True)
    spectra = [
        [_kernel_spectrum(k, length).astype(np.complex64) for k in (d, b, d * d, b * b, d * b)]
        for d, b in kernels
    ]
    k_par = trend_degree + 1
    best_coef = np.full((n_sources, k_par), np.nan)
    order = np.arange(src.size) if np.all(src[1:] >= src[:-1]) else np.argsort(src, kind="stable")
    bounds = np.searchsorted(src[order], np.arange(0, n_sources + chunk, chunk))
    limits = (int(min_dip_epochs), int(min_baseline_epochs), int(min_side_epochs))
    for start in range(0, n_sources, chunk):
        stop = min(n_sources, start + chunk)
        rows = order[bounds[start // chunk] : bounds[start // chunk + 1]]
        if rows.size == 0:
            continue
        n_rows = stop - start
        flat = (src[rows] - start) * n_cells + cell[rows]
        size = n_rows * n_cells
        w = w_all[rows]

        def grid(values, flat=flat, size=size, n_rows=n_rows):
            return np.bincount(flat, values, size).reshape(n_rows, n_cells)

        weight = grid(w)
        wtau = [grid(w * tau[rows] ** p) for p in range(1, k_par)]
        wres = grid(w * resid[rows])
        local = src[rows] - start
        xwx = np.empty((n_rows, k_par, k_par))
        xwy = np.empty((n_rows, k_par))
        for a in range(k_par):
            xwy[:, a] = np.bincount(local, w * resid[rows] * tau[rows] ** a, n_rows)
            for b in range(k_par):
                xwx[:, a, b] = np.bincount(local, w * tau[rows] ** (a + b), n_rows)
        trace = np.trace(xwx, axis1=1, axis2=2)
        xwx[trace == 0] = np.eye(k_par)  # no measurement left: nothing to fit, keep it invertible
        xwx += 1e-12 * trace[:, None, None] * np.eye(k_par)
        normal = (weight, wtau, wres, xwx, xwy)
        search = (spectra, fwhm_cells, length, n_cells)
        _fit_chunk(out, best_coef, slice(start, stop), normal, search, limits)
    best_coef += trend

    out["ese_mjd"] = (out["ese_mjd"] + c0) * cadence_days
    out["ese_duration_days"] = out["ese_duration_days"] * cadence_days
    with np.errstate(invalid="ignore", divide="ignore"):
        tau0 = (out["ese_mjd"] - centre) / half
        base0 = var.poly_eval(best_coef, np.arange(n_sources), tau0)
        out["ese_depth"] = -out["ese_depth"] / base0
        out["ese_shoulder"] = out["ese_shoulder"] / base0
    out["ese_baseline_jy"] = base0
    curves = _best_fit_curves(out, best_coef, src, mjd, tau)
    if rescale_errors:
        ratio = _fit_scale_ratio(out, curves, src, flux, e_s, n_sources, k_par)
        out["error_scale"] = scale * ratio
        out["ese_delta_chi2"] = out["ese_delta_chi2"] / ratio**2
        e_s = e_s * ratio[src]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        sigma = _significance(out["ese_delta_chi2"], out["ese_trials"])
    out["ese_sigma"] = np.where(np.isfinite(out["ese_delta_chi2"]), sigma, np.nan)
    _dip_evidence(
        out, curves, src, mjd, flux, e_s, n_sources, low_sigma, min_dip_epochs, min_side_epochs
    )
    return out


def _significance(dchi2, trials):
    """One-sided Gaussian sigma of p = 1 - (1 - p1)^trials, p1 the chi^2 (2 dof) tail."""
    from scipy.special import ndtri_exp

    log_p_local = -0.5 * dchi2
    p_local = np.exp(log_p_local)
    approx = trials * p_local < 1e-3
    log_p = np.where(
        approx,
        np.log(trials) + log_p_local,
        np.log(-np.expm1(trials * np.log1p(-np.minimum(p_local, 1 - 1e-16)))),
    )
    return np.maximum(-ndtri_exp(np.minimum(log_p, 0.0)), 0.0)


def _best_fit_curves(out, coef, src, mjd, tau):
    """(baseline P, dip D, shoulder B) of each source's best fit at its measurements."""
    base = var.poly_eval(np.nan_to_num(coef), src, tau)
    t0 = np.nan_to_num(out["ese_mjd"][src])
    dip, bump = lens_templates(mjd, t0, np.nan_to_num(out["ese_duration_days"][src], nan=1.0))
    return base, dip, bump


def _fit_scale_ratio(out, curves, src, flux, e_s, n_sources, k_par):
    """Per source, s / s1 = clip(sqrt(chi2 about the best fit / dof), 1 / s1, 1) (docstring),
    the best fit being P (1 - depth D + shoulder B)."""
    base, dip, bump = curves
    depth = np.nan_to_num(out["ese_depth"][src])
    model = base * (1.0 - depth * dip + np.nan_to_num(out["ese_shoulder"][src]) * bump)
    chi2 = np.bincount(src, ((flux - model) / e_s) ** 2, n_sources)
    dof = np.bincount(src, minlength=n_sources) - k_par - 4
    ratio = np.ones(n_sources)
    fit = np.isfinite(out["ese_mjd"]) & (dof > 0)
    ratio[fit] = np.sqrt(chi2[fit] / dof[fit])
    return np.clip(ratio, 1.0 / out["error_scale"], 1.0)


def _dip_evidence(
    out, curves, src, mjd, flux, e_s, n_sources, low_sigma, min_dip_epochs, min_side_epochs
):
    """Count, at each source's best fit, the epochs actually low inside the dip."""
    t0 = out["ese_mjd"][src]
    fwhm = out["ese_duration_days"][src]
    found = np.isfinite(t0)
    base, dip, shoulder = curves
    base = np.where(found, base, np.nan)
    with np.errstate(invalid="ignore"):
        expected = base * (out["ese_depth"][src] * dip - out["ese_shoulder"][src] * shoulder)
        inside = found & (np.abs(mjd - t0) <= 0.5 * fwhm)
        deficit = base - flux
        low = inside & (deficit >= low_sigma * e_s) & (deficit >= 0.5 * expected)
        before = found & (mjd <= t0 - fwhm)
        after = found & (mjd >= t0 + fwhm)

    def count(mask):
        return np.bincount(src[mask], minlength=n_sources)

    out["ese_dip_epochs"] = count(inside)
    out["ese_low_epochs"] = count(low)
    out["ese_ingress_epochs"] = count(before)
    out["ese_egress_epochs"] = count(after)
    has_fit = np.isfinite(out["ese_mjd"])
    out["ese_dip_ok"] = (
        has_fit
        & (out["ese_low_epochs"] >= min_dip_epochs)
        & (2 * out["ese_low_epochs"] >= out["ese_dip_epochs"])
        & (out["ese_ingress_epochs"] >= min_side_epochs)
    )
    out["ese_in_progress"] = has_fit & (out["ese_egress_epochs"] < min_side_epochs)


def _fit_chunk(out, best_coef, sl, normal, search, limits):
    """Grid search over centres and durations for one block of sources (in place).

    normal: (weight, wtau, wres, xwx, xwy), the block's gridded normal equations of the
    residuals r = S - P about the robust trend P (delta chi^2 and the dip amplitudes do
    not change when a null-model curve is subtracted, and the correlations of r lose no
    precision in single precision); search: (spectra, fwhm_cells, length, n_cells), the
    dip templates and grid; limits: (min_dip_epochs, min_baseline_epochs,
    min_side_epochs). The correlations are single-precision FFTs, one inverse transform
    per duration for all 2k + 5 of them; the Schur complements and the choice of the
    best centre are in double precision (`esefit_kernels.search_duration`).
    Coefficients written to best_coef are those of r's null (the caller adds P's)."""
    from scipy.fft import irfft, rfft

    from dsa110_contimg.variability.esefit_kernels import search_duration

    weight, wtau, wres, xwx, xwy = normal
    spectra, fwhm_cells, length, n_cells = search
    k_par = 1 + len(wtau)
    f_x = rfft(np.stack([weight, *wtau, wres]).astype(np.float32), length, axis=-1)
    present = weight > 0
    cum = np.cumsum(present, axis=1)
    measured = cum[:, -1] > 0
    first = np.argmax(present, axis=1)
    last = n_cells - 1 - np.argmax(present[:, ::-1], axis=1)
    span = np.where(measured, last - first + 1, 0)
    minv = np.linalg.inv(xwx)
    beta0 = np.einsum("nab,nb->na", minv, xwy)
    n = weight.shape[0]
    best = np.full(n, -np.inf)
    best_c = np.zeros(n, dtype=np.int64)
    best_fit = np.full((n, k_par + 3), np.nan)
    trials = np.zeros(n)
    products = np.empty((2 * k_par + 5,) + f_x.shape[1:], dtype=f_x.dtype)
    sw = weight.sum(axis=1)
    for (k_d, k_b, k_dd, k_bb, k_db), fwhm in zip(spectra, fwhm_cells):
        np.multiply(f_x[:k_par], k_d, out=products[:k_par])
        np.multiply(f_x[:k_par], k_b, out=products[k_par : 2 * k_par])
        for j, kernel in enumerate((k_dd, k_bb, k_db)):
            np.multiply(f_x[0], kernel, out=products[2 * k_par + j])
        np.multiply(f_x[k_par], k_d, out=products[2 * k_par + 3])
        np.multiply(f_x[k_par], k_b, out=products[2 * k_par + 4])
        corr = irfft(products, length, axis=-1)
        search_duration(corr, minv, beta0, cum, sw, float(fwhm), limits, best, best_c, best_fit)
        trials += np.maximum(1.0, span / fwhm)
    found = np.isfinite(best)
    out["ese_delta_chi2"][sl] = np.where(found, best, np.where(measured, 0.0, np.nan))
    out["ese_trials"][sl] = np.where(measured, trials, np.nan)
    out["ese_mjd"][sl] = np.where(found, best_c, np.nan)
    out["ese_duration_days"][sl] = best_fit[:, k_par + 2]
    out["ese_depth"][sl] = best_fit[:, k_par]
    out["ese_shoulder"][sl] = best_fit[:, k_par + 1]
    best_coef[sl] = best_fit[:, :k_par]


def fit_at(t, flux, err, t0, fwhm, trend_degree=1, constrained=True):
    """Weighted least-squares fit of the null and the ESE model at a fixed (t0, fwhm).

    Returns a dict: null and ese (model values at t), chi2_null, chi2, depth and its
    error, shoulder, baseline at t0, and `predict(times)` -> (null, ese) curves.
    With `constrained` the shoulder is dropped when the free fit has c < 0 (as in the
    grid search); otherwise the linear fit is free (unbiased, Gaussian errors).
    """
    t, flux, err = (np.asarray(a, dtype=float) for a in (t, flux, err))
    centre, half = 0.5 * (t.min() + t.max()), max(0.5 * (t.max() - t.min()), 1.0)

    def design(times, with_shoulder):
        tau = (np.asarray(times, dtype=float) - centre) / half
        cols = [tau**p for p in range(trend_degree + 1)]
        dip, shoulder = lens_templates(times, t0, fwhm)
        return np.column_stack(cols), np.column_stack([dip, shoulder][: 1 + with_shoulder])

    w = 1.0 / err
    x_null, temp = design(t, True)
    null_coef = np.linalg.lstsq(x_null * w[:, None], flux * w, rcond=None)[0]

    def solve(with_shoulder):
        x = np.hstack([x_null, temp[:, : 1 + with_shoulder]])
        coef = np.linalg.lstsq(x * w[:, None], flux * w, rcond=None)[0]
        cov = np.linalg.pinv((x * w[:, None]).T @ (x * w[:, None]))
        return coef, cov

    coef, cov = solve(True)
    k = trend_degree + 1
    with_shoulder = True
    if constrained and coef[k + 1] < 0:
        coef, cov = solve(False)
        with_shoulder = False
    ese_coef = coef

    def predict(times):
        xn, tp = design(times, with_shoulder)
        return xn @ null_coef, np.hstack([xn, tp]) @ ese_coef

    null_model, model = predict(t)
    base0 = float(design([t0], False)[0][0] @ coef[:k])
    # a degenerate template (a dip between samples) has no finite error
    depth_err = np.sqrt(cov[k, k]) / abs(base0) if cov[k, k] > 0 else np.nan
    shoulder = float(coef[k + 1]) / base0 if with_shoulder else 0.0
    return {
        "null": null_model,
        "ese": model,
        "predict": predict,
        "chi2_null": float(np.sum(((flux - null_model) / err) ** 2)),
        "chi2": float(np.sum(((flux - model) / err) ** 2)),
        "depth": -float(coef[k]) / base0,
        "depth_err": float(depth_err),
        "shoulder": shoulder,
        "baseline_jy": base0,
    }


def _chi2_function(t, flux, w, trend_degree):
    """chi2(t0, fwhm) of the constrained ESE fit, with the null's sums precomputed."""
    tau = (t - 0.5 * (t[0] + t[-1])) / max(0.5 * (t[-1] - t[0]), 1.0)
    xn = np.vstack([tau**p for p in range(trend_degree + 1)])
    xnw = xn * w
    k = xn.shape[0]
    ata = np.zeros((k + 2, k + 2))
    ata[:k, :k] = xnw @ xn.T
    atb = np.zeros(k + 2)
    atb[:k] = xnw @ flux
    yy = float(np.sum(w * flux**2))

    def chi2(t0, fwhm):
        dip, shoulder = lens_templates(t, t0, fwhm)
        temp = np.vstack([dip, shoulder])
        tw = temp * w
        ata[:k, k:] = xnw @ temp.T
        ata[k:, :k] = ata[:k, k:].T
        ata[k:, k:] = tw @ temp.T
        atb[k:] = tw @ flux
        try:
            beta = np.linalg.solve(ata, atb)
            if beta[-1] < 0:
                beta = np.linalg.solve(ata[:-1, :-1], atb[:-1])
                return yy - float(atb[:-1] @ beta)
            return yy - float(atb @ beta)
        except np.linalg.LinAlgError:
            return np.inf

    return chi2


def refine(t, flux, err, t0, fwhm, trend_degree=1):
    """(t0, fwhm) refined off the search grid by minimising the ESE fit's chi^2.

    Uses the data within 4 durations (at least 10 days) of the dip, sorted in time.
    """
    from scipy.optimize import minimize

    t, flux, err = (np.asarray(a, dtype=float) for a in (t, flux, err))
    near = np.abs(t - t0) <= max(4.0 * fwhm, 10.0)
    order = np.argsort(t[near])
    t, flux, w = t[near][order], flux[near][order], 1.0 / err[near][order] ** 2
    if t.size < trend_degree + 4:
        return float(t0), float(fwhm)

    at = _chi2_function(t, flux, w, trend_degree)

    def chi2(p):
        return np.inf if p[1] <= 0.5 else at(p[0], p[1])

    start = chi2([t0, fwhm])
    res = minimize(
        chi2,
        [t0, fwhm],
        method="Nelder-Mead",
        options={"xatol": 0.02, "fatol": 0.01, "maxiter": 300},
    )
    if not np.isfinite(res.fun) or res.fun > start:
        return float(t0), float(fwhm)
    return float(res.x[0]), float(res.x[1])


def lambda2_slope(freqs_hz, depths, depth_errs):
    """Weighted straight line depth = a + s lambda^2: (s per m^2, its error)."""
    lam2 = (299792458.0 / np.asarray(freqs_hz, dtype=float)) ** 2
    d, e = np.asarray(depths, dtype=float), np.asarray(depth_errs, dtype=float)
    ok = np.isfinite(lam2) & np.isfinite(d) & np.isfinite(e) & (e > 0)
    if ok.sum() < 2:
        return np.nan, np.nan
    w = 1.0 / e[ok] ** 2
    x = lam2[ok] - np.sum(w * lam2[ok]) / np.sum(w)
    sxx = np.sum(w * x**2)
    return float(np.sum(w * x * d[ok]) / sxx), float(1.0 / np.sqrt(sxx))


def subband_depths(t, flux_sb, err_sb, t0, fwhm, trend_degree=1):
    """Depth and its error per sub-band (free linear fits at the wide-band t0, fwhm).

    Each error is scaled up (never down) by sqrt(chi^2 / dof) of that sub-band's fit.
    """
    depths, errs = [], []
    for k in range(flux_sb.shape[1]):
        f, e = flux_sb[:, k], err_sb[:, k]
        ok = np.isfinite(f) & np.isfinite(e) & (e > 0)
        if ok.sum() < trend_degree + 4:
            depths.append(np.nan)
            errs.append(np.nan)
            continue
        fit = fit_at(t[ok], f[ok], e[ok], t0, fwhm, trend_degree, constrained=False)
        dof = int(ok.sum()) - (trend_degree + 3)
        scale = max(1.0, np.sqrt(fit["chi2"] / dof)) if dof > 0 else np.nan
        depths.append(fit["depth"])
        errs.append(fit["depth_err"] * scale)
    return np.array(depths), np.array(errs)
