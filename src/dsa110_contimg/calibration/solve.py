"""Calibrator solve: model the calibrator (`calibration.skymodel`), solve a bandpass
(`bandpass`) and complex gains (`gaincal`), flag outlying solutions, apply them to a
scratch copy to check the calibrator against its model, and write QA. A failed solve
writes a failing QA record, never an exception that stops the run.

Conventions: CASA's, MS row (i, j) = G_i conj(G_j) x model; solutions are referenced to
`refant` (zero phase there).
"""

import json
import logging
import shutil
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg.atomic import atomic_output, write_text
from dsa110_contimg.calibration.apply import correct_data
from dsa110_contimg.calibration.skymodel import (
    add_field_sources,
    chan_freqs,
    field_sources,
    primary_beam_track,
    write_point_model,
)
from dsa110_contimg.calibration.solutions import (
    BANDPASS_TABLE,
    GAIN_TABLE,
    antennas_with_data,
    flag_outliers,
    plot_solutions,
    read_caltable,
    solution_summary,
)
from dsa110_contimg.calibrators import read_calibrator_catalog
from dsa110_contimg.configuration import ConfigError, StageSettings
from dsa110_contimg.provenance import provenance
from dsa110_contimg.qa_records import FAIL, PASS, qa_record
from dsa110_contimg.sanity import caltable_problem

log = logging.getLogger(__name__)


class CalibrationError(RuntimeError):
    """A calibrator solve that cannot give usable solutions (recorded in QA)."""


@dataclass
class SolveSettings(StageSettings):
    """Options of the calibrator solve (config section `calibrate`, its subsection `qa`
    flattened into max_flagged_fraction, min_median_snr and max_residual_ratio).
    sky_model is the workflow's sky_catalog, not a key of the section."""

    SECTION = "calibrate"
    OTHER_KEYS = frozenset(
        {
            "catalog",
            "beam_fraction",
            "validity_hours",
            "fallback",
            "interp",
            "mem_mb",
            "runtime_min",
        }
    )
    QA_KEYS: typing.ClassVar[tuple] = (
        "max_flagged_fraction",
        "min_median_snr",
        "max_residual_ratio",
    )
    KEYS = {"sky_model": "sky_catalog", **{k: f"calibrate.qa.{k}" for k in QA_KEYS}}

    refant: str | None = None
    prephase_solint: str = "int"
    bandpass_solint: str = "inf"
    gain_solint: str = "inf"
    minsnr: float = 3.0
    uvrange: str = ""
    flag_nsigma: float = 6.0
    max_flagged_fraction: float = 0.2
    min_median_snr: float = 10.0
    max_residual_ratio: float = 0.2
    sky_model: str | None = None
    sky_model_min_flux_jy: float = 0.05
    sky_model_radius_deg: float = 5.0

    @classmethod
    def from_config(cls, section):
        """Settings from the config section `calibrate` (unknown keys are an error)."""
        section = dict(section or {})
        qa = dict(section.pop("qa", None) or {})
        unknown = sorted(set(qa) - set(cls.QA_KEYS)) + sorted(set(cls.QA_KEYS) & set(section))
        if unknown:
            raise ConfigError("; ".join(f"calibrate.{k}: unknown key" for k in unknown))
        settings = super().from_config({**section, **qa})
        settings.refant = settings.refant or None
        return settings


def _residual_check(ms):
    """Calibrator after applying, per cross-correlation, integration and polarization:
    the band's least-squares ratio r = sum_f conj(MODEL) CORRECTED / sum_f |MODEL|^2 over
    unflagged channels; returns the medians of |r - 1| and Re(r).

    Taken over the band so that it measures calibration errors, not the thermal noise of
    one channel: per channel, |CORRECTED/MODEL - 1| is ~0.4 on a full-size group
    (244 kHz channels) however good the solution."""
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
        corr = t.getcol("CORRECTED_DATA")[cross]
        model = t.getcol("MODEL_DATA")[cross]
        flag = t.getcol("FLAG")[cross]
    ok = ~flag & (np.abs(model) > 0)
    num = np.where(ok, np.conj(model) * corr, 0).sum(axis=1)
    den = np.where(ok, np.abs(model) ** 2, 0).sum(axis=1)
    valid = den > 0
    if not valid.any():
        return {"residual_ratio": None, "amplitude_ratio": None}
    ratio = num[valid] / den[valid]
    return {
        "residual_ratio": float(np.median(np.abs(ratio - 1.0))),
        "amplitude_ratio": float(np.median(ratio.real)),
    }


