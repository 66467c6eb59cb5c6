"""Primary-beam-weighted linear mosaics of consecutive group images.

On a common SIN grid covering the union of the inputs (reproject's
``find_optimal_celestial_wcs``, at the inputs' pixel size), each flat-noise image I_i and
its primary beam P_i are interpolated bilinearly (``reproject_interp``) and combined as

    M = sum(P_i I_i / s_i^2) / sum(P_i^2 / s_i^2),    W = sum(P_i^2 / s_i^2),

s_i the robust rms of image i (from its residual). M is the primary-beam-corrected sky
in Jy/beam with noise 1/sqrt(W); pixels where W is below ``weight_cut`` x max(W) are
blanked (NaN). Images whose QA report says "fail" are left out and named in the log.

Which groups make a mosaic: consecutive groups (same pointing declination, no gap
longer than 1.5 group lengths) in windows of ``groups_per_mosaic`` every ``stride``
groups; a mosaic is named after its first group. A trailing window with fewer groups
is not made until the groups that complete it arrive.
"""

import json
import logging
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import atomic_output
from dsa110_contimg.io import read_plane
from dsa110_contimg.provenance import provenance
from dsa110_contimg.sanity import Product, check_image

log = logging.getLogger(__name__)


def plan_mosaics(groups, groups_per_mosaic=3, stride=2, max_gap_factor=1.5, dec_tol_deg=0.1):
    """{mosaic name: [group names]} from a manifest groups table (group, start_mjd,
    end_mjd, mid_mjd, dec_deg)."""
    if groups_per_mosaic < 1 or stride < 1:
        raise ValueError("groups_per_mosaic and stride must be >= 1")
    if len(groups) == 0:
        return {}
    g = groups.sort_values("mid_mjd")
    mid, dec = g.mid_mjd.to_numpy(float), g.dec_deg.to_numpy(float)
    names = g.group.astype(str).to_list()
    length = float(np.median(g.end_mjd.to_numpy(float) - g.start_mjd.to_numpy(float))) or 1e-9
    breaks = (np.diff(mid) > max_gap_factor * length) | (np.abs(np.diff(dec)) > dec_tol_deg)
    edges = np.concatenate([[0], np.flatnonzero(breaks) + 1, [len(g)]])
    plan = {}
    for first, last in zip(edges[:-1], edges[1:]):
        for start in range(first, last - groups_per_mosaic + 1, stride):
            members = names[start : start + groups_per_mosaic]
            plan[members[0]] = members
    return plan


def common_grid(wcs_shapes, projection="SIN"):
    """(celestial WCS, shape) covering all (wcs, shape) inputs at the finest pixel size."""
    from astropy import units as u
    from astropy.wcs.utils import proj_plane_pixel_scales
    from reproject.mosaicking import find_optimal_celestial_wcs

    resolution = min(float(np.min(proj_plane_pixel_scales(w))) for w, _ in wcs_shapes)
    return find_optimal_celestial_wcs(
        [(shape, w) for w, shape in wcs_shapes],
        projection=projection,
        resolution=resolution * u.deg,
    )


