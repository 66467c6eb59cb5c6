"""Gaussian conversion factors and the robust noise estimate every stage shares.

- FWHM_TO_SIGMA: a Gaussian's sigma = FWHM / (2 sqrt(2 ln 2)).
- MAD_TO_SIGMA: for Gaussian noise sigma = 1.4826 x MAD, the median absolute deviation
  about the median (1.4826 ~ 1 / Phi^-1(3/4)).
"""

import numpy as np

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
MAD_TO_SIGMA = 1.4826


def robust_rms(values):
    """MAD_TO_SIGMA x the median absolute deviation of the finite values (nan when none):
    the rms of the Gaussian part, insensitive to a few sources or outliers."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(v - np.median(v))))
