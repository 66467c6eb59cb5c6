"""DSA-110 numbers (DESIGN.md section 2): site, array, band, time sampling, dish."""

import numpy as np

SITE_LAT_DEG = 37.2339
SITE_LON_DEG = -118.2825
SITE_HEIGHT_M = 1222.0
TELESCOPE_NAME = "DSA-110"

N_ANTENNAS = 96
DISH_DIAMETER_M = 4.65
EW_ARM_M = 1200.0
NS_ARM_M = 450.0

N_SUBBANDS = 16
CHANNELS_PER_SUBBAND = 48
CHANNEL_WIDTH_HZ = 244140.625
SUBBAND_WIDTH_HZ = CHANNELS_PER_SUBBAND * CHANNEL_WIDTH_HZ
BAND_TOP_HZ = 1498.75e6
REFERENCE_FREQ_HZ = 1.4e9

INTEGRATION_S = 12.885
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


def antenna_layout(n_antennas=N_ANTENNAS, seed=0):
    """East-north-up antenna positions (m) of a T-shaped array.

    Roughly 60% of the dishes lie on the long east-west arm and the rest on the shorter
    north-south arm, with a few metres of jitter so no two baselines are redundant.
    """
    rng = np.random.default_rng(seed)
    n_ew = max(2, int(round(0.6 * n_antennas)))
    n_ns = n_antennas - n_ew
    east = np.linspace(-EW_ARM_M / 2, EW_ARM_M / 2, n_ew)
    enu = [np.column_stack([east, np.zeros(n_ew), np.zeros(n_ew)])]
    if n_ns:
        north = np.linspace(NS_ARM_M / n_ns, NS_ARM_M, n_ns)
        enu.append(np.column_stack([np.zeros(n_ns), north, np.zeros(n_ns)]))
    enu = np.vstack(enu)
    enu[:, :2] += rng.normal(0.0, 3.0, size=(n_antennas, 2))
    enu[:, 2] += rng.normal(0.0, 0.3, size=n_antennas)
    return enu


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
