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
  only) a scratch copy of the MS. Without a sky catalog nothing is subtracted
  (DRIFTSUB = 0).

Headers carry the provenance (software version, config hash, input MS), the imager and
its settings, the observation times (MJD-OBS at the start, MJD-AVG at the midpoint) and
the natural-weighting thermal noise expected from the radiometer equation (THERMRMS).

w-terms: the field is imaged to the first null of the primary beam (~6.4 deg across at
1.4 GHz), where the w-term phase reaches ~2 rad on the longest baselines, so tclean uses
w-projection (explicit ``wprojplanes``; -1 fails on these MSs) and WSClean w-stacking.
"""

import json
import logging
import shutil
import subprocess
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
from dsa110_contimg.primary_beam import airy_power
from dsa110_contimg.provenance import provenance

log = logging.getLogger(__name__)

IMAGERS = ("tclean", "wsclean")
WEIGHTINGS = ("natural", "uniform", "briggs")
PRODUCTS = ("image.fits", "residual.fits", "pb.fits", "drift_sources.parquet")
CALIBRATION_KEYWORD = "DSA110_CALIBRATION"
"""MS keyword written by calibrate.apply_calibration (status calibrated/uncalibrated)."""


@dataclass
class ImagingSettings(StageSettings):
    """Imaging parameters (config section `image`). Defaults suit DSA-110 at 1.4 GHz:
    2560 x 9 arcsec pixels cover the primary beam to its first null (6.4 deg) and give
    ~4 pixels across the minor axis of the ~75 x 38 arcsec synthesized beam.

    WSClean 3.1 with 2 threads is not bit-reproducible (two runs on one MS differed by
    up to 2.4e-7 Jy/beam, ~3e-4 of the thermal noise); `deterministic` runs it on one
    thread (identical images, slower gridding). tclean and the drift fit (per-row sums
    added in a fixed order) are reproducible.

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
        if not self.drift_min_snr > 0 or self.drift_max_sources < 0:
            raise ValueError("drift_min_snr must be positive and drift_max_sources >= 0")
        return self


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
        if CALIBRATION_KEYWORD in ms.keywordnames():
            calibration = str(dict(ms.getkeyword(CALIBRATION_KEYWORD)).get("status", ""))
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


def pointing_of_phase_center(ra_rad, dec_rad, mjd):
    """(hour angle, declination) in deg of an ICRS direction seen from the site at `mjd`.

    convert.py phases each group to the meridian at the pointing declination at the group
    midpoint, so at the midpoint this gives (~0, pointing declination)."""
    from astropy import units as u
    from astropy.coordinates import HADec, SkyCoord
    from astropy.time import Time

    frame = HADec(obstime=Time(mjd, format="mjd", scale="utc"), location=inst.site_location())
    hadec = SkyCoord(ra=ra_rad * u.rad, dec=dec_rad * u.rad, frame="icrs").transform_to(frame)
    return float(hadec.ha.wrap_at(180 * u.deg).deg), float(hadec.dec.deg)


def pointing_track(times_mjd, dec_deg):
    """ICRS (ra, dec) in rad of the drift-scan pointing (meridian, `dec_deg`) at each time."""
    from dsa110_contimg.astrometry import meridian_phase_center

    jd = np.asarray(times_mjd, float) + 2400000.5
    track = np.array([meridian_phase_center(t, dec_deg) for t in jd])
    return track[:, 0], track[:, 1]


