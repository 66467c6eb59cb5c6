"""Sky catalogs: the project's CSV or NVSS as VizieR delivers it, read into one table.

Two inputs are accepted for `sky_catalog`:

- the project's CSV: source_id, ra_deg, dec_deg (J2000, deg), flux_jy (1.4 GHz, Jy),
  spectral_index (optional); other columns are kept;
- NVSS (Condon et al. 1998) from VizieR table VIII/65/nvss, as FITS or as VizieR's
  tab-separated (or semicolon-separated) text: '#' header lines, a line of column names,
  a line of units, a line of dashes, then the rows. VizieR's own column names and units
  are read: NVSS (name), RAJ2000 "h:m:s" and DEJ2000 "d:m:s" (sexagesimal, blank
  separated; FITS output may carry them already in degrees), S1.4 in mJy, MajAxis and
  MinAxis in arcsec (deconvolved; l_MajAxis '<' marks an upper limit), PA in deg.

Both become one DataFrame with SKY_COLUMNS (+ major_arcsec, minor_arcsec, pa_deg and
size_upper_limit when the sizes are known); spectral_index is DEFAULT_SPECTRAL_INDEX where
the file has none. Only a declination strip can be loaded (`dec_range`), read in chunks,
so a full-sky file costs one pass and the memory of the strip. A file in neither format
raises CatalogError: one line naming the file and the missing or bad column.

Normalization references must be compact and isolated: `flag_resolved` (deconvolved
size above the synthesized beam), `flag_confused` (a neighbour within
`confusion_radius_arcsec`, ~2 synthesized beams) and `flag_near_edge` (closer than a
margin to the edge of an image footprint, or to its blanked pixels) add boolean columns;
`reference_unfit` is their union.
"""

import inspect
import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SKY_COLUMNS = ["source_id", "ra_deg", "dec_deg", "flux_jy", "spectral_index"]
REQUIRED_PROJECT = ["source_id", "ra_deg", "dec_deg"]
SIZE_COLUMNS = ["major_arcsec", "minor_arcsec", "pa_deg", "size_upper_limit"]
DEFAULT_SPECTRAL_INDEX = -0.7
NVSS_REQUIRED = ["RAJ2000", "DEJ2000", "S1.4"]
FLAG_COLUMNS = ["resolved", "confused", "near_edge"]
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fts")
CHUNK_ROWS = 200_000


class CatalogError(ValueError):
    """A sky catalog that cannot be read; the message names the file and the column."""


# --------------------------------------------------------------------------- reading


