"""Parameter files: YAML read with numbers as numbers, checked with messages that name the file, key and choices."""

import pytest

from bml.config import ConfigError, merge, parse_value, parse_yaml, read_yaml, schema_problems, typed
from bml.plan import load_pipeline


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-3", 0.001),
        ("1e6", 1e6),
        ("1.0e-4", 1e-4),
        ("-2E+2", -200.0),
        ("12", 12),
        (".5", 0.5),
        ("0x10", 16),
        ("abc", "abc"),
        ("1_000", 1000),
    ],
)
def test_yaml_numbers_parse_as_numbers(text, value):
    assert parse_yaml(f"x: {text}")["x"] == value
    assert type(parse_value(text)) is type(value)


def test_command_line_values_nested_in_structures_are_typed():
    assert typed({"n": "400", "lr": ["1e-3", "adam"], "flag": "true", "name": "x1"}) == {
        "n": 400,
        "lr": [0.001, "adam"],
        "flag": True,
        "name": "x1",
    }


def test_merge_is_deep_and_leaves_its_inputs_alone():
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    merged = merge(base, {"a": {"c": 3}, "e": 4})
    assert merged == {"a": {"b": 1, "c": 3}, "d": [1], "e": 4} and base["a"]["c"] == 2


def test_the_shipped_params_are_valid():
    pipeline = load_pipeline()
    assert pipeline["matrices"][pipeline["matrix"]][0]["dataset"] == "avdigits"


def test_every_violation_is_listed_and_the_file_named(tmp_path):
    (tmp_path / "params.yaml").write_text("data_root: data\nextract: {n_shards: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(tmp_path)
    text = str(err.value)
    assert str(tmp_path / "params.yaml") in text and "extract.n_shards" in text and "'matrices' is a required" in text


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="no such parameter file"):
        read_yaml(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        read_yaml(tmp_path / "broken.yaml")


def test_schema_problems_name_the_key_and_the_choices():
    problems = schema_problems(
        "params.schema.yaml",
        {
            **load_pipeline(),
            "report": {"out_dir": "r", "baseline": "joint", "test": "z", "alpha": 0.05, "which": "best"},
        },
    )
    assert problems == ["key 'report.test': 'z' is not allowed; choose one of ['t', 'wilcoxon', 'permutation']"]
