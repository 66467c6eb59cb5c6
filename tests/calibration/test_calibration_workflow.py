"""Calibration through real snakemake: a calibrator transit, science groups, selection
with a validity window, calibrated MS; a too-faint calibrator fails QA and the science
groups fall back as configured."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from casacore import tables

from dsa110_contimg.calibration.apply import calibration_status
from dsa110_contimg.calibration.skymodel import write_point_model
from dsa110_contimg.calibrators import read_calibrator_catalog
from dsa110_contimg.primary_beam import airy_power, angular_separation
from dsa110_contimg.simulation.visibilities import (
    SIDEREAL_DAY_S,
    SimulationSettings,
    calibrator_placement,
    load_truth,
    simulate_archive,
)

from pipeline import REPO

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.workflow

SCIENCE = {"source_id": "SCI001", "dec_deg": 33.4, "flux_jy": 3.0, "spectral_index": -0.7}


def _snakemake(archive, results, tmp_path, **calibrate):
    overrides = tmp_path / f"{results.name}.yaml"
    overrides.write_text(
        yaml.safe_dump(
            {"archive_dir": str(archive), "results_dir": str(results), "calibrate": calibrate}
        )
    )
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(
        [str(BIN / "snakemake"), "calibrated", "--cores", "2", "--configfile", str(overrides)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout + out.stderr


def _settings(calibrators, **kw):
    base = dict(
        n_antennas=10, n_channels=2, n_integrations=8, n_sources=8, seed=11, calibrators=calibrators
    )
    base.update(kw)
    return SimulationSettings(**base)


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """Twelve groups of 103 s: 3C48 transits in group 1; a 3 Jy science source transits in
    group 10, 3.9 deg of RA later, so it is outside the primary beam while the calibrator
    is observed (an unmodelled source in the calibrator field would be partly absorbed
    by the gains). With a validity window of 0.27 h groups 0-10 use group 1 and group 11
    (0.286 h away) has none."""
    tmp = tmp_path_factory.mktemp("calday")
    cals = read_calibrator_catalog(REPO / "config" / "calibrators.csv")
    c48 = cals.set_index("name").loc["3C48"]
    duration = 8 * 12.885
    science = dict(SCIENCE, ra_deg=c48.ra_deg + 9 * duration / SIDEREAL_DAY_S * 360.0)
    settings = _settings(
        [calibrator_placement(cals, "3C48", 1)], n_groups=12, extra_sources=[science]
    )
    simulate_archive(tmp / "archive", settings)
    log = _snakemake(tmp / "archive", tmp / "results", tmp, validity_hours=0.27)
    return {"archive": tmp / "archive", "results": tmp / "results", "log": log, "tmp": tmp}


def test_selection_uses_the_calibrator_and_reports_the_group_outside_the_window(day):
    res = day["results"]
    groups = pd.read_parquet(res / "manifest" / "groups.parquet")
    assert list(groups.has_calibrator) == [False, True] + [False] * 10
    calgroup = groups.group[1]
    sel = pd.read_parquet(res / "cal" / "selection.parquet").set_index("group")
    assert list(sel.calgroup) == [calgroup] * 11 + [""]
    assert list(sel.status) == ["calibrated"] * 11 + ["uncalibrated"]
    assert sel.separation_hours.iloc[0] == pytest.approx(8 * 12.885 / 3600, abs=2e-3)
    assert sel.separation_hours.iloc[1] == 0.0
    assert sel.separation_hours.iloc[10] == pytest.approx(9 * 8 * 12.885 / 3600, abs=2e-3)
    late = groups.group[11]
    assert sel.loc[late, "reason"].startswith(
        f"no calibrator group passed QA within 0.27 h; nearest usable: {calgroup} at 0.29 h"
    )
    report = (res / "cal" / "no_calibrator.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in report if not line.startswith("#")] == [late]
    qa = json.loads((res / "qa" / "cal" / f"{calgroup}.json").read_text())
    assert qa["passed"] and qa["calibrator"] == "3C48"
    assert (res / "qa" / "cal" / f"{calgroup}.png").stat().st_size > 10000
    assert sorted(p.name for p in (res / "cal" / calgroup).glob("[!.]*")) == [
        "bandpass.b",
        "gain.g",
    ]
    status = calibration_status(res / "ms_cal" / f"{late}.ms")
    assert status["status"] == "uncalibrated"
    assert json.loads((res / "qa" / "apply" / f"{late}.json").read_text())["warnings"][
        0
    ].startswith("UNCALIBRATED: no calibrator group passed QA")
    assert calibration_status(res / "ms_cal" / f"{groups.group[10]}.ms")["calgroup"] == calgroup
    assert (
        "has no calibrator (uncalibrated)"
        in (res / "logs" / "calibration_selection" / "selection.log").read_text()
    )


def _fit_fluxes_raw(ms, sources, pointing_dec, workdir):
    return _fit_fluxes(ms, sources, pointing_dec, workdir, column="DATA")


def _fit_fluxes(ms, sources, pointing_dec, workdir, column="CORRECTED_DATA"):
    """Least-squares 1.4 GHz fluxes of `sources` from `column` (cross-correlations),
    each template a unit point source x primary beam (CASA's ft)."""
    scratch = workdir / "fit.ms"
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(ms, scratch)
    with tables.table(str(scratch), ack=False) as t:
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
        data = t.getcol(column)[cross].ravel()
    templates = []
    for s in sources.itertuples():
        write_point_model(
            scratch, s.ra_deg, s.dec_deg, 1.0, s.spectral_index, pointing_dec, workdir
        )
        with tables.table(str(scratch), ack=False) as t:
            templates.append(t.getcol("MODEL_DATA")[cross].ravel())
    a = np.array(templates).T
    design = np.vstack([a.real, a.imag])
    flux, *_ = np.linalg.lstsq(design, np.concatenate([data.real, data.imag]), rcond=None)
    return dict(zip(sources.source_id, flux))


def test_science_source_flux_after_calibration(day):
    """The science group's corrected visibilities give the science source's flux within
    3% of truth; the raw data (DATA) do not (the gains are ~10% and random in phase)."""
    res = day["results"]
    groups = pd.read_parquet(res / "manifest" / "groups.parquet")
    g = groups.iloc[10]
    _, _, sky = load_truth(day["archive"])
    lst = np.radians((g.lst_start_deg + g.lst_end_deg) / 2)
    sep = angular_separation(
        lst, np.radians(g.dec_deg), np.radians(sky.ra_deg), np.radians(sky.dec_deg)
    )
    apparent = sky.flux_jy * airy_power(sep, 1.4e9)
    in_view = sky[apparent > 0.02]
    assert "SCI001" in set(in_view.source_id)
    fluxes = _fit_fluxes(res / "ms_cal" / f"{g.group}.ms", in_view, g.dec_deg, day["tmp"])
    assert fluxes["SCI001"] == pytest.approx(SCIENCE["flux_jy"], rel=0.03), fluxes
    raw = _fit_fluxes_raw(res / "ms" / f"{g.group}.ms", in_view, g.dec_deg, day["tmp"])
    assert abs(raw["SCI001"] / SCIENCE["flux_jy"] - 1) > 0.1, raw


def test_too_faint_calibrator_fails_qa_and_groups_are_skipped(tmp_path):
    """3C48 simulated at 0.2% of its catalog flux: its solve fails QA with the reason,
    the run still succeeds, and with fallback 'skip' no group gets an ms_cal."""
    cals = read_calibrator_catalog(REPO / "config" / "calibrators.csv")
    settings = _settings(
        [calibrator_placement(cals, "3C48", 0, flux_scale=0.002)], n_groups=2, n_sources=0
    )
    simulate_archive(tmp_path / "archive", settings)
    _snakemake(tmp_path / "archive", tmp_path / "results", tmp_path, fallback="skip")
    res = tmp_path / "results"
    groups = pd.read_parquet(res / "manifest" / "groups.parquet")
    calgroup = groups.group[0]
    qa = json.loads((res / "qa" / "cal" / f"{calgroup}.json").read_text())
    assert not qa["passed"]
    assert qa["reasons"] == [
        "solve failed: CalibrationError: bandpass: no solutions above minsnr 3 "
        "(is 3C48 too faint, or not in the data?)"
    ], qa["reasons"]
    failed = (res / "cal" / calgroup / "FAILED.txt").read_text()
    assert failed.startswith(f"calibration of {calgroup} on 3C48 failed QA:")
    sel = pd.read_parquet(res / "cal" / "selection.parquet")
    assert list(sel.status) == ["skip", "skip"]
    assert all(
        f"{calgroup} at 0.0" in r
        and "failed QA (solve failed: CalibrationError: bandpass: no solutions above minsnr 3" in r
        for r in sel.reason
    ), list(sel.reason)
    assert not (res / "ms_cal").exists() or not any((res / "ms_cal").iterdir())
    assert len((res / "cal" / "no_calibrator.txt").read_text().splitlines()) == 4