def make_mosaic(
    images,
    pbs,
    out_mosaic,
    out_weight,
    residuals=None,
    reports=None,
    weight_cut=0.1,
    name=None,
    config=None,
):
    """Combine images (flat noise) with their primary beams into a mosaic and its
    weight map; returns a dict with the images used and left out."""
    from astropy.io import fits

    if not 0 <= weight_cut < 1:
        raise ValueError(f"weight_cut must be in [0, 1), not {weight_cut}")
    used, excluded = qa_passed_inputs(images, pbs, residuals, reports, f"mosaic {name}")
    images, pbs = [Path(p) for p in images], [Path(p) for p in pbs]

    headers, inputs = [], []
    for img, pb, res in used:
        data, beam, wcs, s, header = weighted_input(img, pb, res)
        inputs.append((data, beam, wcs, s))
        headers.append(header)

    if inputs:
        wcs_out, shape_out = common_grid([(w, d.shape) for d, _, w, _ in inputs])
    else:
        wcs_out, shape_out = _fallback_grid(images[0])
    num = np.zeros(shape_out)
    den = np.zeros(shape_out)
    for data, beam, wcs, s in inputs:
        accumulate(num, den, data, beam, wcs, s, wcs_out)
    wmax = float(den.max()) if den.size else 0.0
    keep = den > weight_cut * wmax if wmax > 0 else np.zeros(shape_out, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        mosaic = np.where(keep, num / den, np.nan)

    header = wcs_out.to_header()
    prov = provenance(
        [str(p) for p in images + pbs],
        config or {"weight_cut": weight_cut},
        used=[str(u[0]) for u in used],
        excluded=excluded,
    )
    mosaic_cards(header, headers, used, excluded, weight_cut, wmax, prov, name)
    weight_header = header.copy()
    for key in ("BMAJ", "BMIN", "BPA"):
        weight_header.remove(key, ignore_missing=True)
    header["BUNIT"] = "Jy/beam"
    header["PBCOR"] = (True, "primary-beam corrected (linear mosaic)")
    header["COMMENT"] = (
        "M = sum(P_i I_i / s_i^2) / sum(P_i^2 / s_i^2); noise 1/sqrt(W) with "
        "W in weight.fits; blank where W < WCUT x WMAX."
    )
    weight_header["BUNIT"] = "Jy-2"
    weight_header["COMMENT"] = "W = sum(P_i^2 / s_i^2); the mosaic's noise is 1/sqrt(W) (Jy/beam)."
    if used:
        source = ", ".join(str(img) for img, _, _ in used)
        check_image(
            mosaic,
            Product(Path(out_mosaic), "mosaic", name or Path(out_mosaic).parent.name, source),
            "mosaic",
        )
    for path, data, hdr in ((out_mosaic, mosaic, header), (out_weight, den, weight_header)):
        with atomic_output(path) as tmp:
            fits.PrimaryHDU(data=data.astype(np.float32), header=hdr).writeto(tmp)
    log.info(
        "mosaic %s: %d images (%d left out), %dx%d pixels, %.1f%% above the weight cut -> %s",
        name,
        len(used),
        len(excluded),
        shape_out[1],
        shape_out[0],
        100.0 * keep.mean(),
        out_mosaic,
    )
    return {
        "used": [str(u[0]) for u in used],
        "excluded": excluded,
        "shape": shape_out,
        "weight_max": wmax,
    }


def qa_passed_inputs(images, pbs, residuals=None, reports=None, product="mosaic"):
    """([(image, pb, residual or None)] whose QA `reports` passed, [{image, failed checks}]
    left out, each named in the log as left out of `product`)."""
    from dsa110_contimg.qa_records import passed_products

    images, pbs = [Path(p) for p in images], [Path(p) for p in pbs]
    if len(images) != len(pbs) or not images:
        raise ValueError(
            f"need one primary beam per image ({len(images)} images, {len(pbs)} beams)"
        )
    residuals = [Path(p) for p in residuals] if residuals else [None] * len(images)
    reports = [Path(p) for p in reports] if reports else [None] * len(images)
    used, left_out = passed_products(list(zip(images, pbs, residuals)), reports)
    excluded = []
    for (img, _, _), records in left_out.items():
        failed = [check for r in records for check in r["failed"]]
        log.warning("%s: leaving out %s, failed QA (%s)", product, img, ", ".join(failed))
        excluded.append({"image": str(img), "failed": failed})
    return used, excluded


def weighted_input(image, pb, residual=None):
    """(flat-noise data I, primary beam P, celestial WCS, rms s, header) of one image;
    s is the robust rms of its residual (of the image itself without one)."""
    from dsa110_contimg.stats import robust_rms

    data, wcs, header = read_plane(image)
    beam, _, _ = read_plane(pb)
    if beam.shape != data.shape:
        raise ValueError(f"{pb}: primary beam shape {beam.shape} differs from {image} {data.shape}")
    s = robust_rms(read_plane(residual)[0] if residual is not None else data)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"{image}: cannot weight an image whose rms is {s}")
    return data, beam, wcs, s, header