def read_sky_catalog(path, dec_range=None):
    """The catalog at `path` (project CSV, or NVSS from VizieR as FITS or TSV) as one
    DataFrame with SKY_COLUMNS (flux_jy only when the file has fluxes) and, for NVSS,
    the source sizes. `dec_range` = (dec_min, dec_max) in deg keeps only that strip."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: sky catalog does not exist")
    if dec_range is not None:
        dec_range = (float(dec_range[0]), float(dec_range[1]))
    if path.name.lower().endswith(FITS_SUFFIXES):
        cat = _read_fits(path, dec_range)
    elif path.suffix.lower() == ".parquet":
        cat = _read_parquet(path, dec_range)
    else:
        cat = _read_text(path, dec_range)
    log.info(
        "%s: %d sources%s",
        path,
        len(cat),
        "" if dec_range is None else f" in Dec {dec_range[0]:+.2f}..{dec_range[1]:+.2f}",
    )
    return cat.reset_index(drop=True)


def dec_strip(dec_deg, halfwidth_deg):
    """(dec_min, dec_max) of the strip dec_deg +- halfwidth_deg, clipped to +-90."""
    return max(-90.0, dec_deg - halfwidth_deg), min(90.0, dec_deg + halfwidth_deg)


def _text_layout(path):
    """(format, separator, header line index) of a text catalog: 'vizier' when the
    first line that is not a '#' comment or blank is followed by a units line and a
    line of dashes, else 'csv'."""
    lines = []
    with open(path, "r", errors="replace") as fh:
        for i, line in enumerate(fh):
            text = line.rstrip("\r\n")
            if not text.strip() or text.startswith("#"):
                if lines:
                    break
                continue
            lines.append((i, text))
            if len(lines) == 3:
                break
    if not lines:
        raise CatalogError(f"{path}: empty sky catalog (no column names line)")
    first = lines[0][1]
    sep = "\t" if "\t" in first else (";" if ";" in first and "," not in first else ",")
    dashes = len(lines) == 3 and set(lines[2][1].replace(sep, "").strip()) <= {"-"}
    return ("vizier" if dashes else "csv"), sep, lines[0][0]


def _read_text(path, dec_range):
    fmt, sep, header = _text_layout(path)
    if fmt == "csv":
        return _read_project_csv(path, sep, header, dec_range)
    return _read_vizier_text(path, sep, header, dec_range)


def _read_project_csv(path, sep, header, dec_range):
    try:
        names = pd.read_csv(path, sep=sep, comment="#", skiprows=header, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CatalogError(f"{path}: not a readable sky catalog ({err})") from err
    _check_columns(path, names)
    chunks = []
    try:
        reader = pd.read_csv(
            path,
            sep=sep,
            comment="#",
            skiprows=header,
            chunksize=CHUNK_ROWS,
            dtype={"source_id": str},
        )
        for chunk in reader:
            chunk = _numeric(
                path,
                chunk,
                ["ra_deg", "dec_deg"] + [c for c in ("flux_jy", "spectral_index") if c in chunk],
            )
            if dec_range is not None:
                chunk = chunk[(chunk.dec_deg >= dec_range[0]) & (chunk.dec_deg <= dec_range[1])]
            chunks.append(chunk)
    except pd.errors.ParserError as err:
        raise CatalogError(f"{path}: not a readable sky catalog ({err})") from err
    cat = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=names)
    if "spectral_index" not in cat:
        cat["spectral_index"] = DEFAULT_SPECTRAL_INDEX
    cat["spectral_index"] = cat.spectral_index.fillna(DEFAULT_SPECTRAL_INDEX)
    _check_positions(path, cat)
    front = [c for c in SKY_COLUMNS if c in cat]
    return cat[front + [c for c in cat.columns if c not in front]]


def _check_columns(path, names):
    """Raise CatalogError naming the first missing column of the closest format."""
    names = [str(n).strip() for n in names]
    project = [c for c in REQUIRED_PROJECT if c not in names]
    nvss = [c for c in NVSS_REQUIRED if c not in names]
    if not project or not nvss:
        return "project" if not project else "nvss"
    n_project = len(REQUIRED_PROJECT) - len(project)
    n_nvss = len(NVSS_REQUIRED) - len(nvss)
    if n_nvss > n_project:
        raise CatalogError(
            f"{path}: column {nvss[0]!r} missing (NVSS from VizieR VIII/65 "
            f"needs {', '.join(NVSS_REQUIRED)})"
        )
    raise CatalogError(
        f"{path}: column {project[0]!r} missing (a sky catalog CSV needs "
        f"{', '.join(REQUIRED_PROJECT)}, or NVSS from VizieR VIII/65 with "
        f"{', '.join(NVSS_REQUIRED)})"
    )


def _numeric(path, df, columns):
    """Columns as floats; a non-numeric value raises CatalogError naming the column."""
    df = df.copy()
    for col in columns:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.any():
            raise CatalogError(
                f"{path}: column {col!r} has a non-numeric value {str(df[col][bad].iloc[0])!r}"
            )
        df[col] = values.astype(float)
    return df


def _check_positions(path, cat):
    for col, limit in (("ra_deg", 360.0), ("dec_deg", 90.0)):
        values = cat[col].to_numpy(float)
        bad = ~np.isfinite(values) | (np.abs(values) > limit)
        if bad.any():
            raise CatalogError(
                f"{path}: column {col!r} has a missing or out-of-range value ({values[bad][0]!r})"
            )


def _read_vizier_text(path, sep, header, dec_range):
    try:
        names = pd.read_csv(path, sep=sep, skiprows=header, nrows=0, comment=None).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise CatalogError(f"{path}: not a readable VizieR table ({err})") from err
    names = [str(n).strip() for n in names]
    if _check_columns(path, names) == "project":
        raise CatalogError(
            f"{path}: a units and dashes line follow the column names as in "
            "VizieR output, but the columns are the project's: write it as a "
            "plain CSV"
        )
    chunks = []
    wanted = [
        n
        for n in names
        if n in ("NVSS", "RAJ2000", "DEJ2000", "S1.4", "l_MajAxis", "MajAxis", "MinAxis", "PA")
    ]
    reader = pd.read_csv(
        path,
        sep=sep,
        skiprows=header + 3,
        names=names,
        header=None,
        usecols=wanted,
        dtype=object,
        keep_default_na=False,
        chunksize=CHUNK_ROWS,
        comment="#",
        skip_blank_lines=True,
    )
    for chunk in reader:
        dec = _sexagesimal(path, "DEJ2000", chunk.DEJ2000, hours=False)
        keep = (
            np.ones(len(chunk), bool)
            if dec_range is None
            else ((dec >= dec_range[0]) & (dec <= dec_range[1]))
        )
        if not keep.any():
            continue
        chunk = chunk[keep].apply(lambda col: col.str.strip())
        ra = _sexagesimal(path, "RAJ2000", chunk.RAJ2000, hours=True)
        chunks.append(_nvss_frame(path, chunk, ra, dec[keep], flux_scale=1e-3))
    if not chunks:
        return _nvss_frame(path, pd.DataFrame(columns=names), np.array([]), np.array([]), 1e-3)
    return pd.concat(chunks, ignore_index=True)


def _sexagesimal(path, column, values, hours):
    """'h m s' / '+d m s' strings (blank or ':' separated) -> degrees; a malformed value
    raises CatalogError naming the column. Parsed by pandas' C reader in one pass (a
    full-sky column of 1.8 million values takes about a second)."""
    import io

    text = np.asarray(pd.Series(values).to_numpy(dtype=object), dtype=str)
    if text.size == 0:
        return np.array([])
    blob = "\n".join(text).replace(":", " ")
    try:
        num = pd.read_csv(
            io.StringIO(blob),
            sep=r"\s+",
            header=None,
            dtype=float,
            engine="c",
            skip_blank_lines=False,
        ).to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        num = None
    if num is None or num.shape != (text.size, 3) or not np.isfinite(num).all():
        raise CatalogError(
            f"{path}: column {column!r} is not sexagesimal (value "
            f"{_first_bad_sexagesimal(text)!r}, "
            f"expected {'h m s' if hours else 'd m s'})"
        )
    deg = np.abs(num[:, 0]) + num[:, 1] / 60.0 + num[:, 2] / 3600.0
    sign = np.where(np.signbit(num[:, 0]), -1.0, 1.0)  # "-00 30 00" is -0.5 deg
    return sign * deg * (15.0 if hours else 1.0)


def _first_bad_sexagesimal(text):
    for value in text:
        fields = value.strip().replace(":", " ").split()
        try:
            if len(fields) != 3 or not all(np.isfinite([float(f) for f in fields])):
                return value.strip()
        except ValueError:
            return value.strip()
    return text[0].strip()


def _nvss_frame(path, rows, ra_deg, dec_deg, flux_scale):
    """Project columns from VizieR NVSS rows (positions already in degrees);
    `flux_scale` converts S1.4 to Jy."""
    flux = _numeric(path, rows[["S1.4"]].replace("", np.nan), ["S1.4"])["S1.4"].to_numpy()
    if np.isnan(flux).any():
        raise CatalogError(f"{path}: column 'S1.4' has an empty value")
    if "NVSS" in rows:
        ids = ["NVSS J" + str(n).strip() for n in rows["NVSS"]]
    else:
        ids = [f"NVSS J{r:09.5f}{d:+09.5f}" for r, d in zip(ra_deg, dec_deg)]
    out = pd.DataFrame(
        {
            "source_id": ids,
            "ra_deg": np.asarray(ra_deg, float),
            "dec_deg": np.asarray(dec_deg, float),
            "flux_jy": flux * flux_scale,
            "spectral_index": DEFAULT_SPECTRAL_INDEX,
        }
    )
    sizes = {"MajAxis": "major_arcsec", "MinAxis": "minor_arcsec", "PA": "pa_deg"}
    for col, name in sizes.items():
        if col in rows:
            out[name] = _numeric(path, rows[[col]].replace("", np.nan), [col])[col].to_numpy()
    if "l_MajAxis" in rows:
        out["size_upper_limit"] = (rows["l_MajAxis"].astype(str).str.strip() == "<").to_numpy()
    elif "major_arcsec" in out:
        out["size_upper_limit"] = False
    _check_positions(path, out)
    return out


def _read_parquet(path, dec_range):
    """A catalog Parquet in the project's columns (as `write_sky_catalog` writes it); the
    strip is selected by pyarrow before anything is converted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        _check_columns(path, names)
        if "dec_deg" not in names:
            raise CatalogError(
                f"{path}: column 'dec_deg' missing (a sky catalog Parquet has "
                f"the project's columns {', '.join(REQUIRED_PROJECT)})"
            )
        filters = (
            None
            if dec_range is None
            else [("dec_deg", ">=", dec_range[0]), ("dec_deg", "<=", dec_range[1])]
        )
        cat = pq.read_table(path, filters=filters).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(f"{path}: not a readable Parquet file ({err})") from err
    cat = _numeric(
        path, cat, [c for c in ("ra_deg", "dec_deg", "flux_jy", "spectral_index") if c in cat]
    )
    if "spectral_index" not in cat:
        cat["spectral_index"] = DEFAULT_SPECTRAL_INDEX
    _check_positions(path, cat)
    return cat


