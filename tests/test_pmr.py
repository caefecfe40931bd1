"""PMR: prototype logits, scores, weights and the moving average by hand; what the loss reaches; the prototype
batches; the scaled window and its refusal; a short real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.config import ConfigError
from bml.methods import method_spec
from bml.methods.base import Batch, StepContext
from bml.methods.pmr import (
    PMR,
    class_means,
    pce_weights,
    prototype_logits,
    prototype_score,
    update_prototypes,
)
from bml.models.model import ModelSpec
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}


def pmr_params(**changes) -> dict:
    """PMR's parameters on a 5-epoch schedule that is its own reference (no scaling), window 0-3."""
    params = {
        "alpha": 1.0,
        "momentum": 0.2,
        "proto_share": 0.1,
        "modulation_starts": 0,
        "modulation_ends": 3,
        "reference_epochs": 5,
    }
    return params | changes


def test_prototype_logits_are_negative_distances_and_zero_distance_has_zero_gradient():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    protos = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    z = prototype_logits(f, protos)
    assert torch.allclose(z, torch.tensor([[-5.0, 0.0], [0.0, -5.0]]), atol=1e-5)
    z[:, 1].sum().backward()  # sample 0 sits on prototype 1: no direction, no NaN
    assert torch.isfinite(f.grad).all()
    assert torch.allclose(f.grad[0], torch.zeros(2))
    assert torch.allclose(f.grad[1], -torch.tensor([3.0, 4.0]) / 5.0)  # d(-|f|)/df = -f/|f|


def test_scores_and_weights_by_hand():
    # softmax([0, log 3]) = (1/4, 3/4): label 1 scores 3/4, label 0 scores 1/4
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    assert prototype_score(logits, torch.tensor([1, 0])) == pytest.approx(1.0)
    assert prototype_score(logits, torch.tensor([1, 1])) == pytest.approx(1.5)
    assert pce_weights(1.5, 1.0, alpha=0.7) == (0.0, 0.7)  # audio fits better: the visual term only
    assert pce_weights(1.0, 1.5, alpha=0.7) == (0.7, 0.0)  # visual better: the audio term only
    assert pce_weights(1.0, 1.0, alpha=0.7) == (0.0, 0.0)  # a tie: neither (the code's else branch)
    assert pce_weights(0.0, 0.0, alpha=0.7) == (0.0, 0.0)  # no division by a zero score
    assert pce_weights(64.0, 1e-30, alpha=1.0) == (0.0, 1.0)  # one modality far ahead


def test_class_means_and_the_moving_average_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    means, counts = class_means(f, torch.tensor([0, 0, 2]), n_classes=3)
    assert torch.equal(counts, torch.tensor([2, 0, 1]))
    assert torch.allclose(means, torch.tensor([[2.0, 3.0], [0.0, 0.0], [10.0, 0.0]]))
    first = update_prototypes(means, counts, None, momentum=0.2, average=False)
    assert torch.allclose(first, means)  # an unseen class starts at 0
    old = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 10.0]])
    fresh = update_prototypes(means, counts, old, momentum=0.2, average=False)
    assert torch.allclose(fresh, torch.tensor([[2.0, 3.0], [5.0, 5.0], [10.0, 0.0]]))  # unseen keeps its old
    ema = update_prototypes(means, counts, old, momentum=0.2, average=True)
    # (1 - 0.2) * new + 0.2 * old: (1.6, 2.4), kept (5, 5), (8, 2)
    assert torch.allclose(ema, torch.tensor([[1.6, 2.4], [5.0, 5.0], [8.0, 2.0]]))


def test_prototype_batches_take_the_share_then_go_on_until_every_class_is_seen():
    method = PMR(method_spec("pmr"), pmr_params(), unit_run(AV, n_classes=2))
    labels = np.array([0] * 50 + [1] * 50)
    # 100 samples in batches of 10: a tenth is one batch of a (seed, epoch) shuffle
    chosen = method.prototype_indices(0, 100, 10, labels)
    assert len(chosen) % 10 == 0 and set(labels[chosen]) == {0, 1}
    assert np.array_equal(chosen, method.prototype_indices(0, 100, 10, labels))  # the same on a resume
    assert not np.array_equal(chosen, method.prototype_indices(1, 100, 10, labels))  # a new shuffle per epoch
    rare = np.array([0] * 99 + [1])  # the one sample of class 1 must be read
    chosen = method.prototype_indices(0, 100, 10, rare)
    assert 1 in rare[chosen] and len(chosen) <= 100
    assert len(method.prototype_indices(0, 5, 64, np.zeros(5, dtype=int))) == 5  # fewer than a batch: all of it


def _model_and_batch(method: PMR):
    torch.manual_seed(0)
    model = method.build_model(ModelSpec("small_cnn", "concat", 3, AV))
    inputs = {"audio": torch.randn(4, 1, 64, 100), "visual": torch.randn(4, 3, 3, 32, 32)}
    return model, Batch(inputs, torch.tensor([0, 1, 2, 0]), torch.arange(4))


