"""Sky catalogs: NVSS as VizieR delivers it (TSV and FITS) equals the project CSV,
declination strips, readable errors, reference-fitness flags and their use by
normalization."""

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from dsa110_contimg import catalogs
from dsa110_contimg.catalogs import (
    CatalogError,
    flag_confused,
    flag_near_edge,
    flag_resolved,
    read_sky_catalog,
    reference_flags,
)
from dsa110_contimg.photometry import normalize
from dsa110_contimg.photometry.forced import NEAR_EDGE

# NVSS rows as VizieR VIII/65/nvss prints them: name, RA "h m s", Dec "d m s", S1.4 (mJy),
# l_MajAxis, MajAxis, l_MinAxis, MinAxis (arcsec), PA (deg).
ROWS = [
    ("083454+553421", "08 34 54.90", "+55 34 21.1", "8833.4", "<", "12.3", "<", "11.0", ""),
    ("084012+541502", "08 40 12.04", "+54 15 02.5", "  12.6", "", "58.2", "", "20.1", "-35.2"),
    ("002958-003000", "00 29 58.55", "-00 30 00.0", "   3.1", "<", "35.0", "<", "30.0", ""),
    ("131455+655959", "13 14 55.80", "+65 59 59.9", " 245.0", "", "18.0", "", "10.5", " 80.0"),
    ("233010-101530", "23 30 10.00", "-10 15 30.0", "  50.0", "", "", "", "", ""),
]
NAMES = ["NVSS", "RAJ2000", "DEJ2000", "S1.4", "l_MajAxis", "MajAxis", "l_MinAxis", "MinAxis", "PA"]
UNITS = ["", '"h:m:s"', '"d:m:s"', "mJy", "", "arcsec", "", "arcsec", "deg"]
WIDTHS = [14, 11, 11, 8, 1, 5, 1, 5, 5]
HEADER = """#
#   VizieR Astronomical Server vizier.cds.unistra.fr
#    Date: 2026-12-01T10:00:00 [V7.4.5]
#   In case of problem, please report to:\tcds-question@unistra.fr
#
#
#Coosys\tJ2000:\teq_FK5 J2000
#INFO\tvotable-version=1.99+ (14-Oct-2013)\t
#INFO\t-ref=VIZ6570d1c2a5f1
#INFO\t-out.max=unlimited\t
#RESOURCE=yCat_8065
#Name: VIII/65
#Title: 1.4GHz NRAO VLA Sky Survey (NVSS) (Condon+ 1998)
#Table\tVIII_65_nvss:
#Name: VIII/65/nvss
#Title: The NVSS Catalog
#Column\tNVSS\t(a14)\tSource name (1)\t[ucd=meta.id;meta.main]
#Column\tRAJ2000\t(A11)\tRight Ascension J2000 (2)\t[ucd=pos.eq.ra;meta.main]
#Column\tDEJ2000\t(A11)\tDeclination J2000 (2)\t[ucd=pos.eq.dec;meta.main]
#Column\tS1.4\t(F8.1)\tIntegrated 1.4GHz flux density of radio source\t[ucd=phot.flux.density;em.radio.750-1500MHz]
#Column\tl_MajAxis\t(A1)\tLimit flag on MajAxis\t[ucd=meta.code.error;phys.angSize]
#Column\tMajAxis\t(F5.1)\tFitted (deconvolved) major axis of radio source\t[ucd=phys.angSize;em.radio;meta.modelled]
#Column\tl_MinAxis\t(A1)\tLimit flag on MinAxis\t[ucd=meta.code.error;phys.angSize]
#Column\tMinAxis\t(F5.1)\tFitted (deconvolved) minor axis of radio source\t[ucd=phys.angSize;em.radio;meta.modelled]
#Column\tPA\t(F5.1)\t[-90, 90]? Position angle of fitted major axis\t[ucd=pos.posAng;meta.modelled]
"""


