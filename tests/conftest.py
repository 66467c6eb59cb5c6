"""Shared fixtures: small simulated archives written once per test session."""

import shutil

import pytest

from dsa110_contimg.casaenv import configure

configure()

# Simulated, converted and imaged groups shared by test_imaging/test_qa/test_mosaic.
pytest_plugins = ["imaging_fixtures"]


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory):
    """Two complete groups of the 'test' preset (10 antennas, 16 x 2 channels, 8 integrations)."""
    from dsa110_contimg.simulation.visibilities import PRESETS, SimulationSettings, simulate_archive

    out = tmp_path_factory.mktemp("archive")
    simulate_archive(out, SimulationSettings(**PRESETS["test"]))
    return out


@pytest.fixture
def archive_copy(small_archive, tmp_path):
    """A private copy of the small archive that a test may damage."""
    dest = tmp_path / "archive"
    shutil.copytree(small_archive, dest)
    return dest


@pytest.fixture(scope="session")
def clean_small_run(small_archive, tmp_path_factory):
    """Products of an undisturbed local run on the small archive (MSs + manifest QA), the
    reference that recovery and SLURM tests compare with."""
    from pipeline import failure_report, product_targets, run

    results = tmp_path_factory.mktemp("clean") / "results"
    status, log = run(small_archive, results, *product_targets(results))
    assert status == 0, failure_report(log)
    return results
