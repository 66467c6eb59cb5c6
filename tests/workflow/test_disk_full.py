"""A results directory on a small file system that fills up during conversion: the
failing jobs leave nothing that looks finished, the message says the disk is full, and
once space is freed the same command completes with the products a clean run makes."""

import os
import re
import subprocess

import pytest

from pipeline import (
    SMALL_GROUPS,
    assert_products_equal,
    failure_report,
    no_partials,
    product_targets,
    run,
)

pytestmark = pytest.mark.workflow


@pytest.fixture
def small_filesystem(tmp_path):
    """A 160 MiB tmpfs mounted on tmp_path/results (root only, as CI runs)."""
    if os.geteuid() != 0:
        pytest.fail("the disk-full test mounts a tmpfs and needs root; run as root as CI does")
    results = tmp_path / "results"
    results.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(results)], check=True)
    yield results
    subprocess.run(["umount", "-l", str(results)], check=False)


def test_disk_full_leaves_no_product_and_rerun_completes(
    small_archive, clean_small_run, small_filesystem
):
    results = small_filesystem
    ballast = results / "ballast"
    # leave ~3 MiB: the manifest fits, a 5 MB Measurement Set does not
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={ballast}", "bs=1M", "count=157", "status=none"], check=True
    )
    status, log = run(small_archive, results, *product_targets(results))
    assert status != 0, log
    assert "Error in rule convert" in log
    # casacore's own words, shown from the job's log (show-failed-logs in the profile)
    assert re.search(
        r"write error for file \S+\.ms\.partial-\d+/\S+: No space left on device", log
    ), log
    # casacore aborts the process, so its temporary may stay, under its .partial- name
    # (the next attempt removes it); nothing carries a finished product's name
    assert list((results / "ms").iterdir()) == [
        p for p in (results / "ms").iterdir() if ".partial-" in p.name
    ]
    assert (results / "manifest" / "groups.parquet").exists()

    ballast.unlink()
    status, log = run(small_archive, results, *product_targets(results))
    assert status == 0, failure_report(log)
    assert_products_equal(results, clean_small_run, groups=SMALL_GROUPS)
    assert no_partials(results) == []
