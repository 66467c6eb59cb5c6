"""Retries and recovery on real snakemake runs: a failure that happens once, a job killed
with SIGKILL, a corrupt UVH5 file (kept going, then quarantined), a read-only output
directory, a job killed after its renames but before Snakemake recorded it, a second run
on a busy results directory. Each ends with products equal to a clean run's and nothing
lost; plus the backoff helper against a real CASA table lock."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import yaml

from dsa110_contimg.workflow import faults, runner

from pipeline import (
    BIN,
    FAST_IMAGING,
    REPO,
    SMALL_GROUPS,
    assert_ms_equal,
    assert_products_equal,
    env,
    executed_jobs,
    failure_report,
    no_partials,
    product_targets,
    readme_run,
    run,
    snakemake_cmd,
)

pytestmark = pytest.mark.workflow
GOOD, BAD = SMALL_GROUPS


def _convert_jobs(log):
    return [wc["group"] for rule, wc in executed_jobs(log) if rule == "convert"]


def test_backoff_delays_grow_geometrically_and_are_capped():
    assert faults.backoff_delays(6, base_s=0.5, factor=2, max_s=5) == [0.5, 1, 2, 4, 5]
    assert faults.backoff_delays(1) == []


def test_backoff_retries_only_transient_errors():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(11, "Resource temporarily unavailable")
        return "ok"

    assert faults.with_backoff(flaky, attempts=5, base_s=0.1, sleep=waits.append) == "ok"
    assert len(calls) == 3 and waits == [0.1, 0.2]

    def broken():
        calls.append(1)
        raise ValueError("bad.ms: no DATA column")

    calls.clear()
    with pytest.raises(ValueError, match="no DATA column"):
        faults.with_backoff(broken, attempts=5, sleep=waits.append)
    assert len(calls) == 1

    calls.clear()
    with pytest.raises(OSError, match="Device or resource busy"):
        faults.with_backoff(lambda: calls.append(1) or flaky_forever(), attempts=3, base_s=0.01)
    assert len(calls) == 3


def flaky_forever():
    raise OSError(16, "Device or resource busy")


def test_backoff_waits_out_a_real_casa_table_lock(clean_small_run, tmp_path, caplog):
    """Another process holds a permanent write lock on an MS for ~2 s: opening it with a
    permanent lock fails at first ('could not be acquired'), then succeeds on a retry."""
    import shutil

    ms = tmp_path / "locked.ms"
    shutil.copytree(clean_small_run / "ms" / f"{GOOD}.ms", ms)
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        expected_rows = t.nrows()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom casacore import tables\n"
            "t = tables.table(sys.argv[1], readonly=False, lockoptions='permanent', ack=False)\n"
            "print('locked', flush=True)\ntime.sleep(2.0)\nt.close()\n",
            str(ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RuntimeError) as err:
        tables.table(str(ms), readonly=False, lockoptions="permanent", ack=False)
    assert faults.is_transient(err.value), str(err.value)
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="dsa110_contimg.workflow.faults"):
        with faults.open_table(ms, readonly=False) as t:
            nrows = t.nrows()
    waited = time.monotonic() - t0
    holder.wait(timeout=30)
    assert nrows == expected_rows > 0
    assert 1.0 < waited < 10.0, waited
    assert sum("transient error" in r.message for r in caplog.records) >= 2


def test_fail_once_switch_marks_and_then_passes(tmp_path):
    environ = {
        faults.FAIL_ONCE_ENV: f"convert:{BAD},image:*",
        faults.FAIL_ONCE_DIR_ENV: str(tmp_path),
    }
    faults.fail_once_if_requested("convert", GOOD, environ)
    with pytest.raises(faults.InjectedFailure, match=f"convert for group {BAD}"):
        faults.fail_once_if_requested("convert", BAD, environ)
    faults.fail_once_if_requested("convert", BAD, environ)
    with pytest.raises(faults.InjectedFailure):
        faults.fail_once_if_requested("image", GOOD, environ)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"convert.{BAD}.failed",
        f"image.{GOOD}.failed",
    ]


def test_transient_failure_succeeds_on_retry(small_archive, clean_small_run, tmp_path):
    results = tmp_path / "results"
    status, log = run(
        small_archive,
        results,
        *product_targets(results),
        DSA110_FAIL_ONCE=f"convert:{BAD}",
        DSA110_FAIL_ONCE_DIR=tmp_path / "markers",
    )
    assert status == 0, failure_report(log)
    assert sorted(_convert_jobs(log)) == sorted([GOOD, BAD, BAD])
    assert log.count("Error in rule convert") == 1
    assert "Trying to restart job" in log
    assert (tmp_path / "markers" / f"convert.{BAD}.failed").exists()
    # the retry asked for more: convert's mem_mb is config convert.mem_mb x attempt
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert f"mem_mb={2 * config['convert']['mem_mb']}" in log
    assert_products_equal(results, clean_small_run)
    assert no_partials(results) == []


def _find_process(predicate, timeout=600, poll_s=0.05, what="process"):
    """PID of the first process whose command line (list of args) satisfies `predicate`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if predicate([a.decode(errors="ignore") for a in cmd]):
                return int(proc.name)
        time.sleep(poll_s)
    raise AssertionError(f"{what} never started")


