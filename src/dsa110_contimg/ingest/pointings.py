"""Calibrator coverage of the archive's pointings.

DSA-110 parks its dishes at one declination for weeks while the sky drifts through, so
every catalog source within the primary beam of the pointing declination transits once a
sidereal day. A pointing is covered when at least one catalog calibrator lies within
`beam_fraction` x FWHM(1.4 GHz) of it (the criterion `calibrators.calibrator_transits`
applies per group), using the calibrator's apparent declination at the epoch of the
pointing's groups. A pointing that is not covered can never be calibrated from its own
transits: the manifest reports it once, naming the nearest catalog calibrator, instead of
leaving it to be discovered as a missing calibration table.
"""

import logging

import numpy as np
import pandas as pd

from dsa110_contimg import instrument as inst
from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.primary_beam import airy_power, fwhm_rad

log = logging.getLogger(__name__)

COVERAGE_COLUMNS = [
    "dec_deg",
    "n_groups",
    "first_group",
    "last_group",
    "max_offset_deg",
    "has_calibrator_in_beam",
    "calibrators_in_beam",
    "best_calibrator",
    "best_offset_deg",
    "best_flux_jy",
    "best_pb_response",
    "n_calibrator_groups",
    "nearest_calibrator",
    "nearest_offset_deg",
]


def pointing_declinations(dec_deg, tolerance_deg=0.1):
    """Label each declination with its pointing: sorted declinations closer than
    `tolerance_deg` to their neighbour form one pointing, labelled by its median."""
    dec = np.asarray(dec_deg, dtype=float)
    labels = np.full(dec.shape, np.nan)
    if dec.size == 0:
        return labels
    order = np.argsort(dec)
    breaks = np.flatnonzero(np.diff(dec[order]) > tolerance_deg) + 1
    for members in np.split(order, breaks):
        labels[members] = float(np.median(dec[members]))
    return labels


def apparent_declinations(catalog, mjd):
    """Apparent declination (deg) of each catalog source at `mjd` (J2000 when None)."""
    if mjd is None or catalog.empty:
        return catalog.dec_deg.to_numpy(dtype=float)
    from dsa110_contimg.astrometry import hadec_deg

    n = len(catalog)
    _, dec = hadec_deg(catalog.ra_deg.to_numpy(), catalog.dec_deg.to_numpy(), np.full(n, mjd))
    return np.asarray(dec, dtype=float)


def calibrators_in_beam(
    dec_deg, catalog, beam_fraction=0.5, freq_hz=inst.REFERENCE_FREQ_HZ, mjd=None
):
    """Catalog rows within beam_fraction x FWHM(freq_hz) of pointing `dec_deg`, with
    columns offset_deg, pb_response (Airy power at the offset) and apparent_flux_jy =
    flux_jy x pb_response, brightest apparent flux first. Declination alone decides:
    every RA transits once a sidereal day."""
    max_offset = beam_fraction * np.degrees(fwhm_rad(freq_hz))
    cat = catalog.copy()
    cat["offset_deg"] = np.abs(apparent_declinations(catalog, mjd) - dec_deg)
    cat = cat[cat.offset_deg <= max_offset].copy()
    cat["pb_response"] = airy_power(np.radians(cat.offset_deg.to_numpy()), freq_hz)
    cat["apparent_flux_jy"] = cat.flux_jy * cat.pb_response
    return cat.sort_values("apparent_flux_jy", ascending=False).reset_index(drop=True)


