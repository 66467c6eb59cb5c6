"""Relative flux normalization against stable bright reference sources.

Calibration leaves every image with a common multiplicative gain error; bright constant
sources in the same image share it. For each epoch (an image: `epoch_column`, default
image_id) the correction is

    c_t = robust weighted mean over references i of S_it / median_t(S_i)

(references clipped about the epoch median, weights 1 / (e^2 + floor^2) with
e = sigma_it / median_t(S_i)); its error is the larger of the formal error of that mean and
the scatter of the references about it. Normalized fluxes are S_it / c_t with

    sigma_norm^2 = (sigma_it / c_t)^2 + (S_it sigma_c / c_t^2)^2.

References start as the sources with median SNR >= `ref_min_snr` over at least
`ref_min_epochs` epochs (or a given list), never one in `unfit` (the catalog's resolved,
confused or near-edge sources, catalogs.reference_flags), and never a measurement flagged
NEAR_EDGE by photometry; a reference whose normalized light curve varies
(reduced chi^2 about its mean an outlier among the references: above
max(`eta_min`, median + `eta_nmad` x scaled MAD)) is rejected and c_t recomputed, until no
more are rejected.

Added columns: norm_factor, norm_factor_err, flux_norm_jy, flux_norm_err_jy, n_references
(references used in that epoch), is_reference (an accepted reference). Epochs with no
reference get NaN normalized fluxes and the NO_REFERENCE bit in `flags`.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.configuration import StageSettings
from dsa110_contimg.io import read_table
from dsa110_contimg.photometry.forced import NEAR_EDGE
from dsa110_contimg.provenance import provenance
from dsa110_contimg.stats import MAD_TO_SIGMA, robust_rms

log = logging.getLogger(__name__)

NO_REFERENCE = 16
"""Flag bit (beside the photometry bits): no reference source in this epoch, so the
normalized flux is NaN."""


def epoch_factors(ref, epoch_column, clip_sigma=3.0, floor=0.005):
    """Per-epoch c_t and its error from reference rows (source_id, epoch, flux, err).

    Returns (DataFrame indexed by epoch with norm_factor, norm_factor_err,
    n_references; the reference rows with ratio r, its error e and a `used` mask).
    """
    import pandas as pd

    ref = ref.copy()
    med = ref.groupby("source_id", observed=True)["flux_jy"].transform("median")
    ref["r"] = ref["flux_jy"] / med
    ref["e"] = ref["flux_err_jy"] / med
    by_epoch = ref.groupby(epoch_column, observed=True)
    centre = by_epoch["r"].transform("median")
    dev = (ref["r"] - centre).abs()
    spread = MAD_TO_SIGMA * dev.groupby(ref[epoch_column], observed=True).transform("median")
    ref["used"] = dev <= clip_sigma * np.maximum(spread, ref["e"])
    used = ref[ref["used"]]
    w = 1.0 / (used["e"] ** 2 + floor**2)
    grp = used.assign(w=w, wr=w * used["r"]).groupby(epoch_column, observed=True)
    sw = grp["w"].sum()
    c = grp["wr"].sum() / sw
    n = grp["r"].count()
    resid2 = w * (used["r"] - used[epoch_column].map(c).astype(float)) ** 2
    scatter2 = resid2.groupby(used[epoch_column], observed=True).sum() / sw
    with np.errstate(invalid="ignore", divide="ignore"):
        empirical = np.sqrt(scatter2 / (n - 1)).where(n >= 3, 0.0)
    err = np.maximum(np.sqrt(1.0 / sw), empirical)
    out = pd.DataFrame(
        {"norm_factor": c, "norm_factor_err": err, "n_references": n.astype(np.int64)}
    )
    return out, ref


@dataclass
class NormalizeSettings(StageSettings):
    """Normalization options (config section `photometry`, its reference_* keys; pb_cut
    and error_model are forced photometry's). A catalog source resolved beyond
    reference_max_size_arcsec or confused within reference_confusion_arcsec is never a
    reference. ref_min_epochs and floor are not configured (command-line flags only)."""

    SECTION = "photometry"
    OTHER_KEYS = frozenset({"pb_cut", "error_model"})
    FLAGS = {
        "reference_min_snr": "--ref-min-snr",
        "reference_max_size_arcsec": "--beam-arcsec",
        "reference_confusion_arcsec": "--confusion-arcsec",
    }
    KEYS = {"ref_min_epochs": None, "floor": None}

    reference_min_snr: float = 50.0
    reference_max_size_arcsec: float = 40.0
    reference_confusion_arcsec: float = 80.0
    ref_min_epochs: int = 5
    floor: float = 0.005


def normalize_timeseries(
    ts,
    epoch_column="image_id",
    references=None,
    ref_min_snr=NormalizeSettings.reference_min_snr,
    ref_min_epochs=NormalizeSettings.ref_min_epochs,
    clip_sigma=3.0,
    floor=NormalizeSettings.floor,
    eta_min=3.0,
    eta_nmad=5.0,
    min_references=3,
    max_iterations=20,
    unfit=None,
):
    """Normalize a photometry time series; returns (table with added columns, info dict)."""
    ts = ts.copy()
    good = np.isfinite(ts["flux_jy"]) & np.isfinite(ts["flux_err_jy"]) & (ts["flux_err_jy"] > 0)
    rows = ts.loc[good, ["source_id", epoch_column, "flux_jy", "flux_err_jy"]]
    per_source = (
        rows.assign(snr=rows["flux_jy"] / rows["flux_err_jy"])
        .groupby("source_id", observed=True)
        .agg(n=("snr", "size"), snr=("snr", "median"))
    )
    if references is None:
        chosen = per_source.index[
            (per_source["snr"] >= ref_min_snr) & (per_source["n"] >= ref_min_epochs)
        ]
    else:
        chosen = per_source.index[per_source.index.isin(list(references))]
    if unfit is not None:
        chosen = chosen[~chosen.isin(list(unfit))]
    accepted = set(chosen)
    flags = (
        ts["flags"].fillna(0).to_numpy(np.int64) if "flags" in ts else np.zeros(len(ts), np.int64)
    )
    ref_rows = rows[(flags[np.asarray(good)] & NEAR_EDGE) == 0]
    settings = {
        "ref_min_snr": ref_min_snr,
        "ref_min_epochs": ref_min_epochs,
        "clip_sigma": clip_sigma,
        "floor": floor,
        "eta_min": eta_min,
        "eta_nmad": eta_nmad,
        "min_references": min_references,
    }
    if len(accepted) < min_references:
        log.warning(
            "only %d reference sources (need %d; ref_min_snr %g, ref_min_epochs %d): "
            "fluxes left unnormalized (factor 1, flag NO_REFERENCE)",
            len(accepted),
            min_references,
            ref_min_snr,
            ref_min_epochs,
        )
        return _unnormalized(ts), {
            "epoch_column": epoch_column,
            "n_references": 0,
            "references": [],
            "rejected_references": {},
            "epochs_without_reference": int(ts[epoch_column].nunique()),
            "settings": settings,
        }
    rejected = {}
    for iteration in range(max_iterations):
        ref = ref_rows[ref_rows["source_id"].isin(accepted)]
        factors, ref = epoch_factors(ref, epoch_column, clip_sigma, floor)
        eta = _reference_eta(ref, factors, epoch_column, floor)
        cut = max(eta_min, float(np.median(eta)) + eta_nmad * robust_rms(eta))
        bad = eta[eta > cut].sort_values(ascending=False)
        room = len(accepted) - min_references
        bad = bad.iloc[: max(room, 0)]
        if bad.empty:
            break
        for sid, value in bad.items():
            rejected[sid] = float(value)
            accepted.discard(sid)
        log.info(
            "normalize: iteration %d rejected %d variable references (eta > %.2f)",
            iteration + 1,
            len(bad),
            cut,
        )

    c = ts[epoch_column].map(factors["norm_factor"]).astype(float)
    c_err = ts[epoch_column].map(factors["norm_factor_err"]).astype(float)
    n_ref = ts[epoch_column].map(factors["n_references"]).fillna(0).astype(np.int64)
    ts["norm_factor"] = c
    ts["norm_factor_err"] = c_err
    ts["flux_norm_jy"] = ts["flux_jy"] / c
    ts["flux_norm_err_jy"] = np.sqrt(
        (ts["flux_err_jy"] / c) ** 2 + (ts["flux_jy"] * c_err / c**2) ** 2
    )
    ts["n_references"] = n_ref
    ts["is_reference"] = ts["source_id"].isin(accepted).to_numpy()
    missing = ~np.isfinite(c.to_numpy())
    ts.loc[missing, "flags"] = ts.loc[missing, "flags"].astype(np.int64) | NO_REFERENCE
    info = {
        "epoch_column": epoch_column,
        "n_references": len(accepted),
        "references": sorted(map(str, accepted)),
        "rejected_references": {str(k): v for k, v in rejected.items()},
        "epochs_without_reference": int(ts.loc[missing, epoch_column].nunique())
        if missing.any()
        else 0,
        "settings": settings,
    }
    return ts, info


def _unnormalized(ts):
    """The time series with factor 1 (no usable references): flux_norm = flux, flagged."""
    ts["norm_factor"] = 1.0
    ts["norm_factor_err"] = 0.0
    ts["flux_norm_jy"] = ts["flux_jy"]
    ts["flux_norm_err_jy"] = ts["flux_err_jy"]
    ts["n_references"] = np.int64(0)
    ts["is_reference"] = False
    ts["flags"] = ts["flags"].astype(np.int64) | NO_REFERENCE
    return ts


def _reference_eta(ref, factors, epoch_column, floor):
    """Reduced chi^2 of each reference's normalized light curve about its weighted mean."""
    c = ref[epoch_column].map(factors["norm_factor"]).astype(float)
    c_err = ref[epoch_column].map(factors["norm_factor_err"]).astype(float)
    y = ref["r"] / c
    sig2 = (ref["e"] / c) ** 2 + (ref["r"] * c_err / c**2) ** 2 + floor**2
    ok = np.isfinite(y) & np.isfinite(sig2)
    frame = ref.loc[ok, ["source_id"]].assign(
        w=1 / sig2[ok], wy=y[ok] / sig2[ok], wyy=y[ok] ** 2 / sig2[ok]
    )
    g = frame.groupby("source_id", observed=True)
    sw, swy, swyy, n = g["w"].sum(), g["wy"].sum(), g["wyy"].sum(), g["w"].count()
    chi2 = swyy - swy**2 / sw
    return (chi2 / (n - 1).clip(lower=1)).where(n >= 2, 0.0)


def run_normalize(in_path, out_path, **kwargs):
    """Normalize `in_path` (timeseries.parquet) and write `out_path` atomically."""
    ts = read_table(
        in_path,
        [
            "source_id",
            "mjd",
            "flux_jy",
            "flux_err_jy",
            "flags",
            kwargs.get("epoch_column", "image_id"),
        ],
    )
    table, info = normalize_timeseries(ts, **kwargs)
    write_parquet(
        table, out_path, metadata=provenance([in_path], config=info["settings"], normalize=info)
    )
    log.info(
        "%s: %d references kept, %d rejected -> %s",
        in_path,
        info["n_references"],
        len(info["rejected_references"]),
        out_path,
    )
    return table, info


def _read_reference_list(path):
    """Reference source ids: a CSV with a source_id column, or one id per line."""
    import pandas as pd

    path = Path(path)
    text = path.read_text().splitlines()
    if text and "source_id" in text[0].split(","):
        return pd.read_csv(path)["source_id"].tolist()
    return [line.strip() for line in text if line.strip()]


def register_cli(subparsers):
    """Add the `normalize` subcommand."""
    p = subparsers.add_parser("normalize", help="relative flux normalization of a time series")
    p.add_argument("input", help="timeseries.parquet")
    p.add_argument("output", help="normalized.parquet")
    p.add_argument("--epoch-column", default="image_id", help="column defining an epoch")
    p.add_argument("--references", help="file of reference source ids (CSV or one per line)")
    p.add_argument(
        "--catalog",
        help="sky catalog: its resolved or confused sources (and "
        "those flagged near_edge / reference_unfit) are never references",
    )
    NormalizeSettings.add_arguments(p)
    p.set_defaults(func=_cli)


def _cli(args):
    settings = NormalizeSettings.from_args(args)
    refs = _read_reference_list(args.references) if args.references else None
    unfit = None
    if args.catalog:
        from dsa110_contimg.catalogs import read_sky_catalog, reference_flags

        dec = read_table(args.input, select=["dec"]).get("dec")
        strip = None
        if dec is not None and np.isfinite(dec).any():
            margin = 2.0 * settings.reference_confusion_arcsec / 3600.0
            strip = (float(np.nanmin(dec)) - margin, float(np.nanmax(dec)) + margin)
        cat = reference_flags(
            read_sky_catalog(args.catalog, strip),
            settings.reference_max_size_arcsec,
            settings.reference_confusion_arcsec,
        )
        unfit = cat.source_id[cat.reference_unfit].tolist()
        log.info(
            "%s: %d of %d sources unfit as references (resolved %d, confused %d, near an edge %d)",
            args.catalog,
            len(unfit),
            len(cat),
            int(cat.resolved.sum()),
            int(cat.confused.sum()),
            int(cat.near_edge.sum()),
        )
    _, info = run_normalize(
        args.input,
        args.output,
        epoch_column=args.epoch_column,
        references=refs,
        ref_min_snr=settings.reference_min_snr,
        ref_min_epochs=settings.ref_min_epochs,
        floor=settings.floor,
        unfit=unfit,
    )
    print(
        json.dumps(
            {
                "references": info["n_references"],
                "rejected": len(info["rejected_references"]),
                "epochs_without_reference": info["epochs_without_reference"],
            }
        )
    )
