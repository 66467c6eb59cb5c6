"""Forced photometry at catalog positions on a restored FITS image.

At each catalog position a beam-shaped elliptical Gaussian kernel k (peak 1, fixed at the
catalog position, never re-centred) is fitted to the background-subtracted image d with
the local noise map n as weights:

    S = sum(d k / n^2) / sum(k^2 / n^2),    sigma_S = sqrt(1 / sum(k^2 / n^2)) * f

The image is in Jy/beam, so S is the flux density (Jy) of a point source. f = 1 for
pixel-independent noise (``error_model="white"``, the textbook formula). Noise in an
interferometric image is correlated over the beam, so the white formula underestimates
the error. ``error_model="beam"`` assumes the correlation R is the restoring beam:
f = sqrt(k.R.k / k.k) (~sqrt(4/3 * sum k^2)). The noise of a real image is correlated by
the dirty beam instead, whose core is narrower and whose sidelobes are negative, and the
beam model then overestimates the error (by ~1.2x on the pipeline's images, which pushes
the reduced chi-square of constant light curves to ~0.5). ``error_model="measured"``
(the pipeline's default) measures f on the image itself: the same kernel is fitted at
`noise_samples` random positions away from every catalog source, and f is the robust
standard deviation (1.4826 x MAD) of S / sigma_white there. The positions come from a
fixed seed, so the same image always gives the same f.

Background and rms maps come from photutils ``Background2D`` (sigma-clipped median
background, MAD-based rms) on boxes of ``box_size`` pixels.

With a primary-beam image on the same grid, sources where the beam response is below
``pb_cut`` are flagged and not measured; by default the flux and its error are divided by
the beam response (``pb_correct=True``), i.e. the input image is the apparent (flat-noise)
sky as tclean writes it. Use ``pb_correct=False`` for images already corrected.

Sub-bands: a cube image (FREQ axis of K > 1 planes), or K single-plane sub-band images
given beside the wide-band one, is also measured plane by plane into the columns
flux_sb<k>_jy, flux_err_sb<k>_jy and freq_sb<k>_hz (wide format: one row per source and
image as before), which the in-band ESE test uses.

Output: one Parquet table per image, one row per catalog source, never dropping a source:
sources off the image or below the primary-beam cut are rows with NaN flux and a flag.
Columns: source_id, ra, dec (deg), image_id, mjd, flux_jy, flux_err_jy, local_rms_jy (the
rms map at the source, apparent), snr (flux/error), pb_response (NaN without a beam
image), flags (bitmask below). Provenance (software version, inputs, beam, box size,
settings) is stored as JSON in the Parquet schema metadata under the key
``dsa110_contimg`` (see ``atomic.write_parquet``), not as a column.
"""

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.catalogs import read_sky_catalog
from dsa110_contimg.configuration import StageSettings
from dsa110_contimg.io import (
    beam_pixel_covariance,
    image_mjd,
    read_plane,
    read_subbands,
    read_table,
)
from dsa110_contimg.provenance import provenance
from dsa110_contimg.sanity import Product, check_photometry
from dsa110_contimg.stats import robust_rms

log = logging.getLogger(__name__)

ERROR_MODELS = ("measured", "beam", "white")
"""Noise models of the flux error (module docstring)."""

NOISE_SAMPLES = 2000
"""Random source-free positions at which the `measured` error model fits the kernel."""

MIN_NOISE_SAMPLES = 100
"""Fewer usable positions than this and the `measured` model falls back to `beam`."""

OFF_IMAGE = 1
"""Catalog position outside the image (or outside its valid WCS): not measured."""
BELOW_PB_CUT = 2
"""Primary-beam response below the cut: not measured."""
NEAR_EDGE = 4
"""Kernel footprint truncated by the image edge: measured on the part inside."""
NAN_PIXELS = 8
"""Blanked (NaN) pixels inside the kernel footprint: measured without them, or NaN
when the pixel at the source position itself is blanked."""

