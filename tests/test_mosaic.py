"""Mosaics of three consecutive simulated calibrated images: bright-source fluxes against
truth where the weight is above the cut, lower noise where images overlap, failed images
left out; the grouping of consecutive groups into mosaics."""

import json

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from dsa110_contimg.mosaic import make_mosaic, plan_mosaics
from dsa110_contimg.qa_catalog import catalog_comparison
from dsa110_contimg.stats import robust_rms

from imaging_fixtures import _truth

pytestmark = pytest.mark.casa


def _paths(calibrated_images, kind):
    return [r["paths"][kind] for r in calibrated_images["images"]]


@pytest.fixture(scope="module")
def mosaic(calibrated_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("mosaic")
    info = make_mosaic(
        _paths(calibrated_images, "image.fits"),
        _paths(calibrated_images, "pb.fits"),
        out / "mosaic.fits",
        out / "weight.fits",
        residuals=_paths(calibrated_images, "residual.fits"),
        weight_cut=0.1,
        name="test",
    )
    return out, info


def test_mosaic_fluxes_match_truth_above_the_weight_cut(calibrated_images, mosaic):
    from dsa110_contimg.io import image_wcs

    out, info = mosaic
    assert len(info["used"]) == 3 and info["excluded"] == []
    data = fits.getdata(out / "mosaic.fits").astype(float)
    header = fits.getheader(out / "mosaic.fits")
    weight = fits.getdata(out / "weight.fits").astype(float)
    assert header["PBCOR"] is True and header["NIMAGES"] == 3 and header["BMAJ"] > 0
    assert np.isnan(data[weight < 0.1 * weight.max()]).all()
    _, catalog = _truth(calibrated_images["archive"])
    noise = np.where(weight > 0, 1 / np.sqrt(np.where(weight > 0, weight, 1)), np.nan)
    table, metrics = catalog_comparison(
        data,
        image_wcs(header).celestial,
        header,
        catalog,
        noise,
        gain=None,
        valid=np.isfinite(data),
    )
    bright = table[table.predicted_snr >= 100]
    assert len(bright) >= 4, table[table.predicted_snr > 0]
    assert np.all(np.abs(bright.flux_ratio - 1) < 0.05), bright[["source_id", "flux_ratio"]]
    assert np.all(bright.offset_beam < 0.2)


def test_mosaic_noise_is_lower_where_images_overlap(calibrated_images, mosaic, tmp_path):
    """Mosaic the residuals with the same weights; between two pointings the mosaic's rms
    is below that of either single primary-beam-corrected residual there."""
    from reproject import reproject_interp

    from dsa110_contimg.io import image_wcs

    out, _ = mosaic
    residuals = _paths(calibrated_images, "residual.fits")
    make_mosaic(
        residuals,
        _paths(calibrated_images, "pb.fits"),
        tmp_path / "r.fits",
        tmp_path / "w.fits",
        residuals=residuals,
        weight_cut=0.1,
    )
    res_mosaic = fits.getdata(tmp_path / "r.fits").astype(float)
    wcs_out = image_wcs(fits.getheader(tmp_path / "r.fits")).celestial
    singles = []
    for r in calibrated_images["images"][:2]:
        img = fits.getdata(r["paths"]["residual.fits"]).squeeze().astype(float)
        pb = fits.getdata(r["paths"]["pb.fits"]).squeeze().astype(float)
        wcs = image_wcs(fits.getheader(r["paths"]["residual.fits"])).celestial
        corr, _ = reproject_interp((img / pb, wcs), wcs_out, res_mosaic.shape, order="bilinear")
        singles.append(corr)
    # a box midway between the pointings of groups 0 and 1
    c0 = calibrated_images["images"][0]["paths"]["image.fits"]
    c1 = calibrated_images["images"][1]["paths"]["image.fits"]
    h0, h1 = fits.getheader(c0), fits.getheader(c1)
    x0, y0 = wcs_out.world_to_pixel_values(h0["CRVAL1"], h0["CRVAL2"])
    x1, y1 = wcs_out.world_to_pixel_values(h1["CRVAL1"], h1["CRVAL2"])
    xm, ym, half = int((x0 + x1) / 2), int((y0 + y1) / 2), 60
    box = (slice(ym - half, ym + half), slice(xm - half, xm + half))
    rms_mosaic = robust_rms(res_mosaic[box])
    rms_singles = [robust_rms(s[box]) for s in singles]
    assert rms_mosaic < 0.85 * min(rms_singles), (rms_mosaic, rms_singles)
    weight = fits.getdata(tmp_path / "w.fits").astype(float)
    assert rms_mosaic == pytest.approx(np.median(1 / np.sqrt(weight[box])), rel=0.25)


def test_failed_image_is_left_out_and_named(calibrated_images, tmp_path, caplog):
    reports = []
    for i, g in enumerate(calibrated_images["groups"].group):
        status = "fail" if i == 1 else "pass"
        p = tmp_path / f"{g}.json"
        p.write_text(
            json.dumps(
                {
                    "stage": "image",
                    "name": g,
                    "status": status,
                    "failed": ["flux_ratio_error"] if i == 1 else [],
                    "warned": [],
                    "metrics": {"flux_ratio": 0.5 if i == 1 else 1.0},
                }
            )
        )
        reports.append(p)
    images = _paths(calibrated_images, "image.fits")
    with caplog.at_level("WARNING"):
        info = make_mosaic(
            images,
            _paths(calibrated_images, "pb.fits"),
            tmp_path / "m.fits",
            tmp_path / "w.fits",
            reports=reports,
            name="m1",
        )
    assert info["used"] == [str(images[0]), str(images[2])]
    assert fits.getheader(tmp_path / "m.fits")["NEXCLUD"] == 1
    assert f"mosaic m1: leaving out {images[1]}, failed QA (flux_ratio_error)" in caplog.text


def test_plan_consecutive_windows():
    length = 309.24 / 86400
    starts = [61041 + i * length for i in range(7)] + [61042 + i * length for i in range(2)]
    groups = pd.DataFrame(
        {
            "group": [f"g{i}" for i in range(9)],
            "start_mjd": starts,
            "end_mjd": [s + length for s in starts],
            "mid_mjd": [s + length / 2 for s in starts],
            "dec_deg": 33.0,
        }
    )
    assert plan_mosaics(groups, 3, 2) == {
        "g0": ["g0", "g1", "g2"],
        "g2": ["g2", "g3", "g4"],
        "g4": ["g4", "g5", "g6"],
    }
    assert plan_mosaics(groups, 2, 2) == {
        "g0": ["g0", "g1"],
        "g2": ["g2", "g3"],
        "g4": ["g4", "g5"],
        "g7": ["g7", "g8"],
    }
    groups.loc[1, "dec_deg"] = 40.0
    assert list(plan_mosaics(groups, 3, 3)) == ["g2"]
    with pytest.raises(ValueError, match="must be >= 1"):
        plan_mosaics(groups, 0, 1)
