"""`dsa110-contimg run`: start the Snakemake workflow so that re-running the same command
after a crash finishes the work.

Snakemake refuses to start while a lock from a killed run remains in `.snakemake/locks`;
on one machine we can tell a stale lock from a live one by looking for another snakemake
process working in the same directory, and remove it only when there is none.

A job killed after its outputs were renamed into place but before Snakemake recorded it
leaves a marker in `.snakemake/incomplete/`. Snakemake checks those markers only for jobs
it knows before the first checkpoint re-evaluation: a job added afterwards (an image, its
QA, photometry: everything downstream of the manifest or calibration checkpoints) is taken
as finished and the marker stays, so asking for that product later raises
IncompleteFilesException. The runner therefore removes every output that still carries a
marker, and the marker, before starting Snakemake: the job then runs again.

Two runs writing one results directory at once would fight over its products. The runner
holds an exclusive lock (flock) on `RESULTS/.dsa110-contimg-run.lock` for as long as it and
its snakemake live; a second run on that directory is refused with a message naming the
first. The kernel releases the lock when the holders die, so it is never stale.
"""

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from base64 import urlsafe_b64decode
from pathlib import Path

import yaml

from dsa110_contimg.sanity import describe_rejections

log = logging.getLogger(__name__)

RUN_LOCK = ".dsa110-contimg-run.lock"
# Exit status of `dsa110-contimg run` when another run holds the results directory.
EXIT_BUSY = 2


class RunInProgress(RuntimeError):
    """Another run is processing the same results directory."""


def other_snakemake_processes(workdir):
    """PIDs of snakemake processes (other than this one and its ancestors) whose
    working directory is `workdir`."""
    workdir = Path(workdir).resolve()
    ours, pid = set(), os.getpid()
    while pid > 1:
        ours.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in ours:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd")).resolve()
        except OSError:
            continue
        if cwd == workdir and any(
            Path(a.decode(errors="ignore")).name == "snakemake" for a in cmdline[:2]
        ):
            found.append(int(proc.name))
    return found


def remove_stale_locks(workdir="."):
    """Remove Snakemake locks left by a killed run; returns how many were removed."""
    locks = sorted((Path(workdir) / ".snakemake" / "locks").glob("*.lock"))
    if not locks:
        return 0
    live = other_snakemake_processes(workdir)
    if live:
        log.warning("another snakemake (pid %s) is running here; leaving its locks alone", live)
        return 0
    for lock in locks:
        lock.unlink()
    log.warning("removed %d stale Snakemake lock(s) left by a run that was killed", len(locks))
    return len(locks)


def incomplete_markers(workdir="."):
    """(marker file, output path, external job id) of every output Snakemake marked as
    started and never recorded as finished. The marker's path below
    `.snakemake/incomplete/` is the output path, urlsafe-base64 encoded and cut into
    directory names at the file system's name-length limit (all but the last prefixed
    with '@')."""
    base = Path(workdir) / ".snakemake" / "incomplete"
    found = []
    for marker in sorted(base.rglob("*")) if base.is_dir() else []:
        if marker.is_dir() or marker.name == "migration_underway":
            continue
        parts = marker.relative_to(base).parts
        encoded = "".join(part[1:] if part.startswith("@") else part for part in parts)
        try:
            output = urlsafe_b64decode(encoded).decode()
        except ValueError:
            log.warning("%s: not a Snakemake incomplete marker; left alone", marker)
            continue
        try:
            jobid = json.loads(marker.read_text() or "{}").get("external_jobid")
        except (OSError, ValueError):
            jobid = None
        found.append((marker, output, jobid))
    return found


