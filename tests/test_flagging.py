"""Flagging: injected RFI and a dead antenna found by AOFlagger and the dead-antenna
check, against the injection's truth; few clean samples lost; QA fails a group that is
mostly flagged."""

import json

import numpy as np
import pytest
from casacore import tables

from dsa110_contimg.flagging import FlagSettings, flag_group, strategy_file
from dsa110_contimg.ingest.convert import convert_group
from dsa110_contimg.ingest.manifest import build_manifest, find_archive_files
from dsa110_contimg.simulation.rfi import RFISpec, inject_rfi, plan_rfi
from dsa110_contimg.simulation.visibilities import SimulationSettings, simulate_archive

N_CHANNELS = 16


@pytest.fixture(scope="module")
def clean_ms(tmp_path_factory):
    """One converted group: 12 antennas, 16 x 16 channels, 24 integrations."""
    tmp = tmp_path_factory.mktemp("flag")
    settings = SimulationSettings(
        n_groups=1, n_antennas=12, n_channels=N_CHANNELS, n_sources=10, seed=5
    )
    meta = simulate_archive(tmp / "archive", settings)
    groups, _ = build_manifest(find_archive_files(tmp / "archive"))
    ms = convert_group(list(groups.iloc[0].files), tmp / "clean.ms", groups.iloc[0].group)
    return ms, meta["noise_sigma_jy"]


def _rfi_ms(clean_ms, tmp_path, spec, seed=3):
    """A copy of the clean MS with RFI injected into DATA; returns (ms, truth, plan)."""
    import shutil

    src, sigma = clean_ms
    ms = tmp_path / "rfi.ms"
    shutil.copytree(src, ms)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        data = t.getcol("DATA")
        ant1, ant2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        tidx = np.unique(t.getcol("TIME"), return_inverse=True)[1].ravel()
        freqs = tables.table(f"{ms}::SPECTRAL_WINDOW", ack=False).getcol("CHAN_FREQ")[0]
        plan = plan_rfi(spec, freqs, tidx.max() + 1, np.unique(ant1), seed)
        truth = inject_rfi(data, freqs, tidx, ant1, ant2, sigma, plan, np.random.default_rng(seed))
        t.putcol("DATA", data)
    return ms, truth, plan, ant1, ant2


def _flags(ms):
    with tables.table(str(ms), ack=False) as t:
        return t.getcol("FLAG"), t.getcol("ANTENNA1"), t.getcol("ANTENNA2")


def test_injected_rfi_and_dead_antenna_are_flagged(clean_ms, tmp_path):
    spec = RFISpec(n_channels=4, n_bursts=2, n_dead_antennas=1)
    ms, truth, plan, ant1, ant2 = _rfi_ms(clean_ms, tmp_path, spec)
    record = flag_group(ms, "g", tmp_path / "flag.json", tmp_path / "flag.png")
    flags, _, _ = _flags(ms)
    flagged = flags.any(axis=2)
    dead = np.isin(ant1, plan["dead_antennas"]) | np.isin(ant2, plan["dead_antennas"])
    cross = (ant1 != ant2) & ~dead
    found = flagged[cross][truth[cross]].mean()
    false = flagged[cross][~truth[cross]].mean()
    print(
        f"RFI samples flagged {found:.4f}, clean samples flagged {false:.4f}, "
        f"dead antennas {record['dead_antennas']} (injected {plan['dead_antennas']})"
    )
    assert found >= 0.95
    assert false < 0.05
    assert record["dead_antennas"] == plan["dead_antennas"]
    assert flagged[dead].all()
    saved = json.loads((tmp_path / "flag.json").read_text())
    expected = (truth | dead[:, None])[ant1 != ant2].mean()
    assert saved["stage"] == "flag"
    assert saved["metrics"]["flag_fraction"] == pytest.approx(expected, abs=0.01)
    assert len(saved["per_channel"]) == 16 * N_CHANNELS
    assert saved["per_antenna"][str(plan["dead_antennas"][0])] == 1.0
    assert (tmp_path / "flag.png").stat().st_size > 10000


