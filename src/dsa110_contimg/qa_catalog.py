"""Catalog comparison of an image or mosaic: does it show the catalog's sky at the right
flux and position?

At catalog positions where the comparison is valid, a beam-shaped Gaussian with free
peak and position is fitted to each source predicted above ``detect_snr`` (catalog flux
scaled to the image frequency with its spectral index, times the primary beam, over the
noise). ``n_detected``: fitted peak >= detect_snr x noise within one beam of the catalog
position; ``detected_fraction``: detected / predicted above 2 x detect_snr;
``flux_ratio``: median of (fitted peak / primary beam) / catalog flux over bright sources
(predicted >= bright_snr); ``position_offset_beam``: their median offset in units of the
beam's geometric-mean FWHM.
"""

import numpy as np

from dsa110_contimg.catalogs import DEFAULT_SPECTRAL_INDEX
from dsa110_contimg.io import image_frequency

REFERENCE_FREQ_HZ = 1.4e9


def catalog_flux(catalog, freq_hz):
    """Catalog flux densities (Jy) scaled from 1.4 GHz to `freq_hz` with each source's
    spectral index (-0.7 when the catalog has none)."""
    alpha = (
        catalog["spectral_index"].to_numpy(float)
        if "spectral_index" in catalog
        else np.full(len(catalog), DEFAULT_SPECTRAL_INDEX)
    )
    alpha = np.where(np.isfinite(alpha), alpha, DEFAULT_SPECTRAL_INDEX)
    return catalog["flux_jy"].to_numpy(float) * (freq_hz / REFERENCE_FREQ_HZ) ** alpha


def fit_point_sources(data, wcs, header, ra_deg, dec_deg, search_beams=1.0):
    """Fit a Gaussian of the restoring beam's shape (free peak, position, offset) around
    each position. Returns (peak, ra, dec) arrays; nan where the fit fails or the stamp
    leaves the image. The stamp spans +-1 FWHM about the brightest pixel within
    `search_beams` FWHM of the given position."""
    from scipy.optimize import least_squares

    from dsa110_contimg.io import beam_pixel_covariance

    ra_deg, dec_deg = np.atleast_1d(ra_deg).astype(float), np.atleast_1d(dec_deg).astype(float)
    n = ra_deg.size
    peak, ra_fit, dec_fit = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    if n == 0:
        return peak, ra_fit, dec_fit
    inv_cov = beam_pixel_covariance(header, wcs, ra_deg, dec_deg)
    x0, y0 = wcs.world_to_pixel_values(ra_deg, dec_deg)
    ny, nx = data.shape
    for i in range(n):
        a = inv_cov[i]
        cov = np.linalg.inv(a)
        fwhm_pix = 2.3548 * np.sqrt(np.max(np.diag(cov)))
        half = int(np.ceil(fwhm_pix))
        search = int(np.ceil(search_beams * fwhm_pix))
        cx, cy = int(np.round(x0[i])), int(np.round(y0[i]))
        if not (search <= cx < nx - search and search <= cy < ny - search):
            continue
        box = data[cy - search : cy + search + 1, cx - search : cx + search + 1]
        if not np.isfinite(box).all():
            continue
        by, bx = np.unravel_index(np.argmax(box), box.shape)
        px, py = cx - search + bx, cy - search + by
        if not (half <= px < nx - half and half <= py < ny - half):
            continue
        yy, xx = np.mgrid[py - half : py + half + 1, px - half : px + half + 1]
        stamp = data[py - half : py + half + 1, px - half : px + half + 1]

        def residual(p, xx=xx, yy=yy, a=a, stamp=stamp):
            dx, dy = xx - p[1], yy - p[2]
            q = a[0, 0] * dx * dx + 2 * a[0, 1] * dx * dy + a[1, 1] * dy * dy
            return (p[0] * np.exp(-0.5 * q) + p[3] - stamp).ravel()

        start = [float(data[py, px]), float(px), float(py), 0.0]
        fit = least_squares(residual, start, method="lm")
        amp, fx, fy = fit.x[:3]
        if not fit.success or abs(fx - px) > half or abs(fy - py) > half:
            continue
        peak[i] = amp
        ra_fit[i], dec_fit[i] = wcs.pixel_to_world_values(fx, fy)
    return peak, ra_fit, dec_fit


def _sep_arcsec(ra1, dec1, ra2, dec2):
    from dsa110_contimg.primary_beam import angular_separation

    return (
        np.degrees(
            angular_separation(np.radians(ra1), np.radians(dec1), np.radians(ra2), np.radians(dec2))
        )
        * 3600.0
    )


