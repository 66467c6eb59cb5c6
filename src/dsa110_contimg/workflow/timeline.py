"""Manifest QA for the Snakemake report: which groups and subbands the archive holds.

`manifest_qa` reads the manifest's groups and rejected tables and writes a timeline PNG
(one column per group, one row per subband: used, quarantined, rejected or missing) and a
JSON summary with the counts, so a gap in the archive or a failing subband shows at a
glance in `snakemake --report`.
"""

import json
import logging
from datetime import datetime

import numpy as np
import pandas as pd

from dsa110_contimg.atomic import atomic_output, write_text
from dsa110_contimg.provenance import provenance

log = logging.getLogger(__name__)

GROUP_ID_FORMAT = "%Y-%m-%dT%H%M%S"
USED, QUARANTINED, REJECTED, MISSING = 0, 1, 2, 3
STATE_NAMES = {USED: "used", QUARANTINED: "quarantined", REJECTED: "rejected", MISSING: "missing"}
STATE_COLOURS = {USED: "#2e7d32", QUARANTINED: "#9e9e9e", REJECTED: "#c62828", MISSING: "#ffffff"}


def subband_states(groups, rejected, n_subbands=16, quarantine=()):
    """Per group (rows, in time order) and subband (columns) one of USED, QUARANTINED,
    REJECTED or MISSING; returns (group ids, state array)."""
    quarantine = set(quarantine)
    by_group = {}
    for g in groups.itertuples():
        state = np.full(n_subbands, MISSING, dtype=int)
        used = [int(sb) for sb in g.subbands if 0 <= int(sb) < n_subbands]
        state[used] = QUARANTINED if g.group in quarantine else USED
        by_group[g.group] = state
    for r in rejected.itertuples():
        if not r.group:
            continue
        state = by_group.setdefault(r.group, np.full(n_subbands, MISSING, dtype=int))
        sb = int(r.subband)
        if 0 <= sb < n_subbands and state[sb] == MISSING:
            state[sb] = REJECTED
    ids = sorted(by_group)
    states = np.array([by_group[i] for i in ids]).reshape(len(ids), n_subbands)
    return ids, states


def summarize(groups, rejected, n_subbands=16, quarantine=()):
    """Counts for the QA JSON: groups used / quarantined / incomplete, files rejected."""
    ids, states = subband_states(groups, rejected, n_subbands, quarantine)
    complete = set(groups.group)
    quarantine = set(quarantine)
    return {
        "n_groups_complete": len(complete),
        "n_groups_used": len(complete - quarantine),
        "quarantined": sorted(complete & quarantine),
        "quarantine_not_in_manifest": sorted(quarantine - complete),
        "incomplete_groups": sorted(set(ids) - complete),
        "n_files_rejected": int(len(rejected)),
        "unreadable_files": sorted(rejected.path[rejected.group == ""].tolist()),
        "n_subband_files": {STATE_NAMES[s]: int((states == s).sum()) for s in STATE_NAMES},
        "first_group": ids[0] if ids else None,
        "last_group": ids[-1] if ids else None,
    }


def plot_timeline(ids, states, out_png, title="Archive manifest", gap_minutes=30.0):
    """Draw the subband x group state grid (groups in time order; dashed lines mark gaps
    longer than `gap_minutes`, e.g. between days) and write it atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    n_sub = states.shape[1] if states.size else 16
    fig, ax = plt.subplots(figsize=(10, 3.8), dpi=100)
    cmap = ListedColormap([STATE_COLOURS[s] for s in sorted(STATE_COLOURS)])
    norm = BoundaryNorm(np.arange(len(STATE_COLOURS) + 1) - 0.5, cmap.N)
    grid = states.T if ids else np.full((n_sub, 1), MISSING)
    ax.imshow(
        grid,
        cmap=cmap,
        norm=norm,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        extent=(-0.5, grid.shape[1] - 0.5, -0.5, n_sub - 0.5),
    )
    if ids:
        times = [datetime.strptime(i, GROUP_ID_FORMAT) for i in ids]
        gaps = [
            k
            for k in range(1, len(times))
            if (times[k] - times[k - 1]).total_seconds() > gap_minutes * 60
        ]
        for k in gaps:
            ax.axvline(k - 0.5, color="k", ls="--", lw=0.8)
        step = max(1, int(np.ceil(len(ids) / 8)))
        ticks = sorted(set(range(0, len(ids), step)) | set(gaps))
        ax.set_xticks(ticks)
        ax.set_xticklabels([times[k].strftime("%Y-%m-%d\n%H:%M:%S") for k in ticks], fontsize=7)
    ax.set_ylabel("subband")
    ax.set_xlabel("group (in time order; dashed: gap > %.0f min)" % gap_minutes)
    counts = {STATE_NAMES[s]: int((states == s).sum()) for s in STATE_NAMES}
    ax.set_title(
        f"{title}: {len(ids)} groups; subband files "
        + ", ".join(f"{v} {k}" for k, v in counts.items()),
        fontsize=9,
    )
    ax.legend(
        handles=[
            Patch(facecolor=STATE_COLOURS[s], edgecolor="k", label=STATE_NAMES[s])
            for s in STATE_NAMES
        ],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    fig.tight_layout()
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def manifest_qa(groups_path, rejected_path, out_png, out_json, n_subbands=16, quarantine=()):
    """Write the manifest timeline PNG and QA summary JSON; returns the summary."""
    groups = pd.read_parquet(groups_path)
    rejected = pd.read_parquet(rejected_path)
    ids, states = subband_states(groups, rejected, n_subbands, quarantine)
    summary = summarize(groups, rejected, n_subbands, quarantine)
    for name in summary["quarantine_not_in_manifest"]:
        log.warning("quarantined group %s is not a complete group of the manifest", name)
    plot_timeline(ids, states, out_png)
    summary["provenance"] = provenance(
        [groups_path, rejected_path], {"n_subbands": n_subbands, "quarantine": sorted(quarantine)}
    )
    write_text(json.dumps(summary, indent=1) + "\n", out_json)
    log.info(
        "manifest QA: %d groups used, %d quarantined, %d incomplete, %d files rejected",
        summary["n_groups_used"],
        len(summary["quarantined"]),
        len(summary["incomplete_groups"]),
        summary["n_files_rejected"],
    )
    return summary


def _run(args):
    manifest_qa(
        args.groups, args.rejected, args.png, args.json, args.n_subbands, args.quarantine or ()
    )


def register_cli(sub):
    p = sub.add_parser("qa-manifest", help="manifest timeline plot and QA summary")
    p.add_argument("groups", help="manifest groups Parquet")
    p.add_argument("rejected", help="manifest rejected-files Parquet")
    p.add_argument("--png", required=True, help="timeline plot to write")
    p.add_argument("--json", required=True, help="QA summary to write")
    p.add_argument("--n-subbands", type=int, default=16)
    p.add_argument("--quarantine", nargs="*", help="quarantined group ids")
    p.set_defaults(func=_run)