def solve_calibrator_group(
    ms, calibrator, pointing_dec_deg, cal_dir, qa_json, qa_png, settings=None, group=None
):
    """Solve bandpass and gains on calibrator group `ms`; write `cal_dir`/{bandpass.b,
    gain.g} and the QA json + png. `calibrator` is a catalog row (mapping with name,
    ra_deg, dec_deg, flux_jy, spectral_index). Returns the QA dict; on failure the QA
    says `passed: false` with the reason and `cal_dir` holds only FAILED.txt."""
    settings = settings or SolveSettings()
    cal = dict(calibrator)
    qa = {
        "calgroup": group or Path(ms).stem,
        "ms": str(ms),
        "calibrator": cal["name"],
        "calibrator_flux_jy": float(cal["flux_jy"]),
        "calibrator_spectral_index": float(cal["spectral_index"]),
        "pointing_dec_deg": float(pointing_dec_deg),
        "settings": asdict(settings),
    }
    tables_out = None
    with atomic_output(cal_dir) as tmp:
        tmp.mkdir()
        try:
            tables_out = _solve(Path(ms), cal, pointing_dec_deg, tmp, settings, qa)
            failures = _qa_failures(qa, settings) + [
                ("no_valid_solutions", problem)
                for name in (BANDPASS_TABLE, GAIN_TABLE)
                if (problem := caltable_problem(tmp / name))
            ]
        except Exception as err:  # noqa: BLE001 - any solve failure is a QA failure
            log.exception("%s: calibration solve failed", ms)
            failures = [("solve", f"solve failed: {type(err).__name__}: {err}")]
        reasons = [reason for _, reason in failures]
        qa["passed"] = not reasons
        qa["reasons"] = reasons
        if reasons:
            for name in (BANDPASS_TABLE, GAIN_TABLE):
                if (tmp / name).exists():
                    shutil.rmtree(tmp / name)
            (tmp / "FAILED.txt").write_text(
                f"calibration of {qa['calgroup']} on {cal['name']} failed QA:\n"
                + "\n".join(reasons)
                + "\n"
            )
        scratch = tmp / "scratch.ms"
        if scratch.exists():
            shutil.rmtree(scratch)
    qa["provenance"] = provenance([ms], asdict(settings))
    qa["tables"] = (
        {k: str(Path(cal_dir) / v) for k, v in (("bandpass", BANDPASS_TABLE), ("gain", GAIN_TABLE))}
        if qa["passed"]
        else {}
    )
    plot_solutions(tables_out if qa["passed"] else None, qa, qa_png)
    qa = qa_record(
        "cal",
        qa["calgroup"],
        PASS if qa["passed"] else FAIL,
        sorted({check for check, _ in failures}),
        [],
        _solve_metrics(qa),
        reason="; ".join(reasons) or None,
        **qa,
    )
    write_text(json.dumps(qa, indent=2, default=str), qa_json)
    level = logging.INFO if qa["passed"] else logging.WARNING
    log.log(
        level,
        "%s: calibration on %s %s%s",
        qa["calgroup"],
        cal["name"],
        "passed QA" if qa["passed"] else "FAILED QA: ",
        "; ".join(qa["reasons"]),
    )
    return qa


