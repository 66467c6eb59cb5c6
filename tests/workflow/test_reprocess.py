"""Archive reprocessing: a new day of raw data runs only the new groups' jobs and the
aggregates; a date range is reprocessed with one command (`--config start=... end=...`)
without touching products outside it."""

import shutil

import pandas as pd
import pytest

from pipeline import executed_jobs, failure_report, no_partials, run

pytestmark = pytest.mark.workflow
DAY2_START = "2026-01-01T12:00:00"


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    """The 'test' preset over two days (2 groups a day, one sidereal day apart)."""
    from dsa110_contimg.simulation.visibilities import PRESETS, SimulationSettings, simulate_archive

    out = tmp_path_factory.mktemp("two_days")
    simulate_archive(out, SimulationSettings(**{**PRESETS["test"], "n_days": 2}))
    return out


def _groups_in(jobs):
    """Every group id named by any wildcard of the jobs that ran."""
    return {v for _, wc in jobs for v in wc.values()}


def _ms_mtimes(results):
    return {p.name: p.stat().st_mtime_ns for p in (results / "ms").glob("*.ms")}


def test_new_day_runs_only_new_jobs_and_a_range_reprocesses_alone(two_days, tmp_path):
    archive, results = tmp_path / "archive", tmp_path / "results"
    archive.mkdir()
    day1 = sorted(p for p in two_days.glob("*_sb*.hdf5") if p.name < DAY2_START)
    day2 = sorted(p for p in two_days.glob("*_sb*.hdf5") if p.name >= DAY2_START)
    assert len(day1) == len(day2) == 32
    for f in day1:
        shutil.copy2(f, archive)

    status, log = run(archive, results)
    assert status == 0, failure_report(log)
    old_groups = set(pd.read_parquet(results / "manifest" / "groups.parquet").group)
    assert len(old_groups) == 2
    before = _ms_mtimes(results)

    for f in day2:
        shutil.copy2(f, archive)
    status, log = run(archive, results)
    assert status == 0, failure_report(log)
    jobs = executed_jobs(log)
    new_groups = set(pd.read_parquet(results / "manifest" / "groups.parquet").group) - old_groups
    assert len(new_groups) == 2 and all(g >= DAY2_START.replace(":", "") for g in new_groups)
    assert not _groups_in(jobs) & old_groups, jobs
    assert sorted(wc["group"] for rule, wc in jobs if rule == "convert") == sorted(new_groups)
    rules = {rule for rule, _ in jobs}
    assert {"manifest", "qa_manifest"} <= rules, rules
    after = _ms_mtimes(results)
    assert {k: after[k] for k in before} == before
    assert sorted(after) == sorted(f"{g}.ms" for g in old_groups | new_groups)

    status, log = run(
        archive, results, "--forcerun", "convert", config=[f"start={DAY2_START}", "end=2026-01-03"]
    )
    assert status == 0, failure_report(log)
    jobs = executed_jobs(log)
    assert sorted(wc["group"] for rule, wc in jobs if rule == "convert") == sorted(new_groups)
    assert not _groups_in(jobs) & old_groups, jobs
    reprocessed = _ms_mtimes(results)
    assert {k: reprocessed[k] for k in before} == before
    assert all(reprocessed[f"{g}.ms"] > after[f"{g}.ms"] for g in new_groups)
    assert set(pd.read_parquet(results / "manifest" / "groups.parquet").group) == new_groups
    assert no_partials(results) == []
