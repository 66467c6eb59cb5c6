"""Primary beam of a DSA-110 dish: the Airy pattern of a uniformly lit 4.65 m aperture."""

import numpy as np
from scipy.special import j1

from dsa110_contimg.instrument import DISH_DIAMETER_M, SPEED_OF_LIGHT


def airy_power(theta_rad, freq_hz, diameter_m=DISH_DIAMETER_M):
    """Power response (1 on axis) at angle `theta_rad` from the pointing centre.

    A(theta) = [2 J1(x) / x]^2 with x = pi D sin(theta) / lambda; its FWHM is
    1.029 lambda / D (~2.7 deg at 1.4 GHz for D = 4.65 m). Arrays broadcast.
    """
    theta = np.asarray(theta_rad, dtype=float)
    freq = np.asarray(freq_hz, dtype=float)
    x = np.pi * diameter_m * np.sin(theta) * freq / SPEED_OF_LIGHT
    small = np.abs(x) < 1e-8
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0, (2.0 * j1(safe) / safe) ** 2)


def fwhm_rad(freq_hz, diameter_m=DISH_DIAMETER_M):
    """Full width at half power of the Airy beam (rad)."""
    return 1.029 * SPEED_OF_LIGHT / (np.asarray(freq_hz, dtype=float) * diameter_m)


def angular_separation(ra1, dec1, ra2, dec2):
    """Great-circle separation (rad) between directions given in radians (Vincenty)."""
    dra = ra2 - ra1
    num = np.hypot(
        np.cos(dec2) * np.sin(dra),
        np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra),
    )
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.arctan2(num, den)


def beam_tracks(times_mjd, ra_deg, dec_deg, pointing_dec_deg, freqs_hz):
    """Airy power [n_source, n_time, n_chan] toward each source at each integration, the
    dish at hour angle 0 and apparent declination `pointing_dec_deg` (the drift scan),
    with one coordinate transformation for all sources and times."""
    from dsa110_contimg.astrometry import hadec_deg

    n_src, n_time = len(ra_deg), len(times_mjd)
    if n_src == 0:
        return np.zeros((0, n_time, len(freqs_hz)))
    ha, dec = hadec_deg(
        np.repeat(ra_deg, n_time), np.repeat(dec_deg, n_time), np.tile(times_mjd, n_src)
    )
    theta = angular_separation(
        0.0, np.radians(pointing_dec_deg), np.radians(-ha), np.radians(dec)
    ).reshape(n_src, n_time)
    return airy_power(theta[:, :, None], np.asarray(freqs_hz)[None, None, :])
