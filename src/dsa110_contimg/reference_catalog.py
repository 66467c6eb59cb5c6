"""The reference catalog made from the data: deep images per field, searched by PyBDSF.

Fields. The archive's images are grouped into declination strips (image centres within
`dec_tol_deg`) and each strip into fields of `field_width_deg` in right ascension: field
k covers RA [k w, (k+1) w). A field's deep image is on its own SIN grid (centred on the
field, at the strip's declination and the finest input pixel) reaching `field_margin_deg`
beyond the field in RA and covering the members' footprints in Dec; its members are the
QA-passed images that overlap that grid. A source belongs to the field its position falls
in, so neighbouring fields never list it twice, and the margin keeps a source near a
field's boundary off the edge of the deep image.

Deep image. The inverse-variance weighted mean of the epochs' primary-beam-corrected
images, as a mosaic (mosaic.accumulate), over every member image:

    D = sum(P_i I_i / s_i^2) / sum(P_i^2 / s_i^2),    W = sum(P_i^2 / s_i^2),

noise 1/sqrt(W), blank where W < weight_cut x max(W). Images are read one at a time, so a
month of epochs costs the memory of one image and the two sums.

Catalog. PyBDSF (Mohan & Rafferty 2015) fits Gaussians to the islands of the deep image
above `thresh_isl` x its local rms with a peak above `thresh_pix` x rms, and groups them
into sources. Each source becomes a row: position and its error, total and peak flux,
fitted and deconvolved size, local rms (the island's), PyBDSF's S_Code, the reference
flags of catalogs.reference_flags (resolved: deconvolved major axis above the beam;
confused: a neighbour within ~2 beams; near_edge: close to the deep image's edge or
blanked pixels) and `compact` = not resolved; cross-matched (nearest within
`match_radius_arcsec`) to the input sky catalog when one is given.
"""

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg.catalogs import (
    DEFAULT_SPECTRAL_INDEX,
    read_sky_catalog,
    reference_flags,
    write_sky_catalog,
)
from dsa110_contimg.configuration import StageSettings

log = logging.getLogger(__name__)

PHOTOMETRY_CATALOGS = ("input", "reference", "union")
REFERENCE_PREFIX = "DSA"


@dataclass
class ReferenceCatalogSettings(StageSettings):
    """Options of the reference catalog (config section `reference_catalog`)."""

    SECTION = "reference_catalog"
    OTHER_KEYS = frozenset({"mem_mb", "runtime_min"})

    field_width_deg: float = 4.0
    field_margin_deg: float = 0.5
    dec_tol_deg: float = 0.5
    weight_cut: float = 0.1
    thresh_isl: float = 3.0
    thresh_pix: float = 7.0
    match_radius_arcsec: float = 20.0
    edge_margin_arcsec: float = 120.0
    ncores: int = 1


# --------------------------------------------------------------------------- fields


def _wrap(dra):
    """RA differences into [-180, 180) deg."""
    return (np.asarray(dra, float) + 180.0) % 360.0 - 180.0


