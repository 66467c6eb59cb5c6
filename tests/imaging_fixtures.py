"""Session fixtures for the imaging, QA and mosaic tests (loaded by conftest.py):
simulated demo-size groups, converted and imaged once per session."""

import shutil

import numpy as np
import pytest

from dsa110_contimg.imaging.image import ImagingSettings, image_group

TEST_IMSIZE = 2048
CENTRE_GROUP = 1
# WSClean (~5x faster) for the six drift-test images when installed; tclean images the
# middle group with subtraction too.
DRIFT_TEST_IMAGER = "wsclean" if shutil.which("wsclean") else "tclean"


def _bright_sources(settings):
    """Four bright sources around the pointing of the middle group (ICRS), or of the last
    group when there are fewer."""
    from dsa110_contimg.astrometry import meridian_phase_center
    from dsa110_contimg.simulation.visibilities import group_start_times

    start = group_start_times(settings)[min(CENTRE_GROUP, settings.n_groups - 1)]
    mid_jd = start.jd + settings.group_duration_s / 2 / 86400
    ra0, dec0 = np.degrees(meridian_phase_center(mid_jd, settings.dec_deg))
    offsets = [
        ("BRIGHT_C", 0.0, 0.0, 0.3),
        ("BRIGHT_N", 0.0, 1.0, 0.25),
        ("BRIGHT_E", 1.2, 0.0, 0.25),
        ("BRIGHT_SW", -0.6, -0.6, 0.2),
    ]
    return [
        {
            "source_id": name,
            "ra_deg": ra0 + de / np.cos(np.radians(dec0)),
            "dec_deg": dec0 + dd,
            "flux_jy": flux,
            "spectral_index": -0.7,
        }
        for name, de, dd, flux in offsets
    ]


def _strong_sources(settings):
    """Two 10-12 Jy sources near the half-power radius (1.37 deg) of the middle group's
    pointing: one north on the meridian, one south-east off it (ICRS)."""
    from dsa110_contimg.astrometry import meridian_phase_center
    from dsa110_contimg.simulation.visibilities import group_start_times

    start = group_start_times(settings)[min(CENTRE_GROUP, settings.n_groups - 1)]
    mid_jd = start.jd + settings.group_duration_s / 2 / 86400
    ra0, dec0 = np.degrees(meridian_phase_center(mid_jd, settings.dec_deg))
    offsets = [("STRONG_N", 0.0, 1.35, 12.0, -0.7), ("STRONG_SE", 1.0, -0.9, 10.0, -0.5)]
    return [
        {
            "source_id": name,
            "ra_deg": ra0 + de / np.cos(np.radians(dec0)),
            "dec_deg": dec0 + dd,
            "flux_jy": flux,
            "spectral_index": alpha,
        }
        for name, de, dd, flux, alpha in offsets
    ]


def _simulate_and_convert(out, gains, n_groups, strong=False):
    from dsa110_contimg.ingest.convert import convert_group
    from dsa110_contimg.ingest.manifest import build_manifest
    from dsa110_contimg.simulation.visibilities import SimulationSettings, simulate_archive

    settings = SimulationSettings(n_antennas=20, n_groups=n_groups, gains=gains)
    settings.extra_sources = _bright_sources(settings)
    if strong:
        settings.extra_sources += _strong_sources(settings)
    archive = out / "archive"
    simulate_archive(archive, settings)
    groups, rejected = build_manifest(sorted(archive.glob("*.hdf5")), 60.0, range(16), None, None)
    assert len(groups) == n_groups and rejected.empty
    mss = []
    for row in groups.itertuples():
        mss.append(convert_group(list(row.files), out / "ms" / f"{row.group}.ms", row.group))
    return archive, groups, mss


@pytest.fixture(scope="session")
def calibrated_images(tmp_path_factory):
    """Three consecutive demo-size groups (20 stations, 16 x 4 channels, 24 integrations)
    simulated without gains, converted, and imaged: the middle one with tclean (the tests
    compare it with WSClean), the other two with the default imager."""
    out = tmp_path_factory.mktemp("imaging")
    archive, groups, mss = _simulate_and_convert(out, gains=False, n_groups=3)
    results = [
        image_group(
            ms,
            out / "images" / g,
            ImagingSettings(
                imsize=TEST_IMSIZE, **({"imager": "tclean"} if i == CENTRE_GROUP else {})
            ),
        )
        for i, (ms, g) in enumerate(zip(mss, groups.group))
    ]
    return {"archive": archive, "groups": groups, "ms": mss, "images": results, "out": out}


@pytest.fixture(scope="session")
def uncalibrated_image(tmp_path_factory):
    """The middle group simulated with gains on and imaged without calibration."""
    out = tmp_path_factory.mktemp("uncalibrated")
    archive, groups, mss = _simulate_and_convert(out, gains=True, n_groups=1)
    result = image_group(
        mss[0], out / "images" / groups.group[0], ImagingSettings(imsize=TEST_IMSIZE)
    )
    return {"archive": archive, "image": result}


@pytest.fixture(scope="session")
def drift_images(tmp_path_factory):
    """Three demo-size groups with 12 and 10 Jy sources near the half-power point of the
    middle group's beam, each imaged with drift subtraction (the sky catalog given) and
    without (the constant-sky deconvolution of before) with DRIFT_TEST_IMAGER, and the
    middle group with subtraction by tclean."""
    out = tmp_path_factory.mktemp("drift")
    archive, groups, mss = _simulate_and_convert(out, gains=False, n_groups=3, strong=True)
    settings = ImagingSettings(imsize=TEST_IMSIZE, imager=DRIFT_TEST_IMAGER)
    catalog = archive / "sky_catalog.csv"
    new = [
        image_group(ms, out / "images" / g, settings, sky_catalog=catalog)
        for ms, g in zip(mss, groups.group)
    ]
    old = [image_group(ms, out / "old" / g, settings) for ms, g in zip(mss, groups.group)]
    tclean = image_group(
        mss[CENTRE_GROUP],
        out / "tclean" / groups.group[CENTRE_GROUP],
        ImagingSettings(imsize=TEST_IMSIZE, imager="tclean"),
        sky_catalog=catalog,
    )
    return {
        "archive": archive,
        "groups": groups,
        "ms": mss,
        "images": new,
        "old": old,
        "tclean": tclean,
    }


def _truth(archive):
    from dsa110_contimg.simulation.visibilities import load_truth

    meta, _, catalog = load_truth(archive)
    return meta, catalog


def _expected_thermal(meta, ms):
    """Natural-weighting Stokes I rms from the simulator's per-visibility sigma."""
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        cross = int(np.sum(t.getcol("ANTENNA1") != t.getcol("ANTENNA2")))
        nchan = t.getcol("DATA", 0, 1).shape[1]
    return meta["noise_sigma_jy"] / np.sqrt(2 * cross * nchan)