def _wait_for_convert(group, results, timeout=300):
    """PID of the convert process for `group` once it has started writing its MS."""

    def converting(args):
        return (
            "convert" in args
            and group in args
            and str(results) in " ".join(args)
            and any(Path(a).name == "dsa110-contimg" for a in args[:2])
            and list((results / "ms").glob(f"{group}.ms.partial-*"))
        )

    return _find_process(converting, timeout, poll_s=0.02, what=f"convert of {group}")


def test_sigkill_during_a_job_then_rerun(small_archive, clean_small_run, tmp_path):
    results = tmp_path / "results"
    cmd = snakemake_cmd(
        small_archive, results, *product_targets(results), "--retries", "0", "-j", "1"
    )
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    pid = _wait_for_convert(BAD, results)
    os.kill(pid, signal.SIGKILL)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, log
    assert "Error in rule convert" in log and f"group={BAD}" in log
    assert not (results / "ms" / f"{BAD}.ms").exists()
    assert (results / "ms" / f"{GOOD}.ms").exists()
    good_mtime = (results / "ms" / f"{GOOD}.ms").stat().st_mtime_ns

    status, log2 = run(small_archive, results, *product_targets(results))
    assert status == 0, failure_report(log2)
    assert executed_jobs(log2) == [("convert", {"group": BAD})], log2
    assert (results / "ms" / f"{GOOD}.ms").stat().st_mtime_ns == good_mtime
    assert no_partials(results) == []
    assert_products_equal(results, clean_small_run)


def _corrupt_visdata_index(path):
    """Break the chunk index (a B-tree node) of Data/visdata: the header still reads,
    the visibilities do not. The telescope's files are chunked but not compressed, so
    the index is what a damaged write breaks; the node is found by trying each B-tree
    signature in the file on a copy."""
    import re
    import shutil

    raw = Path(path).read_bytes()
    trial = Path(path).with_suffix(".trial")
    for match in re.finditer(b"TREE", raw):
        shutil.copy(path, trial)
        with open(trial, "r+b") as fh:
            fh.seek(match.start())
            fh.write(b"\xff" * 4)
        try:
            with h5py.File(trial, "r") as fh:
                _ = fh["Header/time_array"][()], fh["Data/visdata"].shape
                try:
                    fh["Data/visdata"][()]
                    continue
                except OSError:
                    pass
        except (OSError, KeyError):
            continue
        trial.unlink()
        with open(path, "r+b") as fh:
            fh.seek(match.start())
            fh.write(b"\xff" * 4)
        return
    trial.unlink(missing_ok=True)
    raise AssertionError(f"{path}: found no chunk index to break")


def test_corrupt_uvh5_keeps_going_then_quarantine_completes(
    archive_copy, clean_small_run, tmp_path
):
    bad_file = sorted(archive_copy.glob("2026-01-01T00:01:4*_sb05.hdf5"))
    assert len(bad_file) == 1
    _corrupt_visdata_index(bad_file[0])
    results = tmp_path / "results"

    status, log = run(archive_copy, results)
    assert status != 0
    # retried (profile retries: 1), then named: rule, group and the job's log
    assert _convert_jobs(log).count(BAD) == 2 and _convert_jobs(log).count(GOOD) == 1
    assert f"group={BAD}" in log and "Error in rule convert" in log
    bad_log = (results / "logs" / "convert" / f"{BAD}.log").read_text()
    assert (
        f"{bad_file[0]}: cannot read visibilities" in bad_log
        and "wrong B-tree signature" in bad_log
    )
    assert not (results / "ms" / f"{BAD}.ms").exists()
    assert_ms_equal(results / "ms" / f"{GOOD}.ms", clean_small_run / "ms" / f"{GOOD}.ms")
    good_mtime = (results / "ms" / f"{GOOD}.ms").stat().st_mtime_ns

    status, log2 = run(archive_copy, results, config=[f"quarantine=[{BAD}]"])
    assert status == 0, failure_report(log2)
    ran = executed_jobs(log2)
    assert all(wc.get("group") != BAD for _, wc in ran), ran
    assert "convert" not in [rule for rule, _ in ran]
    assert (results / "ms" / f"{GOOD}.ms").stat().st_mtime_ns == good_mtime
    summary = json.loads((results / "qa" / "manifest" / "summary.json").read_text())
    assert summary["quarantined"] == [BAD]
    assert summary["n_groups_used"] == 1
    assert summary["n_subband_files"]["quarantined"] == 16
    assert no_partials(results) == []

    status, log3 = run(archive_copy, results, config=[f"quarantine=[{BAD}]"])
    assert status == 0 and "Nothing to be done" in log3, log3


