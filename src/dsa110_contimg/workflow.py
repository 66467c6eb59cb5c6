"""`dsa110-contimg run`: start the Snakemake workflow so that re-running the same command
after a crash finishes the work.

Snakemake refuses to start while a lock from a killed run remains in `.snakemake/locks`;
on one machine we can tell a stale lock from a live one by looking for another snakemake
process working in the same directory, and remove it only when there is none.
"""

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


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
        if cwd == workdir and any(Path(a.decode(errors="ignore")).name == "snakemake" for a in cmdline[:2]):
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


def run(snakemake_args, profile="profiles/local", workdir="."):
    """Run snakemake with `profile` and extra arguments; returns its exit status."""
    if not (Path(workdir) / "Snakefile").exists():
        raise FileNotFoundError(f"no Snakefile in {Path(workdir).resolve()}: run from the "
                                f"dsa110-contimg checkout")
    remove_stale_locks(workdir)
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [str(snakemake if snakemake.exists() else "snakemake"), "--profile", profile,
           *snakemake_args]
    log.info("running %s", " ".join(cmd))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.call(cmd, cwd=workdir, env=env)


def _run(args):
    return run(args.snakemake_args, profile=args.profile)


def register_cli(sub):
    p = sub.add_parser("run", help="run the workflow (clears locks a killed run left behind)")
    p.add_argument("--profile", default="profiles/local",
                   help="Snakemake profile (profiles/local or profiles/slurm)")
    p.add_argument("snakemake_args", nargs="*",
                   help="further snakemake arguments, after --, e.g. -- --config start=2026-01-02")
    p.set_defaults(func=_run)
