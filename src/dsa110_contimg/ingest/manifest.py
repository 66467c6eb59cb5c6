"""Group manifest: which raw UVH5 subband files make up each ~5-minute observation.

Reads only the UVH5 headers (h5py, uvh5.read_header) and groups files by the times of
their integrations (`time_array`), not by their names: the correlator nodes name their
files by the wall-clock time they opened them, which differs between the subbands of one
group by up to about a minute. Records per group its time and LST range, pointing
declination (`phase_center_dec`, radians in the files, degrees here) and subbands.
Files still being written (`*_incomplete.hdf5`) are ignored. Files that cannot be used
(unreadable, truncated, no pointing declination, inconsistent shapes, frequencies that are
not their subband's, duplicate subband, times inconsistent with their group) and groups
missing subbands are listed with a reason and left out; the run goes on.
"""

import hashlib
import inspect
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.calibrators import (
    CATALOG_COLUMNS,
    TRANSIT_COLUMNS,
    calibrator_transits,
    read_calibrator_catalog,
)
from dsa110_contimg.ingest.uvh5 import (
    FILENAME_RE,
    INCOMPLETE_SUFFIX,
    HeaderError,
    parse_filename,
    read_header,
)
from dsa110_contimg.provenance import provenance

log = logging.getLogger(__name__)

GROUP_ID_FORMAT = "%Y-%m-%dT%H%M%S"

__all__ = [
    "FILENAME_RE",
    "HeaderError",
    "build_manifest",
    "archive_state",
    "find_archive_files",
    "parse_filename",
    "read_groups",
    "read_header",
    "write_manifest",
]

GROUP_COLUMNS = [
    "group",
    "start_time",
    "end_time",
    "start_mjd",
    "end_mjd",
    "mid_mjd",
    "lst_start_deg",
    "lst_end_deg",
    "dec_deg",
    "n_subbands",
    "subbands",
    "files",
    "n_times",
    "n_antennas",
    "n_channels",
    "freq_min_hz",
    "freq_max_hz",
    *TRANSIT_COLUMNS,  # calibrator transit (calibrators.calibrator_transits)
]
REJECT_COLUMNS = ["path", "group", "subband", "reason"]


def find_archive_files(archive_dir):
    """All `*_sbNN.hdf5` files under `archive_dir` (sorted); files still being written
    (`*_incomplete.hdf5`) are not part of the archive."""
    archive = Path(archive_dir)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive directory {archive} does not exist")
    return sorted(
        p
        for p in archive.rglob("*.hdf5")
        if "_sb" in p.name and not p.name.endswith(INCOMPLETE_SUFFIX)
    )