def _unit_vectors(ra, dec):
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def primary_beam(wcs, shape, pointing_ra, pointing_dec, freq_hz, step=4):
    """Mean Airy power response on the (ny, nx) pixel grid of celestial `wcs` over the
    pointings (rad); pixels without valid sky coordinates get 0.

    The Airy power is a function of x = pi D sin(theta) f / c alone, with
    sin(theta) = sqrt(1 - (p . s)^2) for unit vectors p (pointing) and s (pixel): it is
    tabulated once on a fine grid of x (step 1e-3). The mean beam varies on degree
    scales, so it is computed every `step` pixels and interpolated bilinearly (error
    ~1e-5 at 9 arcsec pixels)."""
    ny, nx = shape
    step = max(1, int(step))
    ys = np.arange((ny - 1) // step + 2) * step
    xs = np.arange((nx - 1) // step + 2) * step
    coarse, valid = _mean_beam(wcs, ys, xs, pointing_ra, pointing_dec, freq_hz)
    pb = _upsample(_upsample(coarse, nx, step, axis=1), ny, step, axis=0)
    if valid.all():
        return pb
    inside = _upsample(_upsample(valid.astype(float), nx, step, axis=1), ny, step, axis=0)
    return np.where(inside > 1.0 - 1e-9, pb, 0.0)


def _upsample(a, n, step, axis):
    """Linear interpolation of `a`, sampled every `step` pixels along `axis`, onto 0..n-1."""
    i = np.arange(n)
    j, t = i // step, (i % step) / step
    lo, hi = np.take(a, j, axis=axis), np.take(a, j + 1, axis=axis)
    shape = [1, 1]
    shape[axis] = n
    t = t.reshape(shape)
    return lo * (1.0 - t) + hi * t


def _mean_beam(wcs, ys, xs, pointing_ra, pointing_dec, freq_hz):
    """Mean Airy power over the pointings at pixel rows `ys` x columns `xs`, and the
    mask of pixels with valid sky coordinates."""
    pointings = _unit_vectors(np.asarray(pointing_ra), np.asarray(pointing_dec))
    scale = np.pi * inst.DISH_DIAMETER_M * freq_hz / inst.SPEED_OF_LIGHT
    x_table = np.arange(0.0, scale + 2e-3, 1e-3)
    a_table = airy_power(np.arcsin(np.clip(x_table / scale, 0.0, 1.0)), freq_hz)
    px, py = np.meshgrid(xs, ys)
    ra, dec = wcs.pixel_to_world_values(px, py)
    valid = np.isfinite(ra) & np.isfinite(dec)
    vec = _unit_vectors(np.radians(np.where(valid, ra, 0.0)), np.radians(np.where(valid, dec, 0.0)))
    acc = np.zeros(px.shape)
    for p in pointings:
        cos_theta = vec @ p
        acc += np.interp(
            scale * np.sqrt(np.clip(1.0 - cos_theta * cos_theta, 0.0, 1.0)), x_table, a_table
        )
    return np.where(valid, acc / len(pointings), 0.0), valid


def _tclean(ms, stem, settings, column):
    """Run tclean on `column` and export image and residual to FITS; returns their paths."""
    from dsa110_contimg.casaenv import casatasks

    cta = casatasks()
    result = cta.tclean(
        vis=str(ms),
        imagename=str(stem),
        datacolumn=_tclean_column(column),
        imsize=[settings.imsize, settings.imsize],
        cell=f"{settings.cell_arcsec}arcsec",
        specmode="mfs",
        stokes="I",
        gridder="wproject",
        wprojplanes=settings.wprojplanes,
        weighting=settings.weighting,
        robust=settings.robust,
        niter=settings.niter,
        gain=settings.gain,
        threshold=f"{settings.threshold_jy}Jy",
        nsigma=settings.nsigma,
        cyclefactor=settings.cyclefactor,
        nmajor=settings.max_major,
        deconvolver="hogbom",
        pblimit=-1e-4,
        pbcor=False,
        savemodel="none",
        restoration=True,
    )
    if isinstance(result, dict):
        log.info(
            "tclean: %s iterations, %s major cycles, stop: %s",
            result.get("iterdone"),
            result.get("nmajordone"),
            result.get("stopDescription"),
        )
    outputs = []
    for kind in ("image", "residual"):
        casa_image = Path(f"{stem}.{kind}")
        if not casa_image.exists():
            raise RuntimeError(f"tclean did not write {casa_image} for {ms}")
        fits_path = Path(f"{stem}.{kind}.fits")
        cta.exportfits(
            imagename=str(casa_image),
            fitsimage=str(fits_path),
            overwrite=True,
            velocity=False,
            dropstokes=False,
            dropdeg=False,
        )
        outputs.append(fits_path)
    return tuple(outputs)


def _tclean_column(column):
    names = {"CORRECTED_DATA": "corrected", "DATA": "data"}
    if column not in names:
        raise ValueError(f"tclean images DATA or CORRECTED_DATA, not {column!r}")
    return names[column]


def wsclean_version():
    """WSClean's version string, or None when it is not installed."""
    exe = shutil.which("wsclean")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if "version" in line.lower():
            return line.strip()
    return "unknown"


def _wsclean(ms, stem, settings, column):
    """Run WSClean (the ducc w-gridder, without touching the MS's MODEL_DATA); returns the
    FITS paths of the restored image and residual. The w-gridder is ~7x faster here than
    WSClean's default w-stacking (30 s against 207 s for a 2048^2 image of a demo-size
    group with 40 w-layers), with a residual rms as low."""
    exe = shutil.which("wsclean")
    if exe is None:
        raise FileNotFoundError(
            "imager 'wsclean' chosen but the wsclean executable is not on "
            "PATH (Debian: apt-get install wsclean; see scripts/setup.sh)"
        )
    weight = (
        ["briggs", str(settings.robust)] if settings.weighting == "briggs" else [settings.weighting]
    )
    cmd = [
        exe,
        "-name",
        str(stem),
        "-temp-dir",
        str(Path(stem).parent),
        "-size",
        str(settings.imsize),
        str(settings.imsize),
        "-scale",
        f"{settings.cell_arcsec}asec",
        "-pol",
        "I",
        "-weight",
        *weight,
        "-niter",
        str(settings.niter),
        "-gain",
        str(settings.gain),
        "-mgain",
        str(settings.mgain),
        "-nmiter",
        str(settings.max_major),
        "-auto-threshold",
        str(settings.nsigma),
        "-data-column",
        column,
        "-no-update-model-required",
        "-no-dirty",
        "-use-wgridder",
        "-j",
        str(1 if settings.deterministic else settings.threads),
    ]
    if settings.threshold_jy > 0:
        cmd += ["-threshold", str(settings.threshold_jy)]
    cmd.append(str(ms))
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"wsclean failed on {ms} (exit {proc.returncode}):\n{tail}")
    for line in proc.stdout.splitlines():
        if "major iterations were performed" in line or "Performed" in line:
            log.info("wsclean: %s", line.strip())
    return Path(f"{stem}-image.fits"), Path(f"{stem}-residual.fits")


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
    ms_path, out_dir, settings=None, pointing_dec_deg=None, config=None, sky_catalog=None
):
    """Image one MS into `out_dir`/{image,residual,pb}.fits and drift_sources.parquet;
    returns a dict of paths and facts (beam, thermal rms, drift fit, seconds).

    With `sky_catalog` (CSV path or DataFrame: source_id, ra_deg, dec_deg, flux_jy[,
    spectral_index]) and settings.drift_subtract, the catalog's bright sources are
    fitted and subtracted in the visibilities before imaging and restored afterwards
    (module drift)."""
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
        fitted, drift_facts, image_ms, column = _subtract_drifting_sources(
            ms_path, work, settings, (pra, pdec), pointing_dec_deg, freq, thermal, sky_catalog
        )
        t_drift = time.perf_counter() - t1
        t1 = time.perf_counter()
        stem = work / "img"
        if settings.imager == "tclean":
            image_fits, residual_fits = _tclean(image_ms, stem, settings, column)
            version = _casa_version()
        else:
            image_fits, residual_fits = _wsclean(image_ms, stem, settings, column)
            version = wsclean_version()
        t_image = time.perf_counter() - t1
        inputs = [ms_path] + ([sky_catalog] if isinstance(sky_catalog, (str, Path)) else [])
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


def _casa_version():
    from dsa110_contimg.casaenv import casatools

    return casatools().version_string()


def _run(args):
    settings = ImagingSettings.from_args(args)
    image_group(args.ms, args.out_dir, settings, args.pointing_dec, None, args.sky_catalog)


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
        "and subtracted with the per-integration beam (none: no subtraction)",
    )
    ImagingSettings.add_arguments(p)
    p.set_defaults(func=_run)
