"""The simulator writes the telescope's raw layout, and its visibilities mean what the
telescope's do: converted to an MS, a direct Fourier transform finds every injected
source at its true position and beam-attenuated flux (Dec +54.57, real station positions
with outriggers, the correlator's mixed baseline conjugation)."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import HADec, SkyCoord
from astropy.time import Time
from casacore import tables

from dsa110_contimg import instrument as inst
from dsa110_contimg.astrometry import meridian_phase_center
from dsa110_contimg.ingest.convert import convert_group
from dsa110_contimg.ingest.manifest import build_manifest, find_archive_files
from dsa110_contimg.primary_beam import airy_power
from dsa110_contimg.simulation.visibilities import (
    POINTING_DEC_DEG,
    SimulationSettings,
    group_start_times,
    simulate_archive,
)

from pipeline import REPO

CHECK_LAYOUT = Path("/work/shared/dsa110/check_layout.py")
ALPHA = -0.7
# (name, east offset deg, north offset deg, flux Jy) from the meridian at the group midpoint
SOURCES = [("SRC_C", 0.4, 0.3, 5.0), ("SRC_N", -0.2, 1.0, 3.0), ("SRC_E", 1.1, -0.4, 4.0)]


def _read_ms(ms):
    with tables.table(str(ms), ack=False) as t:
        keep = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
        data = t.getcol("DATA")[keep]
        uvw = t.getcol("UVW")[keep]
        time_s = t.getcol("TIME")[keep]
        flag = t.getcol("FLAG")[keep]
    with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
        freqs = t.getcol("CHAN_FREQ")[0]
    with tables.table(f"{ms}/FIELD", ack=False) as t:
        ra0, dec0 = t.getcol("PHASE_DIR")[0, 0]
    assert not flag.any()
    stokes_i = 0.5 * (data[..., 0] + data[..., -1])
    return stokes_i, uvw, time_s, freqs, ra0, dec0


def _lmn(ra, dec, ra0, dec0):
    l = np.cos(dec) * np.sin(ra - ra0)
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
    return l, m, np.sqrt(1 - l**2 - m**2)


def _fringe(uvw, freqs, l, m):
    """exp(+2 pi i (u l + v m + w (n - 1)) / lambda): the MS response to a unit source."""
    n = np.sqrt(1 - l * l - m * m)
    tau = (uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * (n - 1)) / inst.SPEED_OF_LIGHT
    return np.exp(2j * np.pi * tau[:, None] * freqs[None, :])


def _expected_apparent(ra, dec, flux, times_s, freqs, dec0_deg):
    """Beam-attenuated flux (Jy) per integration and channel, from astropy's HADec."""
    obstime = Time(times_s / 86400.0, format="mjd", scale="utc")
    frame = HADec(obstime=obstime, location=inst.site_location())
    source = SkyCoord(ra * u.deg, dec * u.deg).transform_to(frame)
    pointing = SkyCoord(
        ha=np.zeros(times_s.size) * u.hourangle,
        dec=np.full(times_s.size, dec0_deg) * u.deg,
        frame=frame,
    )
    theta = source.separation(pointing).rad
    spectrum = flux * (freqs / inst.REFERENCE_FREQ_HZ) ** ALPHA
    return spectrum[None, :] * airy_power(theta[:, None], freqs[None, :])


@pytest.fixture(scope="module")
def sky_ms(tmp_path_factory):
    """Three bright sources around the pointing (Dec +54.57), 24 real stations including
    outriggers (baselines to 2.6 km), no gains, thermal noise on."""
    tmp = tmp_path_factory.mktemp("threesources")
    settings = SimulationSettings(
        n_antennas=24,
        n_channels=2,
        n_integrations=12,
        n_groups=1,
        n_sources=0,
        gains=False,
        noise=True,
        seed=5,
    )
    assert settings.dec_deg == pytest.approx(54.5734, abs=1e-4)
    start = group_start_times(settings)[0]
    mid = start + settings.group_duration_s / 2 * u.s
    ra_mid, dec_mid = np.degrees(meridian_phase_center(mid.jd, settings.dec_deg))
    sources = [
        dict(
            source_id=name,
            ra_deg=ra_mid + de / np.cos(np.radians(dec_mid + dn)),
            dec_deg=dec_mid + dn,
            flux_jy=flux,
            spectral_index=ALPHA,
        )
        for name, de, dn, flux in SOURCES
    ]
    settings.extra_sources = sources
    simulate_archive(tmp / "archive", settings)
    groups, rejected = build_manifest(find_archive_files(tmp / "archive"))
    assert len(groups) == 1 and rejected.empty
    ms = tmp / "group.ms"
    convert_group(list(groups.files[0]), ms, groups.group[0])
    return {"ms": ms, "sources": sources, "settings": settings, "archive": tmp / "archive"}


