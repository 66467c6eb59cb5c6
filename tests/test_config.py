"""A wrong configuration value stops the workflow before any job runs with one message
naming every bad key: wrong type, out of range, not an allowed value, unknown (misspelt)
key, missing input file or directory."""

import copy
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