def solve_term(ms, table, term, solint, refant, settings, apmode="ap", apply=()):
    """Solve one Jones term into `table` with casatools' calibrater: "G" as casatasks'
    gaincal(gaintype="G", calmode=apmode), "B" as bandpass(bandtype="B",
    combine="scan"), with their defaults (cross-correlations only, minblperant 4,
    refantmode flex, solnorm False; the `apply` tables applied with linear
    interpolation). The tool directly saves importing casatasks (5 s per job)."""
    from dsa110_contimg.casaenv import casatools

    cb = casatools().calibrater()
    try:
        cb.open(filename=str(ms), compress=False, addcorr=False, addmodel=False)
        cb.selectvis(
            time="",
            spw="",
            scan="",
            field="",
            intent="",
            observation="",
            baseline="",
            uvrange=settings.uvrange,
            chanmode="none",
            msselect="ANTENNA1!=ANTENNA2",
        )
        for prior in apply:
            cb.setapply(t=0.0, table=str(prior), field="", calwt=True, spwmap=[-1], interp="linear")
        common = dict(
            t=solint,
            refant=refant,
            minblperant=4,
            solnorm=False,
            minsnr=settings.minsnr,
            table=str(table),
            append=False,
        )
        if term == "B":
            cb.setsolve(type="B", combine="scan", fillgaps=0, **common)
        else:
            cb.setsolve(
                type=term,
                combine="",
                preavg=-1.0,
                refantmode="flex",
                normtype="mean",
                apmode=apmode,
                solmode="",
                rmsthresh=[],
                phaseonly=False,
                **common,
            )
        cb.solve()
    finally:
        cb.close()


def _solve(ms, cal, pointing_dec_deg, workdir, settings, qa):
    from casacore import tables

    scratch = workdir / "scratch.ms"
    shutil.copytree(ms, scratch)
    with tables.table(f"{scratch}/ANTENNA", ack=False) as t:
        names = list(t.getcol("NAME"))
    present = antennas_with_data(scratch)
    if not present:
        raise CalibrationError(f"{ms}: every cross-correlation is flagged")
    refant = settings.refant or names[min(present)]
    if refant not in names:
        raise CalibrationError(f"refant {refant!r} is not an antenna of {ms}")
    qa["refant"] = refant
    write_point_model(
        scratch,
        cal["ra_deg"],
        cal["dec_deg"],
        cal["flux_jy"],
        cal["spectral_index"],
        pointing_dec_deg,
        workdir,
    )
    if settings.sky_model:
        sources = field_sources(
            settings.sky_model,
            cal["ra_deg"],
            cal["dec_deg"],
            cal,
            settings.sky_model_min_flux_jy,
            settings.sky_model_radius_deg,
        )
        qa["field_sources_in_model"] = add_field_sources(scratch, sources, pointing_dec_deg)
    beam = primary_beam_track(scratch, cal["ra_deg"], cal["dec_deg"], pointing_dec_deg)
    qa["pb_response_mean"] = float(beam.mean())
    common = dict(ms=scratch, refant=refant, settings=settings)
    pre = workdir / "prephase.g"
    bp, gain = workdir / BANDPASS_TABLE, workdir / GAIN_TABLE
    solve_term(table=pre, term="G", solint=settings.prephase_solint, apmode="p", **common)
    _require(
        pre,
        f"phase-only pre-calibration: no solutions above minsnr {settings.minsnr:g} "
        f"(is {cal['name']} too faint, or not in the data?)",
    )
    solve_term(table=bp, term="B", solint=settings.bandpass_solint, apply=[pre], **common)
    _require(
        bp,
        f"bandpass: no solutions above minsnr {settings.minsnr:g} (is "
        f"{cal['name']} too faint, or not in the data?)",
    )
    qa["bandpass_flagged_outliers"] = flag_outliers(bp, settings.flag_nsigma)
    solve_term(table=gain, term="G", solint=settings.gain_solint, apmode="ap", apply=[bp], **common)
    _require(gain, "gaincal (amplitude and phase) wrote no table")
    qa["gain_flagged_outliers"] = flag_outliers(gain, settings.flag_nsigma)
    shutil.rmtree(pre)
    bp_t, g_t = read_caltable(bp), read_caltable(gain)
    qa["bandpass"] = solution_summary(bp_t, names, present)
    qa["gain"] = solution_summary(g_t, names, present)
    correct_data(scratch, [str(bp), str(gain)], "nearest")
    qa.update(_residual_check(scratch))
    return {
        "bandpass": bp_t,
        "gain": g_t,
        "antenna_names": names,
        "freq_hz": chan_freqs(scratch),
        "refant": refant,
    }


