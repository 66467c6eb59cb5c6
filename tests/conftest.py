"""Shared fixtures: small simulated archives written once per test session."""

import shutil

import pytest

from dsa110_contimg.casaenv import configure

configure()


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory):
    """Two complete groups of the 'test' preset (10 antennas, 16 x 2 channels, 8 integrations)."""
    from dsa110_contimg.simulate import PRESETS, SimulationSettings, simulate_archive

    out = tmp_path_factory.mktemp("archive")
    simulate_archive(out, SimulationSettings(**PRESETS["test"]))
    return out


@pytest.fixture
def archive_copy(small_archive, tmp_path):
    """A private copy of the small archive that a test may damage."""
    dest = tmp_path / "archive"
    shutil.copytree(small_archive, dest)
    return dest
