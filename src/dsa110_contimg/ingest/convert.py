"""Convert one group of raw UVH5 subband files into one CASA Measurement Set.

The raw files (uvh5.py) are fringe-stopped by the correlator at every integration toward
s_m = (hour angle 0, phase_center_dec): V_file = S A exp(+2 pi i b.(s - s_m) f / c), with
b = x_ant2 - x_ant1 (pyuvdata's convention) and w_m = b.s_m. The MS is phased to one ICRS
centre s0, the meridian at the group midpoint (astrometry.meridian_phase_center):

    V_ms = V_file exp(-2 pi i (w_new(t) - w_m) f / c),   w_new(t) = b.s0_app(t),

with UVW toward s0. Both w come from pyuvdata's own geometry: the file's rows get a
driftscan (azimuth/elevation) phase centre at the meridian of the pointing declination,
their uvw are recomputed from the station table (the file's antenna positions and float32
uvw are not trusted), and pyuvdata's `phase` gives w_new. Treating the files as
unprojected (zenith) drift data would take w_m = 0 and apply the w-term twice.

Rows the correlator wrote with ant_1 > ant_2 are first conjugated (data conjugated,
antennas swapped, uvw negated), as pyuvdata's `conjugate_bls("ant1<ant2")` does.
NaN/Inf visibilities and nsamples <= 0 are flagged with zero weight (their DATA set to
0): an MS never carries a NaN or negative weight. The subbands are combined in ascending
frequency order into one spectral window. The MS has DATA, MODEL_DATA (1+0j, as CASA's
clearcal sets it), CORRECTED_DATA (= DATA) and WEIGHT_SPECTRUM (= nsamples). The group is
flagged at full resolution, then adjacent channels are averaged up to
MAX_CHANNEL_WIDTH_KHZ, both in memory before the MS is written once (`flag_and_average`).

Two writers give the same MS:
- `write_ms_pyuvdata`: pyuvdata reads all subbands, is told the true phase centre,
  phases and calls `write_ms`; the reference for correctness, but it holds the whole
  group (several copies) in memory.
- `write_ms_direct` (default): reads and phases the subbands in parallel worker
  processes into one full-band array (the group once: 2.2 GB at full size), and writes
  the main table with python-casacore and the subtables from the group's metadata with
  pyuvdata's MS helpers.
"""

import json
import logging
import mmap
import multiprocessing
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from dsa110_contimg.astrometry import (
    earth_orientation,
    meridian_altaz,
    meridian_phase_center,
    site_ecef,
)
from dsa110_contimg.atomic import atomic_output
from dsa110_contimg.ingest.stations import itrf_positions, load_stations
from dsa110_contimg.ingest.uvh5 import read_header, read_visibilities
from dsa110_contimg.instrument import SPEED_OF_LIGHT
from dsa110_contimg.sanity import Product, check_ms

log = logging.getLogger(__name__)

WRITERS = ("direct", "pyuvdata")

MOUNT = "ALT-AZ"
"""ANTENNA::MOUNT of every dish: the DSA-110 dishes move in elevation along the meridian
(an alt-az mount held at one azimuth). CASA warns once per row and integration about any
mount it does not know (thousands of log lines per calibration solve)."""
MERIDIAN_CAT = "correlator meridian"

MAX_CHANNEL_WIDTH_KHZ = 1000.0
"""Adjacent channels are averaged after flagging up to this width (config
convert.max_channel_width_khz): the telescope's 244.14 kHz channels by 4, to 976.6 kHz.
Bandwidth smearing of a point source, 1 - I/I0 = 1 - 1.0645 erf(0.8326 x) / x with
x = (dnu / nu) (r / theta_b) (Gaussian beam, square channel), at 1311 MHz against the
36.6 arcsec minor axis of the full array's beam: 0.25% at the primary beam's half-power
radius (1.45 deg), 1.3% at the image edge (3.2 deg); the 12.88 s integrations already
smear 0.4% and 2.0% at those radii."""

FLIP_CONJ = True
"""The MS holds the conjugates of the ant_1 <= ant_2 visibilities, as pyuvdata writes."""

__all__ = ["convert_group", "meridian_phase_center", "write_ms_direct", "write_ms_pyuvdata"]


