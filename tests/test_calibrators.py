"""Calibrator catalog: real calibrators for DSA-110's pointings, numbers traceable to their
references, and a pointing without a calibrator reported once by the manifest."""

import logging
import math
import re

import numpy as np
import pandas as pd
import pytest

from dsa110_contimg.calibrators import read_calibrator_catalog
from dsa110_contimg.ingest.manifest import (
    _add_calibrator_transits,
    find_archive_files,
    write_manifest,
)
from dsa110_contimg.ingest.pointings import (
    calibrator_coverage,
    calibrators_in_beam,
    pointing_declinations,
    write_pointings,
)

from pipeline import REPO

CATALOG = REPO / "config" / "calibrators.csv"
POINTINGS = [54.57, 16.3, 50.5, 65.7, 33.0]
OCT_2025_MJD = 60963.0  # 2025-10-15, the epoch of the real archive


@pytest.fixture(scope="module")
def catalog():
    return read_calibrator_catalog(CATALOG)


@pytest.mark.parametrize("dec", POINTINGS)
@pytest.mark.parametrize("mjd", [None, OCT_2025_MJD])
def test_every_pointing_has_a_bright_calibrator_in_the_beam(catalog, dec, mjd):
    inside = calibrators_in_beam(dec, catalog, beam_fraction=0.5, mjd=mjd)
    assert not inside.empty, f"Dec {dec}: no calibrator within half the FWHM"
    assert inside.offset_deg.max() <= 1.3576
    assert inside.flux_jy.max() >= 1.0
    assert inside.pb_response.min() >= 0.5 - 1e-9


def test_the_team_calibrators_cover_their_pointings(catalog):
    inside = {dec: calibrators_in_beam(dec, catalog, mjd=OCT_2025_MJD) for dec in POINTINGS}
    names = {dec: list(cal.name) for dec, cal in inside.items()}
    assert names[54.57] == ["J0834+555"]
    assert inside[54.57].offset_deg[0] == pytest.approx(0.915, abs=0.01)  # 1.00 deg in J2000
    assert names[33.0] == ["3C48"]
    assert set(names[16.3]) == {
        "3C138",
        "J0204+152",
        "J0238+166",
        "J0318+164",
        "J1745+173",
        "J2253+161",
    }
    assert set(names[50.5]) == {"3C147", "J0359+509", "J2038+513", "J2355+498"}
    assert set(names[65.7]) == {"J0949+662", "J1308+657", "J2350+646"}
    j0834 = catalog.set_index("name").loc["J0834+555"]
    assert (j0834.flux_jy, j0834.spectral_index) == (8.8, -0.375)


def test_catalog_numbers_follow_from_their_references(catalog):
    """Every row names its source; Perley & Butler rows equal their polynomial at 1.4 GHz
    and its log-derivative, VLA-list rows their 20 cm flux and the 20/6 cm index."""
    assert (catalog.reference.str.len() > 20).all()
    x = math.log10(1.4)
    n_pb = n_vla = 0
    for row in catalog.itertuples():
        poly = re.search(r"Perley & Butler 2017 .*\(a = ([-\d. ]+)\)", row.reference)
        if poly:
            a = [float(v) for v in poly.group(1).split()]
            flux = 10 ** sum(c * x**k for k, c in enumerate(a))
            index = sum(k * c * x ** (k - 1) for k, c in enumerate(a) if k)
            assert row.flux_jy == pytest.approx(flux, abs=1e-3), row.name
            assert row.spectral_index == pytest.approx(index, abs=1e-3), row.name
            n_pb += 1
            continue
        vla = re.search(
            r"VLA Calibrator Manual .*20 cm entry ([\d.]+) Jy.*6 cm entry ([\d.]+) Jy",
            row.reference,
        )
        assert vla, f"{row.name}: reference names neither source: {row.reference}"
        s20, s6 = float(vla.group(1)), float(vla.group(2))
        assert row.flux_jy == s20
        assert row.spectral_index == pytest.approx(
            math.log(s6 / s20) / math.log(4.885 / 1.465), abs=1e-3
        ), row.name
        n_vla += 1
    assert n_pb == 5 and n_vla == len(catalog) - 5
    c = catalog.set_index("name")
    assert c.loc["3C286", "flux_jy"] == pytest.approx(15.084, abs=1e-3)
    assert c.loc["3C48", "flux_jy"] == pytest.approx(16.255, abs=1e-3)


