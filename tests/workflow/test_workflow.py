"""Real snakemake on simulated data: lint, kill during conversion, rerun, nothing to do."""

import os
import signal
import subprocess
import time

import pytest

from pipeline import BIN, REPO, assert_ms_equal, env, failure_report, readme_run

pytestmark = pytest.mark.workflow


def test_snakemake_lint_is_clean():
    out = subprocess.run(
        [str(BIN / "snakemake"), "--lint"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def test_killed_run_is_finished_by_rerunning(archive_copy, tmp_path):
    junk = archive_copy / "2026-01-01T00:00:30_sb16.hdf5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    proc = readme_run(archive_copy, killed, start_new_session=True)
    deadline = time.time() + 300
    partial = []
    while time.time() < deadline and not partial:
        partial = list((killed / "ms").glob("*.partial-*")) if (killed / "ms").exists() else []
        time.sleep(0.05)
    assert partial, "conversion never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = sorted(p.name for p in (killed / "ms").glob("*.ms"))
    assert partial[0].name.split(".partial-")[0] not in finished_before

    rerun = readme_run(archive_copy, killed)
    log, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, failure_report(log)
    assert "removed 1 stale Snakemake lock" in log or "removed 2 stale Snakemake lock" in log

    reference = readme_run(archive_copy, clean)
    log_clean, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, failure_report(log_clean)

    names = sorted(p.name for p in (killed / "ms").iterdir())
    assert names == ["2026-01-01T000000.ms", "2026-01-01T000144.ms"], names
    for name in names:
        assert_ms_equal(killed / "ms" / name, clean / "ms" / name)

    manifest_log = (killed / "logs" / "manifest" / "manifest.log").read_text()
    assert f"left out {junk}: unreadable HDF5" in manifest_log

    again = readme_run(archive_copy, killed)
    log_again, _ = again.communicate(timeout=300)
    assert again.returncode == 0
    assert "Nothing to be done" in log_again