def accumulate(num, den, data, beam, wcs, s, wcs_out):
    """Add one image to the sums on the output grid, in place: num += P I / s^2 and
    den += P^2 / s^2 where the bilinearly interpolated image and beam are valid. Image
    and beam are interpolated as one stack: the pixel mapping is computed once."""
    from reproject import reproject_interp

    clean = np.where(np.isfinite(data), data, 0.0)
    p = np.where(np.isfinite(beam), beam, 0.0)
    (i_r, p_r), (foot, _) = reproject_interp(
        (np.stack([clean, p]), wcs), wcs_out, num.shape, order="bilinear"
    )
    ok = (foot > 0) & np.isfinite(i_r) & np.isfinite(p_r) & (p_r > 0)
    num[ok] += p_r[ok] * i_r[ok] / s**2
    den[ok] += p_r[ok] ** 2 / s**2


def _fallback_grid(image):
    """The first image's own grid, for a mosaic with every input left out."""
    data, wcs, _ = read_plane(image)
    return wcs, data.shape


def mosaic_cards(header, headers, used, excluded, weight_cut, wmax, prov, name):
    """Header cards of a stacked image: inputs, weight cut, median beam, frequency, times
    and provenance (`headers` those of the `used` (image, pb, residual) inputs)."""
    from astropy.time import Time

    from dsa110_contimg.io import image_frequency

    header["OBJECT"] = name or ""
    header["TELESCOP"] = "DSA-110"
    header["NIMAGES"] = (len(used), "images combined")
    header["NEXCLUD"] = (len(excluded), "images left out (failed QA)")
    header["WCUT"] = (weight_cut, "blank where weight < WCUT x WMAX")
    header["WMAX"] = (wmax, "[Jy-2] maximum weight")
    for i, (img, _, _) in enumerate(used, 1):
        header[f"IMAGE{i}"] = str(Path(img).parent.name)
    if headers:
        bmaj = float(np.median([h["BMAJ"] for h in headers]))
        bmin = float(np.median([h["BMIN"] for h in headers]))
        bpa = float(np.median([h["BPA"] for h in headers]))
        header["BMAJ"], header["BMIN"], header["BPA"] = bmaj, bmin, bpa
        header["FREQ"] = (image_frequency(headers[0]), "[Hz] image frequency")
        starts = [float(h["MJD-OBS"]) for h in headers if "MJD-OBS" in h]
        mids = [float(h.get("MJD-AVG", h.get("MJD-OBS"))) for h in headers if "MJD-OBS" in h]
        if starts:
            header["MJD-OBS"] = (min(starts), "start of the first image")
            header["DATE-OBS"] = Time(min(starts), format="mjd", scale="utc").isot
            header["MJD-AVG"] = (float(np.mean(mids)), "mean of the images' midpoints")
    header["SOFTWARE"] = prov["software"]
    header["SWVERS"] = prov["version"]
    header["CFGHASH"] = prov["config_hash"]
    header["PROVJSON"] = json.dumps(prov, default=str)


def _run(args):
    make_mosaic(
        args.images,
        args.pbs,
        args.out,
        args.weight,
        residuals=args.residuals,
        reports=args.qa,
        weight_cut=args.weight_cut,
        name=args.name,
    )


def _run_plan(args):
    from dsa110_contimg.ingest.manifest import read_groups

    plan = plan_mosaics(read_groups(args.manifest), args.groups_per_mosaic, args.stride)
    print(json.dumps(plan, indent=2))


def register_cli(sub):
    p = sub.add_parser("mosaic", help="primary-beam-weighted linear mosaic of images")
    p.add_argument("--images", nargs="+", required=True, help="flat-noise image.fits files")
    p.add_argument("--pbs", nargs="+", required=True, help="their pb.fits, same order")
    p.add_argument("--residuals", nargs="+", help="their residual.fits (for the rms weights)")
    p.add_argument("--qa", nargs="+", help="their QA reports; failed images are left out")
    p.add_argument("--out", required=True, help="mosaic.fits to write")
    p.add_argument("--weight", required=True, help="weight.fits to write")
    p.add_argument("--weight-cut", type=float, default=0.1)
    p.add_argument("--name", help="mosaic name for headers and logs")
    p.set_defaults(func=_run)
    p = sub.add_parser("mosaic-plan", help="print which groups form which mosaic")
    p.add_argument("--manifest", required=True, help="groups.parquet")
    p.add_argument("--groups-per-mosaic", type=int, default=3)
    p.add_argument("--stride", type=int, default=2)
    p.set_defaults(func=_run_plan)
