"""Bright sources drifting through the fixed primary beam: fit them in the visibilities,
subtract them before imaging, restore them afterwards.

Why: the DSA-110 dishes stay at one hour angle and declination while the sky drifts
~1.3 deg (a good part of the 2.7 deg FWHM) through the beam in a 5-minute group, so
the apparent flux of a source off the meridian changes by up to 2x during the group. A
deconvolution that assumes a constant sky (tclean, WSClean) cannot represent such a
source: its visibilities are S(f) A(t, f) exp(2 pi i f tau / c), not a constant S'
exp(...), and the unmodelled part leaves sidelobes of a few % of its apparent flux,
many times the thermal noise around every bright source. Per-integration beam handling
inside the imager (A-projection with a time-variable beam) would fix it too but neither
imager here offers it for an Airy dish, and it costs a full gridding per beam change.
What is done instead, per group:

1. Select the sky-catalog sources whose apparent flux (catalog flux x Airy power, highest
   over the group's integrations at the band centre) is >= `min_snr` x the image's
   thermal noise, the brightest `max_sources` of them, within `radius_deg` of the pointing.
2. Template of source k for row r (baseline, time t) and channel f, with the MS's UVW and
   the direction cosines (l, m, n) of the catalog position about the phase centre in
   the frame of those UVW (`direction_cosines`):
   T_k = (f / 1.4 GHz)^alpha_k A_k(t, f) exp(+2 pi i f (u l + v m + w (n - 1)) / c),
   A_k(t, f) the Airy power toward the source for integration t (the calibrator field
   model's primary_beam.beam_tracks, for all sources at once).
   Optionally a second template T_k ln(f / 1.4 GHz) lets the spectral index move.
3. Fit the fluxes jointly by weighted linear least squares on Stokes I
   (V_I = (w_XX V_XX + w_YY V_YY) / (w_XX + w_YY), weight w_XX + w_YY from
   WEIGHT_SPECTRUM, flagged samples and autocorrelations weight 0):
   S = G^-1 b, G_kj = sum w Re(T_k* T_j), b_k = sum w Re(T_k* V_I).
   This MEASURES the sources (a variable source such as one in an extreme scattering
   event keeps its real flux); the catalog only gives positions and spectral shapes.
   Uncertainties: cov(S) = G^-1 s^2, s^2 the weighted residual variance per component.
4. Write CORRECTED_DATA - sum S_k T_k (both parallel hands) into a separate column,
   always recomputed from CORRECTED_DATA so a rerun never subtracts twice; the imager
   then sees a sky without the drifting sources and cleans the rest to the noise.
5. Restore each fitted source into the restored image as a restoring-beam Gaussian of
   peak S_k(f_image) x pb, pb the drift-averaged beam of pb.fits at its position, so
   image / pb gives the fitted flux there, like for every other source.

Cost: per sample and source one complex multiply-add: the phase of evenly spaced
channels follows a recurrence within blocks of <= 8 MHz (numba kernels, parallel over
rows); the normal matrix G is summed per block with the block's mean weight and beam
and the exact sum of the phase differences, so it costs K^2 per block, not per sample.
"""

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dsa110_contimg import instrument as inst
from dsa110_contimg.catalogs import DEFAULT_SPECTRAL_INDEX
from dsa110_contimg.primary_beam import airy_power, angular_separation, beam_tracks

log = logging.getLogger(__name__)

BLOCK_WIDTH_HZ = 8.0e6
TABLE_COLUMNS = [
    "source_id",
    "ra_deg",
    "dec_deg",
    "catalog_flux_jy",
    "spectral_index",
    "apparent_peak_jy",
    "fitted_flux_jy",
    "fitted_flux_err_jy",
    "fitted_spectral_index",
    "pb",
    "image_freq_hz",
    "restored_peak_jy",
    "in_image",
]


@dataclass
class DriftSettings:
    """Drift subtraction options (config `image`, keys drift_*)."""

    enabled: bool = True
    min_snr: float = 20.0
    max_sources: int = 40
    radius_deg: float = 6.0
    fit_spectral_index: bool = False
    column: str = "DRIFT_SUBTRACTED"
    sample_budget: int = 4_000_000


