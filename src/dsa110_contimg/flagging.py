"""RFI and bad-data flagging of one group's Measurement Set, before calibration.

Three steps, each counted separately in the flag statistics:

1. Bad samples: non-finite or exactly zero DATA, and WEIGHT_SPECTRUM <= 0 (a dropped
   correlator stream, zero `nsamples`). Flagged per polarization.
2. Dead antennas: an antenna whose median cross-correlation amplitude is below
   `dead_antenna_fraction` of the median over all antennas (no signal reaches the
   correlator), or all of whose data are bad, is flagged entirely.
3. RFI: AOFlagger's SumThreshold strategy on the time x frequency plane of each
   cross-correlation baseline, run on (XX + YY) / 2 so that one pass serves both
   polarizations (RFI is not polarized toward one feed; the pass costs half). The default
   strategy is AOFlagger's bundled `generic-minimal` (iterated SumThreshold with a
   smooth background fit and time/channel rms thresholds); any Lua strategy file can be
   named instead. Bad samples are replaced by the plane's median plus noise of its
   robust rms before the strategy sees them, so they neither hide nor mimic RFI. RFI
   reaches every baseline, so a (time, channel) cell, a channel or an integration flagged
   on more than `broadcast_fraction` of the baselines is flagged on all of them: this
   catches the weaker part of an interferer below one baseline's threshold.

The fractions flagged per antenna, channel and integration go into a QA record (stage
`flag`) and its plot; a group whose flagged fraction exceeds `max_flag_fraction` fails QA
with that reason.
"""

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dsa110_contimg.atomic import atomic_output, write_text
from dsa110_contimg.provenance import provenance
from dsa110_contimg.stats import MAD_TO_SIGMA

log = logging.getLogger(__name__)

FAIL, WARN, PASS = "fail", "warn", "pass"


@dataclass
class FlagSettings:
    """Flagging parameters (config section `flag`)."""

    strategy: str = "generic-minimal"
    dead_antenna_fraction: float = 0.1
    broadcast_fraction: float = 0.3
    warn_flag_fraction: float = 0.2
    max_flag_fraction: float = 0.5
    workers: int = 2

    @classmethod
    def from_config(cls, section):
        """Settings from the config section `flag` (unknown keys are an error)."""
        return cls(**(section or {}))


def strategy_file(name):
    """Path of an AOFlagger strategy: a bundled strategy's name (e.g. `generic-minimal`,
    `generic-default`) or a Lua file."""
    import aoflagger

    if Path(name).suffix == ".lua":
        if not Path(name).is_file():
            raise FileNotFoundError(f"AOFlagger strategy file {name} does not exist")
        return str(name)
    default = Path(aoflagger.AOFlagger().find_strategy_file(aoflagger.TelescopeId.Generic))
    path = default.with_name(f"{name}.lua")
    if not path.is_file():
        known = sorted(p.stem for p in default.parent.glob("*.lua"))
        raise ValueError(f"unknown AOFlagger strategy {name!r}; bundled: {', '.join(known)}")
    return str(path)


def _row_index(ant1, ant2, times):
    """Time index and baseline index of every row, with the distinct times and pairs."""
    times, tidx = np.unique(times, return_inverse=True)
    pairs, bidx = np.unique(np.stack([ant1, ant2], axis=1), axis=0, return_inverse=True)
    return times, tidx.ravel(), pairs, bidx.ravel()


def _read_planes(data, flag, weight, tidx, bidx, n_times, n_baselines):
    """Per-polarization bad-sample flags (nrow, nchan, npol) and the (XX+YY)/2 plane of
    every baseline (nbl, ntime, nchan), bad samples set to NaN."""
    from dsa110_contimg.visibility_kernels import baseline_planes

    bad = np.empty(data.shape, bool)
    cube = np.full((n_baselines, n_times, data.shape[1]), np.nan, np.complex64)
    no_weight = np.empty((0, 0, 0), np.float32)
    baseline_planes(data, flag, no_weight if weight is None else weight, tidx, bidx, bad, cube)
    return bad, cube


