"""The workflow configuration: checked before any job runs, and the one route by which
it reaches each stage.

Checking: every value against config/schema.yaml (types, ranges, allowed values, no
unknown keys) and every file or directory it names, with one readable message naming
each offending key. A misspelt key (`image.imsiz`) would otherwise be ignored silently
and the default used; a wrong type would fail deep inside a job, hours into a run.

Route: each stage has a settings dataclass (a `StageSettings`) built from its config
section by `from_config(section)`, which rejects keys it does not know. A rule passes
the section as one JSON argument (`--config-json`); the stage's command-line flags,
added by `add_arguments`, only override single fields (`from_args`). So the workflow
and a hand-typed command run the same computation.

Defaults live in the dataclass fields, and config/config.yaml repeats them as the
documented values a user edits; tests/test_config.py asserts that both (and the
`default:` of config/schema.yaml) agree key by key. The fields rather than config.yaml
hold them because the package must work where the repository's config/ directory is not
installed (a wheel, a stage run by hand), and a wrong default then fails a test instead
of changing a run silently.
"""

import argparse
import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path

import yaml

# Keys naming inputs that must exist: (key path, "file" or "directory").
REQUIRED_PATHS = (
    ("archive_dir", "directory"),
    ("sky_catalog", "file"),
    ("calibrate.catalog", "file"),
)

_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem, one per line."""


def _key(path):
    """`image.imsize`, `quarantine[0]`: the key as a user writes it."""
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def _type_phrase(types):
    types = [types] if isinstance(types, str) else list(types)
    return " or ".join(_TYPE_NAMES.get(t, t) for t in types)


_BOUND_PHRASES = {
    "minimum": "is below the minimum",
    "exclusiveMinimum": "must be greater than",
    "maximum": "is above the maximum",
    "exclusiveMaximum": "must be less than",
    "multipleOf": "is not a multiple of",
    "pattern": "does not match the pattern",
}


def _describe(error):
    """One line for one jsonschema error, naming the key."""
    key, value, v, arg = (
        _key(error.absolute_path),
        error.instance,
        error.validator,
        error.validator_value,
    )
    if v == "type":
        return f"{key}: {value!r} is not {_type_phrase(arg)}"
    if v == "enum":
        return f"{key}: {value!r} is not one of {', '.join(map(str, arg))}"
    if v in _BOUND_PHRASES:
        return f"{key}: {value!r} {_BOUND_PHRASES[v]} {arg}"
    if v == "required":
        missing = [k for k in arg if k not in value]
        prefix = f"{key}." if error.absolute_path else ""
        return "; ".join(f"{prefix}{k}: missing" for k in missing)
    if v in ("additionalProperties", "propertyNames") and isinstance(value, dict):
        allowed = sorted(error.schema.get("properties", {}))
        enum = error.schema.get("propertyNames", {}).get("enum")
        allowed = allowed or sorted(enum or [])
        extra = sorted(k for k in value if k not in allowed)
        lines = []
        for k in extra:
            name = f"{key}.{k}" if error.absolute_path else k
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            lines.append(f"{name}: unknown key{hint}")
        return "; ".join(lines) if lines else f"{key}: {error.message}"
    if v == "uniqueItems":
        return f"{key}: entries repeat"
    if v in ("minItems", "maxItems"):
        bound = "at least" if v == "minItems" else "at most"
        return f"{key}: {value!r} must have {bound} {arg} entries"
    return f"{key}: {error.message}"


def _lookup(config, dotted):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def path_problems(config, base="."):
    """Lines for configured inputs that do not exist (relative paths from `base`)."""
    problems = []
    for key, kind in REQUIRED_PATHS:
        value = _lookup(config, key)
        if not isinstance(value, str) or not value:
            continue
        path = Path(value) if Path(value).is_absolute() else Path(base) / value
        if kind == "directory" and not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            problems.append(f"{key}: directory {value} {what}")
        elif kind == "file" and not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            problems.append(f"{key}: file {value} {what}")
    return problems


def _number(text):
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def coerce_scalars(config, schema):
    """Turn strings into the numbers and booleans the schema asks for, in place.

    `--config image='{imsize: 2048}'` reaches the workflow as {'imsize': '2048'}: snakemake
    parses a nested override with YAML's base loader, which keeps every scalar a string."""
    if isinstance(config, dict):
        props = schema.get("properties", {})
        for key, value in config.items():
            sub = props.get(key)
            if sub is None:
                continue
            types = sub.get("type", [])
            types = [types] if isinstance(types, str) else types
            if isinstance(value, str) and {"integer", "number"} & set(types):
                config[key] = _number(value)
            elif (
                isinstance(value, str) and "boolean" in types and value.lower() in ("true", "false")
            ):
                config[key] = value.lower() == "true"
            else:
                coerce_scalars(value, sub)
    elif isinstance(config, list) and isinstance(schema.get("items"), dict):
        for item in config:
            coerce_scalars(item, schema["items"])
    return config