FLAG_NAMES = {
    OFF_IMAGE: "OFF_IMAGE",
    BELOW_PB_CUT: "BELOW_PB_CUT",
    NEAR_EDGE: "NEAR_EDGE",
    NAN_PIXELS: "NAN_PIXELS",
}


COLUMNS = [
    "source_id",
    "ra",
    "dec",
    "image_id",
    "mjd",
    "flux_jy",
    "flux_err_jy",
    "local_rms_jy",
    "snr",
    "pb_response",
    "flags",
]
CATALOG_COLUMNS = ["source_id", "ra_deg", "dec_deg"]
SUBBAND_COLUMN = re.compile(r"^(flux_sb|flux_err_sb|freq_sb)\d+_(jy|hz)$")
"""Per-sub-band columns: flux_sb<k>_jy, flux_err_sb<k>_jy, freq_sb<k>_hz (k = 0..K-1)."""


@dataclass
class PhotometrySettings(StageSettings):
    """Forced-photometry options (config section `photometry`; the reference_* keys are
    normalization's). box_size and filter_size (the background mesh, pixels and boxes)
    are not configured (command-line flags only)."""

    SECTION = "photometry"
    OTHER_KEYS = frozenset(
        {"reference_min_snr", "reference_max_size_arcsec", "reference_confusion_arcsec"}
    )
    CHOICES = {"error_model": ERROR_MODELS}
    KEYS = {"box_size": None, "filter_size": None}

    pb_cut: float = 0.2
    error_model: str = "measured"
    box_size: int = 64
    filter_size: int = 3


def describe_flags(flags):
    """Names of the bits set in a photometry flag value, e.g. 5 -> ['OFF_IMAGE', 'NEAR_EDGE']."""
    return [name for bit, name in FLAG_NAMES.items() if int(flags) & bit]


def background_maps(
    data,
    box_size=PhotometrySettings.box_size,
    filter_size=PhotometrySettings.filter_size,
    mask=None,
):
    """Background and rms maps (photutils Background2D, MAD-based rms).

    Blanked pixels are excluded and stay NaN in both maps; pixels where `mask` is True
    (e.g. known sources) are ignored in the estimate but get interpolated values.
    """
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MADStdBackgroundRMS, MedianBackground

    blank = ~np.isfinite(data)
    box = int(min(box_size, *data.shape))
    bkg = Background2D(
        np.where(blank, 0.0, data),
        box,
        filter_size=filter_size,
        mask=mask,
        coverage_mask=blank if blank.any() else None,
        fill_value=np.nan,
        sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
        bkg_estimator=MedianBackground(),
        bkg_rms_estimator=MADStdBackgroundRMS(),
        exclude_percentile=50.0,
    )
    return np.asarray(bkg.background, dtype=float), np.asarray(bkg.background_rms, dtype=float)