_WORKER = {}


def _init_worker(strategy, cube):
    import aoflagger

    flagger = aoflagger.AOFlagger()
    _WORKER["strategy"] = flagger.load_strategy_file(strategy)
    _WORKER["flagger"] = flagger
    if cube is not None:
        _WORKER["cube"] = cube


def _flag_baselines(indices):
    """AOFlagger RFI masks (len(indices), ntime, nchan) for the given baselines of the
    cube; samples without data are left to the bad-sample flags."""
    cube = _WORKER["cube"]
    _, n_times, n_chan = cube.shape
    images = _WORKER["flagger"].make_image_set(n_times, n_chan, 2)
    masks = np.zeros((len(indices), n_times, n_chan), bool)
    for k, b in enumerate(indices):
        plane = cube[b]
        missing = ~np.isfinite(plane)
        if missing.all():
            continue
        if missing.any():
            plane = _fill_missing(plane, missing, np.random.default_rng(int(b)))
        images.set_image_buffer(0, np.ascontiguousarray(plane.real.T, dtype=np.float64))
        images.set_image_buffer(1, np.ascontiguousarray(plane.imag.T, dtype=np.float64))
        masks[k] = _WORKER["strategy"].run(images).get_buffer().T & ~missing
    return masks


def _fill_missing(plane, missing, rng):
    """The plane with samples without data replaced by its median plus noise of its
    robust rms, so that they neither look like RFI nor lower the noise estimate."""
    good = plane[~missing]
    n = int(missing.sum())

    def fill(part):
        centre = np.median(part)
        return centre + MAD_TO_SIGMA * np.median(np.abs(part - centre)) * rng.standard_normal(n)

    filled = plane.copy()
    filled[missing] = fill(good.real) + 1j * fill(good.imag)
    return filled


def _aoflagger_masks(cube, baselines, strategy, workers):
    """RFI masks of the given baselines, in `workers` forked processes."""
    chunks = [c for c in np.array_split(baselines, max(1, 8 * workers)) if c.size]
    if workers <= 1:
        _init_worker(strategy, cube)
        return np.concatenate([_flag_baselines(c) for c in chunks])
    _WORKER["cube"] = cube
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(strategy, None)
    ) as pool:
        return np.concatenate(list(pool.map(_flag_baselines, chunks)))


def _dead_antennas(cube, pairs, cross, threshold):
    """Antenna numbers whose median cross-correlation amplitude is below `threshold` of
    the array's median, or that have no good data at all."""
    medians = {}
    for ant in np.unique(pairs):
        values = np.abs(cube[cross & (pairs == ant).any(axis=1)])
        values = values[np.isfinite(values)]
        medians[int(ant)] = float(np.median(values)) if values.size else 0.0
    reference = np.median([m for m in medians.values() if m > 0]) if any(medians.values()) else 0.0
    return sorted(a for a, m in medians.items() if m < threshold * reference), medians


def flag_visibilities(data, flag, weight, ant1, ant2, times, settings=None):
    """Flags of bad samples, dead antennas and RFI for visibilities in MS layout (rows x
    channels x polarizations; `weight` per sample or None, `times` per row). The inputs
    are not changed; returns (flags, statistics without `freq_mhz`)."""
    from dsa110_contimg.visibility_kernels import broadcast_common, combine_flags

    settings = settings or FlagSettings()
    strategy = strategy_file(settings.strategy)
    t0 = time.perf_counter()
    times, tidx, pairs, bidx = _row_index(ant1, ant2, times)
    bad, cube = _read_planes(data, flag, weight, tidx, bidx, times.size, len(pairs))
    cross = pairs[:, 0] != pairs[:, 1]
    dead, medians = _dead_antennas(cube, pairs, cross, settings.dead_antenna_fraction)
    rfi = np.zeros(cube.shape, bool)
    baselines = np.flatnonzero(cross & ~np.isin(pairs, dead).any(axis=1))
    rfi[baselines] = _aoflagger_masks(cube, baselines, strategy, settings.workers)
    broadcast_common(rfi, cube, baselines, settings.broadcast_fraction)
    del cube
    dead_rows = np.isin(ant1, dead) | np.isin(ant2, dead)
    flags = np.empty(bad.shape, bool)
    rfi_rows = np.empty(bad.shape[:2], bool)
    combine_flags(bad, rfi, bidx, tidx, dead_rows, flags, rfi_rows)
    stats = flag_statistics(flags, bad, rfi_rows, dead_rows, ant1, ant2, tidx)
    stats.update(
        dead_antennas=dead,
        antenna_median_amplitude=medians,
        seconds=time.perf_counter() - t0,
        strategy=strategy,
    )
    return flags, stats


