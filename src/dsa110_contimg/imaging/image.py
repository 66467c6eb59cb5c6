"""Image one calibrated group: tclean (default) or WSClean, plus the primary-beam image,
after subtracting the bright sources drifting through the beam.

Products in the group's image directory, all on one grid (SIN projection about the MS
phase centre, i.e. the meridian at the pointing declination at the group midpoint):

- ``image.fits``: restored Stokes I image in Jy/beam, NOT primary-beam corrected (flat
  noise), with BMAJ/BMIN/BPA (deg) of the restoring beam.
- ``residual.fits``: the residual after deconvolution (Jy/beam, flat noise).
- ``pb.fits``: the primary-beam power response of a 4.65 m Airy dish at the band's centre
  frequency, averaged over the group's integrations: the dishes stay at one hour angle
  and declination while the sky drifts ~1.3 deg through the beam in a group, so the
  response a source had during the group is the mean of the Airy pattern about each
  integration's pointing. Divide image.fits by it to correct the primary beam.

- ``drift_sources.parquet``: the sky-catalog sources bright enough to matter, fitted in
  the visibilities with the per-integration primary beam and subtracted before imaging
  (module drift: a source off the meridian changes its apparent flux by up to 2x during
  a group, which a constant-sky deconvolution cannot model); they are restored into
  image.fits as restoring-beam Gaussians of peak fitted flux x pb.fits, so image / pb
  measures their fitted flux, and are absent from residual.fits. One row per source:
  catalog and fitted flux (1.4 GHz) with its error, pb, restored peak, in_image.
  WSClean images the column DRIFT_SUBTRACTED of the MS; tclean (DATA or CORRECTED_DATA
  only) a scratch copy of the MS. Without a sky catalog the calibrator catalog's
  sources are the model (a field's brightest sources are its calibrators); with neither,
  nothing is subtracted (DRIFTSUB = 0).

Headers carry the provenance (software version, config hash, input MS), the imager and
its settings, the observation times (MJD-OBS at the start, MJD-AVG at the midpoint) and
the natural-weighting thermal noise expected from the radiometer equation (THERMRMS).

The imagers are run by ``imagers``, the MS is read by ``ms_summary`` and pb.fits comes
from ``pb_image``.
"""

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg import instrument as inst
from dsa110_contimg.atomic import atomic_output, write_parquet
from dsa110_contimg.configuration import StageSettings
from dsa110_contimg.imaging.drift import (
    TABLE_COLUMNS,
    empty_table,
    fit_and_subtract,
    restore_sources,
    select_sources,
)
from dsa110_contimg.imaging.imagers import run_imager, smearing_track_wavelengths
from dsa110_contimg.imaging.ms_summary import natural_thermal_rms, read_ms_summary
from dsa110_contimg.imaging.pb_image import pointing_of_phase_center, pointing_track, primary_beam
from dsa110_contimg.provenance import provenance
from dsa110_contimg.sanity import Product, check_image

log = logging.getLogger(__name__)

IMAGERS = ("tclean", "wsclean")
WEIGHTINGS = ("natural", "uniform", "briggs")
PRODUCTS = ("image.fits", "residual.fits", "pb.fits", "drift_sources.parquet")