def _group_files_in_frequency_order(files):
    """Headers of the group's files sorted by frequency; checks they belong together."""
    headers = [read_header(f) for f in files]
    headers.sort(key=lambda h: h["freq_min_hz"])
    ref = headers[0]
    for h in headers[1:]:
        if h["n_times"] != ref["n_times"] or abs(h["start_jd"] - ref["start_jd"]) * 86400 > 1.0:
            raise ValueError(
                f"{h['path']}: times do not match {ref['path']} "
                f"(Ntimes {h['n_times']} vs {ref['n_times']})"
            )
        if abs(h["dec_rad"] - ref["dec_rad"]) > 1e-9:
            raise ValueError(
                f"{h['path']}: phase_center_dec {h['dec_deg']:.4f} deg differs from "
                f"{ref['path']} ({ref['dec_deg']:.4f} deg)"
            )
    _check_same_baselines([h["path"] for h in headers])
    return headers


def _check_same_baselines(paths):
    """All subbands must hold the same baselines and times in the same order."""
    import h5py

    def rows(path):
        with h5py.File(path, "r") as fh:
            hdr = fh["Header"]
            return hdr["ant_1_array"][()], hdr["ant_2_array"][()], hdr["time_array"][()]

    ref = rows(paths[0])
    for path in paths[1:]:
        ant_1, ant_2, times = rows(path)
        if not (
            np.array_equal(ant_1, ref[0])
            and np.array_equal(ant_2, ref[1])
            and np.allclose(times, ref[2], rtol=0, atol=1e-7)
        ):
            raise ValueError(
                f"{path}: baseline-time order differs from the group's other "
                f"subbands (first: {paths[0]})"
            )


def cache_pyuvdata_kernels():
    """Turn on numba's on-disk cache for pyuvdata's baseline-number kernels.

    pyuvdata compiles them without a cache, ~3-5 s in every process that reads a file
    (every convert job); cached, they load in ~50 ms. Same machine code, same results.
    """
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher
    from pyuvdata.utils import bls_numba

    for name in dir(bls_numba):
        kernel = getattr(bls_numba, name)
        if isinstance(kernel, Dispatcher) and isinstance(kernel._cache, NullCache):
            kernel.enable_caching()


def _read_uvh5(path, read_data=True):
    """pyuvdata's reading of one raw file. Its warning that the file's uvw (toward the
    meridian) do not match zenith uvw from the antenna positions is expected here."""
    from pyuvdata import UVData

    cache_pyuvdata_kernels()

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The uvw_array does not match the expected values"
        )
        return UVData.from_file(str(path), file_type="uvh5", read_data=read_data, run_check=False)


def _use_station_table(uvd):
    """Antenna positions (ECEF relative to the array centre) and names from the station
    table. The MS names stations DSA-NNN rather than the files' "1".."117": CASA would
    otherwise read a purely numeric antenna name (e.g. refant="1") as an index."""
    telescope = uvd.telescope
    table = load_stations()
    if not np.array_equal(
        np.asarray(telescope.antenna_names, dtype=str),
        table.station.astype(str).to_numpy()[telescope.antenna_numbers],
    ):
        raise ValueError(f"antenna names {telescope.antenna_names[:3]}... are not station numbers")
    telescope.antenna_names = table.name.to_numpy()[telescope.antenna_numbers].astype(str)
    centre = np.array(
        [
            telescope.location.x.to_value("m"),
            telescope.location.y.to_value("m"),
            telescope.location.z.to_value("m"),
        ]
    )
    positions = itrf_positions()
    if not np.allclose(centre, site_ecef(), atol=1.0):
        raise ValueError(f"telescope location {centre} m is not the DSA-110 site")
    telescope.antenna_positions = positions[telescope.antenna_numbers] - centre


def _conjugate_rows(uvd):
    """Indices of the rows with ant_1 > ant_2; swaps their antennas and negates their
    uvw in place (metadata only: the caller conjugates the visibilities)."""
    rows = np.nonzero(uvd.ant_1_array > uvd.ant_2_array)[0]
    uvd.ant_1_array[rows], uvd.ant_2_array[rows] = uvd.ant_2_array[rows], uvd.ant_1_array[rows]
    uvd.uvw_array[rows] *= -1
    uvd.baseline_array = uvd.antnums_to_baseline(uvd.ant_1_array, uvd.ant_2_array)
    return rows


