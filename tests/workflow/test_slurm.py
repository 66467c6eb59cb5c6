"""The workflow on a real SLURM with job accounting (Debian slurm-wlm 22.05, slurmdbd on a
local MariaDB, started by scripts/slurm-local.sh), through the command users type,
`snakemake --profile slurm`: every job is an sbatch job whose status the executor plugin
reads from sacct (its default), an injected failure is resubmitted with more memory and
time, a job whose processes are killed on the node mid-run is resubmitted, the per-rule
resources reach sbatch, and the products equal a local run's."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pipeline import (
    BIN,
    REPO,
    SMALL_GROUPS,
    assert_products_equal,
    env,
    no_partials,
    product_targets,
    slurm_job_ids,
    snakemake_cmd,
)

pytestmark = pytest.mark.workflow
SCRIPT = REPO / "scripts" / "slurm-local.sh"


def _sh(*args, timeout=600):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def slurm():
    """munged, MariaDB, slurmdbd, slurmctld and slurmd on this machine; stopped again if
    this session started them. Fails (never skips) with the reason when SLURM cannot run
    here."""
    was_up = _sh("status").returncode == 0
    if not was_up:
        started = _sh("start")
        if started.returncode != 0:
            pytest.fail(
                "could not start a one-machine SLURM with scripts/slurm-local.sh "
                f"(needs root and Debian's slurm-wlm, slurmdbd, munge, mariadb-server):"
                f"\n{started.stdout}{started.stderr}"
            )
    yield
    if not was_up:
        _sh("stop")


def sacct_jobs(job_ids):
    """{job id: sacct record} of the allocations (-X) of `job_ids`, from the accounting
    database."""
    fields = ["JobID", "State", "ReqMem", "Timelimit", "ReqCPUS", "ExitCode"]
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", ",".join(fields), "-j", ",".join(map(str, job_ids))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    records = [dict(zip(fields, line.split("|"))) for line in out.stdout.splitlines()]
    return {int(r["JobID"]): r for r in records}


def _running_job(comment):
    """SLURM id of the RUNNING job whose comment (the plugin's `rule_<rule>_wildcards_<...>`)
    is `comment`, or None."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, timeout=30
    )
    for line in out.stdout.splitlines():
        job_id, job_comment, state = line.split("|")
        if job_comment == comment and state == "RUNNING":
            return int(job_id)
    return None


