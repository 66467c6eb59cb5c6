"""Test-data generators for the light-curve stages: synthetic light curves and images.

Nothing here is used by the pipeline on real data. ``simulate_lightcurves`` makes the
time series that photometry would produce for constant sources with thermal noise
(flux-dependent SNR), a common per-epoch gain error, and injected ESE dips of chosen
depth and duration; ``make_test_image`` writes a restored FITS image of point sources
(Gaussian beam, Gaussian noise of a given rms, primary-beam attenuation) and its pb.fits,
for testing forced photometry against known fluxes. All randomness comes from `seed`.
"""

from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import atomic_output
from dsa110_contimg.primary_beam import airy_power, angular_separation
from dsa110_contimg.stats import FWHM_TO_SIGMA


def ese_profile(t, t0, fwhm, depth, shoulder=0.0):
    """Fractional flux of a Gaussian-lens ESE: 1 - depth*D + shoulder*B.

    D = exp(-x^2/2) is the central dip and B = (e/2) x^2 exp(-x^2/2) the brightened
    caustic shoulders (peak 1 at |x| = sqrt(2)), with x = (t - t0) / sigma and
    sigma = fwhm / 2.355. `fwhm` is the duration of the dip in the units of `t`.
    """
    x = (np.asarray(t, dtype=float) - t0) / (fwhm * FWHM_TO_SIGMA)
    g = np.exp(-0.5 * x**2)
    return 1.0 - depth * g + shoulder * 0.5 * np.e * x**2 * g


