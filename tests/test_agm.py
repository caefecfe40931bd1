"""AGM: the Shapley outputs, scores, ratios and coefficients by hand; what the hook does to the gradients; the
clipping rule on every head; the scaled window; a short real run."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

import bml.methods.agm as agm_module
from bml.catalog import FUSIONS
from bml.methods import method_spec
from bml.methods.agm import (
    AGM,
    agm_coefficients,
    agm_ratios,
    agm_score,
    clip_if_head_gradient_large,
    head_output_weights,
    running_mean,
    shapley_outputs,
)
from bml.methods.base import Batch, StepContext, StepServices
from bml.models.model import ModelSpec, build_model, unimodal_logits
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}


def agm_params(**changes) -> dict:
    """AGM's parameters on a 5-epoch schedule that is its own reference (no scaling), window 1-3."""
    params = {
        "alpha": 1.0,
        "clamp": 10.0,
        "clip_norm": 1.0,
        "modulation_starts": 1,
        "modulation_ends": 3,
        "reference_epochs": 5,
        "zeroed_pass_gradients": True,
    }
    return params | changes


def test_shapley_outputs_by_hand_sum_to_the_fused_output():
    full, without_a, without_v = torch.tensor([4.0]), torch.tensor([1.0]), torch.tensor([3.0])
    o_a, o_v = shapley_outputs(full, without_a, without_v)
    # o_a = (4 - 1 + 3) / 2 = 3: audio's removal costs 3; o_v = (4 - 3 + 1) / 2 = 1
    assert (o_a.item(), o_v.item()) == (3.0, 1.0) and (o_a + o_v).item() == 4.0


def test_scores_by_hand_with_the_floor():
    assert agm_score(torch.zeros(2, 2), torch.tensor([0, 1])) == pytest.approx(math.log(2.0))
    # p(y) = e^-100 / (1 + e^-100) < 1e-8: counted as 1e-8
    assert agm_score(torch.tensor([[0.0, 100.0]]), torch.tensor([0])) == pytest.approx(-math.log(1e-8))


def test_ratios_and_coefficients_by_hand():
    assert agm_ratios({"audio": 0.1, "visual": 2.0})["audio"] == pytest.approx(math.exp(1.9))  # exp(s_v - s_a)
    three = agm_ratios({"a": 0.0, "b": 1.0, "c": 2.0})  # M / (M - 1) = 3/2, mean 1
    assert three["a"] == pytest.approx(math.exp(1.5)) and three["b"] == pytest.approx(1.0)
    # a tie now and as usual: no modulation
    tie = agm_coefficients({"audio": 1.0, "visual": 1.0}, {"audio": 0.7, "visual": 0.7}, alpha=0.5, clamp=10)
    assert tie == {"audio": 1.0, "visual": 1.0}
    # audio far ahead in this batch, even as usual: audio slowed, visual sped up
    k = agm_coefficients({"audio": 0.1, "visual": 2.0}, {"audio": 1.0, "visual": 1.0}, alpha=0.5, clamp=10)
    assert k["audio"] == pytest.approx(math.exp(0.5 * (1 - math.exp(1.9))))
    assert k["visual"] == pytest.approx(math.exp(0.5 * (1 - math.exp(-1.9))))
    assert k["audio"] < 1.0 < k["visual"]
    # the running record far ahead, the batch even: r* - r = e^5 - 1 > 10, clamped at 10
    k = agm_coefficients({"audio": 1.0, "visual": 1.0}, {"audio": 0.0, "visual": 5.0}, alpha=0.5, clamp=10)
    assert k["audio"] == pytest.approx(math.exp(5.0))
    assert k["visual"] == pytest.approx(math.exp(0.5 * (math.exp(-5.0) - 1.0)))


