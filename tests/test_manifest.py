"""Manifest: header-only grouping, and the reasons files or groups are left out."""

import shutil

import numpy as np
import pytest

from dsa110_contimg.manifest import build_manifest, find_archive_files, read_header, write_manifest


def _files(archive, subband):
    return sorted(archive.glob(f"*_sb{subband:02d}.hdf5"))


def test_clean_archive_gives_complete_groups(small_archive, tmp_path):
    groups, rejected = write_manifest(find_archive_files(small_archive), tmp_path / "g.parquet", tmp_path / "r.parquet")
    assert len(groups) == 2 and len(rejected) == 0
    g = groups.iloc[0]
    assert g.n_subbands == 16 and list(g.subbands) == list(range(15, -1, -1))
    assert g.n_channels == 32 and g.n_times == 8 and g.n_antennas == 10
    assert g.dec_deg == pytest.approx(33.0)
    duration_s = (g.end_mjd - g.start_mjd) * 86400
    assert duration_s == pytest.approx(8 * 12.885, abs=0.01)
    lst_span = (g.lst_end_deg - g.lst_start_deg) % 360
    assert lst_span == pytest.approx(7 * 12.885 / 240 * 1.0027379, rel=1e-3)
    freqs = [read_header(f)["freq_min_hz"] for f in g.files]
    assert np.all(np.diff(freqs) > 0), "files listed in frequency order"


def test_incomplete_group_is_left_out_with_reason(archive_copy):
    _files(archive_copy, 7)[0].unlink()
    groups, rejected = build_manifest(find_archive_files(archive_copy))
    assert len(groups) == 1
    bad = rejected[rejected.reason.str.startswith("incomplete group")]
    assert len(bad) == 15
    assert set(bad.reason) == {"incomplete group: missing sb07"}


def test_truncated_file_is_left_out_with_reason(archive_copy):
    victim = _files(archive_copy, 3)[1]
    size = victim.stat().st_size
    with open(victim, "r+b") as fh:
        fh.truncate(size // 2)
    groups, rejected = build_manifest(find_archive_files(archive_copy))
    assert len(groups) == 1
    row = rejected[rejected.path == str(victim)].iloc[0]
    assert row.reason.startswith("truncated file")
    assert (rejected.reason == "incomplete group: missing sb03").sum() == 15


def test_duplicate_subband_is_left_out_with_reason(archive_copy):
    original = _files(archive_copy, 5)[0]
    stamp = original.name.split("_sb")[0]
    duplicate = archive_copy / f"{stamp[:-2]}{int(stamp[-2:]) + 9:02d}_sb05.hdf5"
    shutil.copy(original, duplicate)
    groups, rejected = build_manifest(find_archive_files(archive_copy))
    assert len(groups) == 2
    assert len(rejected) == 1
    assert rejected.reason[0] == f"duplicate subband sb05 (already provided by {original.name})"
    assert str(duplicate) not in list(groups.files[0])


def test_unreadable_file_does_not_stop_the_manifest(archive_copy):
    junk = archive_copy / "2026-01-01T00:00:59_sb02.hdf5"
    assert not junk.exists()
    junk.write_bytes(b"not an hdf5 file")
    groups, rejected = build_manifest(find_archive_files(archive_copy))
    assert rejected[rejected.path == str(junk)].reason.iloc[0].startswith("unreadable HDF5")


def test_date_window_selects_groups(small_archive):
    groups, _ = build_manifest(find_archive_files(small_archive), start="2026-01-01T00:01:00")
    assert list(groups.group) == ["2026-01-01T000144"]
