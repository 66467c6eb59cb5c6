"""Site astrometry: sidereal time, hour angles, the meridian direction of a drift-scan
pointing, and baseline geometry in the local east-north-up (ENU) frame.

Conventions: ENU at the site's geodetic latitude phi and longitude; a direction at hour
angle H and declination d has ENU components
    s = (-cos d sin H,  cos phi sin d - sin phi cos d cos H,  sin phi sin d + cos phi cos d cos H).
The meridian at declination d0 (H = 0) is azimuth 0 (north) and elevation 90 - (d0 - phi)
when d0 > phi (azimuth 180 and elevation 90 - (phi - d0) otherwise). uvw follow
pyuvdata: b = x_ant2 - x_ant1, w = b . s0, u toward east and v toward the celestial pole
in the plane normal to s0.
"""

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

from dsa110_contimg.instrument import SITE_LAT_DEG, SITE_LON_DEG, site_location


def iers_cache_path():
    """Where the parsed Earth orientation table is kept: the user's cache directory
    ($XDG_CACHE_HOME or ~/.cache), one file per astropy and astropy-iers-data version."""
    import astropy
    import astropy_iers_data

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (
        root
        / "dsa110-contimg"
        / (f"iers-astropy{astropy.__version__}-data{astropy_iers_data.__version__}.pickle")
    )


