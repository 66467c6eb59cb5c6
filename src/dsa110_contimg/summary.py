"""What a run found, in numbers a person reads at the end of it (`dsa110-contimg summary`).

Reads the products of a results directory: groups in the manifest, QA status per stage,
mosaics, the normalized light curves (epochs per source, normalization references, the
reduced chi-square eta of each light curve about its weighted mean) and the ESE
candidates. When the archive holds a simulator's truth, each injected ESE is compared
with the candidates: found or not, centre offset in epochs (`visit_spacing`: the median
gap between the days a source was observed), fitted depth / injected depth.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _read(path):
    return pd.read_parquet(path) if Path(path).exists() else None


def qa_counts(results):
    """{stage: {status: count}} from qa/summary.parquet."""
    table = _read(Path(results) / "qa" / "summary.parquet")
    if table is None:
        return {}
    return {
        stage: {str(k): int(v) for k, v in rows.status.value_counts().items()}
        for stage, rows in table.groupby("stage")
    }


def light_curve_figures(results, exclude=()):
    """Epochs per light curve, normalization references per epoch and the median eta
    (reduced chi-square about the weighted mean) of the sources not in `exclude`."""
    ts = _read(Path(results) / "photometry" / "normalized.parquet")
    stats = _read(Path(results) / "ese" / "variability_stats.parquet")
    if ts is None or ts.empty:
        return {"n_sources": 0}
    epochs = ts.groupby("source_id").size()
    out = {
        "n_sources": int(epochs.size),
        "epochs_median": int(np.median(epochs)),
        "epochs_min": int(epochs.min()),
        "epochs_max": int(epochs.max()),
        "n_epochs": int(ts.image_id.nunique()) if "image_id" in ts else None,
    }
    if "n_references" in ts:
        refs = ts.groupby("image_id" if "image_id" in ts else "mjd").n_references.first()
        out["references_median"] = int(np.median(refs))
    if stats is not None and "eta" in stats and "source_id" in stats:
        kept = stats[~stats.source_id.isin(list(exclude)) & (stats.n > 2)]
        out["eta_median"] = float(np.median(kept.eta)) if len(kept) else None
        out["eta_sources"] = int(len(kept))
    return out


def injected_eses(archive):
    """The truth catalog's rows with an injected ESE (empty without truth)."""
    path = Path(archive) / "sky_catalog.csv" if archive else None
    if path is None or not path.exists() or not (Path(archive) / "truth").exists():
        return pd.DataFrame()
    catalog = pd.read_csv(path)
    if "ese_mjd" not in catalog:
        return pd.DataFrame()
    return catalog[catalog.ese_mjd.notna()]


def visit_spacing(mjd, same_visit_days=0.5):
    """Median gap (days) between a source's visits: measurements closer than
    `same_visit_days` are one visit (a field is revisited once a sidereal day, and two
    overlapping groups of one day see a source twice). NaN with fewer than two visits."""
    mjd = np.sort(np.asarray(mjd, dtype=float))
    if mjd.size < 2:
        return np.nan
    starts = mjd[np.concatenate([[True], np.diff(mjd) >= same_visit_days])]
    return float(np.median(np.diff(starts))) if starts.size > 1 else np.nan


