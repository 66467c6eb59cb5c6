"""Calibration solutions: read a CASA caltable, flag outlying solutions, per-antenna
statistics (flagged fraction, SNR, amplitude and phase scatter) and the QA plot."""

import warnings

import numpy as np

from dsa110_contimg.atomic import atomic_output
from dsa110_contimg.stats import robust_rms

BANDPASS_TABLE = "bandpass.b"
GAIN_TABLE = "gain.g"


def read_caltable(path):
    """(antenna index, time, CPARAM [n, chan, pol], FLAG, SNR) of a CASA caltable."""
    from casacore import tables

    with tables.table(str(path), ack=False) as t:
        return {
            "antenna": t.getcol("ANTENNA1"),
            "time": t.getcol("TIME"),
            "gain": t.getcol("CPARAM"),
            "flag": t.getcol("FLAG"),
            "snr": t.getcol("SNR"),
        }


def flag_outliers(path, nsigma, min_fraction=0.05):
    """Flag solutions whose amplitude departs from the antenna's running median over
    channels (bandpass) or from the median over antennas (gains, one channel) by more
    than `nsigma` robust standard deviations and by more than `min_fraction` of it;
    returns the number newly flagged."""
    from casacore import tables
    from scipy.ndimage import median_filter

    with tables.table(str(path), readonly=False, ack=False) as t:
        gain, flag = t.getcol("CPARAM"), t.getcol("FLAG")
        amp = np.where(flag, np.nan, np.abs(gain))
        if amp.shape[1] > 4:
            filled = np.where(np.isnan(amp), np.nanmedian(amp, axis=1, keepdims=True), amp)
            smooth = median_filter(np.nan_to_num(filled, nan=0.0), size=(1, 5, 1), mode="nearest")
        else:
            smooth = np.nanmedian(amp, axis=0, keepdims=True)
        with np.errstate(all="ignore"):
            resid = amp / smooth - 1.0
        good = np.isfinite(resid)
        if good.sum() < 3:
            return 0
        sigma = robust_rms(resid[good])
        bad = good & (np.abs(resid) > max(nsigma * sigma, min_fraction))
        t.putcol("FLAG", flag | bad)
    return int(bad.sum())


def _second_difference_scatter(x, axis):
    """Noise-like scatter of x along `axis`: std of second differences / sqrt(6), which
    ignores offsets and linear trends (bandpass slope, delay) per polarization."""
    if x.shape[axis] < 3:
        return None
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = np.nanstd(np.diff(x, n=2, axis=axis)) / np.sqrt(6.0)
    return float(value) if np.isfinite(value) else None


def _antenna_stats(table, names, present):
    """Per antenna: flagged fraction, median SNR, amplitude scatter (fractional) and phase
    scatter (deg), channel to channel for a bandpass and time to time for gains."""
    rows = []
    for ant in np.unique(table["antenna"]):
        if ant not in present:
            continue
        sel = table["antenna"] == ant
        g, f, snr = table["gain"][sel], table["flag"][sel], table["snr"][sel]
        gm = np.where(f | (np.abs(g) == 0), np.nan, g)
        axis = 1 if g.shape[1] > 1 else 0
        with np.errstate(all="ignore"):
            log_amp = np.log(np.abs(gm))
        phase = np.degrees(np.unwrap(np.nan_to_num(np.angle(gm)), axis=axis))
        phase[np.isnan(gm)] = np.nan
        phase_scatter = _second_difference_scatter(phase, axis)
        rows.append(
            {
                "antenna": names[int(ant)] if int(ant) < len(names) else str(ant),
                "flagged_fraction": float(f.mean()),
                "median_snr": float(np.median(snr[~f])) if (~f).any() else 0.0,
                "amp_scatter": _second_difference_scatter(log_amp, axis),
                "phase_scatter_deg": phase_scatter,
            }
        )
    return rows


def antennas_with_data(ms):
    """Antenna indices with at least one unflagged cross-correlation sample: a dead
    antenna (flagged before calibration) has no solutions to find, so it neither counts
    against the solution statistics nor serves as reference antenna."""
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        good = ~t.getcol("FLAG").all(axis=(1, 2)) & (a1 != a2)
    return {int(a) for a in np.unique(np.concatenate([a1[good], a2[good]]))}


def solution_summary(table, names, present):
    """Solution statistics over the antennas `present` in the data."""
    rows = np.isin(table["antenna"], list(present))
    f = table["flag"][rows]
    snr = table["snr"][rows][~f]
    return {
        "n_solutions": int(f.size),
        "flagged_fraction": float(f.mean()) if f.size else 1.0,
        "median_snr": float(np.median(snr)) if snr.size else 0.0,
        "per_antenna": _antenna_stats(table, names, present),
    }


def plot_solutions(solutions, qa, png):
    """Bandpass amplitude/phase vs frequency and gain amplitude/phase per antenna."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    title = f"{qa['calgroup']}: {qa['calibrator']}  " + (
        "QA passed" if qa["passed"] else "QA FAILED"
    )
    fig.suptitle(title, color="black" if qa["passed"] else "red")
    if solutions is None:
        for ax in axes.flat:
            ax.axis("off")
        axes[0, 0].text(0, 0.5, "\n".join(qa["reasons"]) or "no solutions", wrap=True, va="center")
    else:
        bp, g = solutions["bandpass"], solutions["gain"]
        f_mhz = solutions["freq_hz"] / 1e6
        for row in range(bp["gain"].shape[0]):
            for p in range(bp["gain"].shape[2]):
                gm = np.where(bp["flag"][row, :, p], np.nan, bp["gain"][row, :, p])
                axes[0, 0].plot(f_mhz, np.abs(gm), lw=0.7)
                axes[0, 1].plot(f_mhz, np.degrees(np.angle(gm)), lw=0.7)
        axes[0, 0].set(xlabel="frequency (MHz)", ylabel="bandpass amplitude")
        axes[0, 1].set(xlabel="frequency (MHz)", ylabel="bandpass phase (deg)")
        gm = np.where(g["flag"], np.nan, g["gain"])[:, 0, :]
        for p, marker in zip(range(gm.shape[1]), "ox"):
            axes[1, 0].plot(g["antenna"], np.abs(gm[:, p]), marker, label=f"pol {p}")
            axes[1, 1].plot(g["antenna"], np.degrees(np.angle(gm[:, p])), marker)
        axes[1, 0].set(xlabel="antenna index", ylabel="gain amplitude")
        axes[1, 1].set(xlabel="antenna index", ylabel="gain phase (deg)")
        axes[1, 0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
