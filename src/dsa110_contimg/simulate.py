"""Simulated DSA-110 raw archive: UVH5 subband files of drift-scan point-source skies.

Writes files named like the telescope's (`YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`, per-file
timestamps jittered by a few seconds), with visibilities of catalog point sources seen
through the Airy primary beam of a dish fixed at one declination, per-antenna complex
gains with bandpass structure, and thermal noise. The truth (sky catalog, gains,
settings) is written beside the data so tests can compare what the pipeline recovers
with what went in.

Conventions: visibilities follow pyuvdata's. The files are unprojected (drift scan), which
pyuvdata treats as carrying the full geometric phase: with its zenith-pointing
`uvw_array`, a point source at direction cosines (l, m, n) is
V = S exp(+2 pi i (u l + v m + w n) / lambda); once phased, (n - 1) replaces n. The
stored gains G are those CASA solves for once the data are written to an MS, i.e. the
MS row (i, j) holds G_i conj(G_j) times the model.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import instrument as inst
from .atomic import atomic_output, write_text
from .beam import airy_power, angular_separation

log = logging.getLogger(__name__)

FILE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
SIDEREAL_DAY_S = 86164.0905


@dataclass
class SimulationSettings:
    """Everything that defines a simulated archive (recorded in truth/simulation.json)."""

    start: str = "2026-01-01T00:00:00"
    n_days: int = 1
    n_groups: int = 4
    n_antennas: int = 20
    n_subbands: int = inst.N_SUBBANDS
    n_channels: int = 4
    n_integrations: int = inst.INTEGRATIONS_PER_GROUP
    integration_s: float = inst.INTEGRATION_S
    dec_deg: float = 33.0
    sefd_jy: float = inst.SEFD_JY
    noise: bool = True
    gains: bool = True
    gain_drift_deg_per_hour: float = 2.0
    jitter_s: float = 5.0
    n_sources: int = 40
    seed: int = 1
    extra_sources: list = field(default_factory=list)
    # Catalog calibrators to place (see `calibrator_placement`): the first one's transit
    # sets the start time so that it happens mid-way through its group.
    calibrators: list = field(default_factory=list)

    @property
    def group_duration_s(self):
        return self.n_integrations * self.integration_s


PRESETS = {
    "demo": {},
    "test": dict(n_antennas=10, n_channels=2, n_integrations=8, n_groups=2, n_sources=10),
    "full": dict(n_antennas=inst.N_ANTENNAS, n_channels=inst.CHANNELS_PER_SUBBAND,
                 n_groups=1, n_sources=15),
}


def archive_filename(time, subband):
    """`YYYY-MM-DDTHH:MM:SS_sbNN.hdf5` for an astropy Time and a subband number."""
    return f"{time.datetime.strftime(FILE_TIME_FORMAT)}_sb{subband:02d}.hdf5"


def group_start_times(settings):
    """Start time of every group: consecutive groups each day, days one sidereal day
    apart so the same stretch of sky transits every day."""
    from astropy import units as u
    from astropy.time import Time

    t0 = Time(settings.start, format="isot", scale="utc")
    starts = []
    for day in range(settings.n_days):
        for g in range(settings.n_groups):
            offset = day * SIDEREAL_DAY_S + g * settings.group_duration_s
            starts.append(t0 + offset * u.s)
    return starts


def lst_deg(times):
    """Local apparent sidereal time (deg) at the site for astropy Times."""
    return times.sidereal_time("apparent", longitude=inst.SITE_LON_DEG).deg


def make_sky_catalog(ra_min_deg, ra_max_deg, dec_deg, n_sources, seed,
                     dec_halfwidth_deg=3.0, flux_min_jy=0.02, flux_max_jy=2.0):
    """Random point sources in an RA range around the pointing declination.

    Fluxes at 1.4 GHz follow N(>S) ~ S^-1 between the limits; spectral indices are
    drawn around -0.7 as for optically thin synchrotron sources.
    """
    rng = np.random.default_rng(seed)
    ra = rng.uniform(ra_min_deg, ra_max_deg, n_sources) % 360.0
    sin_dec = rng.uniform(np.sin(np.radians(dec_deg - dec_halfwidth_deg)),
                          np.sin(np.radians(dec_deg + dec_halfwidth_deg)), n_sources)
    dec = np.degrees(np.arcsin(sin_dec))
    u = rng.uniform(0.0, 1.0, n_sources)
    flux = flux_min_jy * (flux_max_jy / flux_min_jy) ** u
    alpha = rng.normal(-0.7, 0.2, n_sources)
    return pd.DataFrame({
        "source_id": [f"SIM{i:05d}" for i in range(n_sources)],
        "ra_deg": ra,
        "dec_deg": dec,
        "flux_jy": flux,
        "spectral_index": alpha,
    })


ESE_COLUMNS = ("ese_mjd", "ese_fwhm_days", "ese_depth", "ese_shoulder")


def fluxes_at(catalog, mjd):
    """The catalog with `flux_jy` at epoch `mjd`: sources with ESE columns (ese_mjd,
    ese_fwhm_days, ese_depth, optional ese_shoulder) follow a Gaussian-lens light curve."""
    from .lcsim import ese_profile

    catalog = catalog.reset_index(drop=True).copy()
    if "ese_mjd" not in catalog:
        return catalog
    lensed = catalog.ese_mjd.notna().to_numpy()
    shoulder = catalog.get("ese_shoulder", pd.Series(0.0, index=catalog.index)).fillna(0.0)
    factor = ese_profile(mjd, catalog.ese_mjd[lensed], catalog.ese_fwhm_days[lensed],
                         catalog.ese_depth[lensed], shoulder[lensed])
    catalog.loc[lensed, "flux_jy"] = catalog.flux_jy[lensed] * factor
    return catalog


def band_frequencies(settings):
    """All channel frequencies (Hz) of the simulated band, ascending."""
    freqs = [inst.subband_frequencies(sb, settings.n_channels)
             for sb in range(settings.n_subbands)]
    return np.sort(np.concatenate(freqs))


def make_gains(settings, freqs_hz):
    """Per-antenna, per-polarization complex bandpasses (CASA convention) and drift rates.

    Returns (bandpass[n_ant, n_freq, 2], drift_rad_per_s[n_ant, 2]). Bandpass = amplitude
    (~10% scatter) with a smooth ripple, times a random phase, a residual delay of a few
    ns and a slow phase drift in time.
    """
    n_ant = settings.n_antennas
    rng = np.random.default_rng(settings.seed + 1000)
    if not settings.gains:
        return np.ones((n_ant, freqs_hz.size, 2), complex), np.zeros((n_ant, 2))
    x = (freqs_hz - freqs_hz.mean()) / np.ptp(freqs_hz) if freqs_hz.size > 1 else freqs_hz * 0
    amp = rng.normal(1.0, 0.1, (n_ant, 1, 2))
    ripple = 1.0 + 0.05 * np.sin(2 * np.pi * (rng.uniform(1, 3, (n_ant, 1, 2)) * x[None, :, None]
                                              + rng.uniform(0, 1, (n_ant, 1, 2))))
    phase0 = rng.uniform(-np.pi, np.pi, (n_ant, 1, 2))
    delay_s = rng.normal(0.0, 2e-9, (n_ant, 1, 2))
    phase = phase0 + 2 * np.pi * delay_s * (freqs_hz - freqs_hz.mean())[None, :, None]
    bandpass = amp * ripple * np.exp(1j * phase)
    bandpass[0] = np.abs(bandpass[0])
    drift = np.radians(settings.gain_drift_deg_per_hour / 3600.0) * rng.normal(0, 1, (n_ant, 2))
    drift[0] = 0.0
    return bandpass, drift


def _telescope(settings):
    from pyuvdata import Telescope
    from pyuvdata.utils import ECEF_from_ENU

    location = inst.site_location()
    enu = inst.antenna_layout(settings.n_antennas, seed=settings.seed)
    ecef = ECEF_from_ENU(enu, center_loc=location)
    xyz = np.array([location.x.to_value("m"), location.y.to_value("m"), location.z.to_value("m")])
    numbers = np.arange(1, settings.n_antennas + 1)
    return Telescope.new(
        name=inst.TELESCOPE_NAME,
        instrument=inst.TELESCOPE_NAME,
        location=location,
        antenna_positions=ecef - xyz,
        antenna_names=[f"DSA-{n:03d}" for n in numbers],
        antenna_numbers=numbers,
        antenna_diameters=np.full(settings.n_antennas, inst.DISH_DIAMETER_M),
        feeds=["x", "y"],
        mount_type="alt-az",
        x_orientation="east",
        update_from_known=False,
    )


def _source_geometry(catalog, times_jd, lsts_rad, dec0_rad, telescope_loc):
    """Per source and integration: direction cosines (l, m, n) relative to zenith in
    pyuvdata's unprojected uvw frame, and angle from the pointing centre (rad)."""
    from pyuvdata.utils.phasing import calc_app_coords

    lat = np.radians(inst.SITE_LAT_DEG)
    geometry = []
    for row in catalog.itertuples():
        app_ra, app_dec = calc_app_coords(
            lon_coord=np.full(times_jd.size, np.radians(row.ra_deg)),
            lat_coord=np.full(times_jd.size, np.radians(row.dec_deg)),
            coord_frame="icrs",
            coord_epoch=2000.0,
            time_array=times_jd,
            lst_array=lsts_rad,
            telescope_loc=telescope_loc,
        )
        hour_angle = lsts_rad - app_ra
        l = -np.cos(app_dec) * np.sin(hour_angle)
        m = np.sin(app_dec) * np.cos(lat) - np.cos(app_dec) * np.sin(lat) * np.cos(hour_angle)
        n = np.sin(app_dec) * np.sin(lat) + np.cos(app_dec) * np.cos(lat) * np.cos(hour_angle)
        theta = angular_separation(lsts_rad, np.full_like(lsts_rad, dec0_rad), app_ra, app_dec)
        geometry.append((l, m, n, theta))
    return geometry


