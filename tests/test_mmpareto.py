"""MMPareto: the weights and the combination by hand, the edge cases, and a short real run."""

from __future__ import annotations

import pytest
import torch
from test_train import QUIET, tiny_config

from bml.methods.base import StepState
from bml.methods.mmpareto import MMPareto, combine, pareto_weights
from bml.models.fusion import ModelConfig, build_model
from bml.train import train


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


def test_the_step_gives_encoders_the_combined_gradient_and_heads_their_own():
    torch.manual_seed(0)
    model = build_model(ModelConfig("small_cnn", "concat", 3))
    method = MMPareto({"gamma": 1.5})
    method.setup(model, {})
    audio, frames = torch.randn(4, 1, 64, 100), torch.randn(4, 3, 3, 32, 32)
    batch, state = {"label": torch.tensor([0, 1, 2, 0])}, StepState(0, 0, 1, {})
    # the expected gradients, computed apart
    out = model(audio, frames)
    losses = method.loss(model, out, batch, state)
    enc_a = list(model.audio_encoder.parameters())
    g_mm = torch.autograd.grad(losses["mm"], enc_a, retain_graph=True)
    g_a = torch.autograd.grad(losses["audio"], enc_a, retain_graph=True)
    head_mm = torch.autograd.grad(losses["mm"], list(model.fusion.parameters()), retain_graph=True)
    head_a = torch.autograd.grad(losses["audio"], list(model.unimodal_heads["audio"].parameters()))
    k0, k1 = pareto_weights(torch.cat([g.flatten() for g in g_mm]), torch.cat([g.flatten() for g in g_a]))
    model.zero_grad()
    method.backward(model, method.loss(model, model(audio, frames), batch, state), state)
    for p, gm, ga in zip(enc_a, g_mm, g_a, strict=True):
        assert torch.allclose(p.grad, combine(gm, ga, k0, k1, 1.5), atol=1e-6)
    for p, g in zip(model.fusion.parameters(), head_mm, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-7)
    for p, g in zip(model.unimodal_heads["audio"].parameters(), head_a, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-7)
    log = method.epoch_log()
    assert {"cosine_audio", "conflict_audio", "weight_mm_visual"} <= set(log)
    assert log["weight_mm_audio"] == pytest.approx(k0)


def test_a_short_run_on_tiny_avdigits_logs_the_conflicts(packed_avdigits, tmp_path):
    result = train(tiny_config(packed_avdigits, tmp_path, "mmpareto", "concat", epochs=2), log=QUIET)
    history = (tmp_path / "avdigits" / "embedded" / "concat" / "mmpareto" / "seed0" / "history.csv").read_text()
    for column in ("loss_mm", "loss_audio", "loss_visual", "conflict_audio", "conflict_visual", "cosine_visual"):
        assert column in history
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
