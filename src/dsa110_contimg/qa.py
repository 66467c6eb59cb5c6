"""Image and mosaic QA: noise, peak, dynamic range, beam and a catalog comparison
(``qa_catalog``), graded against [warn, fail] limits.

Per product a JSON report (``qa/{stage}/{name}.json``) and a PNG thumbnail with the
catalog overlaid; ``qa-summary`` gathers every report into ``qa/summary.parquet``
(``qa_records.summarize``).

Metrics
- ``rms_jy``: robust rms, MAD_TO_SIGMA x median absolute deviation, of the flat-noise
  image (images) or of the mosaic where the weight is at least half its maximum (mosaics).
- ``peak_jy``, ``dynamic_range`` = peak / rms, ``bmaj/bmin_arcsec``, ``bpa_deg``.
- ``rms_thermal_ratio``: rms over the radiometer-equation rms in the header (THERMRMS).
- Catalog comparison (``qa_catalog``: n_detected, detected_fraction, flux_ratio,
  position_offset_beam) at catalog positions where the primary beam (images) is at least
  ``pb_min`` or the weight (mosaics) is above the mosaic's cut.

Each thresholded metric gets pass / warn / fail from config ``qa.thresholds`` as
[warn, fail] limits; the product's status is the worst, and ``failed`` names the metrics
that failed. A metric that cannot be computed (e.g. no bright catalog source in view) is
reported as null and not graded. Reports have the shape of every QA record
(``qa_records``), where ``passed_products`` leaves failed products out of mosaics and the
time series.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import atomic_output, write_text
from dsa110_contimg.configuration import StageSettings
from dsa110_contimg.io import read_plane
from dsa110_contimg.provenance import provenance
from dsa110_contimg.qa_catalog import catalog_comparison
from dsa110_contimg.qa_records import FAIL, PASS, WARN, qa_record, summarize
from dsa110_contimg.stats import robust_rms

log = logging.getLogger(__name__)


THRESHOLD_KINDS = {
    # "min": a value below the limit is bad; "max": above it.
    "dynamic_range": "min",
    "rms_thermal_ratio": "max",
    "flux_ratio_error": "max",
    "position_offset_beam": "max",
    "detected_fraction": "min",
    "bmaj_arcsec": "max",
}


@dataclass
class QASettings(StageSettings):
    """Image and mosaic QA options (config section `qa`): the catalog comparison's
    pb_min, detect_snr and bright_snr, and [warn, fail] limits per metric."""

    SECTION = "qa"
    FLAGS = {"thresholds": "--thresholds-json"}

    pb_min: float = 0.3
    detect_snr: float = 5.0
    bright_snr: float = 30.0
    thresholds: dict = field(
        default_factory=lambda: {
            "dynamic_range": [100, 20],
            "rms_thermal_ratio": [2.0, 5.0],
            "flux_ratio_error": [0.1, 0.3],
            "position_offset_beam": [0.2, 0.5],
            "detected_fraction": [0.8, 0.5],
            "bmaj_arcsec": [150, 300],
        }
    )

    def comparison(self):
        """The catalog comparison's settings (pb_min, detect_snr, bright_snr)."""
        return {k: getattr(self, k) for k in ("pb_min", "detect_snr", "bright_snr")}


DEFAULT_SETTINGS = QASettings().comparison()
DEFAULT_THRESHOLDS = {
    # metric: (kind, warn, fail)
    name: (THRESHOLD_KINDS[name], float(warn), float(fail))
    for name, (warn, fail) in QASettings().thresholds.items()
}


def grade(metrics, thresholds=None):
    """(status, per-metric grades, failed names, warned names) from [warn, fail] limits."""
    thresholds = _thresholds(thresholds)
    grades = {}
    for name, (kind, warn, fail) in thresholds.items():
        value = metrics.get(name)
        if value is None or not np.isfinite(value):
            continue
        if kind == "min":
            grades[name] = FAIL if value < fail else WARN if value < warn else PASS
        else:
            grades[name] = FAIL if value > fail else WARN if value > warn else PASS
    failed = sorted(k for k, g in grades.items() if g == FAIL)
    warned = sorted(k for k, g in grades.items() if g == WARN)
    status = FAIL if failed else WARN if warned else PASS
    return status, grades, failed, warned


def _thresholds(thresholds):
    """Merge config thresholds ({metric: [warn, fail]}) into the defaults."""
    merged = dict(DEFAULT_THRESHOLDS)
    for name, limits in (thresholds or {}).items():
        if name not in DEFAULT_THRESHOLDS:
            raise ValueError(f"unknown QA threshold {name!r}; known: {sorted(DEFAULT_THRESHOLDS)}")
        warn, fail = limits
        merged[name] = (DEFAULT_THRESHOLDS[name][0], float(warn), float(fail))
    return merged


def _beam_metrics(header, path):
    missing = [k for k in ("BMAJ", "BMIN", "BPA") if k not in header]
    if missing:
        raise ValueError(f"{path}: no {missing} beam keywords in the header")
    return {
        "bmaj_arcsec": float(header["BMAJ"]) * 3600,
        "bmin_arcsec": float(header["BMIN"]) * 3600,
        "bpa_deg": float(header["BPA"]),
    }