def _visibilities(uvd, catalog, geometry, tidx, bandpass_sb, drift, t_ref_jd, settings, rng):
    """Model + gains + noise for one subband object `uvd` (pyuvdata conventions)."""
    freqs = uvd.freq_array
    nblts, npol = uvd.Nblts, 2
    u, v, w = uvd.uvw_array.T
    vis = np.zeros((nblts, freqs.size), complex)
    auto_power = np.zeros((nblts, freqs.size))
    for row, (l, m, n, theta) in zip(catalog.itertuples(), geometry):
        beam = airy_power(theta[tidx][:, None], freqs[None, :])
        spectrum = row.flux_jy * (freqs / inst.REFERENCE_FREQ_HZ) ** row.spectral_index
        tau = (u * l[tidx] + v * m[tidx] + w * n[tidx]) / inst.SPEED_OF_LIGHT
        apparent = spectrum[None, :] * beam
        vis += apparent * np.exp(2j * np.pi * tau[:, None] * freqs[None, :])
        auto_power += apparent
    a1 = uvd.ant_1_array - 1
    a2 = uvd.ant_2_array - 1
    dt_s = (uvd.time_array - t_ref_jd) * 86400.0
    data = np.empty((nblts, freqs.size, npol), np.complex64)
    sigma = inst.thermal_noise_sigma(uvd.channel_width[0], settings.integration_s, settings.sefd_jy)
    autos = a1 == a2
    for p in range(npol):
        g1 = bandpass_sb[a1, :, p] * np.exp(1j * drift[a1, p] * dt_s)[:, None]
        g2 = bandpass_sb[a2, :, p] * np.exp(1j * drift[a2, p] * dt_s)[:, None]
        model = np.conj(g1) * g2 * vis
        model[autos] = np.abs(g1[autos]) ** 2 * (settings.sefd_jy + auto_power[autos])
        if settings.noise:
            noise = rng.normal(0, sigma, (nblts, freqs.size)) + 1j * rng.normal(0, sigma, (nblts, freqs.size))
            noise[autos] = noise[autos].real * sigma / settings.sefd_jy
            model = model + noise
        data[:, :, p] = model
    return data, sigma


