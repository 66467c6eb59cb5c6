"""Manifest: header-only grouping by the integrations' times, and the reasons files or
groups are left out."""

import shutil

import h5py
import numpy as np
import pytest

from dsa110_contimg.ingest.manifest import (
    archive_state,
    build_manifest,
    find_archive_files,
    write_manifest,
)
from dsa110_contimg.ingest.uvh5 import read_header

from pipeline import REPO


def _files(archive, subband):
    return sorted(archive.glob(f"*_sb{subband:02d}.hdf5"))


def test_clean_archive_gives_complete_groups(small_archive, tmp_path):
    groups, rejected = write_manifest(
        find_archive_files(small_archive), tmp_path / "g.parquet", tmp_path / "r.parquet"
    )
    assert len(groups) == 2 and len(rejected) == 0
    g = groups.iloc[0]
    assert g.n_subbands == 16 and list(g.subbands) == list(range(15, -1, -1))
    assert g.n_channels == 32 and g.n_times == 8 and g.n_antennas == 10
    assert g.dec_deg == pytest.approx(54.5734, abs=1e-4)
    duration_s = (g.end_mjd - g.start_mjd) * 86400
    assert duration_s == pytest.approx(8 * 12.884902, abs=1e-3)
    lst_span = (g.lst_end_deg - g.lst_start_deg) % 360
    assert lst_span == pytest.approx(7 * 12.884902 / 240 * 1.0027379, rel=1e-4)
    assert list(groups.group) == ["2026-01-01T000000", "2026-01-01T000144"]
    own = [c for c in groups.columns if not c.startswith("calibrator")]
    assert not groups[own].isna().any().any(), "no NaN in the groups table"
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


def _rename(path, seconds_after):
    """Rename a raw file as if its node had opened it `seconds_after` its group's start."""
    from datetime import datetime, timedelta

    stamp, sb = path.name.split("_sb")
    start = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(second=0)
    new = path.with_name(
        f"{(start + timedelta(seconds=seconds_after)).strftime('%Y-%m-%dT%H:%M:%S')}_sb{sb}"
    )
    path.rename(new)
    return new


def test_subband_named_55_s_late_joins_its_group(archive_copy):
    late = _rename(_files(archive_copy, 9)[0], 55)
    assert late.name.startswith("2026-01-01T00:00:55")
    groups, rejected = build_manifest(find_archive_files(archive_copy))
    assert rejected.empty and len(groups) == 2
    assert str(late) in list(groups.files[0]) and groups.group[0] == "2026-01-01T000000"


def test_incomplete_file_is_ignored(archive_copy):
    partial = archive_copy / "2026-01-01T00:00:10_sb04_incomplete.hdf5"
    shutil.copy(_files(archive_copy, 4)[0], partial)
    assert partial not in find_archive_files(archive_copy)
    groups, rejected = build_manifest(find_archive_files(archive_copy) + [partial])
    assert len(groups) == 2 and rejected.empty
    assert str(partial) not in list(groups.files[0])


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("no_dec", "no pointing declination (Header/extra_keywords/phase_center_dec missing)"),
        (
            "shape",
            "inconsistent shapes: Data/visdata (440, 1, 2, 2) is not "
            "(Nblts, 1, Nfreqs, Npols) = (440, 1, 3, 2)",
        ),
        (
            "freqs",
            "frequencies 1372.789-1378.648 MHz do not match subband sb05 (1428.453-1440.172 MHz)",
        ),
    ],
)
def test_bad_header_is_rejected_with_reason(archive_copy, tmp_path, damage, reason):
    victim = _files(archive_copy, 5)[0]
    with h5py.File(victim, "r+") as fh:
        if damage == "no_dec":
            del fh["Header/extra_keywords/phase_center_dec"]
        elif damage == "shape":
            fh["Header/Nfreqs"][...] = 3
        else:
            with h5py.File(_files(archive_copy, 10)[0], "r") as other:
                fh["Header/freq_array"][...] = other["Header/freq_array"][()]
    groups, rejected = write_manifest(
        find_archive_files(archive_copy), tmp_path / "g.parquet", tmp_path / "r.parquet"
    )
    import pandas as pd

    stored = pd.read_parquet(tmp_path / "r.parquet")
    assert stored[stored.path == str(victim)].reason.tolist() == [reason]
    assert len(groups) == 1 and str(victim) not in list(groups.files[0])
    assert (stored.reason == "incomplete group: missing sb05").sum() == 15


def test_demo_pointing_marks_its_calibrator_group(tmp_path):
    """The demo's pointing (Dec +54.57) with J0834+555 placed in group 1: the manifest
    marks that group as a calibrator group (J0834+555 transits ~0.9 deg north of the
    pointing: J2000 Dec +55.57, apparent +55.48 in 2026)."""

    from dsa110_contimg.calibrators import read_calibrator_catalog
    from dsa110_contimg.simulation.visibilities import (
        SimulationSettings,
        calibrator_placement,
        simulate_archive,
    )

    catalog = REPO / "config" / "calibrators.csv"
    cals = read_calibrator_catalog(catalog)
    settings = SimulationSettings(
        n_antennas=4,
        n_channels=1,
        n_groups=3,
        n_sources=0,
        noise=False,
        calibrators=[calibrator_placement(cals, "J0834+555", 1)],
    )
    assert settings.dec_deg == pytest.approx(54.5734, abs=1e-4)
    simulate_archive(tmp_path, settings)
    groups, rejected = build_manifest(find_archive_files(tmp_path), calibrators=catalog)
    assert rejected.empty and len(groups) == 3
    assert groups.has_calibrator.tolist() == [False, True, False]
    assert groups.calibrator[1] == "J0834+555"
    assert 0.85 < groups.calibrator_offset_deg[1] < 1.05


def test_archive_state_changes_with_new_completed_or_rewritten_files(archive_copy):
    """The manifest's rerun trigger: the same archive gives the same digest; a file still
    being written, its completion (rename), a rewrite and a removal each change it."""
    import os

    first = archive_state(archive_copy)
    assert archive_state(archive_copy) == first and len(first) == 64
    victim = _files(archive_copy, 3)[0]
    partial = victim.with_name(victim.name.replace(".hdf5", "_incomplete.hdf5"))
    shutil.copy(victim, partial)
    states = [first, archive_state(archive_copy)]
    done = partial.with_name("2026-01-02T00:00:00_sb03.hdf5")
    partial.rename(done)
    states.append(archive_state(archive_copy))
    st = done.stat()
    os.utime(done, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    states.append(archive_state(archive_copy))
    done.unlink()
    states.append(archive_state(archive_copy))
    assert len(set(states[:4])) == 4 and states[4] == first
