"""Convert one group of UVH5 subband files into one CASA Measurement Set.

The subbands are combined in ascending frequency order into one spectral window and
phased to the meridian (hour angle 0 at the pointing declination) at the group
midpoint. The MS has DATA, MODEL_DATA (1+0j, as CASA's clearcal sets it),
CORRECTED_DATA (= DATA) and WEIGHT_SPECTRUM.

Two writers give the same MS:
- `write_ms_pyuvdata`: pyuvdata reads all subbands, phases and calls `write_ms`; the
  reference for correctness, but it holds the whole group (several copies) in memory.
- `write_ms_direct` (default): builds the MS skeleton and subtables from the group's
  metadata with pyuvdata's MS helpers, then reads and phases the subbands in parallel
  worker processes and writes each one's channels straight into the main table with
  python-casacore, so only a subband or two is ever in memory.
"""

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .atomic import atomic_output
from .instrument import SPEED_OF_LIGHT
from .manifest import read_header

log = logging.getLogger(__name__)

WRITERS = ("direct", "pyuvdata")


def meridian_phase_center(mid_jd, dec_deg):
    """ICRS (ra, dec) in radians of hour angle 0 at apparent declination `dec_deg`,
    seen from the site at Julian date `mid_jd`."""
    from astropy import units as u
    from astropy.coordinates import ICRS, HADec, SkyCoord
    from astropy.time import Time

    from .instrument import site_location

    obstime = Time(mid_jd, format="jd", scale="utc")
    frame = HADec(obstime=obstime, location=site_location())
    icrs = SkyCoord(ha=0 * u.hourangle, dec=dec_deg * u.deg, frame=frame).transform_to(ICRS())
    return float(icrs.ra.rad), float(icrs.dec.rad)


def _group_files_in_frequency_order(files):
    """Headers of the group's files sorted by frequency; checks they belong together."""
    headers = [read_header(f) for f in files]
    headers.sort(key=lambda h: h["freq_min_hz"])
    ref = headers[0]
    for h in headers[1:]:
        if h["n_times"] != ref["n_times"] or abs(h["start_jd"] - ref["start_jd"]) * 86400 > 1.0:
            raise ValueError(f"{h['path']}: times do not match {ref['path']} "
                             f"(Ntimes {h['n_times']} vs {ref['n_times']})")
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
        if not (np.array_equal(ant_1, ref[0]) and np.array_equal(ant_2, ref[1])
                and np.allclose(times, ref[2], rtol=0, atol=1e-7)):
            raise ValueError(f"{path}: baseline-time order differs from the group's other "
                             f"subbands (first: {paths[0]})")


def _phase_to_meridian(uvd, phase_center, name):
    ra, dec = phase_center
    uvd.phase(ra=ra, dec=dec, epoch="J2000", cat_name=name)


def _phased_metadata(paths, phase_center, name):
    """Metadata-only UVData of the whole group (ascending frequency), phased.

    All subbands share their baseline-time metadata (checked beforehand), so it is read
    from the first file and only the frequency axis is gathered from every header.
    """
    import h5py
    from pyuvdata import UVData

    meta = UVData.from_file(str(paths[0]), file_type="uvh5", read_data=False, run_check=False)
    freqs, widths = [], []
    for path in paths:
        with h5py.File(path, "r") as fh:
            freqs.append(np.ravel(fh["Header/freq_array"][()]))
            widths.append(np.ravel(fh["Header/channel_width"][()]) * np.ones(freqs[-1].size))
    freqs, widths = np.concatenate(freqs), np.concatenate(widths)
    order = np.argsort(freqs, kind="stable")
    meta.freq_array = freqs[order]
    meta.channel_width = widths[order]
    meta.Nfreqs = freqs.size
    meta.flex_spw_id_array = np.full(freqs.size, meta.spw_array[0], dtype=int)
    _phase_to_meridian(meta, phase_center, name)
    meta.scan_number_array = np.ones(meta.Nblts, dtype=int)
    return meta


