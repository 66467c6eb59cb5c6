"""Calibrator sky model: MODEL_DATA = calibrator point source (component list + `ft`)
plus the brighter sky-catalog sources near it (direct Fourier transform), each scaled
by the Airy primary beam as the source drifts through, per integration and channel.

Conventions: CASA's, V = S(f) A(t, f) exp(+2 pi i (u l + v m + w (n - 1)) f / c).
"""

import shutil
from pathlib import Path

import numpy as np

from dsa110_contimg import instrument as inst
from dsa110_contimg.calibrators import calibrator_spectrum
from dsa110_contimg.catalogs import DEFAULT_SPECTRAL_INDEX
from dsa110_contimg.primary_beam import angular_separation, beam_tracks


def unique_times(ms):
    from casacore import tables

    with tables.table(str(ms), ack=False) as t:
        times = t.getcol("TIME")
    return np.unique(times, return_inverse=True)


def chan_freqs(ms):
    from casacore import tables

    with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as t:
        return t.getcol("CHAN_FREQ")[0]


def primary_beam_track(ms, ra_deg, dec_deg, pointing_dec_deg):
    """Airy power response [n_time, n_chan] toward (ra, dec) for each integration of
    `ms`: the dish points at hour angle 0, apparent declination `pointing_dec_deg`."""
    return primary_beam_tracks(ms, [ra_deg], [dec_deg], pointing_dec_deg)[0]


def primary_beam_tracks(ms, ra_deg, dec_deg, pointing_dec_deg):
    """`primary_beam_track` of many sources at once: [n_source, n_time, n_chan]."""
    times, _ = unique_times(ms)
    return beam_tracks(
        times / 86400.0, np.asarray(ra_deg), np.asarray(dec_deg), pointing_dec_deg, chan_freqs(ms)
    )


def predict_components(ms, cl_path):
    """MODEL_DATA = the visibilities of the component list `cl_path` (casatools' imager
    ft, as casatasks' ft does with usescratch=True; without importing casatasks, 5 s)."""
    from dsa110_contimg.casaenv import casatools

    im = casatools().imager()
    try:
        im.open(str(ms), usescratch=True)
        im.selectvis(field="", spw="")
        im.ft(model=[""], complist=str(cl_path), incremental=False)
    finally:
        im.close()


def write_point_model(ms, ra_deg, dec_deg, flux_jy, spectral_index, pointing_dec_deg, workdir):
    """MODEL_DATA of `ms` = point source (component list + ft) x primary beam track."""
    from casacore import tables

    from dsa110_contimg.casaenv import casatools

    cl_path = Path(workdir) / "model.cl"
    if cl_path.exists():
        shutil.rmtree(cl_path)
    cl = casatools().componentlist()
    cl.addcomponent(
        dir=f"J2000 {ra_deg}deg {dec_deg}deg",
        flux=[flux_jy, 0, 0, 0],
        fluxunit="Jy",
        freq=f"{inst.REFERENCE_FREQ_HZ}Hz",
        shape="point",
        spectrumtype="spectral index",
        index=spectral_index,
    )
    cl.rename(str(cl_path))
    cl.close()
    predict_components(ms, cl_path)
    beam = primary_beam_track(ms, ra_deg, dec_deg, pointing_dec_deg)
    _, tidx = unique_times(ms)
    with tables.table(str(ms), readonly=False, ack=False) as t:
        model = t.getcol("MODEL_DATA")
        model *= beam[tidx][:, :, None]
        t.putcol("MODEL_DATA", model)
    shutil.rmtree(cl_path)


def field_sources(sky_model, ra0_deg, dec0_deg, calibrator, min_flux_jy, radius_deg):
    """Sky-model sources to add to the calibrator model: brighter than `min_flux_jy`,
    within `radius_deg` of the field centre, and not the calibrator itself."""
    from dsa110_contimg.catalogs import read_sky_catalog

    sky = read_sky_catalog(sky_model)
    if "flux_jy" not in sky:
        raise ValueError(f"{sky_model}: sky model lacks column flux_jy")
    if "spectral_index" not in sky:
        sky = sky.assign(spectral_index=DEFAULT_SPECTRAL_INDEX)
    ra, dec = np.radians(sky.ra_deg.to_numpy()), np.radians(sky.dec_deg.to_numpy())
    near = angular_separation(np.radians(ra0_deg), np.radians(dec0_deg), ra, dec)
    off_cal = angular_separation(
        np.radians(calibrator["ra_deg"]), np.radians(calibrator["dec_deg"]), ra, dec
    )
    keep = (
        (sky.flux_jy.to_numpy() >= min_flux_jy)
        & (near <= np.radians(radius_deg))
        & (off_cal > np.radians(1.0 / 60))
    )
    return sky[keep].reset_index(drop=True)


def add_field_sources(ms, sources, pointing_dec_deg, chunk_rows=20000):
    """Add point sources x primary-beam track to MODEL_DATA by direct Fourier transform,
    V = S(f) A(t, f) exp(+2 pi i (u l + v m + w (n - 1)) f / c) with the MS's UVW (the
    convention CASA's ft uses for these MSs), so field sources in the calibrator's beam
    are not absorbed into the gains."""
    from casacore import tables

    if sources.empty:
        return 0
    freqs = chan_freqs(ms)
    _, tidx = unique_times(ms)
    with tables.table(f"{ms}/FIELD", ack=False) as t:
        ra0, dec0 = t.getcol("PHASE_DIR")[0, 0]
    tracks = []
    beams = primary_beam_tracks(ms, sources.ra_deg, sources.dec_deg, pointing_dec_deg)
    for src, beam in zip(sources.itertuples(), beams):
        ra, dec = np.radians(src.ra_deg), np.radians(src.dec_deg)
        l = np.cos(dec) * np.sin(ra - ra0)
        m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
        n = np.sqrt(1.0 - l * l - m * m)
        spectrum = calibrator_spectrum(freqs, src.flux_jy, src.spectral_index)
        tracks.append((l, m, n - 1.0, spectrum[None, :] * beam))
    with tables.table(str(ms), readonly=False, ack=False) as t:
        for start in range(0, t.nrows(), chunk_rows):
            nrow = min(chunk_rows, t.nrows() - start)
            uvw = t.getcol("UVW", startrow=start, nrow=nrow)
            model = t.getcol("MODEL_DATA", startrow=start, nrow=nrow)
            rows = tidx[start : start + nrow]
            added = np.zeros(model.shape[:2], complex)
            for l, m, n1, flux in tracks:
                tau = (uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * n1) / inst.SPEED_OF_LIGHT
                added += flux[rows] * np.exp(2j * np.pi * tau[:, None] * freqs[None, :])
            model += added[:, :, None]
            t.putcol("MODEL_DATA", model, startrow=start, nrow=nrow)
    return len(tracks)
