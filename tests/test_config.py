"""A wrong configuration value stops the workflow before any job runs with one message
naming every bad key: wrong type, out of range, not an allowed value, unknown (misspelt)
key, missing input file or directory. Each stage's settings come from its config
section by one route, with the defaults in one place, so that the workflow and the
command line run the same computation."""

import copy
import json
import shlex
import subprocess

import pytest
import yaml

from dsa110_contimg.configuration import ConfigError, check_config, config_problems

from pipeline import BIN, REPO, env

SCHEMA = REPO / "config" / "schema.yaml"


@pytest.fixture
def defaults():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_defaults_are_valid(defaults, tmp_path):
    defaults["archive_dir"] = str(tmp_path)
    assert config_problems(defaults, SCHEMA, base=REPO) == []


def test_each_problem_is_named_by_its_key(defaults, tmp_path):
    config = copy.deepcopy(defaults)
    config["archive_dir"] = str(tmp_path / "no-such-archive")
    config["archve_dir"] = "/data/raw"
    config["sky_catalog"] = str(tmp_path / "nvss.csv")
    config["calibrate"]["catalog"] = "config/no-such-calibrators.csv"
    config["calibrate"]["fallback"] = "none"
    config["image"]["imsize"] = "big"
    config["image"]["imsiz"] = 2048
    config["mosaic"]["weight_cut"] = 1.5
    config["manifest"]["n_subbands"] = 0
    config["quarantine"] = ["2026-01-01"]
    del config["convert"]["workers"]
    assert config_problems(config, SCHEMA, base=REPO) == [
        "archve_dir: unknown key (did you mean archive_dir?)",
        "calibrate.fallback: 'none' is not one of uncalibrated, skip",
        "convert.workers: missing",
        "image.imsiz: unknown key (did you mean imsize?)",
        "image.imsize: 'big' is not an integer",
        "manifest.n_subbands: 0 is below the minimum 1",
        "mosaic.weight_cut: 1.5 must be less than 1",
        "quarantine[0]: '2026-01-01' does not match the pattern ^\\d{4}-\\d{2}-\\d{2}T\\d{6}$",
        f"archive_dir: directory {tmp_path / 'no-such-archive'} does not exist",
        f"sky_catalog: file {tmp_path / 'nvss.csv'} does not exist",
        "calibrate.catalog: file config/no-such-calibrators.csv does not exist",
    ]
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA, base=REPO)
    assert str(err.value).startswith(
        "invalid configuration (config/config.yaml with "
        "--configfile and --config overrides):\n  archve_dir: "
    )
    # without the path checks (snakemake --lint) only the values are judged
    assert len(config_problems(config, SCHEMA, check_paths=False, base=REPO)) == 8


def test_nested_command_line_overrides_get_their_types(defaults, tmp_path):
    """snakemake keeps the scalars of `--config image='{imsize: 2048}'` as strings."""
    defaults["archive_dir"] = str(tmp_path)
    defaults["image"].update(imsize="2048", robust="-0.5")
    defaults["convert"]["workers"] = "two"
    assert config_problems(defaults, SCHEMA, base=REPO) == [
        "convert.workers: 'two' is not an integer"
    ]
    assert defaults["image"]["imsize"] == 2048 and defaults["image"]["robust"] == -0.5


