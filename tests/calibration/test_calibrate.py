"""Calibration against the simulator's truth: calibrator detection, bandpass and gains
recovered by CASA, chi-square of the calibrated calibrator, selection rules, fallback."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from casacore import tables

from dsa110_contimg.calibration.apply import MS_KEYWORD, apply_calibration, calibration_status
from dsa110_contimg.calibration.select import select_calibrations, write_selection
from dsa110_contimg.calibration.skymodel import write_point_model
from dsa110_contimg.calibration.solutions import read_caltable
from dsa110_contimg.calibration.solve import solve_calibrator_group
from dsa110_contimg.calibrators import calibrator_transits, read_calibrator_catalog
from dsa110_contimg.casaenv import casatasks
from dsa110_contimg.ingest.convert import convert_group
from dsa110_contimg.ingest.manifest import build_manifest, find_archive_files
from dsa110_contimg.primary_beam import airy_power
from dsa110_contimg.sanity import caltable_problem
from dsa110_contimg.simulation.visibilities import (
    SimulationSettings,
    calibrator_placement,
    load_truth,
    simulate_archive,
)

from pipeline import REPO

CATALOG = REPO / "config" / "calibrators.csv"
pytestmark = pytest.mark.casa


@pytest.fixture(scope="module")
def catalog():
    return read_calibrator_catalog(CATALOG)


@pytest.fixture(scope="module")
def cal_archive(tmp_path_factory, catalog):
    """One full-length group (20 antennas, 16 x 4 channels, 24 integrations) with 3C48
    transiting mid-group at the pointing dec 33 deg and no other sources: the solve is
    limited by thermal noise only."""
    out = tmp_path_factory.mktemp("calarchive")
    settings = SimulationSettings(
        n_antennas=20,
        n_channels=4,
        n_integrations=24,
        n_groups=1,
        n_sources=0,
        seed=3,
        calibrators=[calibrator_placement(catalog, "3C48", 0)],
    )
    simulate_archive(out, settings)
    return out


@pytest.fixture(scope="module")
def solved(cal_archive, catalog, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("solve")
    groups, _ = build_manifest(find_archive_files(cal_archive), calibrators=catalog)
    g = groups.iloc[0]
    ms = convert_group(list(g.files), tmp / "cal.ms", g.group)
    cal = catalog.set_index("name").loc["3C48"]
    qa = solve_calibrator_group(
        ms,
        {"name": "3C48", **cal.to_dict()},
        g.dec_deg,
        tmp / "cal",
        tmp / "qa.json",
        tmp / "qa.png",
        group=g.group,
    )
    return {"groups": groups, "ms": ms, "qa": qa, "dir": tmp}


def test_catalog_has_real_calibrators(catalog):
    assert list(catalog.name[:6]) == ["3C48", "3C138", "3C147", "3C286", "3C295", "J0834+555"]
    c = catalog.set_index("name")
    assert c.loc["3C286", "flux_jy"] == pytest.approx(15.084)  # Perley & Butler 2017
    assert c.loc["3C48", "dec_deg"] == pytest.approx(33.1597, abs=1e-3)


def test_bad_catalog_is_named(tmp_path):
    bad = tmp_path / "cals.csv"
    bad.write_text("name,ra_deg,dec_deg,flux_jy\n3C48,24.4,33.2,16\n")
    with pytest.raises(
        ValueError, match=r"cals.csv: calibrator catalog lacks columns \['spectral_index'\]"
    ):
        read_calibrator_catalog(bad)
    bad.write_text("name,ra_deg,dec_deg,flux_jy,spectral_index\n3C48,24.4,abc,16,-0.8\n")
    with pytest.raises(ValueError, match=r"cals.csv: non-numeric or empty values for \['3C48'\]"):
        read_calibrator_catalog(bad)


def test_manifest_marks_the_calibrator_transit(solved, catalog):
    g = solved["groups"].iloc[0]
    assert bool(g.has_calibrator) and g.calibrator == "3C48"
    assert g.calibrator_offset_deg == pytest.approx(0.295, abs=0.02)  # apparent dec of date
    assert g.calibrator_pb_response == pytest.approx(
        float(airy_power(np.radians(g.calibrator_offset_deg), 1.4e9)), rel=1e-9
    )
    assert g.start_mjd < g.calibrator_transit_mjd < g.end_mjd
    assert abs(g.calibrator_transit_mjd - g.mid_mjd) * 86400 < 5.0
    far = solved["groups"].assign(dec_deg=40.0)
    assert not calibrator_transits(far, catalog).has_calibrator.any()
    narrow = calibrator_transits(solved["groups"], catalog, beam_fraction=0.05)
    assert not narrow.has_calibrator.any()


def test_bandpass_matches_truth_gains(solved, cal_archive):
    """Solved B x G relative to the reference antenna equals the truth G_i / G_ref within
    2% in amplitude and 2 deg in phase for every antenna, channel and polarization."""
    qa = solved["qa"]
    assert qa["passed"], qa["reasons"]
    meta, truth, _ = load_truth(cal_archive)
    bp = read_caltable(Path(qa["tables"]["bandpass"]))
    gain = read_caltable(Path(qa["tables"]["gain"]))
    g_by_ant = dict(zip(gain["antenna"], gain["gain"][:, 0, :]))
    ants = truth["antenna_numbers"]
    rows = {a: i for i, a in enumerate(bp["antenna"])}
    solved_g = np.array([bp["gain"][rows[a]] * g_by_ant[a][None, :] for a in ants])
    t_mid = np.mean(gain["time"]) / 86400.0 + 2400000.5
    true_g = truth["bandpass"] * np.exp(
        1j * truth["drift_rad_per_s"][:, None, :] * (t_mid - truth["t_ref_jd"]) * 86400.0
    )
    assert solved_g.shape == true_g.shape == (20, 64, 2)
    ratio = (solved_g / solved_g[:1]) / (true_g / true_g[:1])
    amp_err = np.abs(np.abs(ratio) - 1)
    phase_err = np.degrees(np.abs(np.angle(ratio)))
    assert amp_err.max() < 0.02, amp_err.max()
    assert phase_err.max() < 2.0, phase_err.max()
    assert np.median(amp_err) < 0.004 and np.median(phase_err) < 0.3
    # the opposite gain convention (conjugated truth) is far off: the convention is CASA's
    wrong = (solved_g / solved_g[:1]) / np.conj(true_g / true_g[:1])
    assert np.degrees(np.abs(np.angle(wrong[1:]))).max() > 90


def test_calibrated_calibrator_matches_model_chi_square(solved, cal_archive, catalog, tmp_path):
    """After applycal the calibrator's corrected visibilities equal its model within the
    thermal noise: reduced chi-square 1 within 5 sigma (dof net of solved parameters)."""
    meta, truth, _ = load_truth(cal_archive)
    ms = tmp_path / "check.ms"
    shutil.copytree(solved["ms"], ms)
    cal = catalog.set_index("name").loc["3C48"]
    write_point_model(ms, cal.ra_deg, cal.dec_deg, cal.flux_jy, cal.spectral_index, 33.0, tmp_path)
    casatasks().applycal(
        vis=str(ms), gaintable=list(solved["qa"]["tables"].values()), calwt=False, flagbackup=False
    )
    with tables.table(str(ms), ack=False) as t:
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        corrected, model = t.getcol("CORRECTED_DATA"), t.getcol("MODEL_DATA")
    cross = a1 != a2
    amp = np.abs(truth["bandpass"])
    index = {a: k for k, a in enumerate(truth["antenna_numbers"])}  # MS antenna -> truth row
    k1, k2 = (np.array([index[a] for a in ants]) for ants in (a1[cross], a2[cross]))
    sigma = meta["noise_sigma_jy"] / (amp[k1] * amp[k2])
    r = (corrected[cross] - model[cross]) / sigma
    n_data = 2 * r.size
    n_ant, n_chan, n_pol = 20, 64, 2
    n_par = n_pol * (n_chan + 1) * (2 * n_ant - 1)
    dof = n_data - n_par
    chi2_red = float(np.sum(r.real**2 + r.imag**2) / dof)
    assert abs(chi2_red - 1.0) < 5 * np.sqrt(2.0 / dof), chi2_red
    assert solved["qa"]["amplitude_ratio"] == pytest.approx(1.0, abs=0.005)


def test_qa_record_and_plot(solved):
    qa = json.loads((solved["dir"] / "qa.json").read_text())
    assert qa["passed"] and qa["refant"] == "DSA-001"
    assert qa["bandpass"]["flagged_fraction"] == 0.0
    assert qa["bandpass"]["median_snr"] > 100
    # the QA record shape of every stage (qa_records.RECORD_KEYS first)
    assert list(qa)[:6] == ["stage", "name", "status", "failed", "warned", "metrics"]
    assert (qa["stage"], qa["status"], qa["failed"], qa["reason"]) == ("cal", "pass", [], None)
    assert qa["name"] == qa["calgroup"]
    assert qa["metrics"]["bandpass_median_snr"] == qa["bandpass"]["median_snr"]
    assert qa["metrics"]["residual_ratio"] == qa["residual_ratio"] < 0.2
    per_ant = qa["bandpass"]["per_antenna"]
    assert len(per_ant) == 20 and all(a["phase_scatter_deg"] < 0.5 for a in per_ant)
    assert all(a["amp_scatter"] < 0.005 for a in per_ant)
    assert (solved["dir"] / "qa.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (solved["dir"] / "cal").iterdir()) == ["bandpass.b", "gain.g"]


def test_residual_check_measures_calibration_not_channel_noise(solved, tmp_path):
    """The solve's residual check takes the band's least-squares ratio corrected/model:
    noise of half the calibrator's amplitude in every channel (a full-size group's
    244 kHz channels are that noisy) leaves it far below the 0.2 limit, where a
    per-channel ratio would be ~0.6; a 30% flux-scale error is measured as 0.30."""
    from dsa110_contimg.calibration.solve import _residual_check

    ms = tmp_path / "check.ms"
    shutil.copytree(solved["ms"], ms)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        model, flag = t.getcol("MODEL_DATA"), t.getcol("FLAG")
        rng = np.random.default_rng(3)
        noise = (rng.standard_normal(model.shape) + 1j * rng.standard_normal(model.shape)) / 2
        t.putcol("CORRECTED_DATA", (model * (1 + noise)).astype(np.complex64))
    with tables.table(str(ms), ack=False) as t:
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
    per_channel = np.median(np.abs(noise[cross][~flag[cross]]))
    noisy = _residual_check(ms)
    assert per_channel > 0.55 and noisy["residual_ratio"] < 0.1, (per_channel, noisy)
    assert noisy["amplitude_ratio"] == pytest.approx(1.0, abs=0.01)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        t.putcol("CORRECTED_DATA", (1.3 * model).astype(np.complex64))
    scaled = _residual_check(ms)
    assert scaled["residual_ratio"] == pytest.approx(0.3, abs=1e-4)
    assert scaled["amplitude_ratio"] == pytest.approx(1.3, abs=1e-4)


def test_caltable_with_no_valid_solution_is_named(solved, tmp_path):
    """A solve whose every solution is flagged (or NaN) fails its QA with the check
    no_valid_solutions; the tables of a good solve pass the same check."""
    for name in ("bandpass.b", "gain.g"):
        table = solved["dir"] / "cal" / name
        assert caltable_problem(table) is None
        flagged = tmp_path / f"flagged_{name}"
        shutil.copytree(table, flagged)
        with tables.table(str(flagged), readonly=False, ack=False) as t:
            flags = t.getcol("FLAG")
            n = flags.size
            t.putcol("FLAG", np.ones_like(flags))
        assert caltable_problem(flagged) == f"{flagged.name}: none of its {n} solutions is valid"


def test_dead_antenna_is_neither_reference_nor_counted(solved, catalog, tmp_path):
    """The first antenna (the default reference) flagged entirely, as the flagging step
    flags a dead antenna: the solve picks the next reference antenna and its QA counts
    only the 19 antennas with data, so it still passes."""
    from casacore import tables

    ms = tmp_path / "dead.ms"
    shutil.copytree(solved["ms"], ms)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        flag = t.getcol("FLAG")
        flag[(t.getcol("ANTENNA1") == 0) | (t.getcol("ANTENNA2") == 0)] = True
        t.putcol("FLAG", flag)
    g = solved["groups"].iloc[0]
    cal = catalog.set_index("name").loc["3C48"]
    qa = solve_calibrator_group(
        ms,
        {"name": "3C48", **cal.to_dict()},
        g.dec_deg,
        tmp_path / "cal",
        tmp_path / "qa.json",
        tmp_path / "qa.png",
        group=g.group,
    )
    print(
        f"dead antenna {solved['qa']['refant']}: refant {qa['refant']}, bandpass flagged "
        f"{qa['bandpass']['flagged_fraction']:.3f}, passed {qa['passed']} {qa.get('reasons')}"
    )
    per_antenna = [a["antenna"] for a in qa["bandpass"]["per_antenna"]]
    assert qa["passed"], qa.get("reasons")
    assert qa["refant"] != solved["qa"]["refant"] and qa["refant"] in per_antenna
    assert solved["qa"]["refant"] not in per_antenna and len(per_antenna) == 19
    assert qa["bandpass"]["flagged_fraction"] == 0.0


def _groups(mids_hours, cal_flags):
    mjd0 = 61041.0
    return pd.DataFrame(
        {
            "group": [f"2026-01-01T{int(h):02d}{int(h * 60) % 60:02d}00" for h in mids_hours],
            "mid_mjd": [mjd0 + h / 24 for h in mids_hours],
            "has_calibrator": cal_flags,
        }
    )


def test_selection_uses_nearer_calibrator_and_reports_missing():
    groups = _groups([1.0, 3.0, 4.0, 6.5, 12.0, 20.0], [True, False, False, True, False, False])
    names = list(groups.group)
    qa = {names[0]: {"passed": True}, names[3]: {"passed": True}}
    sel = select_calibrations(groups, qa, validity_hours=3.0, fallback="uncalibrated").set_index(
        "group"
    )
    assert sel.loc[names[1], "calgroup"] == names[0]  # 2.0 h vs 3.5 h
    assert sel.loc[names[1], "separation_hours"] == pytest.approx(2.0)
    assert sel.loc[names[2], "calgroup"] == names[3]  # 3.0 h vs 2.5 h
    assert sel.loc[names[0], "calgroup"] == names[0]
    assert sel.loc[names[4], "status"] == "uncalibrated"
    assert sel.loc[names[4], "reason"] == (
        f"no calibrator group passed QA within 3 h; nearest usable: {names[3]} at 5.50 h"
    )
    skip = select_calibrations(groups, qa, validity_hours=3.0, fallback="skip").set_index("group")
    assert list(skip.status[skip.calgroup == ""]) == ["skip", "skip"]


def test_failed_calibrator_group_is_not_used():
    groups = _groups([1.0, 2.0, 6.0], [True, False, True])
    names = list(groups.group)
    qa = {
        names[0]: {"passed": False, "reasons": ["bandpass: median solution SNR 1.2 < 10"]},
        names[2]: {"passed": True},
    }
    sel = select_calibrations(groups, qa, validity_hours=3.0).set_index("group")
    assert sel.loc[names[1], "status"] == "uncalibrated"
    assert sel.loc[names[1], "reason"] == (
        f"no calibrator group passed QA within 3 h; nearest usable: {names[2]} at 4.00 h; "
        f"{names[0]} at 1.00 h failed QA (bandpass: median solution SNR 1.2 < 10)"
    )
    sel = select_calibrations(groups, qa, validity_hours=5.0).set_index("group")
    assert sel.loc[names[1], "calgroup"] == names[2]
    with pytest.raises(ValueError, match="calibrate fallback 'guess'"):
        select_calibrations(groups, qa, fallback="guess")


def test_write_selection_and_uncalibrated_fallback(solved, tmp_path):
    groups_path = tmp_path / "groups.parquet"
    solved["groups"].to_parquet(groups_path)
    qa_path = tmp_path / "qa.json"
    qa_path.write_text(
        json.dumps(
            {
                "calgroup": solved["groups"].group[0],
                "passed": False,
                "reasons": ["bandpass: 100% of solutions flagged (limit 20%)"],
            }
        )
    )
    sel = write_selection(
        groups_path,
        [qa_path],
        tmp_path / "sel.parquet",
        tmp_path / "no_calibrator.txt",
        validity_hours=1.0,
    )
    assert list(sel.status) == ["uncalibrated"]
    report = (tmp_path / "no_calibrator.txt").read_text().splitlines()
    assert report[-1].startswith(
        f"{sel.group[0]}\tuncalibrated\tno calibrator group passed QA "
        f"within 1 h; {sel.group[0]} at 0.00 h failed QA (bandpass: 100%"
    )
    out = tmp_path / "ms_cal.ms"
    record = apply_calibration(solved["ms"], out, tmp_path / "apply.json", sel.iloc[0].to_dict())
    assert record["calibration"] == "uncalibrated"
    assert record["warnings"][0].startswith("UNCALIBRATED")
    assert (record["stage"], record["name"], record["status"]) == ("apply", sel.group[0], "warn")
    assert record["warned"] == ["calibration"] and record["failed"] == []
    assert record["metrics"]["calibration"] == "uncalibrated"
    status = calibration_status(out)
    assert status["status"] == "uncalibrated" and status["calgroup"] == ""
    with tables.table(str(out), ack=False) as t:
        assert MS_KEYWORD in t.keywordnames()
        assert np.array_equal(t.getcol("CORRECTED_DATA"), t.getcol("DATA"))
    assert json.loads((tmp_path / "apply.json").read_text())["calibration"] == "uncalibrated"


def _field_flux(ms, source, cal, pointing_dec):
    """Least-squares flux scale of `source` in CORRECTED_DATA after removing the
    calibrator's model: 1.0 means the source has its true flux."""
    from dsa110_contimg.calibration.skymodel import add_field_sources

    write_point_model(
        ms,
        cal["ra_deg"],
        cal["dec_deg"],
        cal["flux_jy"],
        cal["spectral_index"],
        pointing_dec,
        Path(ms).parent,
    )
    with tables.table(str(ms), readonly=False, ack=False) as t:
        residual = t.getcol("CORRECTED_DATA") - t.getcol("MODEL_DATA")
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
        t.putcol("MODEL_DATA", np.zeros_like(residual))
    add_field_sources(ms, pd.DataFrame([source]), pointing_dec)
    with tables.table(str(ms), ack=False) as t:
        template = t.getcol("MODEL_DATA")[cross]
    residual = residual[cross]
    return float(np.sum((residual * np.conj(template)).real) / np.sum(np.abs(template) ** 2))


