"""The telescope's raw file layout: DSA-110 correlator UVH5 files (pyuvdata's old UVH5
layout, without a phase-centre catalog), as the correlator writes them.

One file holds one subband (48 channels, descending frequency) of one ~5-minute group:
`Header/` with the array and time metadata, `Header/extra_keywords/phase_center_dec`
(radians) giving the pointing declination, and `Data/visdata` (complex64), `Data/flags`
(bool, never set) and `Data/nsamples` (float32), all of shape (Nblts, 1, Nfreqs, Npols).
Rows are time-major; the correlator's baseline order mixes conjugation (some rows have
ant_1 > ant_2). Although `phase_type` says "drift", the visibilities are fringe-stopped
at every integration toward hour angle 0 at `phase_center_dec`, and `uvw_array`
(float32, the same for every integration) is the baseline toward that direction.

This module names the fields, reads headers for the manifest and converter, reads the
visibilities, and writes the layout (for the simulator: pyuvdata 3 writes only the new
layout).
"""

import re
from datetime import datetime
from pathlib import Path

import numpy as np

from dsa110_contimg import instrument as inst
from dsa110_contimg.atomic import atomic_output

FILENAME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})_sb(\d{2})\.hdf5$")
FILE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
INCOMPLETE_SUFFIX = "_incomplete.hdf5"

TELESCOPE_NAME = "OVRO_MMA"
INSTRUMENT = "DSA"
OBJECT_NAME = "search"
POLARIZATIONS = (-5, -6)  # XX, YY
SPW_ID = 1
N_STATIONS = 117
DEC_KEY = "phase_center_dec"


class HeaderError(ValueError):
    """A UVH5 file whose header cannot be used; the message names the file."""


def archive_filename(time, subband):
    """`YYYY-MM-DDTHH:MM:SS_sbNN.hdf5` for an astropy Time and a subband number."""
    return f"{time.datetime.strftime(FILE_TIME_FORMAT)}_sb{subband:02d}.hdf5"


def parse_filename(path):
    """(file time as datetime, subband number) from `YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`."""
    match = FILENAME_RE.match(Path(path).name)
    if not match:
        raise HeaderError(f"{path}: name is not YYYY-MM-DDTHH:MM:SS_sbNN.hdf5")
    return datetime.strptime(match.group(1), FILE_TIME_FORMAT), int(match.group(2))


def subband_range_hz(subband):
    """(lowest, highest) frequency (Hz) a channel of subband `subband` may have: sb00 is
    the highest subband, subbands are contiguous and SUBBAND_WIDTH_HZ wide."""
    top = inst.BAND_TOP_HZ - subband * inst.SUBBAND_WIDTH_HZ
    return top - inst.SUBBAND_WIDTH_HZ, top


def _value(hdr, key):
    return hdr[key][()]