def select_sources(
    catalog, pointing_ra, pointing_dec, freq_hz, min_apparent_jy, max_sources, radius_deg
):
    """Catalog sources whose highest apparent flux over the pointings (rad, one per
    integration) reaches `min_apparent_jy`, brightest first, at most `max_sources`."""
    cat = catalog.reset_index(drop=True)
    if cat.empty:
        return cat.assign(apparent_peak_jy=[])
    ra, dec = np.radians(cat.ra_deg.to_numpy(float)), np.radians(cat.dec_deg.to_numpy(float))
    theta = angular_separation(
        np.asarray(pointing_ra)[:, None],
        np.asarray(pointing_dec)[:, None],
        ra[None, :],
        dec[None, :],
    )
    apparent = cat.flux_jy.to_numpy(float) * airy_power(theta, freq_hz).max(axis=0)
    near = theta.min(axis=0) <= np.radians(radius_deg)
    keep = near & (apparent >= min_apparent_jy)
    out = cat[keep].assign(apparent_peak_jy=apparent[keep])
    return (
        out.sort_values("apparent_peak_jy", ascending=False)
        .head(max_sources)
        .reset_index(drop=True)
    )


def direction_cosines(times_mjd, phase_center, ra, dec):
    """(l, m, n - 1) [n_time] of each ICRS direction (rad) about the ICRS phase centre
    (rad), in the frame of the MS's UVW at each integration.

    pyuvdata phases to the apparent (topocentric, aberrated) position of the phase
    centre and turns u, v by the position angle between apparent and ICRS north; the
    offsets are therefore taken between apparent positions and turned by the same
    angle. (Plain ICRS offsets miss the differential aberration, ~0.5 arcsec at 1.5 deg,
    which leaves ~2% of a source in the data; with these a noise-free simulated group is
    modelled to 1e-5, against 1e-3 with astropy's CIRS positions and position angle.)"""
    from astropy.time import Time
    from pyuvdata.utils.phasing import calc_app_coords, calc_frame_pos_angle

    from dsa110_contimg.astrometry import lst_deg

    times = Time(np.asarray(times_mjd, float), format="mjd", scale="utc")
    jd = times.jd
    lst = np.radians(lst_deg(times))
    loc = inst.site_location()

    def apparent(r, d):
        return calc_app_coords(
            lon_coord=np.full(jd.size, r),
            lat_coord=np.full(jd.size, d),
            coord_frame="icrs",
            coord_epoch=2000.0,
            time_array=jd,
            lst_array=lst,
            telescope_loc=loc,
        )

    ra0, dec0 = apparent(*phase_center)
    pa = calc_frame_pos_angle(
        time_array=jd, app_ra=ra0, app_dec=dec0, telescope_loc=loc, ref_frame="icrs"
    )
    cos_pa, sin_pa = np.cos(pa), np.sin(pa)
    out = []
    for r, d in zip(np.atleast_1d(ra), np.atleast_1d(dec)):
        ra_s, dec_s = apparent(r, d)
        l_app = np.cos(dec_s) * np.sin(ra_s - ra0)
        m_app = np.sin(dec_s) * np.cos(dec0) - np.cos(dec_s) * np.sin(dec0) * np.cos(ra_s - ra0)
        n1 = np.sin(dec_s) * np.sin(dec0) + np.cos(dec_s) * np.cos(dec0) * np.cos(ra_s - ra0) - 1.0
        out.append((l_app * cos_pa - m_app * sin_pa, l_app * sin_pa + m_app * cos_pa, n1))
    return out


class DriftModel:
    """Templates of point sources seen through the per-integration beam of one MS."""

    def __init__(self, ms, sources, pointing_dec_deg, fit_spectral_index=False):
        from casacore import tables

        from dsa110_contimg.calibration.skymodel import chan_freqs, unique_times
        from dsa110_contimg.calibrators import calibrator_spectrum

        self.ms = str(ms)
        self.freqs = np.asarray(chan_freqs(ms), float)
        times, self.tidx = unique_times(ms)
        with tables.table(f"{ms}/FIELD", ack=False) as t:
            ra0, dec0 = t.getcol("PHASE_DIR")[0, 0]
        alpha = (
            sources.spectral_index.to_numpy(float)
            if "spectral_index" in sources
            else np.full(len(sources), DEFAULT_SPECTRAL_INDEX)
        )
        self.alpha = np.where(np.isfinite(alpha), alpha, DEFAULT_SPECTRAL_INDEX)
        self.lmn = []
        self.amplitude = []
        beams = beam_tracks(
            times / 86400.0,
            sources.ra_deg.to_numpy(float),
            sources.dec_deg.to_numpy(float),
            pointing_dec_deg,
            self.freqs,
        )
        offsets = direction_cosines(
            times / 86400.0,
            (ra0, dec0),
            np.radians(sources.ra_deg.to_numpy(float)),
            np.radians(sources.dec_deg.to_numpy(float)),
        )
        for a, beam, lmn in zip(self.alpha, beams, offsets):
            self.lmn.append(lmn)
            spectrum = calibrator_spectrum(self.freqs, 1.0, a)
            self.amplitude.append((spectrum[None, :] * beam).astype(np.float32))
        self.fit_spectral_index = fit_spectral_index
        self.n_sources = len(self.lmn)
        self.n_terms = self.n_sources * (2 if fit_spectral_index else 1)
        n_time = times.size
        self.lmn_array = np.zeros((self.n_sources, n_time, 3))
        for k, lmn in enumerate(self.lmn):
            self.lmn_array[k] = np.stack(lmn, axis=-1)
        self.term_source = np.tile(
            np.arange(self.n_sources), self.n_terms // max(self.n_sources, 1)
        )
        amps = list(self.amplitude)
        if fit_spectral_index:
            log_freq = np.log(self.freqs / inst.REFERENCE_FREQ_HZ).astype(np.float32)
            amps += [a * log_freq[None, :] for a in self.amplitude]
        self.term_amplitude = (
            np.stack(amps) if amps else np.zeros((0, n_time, self.freqs.size), np.float32)
        )
        self.block = _block_size(self.freqs)