def _cluster_job_alive(jobid):
    """True when the batch system still lists job `jobid` (pending or running)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", str(jobid), "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def remove_incomplete_outputs(workdir="."):
    """Remove the outputs (and markers) of jobs that were started but never recorded as
    finished, so that Snakemake runs them again; returns the removed output paths. Call
    only when no other snakemake works in `workdir`. Outputs of a cluster job that is
    still queued or running are left alone."""
    removed = []
    for marker, output, jobid in incomplete_markers(workdir):
        if jobid and _cluster_job_alive(jobid):
            log.warning("%s: its SLURM job %s is still running; left alone", output, jobid)
            continue
        path = Path(output) if Path(output).is_absolute() else Path(workdir) / output
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(output)
        elif path.exists() or path.is_symlink():
            path.unlink()
            removed.append(output)
        marker.unlink()
    if removed:
        log.warning(
            "removed %d output(s) of job(s) killed before Snakemake recorded them "
            "(they are made again): %s",
            len(removed),
            ", ".join(removed),
        )
    return removed


def _option_values(args, names):
    """Values following any of the options `names` (up to the next option) in `args`."""
    values, taking = [], False
    for arg in args:
        if arg.startswith("-"):
            taking = arg in names
            continue
        if taking:
            values.append(arg)
    return values


def results_dir(snakemake_args, workdir="."):
    """The results directory a run with these snakemake arguments writes: the last
    `results_dir=` of `--config`, else the last `--configfile` that sets it, else
    config/config.yaml's."""
    workdir = Path(workdir)
    value = None
    configfiles = [workdir / "config" / "config.yaml"] + [
        workdir / f for f in _option_values(snakemake_args, ("--configfile", "--configfiles"))
    ]
    for path in configfiles:
        try:
            value = (yaml.safe_load(path.read_text()) or {}).get("results_dir", value)
        except (OSError, yaml.YAMLError, AttributeError):
            continue
    for item in _option_values(snakemake_args, ("--config", "-C")):
        if item.startswith("results_dir="):
            value = item.split("=", 1)[1]
    if not value:
        raise ValueError("no results_dir in the configuration")
    return (workdir / value).resolve()


def acquire_run_lock(results):
    """An open file holding an exclusive lock on `results`/RUN_LOCK, with this process's
    PID in it; raises RunInProgress naming the holder when another run has it."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / RUN_LOCK
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunInProgress(
            f"another dsa110-contimg run ({holder}) is processing {results}; refusing to "
            f"start a second one on the same results directory. Wait for it to finish "
            f"(or stop it), then run this command again."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(
        f"pid {os.getpid()} on {os.uname().nodename}, started "
        f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
    )
    handle.flush()
    return handle


def run(snakemake_args, profile="local", workdir="."):
    """Run snakemake with `profile` and extra arguments; returns its exit status
    (EXIT_BUSY when another run holds the results directory)."""
    if not (Path(workdir) / "Snakefile").exists():
        raise FileNotFoundError(
            f"no Snakefile in {Path(workdir).resolve()}: run from the dsa110-contimg checkout"
        )
    results = results_dir(snakemake_args, workdir)
    try:
        lock = acquire_run_lock(results)
    except RunInProgress as busy:
        log.error("%s", busy)
        return EXIT_BUSY
    with lock:
        status = _snakemake(snakemake_args, profile, workdir, lock)
    rejected = describe_rejections(results)
    if rejected:
        log.log(
            logging.ERROR if status else logging.WARNING,
            "%d products were rejected by their sanity checks (not published; listed in "
            "qa/summary.parquet once their groups are quarantined):\n  %s",
            len(rejected),
            "\n  ".join(rejected),
        )
    return status


def _snakemake(snakemake_args, profile, workdir, lock):
    """Snakemake's exit status, run while this process holds the run lock `lock`."""
    remove_stale_locks(workdir)
    if not other_snakemake_processes(workdir):
        remove_incomplete_outputs(workdir)
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake if snakemake.exists() else "snakemake"), "--profile", profile]
    cmd += snakemake_args
    log.info("running %s", " ".join(cmd))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # snakemake inherits the locked file, so the lock lives as long as either process
    return subprocess.call(cmd, cwd=workdir, env=env, pass_fds=[lock.fileno()])


def _run(args):
    return run(args.snakemake_args, profile=args.profile)


def register_cli(sub):
    p = sub.add_parser("run", help="run the workflow (clears locks a killed run left behind)")
    p.add_argument(
        "--profile",
        default="local",
        help="Snakemake profile: local (default) or slurm, the checkout's links "
        "to profiles/local and profiles/slurm, or a path",
    )
    p.add_argument(
        "snakemake_args",
        nargs="*",
        help="further snakemake arguments, after --, e.g. -- --config start=2026-01-02",
    )
    p.set_defaults(func=_run)