def _require(path, message):
    if not Path(path).exists():
        raise CalibrationError(message)


def _qa_failures(qa, settings):
    """[(failed check, reason)] of a solve against the QA limits of `settings`."""
    failures = []
    for name in ("bandpass", "gain"):
        s = qa[name]
        if s["flagged_fraction"] > settings.max_flagged_fraction:
            failures.append(
                (
                    f"{name}_flagged_fraction",
                    f"{name}: {100 * s['flagged_fraction']:.0f}% of solutions flagged "
                    f"(limit {100 * settings.max_flagged_fraction:.0f}%)",
                )
            )
        if s["median_snr"] < settings.min_median_snr:
            failures.append(
                (
                    f"{name}_median_snr",
                    f"{name}: median solution SNR {s['median_snr']:.1f} "
                    f"< {settings.min_median_snr:g}",
                )
            )
    resid = qa.get("residual_ratio")
    if resid is None or not resid <= settings.max_residual_ratio:
        failures.append(
            (
                "residual_ratio",
                f"calibrated calibrator departs from its model: median |corrected/model "
                f"- 1| over the band = {resid} (limit {settings.max_residual_ratio:g})",
            )
        )
    return failures


def _solve_metrics(qa):
    """The QA record's metrics of a solve (null where the solve stopped before them)."""
    metrics = {}
    for name in ("bandpass", "gain"):
        for key in ("flagged_fraction", "median_snr"):
            value = (qa.get(name) or {}).get(key)
            metrics[f"{name}_{key}"] = None if value is None else float(value)
    for key in ("residual_ratio", "amplitude_ratio"):
        metrics[key] = None if qa.get(key) is None else float(qa[key])
    return metrics


def solve_from_manifest(
    ms, groups_path, catalog_path, group, cal_dir, qa_json, qa_png, settings=None
):
    """Look up the group's calibrator in the manifest and catalog, then solve."""
    groups = pd.read_parquet(groups_path)
    row = groups[groups.group == group]
    if row.empty:
        raise ValueError(f"{groups_path}: no group {group!r}")
    row = row.iloc[0]
    if not row.get("has_calibrator", False):
        raise ValueError(f"{groups_path}: group {group} has no calibrator transit")
    catalog = read_calibrator_catalog(catalog_path)
    cal = catalog[catalog.name == row.calibrator]
    if cal.empty:
        raise ValueError(
            f"{catalog_path}: calibrator {row.calibrator!r} (group {group}) is not in the catalog"
        )
    return solve_calibrator_group(
        ms, cal.iloc[0].to_dict(), row.dec_deg, cal_dir, qa_json, qa_png, settings, group=group
    )


def _run_solve(args):
    """A solve that fails QA still exits 0: its QA record says so (and the log)."""
    solve_from_manifest(
        args.ms,
        args.manifest,
        args.catalog,
        args.group,
        args.out,
        args.qa_json,
        args.qa_png,
        SolveSettings.from_args(args),
    )


def register_cli(sub):
    p = sub.add_parser("calibrate-solve", help="solve bandpass + gains on a calibrator group")
    p.add_argument("ms")
    p.add_argument("--manifest", required=True, help="groups.parquet with calibrator columns")
    p.add_argument("--catalog", required=True, help="calibrator catalog CSV")
    p.add_argument("--group", required=True)
    p.add_argument("--out", required=True, help="directory for bandpass.b and gain.g")
    p.add_argument("--qa-json", required=True)
    p.add_argument("--qa-png", required=True)
    SolveSettings.add_arguments(p)
    p.set_defaults(func=_run_solve)