def _log_flags(name, stats):
    log.info(
        "%s: flagged %.1f%% of cross-correlation samples (bad %.1f%%, RFI %.1f%%, "
        "dead antennas %s) in %.1f s",
        name,
        100 * stats["flag_fraction"],
        100 * stats["bad_fraction"],
        100 * stats["rfi_fraction"],
        stats["dead_antennas"] or "none",
        stats["seconds"],
    )


def flag_ms(ms_path, settings=None):
    """Flag bad samples, dead antennas and RFI in `ms_path` (FLAG column, in place);
    returns the flag statistics (see `flag_statistics`)."""
    from casacore import tables

    with tables.table(str(ms_path), readonly=False, ack=False) as ms:
        weight = ms.getcol("WEIGHT_SPECTRUM") if "WEIGHT_SPECTRUM" in ms.colnames() else None
        flags, stats = flag_visibilities(
            ms.getcol("DATA"),
            ms.getcol("FLAG"),
            weight,
            ms.getcol("ANTENNA1"),
            ms.getcol("ANTENNA2"),
            ms.getcol("TIME"),
            settings,
        )
        ms.putcol("FLAG", flags)
        ms.putcol("FLAG_ROW", flags.all(axis=(1, 2)))
        freqs = tables.table(f"{ms_path}::SPECTRAL_WINDOW", ack=False).getcol("CHAN_FREQ")[0]
    stats["freq_mhz"] = (freqs / 1e6).tolist()
    return stats


def flag_statistics(flags, bad, rfi, dead_rows, ant1, ant2, tidx):
    """Flagged fractions of the cross-correlation samples: total, by cause, per antenna,
    per channel and per integration (counted per row first: no full-size temporaries)."""
    cross = ant1 != ant2

    def row_fraction(mask):
        return np.count_nonzero(mask.reshape(len(mask), -1), axis=1)[cross] / mask[0].size

    per_row = row_fraction(flags)
    c1, c2, ct = ant1[cross], ant2[cross], tidx[cross]
    per_antenna = {}
    for ant in np.unique(np.concatenate([ant1, ant2])):
        rows = (c1 == ant) | (c2 == ant)
        per_antenna[int(ant)] = float(per_row[rows].mean()) if rows.any() else 1.0
    n_times = int(tidx.max()) + 1 if tidx.size else 0
    per_channel = np.zeros(flags.shape[1])
    for start in range(0, len(flags), 20000):
        part = slice(start, start + 20000)
        per_channel += np.count_nonzero(flags[part][cross[part]], axis=(0, 2))
    return {
        "flag_fraction": float(per_row.mean()),
        "bad_fraction": float(row_fraction(bad).mean()),
        "rfi_fraction": float(row_fraction(rfi).mean()),
        "dead_fraction": float(dead_rows[cross].mean()),
        "per_antenna": per_antenna,
        "per_channel": (per_channel / max(1, cross.sum() * flags.shape[2])).tolist(),
        "per_integration": [float(per_row[ct == t].mean()) for t in range(n_times)],
    }