def read_header(path):
    """Header summary of one raw file (no visibilities are read).

    Raises HeaderError naming the file when it is unreadable or truncated, when a field
    is missing (among them the pointing declination `extra_keywords/phase_center_dec`),
    when the data shapes disagree with the header, or when the frequencies are not those
    of the subband number in the file name.
    """
    import h5py

    file_time, subband = parse_filename(path)
    try:
        with h5py.File(path, "r") as fh:
            if "Header" not in fh or "Data/visdata" not in fh:
                raise HeaderError(f"{path}: not a UVH5 file (no Header or Data/visdata)")
            hdr = fh["Header"]
            try:
                n_blts, n_bls = int(_value(hdr, "Nblts")), int(_value(hdr, "Nbls"))
                n_times, n_freqs = int(_value(hdr, "Ntimes")), int(_value(hdr, "Nfreqs"))
                n_pols, n_ants = int(_value(hdr, "Npols")), int(_value(hdr, "Nants_data"))
                times = hdr["time_array"][()]
                freqs = np.ravel(hdr["freq_array"][()])
                width = float(np.ravel(hdr["channel_width"][()])[0])
                integration = hdr["integration_time"][()]
                ant_1, ant_2 = hdr["ant_1_array"][()], hdr["ant_2_array"][()]
                uvw_shape = hdr["uvw_array"].shape
            except KeyError as err:
                raise HeaderError(f"{path}: header field missing: {err.args[0]}") from None
            extra = hdr["extra_keywords"] if "extra_keywords" in hdr else {}
            if DEC_KEY not in extra:
                raise HeaderError(
                    f"{path}: no pointing declination (Header/extra_keywords/{DEC_KEY} missing)"
                )
            dec_rad = float(extra[DEC_KEY][()])
            shapes = {
                k: fh[f"Data/{k}"].shape
                for k in ("visdata", "flags", "nsamples")
                if f"Data/{k}" in fh
            }
    except HeaderError:
        raise
    except OSError as err:
        reason = "truncated file" if "truncated" in str(err) else "unreadable HDF5"
        raise HeaderError(f"{path}: {reason} ({err})") from None
    if not (np.isfinite(dec_rad) and abs(dec_rad) <= np.pi / 2):
        raise HeaderError(f"{path}: {DEC_KEY} = {dec_rad} is not a declination in radians")
    want = (n_blts, 1, n_freqs, n_pols)
    for key in ("visdata", "flags", "nsamples"):
        if shapes.get(key) != want:
            raise HeaderError(
                f"{path}: inconsistent shapes: Data/{key} {shapes.get(key)} is not "
                f"(Nblts, 1, Nfreqs, Npols) = {want}"
            )
    if (
        n_bls * n_times != n_blts
        or times.size != n_blts
        or ant_1.size != n_blts
        or ant_2.size != n_blts
        or uvw_shape != (n_blts, 3)
        or freqs.size != n_freqs
        or np.size(integration) != n_blts
    ):
        raise HeaderError(
            f"{path}: inconsistent shapes: Nbls {n_bls} x Ntimes {n_times} vs Nblts {n_blts}, "
            f"time_array {times.size}, ant arrays {ant_1.size}/{ant_2.size}, uvw {uvw_shape}, "
            f"freq_array {freqs.size} vs Nfreqs {n_freqs}"
        )
    low, high = subband_range_hz(subband)
    if not (np.all(freqs >= low - 1.0) and np.all(freqs <= high + 1.0)):
        raise HeaderError(
            f"{path}: frequencies {freqs.min() / 1e6:.3f}-{freqs.max() / 1e6:.3f} MHz do not "
            f"match subband sb{subband:02d} ({low / 1e6:.3f}-{high / 1e6:.3f} MHz)"
        )
    from dsa110_contimg.astrometry import lst_rad

    half_int = float(np.median(integration)) / 2.0 / 86400.0
    lst = lst_rad([times.min(), times.max()])
    return {
        "path": str(path),
        "file_time": file_time,
        "subband": subband,
        "start_jd": float(times.min() - half_int),
        "end_jd": float(times.max() + half_int),
        "lst_start_deg": float(np.degrees(lst[0])),
        "lst_end_deg": float(np.degrees(lst[1])),
        "dec_rad": dec_rad,
        "dec_deg": float(np.degrees(dec_rad)),
        "freq_min_hz": float(freqs.min()),
        "freq_max_hz": float(freqs.max()),
        "channel_width_hz": abs(width),
        "n_freqs": n_freqs,
        "n_times": n_times,
        "n_baselines": n_bls,
        "n_antennas": n_ants,
        "integration_s": float(np.median(integration)),
    }


def read_visibilities(path):
    """Visibilities and row metadata of one raw file, straight from HDF5.

    Returns data (Nblts, Nfreqs, Npols) complex64, flag, nsample, and freq_hz, ant_1,
    ant_2, time, uvw as stored. A damaged file raises OSError naming it.
    """
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            hdr, data = fh["Header"], fh["Data"]
            vis = data["visdata"]
            if vis.ndim != 4 or vis.shape[1] != 1:
                raise OSError(f"visdata shape {vis.shape} is not (Nblts, 1, Nfreqs, Npols)")
            return {
                "data": vis[:, 0, :, :],
                "flag": data["flags"][:, 0, :, :],
                "nsample": data["nsamples"][:, 0, :, :],
                "freq_hz": np.ravel(hdr["freq_array"][()]),
                "ant_1": hdr["ant_1_array"][()],
                "ant_2": hdr["ant_2_array"][()],
                "time": hdr["time_array"][()],
                "uvw": hdr["uvw_array"][()],
            }
    except (OSError, KeyError) as err:
        raise OSError(f"{path}: cannot read visibilities ({err})") from err