def test_the_loss_adds_the_weaker_modalitys_prototype_ce_which_reaches_its_encoder_only():
    method = PMR(method_spec("pmr"), pmr_params(alpha=0.5), unit_run(AV, n_classes=3, epochs=5))
    model, batch = _model_and_batch(method)
    out = model(batch.inputs)
    f_a, f_v = out.features["audio"], out.features["visual"]
    # audio's features sit on their prototypes (it fits perfectly), visual's are far off: visual is weaker
    method.prototypes = {"audio": f_a[:3].detach().clone(), "visual": torch.full((3, f_v.shape[1]), 100.0)}
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 1, 0, 1)
    losses = method.loss(model, out, batch, ctx)
    assert set(losses) == {"ce", "pce_audio", "pce_visual"}
    assert losses["pce_audio"].item() == 0.0
    expected = 0.5 * F.cross_entropy(prototype_logits(f_v, method.prototypes["visual"]), batch.labels)
    assert losses["pce_visual"].item() == pytest.approx(expected.item())
    log = method.epoch_log()
    assert (log["pce_weight_audio"], log["pce_weight_visual"]) == (0.0, 0.5)
    # the prototypes are constants: the PCE term reaches the visual encoder and nothing else
    grads = torch.autograd.grad(losses["pce_visual"], list(model.parameters()), allow_unused=True)
    for (name, _), g in zip(model.named_parameters(), grads, strict=True):
        if not name.startswith("encoders.visual."):
            assert g is None or torch.equal(g, torch.zeros_like(g)), name
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_outside_the_window_the_loss_is_ce_alone_with_the_same_columns():
    method = PMR(method_spec("pmr"), pmr_params(modulation_starts=2), unit_run(AV, n_classes=3, epochs=5))
    assert [method.active(e) for e in range(5)] == [False, False, True, True, False]
    model, batch = _model_and_batch(method)
    out = model(batch.inputs)
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 0, 0, 1)
    losses = method.loss(model, out, batch, ctx)
    assert losses["pce_audio"].item() == losses["pce_visual"].item() == 0.0
    assert losses["ce"].item() == pytest.approx(F.cross_entropy(out.logits, batch.labels).item())


@pytest.mark.parametrize(
    "ends, epochs, expected",
    [(100, 150, 100), (100, 16, 11), (100, 3, 2), (100, 30, 20)],  # 100 * epochs / 150, half up
)
def test_the_window_scales_with_the_protocol(ends, epochs, expected):
    method = PMR(
        method_spec("pmr"), pmr_params(modulation_ends=ends, reference_epochs=150), unit_run(AV, epochs=epochs)
    )
    assert (method.starts, method.ends) == (0, expected)


def test_a_window_past_the_run_is_refused_before_any_job(packed_avdigits, tmp_path):
    # 150 of 150 epochs is epoch 3 of a 3-epoch run: PMR would never act
    with pytest.raises(
        ConfigError, match=r"key 'modulation_starts': 150 of a 150-epoch schedule .* choose at most 124"
    ):
        cell_config(
            packed_avdigits,
            tmp_path,
            "pmr",
            epochs=3,
            sets=("method.modulation_starts=150", "method.modulation_ends=150"),
        )
    with pytest.raises(ConfigError, match=r"key 'modulation_starts': 9 is after 'modulation_ends' 4"):
        cell_config(packed_avdigits, tmp_path, "pmr", sets=("method.modulation_starts=9", "method.modulation_ends=4"))
    with pytest.raises(ConfigError, match=r"key 'momentum'"):
        cell_config(packed_avdigits, tmp_path, "pmr", sets=("method.momentum=1.5",))
    assert not (tmp_path / "avdigits").exists()  # nothing was started


@pytest.mark.slow
def test_a_short_run_on_tiny_avdigits_computes_prototypes_and_logs_the_weights(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "pmr", "concat", epochs=2)
    result = train(config)
    rows = history(config)
    assert len(rows) == 2
    for row in rows:
        for m in ("audio", "visual"):
            assert 0.0 <= row[f"pce_weight_{m}"] <= 1.0  # the share of steps it trailed, times alpha 1
            assert row[f"proto_classes_{m}"] == 10  # every digit has a prototype
            assert 0.0 <= row[f"proto_acc_{m}"] <= 100.0
        assert row["pce_weight_audio"] + row["pce_weight_visual"] > 0  # some modality trailed in some batch
        assert row["train_loss"] == pytest.approx(row["loss_ce"] + row["loss_pce_audio"] + row["loss_pce_visual"])
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0


def test_window_problems_by_hand_for_every_method_with_a_window():
    from bml.methods import base
    from bml.methods.checks import window_problems
    from bml.methods.schedule import scale_epoch

    assert base.scale_epoch is scale_epoch  # one rule, torch-free for the plan, re-exported for the methods
    window = {"modulation_starts": 0, "modulation_ends": 100, "reference_epochs": 150}
    assert window_problems(window, 16) == []
    assert window_problems({"alpha": 1.0}, 16) == []  # no window, nothing to say
    # 16 epochs: starts s is epoch (32 s + 150) // 300; epoch 16 from s = 146 on: at most 145
    (problem,) = window_problems(window | {"modulation_starts": 146, "modulation_ends": 150}, 16)
    assert "epoch 16 of this 16-epoch run" in problem and "choose at most 145" in problem
    assert window_problems(window | {"modulation_starts": 145, "modulation_ends": 150}, 16) == []
    (problem,) = window_problems(window | {"modulation_starts": 7, "modulation_ends": 6}, 16)
    assert problem == "key 'modulation_starts': 7 is after 'modulation_ends' 6; choose at most 6"


def test_the_ogm_family_is_refused_alike(packed_avdigits, tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"(?s)modulation window of method 'ogm_ge'.*'modulation_starts': 60 is after 'modulation_ends' 50",
    ):
        cell_config(packed_avdigits, tmp_path, "ogm_ge", sets=("method.modulation_starts=60",))