@dataclass
class ImagingSettings(StageSettings):
    """Imaging parameters (config section `image`). Defaults suit DSA-110 at 1.4 GHz:
    2560 x 9 arcsec pixels cover the primary beam to its first null (6.4 deg) and give
    ~4 pixels across the minor axis of the ~75 x 38 arcsec synthesized beam.

    WSClean 3.1 with 2 threads is not bit-reproducible (two runs on one MS differed by
    up to 2.4e-7 Jy/beam, ~3e-4 of the thermal noise); `deterministic` runs it on one
    thread (identical images, slower gridding). tclean and the drift fit (per-row sums
    added in a fixed order) are reproducible. `gridders` > 1 single-threaded WSClean
    gridders run side by side on parts of the band (identical images from run to run;
    one full-size group images faster, but with more CPU per group: the default 1 suits
    long runs with two groups in flight).

    time_smearing_max: WSClean averages short baselines in time (baseline-dependent
    averaging) as long as no visibility loses more than this fraction of a point
    source's amplitude at the primary beam's half-power radius (`imagers`); 0 (the
    default) turns it off. tclean does not average.

    datacolumn and sefd_jy are not configured (command-line flags only)."""

    SECTION = "image"
    OTHER_KEYS = frozenset({"mem_mb", "runtime_min"})
    CHOICES = {
        "imager": IMAGERS,
        "weighting": WEIGHTINGS,
        "datacolumn": ("CORRECTED_DATA", "DATA"),
    }
    KEYS = {"datacolumn": None, "sefd_jy": None}

    imager: str = "wsclean"
    imsize: int = 2560
    cell_arcsec: float = 9.0
    weighting: str = "briggs"
    robust: float = 0.5
    niter: int = 20000
    threshold_jy: float = 0.0
    nsigma: float = 4.0
    gain: float = 0.1
    cyclefactor: float = 0.5
    mgain: float = 0.8
    max_major: int = 12
    wprojplanes: int = 16
    datacolumn: str = "CORRECTED_DATA"
    sefd_jy: float = inst.SEFD_JY
    threads: int = 2
    deterministic: bool = True
    gridders: int = 1
    time_smearing_max: float = 0.0
    drift_subtract: bool = True
    drift_min_snr: float = 20.0
    drift_max_sources: int = 40
    drift_radius_deg: float = 6.0
    drift_fit_spectral_index: bool = False

    def drift(self):
        """The drift-subtraction part of the settings."""
        from dsa110_contimg.imaging.drift import DriftSettings

        return DriftSettings(
            enabled=self.drift_subtract,
            min_snr=self.drift_min_snr,
            max_sources=self.drift_max_sources,
            radius_deg=self.drift_radius_deg,
            fit_spectral_index=self.drift_fit_spectral_index,
        )

    def check(self):
        if self.imager not in IMAGERS:
            raise ValueError(f"unknown imager {self.imager!r}; choose one of {IMAGERS}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {WEIGHTINGS}")
        if self.imsize < 16 or self.imsize % 2:
            raise ValueError(f"imsize must be an even number >= 16, not {self.imsize}")
        if not self.cell_arcsec > 0:
            raise ValueError(f"cell_arcsec must be positive, not {self.cell_arcsec}")
        if self.wprojplanes < 1:
            raise ValueError("wprojplanes must be >= 1 (tclean's -1 fails on these MSs)")
        if self.gridders < 1:
            raise ValueError(f"gridders must be >= 1, not {self.gridders}")
        if not 0 <= self.time_smearing_max < 0.5:
            raise ValueError(f"time_smearing_max must be in [0, 0.5), not {self.time_smearing_max}")
        if not self.drift_min_snr > 0 or self.drift_max_sources < 0:
            raise ValueError("drift_min_snr must be positive and drift_max_sources >= 0")
        return self


def _common_cards(header, summary, settings, prov, pointing):
    from astropy.time import Time

    header["TELESCOP"] = inst.TELESCOPE_NAME
    header["OBSERVER"] = "dsa110-contimg"
    header["MJD-OBS"] = (
        float(summary.times_mjd.min() - summary.integration_s / 172800.0),
        "start of the first integration",
    )
    header["DATE-OBS"] = Time(header["MJD-OBS"], format="mjd", scale="utc").isot
    header["MJD-AVG"] = (float(summary.mid_mjd), "group midpoint")
    header["DATE-AVG"] = Time(summary.mid_mjd, format="mjd", scale="utc").isot
    header["PNTHA"] = (pointing[0], "[deg] hour angle of phase centre at MJD-AVG")
    header["PNTDEC"] = (pointing[1], "[deg] pointing declination (apparent)")
    header["IMAGER"] = settings.imager
    header["CELL"] = (settings.cell_arcsec, "[arcsec] pixel size")
    header["WEIGHT"] = settings.weighting
    header["ROBUST"] = settings.robust
    header["NITER"] = settings.niter
    header["NSIGMA"] = settings.nsigma
    averaged = settings.imager == "wsclean" and settings.time_smearing_max > 0
    header["BLAVG"] = (
        round(smearing_track_wavelengths(summary.freqs_hz.min(), settings.time_smearing_max), 4)
        if averaged
        else 0.0,
        "[wavelengths] uv track of baseline averaging",
    )
    header["TSMEAR"] = (
        settings.time_smearing_max if averaged else 0.0,
        "max. amplitude loss it adds at pb half power",
    )
    header["SOFTWARE"] = prov["software"]
    header["SWVERS"] = prov["version"]
    header["CFGHASH"] = prov["config_hash"]
    header["MSNAME"] = Path(summary.path).name
    header["CALSTAT"] = (summary.calibration or "unknown", "calibration of the MS")
    header["PROVJSON"] = json.dumps(prov, default=str)


