"""Calibration: bandpass and gain solutions, selection, application.

- `solve_calibrator_group`: model the calibrator (component list + `ft`, then scaled by
  the Airy primary beam as it drifts through, per integration and channel), solve a
  bandpass (`bandpass`) and complex gains (`gaincal`), flag outlying solutions, apply
  them to a scratch copy to check the calibrator against its model, and write QA. A
  failed solve writes a failing QA record, never an exception that stops the run.
- `select_calibrations`: each group takes the nearest calibrator group whose solve
  passed QA, within a validity window; the others are reported with a reason.
- `apply_calibration`: copy the group's MS to `ms_cal/{group}.ms` and fill
  CORRECTED_DATA (casatools' calibrater, as applycal), or (fallback) leave
  CORRECTED_DATA = DATA and mark the MS uncalibrated. The main table keyword
  `DSA110_CALIBRATION` records which.

Conventions: CASA's, MS row (i, j) = G_i conj(G_j) x model; solutions are referenced to
`refant` (zero phase there).
"""

import json
import logging
import shutil
import typing
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg import instrument as inst
from dsa110_contimg.atomic import atomic_output, write_parquet, write_text
from dsa110_contimg.calibrators import calibrator_spectrum, read_calibrator_catalog
from dsa110_contimg.configuration import ConfigError, StageSettings
from dsa110_contimg.primary_beam import angular_separation, beam_tracks
from dsa110_contimg.provenance import provenance
from dsa110_contimg.qa_records import FAIL, PASS, WARN, qa_record

log = logging.getLogger(__name__)

SELECTION_COLUMNS = ["group", "calgroup", "separation_hours", "status", "reason"]
MS_KEYWORD = "DSA110_CALIBRATION"
BANDPASS_TABLE = "bandpass.b"
GAIN_TABLE = "gain.g"
FALLBACKS = ("uncalibrated", "skip")


class CalibrationError(RuntimeError):
    """A calibrator solve that cannot give usable solutions (recorded in QA)."""


# --------------------------------------------------------------------------- solve


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


def _unique_times(ms):
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        times = t.getcol("TIME")
    return np.unique(times, return_inverse=True)


def _chan_freqs(ms):
    from casacore import tables

    with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
        return t.getcol("CHAN_FREQ")[0]


def primary_beam_track(ms, ra_deg, dec_deg, pointing_dec_deg):
    """Airy power response [n_time, n_chan] toward (ra, dec) for each integration of
    `ms`: the dish points at hour angle 0, apparent declination `pointing_dec_deg`."""
    return primary_beam_tracks(ms, [ra_deg], [dec_deg], pointing_dec_deg)[0]


def primary_beam_tracks(ms, ra_deg, dec_deg, pointing_dec_deg):
    """`primary_beam_track` of many sources at once: [n_source, n_time, n_chan]."""
    times, _ = _unique_times(ms)
    return beam_tracks(
        times / 86400.0, np.asarray(ra_deg), np.asarray(dec_deg), pointing_dec_deg, _chan_freqs(ms)
    )


def write_point_model(ms, ra_deg, dec_deg, flux_jy, spectral_index, pointing_dec_deg, workdir):
    """MODEL_DATA of `ms` = point source (component list + ft) x primary beam track."""
    from casacore import tables

    from dsa110_contimg.casaenv import casatasks, casatools

    cl_path = Path(workdir) / "model.cl"
    if cl_path.exists():
        shutil.rmtree(cl_path)
    cl = casatools().componentlist()
    cl.addcomponent(
        dir=f"J2000 {ra_deg}deg {dec_deg}deg",
        flux=[flux_jy, 0, 0, 0],
        fluxunit="Jy",
        freq=f"{inst.REFERENCE_FREQ_HZ}Hz",
        shape="point",
        spectrumtype="spectral index",
        index=spectral_index,
    )
    cl.rename(str(cl_path))
    cl.close()
    casatasks().ft(vis=str(ms), complist=str(cl_path), usescratch=True)
    beam = primary_beam_track(ms, ra_deg, dec_deg, pointing_dec_deg)
    _, tidx = _unique_times(ms)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        model = t.getcol("MODEL_DATA")
        model *= beam[tidx][:, :, None]
        t.putcol("MODEL_DATA", model)
    shutil.rmtree(cl_path)