def test_bad_config_stops_snakemake_before_any_job(tmp_path):
    archive, results = tmp_path / "archive", tmp_path / "results"
    archive.mkdir()
    out = subprocess.run(
        [
            str(BIN / "dsa110-contimg"),
            "run",
            "--",
            "--cores",
            "1",
            "--config",
            f"archive_dir={archive}",
            f"results_dir={results}",
            "image={imsize: 100.5, robust: 0.5}",
            f"sky_catalog={tmp_path / 'nvss.csv'}",
            "photometry={pb_cutoff: 0.2}",
        ],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 1, log
    assert (
        "invalid configuration (config/config.yaml with --configfile and --config "
        "overrides):\n"
        "  image.imsize: 100.5 is not an integer\n"
        "  photometry.pb_cutoff: unknown key (did you mean pb_cut?)\n"
        f"  sky_catalog: file {tmp_path / 'nvss.csv'} does not exist\n"
    ) in log, log
    assert "Building DAG of jobs" not in log
    # nothing but the runner's lock file (see workflow.RUN_LOCK)
    assert [p.name for p in results.iterdir()] == [".dsa110-contimg-run.lock"]


# --------------------------------------------------------------- one config route
# Each stage's settings come from its config section (`Settings.from_config`); a rule
# passes the section as one --config-json; flags only override. The tests below hold the
# defaults to one value each and the workflow and the command line to one computation.

SETTINGS = {  # config section: its stages' settings classes
    "flag": ["dsa110_contimg.flagging:FlagSettings"],
    "calibrate": ["dsa110_contimg.calibration.solve:SolveSettings"],
    "image": ["dsa110_contimg.imaging.image:ImagingSettings"],
    "qa": ["dsa110_contimg.qa:QASettings"],
    "photometry": [
        "dsa110_contimg.photometry.forced:PhotometrySettings",
        "dsa110_contimg.photometry.normalize:NormalizeSettings",
    ],
    "ese": ["dsa110_contimg.variability.ese:ESESettings"],
    "reference_catalog": ["dsa110_contimg.reference_catalog:ReferenceCatalogSettings"],
}


def _settings_class(section, index=0):
    import importlib

    module, name = SETTINGS[section][index].split(":")
    return getattr(importlib.import_module(module), name)


def _lookup_key(config, dotted):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize(
    "section,index",
    [(s, i) for s, classes in sorted(SETTINGS.items()) for i in range(len(classes))],
)
def test_settings_defaults_are_config_yaml_values(defaults, section, index):
    """config.yaml's value of every key equals the settings field's default: building
    the settings from config.yaml's section gives exactly the defaults."""
    import dataclasses

    cls = _settings_class(section, index)
    assert cls.from_config(defaults[section]) == cls()
    for field in dataclasses.fields(cls):
        key = (
            cls.config_key(field.name) if hasattr(cls, "config_key") else f"{section}.{field.name}"
        )
        if key is None:  # set on the command line only
            continue
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        assert _lookup_key(defaults, key) == default, key
    # the keys another stage uses are keys of the section
    other = getattr(cls, "OTHER_KEYS", frozenset())
    assert other <= set(defaults[section]), sorted(other - set(defaults[section]))


# Keys the rules use themselves: the calibrator catalog and transit criterion (manifest),
# the selection's and apply's options (scripts/calibrate_*.py), the alert command.
USED_BY_RULES = {
    "calibrate": {"catalog", "beam_fraction", "validity_hours", "fallback", "interp"},
    "ese": {"alert_command"},
}


def test_every_config_key_reaches_a_stage(defaults):
    """Each key of a section with settings classes is a field of one of them or a job
    resource: no configured value is silently unused."""
    import dataclasses

    unused = []
    for section, classes in SETTINGS.items():
        used = {"mem_mb", "runtime_min"}
        for i in range(len(classes)):
            cls = _settings_class(section, i)
            for f in dataclasses.fields(cls):
                key = (
                    cls.config_key(f.name) if hasattr(cls, "config_key") else f"{section}.{f.name}"
                )
                if key and key.startswith(f"{section}."):
                    used.add(key.split(".")[1])
        used |= USED_BY_RULES.get(section, set())
        unused += [f"{section}.{k}" for k in defaults[section] if k not in used]
    assert unused == []


def test_schema_documents_every_key_with_config_yaml_default(defaults):
    """Every key of config/schema.yaml has a description, and every leaf key a default
    equal (value and type) to config.yaml's; every config.yaml key is in the schema."""
    schema = yaml.safe_load(SCHEMA.read_text())
    problems = []

    def walk(props, conf, path):
        for key, spec in props.items():
            name = ".".join(path + [key])
            if "description" not in spec:
                problems.append(f"{name}: no description")
            if "properties" in spec:
                walk(spec["properties"], conf.get(key, {}), path + [key])
            elif "default" not in spec:
                problems.append(f"{name}: no default")
            elif key not in conf:
                problems.append(f"{name}: not in config.yaml")
            elif spec["default"] != conf[key] or type(spec["default"]) is not type(conf[key]):
                problems.append(f"{name}: schema default {spec['default']!r} != {conf[key]!r}")
        problems.extend(
            f"{'.'.join(path + [k])}: not in the schema" for k in conf if k not in props
        )

    walk(schema["properties"], defaults, [])
    assert problems == []


def test_unknown_setting_is_an_error_naming_the_key(defaults):
    image = _settings_class("image")
    with pytest.raises(ConfigError, match=r"^image\.imsiz: unknown key \(did you mean imsize\?\)$"):
        image.from_config({**defaults["image"], "imsiz": 1024})
    solve = _settings_class("calibrate")
    section = copy.deepcopy(defaults["calibrate"])
    section["qa"]["min_snr"] = 3
    with pytest.raises(ConfigError, match=r"^calibrate\.min_snr: unknown key$"):
        solve.from_config(section)
    bad_json = BARE["photometry"] + ["--config-json", "{pb_cut: 0.3}"]
    with pytest.raises(ConfigError, match=r"^--config-json of `photometry`: not JSON \(Expecting"):
        _cli_settings(bad_json, "photometry")
    # a key of another stage of the same section is accepted and unused
    photometry = _settings_class("photometry")
    assert photometry.from_config({"reference_min_snr": 10.0, "pb_cut": 0.5}).pb_cut == 0.5


GROUPS = ("2026-01-01T000000", "2026-01-01T000144", "2026-01-01T000328", "2026-01-01T000512")


def _rule_commands(tmp_path, overlay=None):
    """The command lines the rules calibrate_solve, image, photometry_image and
    photometry_mosaic would run (snakemake --dry-run --printshellcmds, with each rule's
    inputs present as empty files), as {subcommand: argv}; and the merged config."""
    archive, results = tmp_path / "archive", tmp_path / "results"
    archive.mkdir()
    sky = tmp_path / "sky.csv"  # older than the products, which are then up to date
    sky.write_text("source_id,ra_deg,dec_deg,flux_jy\ns1,10.0,54.0,1.0\n")
    cal, img, phot, mos = GROUPS
    for d in (f"ms/{cal}.ms", "manifest", f"ms_cal/{img}.ms", f"images/{phot}", f"mosaics/{mos}"):
        (results / d).mkdir(parents=True)
    (results / "photometry").mkdir()
    for f in ("image.fits", "pb.fits", "residual.fits"):
        (results / "images" / phot / f).touch()
    for f in ("manifest/groups.parquet", "photometry/timeseries.parquet"):
        (results / f).touch()
    (results / f"mosaics/{mos}/mosaic.fits").touch()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    options = []
    if overlay:
        path = tmp_path / "overlay.yaml"
        path.write_text(yaml.safe_dump(overlay))
        options = ["--configfile", str(path)]
        for section, values in overlay.items():
            for key, value in values.items():
                if isinstance(value, dict):
                    config[section][key].update(value)
                else:
                    config[section][key] = value
    targets = [
        results / "qa" / "cal" / f"{cal}.json",
        results / "images" / img / "image.fits",
        results / "photometry" / "images" / f"{phot}.parquet",
        results / "photometry" / "mosaics" / f"{mos}.parquet",
        results / "qa" / "image" / f"{phot}.json",
        results / "ese" / "variability_stats.parquet",
    ]
    out = subprocess.run(
        [
            str(BIN / "snakemake"),
            "--dry-run",
            "--printshellcmds",
            "--nolock",
            "--cores",
            "2",
            "--allowed-rules",
            "calibrate_solve",
            "image",
            "photometry_image",
            "photometry_mosaic",
            "qa_image",
            "normalize",
            "ese_detect",
            *options,
            "--config",
            f"archive_dir={archive}",
            f"results_dir={results}",
            f"sky_catalog={sky}",
            "--",
            *map(str, targets),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    commands = {}
    for line in out.stdout.splitlines():
        if line.startswith("Shell command: dsa110-contimg "):
            argv = shlex.split(line.removeprefix("Shell command: "))[1:]
            argv = argv[: next(i for i, a in enumerate(argv) if a in (">", "2>"))]
            key = argv[0] + (" --no-pb-correct" if "--no-pb-correct" in argv else "")
            commands[key] = argv
    assert sorted(commands) == [
        "calibrate-solve",
        "ese-detect",
        "image",
        "normalize",
        "photometry",
        "photometry --no-pb-correct",
        "qa-image",
    ], out.stdout
    return commands, config, sky


def _cli_settings(argv, section, index=0):
    """The settings object the `dsa110-contimg` command builds from `argv`."""
    from dsa110_contimg.cli import build_parser

    return _settings_class(section, index).from_args(build_parser(argv).parse_args(argv))


BARE = {  # the stages' command lines with no settings flag at all
    "calibrate": [
        "calibrate-solve",
        "ms",
        "--manifest",
        "m",
        "--catalog",
        "c",
        "--group",
        "g",
        "--out",
        "o",
        "--qa-json",
        "q",
        "--qa-png",
        "p",
    ],
    "image": ["image", "ms", "--out-dir", "o"],
    "photometry": ["photometry", "i.fits", "--catalog", "c", "--out", "o"],
    "qa": ["qa-image", "i.fits", "--pb", "p", "--json", "j", "--png", "p"],
    "normalize": ["normalize", "ts.parquet", "n.parquet"],
    "ese": ["ese-detect", "--timeseries", "t", "--outdir", "o"],
}
# the other stages' rule commands: (command, config section, settings class index)
OTHER_STAGES = [("qa-image", "qa", 0), ("normalize", "photometry", 1), ("ese-detect", "ese", 0)]


def test_workflow_and_cli_build_the_same_settings_from_the_defaults(tmp_path, defaults):
    """With config.yaml as it is, the settings each rule's command line builds equal
    Settings.from_config(section) and those of the bare command (no flags): the workflow
    and a hand-typed command run the same calibration, imaging and photometry."""
    from dataclasses import replace

    commands, config, sky = _rule_commands(tmp_path)
    solve = _cli_settings(commands["calibrate-solve"], "calibrate")
    assert solve == replace(
        _settings_class("calibrate").from_config(config["calibrate"]), sky_model=str(sky)
    )
    assert replace(solve, sky_model=None) == _cli_settings(BARE["calibrate"], "calibrate")
    # the values that the command line once dropped reach the solve
    assert (solve.flag_nsigma, solve.min_median_snr, solve.sky_model_radius_deg) == (6.0, 10.0, 5.0)

    image = _cli_settings(commands["image"], "image")
    # deterministic WSClean claims (and gets) one core from the scheduler
    assert image.threads == 1 and image.deterministic and image.imager == "wsclean"
    assert replace(image, threads=2) == _settings_class("image").from_config(config["image"])
    assert replace(image, threads=2) == _cli_settings(BARE["image"], "image")
    assert image.imsize == 2560 and image.cell_arcsec == 9.0

    for key in ("photometry", "photometry --no-pb-correct"):
        phot = _cli_settings(commands[key], "photometry")
        assert phot == _settings_class("photometry").from_config(config["photometry"])
        assert phot == _cli_settings(BARE["photometry"], "photometry")
        assert (phot.error_model, phot.pb_cut) == ("measured", 0.2)

    for command, section, index in OTHER_STAGES:
        settings = _cli_settings(commands[command], section, index)
        assert settings == _settings_class(section, index).from_config(config[section])
        bare = BARE["normalize" if command == "normalize" else section]
        assert settings == _cli_settings(bare, section, index), command


def test_workflow_settings_follow_the_config(tmp_path):
    """A config overlay changes what each rule's command runs, key by key (including the
    nested calibrate.qa), and a command-line flag overrides one key of --config-json."""
    overlay = {
        "calibrate": {
            "minsnr": 4.5,
            "refant": "DSA-003",
            "flag_nsigma": 7.5,
            "qa": {"min_median_snr": 7.0},
        },
        "image": {
            "imager": "tclean",
            "imsize": 1024,
            "threads": 2,
            "drift_subtract": False,
            "deterministic": False,
        },
        "photometry": {
            "pb_cut": 0.35,
            "error_model": "beam",
            "reference_min_snr": 20.0,
            "reference_confusion_arcsec": 60.0,
        },
        "qa": {"detect_snr": 6.0, "thresholds": {"dynamic_range": [50, 10]}},
        "ese": {"min_sigma": 6.0, "min_dip_epochs": 3},
    }
    commands, config, sky = _rule_commands(tmp_path, overlay)
    solve = _cli_settings(commands["calibrate-solve"], "calibrate")
    assert (solve.minsnr, solve.refant, solve.flag_nsigma, solve.min_median_snr) == (
        4.5,
        "DSA-003",
        7.5,
        7.0,
    )
    assert solve.max_flagged_fraction == 0.2 and solve.sky_model == str(sky)
    image = _cli_settings(commands["image"], "image")
    assert image == _settings_class("image").from_config(config["image"])
    assert (image.imager, image.imsize, image.threads, image.drift_subtract) == (
        "tclean",
        1024,
        2,
        False,
    )
    phot = _cli_settings(commands["photometry"], "photometry")
    assert (phot.pb_cut, phot.error_model) == (0.35, "beam")
    override = _cli_settings(commands["photometry"] + ["--error-model", "white"], "photometry")
    assert (override.pb_cut, override.error_model) == (0.35, "white")

    # each rule passes only the keys its stage reads: a change to another stage's key
    # (or a job resource) does not rerun it
    def passed_keys(command):
        argv = commands[command]
        return sorted(json.loads(argv[argv.index("--config-json") + 1]))

    assert "validity_hours" not in passed_keys("calibrate-solve")
    assert "qa" in passed_keys("calibrate-solve")
    assert passed_keys("photometry") == ["error_model", "pb_cut"]
    assert "pb_cut" not in passed_keys("normalize") and "mem_mb" not in passed_keys("image")
    qa = _cli_settings(commands["qa-image"], "qa")
    assert qa.detect_snr == 6.0 and qa.thresholds["dynamic_range"] == [50, 10]
    normalize = _cli_settings(commands["normalize"], "photometry", 1)
    assert (normalize.reference_min_snr, normalize.reference_confusion_arcsec) == (20.0, 60.0)
    ese = _cli_settings(commands["ese-detect"], "ese")
    assert (ese.min_sigma, ese.min_dip_epochs) == (6.0, 3)