def set_meridian_phase_center(uvd, dec_rad):
    """Tell pyuvdata what the correlator did: every row is phased to the driftscan
    direction azimuth/elevation of (hour angle 0, `dec_rad`), without touching the data;
    uvw are recomputed toward it from the antenna positions. Returns w_m (m)."""
    az, el = meridian_altaz(dec_rad, uvd.telescope.location.lat.rad)
    cat_id = uvd._add_phase_center(
        MERIDIAN_CAT, cat_type="driftscan", cat_lon=az, cat_lat=el, cat_frame="altaz"
    )
    uvd.phase_center_id_array = np.full(uvd.Nblts, cat_id, dtype=int)
    uvd._set_app_coords_helper()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Recalculating uvw_array without adjusting")
        uvd.set_uvws_from_antenna_positions(update_vis=False)
    return uvd.uvw_array[:, 2].copy()


def _phased_metadata(paths, headers, phase_center, name):
    """Metadata-only UVData of the whole group (ascending frequency), phased to the ICRS
    `phase_center`; returns it with w_m and the rows conjugated.

    All subbands share their baseline-time metadata (checked beforehand), so it is read
    from the first file and only the frequency axis is gathered from every header.
    """
    import h5py

    meta = _read_uvh5(paths[0], read_data=False)
    freqs, widths = [], []
    for path in paths:
        with h5py.File(path, "r") as fh:
            freqs.append(np.ravel(fh["Header/freq_array"][()]))
            widths.append(
                np.abs(np.ravel(fh["Header/channel_width"][()])) * np.ones(freqs[-1].size)
            )
    freqs, widths = np.concatenate(freqs), np.concatenate(widths)
    order = np.argsort(freqs, kind="stable")
    meta.freq_array = freqs[order]
    meta.channel_width = widths[order]
    meta.Nfreqs = freqs.size
    meta.flex_spw_id_array = np.full(freqs.size, meta.spw_array[0], dtype=int)
    _use_station_table(meta)
    conj_rows = _conjugate_rows(meta)
    w_m = set_meridian_phase_center(meta, headers[0]["dec_rad"])
    meta.phase(ra=phase_center[0], dec=phase_center[1], epoch="J2000", cat_name=name)
    meta.scan_number_array = np.ones(meta.Nblts, dtype=int)
    return meta, w_m, conj_rows


def flag_bad_samples(data, flag, nsample):
    """Flag NaN/Inf visibilities and nsamples <= 0 (or NaN) with zero weight, in place:
    their data become 0 and their nsamples 0. Returns the number of samples flagged."""
    bad = ~np.isfinite(data) | ~(nsample > 0)
    data[bad] = 0
    flag |= bad
    nsample[bad] = 0
    return int(bad.sum())


_GROUP = {}
"""The full-band arrays (data, flag, nsample) that `_subband_job` fills: in shared memory
created before the worker processes are forked, so a subband never travels by pipe."""


def _shared_array(shape, dtype):
    """A zeroed array in anonymous shared memory (MAP_SHARED): processes forked after its
    creation write into the same pages."""
    dtype = np.dtype(dtype)
    buffer = mmap.mmap(-1, max(1, int(np.prod(shape)) * dtype.itemsize))
    return np.frombuffer(buffer, dtype, count=int(np.prod(shape))).reshape(shape)


def _subband_job(path, chan0, conj_rows, delta_w, pol_order, flip_conj):
    """Worker: read one subband, conjugate the correlator's ant_1 > ant_2 rows, rephase
    by exp(-2 pi i (w_new - w_m) f / c), flag bad samples, and put its channels
    (ascending) into the group's arrays from channel `chan0` on."""
    from dsa110_contimg.visibility_kernels import place_subband

    sub = read_visibilities(path)
    order = np.argsort(sub["freq_hz"], kind="stable")
    freqs = sub["freq_hz"][order]
    conj = np.zeros(len(sub["data"]), dtype=bool)
    conj[conj_rows] = True
    n_bad = place_subband(
        sub["data"],
        sub["flag"],
        sub["nsample"],
        order,
        np.asarray(pol_order),
        conj,
        np.asarray(delta_w, dtype=np.float64) * (1.0 / SPEED_OF_LIGHT),
        freqs,
        flip_conj,
        chan0,
        (_GROUP["data"], _GROUP["flag"], _GROUP["nsample"]),
    )
    channels = slice(chan0, chan0 + freqs.size)
    return {"path": str(path), "channels": (channels.start, channels.stop), "n_bad": n_bad}