def _block_size(freqs):
    """Channels per block (phase recurrence; mean beam and weight in G): the most that
    divide the band and span <= BLOCK_WIDTH_HZ (the beam changes by < 1% there) for
    evenly spaced ascending channels (the MS's order), else 1."""
    n = freqs.size
    if n < 2:
        return 1
    step = np.diff(freqs)
    if not (step[0] > 0 and np.allclose(step, step[0], rtol=1e-9, atol=1e-3)):
        return 1
    fits = [b for b in range(1, n + 1) if n % b == 0 and b * step[0] <= BLOCK_WIDTH_HZ]
    return max(fits) if fits else 1


def _parallel_hands(ms):
    from casacore import tables

    with tables.table(f"{ms}/POLARIZATION", ack=False) as t:
        corr = list(np.ravel(t.getcol("CORR_TYPE")[0]))
    hands = [i for i, c in enumerate(corr) if c in (5, 8, 9, 12)]  # RR LL XX YY
    if not hands:
        raise ValueError(f"{ms}: no parallel-hand correlations (CORR_TYPE {corr})")
    return hands


def _stokes_i(data, flag, weight, cross, hands):
    """Weighted Stokes I visibility and weight [nrow, nchan] from the parallel hands."""
    w = np.where(flag[:, :, hands], 0.0, weight[:, :, hands]).astype(np.float32)
    w[~cross] = 0.0
    wsum = w.sum(axis=2)
    vis = (w * data[:, :, hands]).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        vis = np.where(wsum > 0, vis / wsum, 0.0).astype(np.complex64)
    return vis, wsum


def _read_rows(t, column, start, n):
    data = t.getcol(column, start, n)
    flag = t.getcol("FLAG", start, n)
    if "WEIGHT_SPECTRUM" in t.colnames():
        weight = t.getcol("WEIGHT_SPECTRUM", start, n)
    else:
        weight = np.broadcast_to(t.getcol("WEIGHT", start, n)[:, None, :], flag.shape)
    cross = t.getcol("ANTENNA1", start, n) != t.getcol("ANTENNA2", start, n)
    return t.getcol("UVW", start, n), data, flag, weight, cross


