"""MMPareto: the weights and the combination by hand, the edge cases, and a short real run."""

from __future__ import annotations

import pytest
import torch
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.methods import method_spec
from bml.methods.base import Batch, StepContext
from bml.methods.mmpareto import MMPareto, combine, pareto_weights
from bml.models.model import ModelSpec, unimodal_logits
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}
AVF = {"audio": "audio", "visual": "frames", "flow": "flow"}


def test_agreeing_gradients_get_equal_weights():
    assert pareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])) == (0.5, 0.5)


def test_conflicting_gradients_get_the_min_norm_point():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 2.0])  # cos < 0
    # min_c |c g1 + (1 - c) g2|^2: c = (g2 - g1) . g2 / |g1 - g2|^2 = (2 + 4) / (4 + 4) = 0.75
    k0, k1 = pareto_weights(g1, g2)
    assert (k0, k1) == pytest.approx((0.75, 0.25))
    point = k0 * g1 + k1 * g2
    for c in torch.linspace(0, 1, 101):  # no other convex combination is shorter
        assert point.norm() <= (c * g1 + (1 - c) * g2).norm() + 1e-6


def test_orthogonal_counts_as_conflict_and_a_much_longer_gradient_is_clipped_to_the_end():
    k0, k1 = pareto_weights(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))  # cos = 0: min-norm point
    assert (k0, k1) == pytest.approx((0.2, 0.8))  # c = (g2 - g1) . g2 / |g1 - g2|^2 = 1 / 5
    k0, k1 = pareto_weights(torch.tensor([10.0, 0.0]), torch.tensor([-0.1, 0.1]))
    # c = (g2 - g1) . g2 / |g1 - g2|^2 = (1.01 + 0.01) / (102.01 + 0.01) ~ 0.01: nearly all on the short one
    assert k0 == pytest.approx(1.02 / 102.02) and k1 == pytest.approx(1 - 1.02 / 102.02)


def test_exactly_opposed_gradients_cancel_without_nan():
    g = torch.tensor([3.0, -4.0])
    k0, k1 = pareto_weights(g, -g)
    assert (k0, k1) == pytest.approx((0.5, 0.5))
    out = combine(g, -g, k0, k1, gamma=1.5)
    assert torch.equal(out, torch.zeros(2))


def test_a_zero_gradient_gets_equal_weights_and_no_nan():
    g = torch.tensor([3.0, 4.0])
    assert pareto_weights(g, torch.zeros(2)) == (0.5, 0.5)
    assert pareto_weights(torch.zeros(2), torch.zeros(2)) == (0.5, 0.5)
    assert torch.equal(combine(torch.zeros(2), torch.zeros(2), 0.5, 0.5, 1.5), torch.zeros(2))
    assert torch.allclose(combine(g, torch.zeros(2), 0.5, 0.5, 1.5), 1.5 * g)


def test_combine_keeps_at_least_the_plain_sum_magnitude():
    g_mm, g_uni = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    assert torch.allclose(combine(g_mm, g_uni, 0.5, 0.5, 1.5), 1.5 * (g_mm + g_uni))  # ratio exactly 1
    g_mm, g_uni = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 2.0])
    new = 2 * 0.75 * g_mm + 2 * 0.25 * g_uni  # (1.0, 1.0): |new| = sqrt(2) < |g_mm + g_uni| = 2
    out = combine(g_mm, g_uni, 0.75, 0.25, 1.5)
    assert torch.allclose(out, 1.5 * new * 2 / new.norm())
    assert out.norm().item() == pytest.approx(1.5 * 2.0)
    # a combination longer than the plain sum is only scaled by gamma
    assert torch.allclose(combine(g_mm, g_uni, 1.0, 0.0, 1.5), 1.5 * 2 * g_mm)