def config_problems(config, schema_path, check_paths=True, base="."):
    """Every problem of `config` (after coerce_scalars), one line each naming the key:
    schema errors first, then (with `check_paths`) configured inputs that do not exist."""
    from jsonschema import Draft202012Validator

    schema = yaml.safe_load(Path(schema_path).read_text())
    coerce_scalars(config, schema)
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines, keys = [], set()
    for error in errors:
        for line in _describe(error).split("; "):
            key = line.split(": ", 1)[0]
            if key not in keys:  # the first (most basic) problem of each key
                keys.add(key)
                lines.append(line)
    return lines + (path_problems(config, base) if check_paths else [])


def check_config(config, schema_path, check_paths=True, base="."):
    """Raise ConfigError listing every problem of `config` (see config_problems)."""
    problems = config_problems(config, schema_path, check_paths, base)
    if problems:
        raise ConfigError(
            "invalid configuration (config/config.yaml with --configfile and "
            "--config overrides):\n" + "\n".join(f"  {p}" for p in problems)
        )


def stage_config_json(config, section, settings=None):
    """One config section as JSON, a workflow rule's `--config-json`. With the stage's
    settings class, without the keys it does not read (settings.OTHER_KEYS: other stages'
    keys, job resources), so that changing those does not rerun the stage's jobs."""
    other = settings.OTHER_KEYS if settings is not None else ()
    values = {k: v for k, v in config[section].items() if k not in other}
    return json.dumps(values, sort_keys=True)


class StageSettings:
    """Base of the stages' settings dataclasses (see the module docstring).

    SECTION names the config section; OTHER_KEYS are the section's keys another stage of
    the same section (or the job's resources) uses, accepted and ignored here; FLAGS maps
    a field to its command-line flag where that differs from `--field-name`; CHOICES
    restricts a field's values on the command line; KEYS names a field's config key
    where that is not `SECTION.field` (None: set on the command line only)."""

    SECTION: typing.ClassVar[str] = ""
    OTHER_KEYS: typing.ClassVar[frozenset] = frozenset()
    FLAGS: typing.ClassVar[dict] = {}
    CHOICES: typing.ClassVar[dict] = {}
    KEYS: typing.ClassVar[dict] = {}

    @classmethod
    def config_key(cls, name):
        """The config key of field `name` (`image.imsize`), None when not configured."""
        return cls.KEYS.get(name, f"{cls.SECTION}.{name}")

    @classmethod
    def from_config(cls, section):
        """Settings from the config section (a dict; None or {} gives the defaults).

        Keys that are neither fields nor OTHER_KEYS raise ConfigError naming them."""
        section = dict(section or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(section) - set(names) - cls.OTHER_KEYS)
        if unknown:
            lines = []
            for key in unknown:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                lines.append(f"{cls.SECTION}.{key}: unknown key{hint}")
            raise ConfigError("; ".join(lines))
        return cls(**{k: v for k, v in section.items() if k in names})

    @classmethod
    def add_arguments(cls, parser):
        """`--config-json` and one overriding flag per field (default None: not given)."""
        parser.add_argument(
            "--config-json",
            help=f"the config section `{cls.SECTION}` as JSON; the flags below override "
            "single keys (default: the defaults of config/config.yaml)",
        )
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            flag = cls.FLAGS.get(field.name, "--" + field.name.replace("_", "-"))
            default = field.default if field.default is not dataclasses.MISSING else None
            if field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            kind = _argument_type(hints[field.name])
            extra = {"type": kind} if kind is not bool else {}
            if kind is bool:
                extra["action"] = argparse.BooleanOptionalAction
            if field.name in cls.CHOICES:
                extra["choices"] = list(cls.CHOICES[field.name])
            key = cls.config_key(field.name)
            parser.add_argument(
                flag,
                dest=field.name,
                default=None,
                help=f"{f'config {key}' if key else 'not configured'} (default {default!r})",
                **extra,
            )

    @classmethod
    def from_args(cls, args):
        """Settings from parsed arguments: `--config-json` (else the defaults), then
        every flag given overriding its field."""
        section = {}
        if getattr(args, "config_json", None):
            try:
                section = json.loads(args.config_json)
            except json.JSONDecodeError as err:
                raise ConfigError(f"--config-json of `{cls.SECTION}`: not JSON ({err})") from err
            if not isinstance(section, dict):
                raise ConfigError(f"--config-json of `{cls.SECTION}`: not a JSON object")
        given = {
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None
        }
        return dataclasses.replace(cls.from_config(section), **given)


def _argument_type(hint):
    """The argparse type of a field annotated `hint` (X | None counts as X)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint in (dict, list) or typing.get_origin(hint) in (dict, list):
        return json.loads
    return hint