def earth_orientation():
    """astropy's Earth orientation table (the bundled IERS-A merged with IERS-B: UT1-UTC
    and polar motion for sidereal time and apparent coordinates), loaded once per process.

    Parsing the bundled text tables takes ~2 s in every job that converts coordinates;
    the parsed table is pickled in `iers_cache_path()` and read back in ~20 ms. The
    values are the bundled ones either way (nothing is downloaded), so results are
    unchanged. An unreadable cache is rebuilt.
    """
    from astropy.utils import iers

    if iers.IERS_Auto.iers_table is not None:
        return iers.IERS_Auto.iers_table
    path = iers_cache_path()
    table = None
    if path.exists():
        try:
            with open(path, "rb") as fh:
                table = pickle.load(fh)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            table = None
    if not isinstance(table, iers.IERS_Auto):
        table = iers.IERS_Auto.open()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as fh:
                pickle.dump(table, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(fh.name, path)
        except OSError:
            pass
    iers.IERS_Auto.iers_table = table
    return table


def lst_rad(times_jd):
    """Local apparent sidereal time (rad) at the site for UTC Julian dates (pyuvdata's
    computation, so simulator and converter share it)."""
    from pyuvdata.utils.times import get_lst_for_time

    earth_orientation()
    return get_lst_for_time(
        np.atleast_1d(np.asarray(times_jd, float)), telescope_loc=site_location()
    )


def lst_deg(times):
    """Local apparent sidereal time (deg) at the site for astropy Times."""
    earth_orientation()
    return times.sidereal_time("apparent", longitude=SITE_LON_DEG).deg


def hour_angle_deg(ra_deg, dec_deg, times):
    """Apparent hour angle (deg, -180..180) of an ICRS direction at the site."""
    from astropy import units as u
    from astropy.coordinates import HADec, SkyCoord

    earth_orientation()
    coord = SkyCoord(ra=ra_deg * u.deg, dec=dec_deg * u.deg, frame="icrs")
    ha = coord.transform_to(HADec(obstime=times, location=site_location())).ha.deg
    return (np.asarray(ha) + 180.0) % 360.0 - 180.0


def hadec_deg(ra_deg, dec_deg, mjd):
    """Apparent (hour angle deg in -180..180, declination deg) of ICRS directions at the
    site at UTC MJDs (astropy's HADec frame)."""
    from astropy import units as u
    from astropy.coordinates import HADec, SkyCoord
    from astropy.time import Time

    earth_orientation()
    coord = SkyCoord(ra=np.asarray(ra_deg) * u.deg, dec=np.asarray(dec_deg) * u.deg, frame="icrs")
    frame = HADec(
        obstime=Time(np.asarray(mjd), format="mjd", scale="utc"), location=site_location()
    )
    hadec = coord.transform_to(frame)
    return (np.asarray(hadec.ha.deg) + 180.0) % 360.0 - 180.0, np.asarray(hadec.dec.deg)


def apparent_hadec(ra_deg, dec_deg, times_jd):
    """Apparent (hour angle, declination) in rad of an ICRS direction at each time,
    from pyuvdata's ICRS-to-apparent transform and sidereal time; for arrays of
    directions, arrays [direction, time] from one transform of them all."""
    from pyuvdata.utils.phasing import transform_icrs_to_app

    times_jd = np.asarray(times_jd, float)
    ra, dec = np.atleast_1d(ra_deg), np.atleast_1d(dec_deg)
    lst = np.tile(lst_rad(times_jd), ra.size)
    app_ra, app_dec = transform_icrs_to_app(
        time_array=np.tile(times_jd, ra.size),
        ra=np.repeat(np.radians(ra), times_jd.size),
        dec=np.repeat(np.radians(dec), times_jd.size),
        telescope_loc=site_location(),
    )
    shape = (ra.size, times_jd.size) if np.ndim(ra_deg) else (times_jd.size,)
    return (lst - app_ra).reshape(shape), app_dec.reshape(shape)


def meridian_phase_center(mid_jd, dec_deg):
    """ICRS (ra, dec) in radians of hour angle 0 at apparent declination `dec_deg`,
    seen from the site at Julian date(s) `mid_jd` (floats for one date, arrays for many)."""
    from astropy import units as u
    from astropy.coordinates import ICRS, HADec, SkyCoord
    from astropy.time import Time

    earth_orientation()
    obstime = Time(mid_jd, format="jd", scale="utc")
    frame = HADec(obstime=obstime, location=site_location())
    icrs = SkyCoord(ha=0 * u.hourangle, dec=dec_deg * u.deg, frame=frame).transform_to(ICRS())
    ra, dec = np.asarray(icrs.ra.rad), np.asarray(icrs.dec.rad)
    if ra.ndim == 0:
        return float(ra), float(dec)
    return ra, dec


def meridian_altaz(dec_rad, lat_rad=np.radians(SITE_LAT_DEG)):
    """(azimuth, elevation) in rad of hour angle 0 at declination `dec_rad`."""
    if dec_rad >= lat_rad:
        return 0.0, np.pi / 2 - (dec_rad - lat_rad)
    return np.pi, np.pi / 2 - (lat_rad - dec_rad)


def direction_enu(ha_rad, dec_rad, lat_rad=np.radians(SITE_LAT_DEG)):
    """Unit vector(s) toward (hour angle, declination) in ENU; shape (..., 3)."""
    ha, dec = np.broadcast_arrays(np.asarray(ha_rad, float), np.asarray(dec_rad, float))
    return np.stack(
        [
            -np.cos(dec) * np.sin(ha),
            np.cos(lat_rad) * np.sin(dec) - np.sin(lat_rad) * np.cos(dec) * np.cos(ha),
            np.sin(lat_rad) * np.sin(dec) + np.cos(lat_rad) * np.cos(dec) * np.cos(ha),
        ],
        axis=-1,
    )


def meridian_uvw_basis(dec_rad, lat_rad=np.radians(SITE_LAT_DEG)):
    """ENU unit vectors (u_hat, v_hat, w_hat) of the uvw frame toward hour angle 0 at
    declination `dec_rad`: u east, v toward the pole, w = the meridian direction."""
    z = dec_rad - lat_rad
    return (
        np.array([1.0, 0.0, 0.0]),
        np.array([0.0, np.cos(z), -np.sin(z)]),
        np.array([0.0, np.sin(z), np.cos(z)]),
    )


def enu_from_ecef(xyz, lat_rad=np.radians(SITE_LAT_DEG), lon_rad=np.radians(SITE_LON_DEG)):
    """ENU components (m) of ECEF vectors (e.g. station minus site, or baselines)."""
    xyz = np.asarray(xyz, float)
    sl, cl = np.sin(lon_rad), np.cos(lon_rad)
    sp, cp = np.sin(lat_rad), np.cos(lat_rad)
    rot = np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])
    return xyz @ rot.T


def site_ecef():
    """ECEF x, y, z (m) of the site (the array reference position)."""
    loc = site_location()
    return np.array([loc.x.to_value("m"), loc.y.to_value("m"), loc.z.to_value("m")])
