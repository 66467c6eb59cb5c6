"""Calibrator catalog and transits: which groups see a calibrator cross the meridian.

`read_calibrator_catalog` reads the catalog CSV; `calibrator_transits` marks a group as a
calibrator group when a catalog calibrator transits (hour angle crosses 0, i.e. its
apparent RA lies in the group's LST range) within `beam_fraction` x FWHM(1.4 GHz) of the
pointing declination. The manifest labels groups with it before any calibration runs,
and the calibration stage models the calibrator's spectrum with `calibrator_spectrum`.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg import instrument as inst
from dsa110_contimg.astrometry import hadec_deg
from dsa110_contimg.primary_beam import airy_power, fwhm_rad

CATALOG_COLUMNS = ["name", "ra_deg", "dec_deg", "flux_jy", "spectral_index"]
TRANSIT_COLUMNS = [
    "has_calibrator",
    "calibrator",
    "calibrator_flux_jy",
    "calibrator_pb_response",
    "calibrator_offset_deg",
    "calibrator_transit_mjd",
]


def read_calibrator_catalog(path):
    """Calibrator catalog CSV (name, ra_deg, dec_deg, flux_jy at 1.4 GHz, spectral_index,
    optional `reference`: where the numbers come from); '#' lines are comments. Raises
    ValueError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"calibrator catalog {path} does not exist")
    cat = pd.read_csv(path, comment="#", skipinitialspace=True)
    missing = [c for c in CATALOG_COLUMNS if c not in cat.columns]
    if missing:
        raise ValueError(
            f"{path}: calibrator catalog lacks columns {missing} (needs {CATALOG_COLUMNS})"
        )
    reference = (
        cat["reference"].fillna("").astype(str)
        if "reference" in cat.columns
        else pd.Series("", index=cat.index)
    )
    cat = cat[CATALOG_COLUMNS].copy()
    numeric = CATALOG_COLUMNS[1:]
    bad = cat[numeric].apply(pd.to_numeric, errors="coerce").isna().any(axis=1)
    if bad.any():
        raise ValueError(f"{path}: non-numeric or empty values for {list(cat.name[bad])}")
    cat[numeric] = cat[numeric].astype(float)
    if cat.name.duplicated().any():
        raise ValueError(
            f"{path}: duplicate calibrator names {list(cat.name[cat.name.duplicated()])}"
        )
    if ((cat.dec_deg.abs() > 90) | (cat.flux_jy <= 0)).any():
        raise ValueError(f"{path}: declination outside +-90 deg or flux <= 0")
    cat["name"] = cat.name.astype(str)
    cat["reference"] = reference
    return cat.reset_index(drop=True)


def calibrator_transits(groups, catalog, beam_fraction=0.5, freq_hz=inst.REFERENCE_FREQ_HZ):
    """Per group (same index as `groups`): TRANSIT_COLUMNS. A calibrator counts when its
    hour angle crosses 0 between the group's start and end and its declination lies
    within beam_fraction x FWHM(freq_hz) of the pointing; of several, the brightest
    after primary-beam attenuation is recorded."""
    out = pd.DataFrame(
        {
            "has_calibrator": False,
            "calibrator": "",
            "calibrator_flux_jy": np.nan,
            "calibrator_pb_response": np.nan,
            "calibrator_offset_deg": np.nan,
            "calibrator_transit_mjd": np.nan,
        },
        index=groups.index,
    )
    if groups.empty or catalog.empty:
        return out
    max_offset = beam_fraction * np.degrees(fwhm_rad(freq_hz))
    for g in groups.itertuples():
        lst0, lst1 = g.lst_start_deg, g.lst_end_deg
        span = (lst1 - lst0) % 360.0
        near_ra = ((catalog.ra_deg - lst0 + 2.0) % 360.0) <= span + 4.0
        near_dec = (catalog.dec_deg - g.dec_deg).abs() <= max_offset + 1.0
        best = None
        for cal in catalog[near_ra & near_dec].itertuples():
            ha, dec = hadec_deg([cal.ra_deg] * 2, [cal.dec_deg] * 2, [g.start_mjd, g.end_mjd])
            if not ha[0] <= 0.0 < ha[1]:
                continue
            frac = -ha[0] / (ha[1] - ha[0])
            offset = abs(dec[0] + frac * (dec[1] - dec[0]) - g.dec_deg)
            if offset > max_offset:
                continue
            pb = float(airy_power(np.radians(offset), freq_hz))
            if best is None or cal.flux_jy * pb > best[1] * best[2]:
                best = (
                    cal.name,
                    cal.flux_jy,
                    pb,
                    offset,
                    g.start_mjd + frac * (g.end_mjd - g.start_mjd),
                )
        if best is not None:
            out.loc[g.Index, TRANSIT_COLUMNS] = [True, *best]
    out["has_calibrator"] = out.has_calibrator.astype(bool)
    return out


def calibrator_spectrum(freq_hz, flux_jy, spectral_index, ref_hz=inst.REFERENCE_FREQ_HZ):
    """S(f) = S_1.4 (f / 1.4 GHz)^alpha."""
    return flux_jy * (np.asarray(freq_hz, float) / ref_hz) ** spectral_index