def write_sky_catalog(cat, path, meta=None):
    """Write a catalog table (read_sky_catalog's columns, flags too) to Parquet atomically:
    what `sky_catalog` should point at when the original is a large text or FITS file."""
    from dsa110_contimg.atomic import write_parquet

    write_parquet(cat.reset_index(drop=True), path, meta)


def _read_fits(path, dec_range):
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=True)
    except (OSError, ValueError) as err:
        raise CatalogError(f"{path}: not a readable FITS file ({err})") from err
    with hdul:
        table = next((h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))), None)
        if table is None:
            raise CatalogError(f"{path}: no table extension in the FITS file")
        names = [c.name for c in table.columns]
        units = {c.name: (c.unit or "").strip() for c in table.columns}
        fmt = _check_columns(path, names)
        data = table.data
        if fmt == "project":
            dec = np.asarray(data["dec_deg"], float)
            keep = _strip_mask(dec, dec_range)
            cat = pd.DataFrame({n: _column(data[n], keep) for n in names})
            cat = _numeric(
                path,
                cat,
                [c for c in ("ra_deg", "dec_deg", "flux_jy", "spectral_index") if c in cat],
            )
            if "spectral_index" not in cat:
                cat["spectral_index"] = DEFAULT_SPECTRAL_INDEX
            _check_positions(path, cat)
            return cat
        dec = _fits_angle(path, "DEJ2000", data["DEJ2000"], units["DEJ2000"], hours=False)
        keep = _strip_mask(dec, dec_range)
        ra = _fits_angle(
            path, "RAJ2000", _column(data["RAJ2000"], keep), units["RAJ2000"], hours=True
        )
        rows = pd.DataFrame(
            {
                n: _column(data[n], keep)
                for n in names
                if n in ("NVSS", "S1.4", "MajAxis", "MinAxis", "PA", "l_MajAxis")
            }
        )
        scale = _flux_scale(path, units.get("S1.4", "mJy"))
        return _nvss_frame(path, rows, ra, dec[keep], scale)