def simulate_lightcurves(
    n_sources=1000,
    n_epochs=200,
    seed=0,
    mjd0=60000.0,
    cadence_days=1.0,
    snr_range=(5.0, 1000.0),
    rms_jy=1e-3,
    rms_jitter=0.2,
    gain_error=0.0,
    n_ese=0,
    ese_depth=(0.3, 0.6),
    ese_fwhm_days=(5.0, 60.0),
    ese_shoulder=(0.0, 0.3),
    missing_fraction=0.0,
    outliers_per_source=0,
    outlier_sigma=10.0,
    outlier_sign="both",
    trend=(0.0, 0.0),
    n_box=0,
    box_epochs=3,
    box_depth=(0.3, 0.6),
    subband_freqs_hz=None,
    ese_chromatic=False,
    spectral_index=-0.7,
):
    """Simulated light curves as arrays: dict with mjd (M,), flux, flux_err (N, M), truth.

    Source fluxes are log-uniform so that the per-epoch SNR (flux / image rms) spans
    `snr_range`; the image rms varies per epoch by `rms_jitter` (lognormal). Every
    epoch has a common multiplicative gain 1 + N(0, gain_error), as a calibration error
    would give. The first `n_ese` sources get an ESE with depth, FWHM and shoulder drawn
    uniformly from the given ranges, centred well inside the time span. Missing
    measurements (random, `missing_fraction`) are NaN. `truth` is a DataFrame per
    source: source_id, true_flux_jy, ese (bool), ese_mjd, ese_fwhm_days, ese_depth,
    ese_shoulder.

    Things that are not ESEs, for testing the null models: `outliers_per_source`
    single-epoch outliers of `outlier_sigma` times the error ("low", "high" or "both":
    random sign) at random epochs of every source without an ESE; a linear trend whose
    total fractional change over the span is uniform in `trend` (random sign); and, for
    the `n_box` sources after the ESEs, a box-shaped dip of `box_epochs` consecutive
    epochs with depth uniform in `box_depth`.

    With `subband_freqs_hz` (K frequencies) every source is also measured in K
    sub-bands: flux_sb (N, M, K) and flux_err_sb, with the source's spectrum
    S (nu / nu_mean)^spectral_index and sub-band noise sqrt(K) times the wide-band
    noise; the wide-band flux is the sub-band mean. With `ese_chromatic` the ESE depth
    and shoulder scale as lambda^2 / lambda_mean^2 (a refractive plasma lens), else they
    are the same in every sub-band. truth gets ese_lambda2_slope, the true slope of
    depth against lambda^2 (per m^2).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    mjd = mjd0 + cadence_days * np.arange(n_epochs)
    rms_t = rms_jy * np.exp(rng.normal(0.0, rms_jitter, n_epochs))
    lo, hi = np.log(snr_range[0] * rms_jy), np.log(snr_range[1] * rms_jy)
    s_true = np.exp(rng.uniform(lo, hi, n_sources))
    gain = 1.0 + rng.normal(0.0, gain_error, n_epochs)
    shape = np.ones((n_sources, n_epochs))
    t0 = np.full(n_sources, np.nan)
    fwhm = np.full(n_sources, np.nan)
    depth = np.full(n_sources, np.nan)
    shoulder = np.full(n_sources, np.nan)
    span = mjd[-1] - mjd[0]
    for i in range(min(n_ese, n_sources)):
        fwhm[i] = rng.uniform(*ese_fwhm_days)
        depth[i] = rng.uniform(*ese_depth)
        shoulder[i] = rng.uniform(*ese_shoulder)
        margin = min(1.5 * fwhm[i], 0.4 * span)
        t0[i] = rng.uniform(mjd[0] + margin, mjd[-1] - margin)
        shape[i] = ese_profile(mjd, t0[i], fwhm[i], depth[i], shoulder[i])
    n_ese_done = min(n_ese, n_sources)
    for i in range(n_ese_done, min(n_ese_done + n_box, n_sources)):
        start = rng.integers(n_epochs // 4, 3 * n_epochs // 4)
        shape[i, start : start + box_epochs] *= 1.0 - rng.uniform(*box_depth)
    slope = np.zeros(n_sources)
    if np.any(trend):
        slope = rng.uniform(*trend, n_sources) * rng.choice([-1.0, 1.0], n_sources)
        shape *= 1.0 + slope[:, None] * ((mjd - mjd[0]) / max(span, 1.0) - 0.5)[None, :]
    err = np.broadcast_to(rms_t, (n_sources, n_epochs)).copy()
    mean_shape = s_true[:, None] * gain[None, :]
    out = {}
    if subband_freqs_hz is None:
        flux = mean_shape * shape + rng.normal(0.0, 1.0, err.shape) * err
        lambda2_slope = np.zeros(n_sources)
    else:
        nu = np.asarray(subband_freqs_hz, dtype=float)
        k = len(nu)
        lam2 = (299792458.0 / nu) ** 2
        ratio = lam2 / np.mean(lam2) if ese_chromatic else np.ones(k)
        lambda2_slope = np.where(np.isfinite(depth), depth, 0.0) * (
            1.0 / np.mean(lam2) if ese_chromatic else 0.0
        )
        x_t = [(mjd - t0[i]) / (fwhm[i] * FWHM_TO_SIGMA) for i in range(n_sources)]
        flux_sb = np.empty((n_sources, n_epochs, k))
        err_sb = np.broadcast_to(err[..., None] * np.sqrt(k), flux_sb.shape).copy()
        for j in range(k):
            shape_j = shape.copy()
            for i in np.flatnonzero(np.isfinite(t0)):
                g = np.exp(-0.5 * x_t[i] ** 2)
                lens = 1.0 - depth[i] * g + shoulder[i] * 0.5 * np.e * x_t[i] ** 2 * g
                lens_j = (
                    1.0
                    - ratio[j] * depth[i] * g
                    + ratio[j] * shoulder[i] * 0.5 * np.e * x_t[i] ** 2 * g
                )
                shape_j[i] = shape[i] / lens * lens_j
            spec = (nu[j] / nu.mean()) ** spectral_index
            flux_sb[..., j] = (
                mean_shape * spec * shape_j + rng.normal(0.0, 1.0, err.shape) * err_sb[..., j]
            )
        flux = flux_sb.mean(axis=2)
        out.update(flux_sb=flux_sb, flux_err_sb=err_sb, subband_freqs_hz=nu)
    for _ in range(outliers_per_source):
        plain = np.flatnonzero(~np.isfinite(t0))
        epoch = rng.integers(0, n_epochs, plain.size)
        sign = {"low": -1.0, "high": 1.0}.get(outlier_sign)
        sign = rng.choice([-1.0, 1.0], plain.size) if sign is None else sign
        flux[plain, epoch] += sign * outlier_sigma * err[plain, epoch]
    if missing_fraction > 0:
        miss = rng.random(flux.shape) < missing_fraction
        flux[miss] = np.nan
        err[miss] = np.nan
        if "flux_sb" in out:
            out["flux_sb"][miss] = np.nan
            out["flux_err_sb"][miss] = np.nan
    truth = pd.DataFrame(
        {
            "source_id": np.array([f"S{i:05d}" for i in range(n_sources)]),
            "true_flux_jy": s_true,
            "ese": np.isfinite(t0),
            "ese_mjd": t0,
            "ese_fwhm_days": fwhm,
            "ese_depth": depth,
            "ese_shoulder": shoulder,
            "ese_lambda2_slope": lambda2_slope,
            "trend": slope,
        }
    )
    out.update(mjd=mjd, flux=flux, flux_err=err, gain=gain, truth=truth)
    return out


def lightcurves_to_table(sim):
    """Long time-series table (photometry schema) from `simulate_lightcurves` output.

    Missing measurements are left out; image_id is a categorical epoch label. With
    sub-bands, the photometry's sub-band columns flux_sb<k>_jy, flux_err_sb<k>_jy and
    freq_sb<k>_hz are added.
    """
    import pandas as pd

    flux, err, mjd = sim["flux"], sim["flux_err"], sim["mjd"]
    n_src, n_ep = flux.shape
    src_idx, ep_idx = np.nonzero(np.isfinite(flux))
    ids = sim["truth"]["source_id"].to_numpy()
    labels = np.array([f"epoch{j:05d}" for j in range(n_ep)])
    f = flux[src_idx, ep_idx]
    e = err[src_idx, ep_idx]
    table = pd.DataFrame(
        {
            "source_id": pd.Categorical.from_codes(src_idx, categories=ids),
            "ra": np.zeros(len(f)),
            "dec": np.zeros(len(f)),
            "image_id": pd.Categorical.from_codes(ep_idx, categories=labels),
            "mjd": mjd[ep_idx],
            "flux_jy": f,
            "flux_err_jy": e,
            "local_rms_jy": e,
            "snr": f / e,
            "pb_response": np.ones(len(f)),
            "flags": np.zeros(len(f), dtype=np.int64),
        }
    )
    if "flux_sb" in sim:
        for k, nu in enumerate(sim["subband_freqs_hz"]):
            table[f"flux_sb{k}_jy"] = sim["flux_sb"][src_idx, ep_idx, k]
            table[f"flux_err_sb{k}_jy"] = sim["flux_err_sb"][src_idx, ep_idx, k]
            table[f"freq_sb{k}_hz"] = float(nu)
    return table


def grid_catalog(
    n_sources,
    centre_deg,
    radius_deg,
    spacing_deg,
    flux_range=(1e-3, 1.0),
    seed=0,
    spectral_index=-0.7,
):
    """Catalog (simulator CSV columns) of point sources on a jittered grid.

    Sources sit on a square grid of `spacing_deg` within `radius_deg` of the centre with
    10% jitter, so none are blended; fluxes are log-uniform in `flux_range`.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    ra0, dec0 = centre_deg
    n_side = int(2 * radius_deg / spacing_deg) + 1
    offs = (np.arange(n_side) - (n_side - 1) / 2) * spacing_deg
    east, north = np.meshgrid(offs, offs)
    east, north = east.ravel(), north.ravel()
    keep = np.hypot(east, north) <= radius_deg
    east, north = east[keep], north[keep]
    if len(east) < n_sources:
        raise ValueError(f"only {len(east)} grid positions for {n_sources} sources")
    pick = rng.choice(len(east), n_sources, replace=False)
    east = east[pick] + rng.uniform(-0.1, 0.1, n_sources) * spacing_deg
    north = north[pick] + rng.uniform(-0.1, 0.1, n_sources) * spacing_deg
    dec = dec0 + north
    ra = (ra0 + east / np.cos(np.deg2rad(dec))) % 360.0
    flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n_sources))
    return pd.DataFrame(
        {
            "source_id": [f"J{i:05d}" for i in range(n_sources)],
            "ra_deg": ra,
            "dec_deg": dec,
            "flux_jy": flux,
            "spectral_index": np.full(n_sources, spectral_index),
        }
    )