def _read_only_wrapper(path):
    """Run a command with `path` mounted read-only in a private mount namespace (root
    ignores file permissions, so a read-only mount is the way to refuse it writes)."""
    if os.geteuid() != 0:
        pytest.fail(
            "the read-only output test needs root (mount namespace); run as root as CI does"
        )
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(path))


def test_read_only_output_directory_then_rerun(small_archive, clean_small_run, tmp_path):
    results = tmp_path / "results"
    status, log = run(small_archive, results, str(results / "ms" / f"{GOOD}.ms"))
    assert status == 0, failure_report(log)
    good_mtime = (results / "ms" / f"{GOOD}.ms").stat().st_mtime_ns

    status, log = run(
        small_archive, results, *product_targets(results), wrap=_read_only_wrapper(results / "ms")
    )
    assert status != 0, log
    # Snakemake 9.27 clears a job's old output before it runs; on a read-only directory
    # that raises EROFS (not ENOENT) and the whole run stops with the path named.
    assert _convert_jobs(log) == [BAD], log
    assert f"Read-only file system: '{results / 'ms' / BAD}.ms'" in log, log
    assert (results / "ms" / f"{GOOD}.ms").stat().st_mtime_ns == good_mtime
    assert_ms_equal(results / "ms" / f"{GOOD}.ms", clean_small_run / "ms" / f"{GOOD}.ms")
    assert no_partials(results) == []

    status, log = run(small_archive, results, *product_targets(results))
    assert status == 0, failure_report(log)
    assert sorted(executed_jobs(log), key=str) == [
        ("convert", {"group": BAD}),
        ("qa_manifest", {}),
    ], log
    assert (results / "ms" / f"{GOOD}.ms").stat().st_mtime_ns == good_mtime
    assert_products_equal(results, clean_small_run)


def _children(pid):
    """PIDs of the direct children of `pid`."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(c) for c in path.read_text().split()]
    except OSError:
        return []


def _proc_state(pid):
    """The process state letter (R, S, T, Z, ...), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_job_killed_before_snakemake_recorded_it_is_rerun(small_archive, tmp_path, capsys):
    """qa_image (downstream of the calibration checkpoint) renames its JSON and PNG into
    place, and snakemake is SIGKILLed before it records the job: the rerun of the README's
    command makes that product again, leaves no incomplete marker, and afterwards
    `snakemake -n` has nothing to do and the product can be asked for by name."""
    results = tmp_path / "results"
    qa_json, qa_png = (results / "qa" / "image" / f"{GOOD}.{ext}" for ext in ("json", "png"))
    run1 = readme_run(small_archive, results, str(qa_json), start_new_session=True)
    # freeze snakemake as soon as the qa_image job starts, let the job finish its atomic
    # renames, then kill the whole run: the job's outputs exist, its record does not
    job = _find_process(lambda a: "qa-image" in a and str(qa_json) in a)
    snakemake = next(
        p
        for p in _children(run1.pid)
        if "snakemake" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="ignore")
    )
    os.kill(snakemake, signal.SIGSTOP)
    deadline = time.time() + 300
    while _proc_state(job) not in (None, "Z") and time.time() < deadline:
        time.sleep(0.1)
    assert _proc_state(job) in (None, "Z"), "qa-image did not finish"
    os.killpg(run1.pid, signal.SIGKILL)
    run1.wait(timeout=60)
    assert qa_json.exists() and qa_png.exists()
    marked = {out for _, out, _ in runner.incomplete_markers(REPO)}
    assert {str(qa_json), str(qa_png)} <= marked, marked
    killed_mtime = qa_json.stat().st_mtime_ns

    run2 = readme_run(small_archive, results)
    log, _ = run2.communicate(timeout=900)
    assert run2.returncode == 0, failure_report(log)
    assert ("qa_image", {"group": GOOD}) in executed_jobs(log), log
    assert "removed 2 output(s) of job(s) killed before Snakemake recorded them" in log
    assert qa_json.stat().st_mtime_ns > killed_mtime
    assert not [
        out for _, out, _ in runner.incomplete_markers(REPO) if out.startswith(str(results))
    ]
    assert no_partials(results) == []

    status, dry = run(small_archive, results, "-n")
    assert status == 0, failure_report(dry)
    assert "Nothing to be done" in dry, dry
    assert "missing provenance/metadata" not in dry, dry
    status, log3 = run(small_archive, results, str(qa_json))
    assert status == 0, failure_report(log3)
    assert "IncompleteFilesException" not in log3 and "Nothing to be done" in log3, log3


