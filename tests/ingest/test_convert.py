"""Convert: the direct writer's MS equals pyuvdata's reference MS once pyuvdata is told the
correlator's meridian phase centre (and differs grossly if the files are taken for
zenith-phased drift data); bad samples are flagged with zero weight; CASA reads the MS;
a failed conversion leaves nothing that looks finished."""

import numpy as np
import pytest
from casacore import tables

from dsa110_contimg.astrometry import meridian_phase_center
from dsa110_contimg.casaenv import casatasks, casatools
from dsa110_contimg.ingest.convert import convert_group, write_ms_pyuvdata
from dsa110_contimg.ingest.manifest import build_manifest, find_archive_files

RTOL = 1e-6


@pytest.fixture(scope="module")
def group(small_archive):
    groups, _ = build_manifest(find_archive_files(small_archive))
    return groups.iloc[0]


@pytest.fixture(scope="module")
def ms_pair(group, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert")
    direct = convert_group(
        list(group.files), tmp / "direct.ms", group.group, writer="direct", workers=2
    )
    reference = convert_group(list(group.files), tmp / "ref.ms", group.group, writer="pyuvdata")
    return direct, reference


def _sorted_main(ms):
    with tables.table(str(ms), ack=False) as t:
        cols = {
            c: t.getcol(c)
            for c in (
                "TIME",
                "ANTENNA1",
                "ANTENNA2",
                "UVW",
                "DATA",
                "MODEL_DATA",
                "CORRECTED_DATA",
                "WEIGHT_SPECTRUM",
                "FLAG",
                "WEIGHT",
                "SIGMA",
            )
        }
    order = np.lexsort((cols["ANTENNA2"], cols["ANTENNA1"], cols["TIME"]))
    return {k: v[order] for k, v in cols.items()}


def _max_rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def _cross(main, key):
    return main[key][main["ANTENNA1"] != main["ANTENNA2"]]


def test_direct_ms_equals_pyuvdata_reference(ms_pair):
    direct, reference = (_sorted_main(m) for m in ms_pair)
    for key in ("TIME", "ANTENNA1", "ANTENNA2", "FLAG"):
        assert np.array_equal(direct[key], reference[key]), key
    for key in (
        "DATA",
        "CORRECTED_DATA",
        "MODEL_DATA",
        "UVW",
        "WEIGHT_SPECTRUM",
        "WEIGHT",
        "SIGMA",
    ):
        assert _max_rel(direct[key], reference[key]) < RTOL, key
    freqs = []
    for ms in ms_pair:
        with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
            freqs.append(t.getcol("CHAN_FREQ")[0])
    assert _max_rel(freqs[0], freqs[1]) < RTOL
    assert np.all(np.diff(freqs[0]) > 0), "channels ascend in frequency"
    assert freqs[0].size == 32


def test_treating_the_files_as_zenith_drift_data_is_far_off(ms_pair, group, tmp_path):
    """The same comparison fails by a wide margin when pyuvdata takes the files for
    unprojected (zenith) drift data: the w toward the meridian (hundreds of turns on the
    north-south baselines at Dec +54.6) is then applied a second time."""
    from dsa110_contimg.ingest.convert import read_group_pyuvdata

    zenith = write_ms_pyuvdata(
        list(group.files), tmp_path / "zenith.ms", group.group, treat_as_zenith=True
    )
    reference, wrong = _sorted_main(ms_pair[1]), _sorted_main(zenith)
    assert _max_rel(wrong["UVW"], reference["UVW"]) < RTOL, "same uvw: only the phases differ"
    error = _max_rel(_cross(wrong, "DATA"), _cross(reference, "DATA"))
    print(f"zenith treatment: max relative error of cross-correlations {error:.2f}")
    assert error > 0.5, "more than 5e5 times the 1e-6 tolerance"
    uvd, _ = read_group_pyuvdata(list(group.files))
    turns = np.abs(uvd.uvw_array[:, 2]).max() * uvd.freq_array.max() / 299792458.0
    assert turns > 300, f"w toward the meridian is {turns:.0f} turns at most"


def test_ms_is_phased_to_meridian_at_midpoint(ms_pair, group):
    ra, dec = meridian_phase_center(
        (group.start_mjd + group.end_mjd) / 2 + 2400000.5, group.dec_deg
    )
    with tables.table(f"{ms_pair[0]}/FIELD", ack=False) as t:
        phase_dir = t.getcol("PHASE_DIR")[0, 0]
        name = t.getcol("NAME")[0]
    assert np.degrees(np.hypot((phase_dir[0] - ra) * np.cos(dec), phase_dir[1] - dec)) * 3600 < 0.1
    assert name == group.group
    assert abs(np.degrees(dec) - group.dec_deg) < 0.5


def test_casa_reads_the_ms(ms_pair):
    ms_tool = casatools().ms()
    ms_tool.open(str(ms_pair[0]))
    summary = ms_tool.summary()
    ms_tool.close()
    assert summary["numrecords"] == 8 * 55
    assert summary["IntegrationTime"] == pytest.approx(8 * 12.885, abs=0.01)
    listing = casatasks().listobs(vis=str(ms_pair[0]), verbose=False)
    assert listing["nfields"] == 1
    assert listing["numrecords"] == 8 * 55
    assert listing["field_0"]["name"].startswith("2026-01-01T")


def test_only_correlated_antennas_are_in_the_main_table(ms_pair, small_archive):
    from dsa110_contimg.simulation.visibilities import load_truth

    meta, _, _ = load_truth(small_archive)
    stations = meta["correlated_stations"]
    with tables.table(str(ms_pair[0]), ack=False) as t:
        ants = set(np.concatenate([t.getcol("ANTENNA1"), t.getcol("ANTENNA2")]).tolist())
    assert ants == {s - 1 for s in stations} and len(ants) == 10
    with tables.table(f"{ms_pair[0]}/ANTENNA", ack=False) as t:
        assert t.nrows() == 117
        names = t.getcol("NAME")
        assert [names[s - 1] for s in stations] == [f"DSA-{s:03d}" for s in stations]
        assert set(t.getcol("MOUNT")) == {"ALT-AZ"}  # CASA knows it: no parAngle warnings


def _damage(files, n_bls):
    """NaN in the last integration of every subband, negative nsamples in sb03's first
    rows, channel_width stored negative and antenna positions scrambled in every file."""
    import h5py

    for path in files:
        with h5py.File(path, "r+") as fh:
            vis = fh["Data/visdata"]
            vis[-n_bls:] = np.complex64(complex(np.nan, np.nan))
            fh["Header/channel_width"][...] = -fh["Header/channel_width"][()]
            fh["Header/antenna_positions"][...] = fh["Header/antenna_positions"][()][::-1]
            if path.endswith("_sb03.hdf5"):
                ns = fh["Data/nsamples"]
                ns[:20] = -1.0


def test_bad_samples_are_flagged_with_zero_weight(group, archive_copy, ms_pair, tmp_path):
    files = [str(archive_copy / p.split("/")[-1]) for p in group.files]
    n_bls = 55
    _damage(files, n_bls)
    direct = convert_group(files, tmp_path / "bad.ms", group.group)
    reference = convert_group(files, tmp_path / "bad_ref.ms", group.group, writer="pyuvdata")
    d, r, clean = _sorted_main(direct), _sorted_main(reference), _sorted_main(ms_pair[0])
    for key in ("DATA", "UVW", "WEIGHT_SPECTRUM", "WEIGHT", "SIGMA"):
        assert np.all(np.isfinite(d[key])), key
        assert _max_rel(d[key], r[key]) < RTOL, key
    assert np.array_equal(d["FLAG"], r["FLAG"])
    assert np.all(d["WEIGHT_SPECTRUM"] >= 0) and np.all(d["WEIGHT"] >= 0)
    last = d["TIME"] == d["TIME"].max()
    assert last.sum() == n_bls
    assert d["FLAG"][last].all() and np.all(d["WEIGHT_SPECTRUM"][last] == 0)
    assert np.all(d["DATA"][last] == 0) and np.all(d["WEIGHT"][last] == 0)
    negative = d["FLAG"][~last]
    assert negative.sum() == 20 * 2 * 2, "20 rows x 2 channels x 2 pols of sb03"
    good = ~d["FLAG"]
    assert _max_rel(d["DATA"][good], clean["DATA"][good]) < RTOL, (
        "station table positions and |channel_width|: the damage changes nothing else"
    )
    assert _max_rel(d["UVW"], clean["UVW"]) < RTOL


def test_mismatched_subband_is_named(group, archive_copy, tmp_path):
    import h5py

    files = [str(archive_copy / p.split("/")[-1]) for p in group.files]
    with h5py.File(files[5], "r+") as fh:
        ants = fh["Header/ant_1_array"][()]
        fh["Header/ant_1_array"][...] = ants[::-1]
    out = tmp_path / "ms" / "broken.ms"
    with pytest.raises(ValueError, match=f"{files[5]}: baseline-time order differs"):
        convert_group(files, out, group.group)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_failure_while_writing_leaves_nothing(group, tmp_path, monkeypatch):
    import dsa110_contimg.ingest.convert as convert

    real_job, calls = convert._subband_job, []

    def failing_job(path, *args):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(f"{path}: No space left on device")
        return real_job(path, *args)

    monkeypatch.setattr(convert, "_subband_job", failing_job)
    out = tmp_path / "ms" / "group.ms"
    with pytest.raises(OSError, match="No space left"):
        convert_group(list(group.files), out, group.group, workers=1)
    assert len(calls) == 5
    assert list(out.parent.iterdir()) == [], "no MS and no partial directory left behind"


def test_channel_average_factor():
    """The telescope's 48 channels of 244.14 kHz per subband average by 4 to 976.6 kHz;
    channels already wider than the limit, or a limit of 0, are left alone; the factor
    always divides a subband's channels."""
    from dsa110_contimg.ingest.convert import channel_average_factor

    assert channel_average_factor(244140.625, 48, 1e6) == 4
    assert channel_average_factor(-244140.625, 48, 2e6) == 8
    assert channel_average_factor(732421.875, 16, 1e6) == 1
    assert channel_average_factor(244140.625, 48, 0) == 1
    assert channel_average_factor(244140.625, 5, 1.3e6) == 5
    assert channel_average_factor(244140.625, 6, 1.3e6) == 3  # 5 does not divide 6


def test_averaged_ms_is_the_weighted_mean_of_the_flagged_full_resolution(
    group, archive_copy, ms_pair, tmp_path
):
    """Channel pairs averaged after flagging: DATA (and CORRECTED_DATA) the
    WEIGHT_SPECTRUM-weighted mean of the unflagged samples, weights summed, a sample
    flagged only when both are, frequencies the pair's centre and width doubled; the
    damaged samples' zero weight never leaks into the mean."""
    import h5py

    files = [str(archive_copy / p.split("/")[-1]) for p in group.files]
    _damage(files, 3)
    with h5py.File(files[5], "r+") as fh:  # one channel of a pair: half-flagged pairs
        ns = fh["Data/nsamples"]
        ns[:30, ..., 0, :] = -1.0
    full = convert_group(files, tmp_path / "full.ms", group.group, max_channel_width_khz=0)
    avg = convert_group(files, tmp_path / "avg.ms", group.group, max_channel_width_khz=12000)
    a, b = _sorted_main(full), _sorted_main(avg)
    nrow, nchan, npol = a["DATA"].shape
    assert b["DATA"].shape == (nrow, nchan // 2, npol)
    w = np.where(a["FLAG"], 0.0, a["WEIGHT_SPECTRUM"]).reshape(nrow, nchan // 2, 2, npol)
    d = a["DATA"].reshape(nrow, nchan // 2, 2, npol)
    wsum = w.sum(axis=2)
    ok = wsum > 0
    mean = (w * d).sum(axis=2)[ok] / wsum[ok]
    assert np.max(np.abs(b["DATA"][ok] - mean)) / np.max(np.abs(mean)) < 1e-5
    np.testing.assert_allclose(b["WEIGHT_SPECTRUM"][ok], wsum[ok], rtol=1e-6)
    assert np.array_equal(b["FLAG"], a["FLAG"].reshape(nrow, nchan // 2, 2, npol).all(axis=2))
    assert np.array_equal(b["CORRECTED_DATA"], b["DATA"])
    assert np.all(b["MODEL_DATA"] == 1)
    assert (~ok).sum() > 0 and np.all(b["FLAG"][~ok]), "damaged pairs stay flagged"
    half = a["FLAG"].reshape(nrow, nchan // 2, 2, npol).sum(axis=2) == 1
    assert half.sum() == 30 * 2, "30 rows x 2 pols with one channel of a pair flagged"
    with tables.table(f"{full}::SPECTRAL_WINDOW", ack=False) as s:
        f_full, w_full = s.getcell("CHAN_FREQ", 0), s.getcell("CHAN_WIDTH", 0)
    with tables.table(f"{avg}::SPECTRAL_WINDOW", ack=False) as s:
        f_avg, w_avg = s.getcell("CHAN_FREQ", 0), s.getcell("CHAN_WIDTH", 0)
    np.testing.assert_allclose(f_avg, f_full.reshape(-1, 2).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(w_avg, 2 * w_full[::2], rtol=1e-12)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_flagging_in_memory_equals_flagging_the_written_ms(group, archive_copy, tmp_path):
    """Convert flags the group in memory before writing the MS; the flags, FLAG_ROW and
    the QA record's numbers are exactly those of flagging the unflagged MS on disk
    (`flag_group`), with damaged samples and a channel spiking on every third row."""
    import json

    import h5py

    from dsa110_contimg.flagging import FlagSettings, flag_group

    files = [str(archive_copy / p.split("/")[-1]) for p in group.files]
    _damage(files, 3)
    with h5py.File(files[7], "r+") as fh:
        vis = fh["Data/visdata"]
        spike = vis[:, :, 1, :]
        spike[::3] += 50
        vis[:, :, 1, :] = spike
    settings = FlagSettings(workers=1)
    memory = convert_group(
        files,
        tmp_path / "memory.ms",
        group.group,
        flag=(settings, tmp_path / "memory.json", tmp_path / "memory.png"),
    )
    disk = convert_group(files, tmp_path / "disk.ms", group.group)
    flag_group(disk, group.group, tmp_path / "disk.json", tmp_path / "disk.png", settings)
    a, b = _sorted_main(memory), _sorted_main(disk)
    assert np.array_equal(a["FLAG"], b["FLAG"])
    with tables.table(str(memory), ack=False) as m, tables.table(str(disk), ack=False) as d:
        assert np.array_equal(m.getcol("FLAG_ROW"), d.getcol("FLAG_ROW"))
    records = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("memory", "disk")]
    for key in ("metrics", "per_antenna", "per_channel", "per_integration", "freq_mhz"):
        assert records[0][key] == records[1][key], key
    metrics = records[0]["metrics"]
    assert metrics["rfi_fraction"] > 0.01, "the spiking channel is found"
    assert metrics["bad_fraction"] > 0.005, "the NaN rows and negative nsamples"


def test_unreadable_subband_in_a_worker_is_named(group, tmp_path, monkeypatch):
    """A subband whose visibilities cannot be read in a worker process fails the
    conversion with its file named, and nothing is left behind."""
    import dsa110_contimg.ingest.convert as convert

    files = sorted(group.files)
    real_read = convert.read_visibilities

    def failing_read(path):
        if path == files[3]:
            raise OSError(f"{path}: Data/visdata: can't read data")
        return real_read(path)

    monkeypatch.setattr(convert, "read_visibilities", failing_read)  # forked: workers see it
    out = tmp_path / "ms" / "group.ms"
    with pytest.raises(OSError, match=f"{files[3]}: Data/visdata"):
        convert_group(files, out, group.group, workers=2)
    assert list(out.parent.iterdir()) == []