def forced_photometry(
    image_path,
    catalog,
    pb_path=None,
    pb_cut=PhotometrySettings.pb_cut,
    pb_correct=True,
    box_size=PhotometrySettings.box_size,
    filter_size=PhotometrySettings.filter_size,
    error_model=PhotometrySettings.error_model,
    image_id=None,
    mask_sources=True,
    subband_images=None,
):
    """Measure every catalog source on one image; returns (DataFrame, metadata dict).

    `catalog` is a DataFrame (or CSV path) with source_id, ra_deg, dec_deg. With
    `mask_sources` the background and rms are estimated a second time with the catalog
    sources (at their first-pass fluxes) masked, so that source wings do not bias the
    background upwards in crowded fields.

    Sub-bands: when the image is a cube whose FREQ axis has K > 1 planes, flux_jy is
    measured on the mean of the planes (the wide band) and every plane k is measured
    the same way into flux_sb<k>_jy, flux_err_sb<k>_jy, with its frequency in
    freq_sb<k>_hz (planes in the cube's order). `subband_images` (a list of single-plane
    FITS files on the image's grid, one per sub-band) does the same from separate files.
    Sub-band fluxes are divided by the same primary-beam response as the wide band.
    """
    import pandas as pd

    if error_model not in ERROR_MODELS:
        raise ValueError(f"error_model must be one of {ERROR_MODELS}, not {error_model!r}")
    image_path = Path(image_path)
    if not isinstance(catalog, pd.DataFrame):
        catalog = read_sky_catalog(catalog)
    planes, freqs, wcs, header = read_subbands(image_path)
    data = planes[0] if len(planes) == 1 else np.mean(planes, axis=0)
    if subband_images:
        if len(planes) > 1:
            raise ValueError(
                f"{image_path}: a cube and separate sub-band images were both given; use one"
            )
        planes, freqs = [], []
        for path in subband_images:
            plane, freq, _, _ = read_subbands(path)
            if len(plane) != 1 or plane[0].shape != data.shape:
                raise ValueError(
                    f"{path}: a sub-band image must be one plane of the shape "
                    f"{data.shape} of {image_path}"
                )
            planes.append(plane[0])
            freqs.append(freq[0])
    mjd = image_mjd(header, image_path)
    if image_id is None:
        image_id = image_path.parent.name if image_path.stem == "image" else image_path.stem

    ra = catalog["ra_deg"].to_numpy(float)
    dec = catalog["dec_deg"].to_numpy(float)
    pb_data = None
    if pb_path is not None:
        pb_data, _, _ = read_plane(pb_path)
        if pb_data.shape != data.shape:
            raise ValueError(
                f"{pb_path}: primary-beam shape {pb_data.shape} differs from image "
                f"{image_path} shape {data.shape}"
            )
    settings = dict(
        pb_cut=pb_cut,
        pb_correct=pb_correct,
        box_size=box_size,
        filter_size=filter_size,
        error_model=error_model,
        mask_sources=mask_sources,
        name=image_path,
    )
    wide = _measure(data, wcs, header, ra, dec, pb_data, **settings)
    table = pd.DataFrame(
        {
            "source_id": catalog["source_id"].to_numpy(),
            "ra": ra,
            "dec": dec,
            "image_id": str(image_id),
            "mjd": mjd,
            "flux_jy": wide["flux"],
            "flux_err_jy": wide["err"],
            "local_rms_jy": wide["local_rms"],
            "snr": wide["snr"],
            "pb_response": wide["pb_response"],
            "flags": wide["flags"],
        }
    )
    n_sub = len(planes) if (subband_images or len(planes) > 1) else 0
    for k in range(n_sub):
        sub = _measure(planes[k], wcs, header, ra, dec, pb_data, **settings)
        table[f"flux_sb{k}_jy"] = sub["flux"]
        table[f"flux_err_sb{k}_jy"] = sub["err"]
        table[f"freq_sb{k}_hz"] = float(freqs[k])
    meta = {
        "image": str(image_path),
        "pb": None if pb_path is None else str(pb_path),
        "beam_deg": [float(header["BMAJ"]), float(header["BMIN"]), float(header["BPA"])],
        "pb_cut": pb_cut,
        "pb_correct": bool(pb_correct and pb_path is not None),
        "box_size": box_size,
        "filter_size": filter_size,
        "error_model": error_model,
        "median_rms_jy": wide["median_rms"],
        "masked_fraction": wide["masked_fraction"],
        "noise_scale": wide["noise_scale"],
        "noise_samples": wide["noise_samples"],
        "flags": {name: bit for bit, name in FLAG_NAMES.items()},
        "subbands_hz": [float(f) for f in freqs[:n_sub]],
        "subband_images": [str(p) for p in subband_images or []],
    }
    return table, meta


