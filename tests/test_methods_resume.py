"""Every balancing method resumes from its checkpoint to the same numbers as a run that never stopped.

Also the helpers the method tests share: a RunContext for unit tests, a run's folder and history, and an
interrupted-then-resumed run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cell_config

import bml.checkpoint
from bml.methods import method_spec
from bml.methods.base import RunContext
from bml.results import CHECKPOINT, HISTORY, WALL_TIMES, read_history
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}  # avdigits' modalities (params/datasets/avdigits.yaml)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests that train run torch on one thread (restored after). On the shared 2-core machine a second
    intra-op thread made a 3-epoch avdigits run 5 times slower (16.6 s against 3.0 s at load 8), not faster;
    the numbers do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def unit_run(modalities: dict[str, str] = AV, n_classes: int = 2, epochs: int = 3, seed: int = 0) -> RunContext:
    """What a method reads about its run, for unit tests that call its hooks directly (no data)."""
    config = {"run": {"seed": seed}, "train": {"epochs": epochs}}
    return RunContext(config, dict(modalities), n_classes, torch.device("cpu"), {}, {})


def run_folder(config: dict) -> Path:
    return Path(config["paths"]["run_dir"])


def history(config: dict) -> list[dict[str, float]]:
    return read_history(run_folder(config) / HISTORY)


class Interrupted(Exception):
    """Raised right after the epoch-1 checkpoint is written: the run stops as a killed one would."""


def interrupted_and_resumed(config: dict, monkeypatch) -> dict:
    """Train `config`, stopped right after its first checkpoint, then resume it from a scrambled RNG."""
    original = bml.checkpoint.save_atomic

    def stop_after_epoch_1(obj, path):
        original(obj, path)
        if path.name == CHECKPOINT and obj["epoch"] == 1:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(bml.checkpoint, "save_atomic", stop_after_epoch_1)
        with pytest.raises(Interrupted):
            train(config)
    assert torch.load(run_folder(config) / CHECKPOINT, weights_only=False)["epoch"] == 1
    torch.manual_seed(12345)  # the resumed run must not depend on the process's random state
    np.random.seed(12345)
    return train(config)


def assert_same_run(whole: dict, whole_config: dict, resumed: dict, resumed_config: dict) -> None:
    """Final metrics, weights, optimizer state and history (wall times aside) all equal, bit for bit."""
    assert resumed["test"] == whole["test"]
    a = torch.load(run_folder(whole_config) / CHECKPOINT, weights_only=False)
    b = torch.load(run_folder(resumed_config) / CHECKPOINT, weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in WALL_TIMES} for r in rows]

    assert strip(a["history"]) == strip(b["history"])
    assert len(a["history"]) == whole_config["train"]["epochs"]


# each method's settings that make it act within 3 tiny epochs (no warm-up)
ACTIVE = {
    "ogm_ge": (),
    "opm": ("method.warmup_epochs=0",),
    "mmpareto": (),
    "relearning": (),
    "mimo": (),  # helper F
    "bogc": (),  # helper F
    "sample_valuation": (),  # 5 of 60 warm-up epochs scale to 0 of 3
    "modality_valuation": (),
    "crmt": ("method.second_phase_epochs=93",),  # step 1: epoch 1, step 2: epochs 2-3, killed at the switch
}
ACTIVE |= {"pmr": (), "agm": ()}  # helper A: PMR's window 0-100 of 150 and AGM's 0-100 of 100 cover 3 epochs
ACTIVE |= {"i2m2": ()}  # helper E
ACTIVE |= {"mla": (), "greedy": ("method.warmup_epochs=0",)}  # helper B


def train_required_runs(data_root: Path, results: Path, method: str, copies: tuple[Path, ...] = ()) -> None:
    """The runs a method needs (its `requires`: I2M2's experts and joint model), one epoch each, trained under
    `results` and copied to each of `copies` (the resumed run reads the very same ones)."""
    from bml.methods import method_spec, required_runs

    needed = required_runs(method_spec(method), list(AV), "concat")
    for name, fusion in needed:
        train(cell_config(data_root, results, name, fusion, epochs=1))
    for root in copies if needed else ():
        shutil.copytree(results, root)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(ACTIVE))
def test_interrupted_run_resumes_bit_identical(packed_avdigits, tmp_path, monkeypatch, method):
    fusion = method_spec(method).head or "concat"  # a method with a head of its own runs under its name
    train_required_runs(packed_avdigits, tmp_path / "whole", method, (tmp_path / "cut",))
    whole_config = cell_config(packed_avdigits, tmp_path / "whole", method, fusion, epochs=3, sets=ACTIVE[method])
    whole = train(whole_config)
    cut_config = cell_config(packed_avdigits, tmp_path / "cut", method, fusion, epochs=3, sets=ACTIVE[method])
    resumed = interrupted_and_resumed(cut_config, monkeypatch)
    assert_same_run(whole, whole_config, resumed, cut_config)
    # the method acted after the interruption, so what it keeps across epochs mattered
    replayed = history(whole_config)[1:]
    acted = {
        "ogm_ge": lambda r: min(r["coef_audio"], r["coef_visual"]) < 1.0,
        "opm": lambda r: r["dropped_steps"] > 0.0,
        "mmpareto": lambda r: "conflict_audio" in r,
        "relearning": lambda r: "relearn_weight_audio" in r,  # the scaled schedule: after epochs 1 and 2
        "mimo": lambda r: 0.0 < r["worst_weight_audio"] < 1.0,
        "bogc": lambda r: r["fusion_weight_audio"] != 0.5,  # the evidence moved the shares off the plain sum
        "mla": lambda r: r["proj_ratio_visual"] < 1.0,  # the projector P, carried across the interruption
        "greedy": lambda r: r["rebalance_audio"] + r["rebalance_visual"] > 0.0,  # speeds M and the window
        "sample_valuation": lambda r: r["resampled_audio"] + r["resampled_visual"] > 0,
        "modality_valuation": lambda r: "part_valuation_audio" in r,
        "i2m2": lambda r: r["lr"] <= 0.01,  # its own lr (the protocol's is 0.05): fine-tuning the loaded runs
        "pmr": lambda r: r["pce_weight_audio"] + r["pce_weight_visual"] > 0.0,  # prototypes in the state
        "agm": lambda r: r["agm_coef_audio"] != 1.0,  # the running scores in the state
        "crmt": lambda r: "loss_margin" not in r,  # step 2 (its one loss term) ran after the resume
    }[method]
    assert any(acted(r) for r in replayed)
