"""Reading products, with errors that name the file: Parquet tables and FITS images
(a Stokes I plane, its WCS, frequency and time, the restoring beam on the pixel grid).

Every stage reads through here, so a corrupt or incomplete product fails the same way
wherever it is read.
"""

from pathlib import Path

import numpy as np

from dsa110_contimg.stats import FWHM_TO_SIGMA


def read_table(path, columns=None, select=None, categorical=()):
    """Read a Parquet table; a corrupt file or missing columns raise ValueError naming it.

    `columns` must be present; `select` limits the columns read to those of it that
    exist; `categorical` columns are read as pandas categoricals (saves memory for ids).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        names = pq.read_schema(path).names
        wanted = None if select is None else [c for c in select if c in names]
        dictionary = [c for c in categorical if c in names]
        df = pq.read_table(path, columns=wanted, read_dictionary=dictionary or None).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from err
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
    return df


def _read_primary(path):
    """(data, header) of a FITS file's primary HDU; errors name the file."""
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            header = hdul[0].header.copy()
            raw = hdul[0].data
    except OSError as err:
        raise ValueError(f"{path}: not a readable FITS image ({err})") from err
    if raw is None:
        raise ValueError(f"{path}: primary HDU holds no image")
    return raw, header


def _single_plane(data, wcs, path):
    """Reduce an image with degenerate FREQ/STOKES axes to its 2-D Stokes I plane."""
    data = np.asarray(data, dtype=float)
    if data.ndim < 2:
        raise ValueError(f"{path}: image has {data.ndim} axes, need at least 2")
    index = []
    # numpy axis i corresponds to FITS axis naxis - i
    for i in range(data.ndim - 2):
        fits_axis = data.ndim - i
        ctype = wcs.wcs.ctype[fits_axis - 1].upper() if fits_axis <= wcs.naxis else ""
        if data.shape[i] == 1:
            index.append(0)
        elif ctype.startswith("STOKES"):
            values = wcs.sub([fits_axis]).pixel_to_world_values(np.arange(data.shape[i]))
            plane = np.flatnonzero(np.isclose(np.ravel(values), 1.0))
            if plane.size == 0:
                raise ValueError(f"{path}: no Stokes I plane on the STOKES axis")
            index.append(int(plane[0]))
        else:
            raise ValueError(
                f"{path}: axis {ctype or fits_axis} has {data.shape[i]} planes; "
                "photometry needs a single-plane image"
            )
    return data[tuple(index)]


def _read_with_beam(path):
    """(primary-HDU data, header) of a FITS image that has its restoring beam; errors
    name the file."""
    raw, header = _read_primary(path)
    if not all(key in header for key in ("BMAJ", "BMIN", "BPA")):
        raise ValueError(
            f"{path}: no BMAJ/BMIN/BPA beam keywords in the header; "
            "photometry needs the restoring beam (deg)"
        )
    return raw, header


def read_image(path):
    """Read a Stokes I FITS image: (2-D data, celestial WCS, header).

    Raises ValueError naming the file when the beam keywords are missing.
    """
    path = Path(path)
    raw, header = _read_with_beam(path)
    wcs = image_wcs(header)
    data = _single_plane(raw, wcs, path)
    return data, wcs.celestial, header