def _read_visibilities(path):
    """(data, flags, nsamples, header arrays) of one UVH5 file, straight from HDF5;
    a damaged file raises OSError naming it."""
    try:
        return _read_hdf5_arrays(path)
    except (OSError, KeyError) as err:
        raise OSError(f"{path}: cannot read visibilities ({err})") from err


def _read_hdf5_arrays(path):
    import h5py

    with h5py.File(path, "r") as fh:
        vis = fh["Data/visdata"]
        if vis.dtype.names:
            raw = vis[()]
            data = raw["r"].astype(np.float32) + 1j * raw["i"].astype(np.float32)
        else:
            data = vis[()]
        hdr = fh["Header"]
        return {
            "data": data,
            "flag": fh["Data/flags"][()],
            "nsample": fh["Data/nsamples"][()],
            "freq_hz": np.ravel(hdr["freq_array"][()]),
            "ant_1": hdr["ant_1_array"][()],
            "ant_2": hdr["ant_2_array"][()],
            "time": hdr["time_array"][()],
            "w": 0.0 if _unprojected(hdr) else hdr["uvw_array"][:, 2],
        }


def _unprojected(header):
    """True when a UVH5 header says its data are unprojected (drift scan); pyuvdata then
    treats their w-term as 0 when phasing."""
    catalog = header.get("phase_center_catalog")
    if catalog is None:
        return not bool(header["phase_type"][()] == b"phased") if "phase_type" in header else True
    types = {catalog[k]["cat_type"][()] for k in catalog}
    return types == {b"unprojected"}


def _subband_job(path, new_w, pol_order, flip_conj):
    """Worker: read one subband and phase it, as pyuvdata's `phase` does: the data are
    multiplied by exp(-2 pi i (w_new - w_old) f / c). Channels come out ascending."""
    sub = _read_visibilities(path)
    order = np.argsort(sub["freq_hz"], kind="stable")
    freqs = sub["freq_hz"][order]
    delta_w = (np.asarray(new_w, dtype=np.float64) - sub["w"]).reshape(-1, 1)
    turns = delta_w * (1.0 / SPEED_OF_LIGHT) * freqs.reshape(1, -1)
    data = sub["data"][:, order, :]
    data *= np.exp((-1j * 2 * np.pi) * turns[:, :, None])
    data = data[:, :, pol_order]
    if flip_conj:
        data = np.conj(data)
    return {
        "path": str(path),
        "freq_hz": freqs,
        "data": data.astype(np.complex64, copy=False),
        "flag": sub["flag"][:, order, :][:, :, pol_order],
        "nsample": sub["nsample"][:, order, :][:, :, pol_order].astype(np.float32, copy=False),
    }


def _put_channels(ms, column, values, chan0):
    nrow, nchan, npol = values.shape
    ms.putcolslice(column, values, blc=[chan0, 0], trc=[chan0 + nchan - 1, npol - 1],
                   startrow=0, nrow=nrow)


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


