"""ESE alerts as VOEvent 2.0 packets, the IVOA format that transient brokers exchange.

One packet per alert (role "observation" unless told otherwise):

- Who: the author IVORN and the packet's creation time.
- What: Params source_id, significance (sigma), depth (fractional), duration (days, the
  dip's FWHM), shoulder, in_progress (the egress is not yet seen), the fitted epoch as
  MJD, and a Group "in_band" with the slope of depth against lambda^2 (per m^2), its
  error and its significance (a refractive plasma lens is deeper at longer wavelength).
- WhereWhen: the source position (ICRS, deg) and the fitted epoch of the dip's centre
  (ISO time, UTC), in the standard UTC-ICRS-GEO system.
- How / Why: the instrument and the inference "extreme scattering event candidate".

The IVORN is `<author IVORN>#ese-<source_id>-<MJD of the dip>`; the file is named after
the part after '#'. Written atomically.
"""

import datetime as dt
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from dsa110_contimg.atomic import atomic_output

VOEVENT_NS = "http://www.ivoa.net/xml/VOEvent/v2.0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
AUTHOR_IVORN = "ivo://dsa110.caltech/contimg"
POSITION_ERROR_DEG = 5.0 / 3600.0


def _mjd_to_iso(mjd):
    from astropy.time import Time

    return Time(float(mjd), format="mjd", scale="utc").isot


def _num(value):
    """Text of a number for a Param value ('NaN' when missing)."""
    if value is None:
        return "NaN"
    value = float(value)
    return "NaN" if not math.isfinite(value) else f"{value:.6g}"


def _param(parent, name, value, unit=None, ucd=None, data_type="float", text=None):
    attrs = {"name": name, "value": value, "dataType": data_type}
    if unit:
        attrs["unit"] = unit
    if ucd:
        attrs["ucd"] = ucd
    p = ET.SubElement(parent, "Param", attrs)
    if text:
        ET.SubElement(p, "Description").text = text
    return p


def event_name(alert):
    """File-safe event name: ese-<source_id>-<MJD, 2 decimals>."""
    sid = re.sub(r"[^A-Za-z0-9_.+-]", "_", str(alert["source_id"]))
    return f"ese-{sid}-{float(alert['ese_mjd']):.2f}"


def build_packet(
    alert, author_ivorn=AUTHOR_IVORN, role="observation", position_error_deg=POSITION_ERROR_DEG
):
    """The VOEvent 2.0 XML (bytes) for one alert (a candidate-table row as a dict)."""
    ET.register_namespace("voe", VOEVENT_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = ET.Element(
        f"{{{VOEVENT_NS}}}VOEvent",
        {
            "version": "2.0",
            "role": role,
            "ivorn": f"{author_ivorn}#{event_name(alert)}",
            f"{{{XSI_NS}}}schemaLocation": f"{VOEVENT_NS} http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd",
        },
    )
    who = ET.SubElement(root, "Who")
    ET.SubElement(who, "AuthorIVORN").text = author_ivorn
    ET.SubElement(who, "Date").text = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    author = ET.SubElement(who, "Author")
    ET.SubElement(author, "shortName").text = "DSA-110"
    ET.SubElement(author, "title").text = "DSA-110 continuum imaging pipeline"

    what = ET.SubElement(root, "What")
    _param(
        what,
        "source_id",
        str(alert["source_id"]),
        data_type="string",
        ucd="meta.id",
        text="Sky-catalog source identifier",
    )
    _param(
        what,
        "significance",
        _num(alert.get("ese_sigma")),
        unit="sigma",
        ucd="stat.snr",
        text="Significance of the ESE fit against the null models "
        "(constant + trend, outliers rejected), after the look-elsewhere correction",
    )
    _param(
        what,
        "depth",
        _num(alert.get("ese_depth")),
        ucd="phot.flux;arith.ratio",
        text="Fractional depth of the dip below the baseline at its centre",
    )
    _param(
        what,
        "duration",
        _num(alert.get("ese_duration_days")),
        unit="d",
        ucd="time.duration",
        text="Full width at half depth of the dip",
    )
    _param(
        what,
        "shoulder",
        _num(alert.get("ese_shoulder")),
        text="Amplitude of the caustic shoulders (fraction of the baseline)",
    )
    _param(
        what,
        "epoch_mjd",
        _num(alert.get("ese_mjd")),
        unit="d",
        ucd="time.epoch",
        text="Fitted centre of the dip (MJD, UTC)",
    )
    _param(
        what,
        "in_progress",
        str(bool(alert.get("ese_in_progress", False))).lower(),
        data_type="string",
        text="true: the egress is not yet covered by data",
    )
    band = ET.SubElement(what, "Group", {"name": "in_band"})
    _param(
        band,
        "depth_lambda2_slope",
        _num(alert.get("ese_lambda2_slope")),
        unit="m-2",
        text="Slope of the depth against lambda^2 across the sub-bands",
    )
    _param(
        band,
        "depth_lambda2_slope_err",
        _num(alert.get("ese_lambda2_slope_err")),
        unit="m-2",
        text="1-sigma error of the slope",
    )
    _param(
        band,
        "depth_lambda2_sigma",
        _num(alert.get("ese_lambda2_sigma")),
        text="Slope / error (positive: deeper at lower frequency)",
    )

    where = ET.SubElement(root, "WhereWhen")
    obs = ET.SubElement(where, "ObsDataLocation")
    ET.SubElement(obs, "ObservatoryLocation", {"id": "GEOSURFACE"})
    loc = ET.SubElement(obs, "ObservationLocation")
    ET.SubElement(loc, "AstroCoordSystem", {"id": "UTC-ICRS-GEO"})
    coords = ET.SubElement(loc, "AstroCoords", {"coord_system_id": "UTC-ICRS-GEO"})
    time = ET.SubElement(ET.SubElement(coords, "Time", {"unit": "s"}), "TimeInstant")
    ET.SubElement(time, "ISOTime").text = _mjd_to_iso(alert["ese_mjd"])
    pos = ET.SubElement(coords, "Position2D", {"unit": "deg"})
    ET.SubElement(pos, "Name1").text = "RA"
    ET.SubElement(pos, "Name2").text = "Dec"
    value = ET.SubElement(pos, "Value2")
    ET.SubElement(value, "C1").text = _num(alert.get("ra"))
    ET.SubElement(value, "C2").text = _num(alert.get("dec"))
    ET.SubElement(pos, "Error2Radius").text = _num(position_error_deg)

    how = ET.SubElement(root, "How")
    ET.SubElement(how, "Description").text = (
        "DSA-110 continuum images (1311-1499 MHz), forced photometry at catalog "
        "positions, relative flux normalization, Gaussian-lens ESE fit"
    )
    why = ET.SubElement(root, "Why", {"importance": "0.5"})
    inference = ET.SubElement(why, "Inference")
    ET.SubElement(inference, "Concept").text = "extreme scattering event candidate"
    ET.SubElement(inference, "Name").text = str(alert["source_id"])
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def write_packet(alert, directory, **kwargs):
    """Write one alert's packet to `directory`/<event name>.xml; returns the path."""
    path = Path(directory) / f"{event_name(alert)}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Path(tmp).write_bytes(build_packet(alert, **kwargs))
    return path