def compare_with_truth(candidates, injected, timeseries):
    """One row per injected ESE: found, centre offset (days and epochs), depth ratio."""
    rows = []
    for src in injected.itertuples():
        match = candidates[candidates.source_id == src.source_id]
        spacing = visit_spacing(timeseries.mjd[timeseries.source_id == src.source_id])
        row = {
            "source_id": src.source_id,
            "found": not match.empty,
            "injected_mjd": float(src.ese_mjd),
            "injected_depth": float(src.ese_depth),
        }
        if not match.empty:
            best = match.iloc[0]
            dt = float(best.ese_mjd - src.ese_mjd)
            row.update(
                fitted_mjd=float(best.ese_mjd),
                offset_days=dt,
                offset_epochs=dt / spacing if spacing > 0 else np.nan,
                fitted_depth=float(best.ese_depth),
                depth_ratio=float(best.ese_depth / src.ese_depth),
                ese_sigma=float(best.ese_sigma),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(results, archive=None):
    """The figures of a run as a dict (JSON-ready)."""
    results = Path(results)
    groups = _read(results / "manifest" / "groups.parquet")
    rejected = _read(results / "manifest" / "rejected.parquet")
    candidates = _read(results / "ese" / "ese_candidates.parquet")
    timeseries = _read(results / "photometry" / "normalized.parquet")
    injected = injected_eses(archive)
    mosaics = (
        sorted((results / "mosaics").glob("*/mosaic.fits"))
        if (results / "mosaics").exists()
        else []
    )
    out = {
        "results": str(results),
        "groups": int(len(groups)) if groups is not None else 0,
        "rejected_files": int(len(rejected)) if rejected is not None else 0,
        "qa": qa_counts(results),
        "mosaics": len(mosaics),
        "light_curves": light_curve_figures(results, exclude=set(injected.get("source_id", []))),
        "candidates": []
        if candidates is None
        else candidates[
            [
                c
                for c in ("source_id", "ese_mjd", "ese_duration_days", "ese_depth", "ese_sigma")
                if c in candidates
            ]
        ].to_dict("records"),
    }
    if len(injected) and candidates is not None and timeseries is not None:
        truth = compare_with_truth(candidates, injected, timeseries)
        out["injected"] = truth.to_dict("records")
        out["false_candidates"] = sorted(set(candidates.source_id) - set(injected.source_id))
    return out


def format_summary(s):
    """The summary as the lines printed at the end of a run."""
    lines = [
        f"results: {s['results']}",
        f"groups: {s['groups']} (raw files rejected: {s['rejected_files']})",
    ]
    for stage, counts in sorted(s["qa"].items()):
        total = sum(counts.values())
        parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        lines.append(
            f"QA {stage}: {counts.get('pass', 0) + counts.get('warn', 0)} of {total} "
            f"passed ({parts})"
        )
    lines.append(f"mosaics: {s['mosaics']}")
    lc = s["light_curves"]
    if lc.get("n_sources"):
        lines.append(
            f"light curves: {lc['n_sources']} sources, {lc['epochs_median']} epochs "
            f"each (min {lc['epochs_min']}, max {lc['epochs_max']})"
            + (
                f", {lc['references_median']} normalization references per epoch"
                if "references_median" in lc
                else ""
            )
        )
        if lc.get("eta_median") is not None:
            lines.append(
                f"constant sources: median reduced chi-square (eta) "
                f"{lc['eta_median']:.2f} over {lc['eta_sources']} light curves"
            )
    lines.append(f"ESE candidates: {len(s['candidates'])}")
    for c in s["candidates"]:
        lines.append(
            f"  {c['source_id']}: centre MJD {c['ese_mjd']:.2f}, duration "
            f"{c.get('ese_duration_days', float('nan')):.1f} d, depth "
            f"{c['ese_depth']:.2f}, {c['ese_sigma']:.1f} sigma"
        )
    for t in s.get("injected", []):
        if t["found"]:
            lines.append(
                f"injected ESE {t['source_id']}: found; centre off by "
                f"{t['offset_days']:+.2f} d ({t['offset_epochs']:+.2f} epochs), depth "
                f"{t['fitted_depth']:.2f} vs injected {t['injected_depth']:.2f} "
                f"(ratio {t['depth_ratio']:.2f})"
            )
        else:
            lines.append(f"injected ESE {t['source_id']}: NOT found")
    if "false_candidates" in s:
        lines.append(
            f"candidates that are not injected ESEs: {len(s['false_candidates'])}"
            + (f" ({', '.join(s['false_candidates'])})" if s["false_candidates"] else "")
        )
    return "\n".join(lines)


def _run(args):
    s = summarize(args.results, args.archive)
    print(format_summary(s))
    if args.json:
        from dsa110_contimg.atomic import write_text

        write_text(json.dumps(s, indent=2, default=str), args.json)


def register_cli(sub):
    p = sub.add_parser("summary", help="print what a run found (QA, light curves, ESE candidates)")
    p.add_argument("results", help="results directory")
    p.add_argument("--archive", help="archive directory (its truth, when simulated, is compared)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=_run)
