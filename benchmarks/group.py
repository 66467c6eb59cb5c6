"""Benchmark: one full-size DSA-110 group (96 of 117 stations, 16 x 48 channels,
24 integrations) through the per-group chain as the workflow runs it, with the default
config: convert (with flagging), calibrate apply, image, QA of the image, forced
photometry. Prints seconds and peak memory per stage, the total, and its ratio to the
309 s a group takes to arrive.

    flock /tmp/dsa110-bench.lock nice .venv/bin/python benchmarks/group.py [--compare-tclean]

Each stage is the `dsa110-contimg` command its rule runs, with the config section the
rule passes as `--config-json` (config/config.yaml, checked against config/schema.yaml as
the Snakefile does). The group is simulated once (`simulate --preset full` with the
calibrator J0834+555 transiting in it) into WORKDIR/archive and reused; the calibrator's
bandpass and gains are solved once on it (`calibrate-solve`, the once-a-day solve,
printed apart and not counted in the total), and the chain applies them to the same
group. The manifest and the calibrator selection, run once per archive, are set-up.
`--n-antennas` / `--n-channels` / `--n-integrations` shrink the group for a quick check;
`--set image.gridders=2` (repeatable) measures another setting.
Each command's output goes to WORKDIR/results/logs/STAGE.log, as a rule's log.
Memory is measured as in measure.py: peak summed PSS of each command's process tree.
The last line is `total_s=<s> peak_gib=<GiB> budget_ratio=<total/309>`.
"""

import argparse
import json
import shutil
from pathlib import Path

import yaml

from measure import CLI, REPO, measure, measure_cpu, run

BUDGET_S = 309.0
CALIBRATOR = "J0834+555"


def load_config():
    """config/config.yaml as the Snakefile reads it (validated; paths not checked: the
    benchmark names its own archive and results)."""
    from dsa110_contimg.configuration import check_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    check_config(config, REPO / "config" / "schema.yaml", check_paths=False)
    return config


def ensure_archive(workdir, sim_args):
    """The simulated group with a calibrator in it, re-simulated when the sizes change."""
    archive = workdir / "archive"
    stamp = archive / "benchmark_args.json"
    if stamp.exists() and json.loads(stamp.read_text()) == sim_args:
        return archive
    shutil.rmtree(archive, ignore_errors=True)
    cmd = [CLI, "simulate", "--preset", "full", "--out", archive]
    cmd += ["--calibrator", f"{CALIBRATOR}:0", "--calibrator-catalog", REPO / sim_args["catalog"]]
    for key in ("n_antennas", "n_channels", "n_integrations"):
        if sim_args[key] is not None:
            cmd += [f"--{key.replace('_', '-')}", sim_args[key]]
    seconds, _ = measure([str(c) for c in cmd])
    print(f"simulated the group in {seconds:.0f} s (not counted)", flush=True)
    stamp.write_text(json.dumps(sim_args))
    return archive