def write_raw_file(
    path,
    *,
    times_jd,
    ant_1,
    ant_2,
    uvw,
    freqs_hz,
    channel_width_hz,
    dec_rad,
    antenna_positions,
    visdata,
    nsamples,
    integration_s=inst.INTEGRATION_S,
    fs_table="",
    applied_delays_ns=None,
    history="",
):
    """Write one subband file in the correlator's layout (atomically).

    `times_jd` (Ntimes) are integration centres; `ant_1`, `ant_2` (Nbls) station
    numbers - 1 in correlator order and `uvw` (Nbls, 3) their baselines toward the
    meridian, repeated for every integration (time-major rows); `freqs_hz` in file
    order (descending); `antenna_positions` (117, 3) ECEF metres relative to the site;
    `visdata` and `nsamples` of shape (Nblts, Nfreqs, Npols).
    """
    import h5py

    times_jd = np.asarray(times_jd, float)
    n_times, n_bls, n_freqs = times_jd.size, len(ant_1), len(freqs_hz)
    n_blts = n_times * n_bls
    visdata = np.asarray(visdata, np.complex64).reshape(n_blts, 1, n_freqs, len(POLARIZATIONS))
    nsamples = np.asarray(nsamples, np.float32).reshape(visdata.shape)
    n_ants_data = np.unique(np.concatenate([ant_1, ant_2])).size
    delays = (
        np.zeros(2 * N_STATIONS, int)
        if applied_delays_ns is None
        else np.asarray(applied_delays_ns, int)
    )
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            h = fh.create_group("Header")
            h["latitude"] = np.float64(inst.SITE_LAT_DEG)
            h["longitude"] = np.float64(inst.SITE_LON_DEG)
            h["altitude"] = np.float64(inst.SITE_HEIGHT_M)
            h["telescope_name"] = np.bytes_(TELESCOPE_NAME)
            h["instrument"] = np.bytes_(INSTRUMENT)
            h["object_name"] = np.bytes_(OBJECT_NAME)
            h["phase_type"] = np.bytes_("drift")
            h["history"] = np.bytes_(history)
            h["vis_units"] = np.bytes_("uncalib")
            h["Nants_telescope"] = np.int64(N_STATIONS)
            h["antenna_names"] = np.array([str(k + 1) for k in range(N_STATIONS)], dtype="S4")
            h["antenna_numbers"] = np.arange(N_STATIONS, dtype=np.int64)
            h["antenna_positions"] = np.asarray(antenna_positions, np.float64)
            h["antenna_diameters"] = np.full(N_STATIONS, inst.DISH_DIAMETER_M)
            h["Nants_data"] = np.int64(n_ants_data)
            h["Nbls"] = np.int64(n_bls)
            h["Nblts"] = np.int64(n_blts)
            h["Ntimes"] = np.int64(n_times)
            h["Nfreqs"] = np.int64(n_freqs)
            h["Nspws"] = np.int64(1)
            h["Npols"] = np.int64(len(POLARIZATIONS))
            h["ant_1_array"] = np.tile(np.asarray(ant_1, np.int64), n_times)
            h["ant_2_array"] = np.tile(np.asarray(ant_2, np.int64), n_times)
            h["time_array"] = np.repeat(times_jd, n_bls)
            h["integration_time"] = np.full(n_blts, integration_s)
            h["uvw_array"] = np.tile(np.asarray(uvw, np.float32), (n_times, 1))
            h["freq_array"] = np.asarray(freqs_hz, np.float64).reshape(1, n_freqs)
            h["channel_width"] = np.float64(channel_width_hz)
            h["spw_array"] = np.array([SPW_ID], np.int64)
            h["polarization_array"] = np.array(POLARIZATIONS, np.int64)
            ek = h.create_group("extra_keywords")
            ek[DEC_KEY] = np.float64(dec_rad)
            ek["ha_phase_center"] = np.float64(0.0)
            ek["phase_center_epoch"] = np.bytes_("HADEC")
            ek["fs_table"] = np.bytes_(fs_table)
            ek["applied_delays_ns"] = np.bytes_(" ".join(str(int(d)) for d in delays))
            d = fh.create_group("Data")
            chunks = (
                min(n_blts, max(1, 2**20 // (8 * n_freqs * 2))),
                1,
                n_freqs,
                len(POLARIZATIONS),
            )
            d.create_dataset("visdata", data=visdata, chunks=chunks)
            d.create_dataset("flags", data=np.zeros(visdata.shape, bool), chunks=chunks)
            d.create_dataset("nsamples", data=nsamples, chunks=chunks)
    return Path(path)