def _footprint(header):
    """(centre RA, centre Dec, corner RAs, corner Decs, pixel size) of an image, deg."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    from dsa110_contimg.io import image_wcs

    wcs = image_wcs(header).celestial
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5, (nx - 1) / 2])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5, (ny - 1) / 2])
    ra, dec = wcs.pixel_to_world_values(x, y)
    cell = float(np.min(proj_plane_pixel_scales(wcs)))
    return float(ra[4]), float(dec[4]), np.asarray(ra[:4]), np.asarray(dec[:4]), cell


def plan_fields(headers, settings=None):
    """{field name: field} from the images' FITS headers: each field a dict with `ra_min`,
    `ra_max` (its RA range, deg), `ra_deg`, `dec_deg` (grid centre), `members` (indices
    of the headers that overlap its grid), `wcs` and `shape` (its deep-image grid)."""
    s = settings or ReferenceCatalogSettings()
    if not 0 < s.field_width_deg <= 360 or s.field_margin_deg < 0:
        raise ValueError("field_width_deg must be in (0, 360] and field_margin_deg >= 0")
    feet = [_footprint(h) for h in headers]
    if not feet:
        return {}
    order = np.argsort([f[1] for f in feet])
    decs = np.array([feet[i][1] for i in order])
    breaks = np.flatnonzero(np.diff(decs) > s.dec_tol_deg) + 1
    fields = {}
    for strip in np.split(order, breaks):
        dec0 = float(np.median([feet[i][1] for i in strip]))
        n_tiles = int(np.ceil(360.0 / s.field_width_deg))
        tiles = set()
        for i in strip:
            ra_c, _, ra_corner, _, _ = feet[i]
            half = float(np.max(np.abs(_wrap(ra_corner - ra_c)))) + s.field_margin_deg
            lo = int(np.floor((ra_c - half) / s.field_width_deg))
            hi = int(np.floor((ra_c + half) / s.field_width_deg))
            tiles.update(k % n_tiles for k in range(lo, hi + 1))
        for k in sorted(tiles):
            field = _field(k, dec0, strip, feet, s)
            if field is not None:
                fields[field["name"]] = field
    return fields


def _field(k, dec0, strip, feet, s):
    """Field k of the strip at dec0: its grid and the images overlapping it (None when
    no image does)."""
    from astropy.wcs import WCS

    ra_min = k * s.field_width_deg
    ra_max = min((k + 1) * s.field_width_deg, 360.0)
    ra0 = (ra_min + ra_max) / 2.0
    half = (ra_max - ra_min) / 2.0 + s.field_margin_deg
    cell = min(feet[i][4] for i in strip)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.cdelt = [-cell, cell]
    wcs.wcs.crpix = [1.0, 1.0]
    members, dec_lo, dec_hi = [], np.inf, -np.inf
    for i in strip:
        ra_c, _, ra_corner, dec_corner, _ = feet[i]
        offsets = _wrap(np.append(ra_corner, ra_c) - ra0)
        if offsets.max() >= -half and offsets.min() <= half:
            members.append(int(i))
            dec_lo, dec_hi = min(dec_lo, dec_corner.min()), max(dec_hi, dec_corner.max())
    if not members:
        return None
    # the field's RA edges (+ margin) and centre at the members' lowest, central and
    # highest Dec: parallels curve on the SIN plane, so all nine bound the grid
    edge_ra = np.array([ra0 - half, ra0, ra0 + half] * 3)
    edge_dec = np.repeat([dec_lo, dec0, dec_hi], 3)
    x, y = wcs.world_to_pixel_values(edge_ra, edge_dec)
    x0, x1 = int(np.floor(np.min(x))), int(np.ceil(np.max(x)))
    y0, y1 = int(np.floor(np.min(y))), int(np.ceil(np.max(y)))
    wcs.wcs.crpix = [1.0 - x0, 1.0 - y0]
    name = f"ra{ra_min:06.2f}_dec{dec0:+06.2f}"
    return {
        "name": name,
        "ra_min": ra_min,
        "ra_max": ra_max,
        "ra_deg": ra0,
        "dec_deg": dec0,
        "members": members,
        "wcs": wcs,
        "shape": (y1 - y0 + 1, x1 - x0 + 1),
    }


# --------------------------------------------------------------------------- deep image


def deep_image(products, field, out_image, out_weight, weight_cut=0.1):
    """Stack the field's member images, [(image, pb, residual or None)], into the deep
    image D and its weight W (FITS, written atomically); returns max(W). The restoring
    beam in its header is the members' weighted mean (weights: their sums of P^2 / s^2
    on the field's grid); members whose beams differ by more than 5% are named in the
    log, as D's point-source response is then not one Gaussian."""
    from astropy.io import fits

    from dsa110_contimg.atomic import atomic_output
    from dsa110_contimg.mosaic import accumulate, mosaic_cards, weighted_input
    from dsa110_contimg.provenance import provenance
    from dsa110_contimg.sanity import Product, check_image

    wcs_out, shape = field["wcs"], field["shape"]
    num, den = np.zeros(shape), np.zeros(shape)
    read, weights = [], []
    for image, pb, residual in products:
        data, beam, wcs, s, header = weighted_input(image, pb, residual)
        before = den.sum()
        accumulate(num, den, data, beam, wcs, s, wcs_out)
        read.append(header)
        weights.append(den.sum() - before)
    wmax = float(den.max()) if den.size else 0.0
    keep = den > weight_cut * wmax if wmax > 0 else np.zeros(shape, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        deep = np.where(keep, num / den, np.nan)
    header = wcs_out.to_header()
    prov = provenance([str(p[0]) for p in products], {"weight_cut": weight_cut})
    mosaic_cards(header, read, products, [], weight_cut, wmax, prov, field["name"])
    if read and sum(weights) > 0:
        header["BMAJ"], header["BMIN"], header["BPA"] = mean_beam(read, weights, field["name"])
    weight_header = header.copy()
    for key in ("BMAJ", "BMIN", "BPA"):
        weight_header.remove(key, ignore_missing=True)
    header["BUNIT"] = "Jy/beam"
    header["PBCOR"] = (True, "primary-beam corrected deep image")
    header["COMMENT"] = "D = sum(P_i I_i / s_i^2) / sum(P_i^2 / s_i^2); noise 1/sqrt(W)."
    weight_header["BUNIT"] = "Jy-2"
    if products:
        source = f"{len(products)} images of field {field['name']}"
        check_image(
            deep, Product(Path(out_image), "reference", field["name"], source), "deep image"
        )
    for path, data, hdr in ((out_image, deep, header), (out_weight, den, weight_header)):
        with atomic_output(path) as tmp:
            fits.PrimaryHDU(data=data.astype(np.float32), header=hdr).writeto(tmp)
    log.info(
        "deep image %s: %d images, %dx%d pixels, %.1f%% above the weight cut -> %s",
        field["name"],
        len(products),
        shape[1],
        shape[0],
        100.0 * keep.mean(),
        out_image,
    )
    return wmax


def mean_beam(headers, weights, name=""):
    """(BMAJ, BMIN, BPA) in deg: the weighted mean of the headers' beams (BPA averaged as
    a doubled angle, modulo 180 deg); a spread above 5% in BMAJ or BMIN is logged."""
    w = np.asarray(weights, float)
    bmaj = np.array([h["BMAJ"] for h in headers], float)
    bmin = np.array([h["BMIN"] for h in headers], float)
    bpa = np.radians(np.array([h["BPA"] for h in headers], float))
    pa = 0.5 * np.degrees(np.arctan2(np.sum(w * np.sin(2 * bpa)), np.sum(w * np.cos(2 * bpa))))
    for axis, values in (("BMAJ", bmaj), ("BMIN", bmin)):
        if values.max() > 1.05 * values.min():
            log.warning(
                "deep image %s: the images' %s range %.1f-%.1f arcsec; its fluxes assume "
                "their weighted mean",
                name,
                axis,
                values.min() * 3600,
                values.max() * 3600,
            )
    return float(np.sum(w * bmaj) / w.sum()), float(np.sum(w * bmin) / w.sum()), float(pa)


# --------------------------------------------------------------------------- sources


def find_sources(
    image,
    thresh_isl=ReferenceCatalogSettings.thresh_isl,
    thresh_pix=ReferenceCatalogSettings.thresh_pix,
    ncores=1,
):
    """PyBDSF's source list of a deep image (its srl columns: RA, DEC, E_RA, E_DEC in deg,
    Total_flux, Peak_flux, Isl_rms in Jy, Maj, Min, PA, DC_Maj, ... in deg, S_Code)."""
    import bdsf
    from astropy.io import fits
    from astropy.table import Table

    from dsa110_contimg.io import image_frequency

    image = Path(image)
    header = fits.getheader(image)
    # PyBDSF logs every step to its own log file (kept as pybdsf.log beside the image)
    # and its warnings to stderr; only those reach the job's log
    logging.getLogger("PyBDSF").propagate = False
    with tempfile.TemporaryDirectory(prefix="pybdsf-", dir=image.parent) as work:
        local = Path(work) / image.name
        local.symlink_to(image.resolve())
        img = bdsf.process_image(
            str(local),
            thresh_isl=thresh_isl,
            thresh_pix=thresh_pix,
            frequency=image_frequency(header),
            ncores=ncores,
            quiet=True,
        )
        bdsf_log = Path(f"{local}.pybdsf.log")
        if bdsf_log.exists():
            shutil.copyfile(bdsf_log, image.with_name("pybdsf.log"))
        if img.nsrc == 0:
            log.info("%s: PyBDSF found no source", image)
            return pd.DataFrame()
        srl = Path(work) / "sources.fits"
        img.write_catalog(outfile=str(srl), format="fits", catalog_type="srl", clobber=True)
        table = Table.read(srl).to_pandas()
    log.info("%s: PyBDSF found %d sources", image, len(table))
    return table


def source_names(ra_deg, dec_deg):
    """IAU-style names 'DSA Jhhmmss.s+ddmmss' (a letter appended where two coincide)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    coords = SkyCoord(np.asarray(ra_deg) * u.deg, np.asarray(dec_deg) * u.deg)
    ra = coords.ra.to_string(unit=u.hour, sep="", precision=1, pad=True)
    dec = coords.dec.to_string(sep="", precision=0, alwayssign=True, pad=True)
    names, seen = [], {}
    for r, d in zip(np.atleast_1d(ra), np.atleast_1d(dec)):
        name = f"{REFERENCE_PREFIX} J{r}{d}"
        n = seen.get(name, 0)
        seen[name] = n + 1
        names.append(name if n == 0 else f"{name}{chr(ord('a') + n - 1)}")
    return names


def size_upper_limit(fit_major, dc_major, e_dc_major, snr, beam_major):
    """True where the deconvolved size is not significant (an upper limit): within 2 of
    PyBDSF's errors of zero, or a fitted major axis theta within 2 sigma of the beam's
    major axis, sigma = sqrt(2) theta / SNR (Condon 1997's leading term; PyBDSF's own size
    errors are too small for faint sources, which noise then makes look resolved)."""
    sigma = np.sqrt(2.0) * fit_major / np.maximum(snr, 1e-9)
    return (dc_major <= 2.0 * e_dc_major) | (fit_major <= beam_major + 2.0 * sigma)


def source_table(srl, field, beam_major_arcsec):
    """Rows of the reference catalog from PyBDSF's source list of one field's deep image,
    only the sources inside the field's RA range."""
    if len(srl) == 0:
        return pd.DataFrame()
    ra = np.asarray(srl["RA"], float) % 360.0
    inside = (ra >= field["ra_min"]) & (ra < field["ra_max"])
    srl = srl[inside].reset_index(drop=True)
    dc_maj = np.asarray(srl["DC_Maj"], float) * 3600.0
    fit_maj = np.asarray(srl["Maj"], float) * 3600.0
    snr = np.asarray(srl["Peak_flux"], float) / np.asarray(srl["Isl_rms"], float)
    upper = size_upper_limit(
        fit_maj, dc_maj, np.asarray(srl["E_DC_Maj"], float) * 3600.0, snr, beam_major_arcsec
    )
    return pd.DataFrame(
        {
            "ra_deg": np.asarray(srl["RA"], float) % 360.0,
            "dec_deg": np.asarray(srl["DEC"], float),
            "ra_err_arcsec": np.asarray(srl["E_RA"], float) * 3600.0,
            "dec_err_arcsec": np.asarray(srl["E_DEC"], float) * 3600.0,
            "flux_jy": np.asarray(srl["Total_flux"], float),
            "flux_err_jy": np.asarray(srl["E_Total_flux"], float),
            "peak_flux_jy": np.asarray(srl["Peak_flux"], float),
            "peak_flux_err_jy": np.asarray(srl["E_Peak_flux"], float),
            "spectral_index": DEFAULT_SPECTRAL_INDEX,
            "fit_major_arcsec": fit_maj,
            "fit_minor_arcsec": np.asarray(srl["Min"], float) * 3600.0,
            "fit_pa_deg": np.asarray(srl["PA"], float),
            "major_arcsec": dc_maj,
            "minor_arcsec": np.asarray(srl["DC_Min"], float) * 3600.0,
            "pa_deg": np.asarray(srl["DC_PA"], float),
            "size_upper_limit": upper,
            "local_rms_jy": np.asarray(srl["Isl_rms"], float),
            "s_code": np.asarray(srl["S_Code"]).astype(str),
            "field": field["name"],
            "n_images": len(field["members"]),
        }
    )


def cross_match(cat, sky, radius_arcsec):
    """Columns input_source_id, input_sep_arcsec, input_flux_jy: the nearest source of
    the input catalog `sky` within `radius_arcsec` of each row of `cat` (else empty)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    cat = cat.copy()
    cat["input_source_id"] = pd.Series([None] * len(cat), dtype=object)
    cat["input_sep_arcsec"] = np.nan
    cat["input_flux_jy"] = np.nan
    if len(cat) == 0 or len(sky) == 0:
        return cat
    ours = SkyCoord(cat.ra_deg.to_numpy() * u.deg, cat.dec_deg.to_numpy() * u.deg)
    theirs = SkyCoord(sky.ra_deg.to_numpy() * u.deg, sky.dec_deg.to_numpy() * u.deg)
    idx, sep, _ = ours.match_to_catalog_sky(theirs)
    sep = sep.to_value(u.arcsec)
    hit = sep <= radius_arcsec
    cat.loc[hit, "input_source_id"] = sky.source_id.to_numpy()[idx[hit]].astype(str)
    cat.loc[hit, "input_sep_arcsec"] = sep[hit]
    if "flux_jy" in sky:
        cat.loc[hit, "input_flux_jy"] = sky.flux_jy.to_numpy(float)[idx[hit]]
    return cat


# --------------------------------------------------------------------------- catalog


def build_reference_catalog(
    images,
    pbs,
    out,
    deep_dir,
    residuals=None,
    reports=None,
    sky_catalog=None,
    settings=None,
    beam_arcsec=40.0,
    confusion_arcsec=80.0,
):
    """Deep image per field from the QA-passed images, PyBDSF on each, one catalog.

    Writes `out` (Parquet, the project's catalog columns so that every stage reads it)
    and deep_dir/{field}/deep.fits + weight.fits; returns the catalog DataFrame."""
    from astropy.io import fits

    from dsa110_contimg.atomic import atomic_output
    from dsa110_contimg.mosaic import qa_passed_inputs
    from dsa110_contimg.provenance import provenance

    s = settings or ReferenceCatalogSettings()
    used, excluded = qa_passed_inputs(images, pbs, residuals, reports, "reference catalog")
    if not used:
        raise ValueError(f"no image of {len(pbs)} passed QA: no deep image to search")
    headers = [fits.getheader(p[0]) for p in used]
    fields = plan_fields(headers, s)
    sky = None
    if sky_catalog is not None:
        decs = [f["dec_deg"] for f in fields.values()]
        strip = (min(decs) - 5.0, max(decs) + 5.0)
        sky = read_sky_catalog(sky_catalog, strip)
    tables = []
    with atomic_output(deep_dir) as tmp_dir:
        tmp_dir.mkdir()
        for name, field in fields.items():
            image = tmp_dir / name / "deep.fits"
            members = [used[i] for i in field["members"]]
            wmax = deep_image(members, field, image, tmp_dir / name / "weight.fits", s.weight_cut)
            if not wmax > 0:
                log.warning("deep image %s: no weight anywhere, not searched", name)
                continue
            srl = find_sources(image, s.thresh_isl, s.thresh_pix, s.ncores)
            rows = source_table(srl, field, fits.getheader(image)["BMAJ"] * 3600.0)
            if len(rows):
                rows = reference_flags(
                    rows, beam_arcsec, confusion_arcsec, image, s.edge_margin_arcsec
                )
                tables.append(rows)
    cat = pd.concat(tables, ignore_index=True) if tables else _empty_catalog()
    cat = cat.sort_values(["ra_deg", "dec_deg"], ignore_index=True)
    # confusion across field boundaries: flag once more over the whole catalog
    cat = reference_flags(cat, beam_arcsec, confusion_arcsec)
    cat["compact"] = ~cat.resolved
    cat.insert(0, "source_id", source_names(cat.ra_deg, cat.dec_deg) if len(cat) else [])
    if sky is not None:
        cat = cross_match(cat, sky, s.match_radius_arcsec)
    meta = provenance(
        [str(p[0]) for p in used],
        vars(s),
        fields=sorted(fields),
        excluded=excluded,
        sky_catalog=None if sky_catalog is None else str(sky_catalog),
        beam_arcsec=beam_arcsec,
        confusion_arcsec=confusion_arcsec,
    )
    write_sky_catalog(cat, out, meta)
    log.info(
        "reference catalog: %d sources in %d fields from %d images (%d left out), "
        "%d resolved, %d confused, %d near an edge%s -> %s",
        len(cat),
        len(fields),
        len(used),
        len(excluded),
        int(cat.resolved.sum()),
        int(cat.confused.sum()),
        int(cat.near_edge.sum()),
        "" if sky is None else f", {int(cat.input_source_id.notna().sum())} in the input catalog",
        out,
    )
    return cat


def _empty_catalog():
    return pd.DataFrame(
        {
            c: pd.Series(dtype=float)
            for c in ("ra_deg", "dec_deg", "flux_jy", "spectral_index", "major_arcsec")
        }
    ).assign(near_edge=pd.Series(dtype=bool))


def photometry_catalog(mode, out, sky_catalog=None, reference=None, match_radius_arcsec=20.0):
    """The catalog forced photometry measures (config photometry_catalog), written to
    `out`: `input` (the sky catalog), `reference` (the catalog made from the data) or
    `union` (every input source, and the reference sources with no input source within
    `match_radius_arcsec`)."""
    if mode not in PHOTOMETRY_CATALOGS:
        raise ValueError(f"photometry catalog must be one of {PHOTOMETRY_CATALOGS}, not {mode!r}")
    missing = [
        what
        for what, path, modes in (
            ("the sky catalog", sky_catalog, ("input", "union")),
            ("the reference catalog", reference, ("reference", "union")),
        )
        if path is None and mode in modes
    ]
    if missing:
        raise ValueError(f"photometry catalog {mode!r} needs {' and '.join(missing)}")
    if mode == "input":
        cat = read_sky_catalog(sky_catalog)
    elif mode == "reference":
        cat = read_sky_catalog(reference)
    else:
        sky = read_sky_catalog(sky_catalog)
        match = ["input_source_id", "input_sep_arcsec", "input_flux_jy"]
        ref = read_sky_catalog(reference).drop(columns=match, errors="ignore")
        matched = cross_match(ref, sky, match_radius_arcsec).input_source_id.notna()
        extra = ref[~matched.to_numpy()]
        cat = pd.concat([sky.assign(origin="input"), extra.assign(origin="reference")])
        cat = cat.reset_index(drop=True)
    write_sky_catalog(cat, out, {"mode": mode, "sky_catalog": sky_catalog, "reference": reference})
    log.info("photometry catalog (%s): %d sources -> %s", mode, len(cat), out)
    return cat


# --------------------------------------------------------------------------- CLI


def register_cli(sub):
    from dsa110_contimg.catalogs import add_fitness_arguments

    p = sub.add_parser(
        "reference-catalog",
        help="deep image per field from the QA-passed images, PyBDSF on it: "
        "catalog/reference.parquet",
    )
    p.add_argument("--images", nargs="+", required=True, help="flat-noise image.fits files")
    p.add_argument("--pbs", nargs="+", required=True, help="their pb.fits, same order")
    p.add_argument("--residuals", nargs="+", help="their residual.fits (for the rms weights)")
    p.add_argument("--qa", nargs="+", help="their QA reports; failed images are left out")
    p.add_argument("--catalog", help="input sky catalog to cross-match (optional)")
    p.add_argument("--out", required=True, help="reference.parquet to write")
    p.add_argument("--deep-dir", required=True, help="directory of the deep images to write")
    add_fitness_arguments(p)
    ReferenceCatalogSettings.add_arguments(p)
    p.set_defaults(func=_cli)

    p = sub.add_parser(
        "photometry-catalog",
        help="the catalog forced photometry measures: input, reference or their union",
    )
    p.add_argument("mode", choices=PHOTOMETRY_CATALOGS)
    p.add_argument("--out", required=True, help="Parquet to write")
    p.add_argument("--catalog", help="input sky catalog")
    p.add_argument("--reference", help="reference.parquet")
    p.add_argument(
        "--match-radius-arcsec",
        type=float,
        default=ReferenceCatalogSettings.match_radius_arcsec,
        help="a reference source this close to an input source is that source",
    )
    p.set_defaults(func=_cli_photometry)


def _cli(args):
    build_reference_catalog(
        args.images,
        args.pbs,
        args.out,
        args.deep_dir,
        residuals=args.residuals,
        reports=args.qa,
        sky_catalog=args.catalog,
        settings=ReferenceCatalogSettings.from_args(args),
        beam_arcsec=args.beam_arcsec,
        confusion_arcsec=args.confusion_arcsec,
    )


def _cli_photometry(args):
    photometry_catalog(args.mode, args.out, args.catalog, args.reference, args.match_radius_arcsec)