def _chunk_rows(model, budget):
    return max(64, int(budget // max(1, model.freqs.size)))


def _kernels():
    """The numba kernels (module drift_kernels; imported on first use, since importing
    numba costs ~1 s that imaging without drift subtraction need not pay)."""
    from dsa110_contimg.imaging.drift_kernels import fit_rows, predict_rows

    return fit_rows, predict_rows


def fit_fluxes(ms, model, column="CORRECTED_DATA", budget=DriftSettings.sample_budget):
    """Joint weighted least-squares fit of the template amplitudes to Stokes I.

    b is summed exactly over the samples; G per block of channels with the block's mean
    weight and beam (the beam changes by < 1% across a block, and G only weighs the
    sources against each other). Returns (coefficients [n_terms], G, b, sum w |V|^2,
    number of weighted samples); coefficient k < n_sources is the flux at 1.4 GHz (Jy)."""
    from casacore import tables

    hands = _parallel_hands(ms)
    K = model.n_terms
    gram = np.zeros((K, K))
    rhs = np.zeros(K)
    power = 0.0
    n_samples = 0
    fit_rows, _ = _kernels()
    with tables.table(str(ms), ack=False) as t:
        nrow = t.nrows()
        step = _chunk_rows(model, budget)
        for start in range(0, nrow, step):
            n = min(step, nrow - start)
            uvw, data, flag, weight, cross = _read_rows(t, column, start, n)
            vis, w = _stokes_i(data, flag, weight, cross, hands)
            power += float(np.sum(w * (vis.real.astype(np.float64) ** 2 + vis.imag**2)))
            n_samples += int(np.count_nonzero(w))
            if K == 0:
                continue
            b_rows = np.zeros((n, K))
            g_rows = np.zeros((n, K, K))
            fit_rows(
                uvw,
                model.tidx[start : start + n],
                vis,
                w,
                model.lmn_array,
                model.term_source,
                model.term_amplitude,
                model.freqs,
                model.block,
                b_rows,
                g_rows,
            )
            rhs += b_rows.sum(axis=0)
            gram += g_rows.sum(axis=0)
    if K == 0:
        return np.zeros(0), gram, rhs, power, n_samples
    gram = np.triu(gram) + np.triu(gram, 1).T
    coef = np.linalg.solve(gram, rhs)
    return coef, gram, rhs, power, n_samples


def subtract_model(
    ms,
    model,
    coef,
    in_column="CORRECTED_DATA",
    out_ms=None,
    out_column="DRIFT_SUBTRACTED",
    budget=DriftSettings.sample_budget,
):
    """Write `in_column` of `ms` minus sum_k coef_k T_k (parallel hands) into `out_column`
    of `out_ms` (default `ms`; same rows), creating the column like `in_column`.
    Returns the weighted residual sum of squares of Stokes I."""
    from casacore import tables

    hands = _parallel_hands(ms)
    out_ms = str(out_ms or ms)
    same = out_ms == str(ms)
    _ensure_column(out_ms, in_column, out_column)
    _, predict_rows = _kernels()
    chi2 = 0.0
    with tables.table(str(ms), ack=False, readonly=not same) as t_in:
        t_out = t_in if same else tables.table(out_ms, ack=False, readonly=False)
        try:
            if t_out.nrows() != t_in.nrows():
                raise ValueError(f"{out_ms}: {t_out.nrows()} rows, {ms} has {t_in.nrows()}")
            nrow = t_in.nrows()
            step = _chunk_rows(model, budget)
            for start in range(0, nrow, step):
                n = min(step, nrow - start)
                uvw, data, flag, weight, cross = _read_rows(t_in, in_column, start, n)
                if model.n_terms:
                    pred = np.zeros((n, model.freqs.size), np.complex128)
                    predict_rows(
                        uvw,
                        model.tidx[start : start + n],
                        model.lmn_array,
                        model.term_source,
                        model.term_amplitude,
                        np.asarray(coef, float),
                        model.freqs,
                        model.block,
                        pred,
                    )
                    pred[~cross] = 0.0
                    for h in hands:
                        data[:, :, h] -= pred.astype(np.complex64)
                vis, w = _stokes_i(data, flag, weight, cross, hands)
                chi2 += float(np.sum(w * (vis.real.astype(np.float64) ** 2 + vis.imag**2)))
                t_out.putcol(out_column, data, start, n)
        finally:
            if not same:
                t_out.close()
    return chi2


def _ensure_column(ms, like, name):
    """Add column `name` shaped and stored like `like` when the MS lacks it."""
    from casacore import tables

    with tables.table(str(ms), ack=False, readonly=False) as t:
        if name in t.colnames():
            return
        desc = t.getcoldesc(like)
        desc.pop("comment", None)
        dminfo = t.getdminfo(like)
        dminfo["NAME"] = f"Tiled_{name}"
        spec = dminfo.get("SPEC", {})
        spec.pop("HYPERCUBES", None)
        t.addcols(tables.maketabdesc(tables.makecoldesc(name, desc)), dminfo)


def fit_and_subtract(
    ms,
    sources,
    pointing_dec_deg,
    settings=None,
    in_column="CORRECTED_DATA",
    out_ms=None,
    out_column=None,
):
    """Fit `sources` (catalog rows) in `ms` and write the subtracted visibilities.

    Returns the sources table with fitted_flux_jy, fitted_flux_err_jy,
    fitted_spectral_index and a facts dict (chi^2 per degree of freedom before and after
    subtraction, number of samples, seconds)."""
    import time

    settings = settings or DriftSettings()
    t0 = time.perf_counter()
    out_column = out_column or settings.column
    model = DriftModel(ms, sources, pointing_dec_deg, settings.fit_spectral_index)
    coef, gram, rhs, power, n_samples = fit_fluxes(ms, model, in_column, settings.sample_budget)
    chi2 = subtract_model(ms, model, coef, in_column, out_ms, out_column, settings.sample_budget)
    dof = max(2 * n_samples - model.n_terms, 1)
    unit_var = chi2 / dof
    table = sources.reset_index(drop=True).copy()
    k = model.n_sources
    if k:
        cov = np.linalg.inv(gram) * unit_var
        flux = coef[:k]
        err = np.sqrt(np.clip(np.diag(cov)[:k], 0.0, None))
        if settings.fit_spectral_index:
            with np.errstate(invalid="ignore", divide="ignore"):
                fitted_alpha = model.alpha + coef[k:] / flux
        else:
            fitted_alpha = np.full(k, np.nan)
    else:
        flux = err = fitted_alpha = np.zeros(0)
    table["catalog_flux_jy"] = table["flux_jy"] if "flux_jy" in table else np.nan
    table["spectral_index"] = model.alpha
    table["fitted_flux_jy"] = flux
    table["fitted_flux_err_jy"] = err
    table["fitted_spectral_index"] = fitted_alpha
    facts = {
        "n_sources": k,
        "n_samples": n_samples,
        "n_terms": model.n_terms,
        "unit_variance_before": power / max(2 * n_samples, 1),
        "unit_variance_after": unit_var,
        "seconds": time.perf_counter() - t0,
    }
    log.info(
        "%s: fitted %d drifting sources in %.1f s; weighted variance per sample "
        "%.4g before, %.4g after subtraction",
        ms,
        k,
        facts["seconds"],
        facts["unit_variance_before"],
        unit_var,
    )
    return table, facts


def restore_sources(image, header, wcs, pb, table, freq_hz, n_sigma=6.0):
    """Add each fitted source to `image` (2-D, Jy/beam) as a restoring-beam Gaussian of
    peak S(freq_hz) x pb at its catalog position; returns the table with pb,
    image_freq_hz, restored_peak_jy and in_image filled."""
    from scipy.ndimage import map_coordinates

    from dsa110_contimg.io import beam_pixel_covariance

    table = table.copy()
    ny, nx = image.shape
    n = len(table)
    table["pb"] = np.nan
    table["image_freq_hz"] = float(freq_hz)
    table["restored_peak_jy"] = 0.0
    table["in_image"] = False
    if n == 0:
        return table
    ra, dec = table.ra_deg.to_numpy(float), table.dec_deg.to_numpy(float)
    x, y = (np.asarray(v, float) for v in wcs.world_to_pixel_values(ra, dec))
    inside = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    alpha = np.where(
        np.isfinite(table.fitted_spectral_index), table.fitted_spectral_index, table.spectral_index
    )
    flux = table.fitted_flux_jy.to_numpy(float) * (freq_hz / inst.REFERENCE_FREQ_HZ) ** alpha
    pb_at = np.full(n, np.nan)
    pb_at[inside] = map_coordinates(
        np.asarray(pb, float), [y[inside], x[inside]], order=1, mode="nearest"
    )
    inv_cov = beam_pixel_covariance(header, wcs, ra[inside], dec[inside])
    for a, i in zip(inv_cov, np.flatnonzero(inside)):
        peak = flux[i] * pb_at[i]
        half = int(np.ceil(n_sigma * np.sqrt(np.max(np.diag(np.linalg.inv(a))))))
        x0, x1 = max(0, int(x[i]) - half), min(nx, int(x[i]) + half + 2)
        y0, y1 = max(0, int(y[i]) - half), min(ny, int(y[i]) + half + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dx, dy = xx - x[i], yy - y[i]
        q = a[0, 0] * dx * dx + 2 * a[0, 1] * dx * dy + a[1, 1] * dy * dy
        image[y0:y1, x0:x1] += (peak * np.exp(-0.5 * q)).astype(image.dtype)
        table.loc[i, "restored_peak_jy"] = peak
    table["pb"] = pb_at
    table["in_image"] = inside
    return table


def empty_table():
    """A drift-source table with no rows (no catalog, or subtraction switched off)."""
    return pd.DataFrame(
        {
            c: pd.Series(
                dtype=("bool" if c == "in_image" else "object" if c == "source_id" else "float64")
            )
            for c in TABLE_COLUMNS
        }
    )
