"""MIMO (bml's reading): the smooth max and its weights by hand, the edge cases, the step, and a short real run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.config import ConfigError
from bml.methods import method_spec
from bml.methods.base import Batch, StepContext
from bml.methods.mimo import MIMO, smooth_max, worst_first_weights
from bml.models.model import ModelSpec
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}
AVF = {"audio": "audio", "visual": "frames", "flow": "flow"}


def test_tied_losses_share_the_weight_and_the_smooth_max_adds_mu_log_m():
    losses = torch.tensor([1.0, 1.0])
    assert torch.allclose(worst_first_weights(losses, 1.0), torch.tensor([0.5, 0.5]))
    # 1 * log(e + e) = 1 + log 2
    assert smooth_max(losses, 1.0).item() == pytest.approx(1.0 + math.log(2.0))
    three = torch.tensor([0.7, 0.7, 0.7])
    assert torch.allclose(worst_first_weights(three, 0.5), torch.full((3,), 1 / 3))


def test_the_modality_far_behind_takes_nearly_all_the_weight():
    losses = torch.tensor([0.1, 3.1])  # visual far behind (its loss 3 larger)
    w = worst_first_weights(losses, 1.0)
    # softmax: e^0.1 / (e^0.1 + e^3.1) = 1 / (1 + e^3)
    assert w[0].item() == pytest.approx(1 / (1 + math.exp(3.0)))
    assert w[1].item() == pytest.approx(math.exp(3.0) / (1 + math.exp(3.0)))
    # a small mu is the hard max: 0.05 * log(e^2 + e^62) = 3.1 + 0.05 * log(1 + e^-60)
    assert smooth_max(losses, 0.05).item() == pytest.approx(3.1, abs=1e-6)
    assert torch.allclose(worst_first_weights(losses, 0.05), torch.tensor([0.0, 1.0]), atol=1e-20)  # e^-60


def test_the_gradient_of_the_smooth_max_is_the_weights_and_large_losses_do_not_overflow():
    losses = torch.tensor([2.0, 1.0, 0.5], requires_grad=True)
    (grad,) = torch.autograd.grad(smooth_max(losses, 0.5), losses)
    assert torch.allclose(grad, worst_first_weights(losses, 0.5))
    assert grad.sum().item() == pytest.approx(1.0)
    big = torch.tensor([1000.0, 999.0])
    assert torch.isfinite(smooth_max(big, 0.01)) and torch.isfinite(worst_first_weights(big, 0.01)).all()


def test_zero_uni_modal_gradients_leave_the_fused_losss_alone():
    # losses that do not depend on the parameters: their weights are still defined, and add nothing
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    fused = (x**2).sum()
    objective = fused + 3.0 * smooth_max(torch.tensor([0.4, 0.9]), 1.0)
    (grad,) = torch.autograd.grad(objective, x)
    assert torch.equal(grad, 2 * x.detach())


@pytest.mark.parametrize("modalities", [AV, AVF], ids=["two", "three"])
def test_the_step_weights_each_uni_modal_loss_by_its_softmax(modalities):
    torch.manual_seed(0)
    params = {"gamma": 2.0, "mu": 0.5}
    method = MIMO(method_spec("mimo"), params, unit_run(modalities, n_classes=3))
    model = method.build_model(ModelSpec("small_cnn", "concat", 3, modalities))
    assert set(model.heads) == set(modalities)
    shapes = {"audio": (4, 1, 64, 100), "frames": (4, 3, 3, 32, 32), "flow": (4, 3, 2, 32, 32)}
    inputs = {m: torch.randn(shapes[kind]) for m, kind in modalities.items()}
    batch = Batch(inputs, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 0, 0, 1)
    ce = torch.nn.functional.cross_entropy
    out = model(inputs)
    losses = method.loss(model, out, batch, ctx)
    assert set(losses) == {"mm", "worst"}
    uni = torch.stack([ce(model.heads[m](out.features[m]), batch.labels) for m in modalities])
    w = worst_first_weights(uni, 0.5)
    # encoder m's gradient: dL_mm + gamma * w_m * dL_m (the other uni-modal losses do not reach it)
    expected = {}
    for i, m in enumerate(modalities):
        enc = list(model.encoders[m].parameters())
        g_mm = torch.autograd.grad(ce(out.logits, batch.labels), enc, retain_graph=True)
        g_m = torch.autograd.grad(uni[i], enc, retain_graph=True)
        expected[m] = [a + 2.0 * w[i] * b for a, b in zip(g_mm, g_m, strict=True)]
    method.backward(model, losses, ctx)
    for m in modalities:
        for p, g in zip(model.encoders[m].parameters(), expected[m], strict=True):
            assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-5), m  # two orders of summation
    log = method.epoch_log()
    assert sum(log[f"worst_weight_{m}"] for m in modalities) == pytest.approx(1.0)
    assert log["worst_weight_audio"] == pytest.approx(w[0].item())


def test_a_non_positive_mu_is_refused_before_any_job(packed_avdigits, tmp_path):
    with pytest.raises(ConfigError, match="mu"):
        cell_config(packed_avdigits, tmp_path, "mimo", "concat", epochs=2, sets=("method.mu=0",))


def test_a_short_run_on_tiny_avdigits_logs_the_weights(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "mimo", "concat", epochs=2)
    result = train(config)
    for row in history(config):
        assert row["worst_weight_audio"] + row["worst_weight_visual"] == pytest.approx(1.0)
        assert row["train_loss"] == pytest.approx(row["loss_mm"] + row["loss_worst"])
        # the smooth max lies between the largest uni-modal loss and it plus mu log 2 (means over the epoch)
        assert row["loss_worst"] >= min(row["uni_loss_audio"], row["uni_loss_visual"]) - 1e-6
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