def _measure(
    data,
    wcs,
    header,
    ra,
    dec,
    pb_data,
    pb_cut,
    pb_correct,
    box_size,
    filter_size,
    error_model,
    mask_sources,
    name,
):
    """Forced photometry of one 2-D plane at (ra, dec): dict of per-source arrays."""
    nsrc = len(ra)
    ny, nx = data.shape
    flags = np.zeros(nsrc, dtype=np.int64)
    x, y = wcs.world_to_pixel_values(ra, dec)
    x, y = np.asarray(x, float), np.asarray(y, float)
    off = ~(np.isfinite(x) & np.isfinite(y))
    off |= (x < -0.5) | (x > nx - 0.5) | (y < -0.5) | (y > ny - 0.5)
    flags[off] |= OFF_IMAGE

    pb_response = np.full(nsrc, np.nan)
    if pb_data is not None:
        from scipy.ndimage import map_coordinates

        inside = ~off
        pb_response[inside] = map_coordinates(
            pb_data, [y[inside], x[inside]], order=1, mode="nearest"
        )
        below = inside.copy()
        below[inside] = ~(pb_response[inside] >= pb_cut)
        flags[below] |= BELOW_PB_CUT

    flux = np.full(nsrc, np.nan)
    err = np.full(nsrc, np.nan)
    local_rms = np.full(nsrc, np.nan)
    todo = np.flatnonzero((flags & (OFF_IMAGE | BELOW_PB_CUT)) == 0)
    bkg, rms = background_maps(data, box_size=box_size, filter_size=filter_size)
    masked_fraction = 0.0
    noise_scale, noise_samples = None, 0
    fit_model = "white" if error_model == "measured" else error_model
    if todo.size:
        inv_cov = beam_pixel_covariance(header, wcs, ra[todo], dec[todo])
        s, e, r, f = _fit_kernels(data - bkg, rms, x[todo], y[todo], inv_cov, fit_model)
        mask = source_mask(data.shape, x[todo], y[todo], inv_cov, s, r)
        if mask_sources:
            masked_fraction = float(mask.mean())
            try:
                bkg, rms = background_maps(
                    data, box_size=box_size, filter_size=filter_size, mask=mask
                )
            except ValueError as err_bkg:
                log.warning(
                    "%s: background with sources masked failed (%s); using the unmasked estimate",
                    name,
                    err_bkg,
                )
            else:
                s, e, r, f = _fit_kernels(data - bkg, rms, x[todo], y[todo], inv_cov, fit_model)
        if error_model == "measured":
            noise_scale, noise_samples = measured_noise_scale(
                data - bkg, rms, mask, np.median(inv_cov, axis=0)
            )
            if noise_scale is None:
                log.warning(
                    "%s: only %d source-free positions to measure the noise on; "
                    "flux errors use the beam noise model instead",
                    name,
                    noise_samples,
                )
                s, e, r, f = _fit_kernels(data - bkg, rms, x[todo], y[todo], inv_cov, "beam")
            else:
                e = e * noise_scale
        flux[todo], err[todo], local_rms[todo] = s, e, r
        flags[todo] |= f
    if pb_data is not None and pb_correct:
        flux = flux / pb_response
        err = err / pb_response
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux / err
    return {
        "flux": flux,
        "err": err,
        "local_rms": local_rms,
        "snr": snr,
        "pb_response": pb_response,
        "flags": flags,
        "median_rms": float(np.nanmedian(rms)),
        "masked_fraction": masked_fraction,
        "noise_scale": noise_scale,
        "noise_samples": noise_samples,
    }


def measured_noise_scale(resid, rms, mask, inv_cov, n=NOISE_SAMPLES, seed=0, nsigma=3.0):
    """f = 1.4826 MAD(S / sigma_white) of the kernel fitted at random source-free positions.

    `resid` is the background-subtracted image, `mask` the pixels near catalog sources,
    `inv_cov` the beam's inverse pixel covariance (one 2x2). A position counts when the
    kernel's core (q <= nsigma^2) lies inside the image, on finite pixels, and touches no
    masked pixel. Returns (f, number of positions used); f is None below
    MIN_NOISE_SAMPLES positions.
    """
    ny, nx = resid.shape
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, nx - 0.5, n)
    y = rng.uniform(-0.5, ny - 0.5, n)
    a = np.broadcast_to(inv_cov, (n, 2, 2))
    cov = np.linalg.inv(inv_cov)
    half = int(np.ceil(nsigma * np.sqrt(max(cov[0, 0], cov[1, 1])))) + 1
    pxc, pyc, inside, q = _stamps(x, y, a, half, resid.shape)
    core = q <= nsigma**2
    clear = ~(core & (~inside | mask[pyc, pxc])).any(axis=(1, 2))
    s, e, _, flags = _fit_kernels(resid, rms, x[clear], y[clear], a[clear], "white", nsigma)
    z = (s / e)[(flags == 0) & np.isfinite(s / e)]
    if z.size < MIN_NOISE_SAMPLES:
        return None, int(z.size)
    return robust_rms(z), int(z.size)