def _column(values, keep):
    values = np.asarray(values)[keep]
    if values.dtype.kind in "SU":
        return pd.Series(values.astype(str)).str.strip().to_numpy()
    return values.astype(float) if values.dtype.kind in "iuf" else values


def _strip_mask(dec, dec_range):
    if dec_range is None:
        return np.ones(dec.shape, bool)
    return (dec >= dec_range[0]) & (dec <= dec_range[1])


def _fits_angle(path, column, values, unit, hours):
    """A FITS position column: numbers in degrees (VizieR converts h:m:s and d:m:s to
    deg in its FITS output) or sexagesimal strings."""
    values = np.asarray(values)
    if values.dtype.kind in "SU":
        return _sexagesimal(path, column, pd.Series(values.astype(str)), hours)
    unit = unit.lower()
    if unit not in ("deg", "degree", "degrees", ""):
        raise CatalogError(f"{path}: column {column!r} has unit {unit!r} (expected deg)")
    return values.astype(float)


def _flux_scale(path, unit):
    """Factor from the S1.4 column's unit to Jy."""
    scales = {"mjy": 1e-3, "jy": 1.0, "ujy": 1e-6}
    key = unit.strip().lower().replace("µ", "u") or "mjy"
    if key not in scales:
        raise CatalogError(f"{path}: column 'S1.4' has unit {unit!r} (expected mJy)")
    return scales[key]