def _write_main_rows(ms, meta, flip_conj):
    """Per-row (baseline-time) columns of the main table, as pyuvdata's write_ms does."""
    from astropy.time import Time

    times, inverse = np.unique(meta.time_array, return_inverse=True)
    ms.putcol("TIME", (Time(times, format="jd", scale="utc").mjd * 86400.0)[inverse])
    ms.putcol("TIME_CENTROID", (Time(times, format="jd", scale="utc").mjd * 86400.0)[inverse])
    ms.putcol("ANTENNA1", meta.ant_1_array)
    ms.putcol("ANTENNA2", meta.ant_2_array)
    ms.putcol("INTERVAL", meta.integration_time)
    ms.putcol("EXPOSURE", meta.integration_time)
    ms.putcol("DATA_DESC_ID", np.zeros(meta.Nblts, dtype=int))
    ms.putcol("SCAN_NUMBER", meta.scan_number_array)
    ms.putcol("FIELD_ID", np.zeros(meta.Nblts, dtype=int))
    ms.putcol("UVW", meta.uvw_array * (-1 if flip_conj else 1))


def _write_weights(ms, nrow, chunk=50000):
    """WEIGHT = median WEIGHT_SPECTRUM over channels, SIGMA = WEIGHT^-1/2 (as pyuvdata)."""
    for start in range(0, nrow, chunk):
        n = min(chunk, nrow - start)
        spectrum = ms.getcol("WEIGHT_SPECTRUM", startrow=start, nrow=n)
        weight = np.median(spectrum, axis=1)
        sigma = np.zeros_like(weight)
        np.power(weight, -0.5, out=sigma, where=weight != 0)
        ms.putcol("WEIGHT", weight, startrow=start, nrow=n)
        ms.putcol("SIGMA", sigma, startrow=start, nrow=n)


