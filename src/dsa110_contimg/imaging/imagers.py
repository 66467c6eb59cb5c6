"""The imagers: tclean (CASA) and WSClean, each run on one MS column and exported to a
restored image and a residual in FITS.

w-terms: the field is imaged to the first null of the primary beam (~6.4 deg across at
1.4 GHz), where the w-term phase reaches ~2 rad on the longest baselines, so tclean uses
w-projection (explicit ``wprojplanes``; -1 fails on these MSs) and WSClean its w-gridder.
"""

import logging
import math
import shutil
import subprocess
from pathlib import Path

from dsa110_contimg.primary_beam import fwhm_rad

log = logging.getLogger(__name__)


def tclean_image(ms, stem, settings, column):
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


def smearing_track_wavelengths(lowest_freq_hz, max_loss):
    """Longest uv track (wavelengths) along which a visibility may be averaged in time
    while a point source at the primary beam's half-power radius r (at the band's lowest
    frequency, where the beam is widest) loses at most `max_loss` of its amplitude.

    Averaging along a straight track of length S multiplies the visibility of a source at
    offset r by sinc(pi S r) = sin(x) / x, x = pi S r; so S = x / (pi r) where
    1 - sin(x) / x = max_loss (x ~ sqrt(6 max_loss)). 0 when max_loss is 0."""
    if max_loss <= 0:
        return 0.0
    if max_loss >= 0.5:
        raise ValueError(f"time_smearing_max must be below 0.5, not {max_loss}")
    x = math.sqrt(6 * max_loss)
    for _ in range(50):
        f = 1 - math.sin(x) / x - max_loss
        df = (math.sin(x) - x * math.cos(x)) / x**2
        x -= f / df
    radius = fwhm_rad(lowest_freq_hz) / 2
    return x / (math.pi * radius)


def wsclean_image(ms, stem, settings, column, freqs_hz):
    """Run WSClean (the ducc w-gridder, without touching the MS's MODEL_DATA); returns the
    FITS paths of the restored image and residual. The w-gridder is ~7x faster here than
    WSClean's default w-stacking (30 s against 207 s for a 2048^2 image of a demo-size
    group with 40 w-layers), with a residual rms as low.

    With settings.time_smearing_max > 0, WSClean averages each baseline in time over
    floor(S / (2 pi |b| / lambda_min dt)) integrations (|b| the antennas' separation, dt
    the integration in days; the uv track of an integration is at most 2 pi |b| dt
    wavelengths), S from `smearing_track_wavelengths`: short baselines, whose uv points
    barely move, are gridded once per several integrations. The longest baselines are
    not averaged.

    With settings.gridders = N > 1, the band is gridded as N parts of adjacent channels
    by N single-threaded gridders side by side (-channels-out N -parallel-gridding N),
    deconvolved jointly (-join-channels: peaks found in the band's sum) and restored as
    one multi-frequency image of the whole band (the -MFS- products): on one thread each,
    the images are bit-identical from run to run, unlike one gridder on N threads."""
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
    gridders = max(1, min(settings.gridders, len(freqs_hz)))
    if gridders > 1:
        cmd += ["-channels-out", str(gridders), "-join-channels"]
        cmd += ["-parallel-gridding", str(gridders)]
    track = smearing_track_wavelengths(min(freqs_hz), settings.time_smearing_max)
    if track > 0:
        cmd += ["-baseline-averaging", f"{track:.4f}"]
    if settings.threshold_jy > 0:
        cmd += ["-threshold", str(settings.threshold_jy)]
    cmd.append(str(ms))
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"wsclean failed on {ms} (exit {proc.returncode}):\n{tail}")
    for line in proc.stdout.splitlines():
        if any(k in line for k in ("major iterations were performed", "Performed", "averaging")):
            log.info("wsclean: %s", line.strip())
    prefix = f"{stem}-MFS" if gridders > 1 else str(stem)
    return Path(f"{prefix}-image.fits"), Path(f"{prefix}-residual.fits")


def casa_version():
    from dsa110_contimg.casaenv import casatools

    return casatools().version_string()


def run_imager(ms, stem, settings, column, freqs_hz):
    """Image `column` of `ms` with settings.imager; returns (image FITS, residual FITS,
    imager version); `freqs_hz` are the MS's channel frequencies. tclean has no
    baseline-dependent averaging nor parallel gridders (time_smearing_max and gridders
    are WSClean's)."""
    if settings.imager == "tclean":
        image_fits, residual_fits = tclean_image(ms, stem, settings, column)
        return image_fits, residual_fits, casa_version()
    image_fits, residual_fits = wsclean_image(ms, stem, settings, column, freqs_hz)
    return image_fits, residual_fits, wsclean_version()
