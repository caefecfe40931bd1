"""Reading and checking bml's parameter files (params/): YAML in, checked dicts out, torch-free.

Every file goes through `read_yaml`, whose loader reads numbers as YAML 1.2 does (`1e-3`, `1e6` and `1.0e-4`
are floats; PyYAML alone reads the first two as strings), and every check through `refuse`, so a bad value
is refused the same way from Snakemake, DVC and the `bml` command: before any job starts, naming the file,
the key and what is allowed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = PROJECT_ROOT / "params"
SCHEMAS_DIR = PROJECT_ROOT / "workflow" / "schemas"


class ConfigError(ValueError):
    """A configuration value that bml refuses; the message names the file, the key and the choices."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML 1.2 floats: a mantissa without a dot and an exponent without a sign."""


# YAML 1.2 core-schema floats; integers still resolve first (PyYAML checks its int pattern before this one)
_FLOAT = re.compile(
    r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$"
    r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str, source: str = "<text>") -> Any:
    """YAML text -> data, numbers as numbers (`1e-3` is a float)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from err


def parse_value(raw: str) -> Any:
    """One command-line value (`--set key=1e-3`, `--config n=400`): typed as YAML reads it."""
    return parse_yaml(raw, source=f"value {raw!r}") if raw.strip() else raw


def typed(value: Any) -> Any:
    """Strings nested in a structure (Snakemake's --config leaves `'400'` a string) parsed as YAML scalars."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, str) and (_FLOAT.match(value.strip()) or value in ("true", "false", "null")):
        return parse_value(value)
    return value


_READ: dict[tuple, dict] = {}  # (path, mtime, size) -> parsed: planning reads each file once per process


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such parameter file")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _READ:
        data = parse_yaml(path.read_text(), source=str(path))
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        _READ[key] = data
    return copy.deepcopy(_READ[key])


def merge(base: dict, update: dict) -> dict:
    """A deep copy of `base` with `update` merged in, nested mappings key by key."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = (
            merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else copy.deepcopy(value)
        )
    return out


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "enum":
        return f"key '{key}': {error.instance!r} is not allowed; choose one of {schema['enum']}"
    if error.validator == "additionalProperties":
        return f"key '{key}': {error.message}; allowed keys are {sorted(schema.get('properties', {}))}"
    if error.validator in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"key '{key}': {error.message}; allowed: {_allowed(schema)}"
    return f"key '{key}': {error.message}"


def _allowed(schema: dict) -> str:
    """A schema's type and bounds in words: `number in [0, 1]`, `integer >= 1`."""
    bounds = [f"{op} {schema[k]}" for k, op in _BOUNDS.items() if k in schema]
    if len(bounds) == 2 and "minimum" in schema and "maximum" in schema:
        bounds = [f"in [{schema['minimum']}, {schema['maximum']}]"]
    return " ".join([str(schema.get("type", "value")), *bounds])


_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def schema_problems(schema: dict | str, data: Any) -> list[str]:
    """One line per violation of a JSON schema (a dict, or a file name under workflow/schemas/)."""
    if isinstance(schema, str):
        schema = read_yaml(SCHEMAS_DIR / schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    return [_describe(e) for e in errors]


def refuse(source: str | Path, what: str, problems: list[str]) -> None:
    """Raise one ConfigError listing every problem, or return when there is none."""
    if problems:
        raise ConfigError(f"{source}: invalid {what}:\n" + "\n".join(f"  - {p}" for p in problems))


def check(data: Any, schema: str, source: str | Path, what: str) -> Any:
    refuse(source, what, schema_problems(schema, data))
    return data


def apply_set(config: dict, item: str) -> None:
    """Apply one `--set section.key=value` to a resolved configuration."""
    dotted, sep, raw = item.partition("=")
    section, _, rest = dotted.strip().partition(".")
    if not sep or section not in ("train", "method", "eval") or not rest:
        raise ConfigError(
            f"--set {item!r}: expected train.<key>=value, method.<key>=value or eval.<key>=value "
            f"(e.g. train.epochs=2, method.alpha=0.5)"
        )
    node, parts = config[section], rest.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"--set {dotted}: no section {part!r} under {section}; it has {sorted(node)}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"--set {dotted}: unknown key {parts[-1]!r}; choose one of {sorted(node)}")
    node[parts[-1]] = parse_value(raw.strip())
