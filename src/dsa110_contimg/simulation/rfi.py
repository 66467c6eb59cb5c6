"""Simulated radio-frequency interference and a dead antenna, for the simulator and tests.

Three kinds of fault a flagger must find, chosen once per archive (`plan_rfi`) and added
to visibilities of any subset of rows and channels (`inject_rfi`), which returns the
truth mask of the samples it touched:

- persistent narrow-band interferers: a few channels hit in every integration and on
  every baseline, with a per-baseline phase (a terrestrial transmitter);
- broadband bursts: single integrations hit in every channel (e.g. a radar or a spark);
- dead antennas: no signal reaches the correlator, so every visibility of the antenna is
  replaced by a small residual noise (1e-3 of the thermal rms).

Amplitudes are in units of the thermal rms of one complex visibility (sigma sqrt 2).
"""

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class RFISpec:
    """How much interference to inject."""

    n_channels: int = 3
    channel_snr: tuple = (4.0, 30.0)
    n_bursts: int = 2
    burst_snr: tuple = (3.0, 10.0)
    n_dead_antennas: int = 1


def plan_rfi(spec, band_freqs_hz, n_times, antennas, seed):
    """Which channels (by frequency), integrations and antennas are hit, and how hard."""
    rng = np.random.default_rng(seed)
    freqs = np.sort(np.asarray(band_freqs_hz, float))
    channels = rng.choice(freqs.size, size=min(spec.n_channels, freqs.size), replace=False)
    bursts = rng.choice(n_times, size=min(spec.n_bursts, n_times), replace=False)
    dead = rng.choice(np.asarray(antennas)[1:], size=spec.n_dead_antennas, replace=False)
    return {
        "spec": asdict(spec),
        "channel_freq_hz": sorted(float(f) for f in freqs[channels]),
        "channel_snr": rng.uniform(*spec.channel_snr, channels.size).tolist(),
        "burst_integrations": sorted(int(b) for b in bursts),
        "burst_snr": rng.uniform(*spec.burst_snr, bursts.size).tolist(),
        "dead_antennas": sorted(int(a) for a in dead),
    }


def inject_rfi(data, freqs_hz, tidx, ant1, ant2, sigma, plan, rng):
    """Add the planned interference to `data` (nrow, nchan, npol) in place.

    `freqs_hz` are the channels of `data`, `tidx` each row's integration index, `sigma`
    the thermal rms of the real part of one visibility. Returns the (nrow, nchan) mask of
    samples with injected RFI (dead antennas are not RFI and are not in the mask).
    """
    nrow, nchan, npol = data.shape
    scale = sigma * np.sqrt(2.0)
    mask = np.zeros((nrow, nchan), bool)
    cross = ant1 != ant2
    freqs = np.asarray(freqs_hz, float)
    for f, snr in zip(plan["channel_freq_hz"], plan["channel_snr"]):
        hit = np.flatnonzero(np.isclose(freqs, f, rtol=0, atol=1.0))
        if hit.size:
            phase = rng.uniform(0, 2 * np.pi, (nrow, 1, 1))
            data[cross, hit[0]] += snr * scale * np.exp(1j * phase[cross, 0])
            mask[cross, hit[0]] = True
    for t, snr in zip(plan["burst_integrations"], plan["burst_snr"]):
        rows = cross & (tidx == t)
        phase = rng.uniform(0, 2 * np.pi, (int(rows.sum()), nchan, 1))
        data[rows] += snr * scale * np.exp(1j * phase)
        mask[rows] = True
    dead = np.isin(ant1, plan["dead_antennas"]) | np.isin(ant2, plan["dead_antennas"])
    n = int(dead.sum())
    data[dead] = (
        1e-3 * sigma * (rng.normal(size=(n, nchan, npol)) + 1j * rng.normal(size=(n, nchan, npol)))
    )
    mask[dead] = False
    return mask