def _init_ms(path, nchan, npol, cache_bytes=64 * 2**20):
    """Empty MS main table whose visibility columns have a fixed [nchan, npol] shape,
    tiled in ~1 MB tiles of whole spectra (the later stages read rows with all their
    channels), each column's tile cache capped.
    """
    from casacore import tables

    desc = tables.required_ms_desc("MAIN")
    for key in ("ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "FLAG_ROW"):
        desc[key].update(dataManagerGroup=key)
    for key in (
        "ARRAY_ID",
        "EXPOSURE",
        "FEED1",
        "FEED2",
        "FIELD_ID",
        "INTERVAL",
        "OBSERVATION_ID",
        "PROCESSOR_ID",
        "SCAN_NUMBER",
        "STATE_ID",
        "TIME",
        "TIME_CENTROID",
    ):
        desc[key].update(dataManagerType="IncrementalStMan", dataManagerGroup=key)
    desc["UVW"].update(dataManagerType="TiledColumnStMan", dataManagerGroup="TiledUVW")
    desc["FLAG_CATEGORY"].update(
        dataManagerType="TiledShapeStMan",
        dataManagerGroup="TiledFlagCategory",
        keywords={"CATEGORY": np.array("baddata")},
    )
    for key, group in (("WEIGHT", "TiledWgt"), ("SIGMA", "TiledSigma")):
        desc[key].update(dataManagerType="TiledShapeStMan", dataManagerGroup=group)
    del desc["FLAG"]
    columns = [(name, 0j, "complex") for name in ("DATA", "MODEL_DATA", "CORRECTED_DATA")] + [
        ("WEIGHT_SPECTRUM", 0.0, "float"),
        ("FLAG", False, "boolean"),
    ]
    for name, value, vtype in columns:
        col = tables.makearrcoldesc(
            name,
            value,
            valuetype=vtype,
            shape=[nchan, npol],
            datamanagertype="TiledColumnStMan",
            datamanagergroup=f"Tiled_{name}",
        )
        desc.update(tables.maketabdesc(col))
    rows_per_tile = max(16, 2**20 // (8 * npol * nchan))
    spec = {
        f"Tiled_{name}": {
            "DEFAULTTILESHAPE": np.int32([npol, nchan, rows_per_tile]),
            "MAXIMUMCACHESIZE": cache_bytes,
        }
        for name, _, _ in columns
    }
    return tables.default_ms(str(path), desc, tables.makedminfo(desc, spec))


def _subbands(paths, chan0, args, workers):
    """Run `_subband_job` on every subband, in `workers` forked processes when > 1;
    yields their results in order."""
    if workers <= 1:
        for path in paths:
            yield _subband_job(path, chan0[path], *args)
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        jobs = [pool.submit(_subband_job, path, chan0[path], *args) for path in paths]
        try:
            for job in jobs:
                yield job.result()
        finally:  # a failed subband stops the group: the others not started are dropped
            for job in jobs:
                job.cancel()


def _group_phase_center(headers):
    mid_jd = (min(h["start_jd"] for h in headers) + max(h["end_jd"] for h in headers)) / 2
    return meridian_phase_center(mid_jd, headers[0]["dec_deg"])


def _group_metadata(files, group_name):
    """The group's metadata (phased, see `_phased_metadata`), the subband files in
    frequency order with their first channel, the worker arguments (rows to conjugate,
    w_new - w_m, polarization order) and CASA's polarization order."""
    from pyuvdata import utils as uvutils

    earth_orientation()
    headers = _group_files_in_frequency_order(files)
    paths = [h["path"] for h in headers]
    meta, w_m, conj_rows = _phased_metadata(
        paths, headers, _group_phase_center(headers), group_name
    )
    pol_order = uvutils.pol.determine_pol_order(meta.polarization_array, order="CASA")
    chan0 = {
        p: int(np.searchsorted(meta.freq_array, h["freq_min_hz"])) for p, h in zip(paths, headers)
    }
    # all rows now have ant_1 <= ant_2: the MS holds their conjugates, as pyuvdata writes
    args = (conj_rows, meta.uvw_array[:, 2] - w_m, pol_order, FLIP_CONJ)
    return meta, paths, chan0, args, pol_order


def _read_subbands(meta, paths, chan0, args, group_name, workers):
    """The group's visibilities in MS layout, full band: (data, flag, nsample), rows in
    meta's order, channels ascending, CASA's polarization order, conjugated as the MS
    stores them. The subbands are read and phased in `workers` processes."""
    shape = (meta.Nblts, meta.Nfreqs, meta.Npols)
    for name, dtype in (("data", np.complex64), ("flag", bool), ("nsample", np.float32)):
        _GROUP[name] = _shared_array(shape, dtype)
    try:
        for sub in _subbands(paths, chan0, args, workers):
            if sub["n_bad"]:
                log.warning(
                    "%s: %s: %d samples NaN/Inf or nsamples <= 0, flagged with zero weight",
                    group_name,
                    sub["path"],
                    sub["n_bad"],
                )
            log.info(
                "%s: read %s (channels %d-%d)",
                group_name,
                Path(sub["path"]).name,
                sub["channels"][0],
                sub["channels"][1] - 1,
            )
        return _GROUP["data"], _GROUP["flag"], _GROUP["nsample"]
    finally:
        _GROUP.clear()


def _create_ms(path, meta, nchan):
    """The empty MS main table at `path`, visibility columns of `nchan` channels: created
    before the subbands are read, so the conversion's temporary is there from its start.
    Its rows are added when the visibilities are written (`_write_ms`): rows added now
    would have their empty tiles written out (~1.2 GB of zeros at full size) only to be
    overwritten."""
    _init_ms(path, nchan, meta.Npols).close()


def _write_ms(path, meta, data, flag, nsample, pol_order, chunk=20000):
    """Fill the MS at `path` (from `_create_ms`): its rows (times, antennas, UVW), the
    visibilities in MS layout: DATA, CORRECTED_DATA = DATA, MODEL_DATA = 1, FLAG,
    WEIGHT_SPECTRUM = nsample, then WEIGHT, SIGMA and the subtables from the (phased,
    averaged) metadata with pyuvdata's MS helpers."""
    from casacore import tables
    from pyuvdata import utils as uvutils
    from pyuvdata.utils.io import ms as ms_utils

    with tables.table(str(path), readonly=False, ack=False) as ms:
        ms.addrows(meta.Nblts)
        _write_main_rows(ms, meta, FLIP_CONJ)
        for start in range(0, meta.Nblts, chunk):
            n = min(chunk, meta.Nblts - start)
            rows = slice(start, start + n)
            ms.putcol("DATA", data[rows], start, n)
            ms.putcol("CORRECTED_DATA", data[rows], start, n)
            ms.putcol("MODEL_DATA", np.ones_like(data[rows]), start, n)
            ms.putcol("FLAG", flag[rows], start, n)
            ms.putcol("FLAG_ROW", flag[rows].all(axis=(1, 2)), start, n)
            ms.putcol("WEIGHT_SPECTRUM", nsample[rows], start, n)
        _write_weights(ms, meta.Nblts)
        ms.putcolkeyword("DATA", "QuantumUnits", meta.vis_units)
        if meta.extra_keywords:
            ms.putkeyword("pyuvdata_extra", meta.extra_keywords)
        ms.putkeyword("pyuvdata_flip_conj", FLIP_CONJ)
    tmp = str(path)
    ms_utils.write_ms_antenna(tmp, uvobj=meta)
    ms_utils.write_ms_data_description(tmp, uvobj=meta)
    ms_utils.write_ms_feed(tmp, uvobj=meta)
    ms_utils.write_ms_field(tmp, uvobj=meta)
    ms_utils.write_ms_history(tmp, uvobj=meta)
    ms_utils.write_ms_observation(tmp, uvobj=meta)
    ms_utils.write_ms_pointing(tmp, uvobj=meta)
    ms_utils.write_ms_polarization(
        tmp, pol_order=uvutils.tools.slicify(pol_order, allow_empty=True), uvobj=meta
    )
    ms_utils.write_ms_source(tmp, uvobj=meta)
    ms_utils.write_ms_spectral_window(tmp, uvobj=meta)
    with tables.table(f"{tmp}/ANTENNA", readonly=False, ack=False) as ant:
        ant.putcol("MOUNT", [MOUNT] * ant.nrows())
    tables.table(tmp, ack=False).close()


def write_ms_direct(files, ms_path, group_name, workers=2, flag=None, factor=1):
    """Write the group's MS at `ms_path` (see module docstring): its main table created
    first, then the subbands read and phased in `workers` processes into one full-band
    array, flagged and averaged by `factor` channels in memory (`flag_and_average`), and
    written once. The process and its workers keep freed memory for reuse
    (`memory.keep_freed_memory`): each subband's arrays are then not faulted in afresh."""
    from dsa110_contimg.memory import keep_freed_memory

    keep_freed_memory()
    meta, paths, chan0, args, pol_order = _group_metadata(files, group_name)
    _create_ms(ms_path, meta, meta.Nfreqs // factor)
    data, flag_array, nsample = _read_subbands(meta, paths, chan0, args, group_name, workers)
    data, flag_array, nsample = flag_and_average(
        meta, data, flag_array, nsample, group_name, flag, factor
    )
    _write_ms(ms_path, meta, data, flag_array, nsample, pol_order)
    return ms_path


def read_group_pyuvdata(files, treat_as_zenith=False):
    """The group as one pyuvdata UVData (ascending frequency), told the truth about the
    data: station-table positions, rows conjugated to ant_1 <= ant_2 by pyuvdata, and the
    correlator's meridian phase centre (`set_meridian_phase_center`). With
    `treat_as_zenith` the files are left as pyuvdata reads them (unprojected drift data):
    the wrong treatment, kept to show what it costs. Returns (uvd, headers)."""
    earth_orientation()
    headers = _group_files_in_frequency_order(files)
    paths = [h["path"] for h in headers]
    parts = []
    for path in paths:
        part = _read_uvh5(path)
        part.uvw_array = part.uvw_array.astype(np.float64)  # float32 in the files
        part.channel_width = np.abs(part.channel_width)
        parts.append(part)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The uvw_array does not match the expected values"
        )
        uvd = (
            parts[0].fast_concat(parts[1:], axis="freq", run_check=False)
            if len(parts) > 1
            else parts[0]
        )
    del parts
    uvd.reorder_freqs(channel_order="freq")
    _use_station_table(uvd)
    uvd.conjugate_bls("ant1<ant2")
    if treat_as_zenith:
        uvd.set_uvws_from_antenna_positions()
    else:
        set_meridian_phase_center(uvd, headers[0]["dec_rad"])
    return uvd, headers


def write_ms_pyuvdata(files, ms_path, group_name, treat_as_zenith=False, flag=None, factor=1):
    """Reference writer: pyuvdata reads all subbands (`read_group_pyuvdata`), phases to
    the group's meridian, flags and averages (`flag_and_average`, on pyuvdata's arrays)
    and calls `write_ms` at `ms_path`; bad samples flagged as the direct writer does."""
    from casacore import tables

    uvd, headers = read_group_pyuvdata(files, treat_as_zenith)
    flag_bad_samples(uvd.data_array, uvd.flag_array, uvd.nsample_array)
    ra, dec = _group_phase_center(headers)
    uvd.phase(ra=ra, dec=dec, epoch="J2000", cat_name=group_name)
    uvd.scan_number_array = np.ones(uvd.Nblts, dtype=int)
    # flagged as the MS holds the data (conjugated), so that both writers flag alike
    data, uvd.flag_array, uvd.nsample_array = flag_and_average(
        uvd, np.conj(uvd.data_array), uvd.flag_array, uvd.nsample_array, group_name, flag, factor
    )
    uvd.data_array = np.conj(data)
    uvd.write_ms(
        str(ms_path),
        model_data=np.ones_like(uvd.data_array),
        corrected_data=uvd.data_array.copy(),
        run_check=False,
    )
    with tables.table(str(ms_path), readonly=False, ack=False) as ms:
        ms.putcol("FLAG_ROW", ms.getcol("FLAG").all(axis=(1, 2)))
        # write_ms leaves SIGMA of zero-weight rows uninitialized (numpy `where` without
        # `out`): WEIGHT and SIGMA as the direct writer computes them
        _write_weights(ms, ms.nrows())
    return ms_path


def channel_average_factor(chan_width_hz, per_subband, max_width_hz):
    """Channels averaged into one: the largest k that divides a subband's `per_subband`
    channels with k x chan_width_hz <= max_width_hz (1: none). Averaging never crosses a
    subband edge."""
    if max_width_hz <= 0:
        return 1
    limit = min(int(max_width_hz // abs(chan_width_hz)), per_subband)
    return max(k for k in range(1, max(limit, 1) + 1) if per_subband % k == 0)


def average_channels(data, flag, weight, factor):
    """Every `factor` adjacent channels averaged into one, as CASA's split averages
    (flag-aware): over the unflagged samples of a bin,

        V = sum(w_i V_i) / sum(w_i),   W = sum(w_i);

    a bin without unflagged weight is flagged with V = 0 and W = 0. Returns new
    (data, flag, weight)."""
    from dsa110_contimg.visibility_kernels import average_bins

    nrow, nchan, npol = data.shape
    shape = (nrow, nchan // factor, npol)
    out = np.empty(shape, np.complex64), np.empty(shape, bool), np.empty(shape, np.float32)
    average_bins(data, flag, weight, factor, *out)
    return out


def average_frequency_axis(meta, factor):
    """The UVData's frequency axis averaged by `factor` channels: centres averaged,
    widths summed."""
    meta.freq_array = meta.freq_array.reshape(-1, factor).mean(axis=1)
    meta.channel_width = meta.channel_width.reshape(-1, factor).sum(axis=1)
    meta.flex_spw_id_array = meta.flex_spw_id_array[::factor]
    meta.Nfreqs = meta.freq_array.size


def flag_and_average(meta, data, flag, nsample, group_name, flag_spec=None, factor=1):
    """Flag the group's visibilities at full resolution (with `flag_spec` = (flagging
    settings, QA json, QA png, product name): bad samples, dead antennas, RFI; the QA
    record written), then average `factor` adjacent channels (`average_channels`, meta's
    frequency axis with them). Arrays in the writer's layout (rows x channels x
    polarizations, rows in meta's order); returns (data, flag, nsample)."""
    if flag_spec is not None:
        from dsa110_contimg.flagging import flag_visibilities, record_flags

        settings, qa_json, qa_png, product = flag_spec
        flag, stats = flag_visibilities(
            data, flag, nsample, meta.ant_1_array, meta.ant_2_array, meta.time_array, settings
        )
        stats["freq_mhz"] = (meta.freq_array / 1e6).tolist()
        record_flags(stats, product, group_name, qa_json, qa_png, settings)
    if factor > 1:
        t0 = time.perf_counter()
        n_in, width = meta.Nfreqs, abs(meta.channel_width[0])
        data, flag, nsample = average_channels(data, flag, nsample, factor)
        average_frequency_axis(meta, factor)
        log.info(
            "%s: averaged %d channels of %.1f kHz into %d of %.1f kHz in %.1f s",
            group_name,
            n_in,
            width / 1e3,
            meta.Nfreqs,
            factor * width / 1e3,
            time.perf_counter() - t0,
        )
    return data, flag, nsample


def convert_group(
    files,
    ms_path,
    group_name,
    writer="direct",
    workers=2,
    flag=None,
    max_channel_width_khz=MAX_CHANNEL_WIDTH_KHZ,
):
    """Convert one group's subband files into `ms_path` with the chosen writer.

    With `flag` = (flagging.FlagSettings, QA json path, QA png path) the MS is flagged
    (bad samples, dead antennas, RFI) before it is renamed into place, so an unflagged MS
    never looks finished. Flagging sees the full resolution; then adjacent channels are
    averaged up to `max_channel_width_khz` (see MAX_CHANNEL_WIDTH_KHZ), which makes every
    later stage read that many times fewer visibilities.
    """
    if writer not in WRITERS:
        raise ValueError(f"unknown MS writer {writer!r}; choose one of {WRITERS}")
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"group {group_name}: input files missing: {missing}")
    t0 = time.perf_counter()
    log.info("%s: converting %d subband files with the %s writer", group_name, len(files), writer)
    first = read_header(files[0])
    width, per_subband = first["channel_width_hz"], first["n_freqs"]
    factor = channel_average_factor(width, per_subband, max_channel_width_khz * 1e3)
    with atomic_output(ms_path) as tmp:
        flag_spec = None if flag is None else (*flag, ms_path)
        if writer == "direct":
            write_ms_direct(files, tmp, group_name, workers, flag_spec, factor)
        else:
            write_ms_pyuvdata(files, tmp, group_name, flag=flag_spec, factor=factor)
        source = f"group {group_name} ({len(files)} subband files in {Path(files[0]).parent})"
        check_ms(tmp, Product(Path(ms_path), "convert", group_name, source))
    log.info("%s: %s done in %.1f s", group_name, ms_path, time.perf_counter() - t0)
    return ms_path


def _run(args):
    files = args.files
    if args.manifest:
        from dsa110_contimg.ingest.manifest import read_groups

        groups = read_groups(args.manifest)
        row = groups[groups.group == args.group]
        if row.empty:
            raise ValueError(f"{args.manifest}: no group {args.group!r} in the manifest")
        files = list(row.iloc[0].files)
    if not files:
        raise ValueError("give the group's files or --manifest")
    flag = None
    if args.flag_qa_json:
        from dsa110_contimg.flagging import FlagSettings

        section = json.loads(args.flag_config_json) if args.flag_config_json else {}
        flag = (FlagSettings.from_config(section), args.flag_qa_json, args.flag_qa_png)
    convert_group(
        files,
        args.out,
        args.group,
        writer=args.writer,
        workers=args.workers,
        flag=flag,
        max_channel_width_khz=args.max_channel_width_khz,
    )


def register_cli(sub):
    p = sub.add_parser("convert", help="convert one group of UVH5 subband files to an MS")
    p.add_argument("files", nargs="*", help="the group's subband files (any order)")
    p.add_argument("--manifest", help="take the group's files from this groups.parquet")
    p.add_argument("--group", required=True, help="group name (also the MS field name)")
    p.add_argument("--out", required=True, help="Measurement Set to write")
    p.add_argument("--writer", choices=WRITERS, default="direct")
    p.add_argument("--workers", type=int, default=2, help="subbands read in parallel")
    p.add_argument(
        "--flag-qa-json",
        help="flag the MS before it is renamed into place and write the flagging QA record here",
    )
    p.add_argument("--flag-qa-png", help="the flagging QA plot (with --flag-qa-json)")
    p.add_argument("--flag-config-json", help="the config section `flag` as JSON")
    p.add_argument(
        "--max-channel-width-khz",
        type=float,
        default=MAX_CHANNEL_WIDTH_KHZ,
        help="average adjacent channels after flagging up to this width (0: none)",
    )
    p.set_defaults(func=_run)