def read_plane(path):
    """(2-D plane, celestial WCS, header) of a FITS image that need not carry beam keywords
    (e.g. pb.fits); a missing file raises FileNotFoundError naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image")
    raw, header = _read_primary(path)
    wcs = image_wcs(header)
    return _single_plane(raw, wcs, path), wcs.celestial, header


def read_subbands(path):
    """Stokes I planes of a FITS image along its frequency axis.

    Returns (planes (K, ny, nx), frequencies (K,) in Hz, celestial WCS, header); K = 1
    for a single-plane image (its frequency from the FREQ axis, NaN without one).
    Raises ValueError naming the file when the beam keywords are missing.
    """
    path = Path(path)
    raw, header = _read_with_beam(path)
    wcs = image_wcs(header)
    data = np.asarray(raw, dtype=float)
    freq_axis = None
    index = []
    for i in range(data.ndim - 2):
        fits_axis = data.ndim - i
        ctype = wcs.wcs.ctype[fits_axis - 1].upper() if fits_axis <= wcs.naxis else ""
        if ctype.startswith("FREQ"):
            freq_axis = (i, fits_axis)
            index.append(slice(None))
        elif data.shape[i] == 1:
            index.append(0)
        else:
            index.append(None)
    if None in index:
        # a STOKES axis or another: the single-plane reader picks Stokes I or explains
        plane = _single_plane(
            raw if freq_axis is None else np.take(raw, [0], freq_axis[0]), wcs, path
        )
        if freq_axis is None:
            return plane[None], np.array([np.nan]), wcs.celestial, header
        stokes = [i for i, v in enumerate(index) if v is None]
        values = wcs.sub([data.ndim - stokes[0]]).pixel_to_world_values(
            np.arange(data.shape[stokes[0]])
        )
        plane_i = np.flatnonzero(np.isclose(np.ravel(values), 1.0))
        index[stokes[0]] = int(plane_i[0])
        if len(stokes) > 1:
            raise ValueError(f"{path}: more than one non-degenerate non-frequency axis")
    cube = data[tuple(index)]
    if freq_axis is None:
        return cube[None], np.array([np.nan]), wcs.celestial, header
    n = data.shape[freq_axis[0]]
    freqs = np.ravel(wcs.sub([freq_axis[1]]).pixel_to_world_values(np.arange(n)))
    cube = cube.reshape(n, *data.shape[-2:])
    return cube, np.asarray(freqs, dtype=float), wcs.celestial, header


def image_wcs(header):
    """WCS of a header without astropy's informational 'fixed' warnings."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def image_frequency(header):
    """Frequency (Hz) of a single-plane image: its FREQ axis, else PBFREQ / FREQ keys."""
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith("FREQ"):
            return float(header[f"CRVAL{i}"])
    for key in ("FREQ", "PBFREQ", "RESTFRQ"):
        if key in header:
            return float(header[key])
    raise ValueError("image header has no FREQ axis or FREQ keyword")


def image_mjd(header, path="image"):
    """Observation time (MJD) from MJD-OBS, else DATE-OBS."""
    from astropy.time import Time

    if "MJD-OBS" in header:
        return float(header["MJD-OBS"])
    if "DATE-OBS" in header:
        try:
            return float(Time(header["DATE-OBS"], scale="utc").mjd)
        except ValueError as err:
            raise ValueError(f"{path}: unreadable DATE-OBS {header['DATE-OBS']!r}") from err
    raise ValueError(f"{path}: no MJD-OBS or DATE-OBS keyword; cannot time the measurement")


def beam_pixel_covariance(header, wcs, ra_deg, dec_deg):
    """Inverse covariance (pixel units) of the beam Gaussian at each source position.

    The beam is defined on the sky (FWHM BMAJ x BMIN deg, position angle BPA east of
    north); the local pixel-to-sky Jacobian of the WCS maps it onto the pixel grid.
    Returns an array (nsrc, 2, 2).
    """
    bmaj = float(header["BMAJ"]) * FWHM_TO_SIGMA
    bmin = float(header["BMIN"]) * FWHM_TO_SIGMA
    bpa = np.deg2rad(float(header["BPA"]))
    if not (bmaj > 0 and bmin > 0):
        raise ValueError("beam BMAJ/BMIN must be positive")
    # unit vectors (east, north) along the major and minor axes
    major = np.array([np.sin(bpa), np.cos(bpa)])
    minor = np.array([np.cos(bpa), -np.sin(bpa)])
    cov_sky = bmaj**2 * np.outer(major, major) + bmin**2 * np.outer(minor, minor)
    inv_sky = np.linalg.inv(cov_sky)
    jac = _sky_jacobian(wcs, np.atleast_1d(ra_deg), np.atleast_1d(dec_deg))
    # offsets: sky = J @ pix, so chi^2 = pix^T (J^T C^-1 J) pix
    return np.einsum("nki,kl,nlj->nij", jac, inv_sky, jac)


def _sky_jacobian(wcs, ra, dec, step=0.5):
    """d(east, north offset in deg)/d(x, y pixel), numerically at each position."""
    x, y = wcs.world_to_pixel_values(ra, dec)
    jac = np.empty((len(ra), 2, 2))
    for j, (dx, dy) in enumerate(((step, 0.0), (0.0, step))):
        ra_p, dec_p = wcs.pixel_to_world_values(x + dx, y + dy)
        ra_m, dec_m = wcs.pixel_to_world_values(x - dx, y - dy)
        dra = (np.asarray(ra_p) - np.asarray(ra_m) + 180.0) % 360.0 - 180.0
        jac[:, 0, j] = dra * np.cos(np.deg2rad(dec)) / (2 * step)
        jac[:, 1, j] = (np.asarray(dec_p) - np.asarray(dec_m)) / (2 * step)
    return jac