def _write_fits(data, header, path):
    from astropy.io import fits

    with atomic_output(path) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp, output_verify="silentfix")


def image_group(
    ms_path,
    out_dir,
    settings=None,
    pointing_dec_deg=None,
    config=None,
    sky_catalog=None,
    calibrators=None,
):
    """Image one MS into `out_dir`/{image,residual,pb}.fits and drift_sources.parquet;
    returns a dict of paths and facts (beam, thermal rms, drift fit, seconds).

    With `sky_catalog` (CSV path or DataFrame: source_id, ra_deg, dec_deg, flux_jy[,
    spectral_index]) and settings.drift_subtract, the catalog's bright sources are
    fitted and subtracted in the visibilities before imaging and restored afterwards
    (module drift). Without one, the `calibrators` catalog (calibrators.py format) is the
    drift model: a field's brightest sources are its calibrators, and one of them left
    drifting through the beam keeps the image far above the noise."""
    from astropy.io import fits

    from dsa110_contimg.io import image_frequency, image_wcs

    settings = (settings or ImagingSettings()).check()
    ms_path, out_dir = Path(ms_path), Path(out_dir)
    t0 = time.perf_counter()
    summary = read_ms_summary(ms_path, settings.datacolumn)
    if summary.n_cross_unflagged == 0:
        raise ValueError(f"{ms_path}: every cross-correlation is flagged; nothing to image")
    ha, dec = pointing_of_phase_center(*summary.phase_center_rad, summary.mid_mjd)
    if pointing_dec_deg is None:
        if abs(ha) > 0.5:
            raise ValueError(
                f"{ms_path}: phase centre is {ha:.2f} deg from the meridian at the "
                "group midpoint; give the pointing declination explicitly"
            )
        pointing_dec_deg = dec
    thermal = natural_thermal_rms(summary, settings.sefd_jy)
    pra, pdec = pointing_track(summary.times_mjd, pointing_dec_deg)
    freq = summary.centre_freq_hz
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.work-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.work-", dir=out_dir.parent))
    try:
        t1 = time.perf_counter()
        drift_source = sky_catalog if sky_catalog is not None else calibrators
        drift_model = sky_catalog
        if sky_catalog is None and calibrators is not None:
            drift_model = _calibrators_as_sky(calibrators, ms_path)
        fitted, drift_facts, image_ms, column = _subtract_drifting_sources(
            ms_path, work, settings, (pra, pdec), pointing_dec_deg, freq, thermal, drift_model
        )
        t_drift = time.perf_counter() - t1
        t1 = time.perf_counter()
        stem = work / "img"
        image_fits, residual_fits, version = run_imager(
            image_ms, stem, settings, column, summary.freqs_hz
        )
        t_image = time.perf_counter() - t1
        inputs = [ms_path] + ([drift_source] if isinstance(drift_source, (str, Path)) else [])
        prov = provenance(
            inputs,
            config or asdict(settings),
            imager=settings.imager,
            imager_version=version,
            settings=asdict(settings),
        )
        with fits.open(image_fits) as hdul:
            image_hdr, image = hdul[0].header.copy(), hdul[0].data.astype(np.float32)
        with fits.open(residual_fits) as hdul:
            resid_hdr, resid = hdul[0].header.copy(), hdul[0].data.astype(np.float32)
        beam = _beam(image_hdr, image_fits)
        wcs = image_wcs(image_hdr).celestial
        ny, nx = image.shape[-2:]
        pb = primary_beam(wcs, (ny, nx), pra, pdec, freq).astype(np.float32)
        image_hdr["BMAJ"], image_hdr["BMIN"], image_hdr["BPA"] = beam
        plane = image.reshape(ny, nx)
        fitted = restore_sources(plane, image_hdr, wcs, pb, fitted, image_frequency(image_hdr))

        for hdr, kind in ((image_hdr, "restored image"), (resid_hdr, "residual")):
            _common_cards(hdr, summary, settings, prov, (ha, pointing_dec_deg))
            hdr["BUNIT"] = "Jy/beam"
            hdr["BMAJ"], hdr["BMIN"], hdr["BPA"] = beam
            hdr["PBCOR"] = (False, "not primary-beam corrected (flat noise)")
            hdr["PBFILE"] = ("pb.fits", "divide by this beam to correct")
            hdr["THERMRMS"] = (thermal, "[Jy/beam] radiometer rms, natural weighting")
            hdr["SEFD"] = (settings.sefd_jy, "[Jy] SEFD assumed for THERMRMS")
            hdr["FLAGFRAC"] = (summary.flagged_fraction, "flagged cross-corr. fraction")
            hdr["DRIFTSUB"] = (len(fitted), "sources fitted, subtracted from the vis.")
            hdr["DRIFTTAB"] = ("drift_sources.parquet", "their fitted fluxes")
            hdr["COMMENT"] = (
                f"Stokes I {kind} in Jy/beam, apparent sky (NOT corrected for "
                "the primary beam); the beam is pb.fits."
            )
        if len(fitted):
            image_hdr["COMMENT"] = (
                "The DRIFTSUB sources of DRIFTTAB were fitted with the "
                "per-integration beam, subtracted before imaging and "
                "restored here with peak = fitted flux x pb.fits; the "
                "residual does not contain them."
            )
        pb_hdr = image_hdr.copy()
        for key in (
            "BMAJ",
            "BMIN",
            "BPA",
            "PBFILE",
            "THERMRMS",
            "BUNIT",
            "COMMENT",
            "DRIFTSUB",
            "DRIFTTAB",
        ):
            pb_hdr.remove(key, ignore_missing=True, remove_all=True)
        pb_hdr["BUNIT"] = ""
        pb_hdr["PBMODEL"] = (f"Airy {inst.DISH_DIAMETER_M} m", "uniformly lit dish")
        pb_hdr["PBFREQ"] = (freq, "[Hz] frequency of the beam model (band centre)")
        pb_hdr["PBNTIME"] = (len(pra), "integrations averaged over the drift")
        pb_hdr["COMMENT"] = (
            "Primary-beam power response (1 on axis) at the band centre, "
            "averaged over the pointings (meridian, PNTDEC) of the group's "
            "integrations. image.fits / pb.fits = corrected sky."
        )
        pb_full = pb.reshape(image.shape)
        out = {k: out_dir / k for k in PRODUCTS}
        group = ms_path.stem
        for name, data in (("image.fits", image), ("residual.fits", resid), ("pb.fits", pb)):
            check_image(data, Product(out[name], "image", group, str(ms_path)), name)
        _write_fits(image, image_hdr, out["image.fits"])
        _write_fits(resid, resid_hdr, out["residual.fits"])
        _write_fits(pb_full, pb_hdr, out["pb.fits"])
        write_parquet(
            fitted[list(TABLE_COLUMNS)],
            out["drift_sources.parquet"],
            {**prov, "drift": drift_facts},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - t0
    log.info(
        "%s: %s image %dx%d, beam %.1f x %.1f arcsec, thermal rms %.3g Jy/beam, "
        "%d drifting sources subtracted (%.1f s), imager %.1f s, total %.1f s -> %s",
        ms_path.name,
        settings.imager,
        nx,
        ny,
        beam[0] * 3600,
        beam[1] * 3600,
        thermal,
        len(fitted),
        t_drift,
        t_image,
        seconds,
        out_dir,
    )
    return {
        "paths": out,
        "beam_deg": beam,
        "thermal_rms_jy": thermal,
        "seconds": seconds,
        "imager_seconds": t_image,
        "drift_seconds": t_drift,
        "drift": drift_facts,
        "drift_sources": fitted,
        "pointing_dec_deg": pointing_dec_deg,
    }


def _subtract_drifting_sources(
    ms_path, work, settings, track, pointing_dec_deg, freq_hz, thermal, sky_catalog
):
    """Select, fit and subtract the catalog's bright sources (module drift).

    Returns (fitted table, facts, MS to image, column to image): WSClean images the
    column settings.drift.column of the input MS; tclean, which reads only DATA or
    CORRECTED_DATA, a scratch copy of the MS in `work` whose `datacolumn` holds the
    subtracted visibilities. Without a catalog or with drift_subtract off, nothing is
    subtracted and the MS's own column is imaged."""
    drift = settings.drift()
    if not drift.enabled:
        return (
            empty_table(),
            {"n_sources": 0, "reason": "drift_subtract is off"},
            ms_path,
            settings.datacolumn,
        )
    if sky_catalog is None:
        log.warning(
            "%s: no sky catalog, so no drifting source is subtracted; bright sources "
            "off the meridian will leave residuals above the noise",
            ms_path.name,
        )
        return (
            empty_table(),
            {"n_sources": 0, "reason": "no sky catalog"},
            ms_path,
            settings.datacolumn,
        )
    catalog = sky_catalog if isinstance(sky_catalog, pd.DataFrame) else _read_sky(sky_catalog)
    sources = select_sources(
        catalog, *track, freq_hz, drift.min_snr * thermal, drift.max_sources, drift.radius_deg
    )
    if settings.imager == "tclean":
        image_ms, column = work / "drift.ms", settings.datacolumn
        shutil.copytree(ms_path, image_ms)
    else:
        image_ms, column = ms_path, drift.column
    fitted, facts = fit_and_subtract(
        ms_path, sources, pointing_dec_deg, drift, settings.datacolumn, image_ms, column
    )
    facts["min_apparent_jy"] = drift.min_snr * thermal
    return fitted, facts, image_ms, column


def _calibrators_as_sky(path, ms_path):
    """The calibrator catalog as a drift model (source_id = calibrator name)."""
    from dsa110_contimg.calibrators import read_calibrator_catalog

    log.warning(
        "%s: no sky catalog: the calibrator catalog %s is the drift model (other bright "
        "sources off the meridian will leave residuals above the noise)",
        Path(ms_path).name,
        path,
    )
    cat = read_calibrator_catalog(path)
    return cat.rename(columns={"name": "source_id"})[
        ["source_id", "ra_deg", "dec_deg", "flux_jy", "spectral_index"]
    ]


def _read_sky(path):
    from dsa110_contimg.catalogs import read_sky_catalog

    cat = read_sky_catalog(path)
    if "flux_jy" not in cat:
        raise ValueError(
            f"{path}: sky catalog lacks column flux_jy (needed to choose the "
            "drifting sources to subtract)"
        )
    return cat


def _beam(header, path):
    try:
        beam = tuple(float(header[k]) for k in ("BMAJ", "BMIN", "BPA"))
    except KeyError as err:
        raise RuntimeError(f"{path}: the imager wrote no restoring beam ({err})") from err
    if not (beam[0] > 0 and beam[1] > 0):
        raise RuntimeError(f"{path}: restoring beam {beam} is not positive")
    return beam


def _run(args):
    settings = ImagingSettings.from_args(args)
    image_group(
        args.ms,
        args.out_dir,
        settings,
        args.pointing_dec,
        None,
        args.sky_catalog,
        calibrators=args.calibrators,
    )


def register_cli(sub):
    p = sub.add_parser(
        "image",
        help="image one calibrated MS -> image.fits, residual.fits, pb.fits, drift_sources.parquet",
    )
    p.add_argument("ms", help="Measurement Set (calibrated)")
    p.add_argument("--out-dir", required=True, help="directory for image/residual/pb.fits")
    p.add_argument(
        "--pointing-dec",
        type=float,
        help="pointing declination (deg); default: "
        "the MS phase centre's, which convert puts on the meridian",
    )
    p.add_argument(
        "--sky-catalog",
        help="sky catalog CSV whose bright sources are fitted "
        "and subtracted with the per-integration beam",
    )
    p.add_argument(
        "--calibrators",
        help="calibrator catalog CSV: the drift model when no --sky-catalog is given "
        "(neither: no subtraction)",
    )
    ImagingSettings.add_arguments(p)
    p.set_defaults(func=_run)