def archive_state(archive_dir):
    """sha256 over the sorted (path, size, mtime) of every `*.hdf5` file under
    `archive_dir` (those still being written included): a new, removed, completed or
    rewritten file changes it. The workflow passes it to the manifest checkpoint as a
    parameter, so that such a change reruns the manifest without listing a month's
    ~134,000 files as the rule's inputs (Snakemake compares each consumer's input list
    with its producer's, which made a month's DAG cost grow with the square of its size)."""
    archive = Path(archive_dir)
    if not archive.is_dir():
        raise FileNotFoundError(f"archive directory {archive} does not exist")
    digest = hashlib.sha256()
    for path in sorted(archive.rglob("*.hdf5")):
        st = path.stat()
        digest.update(f"{path.relative_to(archive)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def group_id(start_jd):
    """Group name: the first whole second at or after the group's first integration
    starts (1 ms tolerance), as YYYY-MM-DDTHHMMSS. It comes from the header times, so
    it does not depend on which subband's file name is earliest."""
    from astropy.time import Time

    t = Time(start_jd, format="jd", scale="utc")
    seconds = t.unix
    whole = math.ceil(seconds - 1e-3)
    return Time(whole, format="unix", scale="utc").datetime.strftime(GROUP_ID_FORMAT)


def _cluster(headers, tolerance_s):
    """Split headers (sorted by header start time) where the gap to a cluster's first file
    exceeds `tolerance_s` or half the file's duration, whichever is smaller."""
    clusters = []
    for h in sorted(headers, key=lambda h: (h["start_jd"], h["path"])):
        limit = min(tolerance_s, 0.5 * (h["end_jd"] - h["start_jd"]) * 86400.0)
        if clusters and (h["start_jd"] - clusters[-1][0]["start_jd"]) * 86400.0 <= limit:
            clusters[-1].append(h)
        else:
            clusters.append([h])
    return clusters


def _check_group(members, expected_subbands):
    """Split a cluster into accepted files (one per subband) and rejections."""
    ref = float(np.median([h["start_jd"] for h in members]))
    group = group_id(min((h["start_jd"] for h in members), key=lambda t: abs(t - ref)))
    rejects, by_subband = [], {}
    for h in sorted(members, key=lambda h: (h["file_time"], h["path"])):
        sb = h["subband"]
        if sb in by_subband:
            rejects.append(
                (
                    h["path"],
                    group,
                    sb,
                    f"duplicate subband sb{sb:02d} (already provided by "
                    f"{Path(by_subband[sb]['path']).name})",
                )
            )
        else:
            by_subband[sb] = h
    ref_start = float(np.median([h["start_jd"] for h in by_subband.values()]))
    for sb, h in list(by_subband.items()):
        tolerance = h["integration_s"] / 2.0 / 86400.0
        problem = None
        if abs(h["start_jd"] - ref_start) > tolerance:
            problem = (
                f"header start time differs from the group's by "
                f"{(h['start_jd'] - ref_start) * 86400:.1f} s"
            )
        elif sb not in expected_subbands:
            problem = f"unexpected subband sb{sb:02d}"
        if problem:
            rejects.append((h["path"], group, sb, problem))
            del by_subband[sb]
    missing = sorted(set(expected_subbands) - set(by_subband))
    if missing:
        names = ", ".join(f"sb{m:02d}" for m in missing)
        reason = f"incomplete group: missing {names}"
        rejects += [(h["path"], group, sb, reason) for sb, h in by_subband.items()]
        return group, None, rejects
    return group, by_subband, rejects


def _group_row(group, by_subband):
    from astropy.time import Time

    hs = sorted(by_subband.values(), key=lambda h: h["freq_min_hz"])
    start = min(h["start_jd"] for h in hs)
    end = max(h["end_jd"] for h in hs)
    t = Time([start, end, (start + end) / 2], format="jd", scale="utc")
    return {
        "group": group,
        "start_time": t[0].isot,
        "end_time": t[1].isot,
        "start_mjd": t[0].mjd,
        "end_mjd": t[1].mjd,
        "mid_mjd": t[2].mjd,
        "lst_start_deg": hs[0]["lst_start_deg"],
        "lst_end_deg": hs[0]["lst_end_deg"],
        "dec_deg": float(np.median([h["dec_deg"] for h in hs])),
        "n_subbands": len(hs),
        "subbands": [h["subband"] for h in hs],
        "files": [h["path"] for h in hs],
        "n_times": hs[0]["n_times"],
        "n_antennas": hs[0]["n_antennas"],
        "n_channels": int(sum(h["n_freqs"] for h in hs)),
        "freq_min_hz": hs[0]["freq_min_hz"],
        "freq_max_hz": hs[-1]["freq_max_hz"],
    }


def build_manifest(
    paths,
    tolerance_s=60.0,
    expected_subbands=range(16),
    start=None,
    end=None,
    calibrators=None,
    beam_fraction=0.5,
):
    """Group UVH5 files; returns (groups DataFrame, rejected DataFrame).

    `start`/`end` (ISO strings or None) keep only groups whose start time lies in
    [start, end). `calibrators` (catalog CSV path or DataFrame) fills the calibrator
    transit columns (see calibrators.calibrator_transits); without it no group has one.
    """
    headers, rejects = [], []
    for path in paths:
        if Path(path).name.endswith(INCOMPLETE_SUFFIX):
            log.info("ignoring %s: still being written", path)
            continue
        try:
            headers.append(read_header(path))
        except HeaderError as err:
            rejects.append((str(path), "", -1, str(err).split(": ", 1)[-1]))
    rows = []
    for members in _cluster(headers, tolerance_s):
        group, accepted, bad = _check_group(members, set(expected_subbands))
        rejects += bad
        if accepted is not None:
            rows.append(_group_row(group, accepted))
    groups = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    groups = _add_calibrator_transits(groups, calibrators, beam_fraction)
    if start is not None:
        groups = groups[groups.start_time >= str(start)]
    if end is not None:
        groups = groups[groups.start_time < str(end)]
    rejected = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
    return groups.reset_index(drop=True), rejected


def _add_calibrator_transits(groups, calibrators, beam_fraction):
    if calibrators is None:
        catalog = pd.DataFrame(columns=CATALOG_COLUMNS)
    elif isinstance(calibrators, pd.DataFrame):
        catalog = calibrators
    else:
        catalog = read_calibrator_catalog(calibrators)
    transits = calibrator_transits(groups, catalog, beam_fraction)
    groups = groups.copy()
    for col in TRANSIT_COLUMNS:
        groups[col] = transits[col]
    for g in groups[groups.has_calibrator].itertuples():
        log.info(
            "group %s: calibrator %s transits %.2f deg from the pointing (beam %.2f)",
            g.group,
            g.calibrator,
            g.calibrator_offset_deg,
            g.calibrator_pb_response,
        )
    groups["pointing_calibrator"] = ""
    if calibrators is not None:
        from dsa110_contimg.ingest.pointings import check_pointings

        groups["pointing_calibrator"] = check_pointings(groups, catalog, beam_fraction)
    return groups


def write_manifest(paths, groups_path, rejected_path, **options):
    """Build the manifest of the UVH5 files `paths` (`options`: build_manifest's keywords);
    write groups and rejections to Parquet, with the options in the provenance."""
    paths = [Path(p) for p in paths]
    log.info("manifest: reading headers of %d files", len(paths))
    groups, rejected = build_manifest(paths, **options)
    for r in rejected.itertuples():
        log.warning("left out %s: %s", r.path, r.reason)
    defaults = inspect.signature(build_manifest).parameters
    settings = {k: options.get(k, p.default) for k, p in defaults.items() if k != "paths"}
    settings["expected_subbands"] = list(settings["expected_subbands"])
    if settings["calibrators"] is not None:
        settings["calibrators"] = str(settings["calibrators"])
    meta = provenance(sorted({str(p.parent) for p in paths}), settings)
    write_parquet(rejected, rejected_path, meta)
    write_parquet(groups, groups_path, meta)
    log.info("manifest: %d complete groups, %d files left out", len(groups), len(rejected))
    return groups, rejected


def read_groups(groups_path):
    """The groups table written by `write_manifest`."""
    return pd.read_parquet(groups_path)


def _run(args):
    write_manifest(
        find_archive_files(args.archive),
        args.out,
        args.rejected,
        tolerance_s=args.tolerance_s,
        expected_subbands=range(args.n_subbands),
        start=args.start,
        end=args.end,
        calibrators=args.calibrators,
        beam_fraction=args.beam_fraction,
    )


def register_cli(sub):
    p = sub.add_parser("manifest", help="group raw UVH5 files by reading their headers")
    p.add_argument("archive", help="raw archive directory")
    p.add_argument("--out", required=True, help="groups Parquet to write")
    p.add_argument("--rejected", required=True, help="Parquet listing files left out and why")
    p.add_argument(
        "--tolerance-s",
        type=float,
        default=60.0,
        help="files whose first integration starts within this of a group's first file join it",
    )
    p.add_argument("--n-subbands", type=int, default=16, help="subbands a complete group has")
    p.add_argument("--start", help="keep groups starting at or after this ISO time")
    p.add_argument("--end", help="keep groups starting before this ISO time")
    p.add_argument("--calibrators", help="calibrator catalog CSV (marks calibrator groups)")
    p.add_argument(
        "--beam-fraction",
        type=float,
        default=0.5,
        help="calibrator within this fraction of the 1.4 GHz FWHM of the pointing",
    )
    p.set_defaults(func=_run)
