"""The config schema refuses bad values before any job runs, naming the key and what is allowed."""

import copy

import pytest
import yaml

from bml.config import PARAMS_DIR, ConfigError, load_config, validate_config


@pytest.fixture
def config():
    return load_config()


def test_the_shipped_params_are_valid(config):
    assert config["avdigits"]["preset"] == "audio_dominant"


@pytest.mark.parametrize("path,value,expected", [
    (("avdigits", "preset"), "loud_audio", r"avdigits\.preset.*'loud_audio'.*audio_dominant"),
    (("extract", "sample_rate"), 12345, r"extract\.sample_rate.*12345.*16000"),
    (("extract", "fps"), 0, r"extract\.fps"),
    (("features", "audio_preset"), "mfcc", r"features\.audio_preset.*'mfcc'.*ogm_cremad"),
    (("avdigits", "n_clips"), "many", r"avdigits\.n_clips.*'many' is not of type 'integer'"),
    (("extract", "n_shard"), 3, r"key 'extract'.*n_shard.*allowed keys are.*n_shards"),
])
def test_bad_values_are_refused_with_key_and_choices(config, path, value, expected):
    bad = copy.deepcopy(config)
    bad[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=expected):
        validate_config(bad, source="test.yaml")


def test_every_violation_is_listed_and_the_file_named(tmp_path, config):
    bad = copy.deepcopy(config)
    bad["avdigits"]["preset"] = "x"
    bad["features"]["n_frames"] = 0
    del bad["extract"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and "avdigits.preset" in text and "features.n_frames" in text
    assert "'extract' is a required property" in text


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="no such parameter file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("avdigits: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_every_preset_named_in_the_schema_exists():
    from bml.config import CONFIG_SCHEMA, read_yaml
    from bml.data.audio import load_presets

    schema = read_yaml(CONFIG_SCHEMA)["properties"]
    assert set(schema["features"]["properties"]["audio_preset"]["enum"]) == set(load_presets())
    presets = read_yaml(PARAMS_DIR / "datasets" / "avdigits.yaml")["presets"]
    assert set(schema["avdigits"]["properties"]["preset"]["enum"]) == set(presets)
