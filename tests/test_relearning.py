"""Diagnosing & Re-learning: purity and weights by hand, the blend on a tiny model, the schedule, a real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.methods import method_spec
from bml.methods.base import EpochContext
from bml.methods.relearning import Relearning, blend_towards, cluster_purity, relearn_epochs, relearn_weight
from bml.models.model import ModelSpec
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}
PARAMS = {"every": 20, "times": 3, "reference_epochs": 90}  # params/methods/relearning.yaml


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
    # 0-based epochs after which to re-learn: the authors' `epoch % 20 == 0 and epoch > 0`, 3 times, in 90 epochs
    assert relearn_epochs(20, 3, 90, 90) == [20, 40, 60]
    # 20 epochs: 20 * 20 / 90 = 4.4 -> 4, 8.9 -> 9, 13.3 -> 13
    assert relearn_epochs(20, 3, 90, 20) == [4, 9, 13]
    # BalanceBenchmark (reinit_epoch 15, reinit_num 2, 30 epochs): after epoch 15 only, 30 is never reached
    assert relearn_epochs(15, 2, 30, 30) == [15]
    assert relearn_epochs(20, 3, 90, 3) == [1]  # 0.67 -> 1, 1.33 -> 1, 2 -> 2: after the last epoch is dropped
    assert relearn_epochs(20, 3, 90, 2) == []  # never after epoch 0, never after the last epoch
    assert relearn_epochs(20, 0, 90, 90) == []


def test_blend_moves_parameters_towards_the_initial_state_and_leaves_buffers():
    torch.manual_seed(0)
    method = Relearning(method_spec("relearning"), PARAMS, unit_run(AV, n_classes=3, epochs=90))
    model = method.build_model(ModelSpec("small_cnn", "concat", 3, AV))
    assert method.schedule == [20, 40, 60]  # from the run's 90 epochs
    enc = model.encoders["audio"]
    with torch.no_grad():  # what the loop's train.init does between build_model and the first epoch
        next(enc.parameters()).mul_(2.0)
    method.on_epoch_start(EpochContext(method.run, model, 0))
    for name, p in enc.named_parameters():  # the state kept is the one training starts from
        assert torch.equal(method.initial["audio"][name], p.detach()), name
    trained = {}
    with torch.no_grad():
        for name, p in enc.named_parameters():
            p.add_(torch.randn_like(p))
            trained[name] = p.clone()
        for b in enc.buffers():
            if b.is_floating_point():
                b.add_(1.0)
    buffers = [b.clone() for b in enc.buffers()]
    visual = [p.detach().clone() for p in model.encoders["visual"].parameters()]
    blend_towards(enc, method.initial["audio"], 0.25)
    for name, p in enc.named_parameters():
        assert torch.allclose(p, 0.25 * method.initial["audio"][name] + 0.75 * trained[name], atol=1e-6), name
    for b, before in zip(enc.buffers(), buffers, strict=True):
        assert torch.equal(b, before)
    assert all(torch.equal(a, b) for a, b in zip(visual, model.encoders["visual"].parameters(), strict=True))
    blend_towards(enc, method.initial["audio"], 1.0)  # w = 1: back to the start exactly
    for name, p in enc.named_parameters():
        assert torch.allclose(p, method.initial["audio"][name], atol=1e-6)
    # what a resumed run restores: the same initial state
    again = Relearning(method_spec("relearning"), PARAMS, unit_run(AV, n_classes=3, epochs=90))
    again.load_state_dict(method.state_dict())
    for m in AV:
        for name, value in method.initial[m].items():
            assert torch.equal(again.initial[m][name], value), (m, name)


def test_a_short_run_on_tiny_avdigits_logs_the_diagnosis(packed_avdigits, tmp_path):
    # 3 epochs: the scaled schedule re-learns after (0-based) epoch 1 only
    config = cell_config(packed_avdigits, tmp_path, "relearning", "concat", epochs=3)
    result = train(config)
    rows = history(config)
    for m in ("audio", "visual"):
        w = rows[1][f"relearn_weight_{m}"]
        gap = abs(rows[1][f"purity_train_{m}"] - rows[1][f"purity_heldout_{m}"])
        assert w == pytest.approx(math.tanh(3.0 * gap))
        assert 0.0 <= rows[1][f"purity_heldout_{m}"] <= 1.0
    for row in (rows[0], rows[2]):  # not on the schedule: the cells are empty
        assert "relearn_weight_audio" not in row
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