def _init_ms(path, nchan, npol, chan_per_tile, cache_bytes=64 * 2**20):
    """Empty MS main table whose visibility columns have a fixed [nchan, npol] shape,
    so subbands can be written as channel slices in any order.

    Tiles span one subband's channels and ~1 MB, and each column's tile cache is capped:
    writing a subband then touches only its own tiles instead of pulling whole columns
    into memory.
    """
    from casacore import tables

    desc = tables.required_ms_desc("MAIN")
    for key in ("ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "FLAG_ROW"):
        desc[key].update(dataManagerGroup=key)
    for key in ("ARRAY_ID", "EXPOSURE", "FEED1", "FEED2", "FIELD_ID", "INTERVAL",
                "OBSERVATION_ID", "PROCESSOR_ID", "SCAN_NUMBER", "STATE_ID", "TIME",
                "TIME_CENTROID"):
        desc[key].update(dataManagerType="IncrementalStMan", dataManagerGroup=key)
    desc["UVW"].update(dataManagerType="TiledColumnStMan", dataManagerGroup="TiledUVW")
    desc["FLAG_CATEGORY"].update(dataManagerType="TiledShapeStMan",
                                 dataManagerGroup="TiledFlagCategory",
                                 keywords={"CATEGORY": np.array("baddata")})
    for key, group in (("WEIGHT", "TiledWgt"), ("SIGMA", "TiledSigma")):
        desc[key].update(dataManagerType="TiledShapeStMan", dataManagerGroup=group)
    del desc["FLAG"]
    columns = [("DATA", 0j, "complex"), ("MODEL_DATA", 0j, "complex"),
               ("CORRECTED_DATA", 0j, "complex"), ("WEIGHT_SPECTRUM", 0.0, "float"),
               ("FLAG", False, "boolean")]
    for name, value, vtype in columns:
        col = tables.makearrcoldesc(name, value, valuetype=vtype, shape=[nchan, npol],
                                    datamanagertype="TiledColumnStMan",
                                    datamanagergroup=f"Tiled_{name}")
        desc.update(tables.maketabdesc(col))
    rows_per_tile = max(64, 2**20 // (8 * npol * chan_per_tile))
    spec = {f"Tiled_{name}": {"DEFAULTTILESHAPE": np.int32([npol, chan_per_tile, rows_per_tile]),
                              "MAXIMUMCACHESIZE": cache_bytes}
            for name, _, _ in columns}
    return tables.default_ms(str(path), desc, tables.makedminfo(desc, spec))


def _subbands(paths, new_w, pol_order, flip_conj, workers):
    """Yield each subband's phased arrays in order; in `workers` processes when > 1."""
    args = (new_w, pol_order, flip_conj)
    if workers <= 1:
        for p in paths:
            yield _subband_job(p, *args)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(_subband_job, p, *args) for p in paths[:workers]]
        for i in range(len(paths)):
            result = pending[i].result()
            if i + workers < len(paths):
                pending.append(pool.submit(_subband_job, paths[i + workers], *args))
            yield result


def write_ms_direct(files, ms_path, group_name, workers=2):
    """Write the group's MS subband by subband (see module docstring)."""
    from casacore import tables
    from pyuvdata import utils as uvutils
    from pyuvdata.utils.io import ms as ms_utils

    headers = _group_files_in_frequency_order(files)
    paths = [h["path"] for h in headers]
    mid_jd = (min(h["start_jd"] for h in headers) + max(h["end_jd"] for h in headers)) / 2
    phase_center = meridian_phase_center(mid_jd, headers[0]["dec_deg"])
    meta = _phased_metadata(paths, phase_center, group_name)
    pol_order = uvutils.pol.determine_pol_order(meta.polarization_array, order="CASA")
    flip_conj = bool(np.all(meta.ant_1_array <= meta.ant_2_array))
    if not flip_conj and np.any(meta.ant_1_array > meta.ant_2_array) and np.any(meta.ant_1_array < meta.ant_2_array):
        raise ValueError(f"{paths[0]}: baselines mix conjugation states; not supported")
    chan0 = {p: int(np.searchsorted(meta.freq_array, h["freq_min_hz"])) for p, h in zip(paths, headers)}

    with atomic_output(ms_path) as tmp:
        with _init_ms(tmp, meta.Nfreqs, meta.Npols, headers[0]["n_freqs"]) as ms:
            ms.addrows(meta.Nblts)
            _write_main_rows(ms, meta, flip_conj)
            for sub in _subbands(paths, meta.uvw_array[:, 2], pol_order, flip_conj, workers):
                c0 = chan0[sub["path"]]
                _put_channels(ms, "DATA", sub["data"], c0)
                _put_channels(ms, "CORRECTED_DATA", sub["data"], c0)
                _put_channels(ms, "MODEL_DATA", np.ones_like(sub["data"]), c0)
                _put_channels(ms, "FLAG", sub["flag"], c0)
                _put_channels(ms, "WEIGHT_SPECTRUM", sub["nsample"], c0)
                log.info("%s: wrote %s (channels %d-%d)", group_name, Path(sub["path"]).name,
                         c0, c0 + sub["data"].shape[1] - 1)
            _write_weights(ms, meta.Nblts)
            ms.putcolkeyword("DATA", "QuantumUnits", meta.vis_units)
            if meta.extra_keywords:
                ms.putkeyword("pyuvdata_extra", meta.extra_keywords)
            ms.putkeyword("pyuvdata_flip_conj", flip_conj)
        tmp = str(tmp)
        ms_utils.write_ms_antenna(tmp, uvobj=meta)
        ms_utils.write_ms_data_description(tmp, uvobj=meta)
        ms_utils.write_ms_feed(tmp, uvobj=meta)
        ms_utils.write_ms_field(tmp, uvobj=meta)
        ms_utils.write_ms_history(tmp, uvobj=meta)
        ms_utils.write_ms_observation(tmp, uvobj=meta)
        ms_utils.write_ms_pointing(tmp, uvobj=meta)
        ms_utils.write_ms_polarization(tmp, pol_order=uvutils.tools.slicify(pol_order, allow_empty=True),
                                       uvobj=meta)
        ms_utils.write_ms_source(tmp, uvobj=meta)
        ms_utils.write_ms_spectral_window(tmp, uvobj=meta)
        tables.table(tmp, ack=False).close()
    return ms_path


def write_ms_pyuvdata(files, ms_path, group_name):
    """Reference writer: pyuvdata reads all subbands, phases and writes the MS."""
    from pyuvdata import UVData

    headers = _group_files_in_frequency_order(files)
    paths = [h["path"] for h in headers]
    uvd = UVData.from_file(paths, file_type="uvh5", axis="freq", run_check=False)
    uvd.reorder_freqs(channel_order="freq")
    mid_jd = (min(h["start_jd"] for h in headers) + max(h["end_jd"] for h in headers)) / 2
    _phase_to_meridian(uvd, meridian_phase_center(mid_jd, headers[0]["dec_deg"]), group_name)
    uvd.scan_number_array = np.ones(uvd.Nblts, dtype=int)
    with atomic_output(ms_path) as tmp:
        uvd.write_ms(str(tmp), model_data=np.ones_like(uvd.data_array),
                     corrected_data=uvd.data_array.copy(), run_check=False)
    return ms_path


def convert_group(files, ms_path, group_name, writer="direct", workers=2):
    """Convert one group's subband files into `ms_path` with the chosen writer."""
    if writer not in WRITERS:
        raise ValueError(f"unknown MS writer {writer!r}; choose one of {WRITERS}")
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"group {group_name}: input files missing: {missing}")
    t0 = time.perf_counter()
    log.info("%s: converting %d subband files with the %s writer", group_name, len(files), writer)
    if writer == "direct":
        write_ms_direct(files, ms_path, group_name, workers=workers)
    else:
        write_ms_pyuvdata(files, ms_path, group_name)
    log.info("%s: wrote %s in %.1f s", group_name, ms_path, time.perf_counter() - t0)
    return ms_path


def _run(args):
    files = args.files
    if args.manifest:
        from .manifest import read_groups

        groups = read_groups(args.manifest)
        row = groups[groups.group == args.group]
        if row.empty:
            raise ValueError(f"{args.manifest}: no group {args.group!r} in the manifest")
        files = list(row.iloc[0].files)
    if not files:
        raise ValueError("give the group's files or --manifest")
    convert_group(files, args.out, args.group, writer=args.writer, workers=args.workers)


def register_cli(sub):
    p = sub.add_parser("convert", help="convert one group of UVH5 subband files to an MS")
    p.add_argument("files", nargs="*", help="the group's subband files (any order)")
    p.add_argument("--manifest", help="take the group's files from this groups.parquet")
    p.add_argument("--group", required=True, help="group name (also the MS field name)")
    p.add_argument("--out", required=True, help="Measurement Set to write")
    p.add_argument("--writer", choices=WRITERS, default="direct")
    p.add_argument("--workers", type=int, default=2, help="subbands read in parallel")
    p.set_defaults(func=_run)