def calibrator_coverage(
    groups, catalog, beam_fraction=0.5, freq_hz=inst.REFERENCE_FREQ_HZ, tolerance_deg=0.1
):
    """One row per pointing declination of `groups` (manifest groups table): COVERAGE_COLUMNS.

    `calibrators_in_beam` lists every covering calibrator (brightest after primary-beam
    attenuation first), `best_*` describe the first, `n_calibrator_groups` counts the
    pointing's groups that contain a transit (`has_calibrator`, when the column exists),
    and `nearest_*` name the catalog calibrator closest in declination whether or not it
    is in the beam."""
    rows = []
    if groups.empty:
        return pd.DataFrame(columns=COVERAGE_COLUMNS)
    max_offset = float(beam_fraction * np.degrees(fwhm_rad(freq_hz)))
    labels = pointing_declinations(groups.dec_deg, tolerance_deg)
    for dec in np.unique(labels[np.isfinite(labels)]):
        members = groups[labels == dec]
        mjd = float(members.mid_mjd.mean()) if "mid_mjd" in members else None
        inside = calibrators_in_beam(dec, catalog, beam_fraction, freq_hz, mjd)
        offsets = np.abs(apparent_declinations(catalog, mjd) - dec)
        nearest = int(np.argmin(offsets)) if len(offsets) else None
        n_cal = int(members.has_calibrator.sum()) if "has_calibrator" in members else 0
        best = inside.iloc[0] if not inside.empty else None
        rows.append(
            {
                "dec_deg": float(dec),
                "n_groups": int(len(members)),
                "first_group": str(members.group.min()),
                "last_group": str(members.group.max()),
                "max_offset_deg": max_offset,
                "has_calibrator_in_beam": best is not None,
                "calibrators_in_beam": list(inside.name.astype(str)),
                "best_calibrator": "" if best is None else str(best["name"]),
                "best_offset_deg": np.nan if best is None else float(best.offset_deg),
                "best_flux_jy": np.nan if best is None else float(best.flux_jy),
                "best_pb_response": np.nan if best is None else float(best.pb_response),
                "n_calibrator_groups": n_cal,
                "nearest_calibrator": "" if nearest is None else str(catalog.name.iloc[nearest]),
                "nearest_offset_deg": np.nan if nearest is None else float(offsets[nearest]),
            }
        )
    return pd.DataFrame(rows, columns=COVERAGE_COLUMNS)


def coverage_message(row):
    """The one-line report of a pointing (a row of `calibrator_coverage`)."""
    where = f"pointing Dec {row.dec_deg:+.2f} ({row.n_groups} groups)"
    if row.has_calibrator_in_beam:
        return (
            f"{where}: calibrator {row.best_calibrator} in the beam "
            f"({row.best_offset_deg:.2f} deg off, {row.best_flux_jy:.2f} Jy); "
            f"{row.n_calibrator_groups} groups contain a calibrator transit"
        )
    if not row.nearest_calibrator:
        return f"{where}: NO CALIBRATOR: the calibrator catalog is empty"
    return (
        f"{where}: NO CALIBRATOR within {row.max_offset_deg:.2f} deg of the pointing; "
        f"nearest catalog calibrator {row.nearest_calibrator} is "
        f"{row.nearest_offset_deg:.2f} deg away: these groups have no calibrator "
        "transit of their own"
    )


def report_calibrator_coverage(coverage):
    """Log one line per pointing: INFO when covered, WARNING when not."""
    for row in coverage.itertuples():
        if row.has_calibrator_in_beam:
            log.info(coverage_message(row))
        else:
            log.warning(coverage_message(row))


def write_pointings(groups, catalog, path, beam_fraction=0.5, meta=None):
    """Write `calibrator_coverage` of `groups` (table or Parquet path) to Parquet `path`;
    `catalog` is a calibrator catalog DataFrame or CSV path."""
    from dsa110_contimg.calibrators import read_calibrator_catalog

    if not isinstance(groups, pd.DataFrame):
        groups = pd.read_parquet(groups)
    if not isinstance(catalog, pd.DataFrame):
        catalog = read_calibrator_catalog(catalog)
    coverage = calibrator_coverage(groups, catalog, beam_fraction)
    write_parquet(coverage, path, meta)
    return coverage


def check_pointings(groups, catalog, beam_fraction=0.5, tolerance_deg=0.1):
    """Report the calibrator coverage of every pointing of `groups` once (see
    `report_calibrator_coverage`) and return, per group (same index), the best calibrator
    in the beam of its pointing ("" when none): the manifest's `pointing_calibrator`."""
    coverage = calibrator_coverage(groups, catalog, beam_fraction, tolerance_deg=tolerance_deg)
    report_calibrator_coverage(coverage)
    best = dict(zip(coverage.dec_deg, coverage.best_calibrator))
    labels = pointing_declinations(groups.dec_deg, tolerance_deg)
    return pd.Series([best.get(d, "") for d in labels], index=groups.index, dtype=object)
