"""The workflow on a real SLURM with job accounting (Debian slurm-wlm 22.05, slurmdbd on a
local MariaDB, started by scripts/slurm-local.sh), through the command users type,
`snakemake --profile slurm`: every observation group's chain is two sbatch jobs (the rules'
`group:` directives: "ingest" = convert, "imaging" = calibrate_apply, image, qa_image,
photometry_image) whose status the executor plugin reads from sacct (its default), an
injected failure is resubmitted with more memory and time, a job whose processes are killed
on the node mid-run is resubmitted, the per-rule and per-group resources reach sbatch, and
the products equal a local run's."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import (
    BIN,
    REPO,
    SMALL_GROUPS,
    assert_products_equal,
    env,
    no_partials,
    product_targets,
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


INGEST = "ingest_convert"
IMAGING = "imaging_calibrate_apply_image_photometry_image_qa_image"
IMAGING_RULES = ["calibrate_apply", "image", "photometry_image", "qa_image"]


def _running_job(comment, target):
    """SLURM id of the RUNNING job whose comment (the plugin's `rule_<name>`; a group job's
    name is `<group>_<its rules>`) is `comment` and whose batch script runs `target`
    (`<rule>:group=<observation group>`, the job step's --target-jobs), or None."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, timeout=30
    )
    for line in out.stdout.splitlines():
        job_id, job_comment, state = line.split("|")
        if job_comment == comment and state == "RUNNING":
            script = subprocess.run(
                ["scontrol", "write", "batch_script", job_id, "-"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if target in script.stdout:
                return int(job_id)
    return None


def slurm_submissions(log):
    """{SLURM job id: (rule or `<group>_<rules>` name, [(rule, observation group)] of the
    jobs it ran)} from the plugin's submission lines and the SLURM logs, where the job
    step's snakemake prints every job it starts with its wildcards. A resubmission keeps
    Snakemake's job id, so a killed attempt that printed nothing gets its retry's jobs."""
    found = re.findall(
        r"^Job (\S+) has been submitted with SLURM jobid (\d+) "
        r"\(log: (\S*/(?:rule|group)_(\w+)/\S*?\d+\.log)\)",
        log,
        re.M,
    )
    ran, by_snakemake_job = {}, {}
    for snakemake_job, job_id, path, _ in found:
        ran[int(job_id)] = sorted(
            set(
                re.findall(
                    r"^\s*(?:local)?rule (\w+):\n(?:\s+\w+: .*\n)*?"
                    r"\s+wildcards: \w*group=([\dT-]+)",
                    Path(path).read_text(),
                    re.M,
                )
            )
        )
        by_snakemake_job.setdefault(snakemake_job, []).append(int(job_id))
    submissions = {}
    for snakemake_job, job_id, _, name in found:
        attempts = by_snakemake_job[snakemake_job]
        jobs_ran = ran[int(job_id)] or next((ran[a] for a in attempts if ran[a]), [])
        submissions[int(job_id)] = (name, jobs_ran)
    return submissions


def imaging_job_resources():
    """(ReqMem, Timelimit, ReqCPUS) sbatch gets for a first attempt of an imaging group
    job: Snakemake orders the group's jobs in layers (calibrate_apply; image; qa_image
    and photometry_image side by side) and asks for the largest layer's memory and cores
    (a layer's summed) and the layers' summed runtime (a layer's longest)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    last = [profile["set-resources"][r] for r in ("qa_image", "photometry_image")]
    last = [{k: int(str(v).split("*")[0]) for k, v in r.items()} for r in last]
    image = cfg["image"]
    image_threads = (
        1 if image["imager"] == "wsclean" and image.get("deterministic") else image["threads"]
    )
    mem = max(cfg["calibrate"]["mem_mb"], image["mem_mb"], sum(r["mem_mb"] for r in last))
    runtime = cfg["calibrate"]["runtime_min"] + image["runtime_min"]
    runtime += max(r["runtime"] for r in last)
    cpus = min(2, max(1, image_threads, len(last)))  # the test's --cores 2
    return f"{mem}M", f"{runtime // 60:02d}:{runtime % 60:02d}:00", str(cpus)


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
    """`snakemake --profile slurm` from the checkout through each group's image, QA and
    photometry: two sbatch jobs per observation group (its conversion; its calibration,
    imaging, QA and photometry in one), sacct-based status checks, a failure retried with
    more resources, a job lost mid-run (its processes killed) resubmitted."""
    bad, lost = SMALL_GROUPS[1], SMALL_GROUPS[0]
    results = tmp_path / "results"
    chains = [
        str(results / product.format(g))
        for g in SMALL_GROUPS
        for product in (
            "images/{}/image.fits",
            "qa/image/{}.json",
            "photometry/images/{}.parquet",
        )
    ]
    cmd = snakemake_cmd(
        small_archive,
        results,
        *product_targets(results),
        *chains,
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
    # lose a job mid-run: kill the first ingest job of `lost` once it has run ~3 s
    victim, deadline = None, time.monotonic() + 600
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        victim = _running_job(f"rule_{INGEST}", f"convert:group={lost}")
        time.sleep(0.3)
    assert victim is not None, "the ingest job never ran"
    time.sleep(3)
    assert kill_job_processes(victim)
    log, _ = proc.communicate(timeout=900)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, log

    jobs = slurm_submissions(log)
    records = sacct_jobs(jobs)
    with capsys.disabled():
        print(
            f"\ntest_slurm: `snakemake --profile slurm` ran {len(jobs)} sbatch jobs in "
            f"{elapsed:.0f} s"
        )
        for job_id, (name, ran) in sorted(jobs.items()):
            r = records[job_id]
            print(
                f"test_slurm: sacct job {job_id}: {name} {r['State']} ReqMem={r['ReqMem']} "
                f"Timelimit={r['Timelimit']} ReqCPUS={r['ReqCPUS']} ran "
                + ", ".join(f"{rule}:{g}" for rule, g in ran)
            )
    # manifest, calibration selection and manifest QA, then per observation group an
    # ingest job (run twice: lost / injected failure, then the retry) and one imaging job
    assert sorted(name for name, _ in jobs.values()) == sorted(
        ["manifest", "calibration_selection", "qa_manifest"] + [INGEST] * 4 + [IMAGING] * 2
    ), log
    ingest_jobs = {
        g: sorted(j for j, (name, ran) in jobs.items() if name == INGEST and ran[0][1] == g)
        for g in SMALL_GROUPS
    }
    imaging_jobs = {
        g: [j for j, (name, ran) in jobs.items() if name == IMAGING and ran[0][1] == g]
        for g in SMALL_GROUPS
    }
    assert [len(v) for v in ingest_jobs.values()] == [2, 2]
    assert [len(v) for v in imaging_jobs.values()] == [1, 1]
    for g in SMALL_GROUPS:
        # the retry ran the conversion: the lost first attempt may have been killed before
        # its job step printed the job
        assert jobs[ingest_jobs[g][1]][1] == [("convert", g)], jobs[ingest_jobs[g][1]]
        # one sbatch job ran the group's whole chain from calibrate_apply to photometry
        assert jobs[imaging_jobs[g][0]][1] == [(rule, g) for rule in IMAGING_RULES]
    # submissions per observation group (first attempts): its ingest and its imaging job
    first = {g: [ingest_jobs[g][0], imaging_jobs[g][0]] for g in SMALL_GROUPS}
    assert all(len(set(v)) == 2 for v in first.values()), first
    assert ingest_jobs[lost][0] == victim
    assert "Error in group ingest" in log and "injected transient failure of convert" in log

    # the accounting database saw every job, with its end state
    states = {j: records[j]["State"].split()[0] for j in jobs}
    assert (states[victim], records[victim]["ExitCode"]) == ("FAILED", "0:9"), records[victim]
    assert states[ingest_jobs[bad][0]] == "FAILED", records[ingest_jobs[bad][0]]
    retried = {ingest_jobs[lost][0], ingest_jobs[bad][0]}
    for job_id, (name, _) in jobs.items():
        if job_id not in retried:
            assert states[job_id] == "COMPLETED", (job_id, name, records[job_id])

    # per-rule and per-group resources reached sbatch: an ingest job takes config
    # convert.mem_mb x attempt and runtime_min x attempt, manifest and qa_manifest the
    # profile's set-resources, calibration_selection its default-resources, an imaging job
    # its layers' (imaging_job_resources)
    want = {
        "manifest": ("1000M", "00:20:00", "1"),
        "qa_manifest": ("1000M", "00:10:00", "1"),
        "calibration_selection": ("2000M", "00:30:00", "1"),
        IMAGING: imaging_job_resources(),
    }
    for job_id, (name, _) in jobs.items():
        if name in want:
            r = records[job_id]
            assert (r["ReqMem"], r["Timelimit"], r["ReqCPUS"]) == want[name], (name, r)
    for first_attempt, retry in ingest_jobs.values():
        assert (
            records[first_attempt]["ReqMem"],
            records[first_attempt]["Timelimit"],
            records[first_attempt]["ReqCPUS"],
        ) == ("6000M", "00:30:00", "1"), records[first_attempt]
        assert (
            records[retry]["ReqMem"],
            records[retry]["Timelimit"],
            records[retry]["ReqCPUS"],
        ) == ("12000M", "01:00:00", "1"), records[retry]
    for job_id in jobs:
        assert len(list((REPO / ".snakemake" / "slurm_logs").rglob(f"{job_id}.log"))) == 1

    assert_products_equal(results, clean_small_run)
    catalog = pd.read_csv(small_archive / "sky_catalog.csv")
    for g in SMALL_GROUPS:
        assert (results / "images" / g / "image.fits").stat().st_size > 0
        assert (results / "qa" / "image" / f"{g}.json").stat().st_size > 0
        photometry = pd.read_parquet(results / "photometry" / "images" / f"{g}.parquet")
        assert sorted(photometry.source_id) == sorted(catalog.source_id)
        assert set(photometry.image_id) == {g}
    assert no_partials(results) == []
    assert re.search(r"\d+ of \d+ steps \(100%\) done", log)