def field_sources(sky_model, ra0_deg, dec0_deg, calibrator, min_flux_jy, radius_deg):
    """Sky-model sources to add to the calibrator model: brighter than `min_flux_jy`,
    within `radius_deg` of the field centre, and not the calibrator itself."""
    from dsa110_contimg.catalogs import read_sky_catalog

    sky = read_sky_catalog(sky_model)
    if "flux_jy" not in sky:
        raise ValueError(f"{sky_model}: sky model lacks column flux_jy")
    if "spectral_index" not in sky:
        sky = sky.assign(spectral_index=-0.7)
    ra, dec = np.radians(sky.ra_deg.to_numpy()), np.radians(sky.dec_deg.to_numpy())
    near = angular_separation(np.radians(ra0_deg), np.radians(dec0_deg), ra, dec)
    off_cal = angular_separation(
        np.radians(calibrator["ra_deg"]), np.radians(calibrator["dec_deg"]), ra, dec
    )
    keep = (
        (sky.flux_jy.to_numpy() >= min_flux_jy)
        & (near <= np.radians(radius_deg))
        & (off_cal > np.radians(1.0 / 60))
    )
    return sky[keep].reset_index(drop=True)


def add_field_sources(ms, sources, pointing_dec_deg, chunk_rows=20000):
    """Add point sources x primary-beam track to MODEL_DATA by direct Fourier transform,
    V = S(f) A(t, f) exp(+2 pi i (u l + v m + w (n - 1)) f / c) with the MS's UVW (the
    convention CASA's ft uses for these MSs), so field sources in the calibrator's beam
    are not absorbed into the gains."""
    from casacore import tables

    if sources.empty:
        return 0
    freqs = _chan_freqs(ms)
    _, tidx = _unique_times(ms)
    with tables.table(f"{ms}/FIELD", ack=False) as t:
        ra0, dec0 = t.getcol("PHASE_DIR")[0, 0]
    tracks = []
    beams = primary_beam_tracks(ms, sources.ra_deg, sources.dec_deg, pointing_dec_deg)
    for src, beam in zip(sources.itertuples(), beams):
        ra, dec = np.radians(src.ra_deg), np.radians(src.dec_deg)
        l = np.cos(dec) * np.sin(ra - ra0)
        m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
        n = np.sqrt(1.0 - l * l - m * m)
        spectrum = calibrator_spectrum(freqs, src.flux_jy, src.spectral_index)
        tracks.append((l, m, n - 1.0, spectrum[None, :] * beam))
    with tables.table(str(ms), readonly=False, ack=False) as t:
        for start in range(0, t.nrows(), chunk_rows):
            nrow = min(chunk_rows, t.nrows() - start)
            uvw = t.getcol("UVW", startrow=start, nrow=nrow)
            model = t.getcol("MODEL_DATA", startrow=start, nrow=nrow)
            rows = tidx[start : start + nrow]
            added = np.zeros(model.shape[:2], complex)
            for l, m, n1, flux in tracks:
                tau = (uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * n1) / inst.SPEED_OF_LIGHT
                added += flux[rows] * np.exp(2j * np.pi * tau[:, None] * freqs[None, :])
            model += added[:, :, None]
            t.putcol("MODEL_DATA", model, startrow=start, nrow=nrow)
    return len(tracks)


def read_caltable(path):
    """(antenna index, time, CPARAM [n, chan, pol], FLAG, SNR) of a CASA caltable."""
    from casacore import tables

    with tables.table(str(path), ack=False) as t:
        return {
            "antenna": t.getcol("ANTENNA1"),
            "time": t.getcol("TIME"),
            "gain": t.getcol("CPARAM"),
            "flag": t.getcol("FLAG"),
            "snr": t.getcol("SNR"),
        }


def flag_outliers(path, nsigma, min_fraction=0.05):
    """Flag solutions whose amplitude departs from the antenna's running median over
    channels (bandpass) or from the median over antennas (gains, one channel) by more
    than `nsigma` robust standard deviations and by more than `min_fraction` of it;
    returns the number newly flagged."""
    from casacore import tables
    from scipy.ndimage import median_filter

    with tables.table(str(path), readonly=False, ack=False) as t:
        gain, flag = t.getcol("CPARAM"), t.getcol("FLAG")
        amp = np.where(flag, np.nan, np.abs(gain))
        if amp.shape[1] > 4:
            filled = np.where(np.isnan(amp), np.nanmedian(amp, axis=1, keepdims=True), amp)
            smooth = median_filter(np.nan_to_num(filled, nan=0.0), size=(1, 5, 1), mode="nearest")
        else:
            smooth = np.nanmedian(amp, axis=0, keepdims=True)
        with np.errstate(all="ignore"):
            resid = amp / smooth - 1.0
        good = np.isfinite(resid)
        if good.sum() < 3:
            return 0
        sigma = 1.4826 * np.median(np.abs(resid[good] - np.median(resid[good])))
        bad = good & (np.abs(resid) > max(nsigma * sigma, min_fraction))
        t.putcol("FLAG", flag | bad)
    return int(bad.sum())