def kill_job_processes(job_id):
    """SIGKILL every process of SLURM job `job_id` on this node (batch script, srun, the
    job step's snakemake and its command), leaving slurmstepd: the job is lost as when
    the node's kernel kills it, and SLURM records it FAILED (exit 0:9). Returns the PIDs."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if f"SLURM_JOB_ID={job_id}".encode() in environ and not comm.startswith("slurmstepd"):
            killed.append(int(proc.name))
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def test_profile_names_resolve_from_the_checkout(tmp_path):
    """`--profile slurm` and `--profile local` name directories in the checkout (links to
    profiles/): snakemake 9 looks for a profile name in the working directory first."""
    (tmp_path / "archive").mkdir()
    for name in ("slurm", "local"):
        assert (REPO / name).resolve() == REPO / "profiles" / name
        out = subprocess.run(
            [
                str(BIN / "snakemake"),
                "--profile",
                name,
                "-n",
                "--config",
                f"archive_dir={tmp_path / 'archive'}",
                f"results_dir={tmp_path / 'results'}",
            ],
            cwd=REPO,
            env=env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"Using profile {name} for setting default command line arguments" in out.stderr


def test_snakemake_profile_slurm_as_typed(slurm, small_archive, clean_small_run, tmp_path, capsys):
    """`snakemake --profile slurm` from the checkout: sacct-based status checks, a failure
    retried with more resources, a job lost mid-run (its processes killed) resubmitted."""
    bad, lost = SMALL_GROUPS[1], SMALL_GROUPS[0]
    results = tmp_path / "results"
    cmd = snakemake_cmd(
        small_archive,
        results,
        *product_targets(results),
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--latency-wait",
        "5",
        "--set-threads",
        "convert=1",
        profile="slurm",
    )
    assert cmd[1 : cmd.index("--profile") + 2][-2:] == ["--profile", "slurm"]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(DSA110_FAIL_ONCE=f"convert:{bad}", DSA110_FAIL_ONCE_DIR=tmp_path / "markers"),
    )
    # lose a job mid-run: kill the first convert of `lost` once it has run ~3 s
    victim, deadline = None, time.monotonic() + 600
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        victim = _running_job(f"rule_convert_wildcards_{lost}")
        time.sleep(0.3)
    assert victim is not None, "the convert job never ran"
    time.sleep(3)
    assert kill_job_processes(victim)
    log, _ = proc.communicate(timeout=900)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, log

    jobs = slurm_job_ids(log)
    records = sacct_jobs(jobs)
    with capsys.disabled():
        print(
            f"\ntest_slurm: `snakemake --profile slurm` ran {len(jobs)} sbatch jobs in "
            f"{elapsed:.0f} s"
        )
        for job_id, (rule, wildcards) in sorted(jobs.items()):
            r = records[job_id]
            print(
                f"test_slurm: sacct job {job_id}: rule {rule} {wildcards} {r['State']} "
                f"ReqMem={r['ReqMem']} Timelimit={r['Timelimit']} ReqCPUS={r['ReqCPUS']}"
            )
    # manifest, two conversions each run twice (lost / injected failure, then the retry),
    # the manifest QA
    assert sorted(rule for rule, _ in jobs.values()) == [
        "convert",
        "convert",
        "convert",
        "convert",
        "manifest",
        "qa_manifest",
    ], log
    convert_jobs = {
        g: sorted(j for j, (rule, wc) in jobs.items() if rule == "convert" and wc == g)
        for g in SMALL_GROUPS
    }
    assert [len(v) for v in convert_jobs.values()] == [2, 2]
    assert convert_jobs[lost][0] == victim
    assert "Error in rule convert" in log and "injected transient failure of convert" in log

    # the accounting database saw every job, with its end state
    states = {j: records[j]["State"].split()[0] for j in jobs}
    assert (states[victim], records[victim]["ExitCode"]) == ("FAILED", "0:9"), records[victim]
    assert states[convert_jobs[bad][0]] == "FAILED", records[convert_jobs[bad][0]]
    retried = {convert_jobs[lost][1], convert_jobs[bad][1]}
    for job_id, (rule, _) in jobs.items():
        if rule != "convert" or job_id in retried:
            assert states[job_id] == "COMPLETED", (job_id, rule, records[job_id])

    # per-rule resources reached sbatch: convert takes config convert.mem_mb x attempt and
    # runtime_min x attempt, manifest/qa_manifest the profile's set-resources
    want = {"manifest": ("1000M", "00:20:00", "1"), "qa_manifest": ("1000M", "00:10:00", "1")}
    for job_id, (rule, _) in jobs.items():
        if rule in want:
            r = records[job_id]
            assert (r["ReqMem"], r["Timelimit"], r["ReqCPUS"]) == want[rule], (rule, r)
    for first, retry in convert_jobs.values():
        assert (
            records[first]["ReqMem"],
            records[first]["Timelimit"],
            records[first]["ReqCPUS"],
        ) == ("4000M", "00:30:00", "1"), records[first]
        assert (
            records[retry]["ReqMem"],
            records[retry]["Timelimit"],
            records[retry]["ReqCPUS"],
        ) == ("8000M", "01:00:00", "1"), records[retry]
    for job_id in jobs:
        assert len(list((REPO / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log"))) == 1

    assert_products_equal(results, clean_small_run)
    assert no_partials(results) == []
    assert re.search(r"\d+ of \d+ steps \(100%\) done", log)
