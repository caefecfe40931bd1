"""OGM and OGM-GE: the coefficients by hand, what the modulation touches, and a short real run."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import QUIET, tiny_config

from bml.methods.base import StepState
from bml.methods.ogm import OGM, OGMGE, modulation_coefficients
from bml.models.fusion import ModelConfig, build_model
from bml.train import train

LABELS = torch.tensor([0, 0])
AUDIO_AHEAD = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])  # p(y) = 3/4 each: s_a = 1.5
UNSURE = torch.zeros(2, 2)  # p(y) = 1/2 each: s = 1.0


def test_equal_scores_modulate_nothing():
    assert modulation_coefficients(UNSURE, UNSURE, LABELS, alpha=0.8) == (1.0, 1.0)
    assert modulation_coefficients(AUDIO_AHEAD, AUDIO_AHEAD, LABELS, alpha=0.8, form="paper") == (1.0, 1.0)


def test_the_dominant_modality_is_slowed_code_and_paper_forms():
    # rho_a = 1.5 / 1.0: code form 1 - tanh(0.8 * 1.5); paper form 1 - tanh(0.8 * 0.5)
    k_a, k_v = modulation_coefficients(AUDIO_AHEAD, UNSURE, LABELS, alpha=0.8)
    assert k_a == pytest.approx(1 - math.tanh(1.2)) and k_v == 1.0
    k_a, k_v = modulation_coefficients(AUDIO_AHEAD, UNSURE, LABELS, alpha=0.8, form="paper")
    assert k_a == pytest.approx(1 - math.tanh(0.4)) and k_v == 1.0
    k_a, k_v = modulation_coefficients(UNSURE, AUDIO_AHEAD, LABELS, alpha=0.8)  # visual ahead
    assert k_a == 1.0 and k_v == pytest.approx(1 - math.tanh(1.2))


def test_one_modality_far_ahead_drives_its_coefficient_to_zero():
    far = torch.tensor([[20.0, 0.0], [20.0, 0.0]])
    hopeless = torch.tensor([[0.0, 20.0], [0.0, 20.0]])
    k_a, k_v = modulation_coefficients(far, hopeless, LABELS, alpha=0.8)
    assert k_a == pytest.approx(0.0, abs=1e-9) and k_v == 1.0
    with pytest.raises(ValueError, match="form must be"):
        modulation_coefficients(far, hopeless, LABELS, alpha=0.8, form="other")


def _model_with_unit_grads():
    torch.manual_seed(0)
    model = build_model(ModelConfig("small_cnn", "concat", 2))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    return model


@pytest.mark.parametrize("cls", [OGM, OGMGE])
def test_only_4d_encoder_gradients_change_and_only_inside_the_window(cls):
    params = {"alpha": 0.8, "form": "code", "modulation_starts": 2, "modulation_ends": 3, "warmup_epochs": 0}
    method = cls(params)
    f_a, f_v = torch.zeros(2, 128), torch.zeros(2, 128)
    model = _model_with_unit_grads()
    with torch.no_grad():  # make audio dominant through the head: z_a favours class 0, z_v is flat
        model.fusion.fc.weight.zero_()
        model.fusion.fc.bias.copy_(torch.tensor([1.0, -1.0]))
        f_a[:, 0] = 5.0
        model.fusion.fc.weight[0, 0] = 1.0
    out = {"f_a": f_a, "f_v": f_v}
    batch = {"label": LABELS}
    for epoch, inside in [(1, False), (2, True), (4, False)]:
        before = {}
        for name, p in model.named_parameters():
            p.grad = torch.randn_like(p)  # a spread-out gradient, so that OGM-GE's noise is visible
            before[name] = p.grad.clone()
        method.after_backward(model, out, batch, StepState(epoch, 0, 1, {}))
        for name, p in model.named_parameters():
            changed = not torch.equal(p.grad, before[name])
            conv = p.dim() == 4 and not name.startswith("fusion")
            # OGM scales the dominant (audio) encoder only; OGM-GE also adds noise to the visual one (k = 1)
            touched = name.startswith("audio_encoder") or cls is OGMGE
            assert changed == (inside and conv and touched), (epoch, name)
        if inside:
            conv_a = next(p for p in model.audio_encoder.parameters() if p.dim() == 4)
            if cls is OGM:  # audio is dominant: scaled by k_a < 1; visual keeps k_v = 1 (unchanged)
                name_a = next(n for n, p in model.named_parameters() if p is conv_a)
                # z_a = (5.5, -0.5), z_v = (0.5, -0.5) for both samples: rho_a = s_a / s_v
                p_a = math.exp(5.5) / (math.exp(5.5) + math.exp(-0.5))
                p_v = math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5))
                rho_a = p_a / p_v
                assert torch.allclose(conv_a.grad, before[name_a] * (1 - math.tanh(0.8 * rho_a)))
    log = method.epoch_log()
    assert log["coef_audio"] < 1.0 and log["coef_visual"] == 1.0


def test_ogm_ge_noise_has_the_unmodulated_gradient_std():
    torch.manual_seed(1)
    from bml.methods.ogm import modulate_conv_gradients

    conv = torch.nn.Conv2d(4, 64, 3)
    conv.weight.grad = torch.randn_like(conv.weight) * 3.0  # std 3
    modulate_conv_gradients(conv, k=0.0, gaussian_noise=True)  # k = 0 leaves only the noise
    assert conv.weight.grad.std().item() == pytest.approx(3.0, rel=0.05)


@pytest.mark.parametrize("method", ["ogm", "ogm_ge"])
def test_a_short_run_on_tiny_avdigits_logs_the_coefficients(packed_avdigits, tmp_path, method):
    result = train(tiny_config(packed_avdigits, tmp_path, method, "concat", epochs=2), log=QUIET)
    history = (tmp_path / "avdigits" / "embedded" / "concat" / method / "seed0" / "history.csv").read_text()
    assert "coef_audio" in history and "coef_visual" in history
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0


def test_ogm_refuses_a_head_without_unimodal_logits():
    from bml.config import ConfigError
    from bml.train import resolve_config

    with pytest.raises(ConfigError, match=r"method 'ogm_ge' works with fusion \['concat', 'sum'\]"):
        resolve_config("avdigits", "embedded", "ogm_ge", "film", 0)