@pytest.mark.parametrize("modalities", [AV, AVF], ids=["two", "three"])
def test_the_step_gives_encoders_the_combined_gradient_and_heads_their_own(modalities):
    torch.manual_seed(0)
    method = MMPareto(method_spec("mmpareto"), {"gamma": 1.5}, unit_run(modalities, n_classes=3))
    model = method.build_model(ModelSpec("small_cnn", "concat", 3, modalities))
    assert set(model.heads) == set(modalities)  # MMPareto's own uni-modal heads
    shapes = {"audio": (4, 1, 64, 100), "frames": (4, 3, 3, 32, 32), "flow": (4, 3, 2, 32, 32)}
    inputs = {m: torch.randn(shapes[kind]) for m, kind in modalities.items()}
    batch = Batch(inputs, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 0, 0, 1)
    # the expected gradients, computed apart
    losses = method.loss(model, model(inputs), batch, ctx)
    assert set(losses) == {"mm", *modalities}
    expected = {}
    for m in modalities:
        enc = list(model.encoders[m].parameters())
        g_mm = torch.autograd.grad(losses["mm"], enc, retain_graph=True)
        g_m = torch.autograd.grad(losses[m], enc, retain_graph=True)
        k0, k1 = pareto_weights(torch.cat([g.flatten() for g in g_mm]), torch.cat([g.flatten() for g in g_m]))
        expected[m] = ([combine(a, b, k0, k1, 1.5) for a, b in zip(g_mm, g_m, strict=True)], k0)
    head_mm = torch.autograd.grad(losses["mm"], list(model.fusion.parameters()), retain_graph=True)
    heads = {
        m: torch.autograd.grad(losses[m], list(model.heads[m].parameters()), retain_graph=True) for m in modalities
    }
    model.zero_grad()
    method.backward(model, method.loss(model, model(inputs), batch, ctx), ctx)
    for m, (grads, _) in expected.items():
        for p, g in zip(model.encoders[m].parameters(), grads, strict=True):
            assert torch.allclose(p.grad, g, atol=1e-6), m
        # each head is trained by its own loss only
        for p, g in zip(model.heads[m].parameters(), heads[m], strict=True):
            assert torch.allclose(p.grad, g, atol=1e-7), m
    for p, g in zip(model.fusion.parameters(), head_mm, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-7)
    log = method.epoch_log()
    assert {f"{k}_{m}" for k in ("cosine", "conflict", "weight_mm") for m in modalities} <= set(log)
    assert log["weight_mm_audio"] == pytest.approx(expected["audio"][1])


def test_per_modality_logits_come_from_mmparetos_own_heads():
    torch.manual_seed(0)
    method = MMPareto(method_spec("mmpareto"), {"gamma": 1.5}, unit_run(AV, n_classes=3))
    model = method.build_model(ModelSpec("small_cnn", "concat", 3, AV)).eval()
    inputs = {"audio": torch.randn(4, 1, 64, 100), "visual": torch.randn(4, 3, 3, 32, 32)}
    with torch.no_grad():
        out = method.predict(model, inputs)
        split = model.unimodal_logits(out.features)  # the fusion head's split: what acc_<m> read before
        for m in AV:
            assert torch.equal(out.unimodal[m], model.heads[m](out.features[m])), m
            assert not torch.allclose(out.unimodal[m], split[m]), m
        assert torch.equal(out.logits, model(inputs).logits)  # the prediction itself is the fused one
    assert unimodal_logits(model, out) is out.unimodal  # what bml/evaluate.py reads for acc_<m>


def test_a_short_run_on_tiny_avdigits_logs_the_conflicts(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "mmpareto", "concat", epochs=2)
    result = train(config)
    for row in history(config):
        for column in ("loss_mm", "loss_audio", "loss_visual", "cosine_audio", "cosine_visual"):
            assert column in row, column
        for m in ("audio", "visual"):
            assert 0.0 <= row[f"conflict_{m}"] <= 1.0 and -1.0 <= row[f"cosine_{m}"] <= 1.0
            assert 0.0 <= row[f"weight_mm_{m}"] <= 1.0
        # the history's loss is the sum of its terms
        assert row["train_loss"] == pytest.approx(row["loss_mm"] + row["loss_audio"] + row["loss_visual"])
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