def _vizier_tsv(path, rows=ROWS, names=NAMES, units=UNITS, widths=WIDTHS):
    lines = [
        HEADER.rstrip("\n"),
        "\t".join(names),
        "\t".join(units),
        "\t".join("-" * w for w in widths),
    ]
    lines += ["\t".join(f"{v:>{w}}" for v, w in zip(row, widths)) for row in rows]
    path.write_text("\n".join(lines) + "\n\n")
    return path


def _truth():
    """The same sources in degrees and Jy, converted independently with astropy."""
    coords = SkyCoord([r[1] for r in ROWS], [r[2] for r in ROWS], unit=(u.hourangle, u.deg))
    return pd.DataFrame(
        {
            "source_id": ["NVSS J" + r[0] for r in ROWS],
            "ra_deg": coords.ra.deg,
            "dec_deg": coords.dec.deg,
            "flux_jy": [float(r[3]) / 1000 for r in ROWS],
            "spectral_index": -0.7,
        }
    )


def _vizier_fits(path):
    """The FITS VizieR writes for the same rows: positions converted to degrees."""
    from astropy.table import Table

    truth = _truth()
    t = Table()
    t["NVSS"] = [r[0] for r in ROWS]
    t["RAJ2000"] = np.round(truth.ra_deg.to_numpy(), 7) * u.deg
    t["DEJ2000"] = np.round(truth.dec_deg.to_numpy(), 7) * u.deg
    t["S1.4"] = [float(r[3]) for r in ROWS] * u.mJy
    t["l_MajAxis"] = [r[4] for r in ROWS]
    t["MajAxis"] = [float(r[5]) if r[5] else np.nan for r in ROWS] * u.arcsec
    t["MinAxis"] = [float(r[7]) if r[7] else np.nan for r in ROWS] * u.arcsec
    t["PA"] = [float(r[8]) if r[8].strip() else np.nan for r in ROWS] * u.deg
    t.write(path, format="fits")
    return path


def test_vizier_tsv_fits_and_project_csv_agree(tmp_path):
    csv = tmp_path / "nvss.csv"
    _truth().to_csv(csv, index=False)
    from_csv = read_sky_catalog(csv)
    from_tsv = read_sky_catalog(_vizier_tsv(tmp_path / "nvss.tsv"))
    from_fits = read_sky_catalog(_vizier_fits(tmp_path / "nvss.fits"))
    for cat in (from_tsv, from_fits):
        assert list(cat.source_id) == list(from_csv.source_id)
        assert np.allclose(cat.ra_deg, from_csv.ra_deg, rtol=0, atol=1e-6)  # 4 mas
        assert np.allclose(cat.dec_deg, from_csv.dec_deg, rtol=0, atol=1e-6)
        assert np.allclose(cat.flux_jy, from_csv.flux_jy, rtol=1e-9)
        assert (cat.spectral_index == -0.7).all()
        assert cat.major_arcsec.tolist()[:2] == [12.3, 58.2]
        assert cat.size_upper_limit.tolist() == [True, False, True, False, False]
    assert from_tsv.dec_deg[2] == pytest.approx(-0.5)  # "-00 30 00.0": the sign of zero degrees
    assert from_tsv.ra_deg[0] == pytest.approx(128.72875, abs=1e-9)
    assert from_tsv.flux_jy[0] == pytest.approx(8.8334)
    assert from_tsv.pa_deg.isna().tolist() == [True, False, True, False, True]


def test_declination_strip(tmp_path, monkeypatch):
    monkeypatch.setattr(catalogs, "CHUNK_ROWS", 2)  # strips cut across chunks
    tsv = _vizier_tsv(tmp_path / "nvss.tsv")
    csv = tmp_path / "nvss.csv"
    _truth().to_csv(csv, index=False)
    fits = _vizier_fits(tmp_path / "nvss.fits")
    strip = catalogs.dec_strip(55.0, 3.0)
    assert strip == (52.0, 58.0)
    for path in (tsv, csv, fits):
        cat = read_sky_catalog(path, dec_range=strip)
        assert list(cat.source_id) == ["NVSS J083454+553421", "NVSS J084012+541502"], path
    assert len(read_sky_catalog(csv, dec_range=(-1.0, 0.0))) == 1
    assert read_sky_catalog(tsv, dec_range=(70.0, 80.0)).empty
    assert catalogs.dec_strip(88.0, 5.0) == (83.0, 90.0)