def _second_difference_scatter(x, axis):
    """Noise-like scatter of x along `axis`: std of second differences / sqrt(6), which
    ignores offsets and linear trends (bandpass slope, delay) per polarization."""
    if x.shape[axis] < 3:
        return None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = np.nanstd(np.diff(x, n=2, axis=axis)) / np.sqrt(6.0)
    return float(value) if np.isfinite(value) else None


def _antenna_stats(table, names, present):
    """Per antenna: flagged fraction, median SNR, amplitude scatter (fractional) and phase
    scatter (deg), channel to channel for a bandpass and time to time for gains."""
    rows = []
    for ant in np.unique(table["antenna"]):
        if ant not in present:
            continue
        sel = table["antenna"] == ant
        g, f, snr = table["gain"][sel], table["flag"][sel], table["snr"][sel]
        gm = np.where(f | (np.abs(g) == 0), np.nan, g)
        axis = 1 if g.shape[1] > 1 else 0
        with np.errstate(all="ignore"):
            log_amp = np.log(np.abs(gm))
        phase = np.degrees(np.unwrap(np.nan_to_num(np.angle(gm)), axis=axis))
        phase[np.isnan(gm)] = np.nan
        phase_scatter = _second_difference_scatter(phase, axis)
        rows.append(
            {
                "antenna": names[int(ant)] if int(ant) < len(names) else str(ant),
                "flagged_fraction": float(f.mean()),
                "median_snr": float(np.median(snr[~f])) if (~f).any() else 0.0,
                "amp_scatter": _second_difference_scatter(log_amp, axis),
                "phase_scatter_deg": phase_scatter,
            }
        )
    return rows


def antennas_with_data(ms):
    """Antenna indices with at least one unflagged cross-correlation sample: a dead
    antenna (flagged before calibration) has no solutions to find, so it neither counts
    against the solution statistics nor serves as reference antenna."""
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        good = ~t.getcol("FLAG").all(axis=(1, 2)) & (a1 != a2)
    return {int(a) for a in np.unique(np.concatenate([a1[good], a2[good]]))}


def _table_summary(table, names, present):
    """Solution statistics over the antennas `present` in the data."""
    rows = np.isin(table["antenna"], list(present))
    f = table["flag"][rows]
    snr = table["snr"][rows][~f]
    return {
        "n_solutions": int(f.size),
        "flagged_fraction": float(f.mean()) if f.size else 1.0,
        "median_snr": float(np.median(snr)) if snr.size else 0.0,
        "per_antenna": _antenna_stats(table, names, present),
    }


def _residual_check(ms):
    """Calibrator after applying: median |CORRECTED - MODEL| / |MODEL| and the median
    ratio Re(CORRECTED / MODEL) over unflagged cross-correlations."""
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
        corr = t.getcol("CORRECTED_DATA")[cross]
        model = t.getcol("MODEL_DATA")[cross]
        flag = t.getcol("FLAG")[cross]
    ok = ~flag & (np.abs(model) > 0)
    if not ok.any():
        return {"residual_ratio": None, "amplitude_ratio": None}
    ratio = corr[ok] / model[ok]
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
            failures = _qa_failures(qa, settings)
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