def test_clean_group_loses_few_samples(clean_ms, tmp_path):
    import shutil

    ms = tmp_path / "copy.ms"
    shutil.copytree(clean_ms[0], ms)
    record = flag_group(ms, "g", tmp_path / "flag.json", tmp_path / "flag.png")
    print(f"clean group: {record['metrics']['flag_fraction']:.4f} flagged")
    assert record["metrics"]["flag_fraction"] < 0.02
    assert record["dead_antennas"] == []


def test_mostly_flagged_group_fails_qa(clean_ms, tmp_path):
    import shutil

    ms = tmp_path / "nan.ms"
    shutil.copytree(clean_ms[0], ms)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        data = t.getcol("DATA")
        data[: int(0.6 * len(data))] = np.nan
        t.putcol("DATA", data)
    record = flag_group(
        ms, "g", tmp_path / "flag.json", tmp_path / "flag.png", FlagSettings(max_flag_fraction=0.5)
    )
    assert record["status"] == "fail"
    assert record["failed"] == ["flag_fraction"]
    assert record["reason"].startswith("flagged fraction 0.6")


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="unknown AOFlagger strategy 'lofar-x'; bundled: "):
        strategy_file("lofar-x")


def test_rfi_written_by_the_simulator_is_flagged_at_conversion(tmp_path):
    """RFI and a dead antenna in the raw UVH5 files (the simulator's `rfi`, planned in
    the truth) are flagged by the conversion job, against the truth plan; the image of
    the flagged group is still at the thermal noise."""
    from dsa110_contimg.imaging.image import ImagingSettings, image_group
    from dsa110_contimg.stats import robust_rms

    settings = SimulationSettings(
        n_groups=1,
        n_antennas=12,
        n_channels=N_CHANNELS,
        n_sources=10,
        seed=5,
        gains=False,
        rfi={"n_channels": 4},
    )
    meta = simulate_archive(tmp_path / "archive", settings)
    plan = meta["rfi"]
    groups, _ = build_manifest(find_archive_files(tmp_path / "archive"))
    ms = convert_group(
        list(groups.iloc[0].files),
        tmp_path / "rfi.ms",
        groups.iloc[0].group,
        flag=(FlagSettings(), tmp_path / "flag.json", tmp_path / "flag.png"),
    )
    flags, ant1, ant2 = _flags(ms)
    with tables.table(str(ms), ack=False) as t:
        tidx = np.unique(t.getcol("TIME"), return_inverse=True)[1].ravel()
    freqs = tables.table(f"{ms}::SPECTRAL_WINDOW", ack=False).getcol("CHAN_FREQ")[0]
    dead = np.isin(ant1, plan["dead_antennas"]) | np.isin(ant2, plan["dead_antennas"])
    cross = (ant1 != ant2) & ~dead
    truth = np.zeros(flags.shape[:2], bool)
    for f in plan["channel_freq_hz"]:
        truth[:, np.isclose(freqs, f, rtol=0, atol=1.0)] = True
    truth[np.isin(tidx, plan["burst_integrations"])] = True
    flagged = flags.any(axis=2)
    found = flagged[cross][truth[cross]].mean()
    false = flagged[cross][~truth[cross]].mean()
    record = json.loads((tmp_path / "flag.json").read_text())
    print(
        f"simulator RFI: {truth[cross].sum()} samples, {found:.4f} flagged; clean samples "
        f"flagged {false:.4f}; dead antennas {record['dead_antennas']} "
        f"(injected {plan['dead_antennas']})"
    )
    assert sum(r["rfi_samples"] for r in meta["faults"]) > 0
    assert found >= 0.95 and false < 0.05
    assert record["dead_antennas"] == plan["dead_antennas"] and flagged[dead].all()

    result = image_group(
        ms,
        tmp_path / "img",
        ImagingSettings(imager="wsclean", imsize=1024, cell_arcsec=18.0, datacolumn="DATA"),
        sky_catalog=tmp_path / "archive" / "sky_catalog.csv",
    )
    from astropy.io import fits

    rms = robust_rms(fits.getdata(result["paths"]["residual.fits"]))
    print(f"image rms / thermal {rms / result['thermal_rms_jy']:.2f}")
    assert rms <= 1.5 * result["thermal_rms_jy"]
