"""Evaluation settings are checked like every other value: a bad `--set eval.<key>` is refused before any
training starts, naming the key and what the schema allows; `bml train --cell` honours --results-root."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import PARAMS, bml_env

from bml.cli import build_parser, resolve_train_cell
from bml.config import ConfigError
from bml.datasets import load_dataset
from bml.layout import Layout
from bml.plan import load_pipeline, load_plan, resolve_cell


def resolve_with(*sets: str):
    pipeline = load_pipeline(PARAMS)
    dataset = load_dataset("avdigits", PARAMS, pipeline)
    return resolve_cell(dataset, "embedded", "joint", "concat", 0, PARAMS, pipeline, Layout(), sets)


@pytest.mark.parametrize(
    "item, problem",
    [
        ("eval.probe_cs=[-1.0]", "key 'probe_cs.0': -1.0 is less than or equal to the minimum of 0"),
        ("eval.probe_cs=[]", "key 'probe_cs': [] should be non-empty"),
        ("eval.probe_cs=abc", "key 'probe_cs': 'abc' is not of type 'array'"),
        ("eval.probe_cs=[0.1, abc]", "key 'probe_cs.1': 'abc' is not of type 'number'"),
        ("eval.probe_max_iter=0", "key 'probe_max_iter': 0 is less than the minimum of 1"),
        ("eval.probe_max_iter=2.5", "key 'probe_max_iter': 2.5 is not of type 'integer'"),
        ("eval.noise_std=-1", "key 'noise_std': -1 is less than the minimum of 0"),
        ("eval.attack_eps=-0.1", "key 'attack_eps': -0.1 is less than the minimum of 0"),
        ("eval.attack_pgd_steps=0", "key 'attack_pgd_steps': 0 is less than the minimum of 1"),
        ("eval.attack_pgd_step_divisor=0", "key 'attack_pgd_step_divisor': 0 is less than or equal to the minimum"),
        ("eval.attack_samples=-1", "key 'attack_samples': -1 is less than the minimum of 0"),
    ],
)
def test_bad_evaluation_overrides_are_refused_with_the_key_and_the_bound(item, problem):
    with pytest.raises(ConfigError) as err:
        resolve_with(item)
    assert "params/params.yaml (evaluation section, with any --set eval overrides)" in str(err.value)
    assert problem in str(err.value)


def test_good_evaluation_overrides_reach_the_cell():
    config = resolve_with("eval.probe_cs=[0.5]", "eval.probe_max_iter=7", "eval.noise_std=0").config
    assert config["eval"] == {
        "probe_cs": [0.5],
        "probe_max_iter": 7,
        "noise_std": 0,
        "attack_eps": 0.2,
        "attack_pgd_steps": 4,
        "attack_pgd_step_divisor": 3,
        "attack_samples": 64,
    }


def test_bml_train_refuses_a_bad_evaluation_value_before_training(tmp_path):
    cmd = [sys.executable, "-m", "bml.cli", "train", "--results-root", str(tmp_path), "--set", "eval.probe_cs=abc"]
    proc = subprocess.run(cmd, env=bml_env(), capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("bml train: error: params/params.yaml (evaluation section")
    assert "key 'probe_cs': 'abc' is not of type 'array'" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder: nothing started


def test_train_cell_honours_results_root(tmp_path):
    planned = load_plan(PARAMS).cells[0]
    args = build_parser().parse_args(
        ["train", "--cell", planned.name, "--params-dir", str(PARAMS), "--results-root", str(tmp_path)]
    )
    cell = resolve_train_cell(args)
    assert cell.config["paths"]["run_dir"] == planned.run_dir.replace("results", str(tmp_path), 1)
    assert cell.hash == planned.hash  # where a run goes is not what it is: Snakemake's --expect-hash still holds