def _image_header(npix, cell_deg, centre_deg, freq_hz, date_obs, beam_deg=None):
    from astropy.io import fits

    h = fits.Header()
    h["NAXIS"] = 4
    h["CTYPE1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"], h["CUNIT1"] = (
        "RA---SIN",
        centre_deg[0],
        -cell_deg,
        npix / 2 + 1,
        "deg",
    )
    h["CTYPE2"], h["CRVAL2"], h["CDELT2"], h["CRPIX2"], h["CUNIT2"] = (
        "DEC--SIN",
        centre_deg[1],
        cell_deg,
        npix / 2 + 1,
        "deg",
    )
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = (
        "FREQ",
        freq_hz,
        187.5e6,
        1.0,
        "Hz",
    )
    h["CTYPE4"], h["CRVAL4"], h["CDELT4"], h["CRPIX4"] = ("STOKES", 1.0, 1.0, 1.0)
    h["RADESYS"] = "ICRS"
    h["EQUINOX"] = 2000.0
    h["DATE-OBS"] = date_obs
    h["MJD-OBS"] = _mjd(date_obs)
    h["TELESCOP"] = "DSA-110"
    h["ORIGIN"] = "dsa110_contimg.simulation.lightcurves (synthetic test image)"
    if beam_deg is not None:
        h["BMAJ"], h["BMIN"], h["BPA"] = beam_deg
        h["BUNIT"] = "Jy/beam"
    return h


