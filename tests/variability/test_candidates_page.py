"""The ESE candidates page in a real browser (headless Chromium): it loads, its figures
decode, and the screenshot shows them."""

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from dsa110_contimg import cli
from dsa110_contimg.atomic import write_parquet
from dsa110_contimg.simulation import lightcurves

CENTRE = (150.0, 37.0)
FREQS = 1311e6 + 47e6 * (np.arange(4) + 0.5)


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: scripts/setup.sh installs it (as root)")
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    work = tmp_path_factory.mktemp("page")
    sim = lightcurves.simulate_lightcurves(
        n_sources=30,
        n_epochs=60,
        seed=81,
        snr_range=(80, 300),
        n_ese=2,
        ese_depth=(0.5, 0.6),
        ese_fwhm_days=(8, 10),
        ese_shoulder=(0.1, 0.2),
        subband_freqs_hz=FREQS,
        ese_chromatic=True,
    )
    table = lightcurves.lightcurves_to_table(sim)
    catalog = lightcurves.grid_catalog(30, CENTRE, 0.13, 0.04, seed=82)
    pos = dict(zip(sim["truth"]["source_id"], zip(catalog["ra_deg"], catalog["dec_deg"])))
    table["ra"] = table["source_id"].map(lambda s: pos[s][0]).astype(float)
    table["dec"] = table["source_id"].map(lambda s: pos[s][1]).astype(float)
    ts_path = work / "normalized.parquet"
    write_parquet(table, ts_path)
    images = work / "images"
    for j in range(len(sim["mjd"])):
        cat = catalog.assign(flux_jy=np.nan_to_num(sim["flux"][:, j]))
        lightcurves.make_test_image(
            images / f"epoch{j:05d}" / "image.fits",
            cat,
            npix=64,
            cell_arcsec=12.0,
            centre_deg=CENTRE,
            rms_jy=1e-3,
            date_obs="2025-01-01T00:00:00",
            seed=j,
        )
    outdir = work / "ese"
    assert cli.main(["ese-detect", "--timeseries", str(ts_path), "--outdir", str(outdir)]) == 0
    html = outdir / "candidates.html"
    assert (
        cli.main(
            [
                "ese-page",
                "--candidates",
                str(outdir / "ese_candidates.parquet"),
                "--timeseries",
                str(ts_path),
                "--images-dir",
                str(images),
                "--out",
                str(html),
            ]
        )
        == 0
    )
    cand = pd.read_parquet(outdir / "ese_candidates.parquet")
    return html, cand


def test_page_content(page):
    html, cand = page
    text = html.read_text()
    assert sorted(cand["source_id"]) == ["S00000", "S00001"]
    # per candidate: light curve, sub-band depths, cutouts before/during/after
    assert text.count("<img class='fig'") == 2 * 5
    assert text.count("<section id=") == 2
    assert "ese_lambda2_slope" in text and "ese_depth_sb3" in text


def test_page_in_headless_chromium(page, tmp_path):
    html, _ = page
    url = html.resolve().as_uri()
    dom = subprocess.run(
        _chromium() + ["--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    total = int(re.search(r'data-figures="(\d+)"', dom.stdout).group(1))
    loaded = int(re.search(r'data-figures-loaded="(\d+)"', dom.stdout).group(1))
    assert re.search(r"10 of 10 figures loaded", dom.stdout)
    shot = tmp_path / "page.png"
    run = subprocess.run(
        _chromium()
        + [f"--screenshot={shot}", "--window-size=1280,1600", "--virtual-time-budget=10000", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)[..., :3]
    ink = (pixels.min(axis=2) < 0.9).mean()
    colour = (pixels.max(axis=2) - pixels.min(axis=2) > 0.2).mean()
    print(
        f"\nchromium: {loaded} of {total} figures decoded; screenshot "
        f"{pixels.shape[1]}x{pixels.shape[0]}, non-white {ink:.3f}, coloured {colour:.3f}"
    )
    assert total == loaded == 10
    assert ink > 0.05 and colour > 0.002
