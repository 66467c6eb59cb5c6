"""DSA-110 numbers: site, array, band, time sampling, dish (station positions: stations.py)."""

import numpy as np

SITE_LAT_DEG = 37.2339
SITE_LON_DEG = -118.2825
SITE_HEIGHT_M = 1222.0
TELESCOPE_NAME = "DSA-110"

N_ANTENNAS = 96
DISH_DIAMETER_M = 4.65

N_SUBBANDS = 16
CHANNELS_PER_SUBBAND = 48
CHANNEL_WIDTH_HZ = 244140.625
SUBBAND_WIDTH_HZ = CHANNELS_PER_SUBBAND * CHANNEL_WIDTH_HZ
# Upper edge of subband 00 (its first channel is centred at 1498.643188 MHz).
BAND_TOP_HZ = 1498.6431884765625e6 + CHANNEL_WIDTH_HZ / 2
REFERENCE_FREQ_HZ = 1.4e9

INTEGRATION_S = 12.884902
INTEGRATIONS_PER_GROUP = 24

SEFD_JY = 5800.0
SPEED_OF_LIGHT = 299792458.0


def site_location():
    """The OVRO site as an astropy EarthLocation."""
    from astropy import units as u
    from astropy.coordinates import EarthLocation

    return EarthLocation.from_geodetic(
        SITE_LON_DEG * u.deg, SITE_LAT_DEG * u.deg, SITE_HEIGHT_M * u.m
    )


def subband_frequencies(subband, n_channels=CHANNELS_PER_SUBBAND):
    """Channel centre frequencies (Hz) of subband `subband`, in the archive's order.

    As in the telescope's files, sb00 is the highest-frequency subband and channels
    run from high to low frequency within a file. The subband width is fixed, so fewer
    channels means wider ones.
    """
    width = SUBBAND_WIDTH_HZ / n_channels
    top = BAND_TOP_HZ - subband * SUBBAND_WIDTH_HZ
    return top - (np.arange(n_channels) + 0.5) * width


def channel_width(n_channels=CHANNELS_PER_SUBBAND):
    """Channel width (Hz) when a subband is split into `n_channels`."""
    return SUBBAND_WIDTH_HZ / n_channels


def thermal_noise_sigma(channel_width_hz, integration_s, sefd_jy=SEFD_JY):
    """Radiometer rms (Jy) of the real or imaginary part of one visibility."""
    return sefd_jy / np.sqrt(2.0 * channel_width_hz * integration_s)
