"""Simulated DSA-110 raw archive, written exactly as the telescope's correlator writes it.

Each group is 16 subband files (`YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`, the name being the
wall-clock time the correlator node opened the file, so names differ between the
subbands of a group by up to `jitter_s`) in the correlator's layout (see uvh5.py): all
117 stations in the header, `n_antennas` of the active ones correlated (the 96 active
stations by default), baselines in correlator order with mixed conjugation, and
visibilities fringe-stopped at every integration toward hour angle 0 at the pointing
declination (`phase_center_dec`, default +54.57 deg), with the constant uvw toward that
direction. The sky is catalog point sources seen through the Airy primary beam of a dish
fixed at that declination, times per-antenna complex gains with bandpass structure, plus
thermal noise. On request the last integrations of chosen groups are NaN (a dropped
correlator stream) and a fraction of rows has nsamples 0.

The truth (settings, sky catalog, gains, files and their faults) is written beside the
data so tests can compare what the pipeline recovers with what went in.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg import instrument as inst
from dsa110_contimg.astrometry import (
    apparent_hadec,
    direction_enu,
    enu_from_ecef,
    hour_angle_deg,
    lst_deg,
    lst_rad,
    meridian_uvw_basis,
    site_ecef,
)
from dsa110_contimg.atomic import atomic_output, write_text
from dsa110_contimg.ingest.stations import N_STATIONS, itrf_positions, select_stations
from dsa110_contimg.ingest.uvh5 import archive_filename, write_raw_file
from dsa110_contimg.primary_beam import airy_power, angular_separation, fwhm_rad

log = logging.getLogger(__name__)

SIDEREAL_DAY_S = 86164.0905
POINTING_DEC_RAD = 0.952486
"""The pointing of most of the real archive (Oct 2025 - Jan 2026): Dec +54.5734."""
POINTING_DEC_DEG = float(np.degrees(POINTING_DEC_RAD))


@dataclass
class SimulationSettings:
    """Everything that defines a simulated archive (recorded in truth/simulation.json).

    `dec_deg` None means the real archive's pointing, Dec +54.57, unless the first placed
    calibrator lies more than half a primary-beam FWHM (1.4 GHz) from it: then the whole
    degree nearest that calibrator's declination (3C48: +33). `stations` None means
    `n_antennas` active stations spread over the array (stations.select_stations).
    `dropped` lists [group, n] pairs: the last n integrations of that group are NaN.
    `zero_nsamples` is the fraction of rows per file with nsamples 0.
    `gain_error` is the rms of a per-group visibility amplitude factor common to all
    antennas (1 + N(0, gain_error)): the few-percent epoch-to-epoch error that remains
    when gains are transferred from a calibrator observed at another time, which the
    light curves' normalization must remove. `rfi` (the fields of simulate_rfi.RFISpec)
    adds interference and dead antennas, planned once for the archive. `ese` injects one
    extreme scattering event (`ese_source`): a source of `flux_jy` offset `east_deg`,
    `north_deg` from the pointing of group `group` of day 0, whose flux dips by `depth`
    with a Gaussian-lens profile of `fwhm_days` centred `day` days after the start.
    """

    start: str = "2026-01-01T00:00:00"
    n_days: int = 1
    n_groups: int = 4
    n_antennas: int = inst.N_ANTENNAS
    n_subbands: int = inst.N_SUBBANDS
    n_channels: int = 4
    n_integrations: int = inst.INTEGRATIONS_PER_GROUP
    integration_s: float = inst.INTEGRATION_S
    dec_deg: float | None = None
    sefd_jy: float = inst.SEFD_JY
    noise: bool = True
    gains: bool = True
    gain_drift_deg_per_hour: float = 2.0
    jitter_s: float = 60.0
    n_sources: int = 40
    seed: int = 1
    extra_sources: list = field(default_factory=list)
    # Catalog calibrators to place (see `calibrator_placement`): the first one's transit
    # sets the start time so that it happens mid-way through its group.
    calibrators: list = field(default_factory=list)
    stations: list | None = None
    dropped: list = field(default_factory=list)
    zero_nsamples: float = 0.0
    gain_error: float = 0.0
    rfi: dict | None = None
    ese: dict | None = None

    def __post_init__(self):
        if self.dec_deg is None:
            self.dec_deg = POINTING_DEC_DEG
            if self.calibrators:
                cal_dec = float(self.calibrators[0]["dec_deg"])
                if abs(cal_dec - POINTING_DEC_DEG) > 0.5 * np.degrees(
                    fwhm_rad(inst.REFERENCE_FREQ_HZ)
                ):
                    self.dec_deg = float(round(cal_dec))
        if self.stations is None:
            self.stations = [int(s) for s in select_stations(self.n_antennas)]
        self.stations = sorted(int(s) for s in self.stations)
        self.n_antennas = len(self.stations)

    @property
    def group_duration_s(self):
        return self.n_integrations * self.integration_s


PRESETS = {
    # 20 days of two 5-minute groups (a calibrator transits in the first when placed):
    # 3% gain error per group, RFI and a dead antenna, one ESE in the second group's field
    "demo": dict(
        n_antennas=20,
        n_channels=2,
        n_groups=2,
        n_days=20,
        n_sources=60,
        gain_error=0.03,
        rfi={"n_channels": 3, "n_bursts": 1},
        ese={
            "group": 1,
            "day": 10.0,
            "fwhm_days": 5.0,
            "depth": 0.4,
            "flux_jy": 0.3,
            "east_deg": 0.3,
            "north_deg": -0.3,
        },
    ),
    "test": dict(
        n_antennas=10, n_channels=2, n_integrations=8, n_groups=2, n_sources=10, jitter_s=5.0
    ),
    "full": dict(
        n_antennas=inst.N_ANTENNAS, n_channels=inst.CHANNELS_PER_SUBBAND, n_groups=1, n_sources=15
    ),
}


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


def make_sky_catalog(
    ra_min_deg,
    ra_max_deg,
    dec_deg,
    n_sources,
    seed,
    dec_halfwidth_deg=3.0,
    flux_min_jy=0.02,
    flux_max_jy=2.0,
):
    """Random point sources in an RA range around the pointing declination.

    Fluxes at 1.4 GHz follow N(>S) ~ S^-1 between the limits; spectral indices are
    drawn around -0.7 as for optically thin synchrotron sources.
    """
    rng = np.random.default_rng(seed)
    ra = rng.uniform(ra_min_deg, ra_max_deg, n_sources) % 360.0
    sin_dec = rng.uniform(
        np.sin(np.radians(dec_deg - dec_halfwidth_deg)),
        np.sin(np.radians(dec_deg + dec_halfwidth_deg)),
        n_sources,
    )
    dec = np.degrees(np.arcsin(sin_dec))
    u = rng.uniform(0.0, 1.0, n_sources)
    flux = flux_min_jy * (flux_max_jy / flux_min_jy) ** u
    alpha = rng.normal(-0.7, 0.2, n_sources)
    return pd.DataFrame(
        {
            "source_id": [f"SIM{i:05d}" for i in range(n_sources)],
            "ra_deg": ra,
            "dec_deg": dec,
            "flux_jy": flux,
            "spectral_index": alpha,
        }
    )


ESE_COLUMNS = ("ese_mjd", "ese_fwhm_days", "ese_depth", "ese_shoulder")


def fluxes_at(catalog, mjd):
    """The catalog with `flux_jy` at epoch `mjd`: sources with ESE columns (ese_mjd,
    ese_fwhm_days, ese_depth, optional ese_shoulder) follow a Gaussian-lens light curve."""
    from dsa110_contimg.simulation.lightcurves import ese_profile

    catalog = catalog.reset_index(drop=True).copy()
    if "ese_mjd" not in catalog:
        return catalog
    lensed = catalog.ese_mjd.notna().to_numpy()
    shoulder = catalog.get("ese_shoulder", pd.Series(0.0, index=catalog.index)).fillna(0.0)
    factor = ese_profile(
        mjd,
        catalog.ese_mjd[lensed],
        catalog.ese_fwhm_days[lensed],
        catalog.ese_depth[lensed],
        shoulder[lensed],
    )
    catalog.loc[lensed, "flux_jy"] = catalog.flux_jy[lensed] * factor
    return catalog


def band_frequencies(settings):
    """All channel frequencies (Hz) of the simulated band, ascending."""
    freqs = [inst.subband_frequencies(sb, settings.n_channels) for sb in range(settings.n_subbands)]
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
    ripple = 1.0 + 0.05 * np.sin(
        2
        * np.pi
        * (rng.uniform(1, 3, (n_ant, 1, 2)) * x[None, :, None] + rng.uniform(0, 1, (n_ant, 1, 2)))
    )
    phase0 = rng.uniform(-np.pi, np.pi, (n_ant, 1, 2))
    delay_s = rng.normal(0.0, 2e-9, (n_ant, 1, 2))
    phase = phase0 + 2 * np.pi * delay_s * (freqs_hz - freqs_hz.mean())[None, :, None]
    bandpass = amp * ripple * np.exp(1j * phase)
    bandpass[0] = np.abs(bandpass[0])
    drift = np.radians(settings.gain_drift_deg_per_hour / 3600.0) * rng.normal(0, 1, (n_ant, 2))
    drift[0] = 0.0
    return bandpass, drift


def correlator_inputs(stations):
    """The correlated stations in correlator input order: the stations are cabled to the
    SNAP boards three at a time, so inputs run through every third station of the list,
    then the next third, then the last (stations[0::3], stations[1::3], stations[2::3])."""
    stations = np.asarray(stations)
    return np.concatenate([stations[k::3] for k in range(3)])


def correlator_baselines(stations):
    """(ant_1, ant_2) in correlator order: input pairs (i, j) with i <= j, autos
    included, as station number - 1. Because the inputs are not in station order, some
    rows have ant_1 > ant_2 (the correlator's mixed conjugation)."""
    inputs = correlator_inputs(stations) - 1
    i, j = np.triu_indices(inputs.size)
    return inputs[i], inputs[j]


def station_enu(stations):
    """ENU positions (m) relative to the site of the given station numbers."""
    return enu_from_ecef(itrf_positions()[np.asarray(stations) - 1] - site_ecef())


def _source_directions(catalog, times_jd, dec0_rad):
    """Per source: ENU unit vectors toward it at each time (Ntimes, 3) and its angle from
    the pointing (hour angle 0, dec0) in rad."""
    has, decs = apparent_hadec(catalog.ra_deg.to_numpy(), catalog.dec_deg.to_numpy(), times_jd)
    return [
        (direction_enu(ha, dec), angular_separation(0.0, dec0_rad, ha, dec))
        for ha, dec in zip(has, decs)
    ]


def _visibilities(freqs, catalog, directions, baselines, n_times, gains_t, settings, rng):
    """Model + gains + noise of one subband, rows time-major (Ntimes x Nbls).

    A source at ENU direction s(t) gives V = S(f) A(theta, f) exp(+2 pi i b.(s - s_m) f / c)
    with b = x_ant2 - x_ant1 and s_m the meridian at the pointing declination, toward
    which the correlator fringe-stops every integration. The stored row (i, j) is
    conj(G_i) G_j V: once the converter conjugates and writes the MS row it is
    G_i conj(G_j) times the model, the convention CASA solves for.
    """
    b_enu, s_m, a1, a2 = baselines
    n_bls = a1.size
    vis = np.zeros((n_times, n_bls, freqs.size), complex)
    auto_power = np.zeros((n_times, freqs.size))
    for row, (s, theta) in zip(catalog.itertuples(), directions):
        beam = airy_power(theta[:, None], freqs[None, :])
        spectrum = row.flux_jy * (freqs / inst.REFERENCE_FREQ_HZ) ** row.spectral_index
        apparent = spectrum[None, :] * beam
        tau = (s - s_m) @ b_enu.T / inst.SPEED_OF_LIGHT
        vis += apparent[:, None, :] * np.exp(2j * np.pi * tau[:, :, None] * freqs[None, None, :])
        auto_power += apparent
    vis = vis.reshape(n_times * n_bls, freqs.size)
    auto_power = np.repeat(auto_power, n_bls, axis=0)
    row_a1, row_a2 = np.tile(a1, n_times), np.tile(a2, n_times)
    autos = row_a1 == row_a2
    sigma = inst.thermal_noise_sigma(
        inst.channel_width(settings.n_channels), settings.integration_s, settings.sefd_jy
    )
    data = np.empty((vis.shape[0], freqs.size, 2), np.complex64)
    for p in range(2):
        g1, g2 = gains_t(row_a1, p), gains_t(row_a2, p)
        model = np.conj(g1) * g2 * vis
        model[autos] = np.abs(g1[autos]) ** 2 * (settings.sefd_jy + auto_power[autos])
        if settings.noise:
            noise = rng.normal(0, sigma, vis.shape) + 1j * rng.normal(0, sigma, vis.shape)
            noise[autos] = noise[autos].real * sigma / settings.sefd_jy
            model = model + noise
        data[:, :, p] = model
    return data, sigma


def _dropped(settings, group_index):
    """Number of final integrations of group `group_index` whose data are NaN."""
    return sum(int(n) for g, n in settings.dropped if int(g) == group_index)


def simulate_group(
    out_dir,
    start,
    settings,
    catalog,
    gains,
    band_freqs,
    t_ref_jd,
    group_index,
    amplitude=1.0,
    rfi_plan=None,
):
    """Write the subband files of one group in the telescope's layout; returns a list of
    per-file truth records (name, NaN rows, zero-nsamples rows, RFI samples). `amplitude`
    scales the group's sky visibilities; `rfi_plan` (simulate_rfi.plan_rfi) adds RFI."""
    from astropy import units as u
    from astropy.time import Time

    from dsa110_contimg.simulation.rfi import inject_rfi

    rng = np.random.default_rng(settings.seed * 7919 + group_index)
    dt = settings.integration_s
    times = start + (np.arange(settings.n_integrations) + 0.5) * dt * u.s
    times_jd = times.jd
    dec0 = np.radians(settings.dec_deg)
    mid = times[times.size // 2]
    mid_lst = lst_rad(mid.jd)[0]
    sep = angular_separation(
        mid_lst, dec0, np.radians(catalog.ra_deg.to_numpy()), np.radians(catalog.dec_deg.to_numpy())
    )
    visible = fluxes_at(catalog[sep < np.radians(10.0)], mid.mjd)
    directions = _source_directions(visible, times_jd, dec0)
    a1, a2 = correlator_baselines(settings.stations)
    enu = station_enu(np.arange(1, N_STATIONS + 1))
    b_enu = enu[a2] - enu[a1]
    u_hat, v_hat, w_hat = meridian_uvw_basis(dec0)
    uvw = np.column_stack([b_enu @ u_hat, b_enu @ v_hat, b_enu @ w_hat])
    positions = itrf_positions() - site_ecef()
    bandpass, drift = gains
    index = np.full(N_STATIONS, -1)
    index[np.asarray(settings.stations) - 1] = np.arange(len(settings.stations))
    dt_s = np.repeat((times_jd - t_ref_jd) * 86400.0, a1.size)
    n_drop = min(_dropped(settings, group_index), settings.n_integrations)
    records = []
    for sb in range(settings.n_subbands):
        freqs = inst.subband_frequencies(sb, settings.n_channels)
        chan = np.searchsorted(band_freqs, freqs)

        def gains_t(ants, pol):
            k = index[ants]
            g = bandpass[k][:, chan, pol] * np.exp(1j * drift[k, pol] * dt_s)[:, None]
            return g * np.sqrt(amplitude)

        data, sigma = _visibilities(
            freqs, visible, directions, (b_enu, w_hat, a1, a2), times.size, gains_t, settings, rng
        )
        rfi_samples = 0
        if rfi_plan is not None:
            tidx = np.repeat(np.arange(times.size), a1.size)
            hit = inject_rfi(
                data,
                freqs,
                tidx,
                np.tile(a1, times.size),
                np.tile(a2, times.size),
                sigma,
                rfi_plan,
                rng,
            )
            rfi_samples = int(hit.sum())
        nsamples = np.ones(data.shape, np.float32)
        zero = rng.random(data.shape[0]) < settings.zero_nsamples
        nsamples[zero] = 0.0
        if n_drop:
            data[-n_drop * a1.size :] = np.complex64(complex(np.nan, np.nan))
        file_time = Time(start + rng.uniform(0.0, settings.jitter_s) * u.s, precision=0)
        path = Path(out_dir) / archive_filename(file_time, sb)
        write_raw_file(
            path,
            times_jd=times_jd,
            ant_1=a1,
            ant_2=a2,
            uvw=uvw,
            freqs_hz=freqs,
            channel_width_hz=inst.channel_width(settings.n_channels),
            dec_rad=dec0,
            antenna_positions=positions,
            visdata=data,
            nsamples=nsamples,
            integration_s=dt,
            fs_table=f"fs_table_dec{settings.dec_deg:.2f}.npz",
            history="Simulated by dsa110-contimg simulate in the correlator's layout.",
        )
        records.append(
            {
                "file": path.name,
                "group": group_index,
                "subband": sb,
                "nan_rows": int(n_drop * a1.size),
                "zero_nsamples_rows": int(zero.sum()),
                "rfi_samples": rfi_samples,
            }
        )
    log.info(
        "group %d: %d subband files, %d sources in view, start %s",
        group_index,
        len(records),
        len(visible),
        start.isot,
    )
    return records


def ese_source(settings, starts):
    """The catalog row of the injected ESE source (see SimulationSettings.ese)."""
    from dsa110_contimg.astrometry import meridian_phase_center

    e = {
        "group": 0,
        "day": settings.n_days / 2,
        "fwhm_days": 5.0,
        "depth": 0.4,
        "flux_jy": 0.5,
        "east_deg": 0.3,
        "north_deg": 0.3,
        "shoulder": 0.0,
        **settings.ese,
    }
    start = starts[int(e["group"])]
    mid_jd = start.jd + settings.group_duration_s / 2 / 86400
    ra0, dec0 = np.degrees(meridian_phase_center(mid_jd, settings.dec_deg))
    return {
        "source_id": "ESE001",
        "ra_deg": ra0 + e["east_deg"] / np.cos(np.radians(dec0)),
        "dec_deg": dec0 + e["north_deg"],
        "flux_jy": e["flux_jy"],
        "spectral_index": -0.7,
        "ese_mjd": start.mjd + settings.group_duration_s / 2 / 86400 + e["day"],
        "ese_fwhm_days": e["fwhm_days"],
        "ese_depth": e["depth"],
        "ese_shoulder": e["shoulder"],
    }


def group_amplitudes(settings, n_groups):
    """The per-group amplitude factors 1 + N(0, gain_error) (all 1 without gain error)."""
    if settings.gain_error <= 0:
        return np.ones(n_groups)
    rng = np.random.default_rng(settings.seed + 3000)
    return 1.0 + rng.normal(0.0, settings.gain_error, n_groups)


def calibrator_placement(calibrators, name, group, flux_scale=1.0):
    """Placement of catalog calibrator `name` (a row of the calibrator catalog DataFrame:
    name, ra_deg, dec_deg, flux_jy, spectral_index) transiting in group index `group`;
    `flux_scale` scales its simulated flux (e.g. a faded or mis-catalogued calibrator)."""
    rows = calibrators[calibrators.name == name]
    if rows.empty:
        raise ValueError(
            f"calibrator {name!r} is not in the calibrator catalog ({', '.join(calibrators.name)})"
        )
    row = rows.iloc[0]
    return {
        "name": str(name),
        "group": int(group),
        "flux_scale": float(flux_scale),
        "ra_deg": float(row.ra_deg),
        "dec_deg": float(row.dec_deg),
        "flux_jy": float(row.flux_jy),
        "spectral_index": float(row.spectral_index),
    }


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
        ha = hour_angle_deg(first["ra_deg"], first["dec_deg"], t)
        t = t + ((-ha) % 360.0 if step == 0 else -ha) / 360.0 * SIDEREAL_DAY_S * u.s
    start = t - (first["group"] + 0.5) * settings.group_duration_s * u.s
    placed = replace(settings, start=start.isot)
    starts = group_start_times(placed)
    for cal in settings.calibrators:
        if not 0 <= cal["group"] < len(starts):
            raise ValueError(
                f"calibrator {cal['name']}: group {cal['group']} does not exist "
                f"({len(starts)} groups)"
            )
        t0 = starts[cal["group"]]
        ha0, ha1 = hour_angle_deg(
            cal["ra_deg"], cal["dec_deg"], Time([t0, t0 + settings.group_duration_s * u.s])
        )
        if not ha0 <= 0.0 < ha1:
            raise ValueError(
                f"calibrator {cal['name']} does not transit in group {cal['group']} "
                f"once {first['name']} transits in group {first['group']}"
            )
    return placed


def _calibrator_sources(settings):
    return [
        {
            "source_id": c["name"],
            "ra_deg": c["ra_deg"],
            "dec_deg": c["dec_deg"],
            "flux_jy": c["flux_jy"] * c.get("flux_scale", 1.0),
            "spectral_index": c["spectral_index"],
        }
        for c in {c["name"]: c for c in settings.calibrators}.values()
    ]


def simulate_archive(out_dir, settings=None, catalog=None, workers=1):
    """Write a simulated raw archive and its truth to `out_dir`; returns a summary dict.

    Groups are simulated by `workers` processes; each group draws from its own seeded
    generator, so the files do not depend on `workers`."""
    from astropy.time import Time

    settings = settings or SimulationSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = place_calibrators(settings)
    starts = group_start_times(settings)
    if catalog is None:
        first = lst_deg(Time([starts[0]]))[0]
        span = settings.n_groups * settings.group_duration_s / SIDEREAL_DAY_S * 360.0
        catalog = make_sky_catalog(
            first - 5.0, first + span + 5.0, settings.dec_deg, settings.n_sources, settings.seed
        )
    if settings.extra_sources:
        catalog = pd.concat([catalog, pd.DataFrame(settings.extra_sources)], ignore_index=True)
    if settings.calibrators:
        catalog = pd.concat(
            [catalog, pd.DataFrame(_calibrator_sources(settings))], ignore_index=True
        )
    if settings.ese:
        catalog = pd.concat(
            [catalog, pd.DataFrame([ese_source(settings, starts)])], ignore_index=True
        )
    band_freqs = band_frequencies(settings)
    bandpass, drift = make_gains(settings, band_freqs)
    t_ref_jd = starts[0].jd
    amplitudes = group_amplitudes(settings, len(starts))
    rfi_plan = None
    if settings.rfi is not None:
        from dsa110_contimg.simulation.rfi import RFISpec, plan_rfi

        rfi_plan = plan_rfi(
            RFISpec(**settings.rfi),
            band_freqs,
            settings.n_integrations,
            np.asarray(settings.stations) - 1,
            settings.seed + 2000,
        )
    jobs = [
        (out, start, settings, catalog, (bandpass, drift), band_freqs, t_ref_jd, i, amplitudes[i])
        for i, start in enumerate(starts)
    ]
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            done = list(pool.map(simulate_group, *zip(*jobs), [rfi_plan] * len(jobs)))
    else:
        done = [simulate_group(*job, rfi_plan) for job in jobs]
    records = [record for group in done for record in group]
    truth = out / "truth"
    truth.mkdir(exist_ok=True)
    with atomic_output(out / "sky_catalog.csv") as tmp:
        catalog.to_csv(tmp, index=False, float_format="%.8f")
    with atomic_output(truth / "gains.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                freq_hz=band_freqs,
                bandpass=bandpass,
                drift_rad_per_s=drift,
                antenna_numbers=np.asarray(settings.stations) - 1,
                t_ref_jd=t_ref_jd,
                polarizations=np.array(["XX", "YY"]),
            )
    sigma = inst.thermal_noise_sigma(
        inst.channel_width(settings.n_channels), settings.integration_s, settings.sefd_jy
    )
    meta = {
        "settings": asdict(settings),
        "noise_sigma_jy": sigma if settings.noise else 0.0,
        "group_starts": [s.isot for s in starts],
        "phase_center_dec_rad": float(np.radians(settings.dec_deg)),
        "layout": "correlator UVH5 (uvh5.py): fringe-stopped at hour angle 0 and phase_center_dec "
        "each integration; antenna number = station - 1",
        "correlated_stations": list(settings.stations),
        "baseline_order": "correlator inputs stations[0::3] + stations[1::3] + stations[2::3]; "
        "rows = input pairs (i, j), i <= j (simulate.correlator_baselines)",
        "gain_convention": "MS row (ANTENNA1=i, ANTENNA2=j) = G_i conj(G_j) model; "
        "G(t, f) = bandpass[k, f, pol] * exp(1j drift[k, pol] (t - t_ref)), "
        "k = index of the antenna in antenna_numbers",
        "group_amplitudes": [float(a) for a in amplitudes],
        "rfi": rfi_plan,
        "files": [r["file"] for r in records],
        "faults": [
            r for r in records if r["nan_rows"] or r["zero_nsamples_rows"] or r["rfi_samples"]
        ],
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
    for key in (
        "n_antennas",
        "n_channels",
        "n_integrations",
        "n_groups",
        "n_days",
        "dec_deg",
        "seed",
        "start",
        "n_sources",
        "jitter_s",
        "sefd_jy",
        "zero_nsamples",
        "gain_error",
    ):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.no_noise:
        overrides["noise"] = False
    if args.no_gains:
        overrides["gains"] = False
    if args.rfi:
        overrides["rfi"] = {}
    if args.drop:
        overrides["dropped"] = [[int(x) for x in d.split(":")] for d in args.drop]
    if args.calibrator:
        if not args.calibrator_catalog:
            raise ValueError("--calibrator needs --calibrator-catalog")
        cals = pd.read_csv(args.calibrator_catalog, comment="#")
        overrides["calibrators"] = [
            calibrator_placement(cals, *_placement_arg(a)) for a in args.calibrator
        ]
    settings = SimulationSettings(**overrides)
    catalog = pd.read_csv(args.catalog) if args.catalog else None
    meta = simulate_archive(args.out, settings, catalog, workers=args.workers)
    log.info(
        "wrote %d files to %s (Dec %+.4f, %d of %d stations; noise sigma %.3g Jy per visibility)",
        len(meta["files"]),
        args.out,
        settings.dec_deg,
        settings.n_antennas,
        N_STATIONS,
        meta["noise_sigma_jy"],
    )


def register_cli(sub):
    p = sub.add_parser("simulate", help="write a simulated raw UVH5 archive and its truth")
    p.add_argument("--out", required=True, help="archive directory to write")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument(
        "--workers", type=int, default=1, help="processes simulating groups (same files for any)"
    )
    p.add_argument(
        "--catalog", help="sky catalog CSV (source_id, ra_deg, dec_deg, flux_jy, spectral_index)"
    )
    for name, typ in (
        ("n-antennas", int),
        ("n-channels", int),
        ("n-integrations", int),
        ("n-groups", int),
        ("n-days", int),
        ("dec-deg", float),
        ("seed", int),
        ("start", str),
        ("n-sources", int),
        ("jitter-s", float),
        ("sefd-jy", float),
        ("zero-nsamples", float),
        ("gain-error", float),
    ):
        p.add_argument(f"--{name}", type=typ)
    p.add_argument(
        "--rfi",
        action="store_true",
        help="add RFI (narrow-band interferers, broadband bursts) and a dead antenna",
    )
    p.add_argument(
        "--drop",
        action="append",
        help="GROUP:N: the last N integrations of group GROUP are NaN (repeatable)",
    )
    p.add_argument("--no-noise", action="store_true")
    p.add_argument("--no-gains", action="store_true")
    p.add_argument(
        "--calibrator",
        action="append",
        help="place a catalog calibrator: NAME:GROUP[:FLUX_SCALE] (repeatable)",
    )
    p.add_argument("--calibrator-catalog", help="calibrator catalog CSV (config/calibrators.csv)")
    p.set_defaults(func=_run)
