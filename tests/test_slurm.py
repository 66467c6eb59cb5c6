"""The workflow on a real SLURM (Debian slurm-wlm 22.05 on this machine, started by
scripts/slurm-local.sh) through `--profile profiles/slurm`: every job is an sbatch job, an
injected failure is resubmitted with more memory and time, and the products equal a local
run's."""

import re
import subprocess

import pytest

from pipeline import (REPO, SMALL_GROUPS, assert_products_equal, product_targets, run,
                      slurm_job_ids)

pytestmark = pytest.mark.workflow
SCRIPT = REPO / "scripts" / "slurm-local.sh"


def _sh(*args, timeout=300):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def slurm():
    """munged, slurmctld and slurmd on this machine; stopped again if this session started
    them. Fails (never skips) with the reason when SLURM cannot run here."""
    was_up = _sh("status").returncode == 0
    if not was_up:
        started = _sh("start")
        if started.returncode != 0:
            pytest.fail("could not start a one-machine SLURM with scripts/slurm-local.sh "
                        f"(needs root and Debian's slurm-wlm + munge):\n{started.stdout}"
                        f"{started.stderr}")
    yield
    if not was_up:
        _sh("stop")


def _scontrol_job(job_id):
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(kv.split("=", 1) for kv in out.stdout.split() if "=" in kv)


def test_workflow_through_profiles_slurm(slurm, small_archive, clean_small_run, tmp_path,
                                         capsys):
    bad = SMALL_GROUPS[1]
    results = tmp_path / "results"
    status, log = run(small_archive, results, *product_targets(results),
                      "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5",
                      "--set-threads", "convert=1",
                      profile="profiles/slurm", timeout=900,
                      DSA110_FAIL_ONCE=f"convert:{bad}", DSA110_FAIL_ONCE_DIR=tmp_path / "markers")
    assert status == 0, log

    jobs = slurm_job_ids(log)
    with capsys.disabled():
        print()
        for job_id, (rule, wildcards) in sorted(jobs.items()):
            print(f"test_slurm: sbatch job {job_id}: rule {rule} {wildcards}")
    # manifest, two conversions (one of them twice: injected failure, then retry), QA
    assert sorted(rule for rule, _ in jobs.values()) == [
        "convert", "convert", "convert", "manifest", "qa_manifest"], log
    assert sorted(wc for rule, wc in jobs.values() if rule == "convert") == sorted(
        [*SMALL_GROUPS, bad])
    assert "Error in rule convert" in log and "injected transient failure of convert" in log

    bad_jobs = sorted(j for j, (rule, wc) in jobs.items() if rule == "convert" and wc == bad)
    first, retry = (_scontrol_job(j) for j in bad_jobs)
    assert first["JobState"] == "FAILED" and retry["JobState"] == "COMPLETED"
    # resources grow with the attempt: convert asks config mem_mb x attempt, runtime too
    assert first["MinMemoryNode"] == "4000M" and retry["MinMemoryNode"] == "8000M"
    assert first["TimeLimit"] == "00:30:00" and retry["TimeLimit"] == "01:00:00"
    assert first["NumCPUs"] == "1"
    for job_id, (rule, _) in jobs.items():
        if job_id not in bad_jobs[:1]:
            assert _scontrol_job(job_id)["JobState"] == "COMPLETED", (job_id, rule)
        assert len(list((REPO / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log"))) == 1

    assert_products_equal(results, clean_small_run)
    assert re.search(r"\d+ of \d+ steps \(100%\) done", log)