def make_test_image(
    image_path,
    catalog,
    pb_path=None,
    npix=256,
    cell_arcsec=12.0,
    centre_deg=(150.0, 37.0),
    beam_arcsec=(60.0, 36.0, 30.0),
    rms_jy=1e-3,
    freq_hz=1.4e9,
    date_obs="2025-01-01T12:00:00",
    seed=0,
    correlated_noise=False,
    beam_keywords=True,
    subband_freqs_hz=None,
):
    """Write a synthetic restored image (and optionally its pb.fits); returns the pixel rms.

    Each catalog source (flux_jy, intrinsic) is attenuated by the Airy primary beam and
    drawn as the elliptical Gaussian beam (BMAJ x BMIN arcsec, BPA deg east of north),
    evaluated in sky offsets at every pixel, on top of Gaussian noise of rms `rms_jy`
    (independent per pixel, or with `correlated_noise` correlated over the beam the way
    a restored image's noise is). The image has degenerate FREQ and STOKES axes like a
    CASA export. With `subband_freqs_hz` (K equally spaced frequencies) it is a cube of K
    planes instead: each source has flux_jy (nu / freq_hz)^spectral_index (catalog
    column, 0 without it) and the primary beam of that frequency, and each plane its own
    noise of rms `rms_jy`; the pb.fits is that of `freq_hz`.
    """
    if subband_freqs_hz is not None:
        grid = {
            "npix": npix,
            "cell_arcsec": cell_arcsec,
            "centre_deg": centre_deg,
            "beam_arcsec": beam_arcsec,
            "rms_jy": rms_jy,
            "date_obs": date_obs,
        }
        freqs = np.asarray(subband_freqs_hz, dtype=float)
        return _make_test_cube(image_path, catalog, pb_path, freq_hz, seed, freqs, grid)
    from astropy.wcs import WCS
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    cell = cell_arcsec / 3600.0
    bmaj, bmin, bpa = beam_arcsec[0] / 3600.0, beam_arcsec[1] / 3600.0, beam_arcsec[2]
    header = _image_header(
        npix, cell, centre_deg, freq_hz, date_obs, (bmaj, bmin, bpa) if beam_keywords else None
    )
    wcs = WCS(header).celestial
    yy, xx = np.mgrid[0:npix, 0:npix]
    ra_pix, dec_pix = wcs.pixel_to_world_values(xx, yy)
    d2r = np.deg2rad
    pb = airy_power(
        angular_separation(d2r(ra_pix), d2r(dec_pix), d2r(centre_deg[0]), d2r(centre_deg[1])),
        freq_hz,
    )
    sig_maj, sig_min = bmaj * FWHM_TO_SIGMA, bmin * FWHM_TO_SIGMA
    pa = np.deg2rad(bpa)
    sky = np.zeros((npix, npix))
    half = int(np.ceil(6 * sig_maj / cell)) + 2
    xs, ys = wcs.world_to_pixel_values(
        catalog["ra_deg"].to_numpy(float), catalog["dec_deg"].to_numpy(float)
    )
    src_pb = airy_power(
        angular_separation(
            d2r(catalog["ra_deg"].to_numpy(float)),
            d2r(catalog["dec_deg"].to_numpy(float)),
            d2r(centre_deg[0]),
            d2r(centre_deg[1]),
        ),
        freq_hz,
    )
    for ra, dec, s, x, y, a in zip(
        catalog["ra_deg"], catalog["dec_deg"], catalog["flux_jy"], xs, ys, src_pb
    ):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        x0, x1 = max(0, int(x) - half), min(npix, int(x) + half + 1)
        y0, y1 = max(0, int(y) - half), min(npix, int(y) + half + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        dra = (ra_pix[y0:y1, x0:x1] - ra + 180.0) % 360.0 - 180.0
        east = dra * np.cos(d2r(dec))
        north = dec_pix[y0:y1, x0:x1] - dec
        along = east * np.sin(pa) + north * np.cos(pa)
        across = east * np.cos(pa) - north * np.sin(pa)
        sky[y0:y1, x0:x1] += (
            s * a * np.exp(-0.5 * ((along / sig_maj) ** 2 + (across / sig_min) ** 2))
        )
    if correlated_noise:
        # white noise smoothed by a Gaussian of half the beam covariance has the beam
        # as its autocorrelation
        pad = half
        white = rng.normal(0.0, 1.0, (npix + 2 * pad, npix + 2 * pad))
        k = _pixel_beam(sig_maj / cell / np.sqrt(2), sig_min / cell / np.sqrt(2), pa, half)
        noise = fftconvolve(white, k, mode="same")[pad:-pad, pad:-pad]
        noise *= rms_jy / np.sqrt(np.sum(k**2))
    else:
        noise = rng.normal(0.0, rms_jy, (npix, npix))
    image = (sky + noise)[None, None]
    _write_fits(image, header, image_path)
    if pb_path is not None:
        pb_header = header.copy()
        for key in ("BMAJ", "BMIN", "BPA", "BUNIT"):
            pb_header.remove(key, ignore_missing=True)
        _write_fits(pb[None, None], pb_header, pb_path)
    return float(np.std(noise))


def _make_test_cube(image_path, catalog, pb_path, freq_hz, seed, freqs, grid):
    """Cube of single-plane test images stacked along FREQ (see make_test_image); `grid`
    holds make_test_image's npix, cell_arcsec, centre_deg, beam_arcsec, rms_jy, date_obs."""
    import tempfile

    from astropy.io import fits

    alpha = (
        catalog["spectral_index"].to_numpy(float)
        if "spectral_index" in catalog
        else np.zeros(len(catalog))
    )
    planes, rms = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, nu in enumerate(freqs):
            cat = catalog.assign(
                flux_jy=catalog["flux_jy"].to_numpy(float) * (nu / freq_hz) ** alpha
            )
            plane = Path(tmp) / f"plane{k}.fits"
            rms.append(make_test_image(plane, cat, freq_hz=nu, seed=seed + 1000 * k, **grid))
            planes.append(fits.getdata(plane)[0, 0])
        if pb_path is not None:
            wide = Path(tmp) / "wide.fits"
            make_test_image(wide, catalog.iloc[:0], pb_path, freq_hz=freq_hz, seed=seed, **grid)
    bmaj, bmin, bpa = grid["beam_arcsec"]
    header = _image_header(
        grid["npix"],
        grid["cell_arcsec"] / 3600.0,
        grid["centre_deg"],
        freqs[0],
        grid["date_obs"],
        (bmaj / 3600.0, bmin / 3600.0, bpa),
    )
    header["CDELT3"] = float(freqs[1] - freqs[0]) if len(freqs) > 1 else 187.5e6
    _write_fits(np.stack(planes)[None], header, image_path)
    return float(np.mean(rms))


def _pixel_beam(sig_maj_pix, sig_min_pix, pa_rad, half):
    """Gaussian (peak 1) on a pixel grid with x = -east, y = north, PA east of north."""
    off = np.arange(-half, half + 1)
    y, x = np.meshgrid(off, off, indexing="ij")
    east, north = -x, y
    along = east * np.sin(pa_rad) + north * np.cos(pa_rad)
    across = east * np.cos(pa_rad) - north * np.sin(pa_rad)
    return np.exp(-0.5 * ((along / sig_maj_pix) ** 2 + (across / sig_min_pix) ** 2))


def _write_fits(data, header, path):
    from astropy.io import fits

    path = Path(path)
    with atomic_output(path) as tmp:
        fits.PrimaryHDU(data=data.astype(np.float32), header=header).writeto(tmp)


def _mjd(date_obs):
    from astropy.time import Time

    return float(Time(date_obs, scale="utc").mjd)