def catalog_comparison(
    data, wcs, header, catalog, noise, gain=None, valid=None, detect_snr=5.0, bright_snr=30.0
):
    """Compare an image with a catalog (see module docstring).

    `noise` is the rms of `data` (scalar, or a map on its grid); `gain` the primary-beam
    map by which catalog fluxes are attenuated in `data` (None: already corrected);
    `valid` a boolean map of where to compare. Returns (per-source DataFrame, metrics)."""
    import pandas as pd
    from scipy.ndimage import map_coordinates

    freq = image_frequency(header)
    ny, nx = data.shape
    x, y = wcs.world_to_pixel_values(
        catalog["ra_deg"].to_numpy(float), catalog["dec_deg"].to_numpy(float)
    )
    x, y = np.asarray(x, float), np.asarray(y, float)
    inside = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)

    def sample(m, default):
        out = np.full(x.size, default, dtype=float)
        if m is None:
            return out
        if np.ndim(m) == 0:
            out[inside] = float(m)
            return out
        out[inside] = map_coordinates(
            np.asarray(m, float), [y[inside], x[inside]], order=1, mode="nearest"
        )
        return out

    pb = sample(gain, 1.0)
    sig = sample(noise, np.nan)
    ok = inside & np.isfinite(sig) & (sig > 0)
    if valid is not None:
        ok &= sample(valid.astype(float), 0.0) > 0.5
    true_flux = catalog_flux(catalog, freq)
    predicted_snr = np.where(ok, true_flux * pb / np.where(ok, sig, 1.0), 0.0)
    todo = np.flatnonzero(predicted_snr >= detect_snr)
    peak = np.full(x.size, np.nan)
    ra_fit, dec_fit = np.full(x.size, np.nan), np.full(x.size, np.nan)
    if todo.size:
        peak[todo], ra_fit[todo], dec_fit[todo] = fit_point_sources(
            data,
            wcs,
            header,
            catalog["ra_deg"].to_numpy(float)[todo],
            catalog["dec_deg"].to_numpy(float)[todo],
        )
    beam_arcsec = 3600.0 * np.sqrt(float(header["BMAJ"]) * float(header["BMIN"]))
    offset = _sep_arcsec(
        catalog["ra_deg"].to_numpy(float), catalog["dec_deg"].to_numpy(float), ra_fit, dec_fit
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = peak / pb / true_flux
        detected = (peak >= detect_snr * sig) & (offset <= beam_arcsec)
    table = pd.DataFrame(
        {
            "source_id": catalog["source_id"].astype(str).to_numpy(),
            "ra_deg": catalog["ra_deg"].to_numpy(float),
            "dec_deg": catalog["dec_deg"].to_numpy(float),
            "catalog_flux_jy": true_flux,
            "pb": pb,
            "predicted_snr": predicted_snr,
            "fitted_peak_jy": peak,
            "flux_ratio": ratio,
            "offset_arcsec": offset,
            "offset_beam": offset / beam_arcsec,
            "detected": detected,
        }
    )
    expected = predicted_snr >= 2 * detect_snr
    bright = predicted_snr >= bright_snr
    bright_ratio = np.where(bright & np.isfinite(ratio), ratio, np.nan)
    bright_offset = np.where(bright & detected, offset / beam_arcsec, np.nan)
    metrics = {
        "catalog_in_view": int(ok.sum()),
        "n_predicted": int(expected.sum()),
        "n_detected": int(detected.sum()),
        "detected_fraction": (float(detected[expected].mean()) if expected.any() else None),
        "n_bright": int(bright.sum()),
        "flux_ratio": _nanmedian(bright_ratio) if bright.any() else None,
        "position_offset_arcsec": (
            _nanmedian(bright_offset) * beam_arcsec if np.isfinite(bright_offset).any() else None
        ),
        "position_offset_beam": (
            _nanmedian(bright_offset) if np.isfinite(bright_offset).any() else None
        ),
    }
    if bright.any():
        # a bright source that could not be fitted at all counts as lost flux
        filled = np.where(bright, np.nan_to_num(bright_ratio, nan=0.0), np.nan)
        metrics["flux_ratio"] = _nanmedian(filled)
        metrics["flux_ratio_error"] = abs(metrics["flux_ratio"] - 1.0)
    else:
        metrics["flux_ratio_error"] = None
    return table, metrics


def _nanmedian(values):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None
