"""A static, self-contained HTML page for vetting ESE candidates (ese/candidates.html).

Per candidate, most significant first: the light curve with the fitted ESE model and the
null model (constant + trend) and the dip's extent shaded; the fitted depth per sub-band
against frequency with the lambda^2 line (when the photometry has sub-bands); image
cutouts before, during and after the dip from the images of the time series (image_id
-> `images_dir`/<image_id>/image.fits, only QA-passed images reach the time series);
and the candidate's table row. Figures are PNGs embedded as data URIs, so the single
file can be copied, mailed or put in the Snakemake report. A small script counts the
figures that the browser decoded and shows it at the top of the page (body attributes
data-figures and data-figures-loaded).
"""

import base64
import html
import io
import json
import logging
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import atomic_output
from dsa110_contimg.io import read_table
from dsa110_contimg.variability.esefit import fit_at

log = logging.getLogger(__name__)

CUTOUT_HALF_PIX = 20

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
section{border-top:2px solid #888;margin-top:1.5em;padding-top:.5em}
.figs{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
table.row{border-collapse:collapse;font-size:12px}
table.row td,table.row th{border:1px solid #ccc;padding:2px 6px;text-align:left}
.flag{color:#b00;font-weight:bold}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('img.fig'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures', imgs.length);
  document.body.setAttribute('data-figures-loaded', ok);
  document.getElementById('status').textContent = ok + ' of ' + imgs.length + ' figures loaded';
});
"""


def _png(fig):
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def light_curve_figure(lc, row, trend_degree=1):
    """PNG data URI: fluxes, the ESE model and the null model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, f, e = lc["mjd"].to_numpy(float), lc["flux"].to_numpy(float), lc["err"].to_numpy(float)
    t0, fwhm = _centre(row)
    fit = fit_at(t, f, e, t0, fwhm, trend_degree)
    grid = np.linspace(t.min(), t.max(), 800)
    null, model = fit["predict"](grid)
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.errorbar(t, f * 1e3, e * 1e3, fmt=".", ms=3, color="k", alpha=0.6, label="data")
    ax.plot(grid, model * 1e3, color="C3", lw=1.5, label="ESE model")
    ax.plot(grid, null * 1e3, color="C0", ls="--", lw=1.2, label="null (constant + trend)")
    ax.axvspan(t0 - fwhm / 2, t0 + fwhm / 2, color="C1", alpha=0.15, label="dip FWHM")
    ax.set_xlabel("MJD")
    ax.set_ylabel("flux density (mJy)")
    ax.set_title(
        f"{row['source_id']}: {row['ese_sigma']:.1f} sigma, depth "
        f"{row['ese_depth']:.2f}, {fwhm:.1f} d",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _png(fig)


def subband_figure(row):
    """PNG data URI: depth per sub-band against frequency, with the lambda^2 line."""
    import matplotlib.pyplot as plt

    bands = sorted(
        int(c[len("freq_sb") : -len("_hz")])
        for c in row.index
        if c.startswith("freq_sb") and c.endswith("_hz")
    )
    nu = np.array([row[f"freq_sb{k}_hz"] for k in bands], dtype=float)
    d = np.array([row[f"ese_depth_sb{k}"] for k in bands], dtype=float)
    de = np.array([row[f"ese_depth_err_sb{k}"] for k in bands], dtype=float)
    if not np.isfinite(d).any():
        return None
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.errorbar(nu / 1e6, d, de, fmt="o", color="C3")
    slope = row.get("ese_lambda2_slope", np.nan)
    if np.isfinite(slope):
        lam2 = (299792458.0 / nu) ** 2
        w = 1 / de**2
        x0 = np.sum(w * lam2) / np.sum(w)
        y0 = np.sum(w * d) / np.sum(w)
        grid = np.linspace(nu.min(), nu.max(), 50)
        ax.plot(grid / 1e6, y0 + slope * ((299792458.0 / grid) ** 2 - x0), color="k", lw=1)
    ax.set_xlabel("frequency (MHz)")
    ax.set_ylabel("depth")
    ax.set_title(
        f"d(depth)/d(lambda^2) = {slope:.3g} +- "
        f"{row.get('ese_lambda2_slope_err', np.nan):.2g} m^-2",
        fontsize=8,
    )
    fig.tight_layout()
    return _png(fig)


def cutout(image_path, ra, dec, half=CUTOUT_HALF_PIX):
    """(stamp, (x, y) of the source in it) around (ra, dec), or None when off the image.

    A cube is shown as the mean of its planes (the wide band)."""
    from dsa110_contimg.io import read_subbands

    planes, _, wcs, _ = read_subbands(image_path)
    data = planes.mean(axis=0)
    x, y = wcs.world_to_pixel_values(ra, dec)
    if not (np.isfinite(x) and np.isfinite(y)):
        return None
    xi, yi = int(round(float(x))), int(round(float(y)))
    ny, nx = data.shape
    x0, x1, y0, y1 = (
        max(xi - half, 0),
        min(xi + half + 1, nx),
        max(yi - half, 0),
        min(yi + half + 1, ny),
    )
    if x0 >= x1 or y0 >= y1:
        return None
    return data[y0:y1, x0:x1], (float(x) - x0, float(y) - y0)


def cutout_figure(stamp, xy, label, vmin, vmax):
    """PNG data URI of one cutout (mJy/beam, a colour scale shared by the three epochs)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.4, 2.6))
    ax.imshow(stamp * 1e3, origin="lower", cmap="inferno", vmin=vmin * 1e3, vmax=vmax * 1e3)
    ax.plot(xy[0], xy[1], "+", color="cyan", ms=10)
    ax.set_title(label, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return _png(fig)


def _centre(row):
    t0 = row.get("ese_mjd_fit", np.nan)
    fwhm = row.get("ese_duration_fit_days", np.nan)
    if not (np.isfinite(t0) and np.isfinite(fwhm)):
        t0, fwhm = row["ese_mjd"], row["ese_duration_days"]
    return float(t0), float(fwhm)


def _epochs(lc, t0, fwhm):
    """image_id and MJD of the epochs nearest before (t0 - 1.5 fwhm), at t0, and after."""
    picks = []
    for label, target in (("before", t0 - 1.5 * fwhm), ("during", t0), ("after", t0 + 1.5 * fwhm)):
        i = int(np.argmin(np.abs(lc["mjd"].to_numpy(float) - target)))
        picks.append((label, str(lc["image_id"].iloc[i]), float(lc["mjd"].iloc[i])))
    return picks


def _row_table(row):
    cells = []
    for key, value in row.items():
        if isinstance(value, (float, np.floating)):
            text = f"{value:.6g}"
        else:
            text = str(value)
        cells.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(text)}</td></tr>")
    return "<table class='row'>" + "".join(cells) + "</table>"


def build_page(candidates, timeseries, images_dir=None, max_candidates=100, trend_degree=1):
    """The page's HTML (str) from the candidates and time-series tables."""
    from dsa110_contimg.variability.ese import flux_columns

    flux_col, err_col = flux_columns(timeseries)
    ts = timeseries.assign(flux=timeseries[flux_col], err=timeseries[err_col])
    ts = ts[np.isfinite(ts["flux"]) & np.isfinite(ts["err"]) & (ts["err"] > 0)]
    groups = {
        str(k): g.sort_values("mjd")
        for k, g in ts.groupby(ts["source_id"].astype(str), observed=True)
    }
    parts = []
    shown = candidates.head(max_candidates)
    for _, row in shown.iterrows():
        sid = str(row["source_id"])
        lc = groups.get(sid)
        flags = []
        if bool(row.get("ese_in_progress", False)):
            flags.append("<span class='flag'>IN PROGRESS: egress not yet observed</span>")
        figs = []
        if lc is not None and len(lc) > 0:
            figs.append(light_curve_figure(lc, row, trend_degree))
        sub = subband_figure(row)
        if sub:
            figs.append(sub)
        cutouts = []
        if images_dir is not None and lc is not None and "image_id" in lc:
            t0, fwhm = _centre(row)
            stamps = []
            for label, image_id, mjd in _epochs(lc, t0, fwhm):
                path = Path(images_dir) / image_id / "image.fits"
                if path.exists():
                    got = cutout(path, float(row["ra"]), float(row["dec"]))
                    if got is not None:
                        stamps.append((got, f"{label}: {image_id} (MJD {mjd:.1f})"))
            if stamps:
                values = np.concatenate([st[0][0].ravel() for st in stamps])
                vmin, vmax = np.nanpercentile(values, [1, 99.8])
                cutouts = [cutout_figure(st[0], st[1], label, vmin, vmax) for st, label in stamps]
        imgs = "".join(f"<img class='fig' src='{u}' alt='figure'>" for u in figs + cutouts)
        parts.append(
            f"<section id='{html.escape(sid)}'><h2>{html.escape(sid)}</h2>{''.join(flags)}"
            f"<div class='figs'>{imgs}</div>{_row_table(row)}</section>"
        )
    head = (
        f"<p>{len(candidates)} candidates"
        + (f" (first {len(shown)} shown)" if len(shown) < len(candidates) else "")
        + ". <span id='status'>figures not yet counted</span></p>"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ESE candidates</title>"
        f"<style>{STYLE}</style></head><body><h1>ESE candidates</h1>{head}"
        f"{''.join(parts)}<script>{SCRIPT}</script></body></html>"
    )


def write_page(
    candidates_path, timeseries_path, out_path, images_dir=None, max_candidates=100, trend_degree=1
):
    """Write ese/candidates.html atomically; returns the number of candidates shown."""
    candidates = read_table(
        candidates_path, ["source_id", "ese_sigma", "ese_mjd", "ese_duration_days", "ese_depth"]
    )
    timeseries = read_table(timeseries_path, ["source_id", "mjd", "flux_jy", "flux_err_jy"])
    page = build_page(candidates, timeseries, images_dir, max_candidates, trend_degree)
    with atomic_output(out_path) as tmp:
        Path(tmp).write_text(page)
    log.info("%s: %d candidates", out_path, min(len(candidates), max_candidates))
    return min(len(candidates), max_candidates)


def register_cli(subparsers):
    """Add the `ese-page` subcommand."""
    p = subparsers.add_parser("ese-page", help="HTML page to vet the ESE candidates")
    p.add_argument("--candidates", required=True, help="ese_candidates.parquet")
    p.add_argument("--timeseries", required=True, help="normalized.parquet")
    p.add_argument("--images-dir", help="directory of <image_id>/image.fits for cutouts")
    p.add_argument("--out", required=True, help="candidates.html")
    p.add_argument("--max-candidates", type=int, default=100)
    p.set_defaults(func=_cli)


def _cli(args):
    n = write_page(args.candidates, args.timeseries, args.out, args.images_dir, args.max_candidates)
    print(json.dumps({"candidates_shown": n, "page": args.out}))