def test_second_run_on_the_same_results_is_refused(small_archive, clean_small_run, tmp_path):
    """While one `dsa110-contimg run` works on a results directory a second one on the same
    directory is refused (exit 2, naming the first), and neither it nor the stale-lock
    removal touches the live run's Snakemake locks; the first run completes."""
    results = tmp_path / "results"
    first = readme_run(small_archive, results, *product_targets(results))
    locks_dir = REPO / ".snakemake" / "locks"
    # Snakemake writes its input lock, then its output lock: wait for both (under load the
    # second came after a snapshot taken at the first)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(locks_dir.glob("*.lock"))) < 2:
        time.sleep(0.1)
    locks = sorted(locks_dir.glob("*.lock"))
    assert len(locks) == 2 and first.poll() is None, f"the first run never locked: {locks}"

    second = subprocess.run(
        [
            str(BIN / "dsa110-contimg"),
            "run",
            "--",
            *product_targets(results),
            "--cores",
            "2",
            "--configfile",
            str(FAST_IMAGING),
            "--config",
            f"archive_dir={small_archive}",
            f"results_dir={results}",
        ],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    message = second.stdout + second.stderr
    assert second.returncode == runner.EXIT_BUSY == 2, message
    assert (
        f"another dsa110-contimg run (pid {first.pid} on {os.uname().nodename}, started " in message
    )
    assert (
        f"is processing {results}; refusing to start a second one on the same results "
        "directory. Wait for it to finish (or stop it), then run this command again."
    ) in message
    assert runner.remove_stale_locks(REPO) == 0
    assert sorted(locks_dir.glob("*.lock")) == locks and first.poll() is None

    log, _ = first.communicate(timeout=900)
    assert first.returncode == 0, failure_report(log)
    assert_products_equal(results, clean_small_run)


def test_zeroed_raw_data_is_rejected_listed_in_qa_and_never_imaged(archive_copy, tmp_path):
    """A group whose raw visibilities are all zero (headers, samples and flags valid):
    flagging finds every antenna dead, so the MS is rejected by the converter's sanity
    check (no unflagged data), named in the job log and by
    `dsa110-contimg run`, nothing downstream of it is made, and once the group is
    quarantined the run completes with the rejection listed in qa/summary.parquet."""
    import pandas as pd

    for path in sorted(archive_copy.glob("2026-01-01T00:01:4*_sb*.hdf5")):
        with h5py.File(path, "r+") as fh:
            fh["Data/visdata"][...] = 0
    results = tmp_path / "results"
    summary = results / "qa" / "summary.parquet"
    proc = readme_run(archive_copy, results, str(summary))
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 1, out
    assert _convert_jobs(out).count(BAD) == 2, "retried once, rejected both times"
    detail = "rejected (all_flagged): no unflagged data"
    bad_log = (results / "logs" / "convert" / f"{BAD}.log").read_text()
    assert f"convert product {results / 'ms' / f'{BAD}.ms'} {detail}" in bad_log
    assert "1 products were rejected by their sanity checks" in out
    assert f"convert {BAD}: rejected: no unflagged data" in out
    assert not (results / "ms" / f"{BAD}.ms").exists()
    assert not (results / "images" / BAD).exists() and not summary.exists()
    assert (results / "images" / GOOD / "image.fits").exists(), "the good group went on"

    proc = readme_run(archive_copy, results, str(summary), config=[f"quarantine=[{BAD}]"])
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out
    table = pd.read_parquet(summary)
    rejected = table[table.stage == "convert"]
    assert rejected[["name", "status", "failed"]].values.tolist() == [[BAD, "fail", "all_flagged"]]
    assert rejected["product"].tolist() == [str(results / "ms" / f"{BAD}.ms")]
    assert (table.name == GOOD).sum() >= 3, "the good group's flag, apply and image QA"
    assert no_partials(results) == []