def _load_catalog(catalog):
    import pandas as pd

    if catalog is None or isinstance(catalog, pd.DataFrame):
        return catalog
    from dsa110_contimg.catalogs import read_sky_catalog

    cat = read_sky_catalog(catalog)
    if "flux_jy" not in cat.columns:
        raise ValueError(f"{catalog}: catalog lacks the flux_jy column QA compares with")
    return cat


def qa_image(image_path, pb_path, residual_path=None, catalog=None, settings=None, thresholds=None):
    """QA report (dict) and catalog table of one flat-noise image with its primary beam."""
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    data, wcs, header = read_plane(image_path)
    pb, _, _ = read_plane(pb_path)
    if pb.shape != data.shape:
        raise ValueError(
            f"{pb_path}: primary beam shape {pb.shape} differs from image {image_path} {data.shape}"
        )
    metrics = {"rms_jy": robust_rms(data)}
    if residual_path is not None:
        resid, _, _ = read_plane(residual_path)
        metrics["residual_rms_jy"] = robust_rms(resid)
    metrics["peak_jy"] = float(np.nanmax(data))
    metrics["dynamic_range"] = metrics["peak_jy"] / metrics["rms_jy"]
    metrics.update(_beam_metrics(header, image_path))
    thermal = header.get("THERMRMS")
    metrics["thermal_rms_jy"] = float(thermal) if thermal else None
    metrics["rms_thermal_ratio"] = metrics["rms_jy"] / float(thermal) if thermal else None
    table = None
    cat = _load_catalog(catalog)
    if cat is not None:
        table, cmetrics = catalog_comparison(
            data,
            wcs,
            header,
            cat,
            metrics["rms_jy"],
            gain=pb,
            valid=pb >= settings["pb_min"],
            detect_snr=settings["detect_snr"],
            bright_snr=settings["bright_snr"],
        )
        metrics.update(cmetrics)
    metrics["calibration_status"] = str(header.get("CALSTAT", "unknown"))
    report = _report(
        "image",
        image_path,
        metrics,
        thresholds,
        settings,
        [image_path, pb_path]
        + ([residual_path] if residual_path else [])
        + ([catalog] if isinstance(catalog, (str, Path)) else []),
    )
    if metrics["calibration_status"] == "uncalibrated":
        report["grades"]["calibration_status"] = FAIL
        report["failed"] = sorted(report["failed"] + ["calibration_status"])
        report["status"] = FAIL
    return report, table, (data, wcs, header)


def qa_mosaic(mosaic_path, weight_path, catalog=None, settings=None, thresholds=None):
    """QA report (dict) and catalog table of a primary-beam-corrected mosaic."""
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    data, wcs, header = read_plane(mosaic_path)
    weight, _, _ = read_plane(weight_path)
    if weight.shape != data.shape:
        raise ValueError(
            f"{weight_path}: weight shape {weight.shape} differs from mosaic "
            f"{mosaic_path} {data.shape}"
        )
    good = np.isfinite(data)
    if not good.any():
        metrics = {"rms_jy": None, "peak_jy": None, "dynamic_range": None, "n_images": 0}
        report = _report(
            "mosaic", mosaic_path, metrics, thresholds, settings, [mosaic_path, weight_path]
        )
        report["status"], report["failed"] = FAIL, ["n_images"]
        return report, None, (data, wcs, header)
    wmax = float(np.nanmax(weight))
    core = good & (weight >= 0.5 * wmax)
    with np.errstate(divide="ignore", invalid="ignore"):
        noise_map = np.where(weight > 0, 1.0 / np.sqrt(weight), np.nan)
    metrics = {
        "rms_jy": robust_rms(data[core]),
        "noise_model_ratio": robust_rms((data * np.sqrt(np.where(good, weight, 0)))[good]),
        "peak_jy": float(np.nanmax(data)),
        "n_images": int(header.get("NIMAGES", 0)),
    }
    metrics["dynamic_range"] = metrics["peak_jy"] / metrics["rms_jy"]
    metrics.update(_beam_metrics(header, mosaic_path))
    table = None
    cat = _load_catalog(catalog)
    if cat is not None:
        scale = metrics["noise_model_ratio"] if np.isfinite(metrics["noise_model_ratio"]) else 1.0
        table, cmetrics = catalog_comparison(
            data,
            wcs,
            header,
            cat,
            noise_map * scale,
            gain=None,
            valid=good,
            detect_snr=settings["detect_snr"],
            bright_snr=settings["bright_snr"],
        )
        metrics.update(cmetrics)
    report = _report(
        "mosaic",
        mosaic_path,
        metrics,
        thresholds,
        settings,
        [mosaic_path, weight_path] + ([catalog] if isinstance(catalog, (str, Path)) else []),
    )
    return report, table, (data, wcs, header)


