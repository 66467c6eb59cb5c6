# Shared paths and input functions. The group list comes from the manifest checkpoint.
import functools
import shlex
from pathlib import Path

import pandas as pd
from snakemake.logging import logger

from dsa110_contimg.configuration import stage_config_json
from dsa110_contimg.sanity import find_rejections

RESULTS = config["results_dir"]
ARCHIVE = config["archive_dir"]


def _sky_catalog():
    if config.get("sky_catalog"):
        return config["sky_catalog"]
    default = Path(ARCHIVE) / "sky_catalog.csv"
    return str(default) if default.exists() else None


# Known sources for calibrator field models and forced photometry (config sky_catalog).
SKY_CATALOG = _sky_catalog()
GROUP_PATTERN = r"\d{4}-\d{2}-\d{2}T\d{6}"


wildcard_constraints:
    group=GROUP_PATTERN,


def raw_archive_state(wildcards):
    """A digest of the archive's files (names, sizes, times): new raw files change it and
    so re-trigger the manifest (Snakemake's params rerun trigger)."""
    from dsa110_contimg.ingest.manifest import archive_state

    return archive_state(ARCHIVE)


@functools.lru_cache(maxsize=4)
def _groups_table(path, mtime):
    return pd.read_parquet(path)


@functools.lru_cache(maxsize=8)
def _column_index(path, mtime, column):
    """{group: value of `column`} of a groups or selection table: one dictionary look-up
    per job instead of a scan of the whole table (a month has ~8,400 groups)."""
    table = _groups_table(path, mtime)
    return dict(zip(table.group, table[column]))


# Groups left out of every stage and aggregate (config `quarantine`), e.g. one whose data
# keep failing; their products already written are kept but no longer used.
QUARANTINE = frozenset(config.get("quarantine") or [])


def manifest_groups():
    """The groups table, once the manifest checkpoint has run, without quarantined groups."""
    path = checkpoints.manifest.get().output.groups
    groups = _groups_table(path, Path(path).stat().st_mtime)
    return groups[~groups.group.isin(QUARANTINE)]


def group_files(wildcards):
    """The subband files of one group, in frequency order."""
    if wildcards.group in QUARANTINE:
        raise ValueError(f"group {wildcards.group} is quarantined (config quarantine)")
    path = checkpoints.manifest.get().output.groups
    files = _column_index(path, Path(path).stat().st_mtime, "files")
    if wildcards.group not in files:
        raise ValueError(f"group {wildcards.group} is not in the manifest")
    return list(files[wildcards.group])


def all_measurement_sets(wildcards):
    return expand(f"{RESULTS}/ms/{{group}}.ms", group=manifest_groups().group)


# Calibration (rules/calibrate.smk): calibrator groups after the manifest checkpoint,
# each group's calibration after the calibration_selection checkpoint.
def calibrator_groups():
    """Groups in which a catalog calibrator transits (manifest column has_calibrator)."""
    groups = manifest_groups()
    if "has_calibrator" not in groups:
        return []
    return list(groups.group[groups.has_calibrator.astype(bool)])


def calibrator_qa_files(wildcards):
    return expand(f"{RESULTS}/qa/cal/{{calgroup}}.json", calgroup=calibrator_groups())


def calibration_selection():
    """The selection table (group, calgroup, separation_hours, status, reason)."""
    path = checkpoints.calibration_selection.get().output.selection
    return _groups_table(path, Path(path).stat().st_mtime)


def calibration_for_group(wildcards):
    """The calibration directory a group's apply step reads (none when uncalibrated)."""
    path = checkpoints.calibration_selection.get().output.selection
    calgroups = _column_index(path, Path(path).stat().st_mtime, "calgroup")
    if wildcards.group not in calgroups:
        raise ValueError(f"group {wildcards.group} is not in the calibration selection")
    calgroup = calgroups[wildcards.group]
    return [f"{RESULTS}/cal/{calgroup}"] if calgroup else []


def calibrated_groups():
    """Groups that get results/ms_cal/{group}.ms (calibrated, or uncalibrated fallback)."""
    sel = calibration_selection()
    return [g for g in sel.group[sel.status != "skip"] if g not in QUARANTINE]


def all_calibrated_measurement_sets(wildcards):
    return expand(f"{RESULTS}/ms_cal/{{group}}.ms", group=calibrated_groups())


# Images, mosaics and their QA (rules/image.smk, mosaic.smk, qa.smk).
def all_images(wildcards):
    return expand(f"{RESULTS}/images/{{group}}/image.fits", group=calibrated_groups())


def imaged(kind):
    """Input function: every calibrated group's images/{group}/{kind}.fits."""
    return lambda wildcards: expand(
        f"{RESULTS}/images/{{group}}/{kind}.fits", group=calibrated_groups()
    )