def _fit_kernels(resid, rms, x, y, inv_cov, error_model, nsigma=3.0, chunk=2048):
    """Kernel-weighted flux for each position, vectorised over stamps of equal size.

    Returns flux, error, rms at the source, flags (NEAR_EDGE, NAN_PIXELS).
    """
    # stamp half-size: nsigma along the widest pixel direction of any beam
    cov = np.linalg.inv(inv_cov)
    half = int(np.ceil(nsigma * np.sqrt(np.max(cov[:, [0, 1], [0, 1]])))) + 1
    offs = np.arange(-half, half + 1)
    n = len(x)
    flux, err, lrms = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    flags = np.zeros(n, dtype=np.int64)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        a = inv_cov[sl]
        pxc, pyc, inside, q = _stamps(x[sl], y[sl], a, half, resid.shape)
        d = resid[pyc, pxc]
        noise = rms[pyc, pxc]
        k = np.exp(-0.5 * q)
        core = q <= nsigma**2
        usable = core & inside & np.isfinite(d) & np.isfinite(noise) & (noise > 0)
        edge = (core & ~inside).any(axis=(1, 2))
        nan = (core & inside & ~(np.isfinite(d) & np.isfinite(noise))).any(axis=(1, 2))
        w = np.where(usable, 1.0 / np.where(usable, noise, 1.0) ** 2, 0.0)
        kw = k * w
        skk = np.sum(kw * k, axis=(1, 2))
        sdk = np.sum(kw * np.where(usable, d, 0.0), axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            s = sdk / skk
            e = np.sqrt(1.0 / skk)
        if error_model == "beam":
            e = e * _beam_correlation_factor(k * usable, a, offs)
        centre_ok = usable[:, half, half]
        s[~centre_ok] = np.nan
        e[~centre_ok] = np.nan
        flux[sl], err[sl] = s, e
        at_source = rms[pyc[:, half, half], pxc[:, half, half]]
        lrms[sl] = np.where(inside[:, half, half], at_source, np.nan)
        flags[sl] = np.where(edge, NEAR_EDGE, 0) | np.where(nan, NAN_PIXELS, 0)
    return flux, err, lrms, flags


def _stamps(x, y, inv_cov, half, shape):
    """Pixel indices (clipped), in-image mask and beam q = r^T C^-1 r of square stamps.

    Stamps of (2 half + 1)^2 pixels are centred on the pixel nearest each (x, y); q is
    the squared beam-normalised distance of each pixel from the exact position.
    """
    ny, nx = shape
    offs = np.arange(-half, half + 1)
    cx = np.round(x).astype(int)
    cy = np.round(y).astype(int)
    px, py = np.broadcast_arrays(
        cx[:, None, None] + offs[None, None, :], cy[:, None, None] + offs[None, :, None]
    )
    inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    dx = px - x[:, None, None]
    dy = py - y[:, None, None]
    q = (
        inv_cov[:, 0, 0, None, None] * dx**2
        + 2 * inv_cov[:, 0, 1, None, None] * dx * dy
        + inv_cov[:, 1, 1, None, None] * dy**2
    )
    return np.clip(px, 0, nx - 1), np.clip(py, 0, ny - 1), inside, q


def source_mask(shape, x, y, inv_cov, flux, local_rms, level=0.1, chunk=2048):
    """Pixels where a catalog source's beam exceeds `level` x the local rms.

    `flux` is the first-pass peak (Jy/beam) of each source; sources with non-finite or
    non-positive flux mask nothing.
    """
    mask = np.zeros(shape, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        q_lim = 2.0 * np.log(flux / (level * local_rms))
    q_lim = np.clip(np.nan_to_num(q_lim, nan=0.0, neginf=0.0, posinf=0.0), 0.0, 50.0)
    use = np.flatnonzero(q_lim > 0)
    if use.size == 0:
        return mask
    cov = np.linalg.inv(inv_cov[use])
    widest = np.sqrt(np.max(cov[:, [0, 1], [0, 1]], axis=1))
    half = int(np.ceil(np.max(np.sqrt(q_lim[use]) * widest))) + 1
    for start in range(0, use.size, chunk):
        idx = use[start : start + chunk]
        pxc, pyc, inside, q = _stamps(x[idx], y[idx], inv_cov[idx], half, shape)
        hit = inside & (q <= q_lim[idx, None, None])
        mask[pyc[hit], pxc[hit]] = True
    return mask


def _beam_correlation_factor(k, inv_cov, offs):
    """sqrt(k.R.k / k.k) for noise whose correlation R is the beam shape.

    R(dx, dy) = exp(-q/2) with q from the beam's inverse pixel covariance; k.R.k is k
    correlated with R evaluated at zero lag, computed by FFT per stamp.
    """
    from scipy.signal import fftconvolve

    lag = np.arange(-2 * offs[-1], 2 * offs[-1] + 1)
    lx = lag[None, None, :]
    ly = lag[None, :, None]
    q = (
        inv_cov[:, 0, 0, None, None] * lx**2
        + 2 * inv_cov[:, 0, 1, None, None] * lx * ly
        + inv_cov[:, 1, 1, None, None] * ly**2
    )
    corr = np.exp(-0.5 * q)
    rk = fftconvolve(k, corr, mode="same", axes=(1, 2))
    krk = np.sum(k * rk, axis=(1, 2))
    kk = np.sum(k * k, axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(krk / kk)


def run_photometry(
    image_path, catalog_path, out_path, pb_path=None, pb_cut=PhotometrySettings.pb_cut, **kwargs
):
    """Forced photometry of one image, checked (sanity.check_photometry: a finite flux and
    error for every catalog source in view) and written atomically to `out_path` (Parquet)."""
    import pandas as pd

    catalog = (
        catalog_path if isinstance(catalog_path, pd.DataFrame) else read_sky_catalog(catalog_path)
    )
    table, meta = forced_photometry(image_path, catalog, pb_path=pb_path, pb_cut=pb_cut, **kwargs)
    inputs = [image_path, catalog_path] + ([pb_path] if pb_path else [])
    in_view = (table["flags"].to_numpy() & (OFF_IMAGE | BELOW_PB_CUT | NAN_PIXELS)) == 0
    name = kwargs.get("image_id") or Path(out_path).stem
    check_photometry(
        table, len(catalog), in_view, Product(Path(out_path), "photometry", name, str(image_path))
    )
    write_parquet(table, out_path, metadata=provenance(inputs, config=meta, photometry=meta))
    n_meas = int(np.isfinite(table["flux_jy"]).sum())
    log.info(
        "%s: measured %d of %d catalog sources (error model %s, noise scale %s) -> %s",
        image_path,
        n_meas,
        len(table),
        meta["error_model"],
        "n/a" if meta["noise_scale"] is None else f"{meta['noise_scale']:.2f}",
        out_path,
    )
    return table


def gather_timeseries(parquet_paths, out, *report_lists):
    """Concatenate per-image photometry tables into one time series (sorted by source, mjd).

    `report_lists` (each parallel to `parquet_paths`, e.g. the images' QA and their
    groups' flagging QA) leave out the images whose QA failed (qa_records.passed_products),
    each named in the log and the provenance (`left_out`).

    Sub-band columns (flux_sb<k>_jy, flux_err_sb<k>_jy, freq_sb<k>_hz) are kept; rows
    from images without them get NaN there.

    A (source_id, image_id) pair measured twice is an error, naming the files.
    """
    import pandas as pd

    from dsa110_contimg.qa_records import describe_failures, passed_products

    n_given = len(parquet_paths)
    parquet_paths, left_out = passed_products(list(parquet_paths), *report_lists)
    for path, records in left_out.items():
        log.warning("%s: left out %s, failed QA: %s", out, path, describe_failures(records))
    if n_given and not parquet_paths:
        log.warning("%s: no image passed QA: the time series is empty", out)
    parquet_paths = [Path(p) for p in parquet_paths]
    frames = []
    origin = []
    for path in parquet_paths:
        df = read_table(path, COLUMNS)
        subbands = [c for c in df.columns if SUBBAND_COLUMN.match(c)]
        frames.append(df[COLUMNS + subbands])
        origin.append(np.full(len(df), len(origin)))
    if frames:
        table = pd.concat(frames, ignore_index=True)
        src = np.concatenate(origin)
    else:
        table = pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
        table["flags"] = table["flags"].astype(np.int64)
        src = np.zeros(0, dtype=int)
    dup = table.duplicated(["source_id", "image_id"], keep=False).to_numpy()
    if dup.any():
        files = sorted({str(parquet_paths[i]) for i in src[dup]})
        raise ValueError(
            f"{out}: {int(dup.sum())} rows measure the same (source_id, image_id) twice, "
            f"in {files[:5]}"
        )
    table = table.sort_values(["source_id", "mjd"], kind="stable").reset_index(drop=True)
    meta = provenance(
        parquet_paths, n_images=len(parquet_paths), left_out=sorted(map(str, left_out))
    )
    write_parquet(table, out, metadata=meta)
    log.info("%s: time series from %d of %d images", out, len(parquet_paths), n_given)
    return table


def register_cli(subparsers):
    """Add the `photometry` and `gather` subcommands."""
    p = subparsers.add_parser("photometry", help="forced photometry of one FITS image")
    p.add_argument("image", help="Stokes I FITS image with BMAJ/BMIN/BPA")
    p.add_argument("--catalog", required=True, help="CSV: source_id, ra_deg, dec_deg, ...")
    p.add_argument("--out", required=True, help="output Parquet")
    p.add_argument("--pb", help="primary-beam FITS on the same grid")
    p.add_argument(
        "--no-pb-correct",
        action="store_true",
        help="image is already primary-beam corrected: do not divide by pb",
    )
    p.add_argument("--image-id", help="identifier stored per row (default from the path)")
    p.add_argument(
        "--subband-images",
        nargs="+",
        help="single-plane FITS images of the sub-bands, measured into "
        "flux_sb<k>_jy (a cube image is split into sub-bands by itself)",
    )
    PhotometrySettings.add_arguments(p)
    p.set_defaults(func=_cli_photometry)

    g = subparsers.add_parser("gather", help="concatenate per-image photometry into a time series")
    g.add_argument("parquets", nargs="+", help="per-image photometry Parquet files")
    g.add_argument("--out", required=True, help="timeseries.parquet")
    g.set_defaults(func=_cli_gather)


def _cli_photometry(args):
    table = run_photometry(
        args.image,
        args.catalog,
        args.out,
        pb_path=args.pb,
        pb_correct=not args.no_pb_correct,
        image_id=args.image_id,
        **asdict(PhotometrySettings.from_args(args)),
        subband_images=args.subband_images,
    )
    counts = {
        name: int((table["flags"] & bit).astype(bool).sum()) for bit, name in FLAG_NAMES.items()
    }
    print(json.dumps({"rows": len(table), "flagged": counts}))


def _cli_gather(args):
    table = gather_timeseries(args.parquets, args.out)
    print(json.dumps({"rows": len(table), "sources": int(table["source_id"].nunique())}))
