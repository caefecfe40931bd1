"""Diagnosing & Re-learning: purity and weights by hand, the blend on a tiny model, the schedule, a real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_train import QUIET, tiny_config

from bml.methods.relearning import Relearning, blend_towards, cluster_purity, relearn_epochs, relearn_weight
from bml.models.fusion import ModelConfig, build_model
from bml.train import train


def _blobs(labels: list[int], spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.array(labels)
    centres = np.eye(8)[: y.max() + 1] * 10.0
    return centres[y] + rng.normal(scale=spread, size=(len(y), 8)), y


def test_separated_clusters_are_pure_and_merged_labels_are_not():
    x, y = _blobs([0, 1, 2] * 20, spread=0.1)
    assert cluster_purity(x, y, 3, seed=0) == 1.0
    # two labels share one blob: k-means splits it any way, a blob's majority covers about half
    y_merged = np.array([0, 1, 2, 3] * 15)
    x, _ = _blobs([0, 1, 2, 2] * 15, spread=0.1)
    assert cluster_purity(x, y_merged, 4, seed=0) == pytest.approx(0.75, abs=0.1)


def test_purity_by_hand_on_a_fixed_assignment():
    # two far blobs; blob A holds labels (0, 0, 0, 1), blob B (1, 1, 0, 1): majorities 3 + 3 of 8
    x = np.array([[0.0]] * 4 + [[100.0]] * 4)
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    assert cluster_purity(x, y, 2, seed=0) == pytest.approx(6 / 8)


def test_relearn_weight_by_hand():
    assert relearn_weight(0.9, 0.9, lam=3.0) == 0.0
    assert relearn_weight(0.9, 0.6, lam=3.0) == pytest.approx(math.tanh(0.9))
    assert relearn_weight(0.6, 0.9, lam=3.0) == relearn_weight(0.9, 0.6, lam=3.0)  # the gap's size only
    assert relearn_weight(1.0, 0.0, lam=3.0) == pytest.approx(math.tanh(3.0))


def test_schedule_is_the_papers_at_90_epochs_and_scales():
    assert relearn_epochs(20, 3, 90, 90) == [20, 40, 60]
    assert relearn_epochs(20, 3, 90, 20) == [4, 9, 13]
    assert relearn_epochs(20, 3, 90, 2) == [1]  # never after the last epoch
    assert relearn_epochs(20, 0, 90, 90) == []


def test_blend_moves_parameters_towards_the_initial_state_and_leaves_buffers():
    torch.manual_seed(0)
    model = build_model(ModelConfig("small_cnn", "concat", 3))
    method = Relearning({"every": 20, "times": 3, "reference_epochs": 90})
    method.setup(model, {"train": {"epochs": 90}})
    enc = model.audio_encoder
    trained = {}
    with torch.no_grad():
        for name, p in enc.named_parameters():
            p.add_(torch.randn_like(p))
            trained[name] = p.clone()
        for b in enc.buffers():
            if b.is_floating_point():
                b.add_(1.0)
    buffers = [b.clone() for b in enc.buffers()]
    blend_towards(enc, method.initial["audio"], 0.25)
    for name, p in enc.named_parameters():
        assert torch.allclose(p, 0.25 * method.initial["audio"][name] + 0.75 * trained[name], atol=1e-6), name
    for b, before in zip(enc.buffers(), buffers, strict=True):
        assert torch.equal(b, before)
    blend_towards(enc, method.initial["audio"], 1.0)  # w = 1: back to the start exactly
    for name, p in enc.named_parameters():
        assert torch.allclose(p, method.initial["audio"][name], atol=1e-6)


def test_a_short_run_on_tiny_avdigits_logs_the_diagnosis(packed_avdigits, tmp_path):
    # 3 epochs: the scaled schedule re-learns after epochs 1 and 2
    result = train(tiny_config(packed_avdigits, tmp_path, "relearning", "concat", epochs=3), log=QUIET)
    lines = (tmp_path / "avdigits" / "embedded" / "concat" / "relearning" / "seed0" / "history.csv"
             ).read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    for row in rows[:2]:
        w = float(row["relearn_weight_visual"])
        gap = abs(float(row["purity_train_visual"]) - float(row["purity_heldout_visual"]))
        assert w == pytest.approx(math.tanh(3.0 * gap))
    assert rows[2]["relearn_weight_audio"] == ""  # not on the schedule
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