def flag_qa_record(stats, ms_path, group, settings):
    """The QA record of one group's flagging: fails when the flagged fraction exceeds
    `max_flag_fraction`, warns above `warn_flag_fraction`."""
    fraction = stats["flag_fraction"]
    failed, warned = [], []
    if fraction > settings.max_flag_fraction:
        failed.append("flag_fraction")
    elif fraction > settings.warn_flag_fraction:
        warned.append("flag_fraction")
    status = FAIL if failed else WARN if warned else PASS
    metrics = {
        k: stats[k] for k in ("flag_fraction", "bad_fraction", "rfi_fraction", "dead_fraction")
    }
    metrics["n_dead_antennas"] = len(stats["dead_antennas"])
    reason = (
        f"flagged fraction {fraction:.3f} exceeds the limit {settings.max_flag_fraction}"
        if failed
        else None
    )
    return {
        "stage": "flag",
        "name": group,
        "product": str(ms_path),
        "status": status,
        "failed": failed,
        "warned": warned,
        "reason": reason,
        "metrics": metrics,
        "thresholds": {
            "flag_fraction": {
                "kind": "max",
                "warn": settings.warn_flag_fraction,
                "fail": settings.max_flag_fraction,
            }
        },
        "settings": asdict(settings),
        "dead_antennas": stats["dead_antennas"],
        "per_antenna": stats["per_antenna"],
        "per_channel": stats["per_channel"],
        "per_integration": stats["per_integration"],
        "freq_mhz": stats["freq_mhz"],
        "provenance": provenance([str(ms_path)], asdict(settings)),
    }


def plot_flags(record, png):
    """Flagged fraction per antenna, per channel and per integration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8))
    ants = sorted(record["per_antenna"], key=int)
    axes[0].bar([str(int(a) + 1) for a in ants], [record["per_antenna"][a] for a in ants])
    axes[0].set_xlabel("station")
    axes[0].tick_params(axis="x", labelsize=6, rotation=90)
    axes[1].plot(record["freq_mhz"], record["per_channel"], lw=0.8)
    axes[1].set_xlabel("frequency (MHz)")
    axes[2].plot(np.arange(len(record["per_integration"])), record["per_integration"], "o-")
    axes[2].set_xlabel("integration")
    for ax in axes:
        ax.set_ylabel("flagged")
        ax.set_ylim(0, 1.02)
    dead = ", ".join(str(a + 1) for a in record["dead_antennas"]) or "none"
    fig.suptitle(
        f"{record['name']}: {100 * record['metrics']['flag_fraction']:.1f}% flagged "
        f"({record['status']}); dead stations: {dead}"
    )
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def record_flags(stats, product, group, qa_json, qa_png, settings=None):
    """Write the QA record and plot of one group's flagging (`stats` from `flag_ms` or
    `flag_visibilities` with `freq_mhz`); the record names `product`."""
    settings = settings or FlagSettings()
    _log_flags(product, stats)
    record = flag_qa_record(stats, product, group, settings)
    plot_flags(record, qa_png)
    write_text(json.dumps(record, indent=1), qa_json)
    if record["status"] == FAIL:
        log.warning("%s: flag QA failed: %s", group, record["reason"])
    return record


def flag_group(ms_path, group, qa_json, qa_png, settings=None):
    """Flag one group's MS in place and write its QA record and plot."""
    settings = settings or FlagSettings()
    return record_flags(flag_ms(ms_path, settings), ms_path, group, qa_json, qa_png, settings)


def _run(args):
    section = json.loads(args.config_json) if args.config_json else {}
    settings = FlagSettings.from_config(section)
    flag_group(args.ms, args.group, args.qa_json, args.qa_png, settings)


def register_cli(sub):
    p = sub.add_parser("flag", help="flag bad data, dead antennas and RFI in one group's MS")
    p.add_argument("ms", help="Measurement Set to flag in place")
    p.add_argument("--group", required=True, help="group name (QA record name)")
    p.add_argument("--qa-json", required=True)
    p.add_argument("--qa-png", required=True)
    p.add_argument("--config-json", help="the config section `flag` as JSON")
    p.set_defaults(func=_run)
