# Shared paths and input functions. The group list comes from the manifest checkpoint.
import functools
from pathlib import Path

import pandas as pd

RESULTS = config["results_dir"]
ARCHIVE = config["archive_dir"]
GROUP_PATTERN = r"\d{4}-\d{2}-\d{2}T\d{6}"


wildcard_constraints:
    group=GROUP_PATTERN,


def archive_files():
    """Every raw subband file now in the archive: new files re-trigger the manifest."""
    return sorted(str(p) for p in Path(ARCHIVE).rglob("*_sb*.hdf5"))


@functools.lru_cache(maxsize=4)
def _groups_table(path, mtime):
    return pd.read_parquet(path)


def manifest_groups():
    """The groups table, once the manifest checkpoint has run."""
    path = checkpoints.manifest.get().output.groups
    return _groups_table(path, Path(path).stat().st_mtime)


def group_files(wildcards):
    """The subband files of one group, in frequency order."""
    groups = manifest_groups()
    row = groups[groups.group == wildcards.group]
    if row.empty:
        raise ValueError(f"group {wildcards.group} is not in the manifest")
    return list(row.iloc[0].files)


def all_measurement_sets(wildcards):
    return expand(f"{RESULTS}/ms/{{group}}.ms", group=manifest_groups().group)