def _report(stage, product, metrics, thresholds, settings, inputs):
    status, grades, failed, warned = grade(metrics, thresholds)
    limits = {
        k: {"kind": v[0], "warn": v[1], "fail": v[2]} for k, v in _thresholds(thresholds).items()
    }
    product = Path(product)
    return qa_record(
        stage,
        product.parent.name,
        status,
        failed,
        warned,
        {k: _plain(v) for k, v in metrics.items()},
        product=str(product),
        grades=grades,
        thresholds=limits,
        settings=settings,
        provenance=provenance(inputs, {"thresholds": limits, "settings": settings}),
    )


def _plain(value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (np.integer, int)):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def thumbnail(data, wcs, path, title, table=None, max_pixels=800):
    """PNG of the image (block-averaged to <= max_pixels a side) with catalog sources
    marked: green circles detected, red crosses predicted but not detected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ny, nx = data.shape
    step = max(1, int(np.ceil(max(ny, nx) / max_pixels)))
    trimmed = data[: ny - ny % step, : nx - nx % step]
    small = np.nanmean(trimmed.reshape(ny // step, step, nx // step, step), axis=(1, 3))
    finite = small[np.isfinite(small)]
    lo, hi = np.percentile(finite, [1, 99.8]) if finite.size else (0, 1)
    fig = plt.figure(figsize=(7, 7 * ny / nx + 0.4))
    ax = fig.add_subplot(111)
    ax.imshow(
        small,
        origin="lower",
        cmap="gray_r",
        vmin=lo,
        vmax=max(hi, lo + 1e-12),
        extent=(-0.5, nx - 0.5, -0.5, ny - 0.5),
        interpolation="nearest",
    )
    if table is not None and len(table):
        x, y = wcs.world_to_pixel_values(table["ra_deg"].to_numpy(), table["dec_deg"].to_numpy())
        det = table["detected"].to_numpy(bool)
        missed = (table["predicted_snr"].to_numpy() > 0) & ~det
        ax.scatter(
            np.asarray(x)[det],
            np.asarray(y)[det],
            s=80,
            facecolors="none",
            edgecolors="tab:green",
            linewidths=1.2,
            label="catalog, detected",
        )
        ax.scatter(
            np.asarray(x)[missed],
            np.asarray(y)[missed],
            s=60,
            marker="x",
            color="tab:red",
            linewidths=1.2,
            label="catalog, not detected",
        )
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_report(report, table, image, json_path, png_path):
    """Write the JSON report and the PNG thumbnail; logs a failed product by name."""
    data, wcs, _ = image
    metrics = report["metrics"]
    title = (
        f"{report['stage']} {report['name']}: {report['status'].upper()}"
        + (f" ({', '.join(report['failed'])})" if report["failed"] else "")
        + (
            f"\nrms {metrics['rms_jy'] * 1e3:.2f} mJy, DR {metrics['dynamic_range']:.0f}"
            if metrics.get("rms_jy")
            else ""
        )
    )
    thumbnail(data, wcs, png_path, title, table)
    report = dict(report, png=str(png_path))
    if table is not None:
        checked = table[table.predicted_snr > 0]
        report["sources"] = json.loads(checked.to_json(orient="records"))
    write_text(json.dumps(report, indent=2, default=str), json_path)
    level = logging.WARNING if report["status"] != PASS else logging.INFO
    log.log(
        level,
        "QA %s %s: %s%s",
        report["stage"],
        report["name"],
        report["status"],
        f" (failed: {', '.join(report['failed'])})" if report["failed"] else "",
    )
    return report


def _settings_args(args):
    settings = QASettings.from_args(args)
    return settings.comparison(), settings.thresholds


def _run_image(args):
    settings, thresholds = _settings_args(args)
    report, table, image = qa_image(
        args.image, args.pb, args.residual, args.catalog, settings, thresholds
    )
    write_report(report, table, image, args.json, args.png)


def _run_mosaic(args):
    settings, thresholds = _settings_args(args)
    report, table, image = qa_mosaic(args.mosaic, args.weight, args.catalog, settings, thresholds)
    write_report(report, table, image, args.json, args.png)


def _run_summary(args):
    summarize(args.reports, args.out)


def register_cli(sub):
    common = [
        (
            "--catalog",
            dict(help="catalog CSV (source_id, ra_deg, dec_deg, flux_jy [, spectral_index])"),
        ),
        ("--json", dict(required=True, help="QA report to write")),
        ("--png", dict(required=True, help="thumbnail to write")),
    ]
    p = sub.add_parser("qa-image", help="QA of one image: noise, beam, catalog comparison")
    p.add_argument("image")
    p.add_argument("--pb", required=True)
    p.add_argument("--residual")
    for flag, kw in common:
        p.add_argument(flag, **kw)
    QASettings.add_arguments(p)
    p.set_defaults(func=_run_image)
    p = sub.add_parser("qa-mosaic", help="QA of one mosaic")
    p.add_argument("mosaic")
    p.add_argument("--weight", required=True)
    for flag, kw in common:
        p.add_argument(flag, **kw)
    QASettings.add_arguments(p)
    p.set_defaults(func=_run_mosaic)
    p = sub.add_parser("qa-summary", help="gather QA reports into summary.parquet")
    p.add_argument("reports", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run_summary)