def test_project_csv_keeps_its_columns_and_defaults_the_index(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("source_id,ra_deg,dec_deg,flux_jy,extra\nA,10.5,20.25,0.5,x\nB,11,21,,y\n")
    cat = read_sky_catalog(path)
    assert list(cat.columns) == [
        "source_id",
        "ra_deg",
        "dec_deg",
        "flux_jy",
        "spectral_index",
        "extra",
    ]
    assert cat.spectral_index.tolist() == [-0.7, -0.7] and cat.extra.tolist() == ["x", "y"]
    assert np.isnan(cat.flux_jy[1])


def test_malformed_catalogs_give_one_readable_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("source_id,ra_deg,dec,flux_jy\nA,10,20,1\n")
    with pytest.raises(CatalogError) as err:
        read_sky_catalog(bad)
    assert str(err.value) == (
        f"{bad}: column 'dec_deg' missing (a sky catalog CSV needs source_id, ra_deg, "
        "dec_deg, or NVSS from VizieR VIII/65 with RAJ2000, DEJ2000, S1.4)"
    )

    rows = [list(r) for r in ROWS]
    rows[1][2] = "+54 15 x2.5"
    tsv = _vizier_tsv(tmp_path / "bad.tsv", rows=rows)
    with pytest.raises(CatalogError) as err:
        read_sky_catalog(tsv)
    assert str(err.value) == (
        f"{tsv}: column 'DEJ2000' is not sexagesimal (value '+54 15 x2.5', expected d m s)"
    )

    no_flux = _vizier_tsv(
        tmp_path / "noflux.tsv",
        rows=[r[:3] for r in ROWS],
        names=NAMES[:3],
        units=UNITS[:3],
        widths=WIDTHS[:3],
    )
    with pytest.raises(ValueError) as err:
        read_sky_catalog(no_flux)
    assert str(err.value) == (
        f"{no_flux}: column 'S1.4' missing (NVSS from VizieR VIII/65 needs RAJ2000, DEJ2000, S1.4)"
    )

    text = tmp_path / "notes.txt"
    text.write_text("this is not a catalog\n")
    with pytest.raises(CatalogError) as err:
        read_sky_catalog(text)
    assert str(err.value).startswith(f"{text}: column 'source_id' missing")

    bad_ra = tmp_path / "badra.csv"
    bad_ra.write_text("source_id,ra_deg,dec_deg\nA,ten,20\n")
    with pytest.raises(CatalogError) as err:
        read_sky_catalog(bad_ra)
    assert str(err.value) == f"{bad_ra}: column 'ra_deg' has a non-numeric value 'ten'"


def _constructed():
    """A close pair (30 arcsec apart), a resolved source, an upper-limit size larger than
    the beam (not resolved) and an isolated compact source."""
    return pd.DataFrame(
        {
            "source_id": ["pair_a", "pair_b", "big", "limit", "alone"],
            "ra_deg": [150.0, 150.0, 151.0, 152.0, 153.0],
            "dec_deg": [55.0, 55.0 + 30 / 3600, 55.0, 55.0, 55.0],
            "flux_jy": [1.0, 0.01, 1.0, 1.0, 1.0],
            "major_arcsec": [10.0, 10.0, 60.0, 60.0, 20.0],
            "size_upper_limit": [False, False, False, True, False],
        }
    )


def test_flags_on_a_constructed_catalog():
    cat = reference_flags(_constructed(), beam_arcsec=40.0, confusion_radius_arcsec=80.0)
    assert cat.resolved.tolist() == [False, False, True, False, False]
    assert cat.confused.tolist() == [True, True, False, False, False]
    assert cat.near_edge.tolist() == [False] * 5
    assert cat.reference_unfit.tolist() == [True, True, True, False, False]
    assert not flag_confused(_constructed(), radius_arcsec=25.0).confused.any()
    # a faint neighbour does not confuse a bright source when a flux ratio is required
    ratio = flag_confused(_constructed(), radius_arcsec=80.0, min_flux_ratio=0.1)
    assert ratio.confused.tolist() == [False, True, False, False, False]
    assert flag_resolved(_constructed(), beam_arcsec=70.0).resolved.sum() == 0


def test_near_edge_flags_from_an_image_footprint():
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [150.0, 55.0]
    wcs.wcs.crpix = [51.0, 51.0]
    wcs.wcs.cdelt = [-10 / 3600, 10 / 3600]
    data = np.ones((101, 101))
    data[:, 80:] = np.nan  # a blanked band, as at the weight cut of a mosaic
    x = np.array([50.0, 3.0, 75.0, 50.0, 300.0])
    y = np.array([50.0, 50.0, 50.0, 95.0, 50.0])
    ra, dec = wcs.pixel_to_world_values(x, y)
    cat = pd.DataFrame({"source_id": list("abcde"), "ra_deg": ra, "dec_deg": dec})
    flagged = flag_near_edge(cat, (wcs, data), margin_arcsec=120.0)  # 12 pixels
    assert flagged.near_edge.tolist() == [False, True, True, True, True]
    rect = flag_near_edge(cat, (wcs, data.shape), margin_arcsec=120.0)
    assert rect.near_edge.tolist() == [False, True, False, True, True]


def _timeseries(n_epochs=12, seed=3):
    """Five stable 1 Jy references and one 'bad' 1 Jy source, all with the same per-epoch
    gain error; 'bad' also wanders by +-3% (below the variability rejection)."""
    rng = np.random.default_rng(seed)
    gain = 1 + 0.05 * rng.standard_normal(n_epochs)
    rows = []
    for t in range(n_epochs):
        for i in range(5):
            rows.append((f"ref{i}", t, gain[t] * (1 + 0.002 * rng.standard_normal()), 0.002))
        rows.append(("bad", t, gain[t] * (1 + 0.03 * np.sin(t)), 0.002))
    ts = pd.DataFrame(rows, columns=["source_id", "image_id", "flux_jy", "flux_err_jy"])
    return ts.assign(mjd=60000.0 + ts.image_id, flags=0)


def test_normalization_never_uses_flagged_references():
    ts = _timeseries()
    with_bad, info_bad = normalize.normalize_timeseries(
        ts, ref_min_snr=10, ref_min_epochs=5, eta_min=1e9
    )
    assert "bad" in info_bad["references"]
    flagged, info = normalize.normalize_timeseries(
        ts, ref_min_snr=10, ref_min_epochs=5, eta_min=1e9, unfit=["bad"]
    )
    assert (
        "bad" not in info["references"]
        and not flagged[flagged.source_id == "bad"].is_reference.any()
    )
    without, _ = normalize.normalize_timeseries(
        ts[ts.source_id != "bad"], ref_min_snr=10, ref_min_epochs=5, eta_min=1e9
    )
    f = flagged.groupby("image_id").norm_factor.first()
    w = without.groupby("image_id").norm_factor.first()
    assert np.allclose(f, w, rtol=1e-12)
    assert not np.allclose(with_bad.groupby("image_id").norm_factor.first(), w, rtol=1e-4)
    # an explicit reference list cannot bring a flagged source back
    _, forced = normalize.normalize_timeseries(
        ts, references=["bad", "ref0", "ref1", "ref2"], eta_min=1e9, unfit=["bad"]
    )
    assert forced["references"] == ["ref0", "ref1", "ref2"]


def test_normalization_skips_near_edge_measurements():
    ts = _timeseries()
    edge = (ts.source_id == "ref0") & (ts.image_id == 4)
    ts.loc[edge, "flux_jy"] *= 0.8  # a truncated kernel at the image edge reads low
    ts.loc[edge, "flags"] = NEAR_EDGE
    out, _ = normalize.normalize_timeseries(
        ts, ref_min_snr=10, ref_min_epochs=5, eta_min=1e9, unfit=["bad"]
    )
    clean, _ = normalize.normalize_timeseries(
        ts[~edge], ref_min_snr=10, ref_min_epochs=5, eta_min=1e9, unfit=["bad"]
    )
    f = out.groupby("image_id").norm_factor.first()
    c = clean.groupby("image_id").norm_factor.first()
    # epoch 4 uses the other references only; the median flux of ref0 (taken over all its
    # good rows) is unchanged, so every factor matches the run without that row
    assert f[4] == pytest.approx(c[4], rel=1e-12)
    assert np.allclose(f, c, rtol=1e-12)


def test_normalize_cli_reads_the_catalog_flags(tmp_path):
    """`dsa110-contimg normalize --catalog`: the source with a catalog neighbour 30 arcsec
    away is not a reference; the five isolated ones are. Without the catalog it is one."""
    from dsa110_contimg import cli

    ts = _timeseries()
    bad = ts.source_id == "bad"
    ts.loc[bad, "flux_jy"] = (
        ts[~bad].groupby("image_id").flux_jy.mean()[ts[bad].image_id].to_numpy()
    )
    pos = {f"ref{i}": (150.0 + i, 55.0) for i in range(5)} | {"bad": (156.0, 55.0)}
    ts["ra"] = ts.source_id.map(lambda s: pos[s][0])
    ts["dec"] = ts.source_id.map(lambda s: pos[s][1])
    ts.to_parquet(tmp_path / "ts.parquet")
    cat = pd.DataFrame(
        [(s, ra, dec, 1.0) for s, (ra, dec) in pos.items()]
        + [("neighbour", 156.0, 55.0 + 30 / 3600, 0.05), ("far", 10.0, -30.0, 1.0)],
        columns=["source_id", "ra_deg", "dec_deg", "flux_jy"],
    )
    cat.to_csv(tmp_path / "cat.csv", index=False)
    assert cli.main(
        [
            "normalize",
            str(tmp_path / "ts.parquet"),
            str(tmp_path / "norm.parquet"),
            "--ref-min-snr",
            "10",
            "--catalog",
            str(tmp_path / "cat.csv"),
        ]
    ) in (0, None)
    norm = pd.read_parquet(tmp_path / "norm.parquet")
    refs = sorted(norm[norm.is_reference].source_id.unique())
    assert refs == ["ref0", "ref1", "ref2", "ref3", "ref4"]
    cli.main(
        [
            "normalize",
            str(tmp_path / "ts.parquet"),
            str(tmp_path / "plain.parquet"),
            "--ref-min-snr",
            "10",
        ]
    )
    plain = pd.read_parquet(tmp_path / "plain.parquet")
    assert sorted(plain[plain.is_reference].source_id.unique()) == ["bad"] + refs


def test_catalog_cli_writes_a_parquet_strip_that_stages_read(tmp_path):
    from dsa110_contimg import cli

    tsv = _vizier_tsv(tmp_path / "nvss.tsv")
    out = tmp_path / "strip.parquet"
    assert cli.main(
        ["catalog", str(tsv), "--out", str(out), "--dec", "55", "--halfwidth", "3"]
    ) in (0, None)
    stored = pd.read_parquet(out)
    assert list(stored.source_id) == ["NVSS J083454+553421", "NVSS J084012+541502"]
    assert stored.resolved.tolist() == [False, True]  # 58.2 arcsec > 40
    assert stored.reference_unfit.tolist() == [False, True]
    cat = read_sky_catalog(out, dec_range=(55.0, 56.0))
    assert list(cat.source_id) == ["NVSS J083454+553421"]
    full = read_sky_catalog(tsv, dec_range=(52.0, 58.0))
    assert np.allclose(read_sky_catalog(out).ra_deg, full.ra_deg, rtol=0, atol=1e-12)