def test_running_scores_are_the_cumulative_mean_updated_after_the_coefficient():
    assert running_mean(0.0, 2.0, 1) == 2.0 and running_mean(2.0, 4.0, 2) == 3.0
    method = AGM(method_spec("agm"), agm_params(), unit_run(AV, n_classes=3))
    model, batch = _model_and_batch()
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 0, 0, 1)
    method.on_features(model, model(batch.inputs), batch, ctx)
    first = method.epoch_log()
    # the first step's record starts at 0 (the code's): r* = 1, and the record becomes the step's score
    assert method.steps == 1 and method.running["audio"] == pytest.approx(first["agm_score_audio"])
    assert first["agm_coef_audio"] == 1.0  # epoch 0 is outside the window 1-3: logged as 1


def _model_and_batch(fusion: str = "concat"):
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", fusion, 3, AV))
    inputs = {"audio": torch.randn(4, 1, 64, 100), "visual": torch.randn(4, 3, 3, 32, 32)}
    return model, Batch(inputs, torch.tensor([0, 1, 2, 0]), torch.arange(4))


def _grads(model, loss):
    return list(torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))


def test_the_hook_scales_the_gradient_into_each_shapley_output(monkeypatch):
    method = AGM(method_spec("agm"), agm_params(), unit_run(AV, n_classes=3))
    model, batch = _model_and_batch()
    monkeypatch.setattr(agm_module, "agm_coefficients", lambda *a, **k: {"audio": 0.5, "visual": 2.0})
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 1, 0, 1)  # inside
    before = copy.deepcopy(model.state_dict())  # the running statistics the zeroed passes will read
    out = method.on_features(model, model(batch.inputs), batch, ctx)
    got = _grads(model, F.cross_entropy(out.logits, batch.labels))
    # the same passes by hand: d/d(full) = (k_a + k_v)/2 g, d/d(o_{-a}) = (k_v - k_a)/2 g, d/d(o_{-v}) the opposite
    model.load_state_dict(before)
    full = model(batch.inputs).logits
    model.eval()
    without_a = model({"audio": torch.zeros_like(batch.inputs["audio"]), "visual": batch.inputs["visual"]}).logits
    without_v = model({"audio": batch.inputs["audio"], "visual": torch.zeros_like(batch.inputs["visual"])}).logits
    model.train()
    z = full.detach().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(z, batch.labels), [z])  # dCE/dz at z = o_a + o_v = full
    surrogate = (1.25 * g * full).sum() + (0.75 * g * without_a).sum() + (-0.75 * g * without_v).sum()
    want = _grads(model, surrogate)
    for (name, _), a, b in zip(model.named_parameters(), got, want, strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), name
    log = method.epoch_log()
    assert (log["agm_coef_audio"], log["agm_coef_visual"]) == (0.5, 2.0)


def test_without_gradients_through_the_zeroed_passes_only_the_fused_output_carries_them(monkeypatch):
    """BalanceBenchmark's variant (AGM_trainer.py: the zeroed passes under torch.no_grad): with k_a != k_v the
    gradient is (k_a + k_v) / 2 times the plain one, where the authors' variant sends some through the passes."""
    model, batch = _model_and_batch()
    plain = _grads(model, F.cross_entropy(model(batch.inputs).logits, batch.labels))
    monkeypatch.setattr(agm_module, "agm_coefficients", lambda *a, **k: {"audio": 0.5, "visual": 2.0})
    grads = {}
    for through in (False, True):
        method = AGM(method_spec("agm"), agm_params(zeroed_pass_gradients=through), unit_run(AV, n_classes=3))
        ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 1, 0, 1)
        out = method.on_features(model, model(batch.inputs), batch, ctx)
        grads[through] = _grads(model, F.cross_entropy(out.logits, batch.labels))
    for (name, _), a, b in zip(model.named_parameters(), grads[False], plain, strict=True):
        assert torch.allclose(a, 1.25 * b, atol=1e-5, rtol=1e-4), name
    assert any(not torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads[False], grads[True], strict=True))