def simulate_group(out_dir, start, settings, telescope, catalog, bandpass, drift, band_freqs,
                   t_ref_jd, group_index):
    """Write the subband files of one group; returns the list of paths written."""
    from astropy import units as u
    from astropy.time import Time
    from pyuvdata import UVData

    rng = np.random.default_rng(settings.seed * 7919 + group_index)
    dt = settings.integration_s
    times = start + (np.arange(settings.n_integrations) + 0.5) * dt * u.s
    times_jd = times.jd
    lsts = np.radians(lst_deg(times))
    dec0 = np.radians(settings.dec_deg)
    mid_lst = lsts[lsts.size // 2]
    sep = angular_separation(mid_lst, dec0, np.radians(catalog.ra_deg.to_numpy()),
                             np.radians(catalog.dec_deg.to_numpy()))
    visible = fluxes_at(catalog[sep < np.radians(10.0)], times[times.size // 2].mjd)
    geometry = _source_geometry(visible, times_jd, lsts, dec0, telescope.location)
    antpairs = [(i, j) for i in telescope.antenna_numbers for j in telescope.antenna_numbers if i <= j]
    paths = []
    for sb in range(settings.n_subbands):
        freqs = inst.subband_frequencies(sb, settings.n_channels)
        uvd = UVData.new(
            freq_array=freqs,
            polarization_array=["xx", "yy"],
            times=times_jd,
            telescope=telescope.copy(),
            antpairs=antpairs,
            do_blt_outer=True,
            integration_time=dt,
            channel_width=inst.channel_width(settings.n_channels),
            vis_units="Jy",
            empty=True,
        )
        tidx = np.searchsorted(times_jd, uvd.time_array)
        chan = np.searchsorted(band_freqs, freqs)
        data, sigma = _visibilities(uvd, visible, geometry, tidx, bandpass[:, chan, :], drift,
                                    t_ref_jd, settings, rng)
        uvd.data_array = data
        uvd.extra_keywords = {
            "pointing_dec_deg": float(settings.dec_deg),
            "subband": sb,
            "simulated": True,
            "noise_sigma_jy": float(sigma) if settings.noise else 0.0,
        }
        uvd.history = "Simulated by dsa110-contimg simulate."
        jitter = rng.uniform(0.0, settings.jitter_s)
        file_time = Time(start + jitter * u.s, precision=0)
        path = Path(out_dir) / archive_filename(file_time, sb)
        with atomic_output(path) as tmp:
            uvd.write_uvh5(str(tmp), run_check=False)
        paths.append(path)
    log.info("group %d: %d subband files, %d sources in view, start %s",
             group_index, len(paths), len(visible), start.isot)
    return paths


def calibrator_placement(calibrators, name, group, flux_scale=1.0):
    """Placement of catalog calibrator `name` (a row of the calibrator catalog DataFrame:
    name, ra_deg, dec_deg, flux_jy, spectral_index) transiting in group index `group`;
    `flux_scale` scales its simulated flux (e.g. a faded or mis-catalogued calibrator)."""
    rows = calibrators[calibrators.name == name]
    if rows.empty:
        raise ValueError(f"calibrator {name!r} is not in the calibrator catalog "
                         f"({', '.join(calibrators.name)})")
    row = rows.iloc[0]
    return {"name": str(name), "group": int(group), "flux_scale": float(flux_scale),
            "ra_deg": float(row.ra_deg), "dec_deg": float(row.dec_deg),
            "flux_jy": float(row.flux_jy), "spectral_index": float(row.spectral_index)}


def _hour_angle_deg(ra_deg, dec_deg, times):
    """Apparent hour angle (deg, -180..180) of an ICRS direction at the site."""
    from astropy import units as u
    from astropy.coordinates import HADec, SkyCoord

    coord = SkyCoord(ra=ra_deg * u.deg, dec=dec_deg * u.deg, frame="icrs")
    ha = coord.transform_to(HADec(obstime=times, location=inst.site_location())).ha.deg
    return (np.asarray(ha) + 180.0) % 360.0 - 180.0


def place_calibrators(settings):
    """Settings whose start makes the first placed calibrator transit at the middle of its
    group (the first transit at or after `settings.start`); later placements must
    then transit inside their own groups, else ValueError."""
    from dataclasses import replace

    from astropy import units as u
    from astropy.time import Time

    if not settings.calibrators:
        return settings
    first = settings.calibrators[0]
    t = Time(settings.start, format="isot", scale="utc")
    for step in range(3):
        ha = _hour_angle_deg(first["ra_deg"], first["dec_deg"], t)
        t = t + ((-ha) % 360.0 if step == 0 else -ha) / 360.0 * SIDEREAL_DAY_S * u.s
    start = t - (first["group"] + 0.5) * settings.group_duration_s * u.s
    placed = replace(settings, start=start.isot)
    starts = group_start_times(placed)
    for cal in settings.calibrators:
        if not 0 <= cal["group"] < len(starts):
            raise ValueError(f"calibrator {cal['name']}: group {cal['group']} does not exist "
                             f"({len(starts)} groups)")
        t0 = starts[cal["group"]]
        ha0, ha1 = _hour_angle_deg(cal["ra_deg"], cal["dec_deg"],
                                   Time([t0, t0 + settings.group_duration_s * u.s]))
        if not ha0 <= 0.0 < ha1:
            raise ValueError(f"calibrator {cal['name']} does not transit in group {cal['group']} "
                             f"once {first['name']} transits in group {first['group']}")
    return placed


def _calibrator_sources(settings):
    return [{"source_id": c["name"], "ra_deg": c["ra_deg"], "dec_deg": c["dec_deg"],
             "flux_jy": c["flux_jy"] * c.get("flux_scale", 1.0),
             "spectral_index": c["spectral_index"]}
            for c in {c["name"]: c for c in settings.calibrators}.values()]


def simulate_archive(out_dir, settings=None, catalog=None):
    """Write a simulated raw archive and its truth to `out_dir`; returns a summary dict."""
    from astropy.time import Time

    settings = settings or SimulationSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = place_calibrators(settings)
    starts = group_start_times(settings)
    if catalog is None:
        first = lst_deg(Time([starts[0]]))[0]
        span = settings.n_groups * settings.group_duration_s / SIDEREAL_DAY_S * 360.0
        catalog = make_sky_catalog(first - 5.0, first + span + 5.0, settings.dec_deg,
                                   settings.n_sources, settings.seed)
    if settings.extra_sources:
        catalog = pd.concat([catalog, pd.DataFrame(settings.extra_sources)], ignore_index=True)
    if settings.calibrators:
        catalog = pd.concat([catalog, pd.DataFrame(_calibrator_sources(settings))], ignore_index=True)
    telescope = _telescope(settings)
    band_freqs = band_frequencies(settings)
    bandpass, drift = make_gains(settings, band_freqs)
    t_ref_jd = starts[0].jd
    paths = []
    for i, start in enumerate(starts):
        paths += simulate_group(out, start, settings, telescope, catalog, bandpass, drift,
                                band_freqs, t_ref_jd, i)
    truth = out / "truth"
    truth.mkdir(exist_ok=True)
    with atomic_output(out / "sky_catalog.csv") as tmp:
        catalog.to_csv(tmp, index=False, float_format="%.8f")
    with atomic_output(truth / "gains.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, freq_hz=band_freqs, bandpass=bandpass, drift_rad_per_s=drift,
                     antenna_numbers=telescope.antenna_numbers, t_ref_jd=t_ref_jd,
                     polarizations=np.array(["XX", "YY"]))
    sigma = inst.thermal_noise_sigma(inst.channel_width(settings.n_channels),
                                     settings.integration_s, settings.sefd_jy)
    meta = {
        "settings": asdict(settings),
        "noise_sigma_jy": sigma if settings.noise else 0.0,
        "group_starts": [s.isot for s in starts],
        "gain_convention": "MS row (ANTENNA1=i, ANTENNA2=j) = G_i conj(G_j) model; "
                           "G(t, f) = bandpass[i, f, pol] * exp(1j drift[i, pol] (t - t_ref))",
        "files": [p.name for p in paths],
    }
    write_text(json.dumps(meta, indent=2, default=str), truth / "simulation.json")
    return meta


def load_truth(archive_dir):
    """Read back (simulation.json dict, gains npz dict, sky catalog DataFrame)."""
    archive = Path(archive_dir)
    meta = json.loads((archive / "truth" / "simulation.json").read_text())
    with np.load(archive / "truth" / "gains.npz") as npz:
        gains = {k: npz[k] for k in npz.files}
    return meta, gains, pd.read_csv(archive / "sky_catalog.csv")


def _placement_arg(text):
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"--calibrator {text!r}: expected NAME:GROUP or NAME:GROUP:FLUX_SCALE")
    return parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 1.0


def _run(args):
    overrides = dict(PRESETS[args.preset])
    for key in ("n_antennas", "n_channels", "n_integrations", "n_groups", "n_days",
                "dec_deg", "seed", "start", "n_sources", "jitter_s", "sefd_jy"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.no_noise:
        overrides["noise"] = False
    if args.no_gains:
        overrides["gains"] = False
    if args.calibrator:
        if not args.calibrator_catalog:
            raise ValueError("--calibrator needs --calibrator-catalog")
        cals = pd.read_csv(args.calibrator_catalog, comment="#")
        overrides["calibrators"] = [calibrator_placement(cals, *_placement_arg(a))
                                    for a in args.calibrator]
    settings = SimulationSettings(**overrides)
    catalog = pd.read_csv(args.catalog) if args.catalog else None
    meta = simulate_archive(args.out, settings, catalog)
    log.info("wrote %d files to %s (noise sigma %.3g Jy per visibility)",
             len(meta["files"]), args.out, meta["noise_sigma_jy"])


def register_cli(sub):
    p = sub.add_parser("simulate", help="write a simulated raw UVH5 archive and its truth")
    p.add_argument("--out", required=True, help="archive directory to write")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--catalog", help="sky catalog CSV (source_id, ra_deg, dec_deg, flux_jy, spectral_index)")
    for name, typ in (("n-antennas", int), ("n-channels", int), ("n-integrations", int),
                      ("n-groups", int), ("n-days", int), ("dec-deg", float), ("seed", int),
                      ("start", str), ("n-sources", int), ("jitter-s", float), ("sefd-jy", float)):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument("--no-noise", action="store_true")
    p.add_argument("--no-gains", action="store_true")
    p.add_argument("--calibrator", action="append",
                   help="place a catalog calibrator: NAME:GROUP[:FLUX_SCALE] (repeatable)")
    p.add_argument("--calibrator-catalog", help="calibrator catalog CSV (config/calibrators.csv)")
    p.set_defaults(func=_run)
