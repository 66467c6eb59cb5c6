"""What imaging needs to know about a Measurement Set (times, frequencies, phase centre,
unflagged samples, calibration status) and the thermal noise it predicts."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsa110_contimg import instrument as inst
from dsa110_contimg.calibration.apply import MS_KEYWORD


@dataclass
class MSSummary:
    """What imaging needs to know about a Measurement Set."""

    path: str
    times_mjd: np.ndarray
    integration_s: float
    freqs_hz: np.ndarray
    channel_width_hz: float
    phase_center_rad: tuple
    n_cross_unflagged: int
    n_pol: int
    flagged_fraction: float
    calibration: str = ""

    @property
    def mid_mjd(self):
        return 0.5 * (self.times_mjd.min() + self.times_mjd.max())

    @property
    def centre_freq_hz(self):
        return 0.5 * (self.freqs_hz.min() + self.freqs_hz.max())


def read_ms_summary(ms_path, datacolumn="CORRECTED_DATA", chunk=20000):
    """Times, frequencies, phase centre and unflagged cross-correlation count of an MS."""
    from casacore import tables

    ms_path = Path(ms_path)
    if not (ms_path / "table.dat").exists():
        raise FileNotFoundError(f"{ms_path}: not a Measurement Set (no table.dat)")
    with tables.table(str(ms_path), ack=False) as ms:
        if datacolumn not in ms.colnames():
            raise ValueError(f"{ms_path}: no {datacolumn} column to image")
        nrow = ms.nrows()
        if nrow == 0:
            raise ValueError(f"{ms_path}: the main table has no rows")
        calibration = ""
        if MS_KEYWORD in ms.keywordnames():
            calibration = str(dict(ms.getkeyword(MS_KEYWORD)).get("status", ""))
        times = np.unique(ms.getcol("TIME"))
        interval = float(np.median(ms.getcol("INTERVAL", nrow=min(nrow, 1000))))
        n_good = 0
        n_cross = 0
        for start in range(0, nrow, chunk):
            n = min(chunk, nrow - start)
            cross = ms.getcol("ANTENNA1", start, n) != ms.getcol("ANTENNA2", start, n)
            flags = ms.getcol("FLAG", start, n)[cross]
            n_good += int(flags.size - np.count_nonzero(flags))
            n_cross += int(flags.size)
    with tables.table(str(ms_path / "SPECTRAL_WINDOW"), ack=False) as spw:
        freqs = np.concatenate([np.ravel(f) for f in spw.getcol("CHAN_FREQ")])
        widths = np.concatenate([np.ravel(w) for w in spw.getcol("CHAN_WIDTH")])
    with tables.table(str(ms_path / "FIELD"), ack=False) as field:
        phase_dir = field.getcol("PHASE_DIR")[0, 0]
    with tables.table(str(ms_path / "POLARIZATION"), ack=False) as pol:
        n_pol = int(pol.getcol("NUM_CORR")[0])
    n_pairs = n_good // n_pol
    return MSSummary(
        path=str(ms_path),
        times_mjd=times / 86400.0,
        integration_s=interval,
        freqs_hz=np.sort(freqs),
        channel_width_hz=float(np.median(np.abs(widths))),
        phase_center_rad=(float(phase_dir[0]) % (2 * np.pi), float(phase_dir[1])),
        n_cross_unflagged=n_pairs,
        n_pol=n_pol,
        flagged_fraction=1.0 - n_good / max(n_cross, 1),
        calibration=calibration,
    )


def natural_thermal_rms(summary, sefd_jy=inst.SEFD_JY):
    """Stokes I image rms (Jy/beam) with natural weighting from the radiometer equation:
    sigma_vis / sqrt(n_pol N), N the unflagged cross-correlation samples per polarization."""
    if summary.n_cross_unflagged == 0:
        return float("nan")
    sigma_vis = inst.thermal_noise_sigma(summary.channel_width_hz, summary.integration_s, sefd_jy)
    return float(sigma_vis / np.sqrt(min(summary.n_pol, 2) * summary.n_cross_unflagged))