def _solve(ms, cal, pointing_dec_deg, workdir, settings, qa):
    from casacore import tables

    from dsa110_contimg.casaenv import casatasks

    cta = casatasks()
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
    common = dict(vis=str(scratch), refant=refant, minsnr=settings.minsnr, uvrange=settings.uvrange)
    pre = workdir / "prephase.g"
    bp, gain = workdir / BANDPASS_TABLE, workdir / GAIN_TABLE
    cta.gaincal(
        caltable=str(pre), solint=settings.prephase_solint, calmode="p", gaintype="G", **common
    )
    _require(
        pre,
        f"phase-only pre-calibration: no solutions above minsnr {settings.minsnr:g} "
        f"(is {cal['name']} too faint, or not in the data?)",
    )
    cta.bandpass(
        caltable=str(bp),
        solint=settings.bandpass_solint,
        combine="scan",
        bandtype="B",
        solnorm=False,
        gaintable=[str(pre)],
        **common,
    )
    _require(
        bp,
        f"bandpass: no solutions above minsnr {settings.minsnr:g} (is "
        f"{cal['name']} too faint, or not in the data?)",
    )
    qa["bandpass_flagged_outliers"] = flag_outliers(bp, settings.flag_nsigma)
    cta.gaincal(
        caltable=str(gain),
        solint=settings.gain_solint,
        calmode="ap",
        gaintype="G",
        gaintable=[str(bp)],
        **common,
    )
    _require(gain, "gaincal (amplitude and phase) wrote no table")
    qa["gain_flagged_outliers"] = flag_outliers(gain, settings.flag_nsigma)
    shutil.rmtree(pre)
    bp_t, g_t = read_caltable(bp), read_caltable(gain)
    qa["bandpass"] = _table_summary(bp_t, names, present)
    qa["gain"] = _table_summary(g_t, names, present)
    _correct(scratch, [str(bp), str(gain)], "nearest")
    qa.update(_residual_check(scratch))
    return {
        "bandpass": bp_t,
        "gain": g_t,
        "antenna_names": names,
        "freq_hz": _chan_freqs(scratch),
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
                f"calibrated calibrator departs from its model: median "
                f"|corrected/model - 1| = {resid} (limit {settings.max_residual_ratio:g})",
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


def plot_solutions(solutions, qa, png):
    """Bandpass amplitude/phase vs frequency and gain amplitude/phase per antenna."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    title = f"{qa['calgroup']}: {qa['calibrator']}  " + (
        "QA passed" if qa["passed"] else "QA FAILED"
    )
    fig.suptitle(title, color="black" if qa["passed"] else "red")
    if solutions is None:
        for ax in axes.flat:
            ax.axis("off")
        axes[0, 0].text(0, 0.5, "\n".join(qa["reasons"]) or "no solutions", wrap=True, va="center")
    else:
        bp, g = solutions["bandpass"], solutions["gain"]
        f_mhz = solutions["freq_hz"] / 1e6
        for row in range(bp["gain"].shape[0]):
            for p in range(bp["gain"].shape[2]):
                gm = np.where(bp["flag"][row, :, p], np.nan, bp["gain"][row, :, p])
                axes[0, 0].plot(f_mhz, np.abs(gm), lw=0.7)
                axes[0, 1].plot(f_mhz, np.degrees(np.angle(gm)), lw=0.7)
        axes[0, 0].set(xlabel="frequency (MHz)", ylabel="bandpass amplitude")
        axes[0, 1].set(xlabel="frequency (MHz)", ylabel="bandpass phase (deg)")
        gm = np.where(g["flag"], np.nan, g["gain"])[:, 0, :]
        for p, marker in zip(range(gm.shape[1]), "ox"):
            axes[1, 0].plot(g["antenna"], np.abs(gm[:, p]), marker, label=f"pol {p}")
            axes[1, 1].plot(g["antenna"], np.degrees(np.angle(gm[:, p])), marker)
        axes[1, 0].set(xlabel="antenna index", ylabel="gain amplitude")
        axes[1, 1].set(xlabel="antenna index", ylabel="gain phase (deg)")
        axes[1, 0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- selection


def read_cal_qa(paths):
    """{calgroup: QA dict} from solve QA json files."""
    out = {}
    for p in paths:
        qa = json.loads(Path(p).read_text())
        out[qa["calgroup"]] = qa
    return out


def select_calibrations(groups, cal_qa, validity_hours=12.0, fallback="uncalibrated"):
    """One row per group (SELECTION_COLUMNS): the nearest calibrator group (by mid time)
    whose solve passed QA and lies within `validity_hours`. Without one, status is
    `fallback` ("uncalibrated": imaged uncalibrated with a warning; "skip") and the
    reason names the nearest candidates."""
    if fallback not in FALLBACKS:
        raise ValueError(f"calibrate fallback {fallback!r}: choose one of {FALLBACKS}")
    cal_rows = groups[groups.has_calibrator] if "has_calibrator" in groups else groups.iloc[:0]
    mids = dict(zip(groups.group, groups.mid_mjd))
    usable = {c: mids[c] for c in cal_rows.group if c in cal_qa and cal_qa[c].get("passed")}
    failed = {
        c: cal_qa.get(c, {}).get("reasons", ["no QA record"])
        for c in cal_rows.group
        if c not in usable
    }
    rows = []
    for g in groups.itertuples():
        seps = sorted(((abs(m - g.mid_mjd) * 24.0, c) for c, m in usable.items()))
        if seps and seps[0][0] <= validity_hours:
            rows.append((g.group, seps[0][1], seps[0][0], "calibrated", ""))
            continue
        parts = [f"no calibrator group passed QA within {validity_hours:g} h"]
        if seps:
            parts.append(f"nearest usable: {seps[0][1]} at {seps[0][0]:.2f} h")
        near_failed = sorted(
            (abs(mids[c] - g.mid_mjd) * 24.0, c)
            for c in failed
            if abs(mids[c] - g.mid_mjd) * 24.0 <= validity_hours
        )
        for sep, c in near_failed:
            parts.append(f"{c} at {sep:.2f} h failed QA ({'; '.join(failed[c])})")
        rows.append(
            (
                g.group,
                "",
                np.nan,
                fallback if fallback == "skip" else "uncalibrated",
                "; ".join(parts),
            )
        )
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)


def write_selection(
    groups_path, qa_paths, selection_path, report_path, validity_hours=12.0, fallback="uncalibrated"
):
    """Selection Parquet and the human-readable list of groups without a calibrator."""
    groups = pd.read_parquet(groups_path)
    sel = select_calibrations(groups, read_cal_qa(qa_paths), validity_hours, fallback)
    meta = provenance(
        [groups_path, *qa_paths], {"validity_hours": validity_hours, "fallback": fallback}
    )
    write_parquet(sel, selection_path, meta)
    missing = sel[sel.status != "calibrated"]
    lines = [
        f"# groups without a usable calibrator within {validity_hours:g} h "
        f"(fallback: {fallback}); {len(missing)} of {len(sel)}",
        "# group\tstatus\treason",
    ]
    lines += [f"{r.group}\t{r.status}\t{r.reason}" for r in missing.itertuples()]
    write_text("\n".join(lines) + "\n", report_path)
    for r in missing.itertuples():
        log.warning("group %s has no calibrator (%s): %s", r.group, r.status, r.reason)
    log.info(
        "calibration selection: %d calibrated, %d without calibrator",
        (sel.status == "calibrated").sum(),
        len(missing),
    )
    return sel


# --------------------------------------------------------------------------- apply


def apply_calibration(ms, out_ms, qa_json, selection_row, cal_dir=None, interp="nearest"):
    """Copy `ms` to `out_ms` and apply the selected tables into CORRECTED_DATA; with no
    calibrator, CORRECTED_DATA = DATA and the MS is marked uncalibrated. Writes the
    apply QA json; returns it."""
    from casacore import tables

    row = dict(selection_row)
    status = row["status"]
    if status == "skip":
        raise ValueError(
            f"group {row['group']}: selection says skip ({row['reason']}); nothing to apply"
        )
    record = {
        "group": row["group"],
        "calibration": status,
        "calgroup": row["calgroup"],
        "separation_hours": (
            None if pd.isna(row["separation_hours"]) else float(row["separation_hours"])
        ),
        "reason": row["reason"],
        "tables": [],
        "warnings": [],
    }
    with atomic_output(out_ms) as tmp:
        shutil.copytree(ms, tmp)
        if status == "calibrated":
            gaintables = [str(Path(cal_dir) / BANDPASS_TABLE), str(Path(cal_dir) / GAIN_TABLE)]
            for tab in gaintables:
                if not Path(tab).exists():
                    raise FileNotFoundError(
                        f"group {row['group']}: calibration table {tab} is missing"
                    )
            _correct(tmp, gaintables, interp)
            record["tables"] = gaintables
        else:
            with tables.table(str(tmp), readonly=False, ack=False) as t:
                for start in range(0, t.nrows(), 20000):
                    n = min(20000, t.nrows() - start)
                    t.putcol("CORRECTED_DATA", t.getcol("DATA", start, n), start, n)
            record["warnings"].append(f"UNCALIBRATED: {row['reason']}")
            log.warning(
                "group %s: writing UNCALIBRATED data (CORRECTED_DATA = DATA): %s",
                row["group"],
                row["reason"],
            )
        with tables.table(str(tmp), readonly=False, ack=False) as t:
            t.putkeyword(
                MS_KEYWORD,
                {
                    "status": status,
                    "calgroup": row["calgroup"] or "",
                    "reason": row["reason"] or "",
                    "tables": ",".join(record["tables"]),
                },
            )
            flag = t.getcol("FLAG")
        record["flagged_fraction"] = float(flag.mean())
    record["provenance"] = provenance([ms, *record["tables"]], {"interp": interp})
    record = qa_record(
        "apply",
        row["group"],
        PASS if status == "calibrated" else WARN,
        [],
        [] if status == "calibrated" else ["calibration"],
        {
            "calibration": status,
            "separation_hours": record["separation_hours"],
            "flagged_fraction": record["flagged_fraction"],
        },
        product=str(out_ms),
        **record,
    )
    write_text(json.dumps(record, indent=2, default=str), qa_json)
    return record


def _correct(ms, gaintables, interp):
    """CORRECTED_DATA = DATA corrected by `gaintables` (flags from failed solutions
    applied, weights untouched): casatools' calibrater directly, the same computation as
    applycal(calwt=False) without importing casatasks (5 s per job)."""
    from dsa110_contimg.casaenv import casatools

    cb = casatools().calibrater()
    try:
        cb.open(filename=str(ms), compress=False, addcorr=True, addmodel=False)
        cb.selectvis()
        for table in gaintables:
            cb.setapply(table=table, interp=interp, calwt=False)
        cb.correct(applymode="calflag")
    finally:
        cb.close()


def calibration_status(ms):
    """The `DSA110_CALIBRATION` record of a calibrated MS (status, calgroup, reason, tables)."""
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        if MS_KEYWORD not in t.keywordnames():
            raise ValueError(f"{ms}: no {MS_KEYWORD} keyword (not written by apply)")
        return dict(t.getkeyword(MS_KEYWORD))


# --------------------------------------------------------------------------- CLI


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


def apply_from_selection(
    ms, selection_path, group, out_ms, qa_json, cal_dir=None, interp="nearest"
):
    """Apply what `selection_path` chose for `group`; `cal_dir` holds the chosen
    calibrator group's tables (results/cal/{calgroup})."""
    sel = pd.read_parquet(selection_path)
    row = sel[sel.group == group]
    if row.empty:
        raise ValueError(f"{selection_path}: no group {group!r}")
    row = row.iloc[0].to_dict()
    if row["calgroup"] and (cal_dir is None or Path(cal_dir).name != row["calgroup"]):
        raise ValueError(
            f"group {group}: selection chose {row['calgroup']} but the "
            f"calibration directory given is {cal_dir}"
        )
    return apply_calibration(ms, out_ms, qa_json, row, cal_dir, interp)


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


def _run_select(args):
    write_selection(
        args.manifest, args.qa, args.out, args.report, args.validity_hours, args.fallback
    )


def _run_apply(args):
    sel = pd.read_parquet(args.selection)
    calgroup = sel.calgroup[sel.group == args.group]
    cal_dir = Path(args.cal_root) / calgroup.iloc[0] if len(calgroup) and calgroup.iloc[0] else None
    apply_from_selection(
        args.ms, args.selection, args.group, args.out, args.qa_json, cal_dir, args.interp
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

    p = sub.add_parser("calibrate-select", help="choose a calibrator group for every group")
    p.add_argument("qa", nargs="*", help="solve QA json files")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="selection Parquet")
    p.add_argument("--report", required=True, help="text list of groups without calibrator")
    p.add_argument("--validity-hours", type=float, default=12.0)
    p.add_argument("--fallback", choices=FALLBACKS, default="uncalibrated")
    p.set_defaults(func=_run_select)

    p = sub.add_parser("calibrate-apply", help="write ms_cal/{group}.ms with CORRECTED_DATA")
    p.add_argument("ms")
    p.add_argument("--selection", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--cal-root", required=True, help="directory holding {calgroup}/ tables")
    p.add_argument("--out", required=True)
    p.add_argument("--qa-json", required=True)
    p.add_argument("--interp", default="nearest")
    p.set_defaults(func=_run_apply)
