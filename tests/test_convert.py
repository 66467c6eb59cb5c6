"""Convert: the direct writer's MS equals pyuvdata's reference MS; CASA reads it;
a failed conversion leaves nothing that looks finished."""

import numpy as np
import pytest
from casacore import tables

from dsa110_contimg.casaenv import casatasks, casatools
from dsa110_contimg.convert import convert_group, meridian_phase_center
from dsa110_contimg.manifest import build_manifest, find_archive_files

RTOL = 1e-6


@pytest.fixture(scope="module")
def group(small_archive):
    groups, _ = build_manifest(find_archive_files(small_archive))
    return groups.iloc[0]


@pytest.fixture(scope="module")
def ms_pair(group, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert")
    direct = convert_group(list(group.files), tmp / "direct.ms", group.group, writer="direct", workers=2)
    reference = convert_group(list(group.files), tmp / "ref.ms", group.group, writer="pyuvdata")
    return direct, reference


def _sorted_main(ms):
    with tables.table(str(ms), ack=False) as t:
        cols = {c: t.getcol(c) for c in ("TIME", "ANTENNA1", "ANTENNA2", "UVW", "DATA",
                                          "MODEL_DATA", "CORRECTED_DATA", "WEIGHT_SPECTRUM",
                                          "FLAG", "WEIGHT", "SIGMA")}
    order = np.lexsort((cols["ANTENNA2"], cols["ANTENNA1"], cols["TIME"]))
    return {k: v[order] for k, v in cols.items()}


def _max_rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_direct_ms_equals_pyuvdata_reference(ms_pair):
    direct, reference = (_sorted_main(m) for m in ms_pair)
    for key in ("TIME", "ANTENNA1", "ANTENNA2", "FLAG"):
        assert np.array_equal(direct[key], reference[key]), key
    for key in ("DATA", "CORRECTED_DATA", "MODEL_DATA", "UVW", "WEIGHT_SPECTRUM", "WEIGHT", "SIGMA"):
        assert _max_rel(direct[key], reference[key]) < RTOL, key
    freqs = []
    for ms in ms_pair:
        with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
            freqs.append(t.getcol("CHAN_FREQ")[0])
    assert _max_rel(freqs[0], freqs[1]) < RTOL
    assert np.all(np.diff(freqs[0]) > 0), "channels ascend in frequency"
    assert freqs[0].size == 32


def test_ms_is_phased_to_meridian_at_midpoint(ms_pair, group):
    ra, dec = meridian_phase_center((group.start_mjd + group.end_mjd) / 2 + 2400000.5, group.dec_deg)
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
    import dsa110_contimg.convert as convert

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