def mosaic_plan():
    """{mosaic: [groups]} over the groups that are imaged (see mosaic.plan_mosaics)."""
    manifest = checkpoints.manifest.get().output.groups
    selection = checkpoints.calibration_selection.get().output.selection
    return _mosaic_plan(
        manifest, Path(manifest).stat().st_mtime, selection, Path(selection).stat().st_mtime
    )


@functools.lru_cache(maxsize=4)
def _mosaic_plan(manifest, manifest_mtime, selection, selection_mtime):
    """The plan is computed once per state of its two tables, not once per mosaic job."""
    from dsa110_contimg.mosaic import plan_mosaics

    groups = manifest_groups()
    groups = groups[groups.group.isin(calibrated_groups())]
    return plan_mosaics(groups, config["mosaic"]["groups_per_mosaic"], config["mosaic"]["stride"])


def mosaic_members(wildcards):
    """The images, beams, residuals and QA reports of one mosaic's groups."""
    plan = mosaic_plan()
    if wildcards.mosaic not in plan:
        raise ValueError(f"mosaic {wildcards.mosaic} is not in the mosaic plan")
    members = plan[wildcards.mosaic]
    return {
        "images": expand(f"{RESULTS}/images/{{group}}/image.fits", group=members),
        "pbs": expand(f"{RESULTS}/images/{{group}}/pb.fits", group=members),
        "residuals": expand(f"{RESULTS}/images/{{group}}/residual.fits", group=members),
        "qa": expand(f"{RESULTS}/qa/image/{{group}}.json", group=members),
    }


def all_mosaics(wildcards):
    return expand(f"{RESULTS}/mosaics/{{mosaic}}/mosaic.fits", mosaic=sorted(mosaic_plan()))


def all_qa_reports(wildcards):
    """Every QA report qa/summary.parquet gathers: flagging, calibration, images, mosaics,
    and the records of products rejected by their sanity checks (module sanity)."""
    reports = expand(f"{RESULTS}/qa/flag/{{group}}.json", group=manifest_groups().group)
    reports += calibrator_qa_files(wildcards)
    reports += expand(f"{RESULTS}/qa/apply/{{group}}.json", group=calibrated_groups())
    reports += expand(f"{RESULTS}/qa/image/{{group}}.json", group=calibrated_groups())
    reports += expand(f"{RESULTS}/qa/mosaic/{{mosaic}}.json", mosaic=sorted(mosaic_plan()))
    return reports + [str(p) for p in find_rejections(RESULTS)]


def scaled_by_attempt(section, key):
    """A resource that grows with each retry: config[section][key] x attempt."""
    return lambda wildcards, attempt: config[section][key] * attempt


def catalog_option(wildcards, input):
    """`--catalog <path>` when the rule's `catalog` input holds the sky catalog, else ""."""
    return f"--catalog {input.catalog[0]!r}" if input.catalog else ""


def json_config(section, settings=None):
    """The config section `section` as a rule's --config-json (stage_config_json)."""
    return stage_config_json(config, section, settings)


# Forced photometry and ESE detection (rules/photometry.smk).
# Forced-photometry positions (config photometry_catalog): the sky catalog, the reference
# catalog made from the data, or their union.
PHOTOMETRY_CATALOG = config["photometry_catalog"]


def photometry_catalog(wildcards):
    """The catalog forced photometry and normalization read."""
    if PHOTOMETRY_CATALOG == "reference":
        return f"{RESULTS}/catalog/reference.parquet"
    if not SKY_CATALOG:
        raise ValueError(
            f"photometry_catalog: {PHOTOMETRY_CATALOG} needs a sky catalog: set config "
            "sky_catalog, or photometry_catalog: reference"
        )
    if PHOTOMETRY_CATALOG == "union":
        return f"{RESULTS}/catalog/union.parquet"
    return SKY_CATALOG


def photometry_parquets(wildcards):
    return expand(f"{RESULTS}/photometry/images/{{group}}.parquet", group=calibrated_groups())


def photometry_qa_reports(wildcards):
    return expand(f"{RESULTS}/qa/image/{{group}}.json", group=calibrated_groups())


def photometry_flag_reports(wildcards):
    return expand(f"{RESULTS}/qa/flag/{{group}}.json", group=calibrated_groups())


def all_photometry(wildcards):
    """Per-mosaic photometry plus the whole chain to alerts (none without a sky catalog)."""
    if not SKY_CATALOG and PHOTOMETRY_CATALOG != "reference":
        logger.warning(
            "no sky catalog (config sky_catalog, or the archive's sky_catalog.csv): "
            "forced photometry and ESE detection are not run (or set photometry_catalog: "
            "reference)"
        )
        return []
    mosaics = expand(
        f"{RESULTS}/photometry/mosaics/{{mosaic}}.parquet", mosaic=sorted(mosaic_plan())
    )
    return mosaics + [f"{RESULTS}/ese/alerts.last.json", f"{RESULTS}/ese/candidates.html"]
