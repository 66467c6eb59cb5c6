"""The group's primary-beam image: the drift-scan pointing track (meridian at the pointing
declination, one pointing per integration) and the Airy power averaged over it on the
image's pixel grid (pb.fits)."""

import numpy as np

from dsa110_contimg import instrument as inst
from dsa110_contimg.primary_beam import airy_power


def pointing_of_phase_center(ra_rad, dec_rad, mjd):
    """(hour angle, declination) in deg of an ICRS direction seen from the site at `mjd`.

    convert.py phases each group to the meridian at the pointing declination at the group
    midpoint, so at the midpoint this gives (~0, pointing declination)."""
    from dsa110_contimg.astrometry import hadec_deg

    ha, dec = hadec_deg(np.degrees(ra_rad), np.degrees(dec_rad), mjd)
    return float(ha), float(dec)


def pointing_track(times_mjd, dec_deg):
    """ICRS (ra, dec) in rad of the drift-scan pointing (meridian, `dec_deg`) at each time."""
    from dsa110_contimg.astrometry import meridian_phase_center

    jd = np.asarray(times_mjd, float) + 2400000.5
    return meridian_phase_center(jd, dec_deg)


def _unit_vectors(ra, dec):
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def primary_beam(wcs, shape, pointing_ra, pointing_dec, freq_hz, step=4):
    """Mean Airy power response on the (ny, nx) pixel grid of celestial `wcs` over the
    pointings (rad); pixels without valid sky coordinates get 0.

    The Airy power is a function of x = pi D sin(theta) f / c alone, with
    sin(theta) = sqrt(1 - (p . s)^2) for unit vectors p (pointing) and s (pixel): it is
    tabulated once on a fine grid of x (step 1e-3). The mean beam varies on degree
    scales, so it is computed every `step` pixels and interpolated bilinearly (error
    ~1e-5 at 9 arcsec pixels)."""
    ny, nx = shape
    step = max(1, int(step))
    ys = np.arange((ny - 1) // step + 2) * step
    xs = np.arange((nx - 1) // step + 2) * step
    coarse, valid = _mean_beam(wcs, ys, xs, pointing_ra, pointing_dec, freq_hz)
    pb = _upsample(_upsample(coarse, nx, step, axis=1), ny, step, axis=0)
    if valid.all():
        return pb
    inside = _upsample(_upsample(valid.astype(float), nx, step, axis=1), ny, step, axis=0)
    return np.where(inside > 1.0 - 1e-9, pb, 0.0)


def _upsample(a, n, step, axis):
    """Linear interpolation of `a`, sampled every `step` pixels along `axis`, onto 0..n-1."""
    i = np.arange(n)
    j, t = i // step, (i % step) / step
    lo, hi = np.take(a, j, axis=axis), np.take(a, j + 1, axis=axis)
    shape = [1, 1]
    shape[axis] = n
    t = t.reshape(shape)
    return lo * (1.0 - t) + hi * t


def _mean_beam(wcs, ys, xs, pointing_ra, pointing_dec, freq_hz):
    """Mean Airy power over the pointings at pixel rows `ys` x columns `xs`, and the
    mask of pixels with valid sky coordinates."""
    pointings = _unit_vectors(np.asarray(pointing_ra), np.asarray(pointing_dec))
    scale = np.pi * inst.DISH_DIAMETER_M * freq_hz / inst.SPEED_OF_LIGHT
    x_table = np.arange(0.0, scale + 2e-3, 1e-3)
    a_table = airy_power(np.arcsin(np.clip(x_table / scale, 0.0, 1.0)), freq_hz)
    px, py = np.meshgrid(xs, ys)
    ra, dec = wcs.pixel_to_world_values(px, py)
    valid = np.isfinite(ra) & np.isfinite(dec)
    vec = _unit_vectors(np.radians(np.where(valid, ra, 0.0)), np.radians(np.where(valid, dec, 0.0)))
    acc = np.zeros(px.shape)
    for p in pointings:
        cos_theta = vec @ p
        acc += np.interp(
            scale * np.sqrt(np.clip(1.0 - cos_theta * cos_theta, 0.0, 1.0)), x_table, a_table
        )
    return np.where(valid, acc / len(pointings), 0.0), valid