# --------------------------------------------------------------------------- flags


def flag_resolved(cat, beam_arcsec=40.0):
    """Column `resolved`: deconvolved major axis larger than the synthesized beam
    (`beam_arcsec`); an upper-limit size or an unknown size is not resolved."""
    cat = cat.copy()
    if "major_arcsec" in cat:
        upper = cat["size_upper_limit"].astype(bool) if "size_upper_limit" in cat else False
        cat["resolved"] = (cat.major_arcsec.to_numpy(float) > beam_arcsec) & ~np.asarray(upper)
    else:
        cat["resolved"] = False
    return cat


def flag_confused(cat, radius_arcsec=80.0, min_flux_ratio=0.0):
    """Column `confused`: another catalog source lies within `radius_arcsec` (~2
    synthesized beams) and is at least `min_flux_ratio` times as bright (0: any)."""
    from scipy.spatial import cKDTree

    cat = cat.copy()
    n = len(cat)
    confused = np.zeros(n, bool)
    if n > 1:
        ra, dec = np.radians(cat.ra_deg.to_numpy(float)), np.radians(cat.dec_deg.to_numpy(float))
        xyz = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
        chord = 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)
        flux = cat.flux_jy.to_numpy(float) if "flux_jy" in cat else np.ones(n)
        for i, j in cKDTree(xyz).query_pairs(chord, output_type="ndarray"):
            if flux[j] >= min_flux_ratio * flux[i]:
                confused[i] = True
            if flux[i] >= min_flux_ratio * flux[j]:
                confused[j] = True
    cat["confused"] = confused
    return cat


def flag_near_edge(cat, image, margin_arcsec=120.0):
    """Column `near_edge`: the source lies off `image` or within `margin_arcsec` of its
    edge or of a blanked (NaN) pixel. `image` is a FITS path or (celestial WCS, 2-D data
    or shape); the distance is measured in pixels of the footprint's grid."""
    from scipy.ndimage import distance_transform_edt

    wcs, valid = _footprint(image)
    cat = cat.copy()
    from astropy.wcs.utils import proj_plane_pixel_scales

    scale_arcsec = float(np.mean(np.abs(proj_plane_pixel_scales(wcs)))) * 3600.0
    margin = margin_arcsec / scale_arcsec
    ny, nx = valid.shape
    x, y = wcs.world_to_pixel_values(cat.ra_deg.to_numpy(float), cat.dec_deg.to_numpy(float))
    x, y = np.asarray(x, float), np.asarray(y, float)
    inside = (
        np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
    )
    padded = np.pad(valid, 1, constant_values=False)
    distance = distance_transform_edt(padded)[1:-1, 1:-1]
    near = np.ones(len(cat), bool)
    ix = np.clip(np.round(x[inside]).astype(int), 0, nx - 1)
    iy = np.clip(np.round(y[inside]).astype(int), 0, ny - 1)
    near[inside] = distance[iy, ix] <= margin
    cat["near_edge"] = near
    return cat