def test_reference_column_is_optional(tmp_path):
    path = tmp_path / "cals.csv"
    path.write_text("name,ra_deg,dec_deg,flux_jy,spectral_index\nX,10,20,5,-0.7\n")
    assert read_calibrator_catalog(path).reference.tolist() == [""]


def test_pointing_declinations_cluster_within_tolerance():
    labels = pointing_declinations([54.57, 16.3, 54.571, 54.569, 16.31], tolerance_deg=0.1)
    assert labels.tolist() == [54.57, 16.305, 54.57, 54.57, 16.305]


def _groups(decs, mjd0=OCT_2025_MJD):
    """Manifest-like groups (5 min each, consecutive) at the given declinations."""
    rows = []
    for i, dec in enumerate(decs):
        start = mjd0 + i * 300 / 86400
        rows.append(
            {
                "group": f"g{i:02d}",
                "start_mjd": start,
                "end_mjd": start + 300 / 86400,
                "mid_mjd": start + 150 / 86400,
                "lst_start_deg": 10.0 + 1.25 * i,
                "lst_end_deg": 11.25 + 1.25 * i,
                "dec_deg": dec,
            }
        )
    return pd.DataFrame(rows)


def test_pointing_without_calibrator_is_reported_once(catalog, caplog):
    groups = _groups([40.0, 40.0, 40.0, 54.57, 54.57])
    with caplog.at_level(logging.INFO, logger="dsa110_contimg"):
        out = _add_calibrator_transits(groups, CATALOG, 0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "pointing Dec +40.00 (3 groups): NO CALIBRATOR within 1.36 deg of the pointing; "
        "nearest catalog calibrator 3C48 is 6.71 deg away: these groups have no calibrator "
        "transit of their own"
    ]
    infos = [r.getMessage() for r in caplog.records if "pointing Dec +54.57" in r.getMessage()]
    assert infos == [
        "pointing Dec +54.57 (2 groups): calibrator J0834+555 in the beam "
        "(0.91 deg off, 8.80 Jy); 0 groups contain a calibrator transit"
    ]
    assert out.pointing_calibrator.tolist() == ["", "", "", "J0834+555", "J0834+555"]
    cov = calibrator_coverage(out, catalog)
    assert cov.dec_deg.tolist() == [40.0, 54.57]
    assert cov.has_calibrator_in_beam.tolist() == [False, True]
    assert cov.nearest_calibrator.tolist() == ["3C48", "J0834+555"]
    assert cov.calibrators_in_beam[1] == ["J0834+555"]


def test_manifest_writes_pointing_coverage(small_archive, tmp_path, caplog):
    """The real manifest on simulated files: a catalog with only 3C295 leaves the archive's
    pointing uncovered, reported once in the log and in manifest/pointings.parquet."""
    far = read_calibrator_catalog(CATALOG).query("name == '3C295'")
    cat_path = tmp_path / "far.csv"
    far.to_csv(cat_path, index=False)
    with caplog.at_level(logging.WARNING, logger="dsa110_contimg"):
        groups, _ = write_manifest(
            find_archive_files(small_archive),
            tmp_path / "g.parquet",
            tmp_path / "r.parquet",
            calibrators=cat_path,
        )
    cov = write_pointings(tmp_path / "g.parquet", cat_path, tmp_path / "pointings.parquet")
    written = pd.read_parquet(tmp_path / "pointings.parquet")
    assert list(written.columns) == list(cov.columns)
    assert written.drop(columns="calibrators_in_beam").equals(
        cov.drop(columns="calibrators_in_beam")
    )
    assert len(cov) == 1 and not cov.has_calibrator_in_beam[0]
    dec = float(np.median(groups.dec_deg))
    assert cov.dec_deg[0] == pytest.approx(dec)
    assert cov.n_groups[0] == len(groups) and cov.nearest_calibrator[0] == "3C295"
    assert cov.nearest_offset_deg[0] > cov.max_offset_deg[0]
    warnings = [r.getMessage() for r in caplog.records if "NO CALIBRATOR" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f"pointing Dec {dec:+.2f} ({len(groups)} groups): NO CALIBRATOR "
        "within 1.36 deg of the pointing; nearest catalog calibrator "
        "3C295 is "
    )
    assert (groups.pointing_calibrator == "").all()