@pytest.mark.skipif(not CHECK_LAYOUT.exists(), reason="the layout checker is not on this machine")
def test_files_have_the_telescope_layout(sky_ms):
    archive = sky_ms["archive"]
    out = subprocess.run(
        [sys.executable, str(CHECK_LAYOUT), str(archive)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout
    assert "16 files, 16 subbands, 0 departures from the real layout" in out.stdout
    with h5py.File(sorted(archive.glob("*_sb00.hdf5"))[0], "r") as fh:
        h = fh["Header"]
        a1, a2 = h["ant_1_array"][()], h["ant_2_array"][()]
        assert h["extra_keywords/phase_center_dec"][()] == pytest.approx(0.952486, abs=1e-9)
        assert int(h["Nbls"][()]) == 24 * 25 // 2 and int(h["Nants_telescope"][()]) == 117
        assert (a1 > a2).sum() > 50 and (a1 < a2).sum() > 50, "mixed conjugation"
        assert set(np.unique(np.concatenate([a1, a2])) + 1) == set(sky_ms["settings"].stations)
        assert fh["Data/visdata"].shape == (12 * 300, 1, 2, 2)
    names = sorted(p.name for p in archive.glob("*.hdf5"))
    assert len({n.split("_sb")[0] for n in names}) > 3, "file names jittered between subbands"


def _joint_fit(vis, uvw, time_s, freqs, ra0, dec0, sources):
    """Least-squares amplitude of every source at every integration (Stokes I, Jy at each
    channel relative to its spectrum), given the true positions."""
    times = np.unique(time_s)
    amps = np.zeros((times.size, len(sources)))
    for k, t in enumerate(times):
        rows = time_s == t
        design = []
        for s in sources:
            l, m, _ = _lmn(np.radians(s["ra_deg"]), np.radians(s["dec_deg"]), ra0, dec0)
            design.append(
                (
                    _fringe(uvw[rows], freqs, l, m)
                    * (freqs / inst.REFERENCE_FREQ_HZ)[None, :] ** ALPHA
                ).ravel()
            )
        design = np.array(design).T
        x, *_ = np.linalg.lstsq(
            np.vstack([design.real, design.imag]),
            np.concatenate([vis[rows].ravel().real, vis[rows].ravel().imag]),
            rcond=None,
        )
        amps[k] = x
    return times, amps


def test_dft_finds_each_source_at_its_position_and_flux(sky_ms):
    vis, uvw, time_s, freqs, ra0, dec0 = _read_ms(sky_ms["ms"])
    sources = sky_ms["sources"]
    uv_max = np.max(np.hypot(uvw[:, 0], uvw[:, 1])) * freqs.mean() / inst.SPEED_OF_LIGHT
    beam = 1.0 / uv_max
    assert np.degrees(beam) * 3600 < 25, "outriggers give a ~20 arcsec synthesized beam"
    times, amps = _joint_fit(vis, uvw, time_s, freqs, ra0, dec0, sources)
    for k, s in enumerate(sources):
        # flux: fitted spectrum amplitude vs the true beam-attenuated flux, per integration
        expected = _expected_apparent(
            s["ra_deg"], s["dec_deg"], s["flux_jy"], times, freqs, POINTING_DEC_DEG
        )
        expected_amp = np.mean(expected / (freqs / inst.REFERENCE_FREQ_HZ) ** ALPHA, axis=1)
        ratio = amps[:, k] / expected_amp
        assert np.all(np.abs(ratio - 1) < 0.01), (s["source_id"], ratio)
        # position: DFT of the data with the other sources subtracted, peak near the truth
        others = np.zeros_like(vis)
        for j, o in enumerate(sources):
            if j != k:
                l, m, _ = _lmn(np.radians(o["ra_deg"]), np.radians(o["dec_deg"]), ra0, dec0)
                a = amps[np.searchsorted(times, time_s), j]
                others += (
                    a[:, None]
                    * _fringe(uvw, freqs, l, m)
                    * (freqs / inst.REFERENCE_FREQ_HZ) ** ALPHA
                )
        resid = vis - others
        l0, m0, _ = _lmn(np.radians(s["ra_deg"]), np.radians(s["dec_deg"]), ra0, dec0)
        offsets = np.linspace(-0.5 * beam, 0.5 * beam, 41)
        image = np.array(
            [
                [
                    np.mean(resid * np.conj(_fringe(uvw, freqs, l0 + dl, m0 + dm))).real
                    for dl in offsets
                ]
                for dm in offsets
            ]
        )
        i, j = np.unravel_index(np.argmax(image), image.shape)
        assert 0 < i < offsets.size - 1 and 0 < j < offsets.size - 1, "peak inside the search box"
        error = np.hypot(offsets[i], offsets[j]) / beam
        print(
            f"{s['source_id']}: offset {error:.3f} beam, "
            f"flux ratio {ratio.min():.4f}-{ratio.max():.4f}"
        )
        assert error < 0.1, f"{s['source_id']}: peak {error:.2f} beams from the true position"
    assert amps[:, 2].min() < 0.9 * sources[2]["flux_jy"], "the sources drift through the beam"


def test_truth_records_faults_and_stations(tmp_path):
    from dsa110_contimg.simulation.visibilities import load_truth

    settings = SimulationSettings(
        n_antennas=6,
        n_channels=2,
        n_integrations=4,
        n_groups=2,
        n_sources=2,
        dropped=[[1, 2]],
        zero_nsamples=0.1,
        seed=3,
    )
    simulate_archive(tmp_path, settings)
    meta, gains, _ = load_truth(tmp_path)
    assert meta["correlated_stations"] == settings.stations and len(settings.stations) == 6
    assert list(gains["antenna_numbers"]) == [s - 1 for s in settings.stations]
    faults = meta["faults"]
    assert sum(f["nan_rows"] for f in faults) == 16 * 2 * 21
    assert sum(f["zero_nsamples_rows"] for f in faults) > 0
    for f in faults:
        with h5py.File(tmp_path / f["file"], "r") as fh:
            vis, ns = fh["Data/visdata"][()], fh["Data/nsamples"][()]
            assert np.isnan(vis).any(axis=(1, 2, 3)).sum() == f["nan_rows"]
            assert (ns == 0).all(axis=(1, 2, 3)).sum() == f["zero_nsamples_rows"]
            assert not fh["Data/flags"][()].any()


def test_placed_3c48_points_at_its_declination():
    from dsa110_contimg.calibrators import read_calibrator_catalog
    from dsa110_contimg.simulation.visibilities import calibrator_placement

    cals = read_calibrator_catalog(REPO / "config" / "calibrators.csv")
    assert SimulationSettings(calibrators=[calibrator_placement(cals, "3C48", 0)]).dec_deg == 33.0
    near = SimulationSettings(calibrators=[calibrator_placement(cals, "J0834+555", 0)])
    assert near.dec_deg == pytest.approx(POINTING_DEC_DEG)


def test_ese_sources_follow_their_light_curve():
    import pandas as pd

    from dsa110_contimg.simulation.visibilities import fluxes_at

    catalog = pd.DataFrame(
        {
            "source_id": ["A", "B"],
            "ra_deg": [0.0, 1.0],
            "dec_deg": [33.0, 33.0],
            "flux_jy": [1.0, 2.0],
            "spectral_index": [-0.7, -0.7],
            "ese_mjd": [61050.0, np.nan],
            "ese_fwhm_days": [20.0, np.nan],
            "ese_depth": [0.4, np.nan],
        }
    )
    at_centre = fluxes_at(catalog, 61050.0)
    assert at_centre.flux_jy.tolist() == pytest.approx([0.6, 2.0])
    half_width = fluxes_at(catalog, 61060.0)
    assert half_width.flux_jy[0] == pytest.approx(1 - 0.4 * 0.5)
    assert catalog.flux_jy[0] == 1.0, "the input catalog is not modified"


def test_parallel_simulation_writes_the_same_files(tmp_path):
    """Each group has its own seeded generator: 2 worker processes give identical bytes."""
    settings = SimulationSettings(
        n_antennas=6, n_channels=2, n_integrations=4, n_groups=3, n_sources=3, rfi={}, seed=5
    )
    simulate_archive(tmp_path / "one", settings)
    simulate_archive(tmp_path / "two", settings, workers=2)
    files = sorted(p.name for p in (tmp_path / "one").glob("*.hdf5"))
    assert len(files) == 3 * 16
    assert files == sorted(p.name for p in (tmp_path / "two").glob("*.hdf5"))
    for name in files + ["sky_catalog.csv", "truth/simulation.json", "truth/gains.npz"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