def test_equal_coefficients_scale_every_gradient_and_outside_the_window_nothing(monkeypatch):
    method = AGM(method_spec("agm"), agm_params(), unit_run(AV, n_classes=3))
    model, batch = _model_and_batch()
    plain = _grads(model, F.cross_entropy(model(batch.inputs).logits, batch.labels))
    monkeypatch.setattr(agm_module, "agm_coefficients", lambda *a, **k: {"audio": 3.0, "visual": 3.0})
    for epoch, factor in ((2, 3.0), (4, 1.0)):  # inside the window, then after it (k = 1)
        ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), epoch, 0, 1)
        out = method.on_features(model, model(batch.inputs), batch, ctx)
        got = _grads(model, F.cross_entropy(out.logits, batch.labels))
        for (name, _), a, b in zip(model.named_parameters(), got, plain, strict=True):
            # the zeroed passes' gradients cancel: only the train-mode pass's, times k
            assert torch.allclose(a, factor * b, atol=1e-5, rtol=1e-4), (epoch, name)


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_the_clipping_rule_reads_each_heads_output_layer(fusion):
    model, _ = _model_and_batch(fusion)
    weights = head_output_weights(model.fusion)
    assert weights and all(w.dim() == 2 and w.shape[0] == 3 for w in weights)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    assert not clip_if_head_gradient_large(model, 1.0)  # every head entry within [-1, 1]: untouched
    assert all(torch.equal(p.grad, torch.full_like(p, 0.01)) for p in model.parameters())
    weights[0].grad[0, 0] = -1.5
    assert clip_if_head_gradient_large(model, 1.0)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
    assert total.item() == pytest.approx(1.0, rel=1e-4)
    for p in model.parameters():  # zero gradients: nothing to clip, no NaN
        p.grad = torch.zeros_like(p)
    assert not clip_if_head_gradient_large(model, 1.0)


def test_predict_gives_the_shapley_outputs_as_each_modalitys_logits():
    method = AGM(method_spec("agm"), agm_params(), unit_run(AV, n_classes=3))
    model, batch = _model_and_batch()
    model.eval()
    with torch.no_grad():
        out = method.predict(model, batch.inputs)
        assert torch.equal(out.logits, model(batch.inputs).logits)
        assert torch.allclose(out.unimodal["audio"] + out.unimodal["visual"], out.logits, atol=1e-5)
    assert unimodal_logits(model, out) is out.unimodal


@pytest.mark.parametrize("ends, epochs, expected", [(100, 100, 100), (100, 16, 16), (80, 30, 80), (20, 16, 3)])
def test_the_window_scales_with_the_protocol(ends, epochs, expected):
    params = agm_params(modulation_starts=0, modulation_ends=ends, reference_epochs=100 if epochs != 30 else 30)
    method = AGM(method_spec("agm"), params, unit_run(AV, epochs=epochs))
    assert method.ends == expected


@pytest.mark.slow
def test_a_short_run_on_tiny_avdigits_logs_the_coefficients(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "agm", "concat", epochs=2)
    result = train(config)
    rows = history(config)
    assert len(rows) == 2
    for row in rows:
        assert row["agm_coef_audio"] > 0 and row["agm_coef_visual"] > 0
        assert row["agm_coef_audio"] != 1.0 or row["agm_coef_visual"] != 1.0  # modulated from the first epoch
        assert 0.0 <= row["clipped_steps"] <= 1.0
        assert "val_acc_audio" in row and "val_acc_visual" in row  # from o_a and o_v
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0


def test_under_fp16_the_rule_reads_the_true_gradients_not_the_scaled_ones():
    method = AGM(method_spec("agm"), agm_params(), unit_run(AV, n_classes=3))
    model, batch = _model_and_batch()
    services = StepServices(torch.device("cpu"), "fp16")
    scale = services.scaler.get_scale()
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 0, 0, 1, services)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5 * scale)  # 0.5 once unscaled: within [-1, 1]
    method.after_backward(model, None, batch, ctx)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5 * scale)) for p in model.parameters())
    model.fusion.fc.weight.grad[0, 0] = 2.0 * scale  # 2 once unscaled: clipped to norm 1 once unscaled
    method.after_backward(model, None, batch, ctx)
    total = torch.sqrt(sum(p.grad.double().pow(2).sum() for p in model.parameters())) / scale
    assert total.item() == pytest.approx(1.0, rel=1e-4)
    assert method.epoch_log()["clipped_steps"] == 0.5
