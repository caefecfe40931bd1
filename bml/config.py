"""Reading and validating bml's parameter files (params/), the one source of truth.

Snakemake, DVC and the `bml` command all go through `validate_config`, so a bad value is refused the
same way, before any job starts, with a message naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = PROJECT_ROOT / "params"
CONFIG_SCHEMA = PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value that bml refuses; the message names the file, the key and the choices."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such parameter file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "enum":
        return f"key '{key}': {error.instance!r} is not allowed; choose one of {schema['enum']}"
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return f"key '{key}': {error.message}; allowed keys are {allowed}"
    if error.validator == "required":
        return f"key '{key}': {error.message}"
    return f"key '{key}': {error.message}"


def validate_config(config: dict[str, Any], source: str | Path = "config",
                    schema_path: str | Path = CONFIG_SCHEMA) -> dict[str, Any]:
    """Raise ConfigError listing every violation of the schema; return the config unchanged."""
    schema = read_yaml(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"{source}: invalid configuration (schema {Path(schema_path).name}):\n{lines}")
    return config


def load_config(path: str | Path = PARAMS_DIR / "params.yaml") -> dict[str, Any]:
    """The validated pipeline configuration."""
    return validate_config(read_yaml(path), source=path)


def avdigits_settings(preset: str, path: str | Path = PARAMS_DIR / "datasets" / "avdigits.yaml") -> dict:
    """The generator's settings for one preset: the shared `common` block with the preset's knobs on top."""
    spec = read_yaml(path)
    presets = spec.get("presets", {})
    if preset not in presets:
        raise ConfigError(f"{path}: unknown avdigits preset {preset!r}; choose one of {sorted(presets)}")
    return {**spec["common"], **presets[preset], "preset": preset}