def test_sky_model_keeps_field_sources_out_of_the_gains(catalog, tmp_path):
    """A 3 Jy source 1 deg from 3C48 is partly absorbed into the gains of a 10-antenna
    array unless the sky model puts it into the calibrator's model."""
    from dataclasses import replace

    from dsa110_contimg.calibration.solve import SolveSettings

    cal = {"name": "3C48", **catalog.set_index("name").loc["3C48"].to_dict()}
    field = {
        "source_id": "FIELD",
        "ra_deg": cal["ra_deg"] + 1.0,
        "dec_deg": cal["dec_deg"] - 0.3,
        "flux_jy": 3.0,
        "spectral_index": -0.7,
    }
    settings = SimulationSettings(
        n_antennas=10,
        n_channels=4,
        n_integrations=24,
        n_groups=1,
        n_sources=0,
        seed=11,
        extra_sources=[field],
        calibrators=[calibrator_placement(catalog, "3C48", 0)],
    )
    simulate_archive(tmp_path / "archive", settings)
    groups, _ = build_manifest(find_archive_files(tmp_path / "archive"), calibrators=catalog)
    g = groups.iloc[0]
    ms = convert_group(list(g.files), tmp_path / "cal.ms", g.group)
    pd.DataFrame([field]).to_csv(tmp_path / "sky.csv", index=False)
    ratios = {}
    for label, sky in (("without", None), ("with", str(tmp_path / "sky.csv"))):
        work = tmp_path / label
        qa = solve_calibrator_group(
            ms,
            cal,
            g.dec_deg,
            work / "cal",
            work / "qa.json",
            work / "qa.png",
            replace(SolveSettings(), sky_model=sky),
            group=g.group,
        )
        assert qa["passed"], qa["reasons"]
        target = work / "target.ms"
        shutil.copytree(ms, target)
        casatasks().applycal(
            vis=str(target),
            gaintable=[str(work / "cal" / "bandpass.b"), str(work / "cal" / "gain.g")],
            interp=["nearest", "nearest"],
            calwt=False,
            flagbackup=False,
        )
        ratios[label] = _field_flux(target, field, cal, g.dec_deg)
    print(
        f"field source flux / truth: without sky model {ratios['without']:.3f}, "
        f"with {ratios['with']:.3f}"
    )
    assert abs(ratios["with"] - 1) < 0.03
    assert abs(ratios["without"] - 1) > 0.05, "the effect the sky model removes is real"