def _footprint(image):
    """(celestial WCS, boolean map of valid pixels) of a FITS image or (wcs, data/shape)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    if isinstance(image, (str, Path)):
        with fits.open(image) as hdul:
            header, data = hdul[0].header, hdul[0].data
        wcs = WCS(header).celestial
        data = np.asarray(data, float)
        while data.ndim > 2:
            data = data[0]
        return wcs, np.isfinite(data)
    wcs, data = image
    if isinstance(data, tuple):
        return wcs, np.ones(data, bool)
    return wcs, np.isfinite(np.asarray(data, float))


def reference_flags(
    cat, beam_arcsec=40.0, confusion_radius_arcsec=80.0, image=None, edge_margin_arcsec=120.0
):
    """The catalog with FLAG_COLUMNS and `reference_unfit` = resolved | confused |
    near_edge: sources never to be used as normalization references. `resolved` and
    `confused` are computed from these parameters; `near_edge` from `image` when given,
    else kept from the catalog (False when it has none)."""
    cat = flag_confused(flag_resolved(cat, beam_arcsec), confusion_radius_arcsec)
    if image is not None:
        cat = flag_near_edge(cat, image, edge_margin_arcsec)
    elif "near_edge" not in cat:
        cat = cat.assign(near_edge=False)
    cat = cat.copy()
    for col in FLAG_COLUMNS:
        cat[col] = cat[col].fillna(False).astype(bool)
    cat["reference_unfit"] = cat.resolved | cat.confused | cat.near_edge
    return cat


# --------------------------------------------------------------------------- CLI


def register_cli(sub):
    p = sub.add_parser(
        "catalog",
        help="convert a sky catalog (project CSV, NVSS from VizieR as "
        "TSV or FITS) to the project's Parquet, optionally a declination strip, "
        "with reference-fitness flags",
    )
    p.add_argument("input", help="catalog file")
    p.add_argument("--out", required=True, help="Parquet to write (point sky_catalog at it)")
    p.add_argument("--dec", type=float, help="pointing declination (deg) of the strip")
    p.add_argument(
        "--halfwidth",
        type=float,
        default=5.0,
        help="strip half-width around --dec (deg, default 5)",
    )
    add_fitness_arguments(p)
    p.set_defaults(func=_cli)


def add_fitness_arguments(parser):
    """--beam-arcsec and --confusion-arcsec: reference_flags' parameters, its defaults."""
    defaults = inspect.signature(reference_flags).parameters
    beam = defaults["beam_arcsec"].default
    confusion = defaults["confusion_radius_arcsec"].default
    parser.add_argument(
        "--beam-arcsec",
        type=float,
        default=beam,
        help=f"a source with a larger deconvolved size is resolved (default {beam:g})",
    )
    parser.add_argument(
        "--confusion-arcsec",
        type=float,
        default=confusion,
        help=f"a neighbour closer than this confuses a source (default {confusion:g})",
    )


def _cli(args):
    strip = None if args.dec is None else dec_strip(args.dec, args.halfwidth)
    cat = reference_flags(
        read_sky_catalog(args.input, strip), args.beam_arcsec, args.confusion_arcsec
    )
    settings = {
        "input": str(args.input),
        "dec_range": strip,
        "beam_arcsec": args.beam_arcsec,
        "confusion_arcsec": args.confusion_arcsec,
    }
    write_sky_catalog(cat, args.out, settings)
    log.info(
        "%s: %d sources (%d resolved, %d confused) -> %s",
        args.input,
        len(cat),
        int(cat.resolved.sum()),
        int(cat.confused.sum()),
        args.out,
    )