def main():
    from dsa110_contimg.calibration.solve import SolveSettings
    from dsa110_contimg.configuration import stage_config_json
    from dsa110_contimg.imaging.image import ImagingSettings
    from dsa110_contimg.photometry.forced import PhotometrySettings
    from dsa110_contimg.qa import QASettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "work" / "group")
    parser.add_argument("--n-antennas", type=int, help="simulate fewer antennas (quick check)")
    parser.add_argument("--n-channels", type=int, help="channels per subband (quick check)")
    parser.add_argument("--n-integrations", type=int, help="integrations (quick check)")
    parser.add_argument(
        "--compare-tclean",
        action="store_true",
        help="also image the calibrated MS with tclean (the old default) and print its time",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (YAML), e.g. --set image.gridders=2; repeatable",
    )
    args = parser.parse_args()
    config = load_config()
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in config or name not in config[section]:
            raise SystemExit(f"--set {item}: no config key {key}")
        config[section][name] = yaml.safe_load(value)
    cal_catalog = config["calibrate"]["catalog"]
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    archive = ensure_archive(
        workdir,
        {
            "n_antennas": args.n_antennas,
            "n_channels": args.n_channels,
            "n_integrations": args.n_integrations,
            "catalog": cal_catalog,
        },
    )
    sky = archive / "sky_catalog.csv"
    files = sorted(str(p) for p in archive.glob("*.hdf5"))
    res = workdir / "results"
    shutil.rmtree(res, ignore_errors=True)
    for sub in ("manifest", "ms", "ms_cal", "cal", "qa", "images", "photometry"):
        (res / sub).mkdir(parents=True)

    run(
        [CLI, "manifest", archive, "--out", res / "manifest/groups.parquet",
         "--rejected", res / "manifest/rejected.parquet", "--calibrators", REPO / cal_catalog,
         "--tolerance-s", config["manifest"]["tolerance_s"],
         "--n-subbands", config["manifest"]["n_subbands"],
         "--beam-fraction", config["calibrate"]["beam_fraction"]]
    )  # fmt: skip
    import pandas as pd

    groups = pd.read_parquet(res / "manifest/groups.parquet")
    if len(groups) != 1 or not bool(groups.has_calibrator.iloc[0]):
        raise SystemExit(f"{archive}: expected one calibrator group, manifest has\n{groups}")
    group = groups.group.iloc[0]
    ms, ms_cal = res / f"ms/{group}.ms", res / f"ms_cal/{group}.ms"
    img = res / f"images/{group}"
    threads = config["image"]["threads"]
    if config["image"]["imager"] == "wsclean" and config["image"].get("deterministic"):
        threads = 1

    def section(name, settings=None):
        return stage_config_json(config, name, settings)

    stages = {
        "convert": [CLI, "convert", *files, "--group", group, "--out", ms,
                    "--writer", config["convert"]["writer"],
                    "--workers", config["convert"]["workers"],
                    "--flag-qa-json", res / f"qa/{group}.flag.json",
                    "--flag-qa-png", res / f"qa/{group}.flag.png",
                    "--flag-config-json", section("flag"),
                    "--max-channel-width-khz", config["convert"]["max_channel_width_khz"]],
        "calibrate_solve": [CLI, "calibrate-solve", ms,
                            "--manifest", res / "manifest/groups.parquet",
                            "--catalog", REPO / cal_catalog, "--group", group,
                            "--out", res / f"cal/{group}",
                            "--qa-json", res / f"qa/{group}.cal.json",
                            "--qa-png", res / f"qa/{group}.cal.png",
                            "--sky-model", sky,
                            "--config-json", section("calibrate", SolveSettings)],
        "calibrate_select": [CLI, "calibrate-select", res / f"qa/{group}.cal.json",
                             "--manifest", res / "manifest/groups.parquet",
                             "--out", res / "cal/selection.parquet",
                             "--report", res / "cal/no_calibrator.txt",
                             "--validity-hours", config["calibrate"]["validity_hours"],
                             "--fallback", config["calibrate"]["fallback"]],
        "calibrate_apply": [CLI, "calibrate-apply", ms,
                            "--selection", res / "cal/selection.parquet", "--group", group,
                            "--cal-root", res / "cal", "--out", ms_cal,
                            "--qa-json", res / f"qa/{group}.apply.json",
                            "--interp", config["calibrate"]["interp"]],
        "image": [CLI, "image", ms_cal, "--out-dir", img, "--sky-catalog", sky,
                  "--config-json", section("image", ImagingSettings), "--threads", threads],
        "qa_image": [CLI, "qa-image", img / "image.fits", "--pb", img / "pb.fits",
                     "--residual", img / "residual.fits", "--catalog", sky,
                     "--config-json", section("qa", QASettings),
                     "--json", res / f"qa/{group}.image.json",
                     "--png", res / f"qa/{group}.image.png"],
        "photometry": [CLI, "photometry", img / "image.fits", "--pb", img / "pb.fits",
                       "--catalog", sky, "--out", res / f"photometry/{group}.parquet",
                       "--image-id", group,
                       "--config-json", section("photometry", PhotometrySettings)],
    }  # fmt: skip
    per_group = ("convert", "calibrate_apply", "image", "qa_image", "photometry")
    results = {}
    (res / "logs").mkdir()
    for name, cmd in stages.items():
        with open(res / f"logs/{name}.log", "w") as log:
            results[name] = measure_cpu([str(c) for c in cmd], stdout=log, stderr=log)
        print(
            f"{name}: {results[name][0]:.1f} s, peak {results[name][1]:.2f} GiB, "
            f"CPU {results[name][2]:.1f} s",
            flush=True,
        )
    cal_qa = json.loads((res / f"qa/{group}.cal.json").read_text())
    apply_qa = json.loads((res / f"qa/{group}.apply.json").read_text())
    print(
        f"calibration: solve QA {cal_qa['status']} ({cal_qa['calibrator']}, residual ratio "
        f"{cal_qa['residual_ratio']:.3f}); group {apply_qa['calibration']}",
        flush=True,
    )
    if apply_qa["calibration"] != "calibrated":
        raise SystemExit(f"{res}/qa/{group}.apply.json: the group was not calibrated")

    if args.compare_tclean:
        cfg = dict(json.loads(section("image", ImagingSettings)), imager="tclean")
        out = res / f"images_tclean/{group}"
        with open(res / "logs/image_tclean.log", "w") as log:
            sec, mem, cpu = measure_cpu(
            [str(c) for c in (CLI, "image", ms_cal, "--out-dir", out, "--sky-catalog", sky,
                              "--config-json", json.dumps(cfg, sort_keys=True),
                              "--threads", config["image"]["threads"])],
                stdout=log, stderr=log,
            )  # fmt: skip
        print(
            f"image with tclean (old default, for comparison): {sec:.1f} s, peak {mem:.2f} "
            f"GiB, CPU {cpu:.1f} s"
        )

    n_ant = args.n_antennas or 96
    n_chan = 16 * (args.n_channels or 48)
    print(
        f"group {group}: {n_ant} antennas, {n_chan} channels, "
        f"{args.n_integrations or 24} integrations; imager {config['image']['imager']}, "
        f"{threads} thread(s), {config['image']['gridders']} gridder(s)"
    )
    print(f"{'stage':<18}{'seconds':>10}{'peak GiB':>10}{'CPU s':>10}")
    for name in per_group:
        wall, peak, cpu = results[name]
        print(f"{name:<18}{wall:>10.1f}{peak:>10.2f}{cpu:>10.1f}")
    print(f"once a day (not in the total): calibrate_solve {results['calibrate_solve'][0]:.1f} s")
    total = sum(results[n][0] for n in per_group)
    peak = max(results[n][1] for n in per_group)
    cpu = sum(results[n][2] for n in per_group)
    print(
        f"CPU {cpu:.1f} s per group: with two groups in flight (the workflow on 2 cores) "
        f"one group every ~{cpu / 2:.0f} s of wall time, {cpu / 2 / BUDGET_S:.2f} of the budget"
    )
    print(f"total_s={total:.1f} peak_gib={peak:.2f} budget_ratio={total / BUDGET_S:.3f}")


if __name__ == "__main__":
    main()
