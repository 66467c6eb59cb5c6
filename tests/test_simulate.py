"""The simulator's visibilities follow pyuvdata's conventions: a direct Fourier
transform of a converted group finds the injected source at its true position and flux."""

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import HADec, SkyCoord
from astropy.time import Time
from casacore import tables

from dsa110_contimg import instrument as inst
from dsa110_contimg.beam import airy_power
from dsa110_contimg.convert import convert_group, meridian_phase_center
from dsa110_contimg.manifest import build_manifest, find_archive_files
from dsa110_contimg.simulate import SimulationSettings, group_start_times, simulate_archive

FLUX_JY = 5.0
ALPHA = -0.7
DEC0 = 33.0


def _read_ms(ms):
    with tables.table(str(ms), ack=False) as t:
        keep = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
        data = t.getcol("DATA")[keep]
        uvw = t.getcol("UVW")[keep]
        time_s = t.getcol("TIME")[keep]
    with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
        freqs = t.getcol("CHAN_FREQ")[0]
    with tables.table(f"{ms}/FIELD", ack=False) as t:
        ra0, dec0 = t.getcol("PHASE_DIR")[0, 0]
    stokes_i = 0.5 * (data[..., 0] + data[..., -1])
    return stokes_i, uvw, time_s, freqs, ra0, dec0


def _lmn(ra, dec, ra0, dec0):
    l = np.cos(dec) * np.sin(ra - ra0)
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
    return l, m, np.sqrt(1 - l**2 - m**2)


def _fringe(uvw, freqs, l, m, n):
    """exp(+2 pi i (u l + v m + w (n - 1)) / lambda): the response to a unit source."""
    tau = (uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * (n - 1)) / inst.SPEED_OF_LIGHT
    return np.exp(2j * np.pi * tau[:, None] * freqs[None, :])


@pytest.fixture(scope="module")
def one_source_ms(tmp_path_factory):
    """One bright source 0.4 deg east of the meridian and 0.3 deg north of the pointing
    at the group midpoint; no gains; thermal noise on."""
    tmp = tmp_path_factory.mktemp("onesource")
    settings = SimulationSettings(n_antennas=16, n_channels=2, n_integrations=12, n_groups=1,
                                  n_sources=0, dec_deg=DEC0, gains=False, noise=True, seed=5)
    start = group_start_times(settings)[0]
    mid = start + settings.group_duration_s / 2 * u.s
    ra_mid, dec_mid = meridian_phase_center(mid.jd, DEC0)
    ra = np.degrees(ra_mid) + 0.4 / np.cos(np.radians(DEC0))
    dec = np.degrees(dec_mid) + 0.3
    settings.extra_sources = [dict(source_id="BRIGHT", ra_deg=ra, dec_deg=dec,
                                   flux_jy=FLUX_JY, spectral_index=ALPHA)]
    simulate_archive(tmp / "archive", settings)
    groups, _ = build_manifest(find_archive_files(tmp / "archive"))
    ms = tmp / "group.ms"
    convert_group(list(groups.files[0]), ms, groups.group[0])
    return ms, ra, dec, settings


def test_dft_finds_source_at_true_position(one_source_ms):
    ms, ra, dec, _ = one_source_ms
    vis, uvw, _, freqs, ra0, dec0 = _read_ms(ms)
    l0, m0, _ = _lmn(np.radians(ra), np.radians(dec), ra0, dec0)
    uv_max = np.max(np.hypot(uvw[:, 0], uvw[:, 1])) * freqs.mean() / inst.SPEED_OF_LIGHT
    beam = 1.0 / uv_max
    offsets = np.linspace(-2 * beam, 2 * beam, 41)
    image = np.zeros((offsets.size, offsets.size))
    for i, dm in enumerate(offsets):
        for j, dl in enumerate(offsets):
            l, m = l0 + dl, m0 + dm
            image[i, j] = np.mean(vis * np.conj(_fringe(uvw, freqs, l, m, np.sqrt(1 - l * l - m * m)))).real
    i, j = np.unravel_index(np.argmax(image), image.shape)
    error = np.hypot(offsets[i], offsets[j])
    assert error < 0.2 * beam, f"peak {error / beam:.2f} beams from the true position"
    mirrored = np.mean(vis * _fringe(uvw, freqs, l0, m0, np.sqrt(1 - l0**2 - m0**2))).real
    assert image[i, j] > 10 * abs(mirrored)


def test_flux_per_integration_matches_truth(one_source_ms):
    ms, ra, dec, settings = one_source_ms
    vis, uvw, time_s, freqs, ra0, dec0 = _read_ms(ms)
    l, m, n = _lmn(np.radians(ra), np.radians(dec), ra0, dec0)
    aligned = vis * np.conj(_fringe(uvw, freqs, l, m, n))
    times = np.unique(time_s)
    measured = np.array([aligned[time_s == t].mean().real for t in times])
    obstime = Time(times / 86400.0, format="mjd", scale="utc")
    frame = HADec(obstime=obstime, location=inst.site_location())
    source = SkyCoord(ra * u.deg, dec * u.deg).transform_to(frame)
    pointing = SkyCoord(ha=np.zeros(times.size) * u.hourangle, dec=np.full(times.size, DEC0) * u.deg,
                        frame=frame)
    theta = source.separation(pointing).rad
    spectrum = FLUX_JY * (freqs / inst.REFERENCE_FREQ_HZ) ** ALPHA
    expected = np.mean(spectrum[None, :] * airy_power(theta[:, None], freqs[None, :]), axis=1)
    ratio = measured / expected
    assert np.all(np.abs(ratio - 1) < 0.02), ratio
    assert expected.min() < 0.9 * FLUX_JY, "the source should drift through the beam"


def test_ese_sources_follow_their_light_curve():
    import pandas as pd

    from dsa110_contimg.simulate import fluxes_at

    catalog = pd.DataFrame({"source_id": ["A", "B"], "ra_deg": [0.0, 1.0], "dec_deg": [33.0, 33.0],
                            "flux_jy": [1.0, 2.0], "spectral_index": [-0.7, -0.7],
                            "ese_mjd": [61050.0, np.nan], "ese_fwhm_days": [20.0, np.nan],
                            "ese_depth": [0.4, np.nan]})
    at_centre = fluxes_at(catalog, 61050.0)
    assert at_centre.flux_jy.tolist() == pytest.approx([0.6, 2.0])
    half_width = fluxes_at(catalog, 61060.0)
    assert half_width.flux_jy[0] == pytest.approx(1 - 0.4 * 0.5)
    assert catalog.flux_jy[0] == 1.0, "the input catalog is not modified"
