"""OGM, OGM-GE and the noise-free ablation: the coefficients by hand, what the modulation touches, the scaled
schedule, and short real runs."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.config import ConfigError
from bml.methods import method_spec
from bml.methods.base import Batch, StepContext
from bml.methods.ogm import OGM, modulate_conv_gradients, modulation_coefficients
from bml.models.model import ModelSpec, Output, build_model
from bml.train import train

LABELS = torch.tensor([0, 0])
AUDIO_AHEAD = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])  # p(y) = 3/4 each: s_a = 1.5
UNSURE = torch.zeros(2, 2)  # p(y) = 1/2 each: s = 1.0
AV = {"audio": "audio", "visual": "frames"}


def test_equal_scores_modulate_nothing():
    assert modulation_coefficients(UNSURE, UNSURE, LABELS, alpha=0.8) == (1.0, 1.0)
    assert modulation_coefficients(AUDIO_AHEAD, AUDIO_AHEAD, LABELS, alpha=0.8, form="shifted") == (1.0, 1.0)


def test_the_dominant_modality_is_slowed_standard_and_shifted_forms():
    # rho_a = 1.5 / 1.0: the codes' form 1 - tanh(0.8 * 1.5); the shifted ablation 1 - tanh(0.8 * 0.5)
    k_a, k_v = modulation_coefficients(AUDIO_AHEAD, UNSURE, LABELS, alpha=0.8)
    assert k_a == pytest.approx(1 - math.tanh(1.2)) and k_v == 1.0
    k_a, k_v = modulation_coefficients(AUDIO_AHEAD, UNSURE, LABELS, alpha=0.8, form="shifted")
    assert k_a == pytest.approx(1 - math.tanh(0.4)) and k_v == 1.0
    k_a, k_v = modulation_coefficients(UNSURE, AUDIO_AHEAD, LABELS, alpha=0.8)  # visual ahead
    assert k_a == 1.0 and k_v == pytest.approx(1 - math.tanh(1.2))


def test_one_modality_far_ahead_drives_its_coefficient_to_zero():
    far = torch.tensor([[20.0, 0.0], [20.0, 0.0]])
    hopeless = torch.tensor([[0.0, 20.0], [0.0, 20.0]])
    k_a, k_v = modulation_coefficients(far, hopeless, LABELS, alpha=0.8)
    assert k_a == pytest.approx(0.0, abs=1e-9) and k_v == 1.0
    for form in ("other", "paper", "code"):  # the old names are refused: neither was what it said
        with pytest.raises(ValueError, match="form must be one of"):
            modulation_coefficients(far, hopeless, LABELS, alpha=0.8, form=form)


def _audio_dominant_model() -> tuple[torch.nn.Module, Output]:
    """A concat model whose head makes audio dominant: z_a = (5.5, -0.5), z_v = (0.5, -0.5) for both samples."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", "concat", 2, AV))
    f_a, f_v = torch.zeros(2, 128), torch.zeros(2, 128)
    with torch.no_grad():
        model.fusion.fc.weight.zero_()
        model.fusion.fc.bias.copy_(torch.tensor([1.0, -1.0]))  # b / 2 = (0.5, -0.5) in each modality's logits
        f_a[:, 0] = 5.0
        model.fusion.fc.weight[0, 0] = 1.0
    features = {"audio": f_a, "visual": f_v}
    return model, Output(model.fusion(features), features)


def ogm_params(**changes) -> dict:
    """OGM's parameters on a 5-epoch schedule that is its own reference (no scaling), window 2-3."""
    params = {
        "alpha": 0.8,
        "noise": True,
        "form": "standard",
        "modulation_starts": 2,
        "modulation_ends": 3,
        "warmup_epochs": 0,
        "reference_epochs": 5,
    }
    return params | changes


@pytest.mark.parametrize("noise", [False, True])
def test_only_4d_encoder_gradients_change_and_only_inside_the_window(noise):
    run = unit_run(AV, n_classes=2, epochs=5)
    method = OGM(method_spec("ogm" if noise else "ogm_noise_free"), ogm_params(noise=noise), run)
    model, out = _audio_dominant_model()
    batch = Batch({}, LABELS, torch.arange(2))
    # rho_a = s_a / s_v with p(y) = softmax(z)[0], the same for both samples
    p_a = math.exp(5.5) / (math.exp(5.5) + math.exp(-0.5))
    p_v = math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5))
    k_a = 1 - math.tanh(0.8 * p_a / p_v)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch, inside in [(1, False), (2, True), (3, True), (4, False)]:
        before = {}
        for name, p in model.named_parameters():
            p.grad = torch.randn_like(p)  # a spread-out gradient, so that OGM-GE's noise is visible
            before[name] = p.grad.clone()
        method.after_backward(model, out, batch, StepContext(run, model, optimizer, epoch, 0, 1))
        for name, p in model.named_parameters():
            changed = not torch.equal(p.grad, before[name])
            conv = p.dim() == 4 and name.startswith("encoders.")
            # without noise only the dominant (audio) encoder is scaled; the noise reaches the visual one (k = 1)
            touched = name.startswith("encoders.audio.") or noise
            assert changed == (inside and conv and touched), (epoch, name)
        if inside and not noise:  # the noise hides the scale; without it the scale is exact
            for name, p in model.encoders["audio"].named_parameters():
                if p.dim() == 4:
                    assert torch.allclose(p.grad, before[f"encoders.audio.{name}"] * k_a), name
    log = method.epoch_log()
    # 4 steps, 2 inside the window with k_a < 1: the history's mean coefficient says so
    assert log["coef_audio"] == pytest.approx((1.0 + 2 * k_a + 1.0) / 4)
    assert log["coef_visual"] == 1.0 and log["modulated_steps"] == 0.5


def test_ogm_ge_noise_has_the_unmodulated_gradient_std():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(4, 64, 3)
    conv.weight.grad = torch.randn_like(conv.weight) * 3.0  # std 3
    conv.bias.grad = torch.ones_like(conv.bias)
    assert modulate_conv_gradients(conv, k=0.0, gaussian_noise=True) == 1  # the 4-D weight only
    assert conv.weight.grad.std().item() == pytest.approx(3.0, rel=0.05)  # k = 0 leaves only the noise
    assert torch.equal(conv.bias.grad, torch.ones_like(conv.bias))


def test_ogm_refuses_a_dataset_with_other_than_two_modalities():
    three = {"audio": "audio", "visual": "frames", "flow": "flow"}
    method = OGM(method_spec("ogm"), ogm_params(), unit_run(three, n_classes=2))
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", "concat", 2, three))
    features = {m: torch.zeros(2, 128) for m in three}
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 0, 0, 1)
    with pytest.raises(ValueError, match=r"OGM is defined for two modalities.*'flow'"):
        method.after_backward(model, Output(model.fusion(features), features), Batch({}, LABELS, LABELS), ctx)


@pytest.mark.parametrize(
    "warmup, ends, epochs, active",
    [
        (6, 60, 20, [False] + [True] * 12 + [False] * 7),  # ogm.yaml on embedded: warm-up 1, window 0-12
        (0, 50, 20, [True] * 11 + [False] * 9),  # ogm_ge.yaml on embedded: window 0-10
        (6, 60, 100, [False] * 6 + [True] * 55 + [False] * 39),  # the TPAMI script as written: epochs 6-60
        (6, 80, 30, [False] * 2 + [True] * 23 + [False] * 5),  # 0.3 x: warm-up 1.8 -> 2, end 24
    ],
)
def test_the_schedule_scales_with_the_protocol_length(warmup, ends, epochs, active):
    params = ogm_params(warmup_epochs=warmup, modulation_starts=0, modulation_ends=ends, reference_epochs=100)
    method = OGM(method_spec("ogm"), params, unit_run(AV, n_classes=2, epochs=epochs))
    assert [method.active(e) for e in range(epochs)] == active


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ogm", "ogm_ge", "ogm_noise_free"])
def test_a_short_run_on_tiny_avdigits_logs_the_coefficients(packed_avdigits, tmp_path, method):
    # 2 epochs: every method's windows shrink by 2/100, so ogm's 6-epoch warm-up is gone (0.12 -> 0)
    config = cell_config(packed_avdigits, tmp_path, method, "concat", epochs=2)
    assert config["method"]["noise"] is (method != "ogm_noise_free")
    result = train(config)
    rows = history(config)
    assert len(rows) == 2
    for row in rows:
        assert 0.0 <= row["coef_audio"] <= 1.0 and 0.0 <= row["coef_visual"] <= 1.0
        assert min(row["coef_audio"], row["coef_visual"]) < 1.0  # some modality leads in every batch
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0


def test_a_scaled_warm_up_holds_the_first_epoch_back_in_a_real_run(packed_avdigits, tmp_path):
    # warm-up 50 of 100 epochs on a 2-epoch run: 1 epoch (0) unmodulated, then epoch 1 modulated
    config = cell_config(packed_avdigits, tmp_path, "ogm", "concat", epochs=2, sets=("method.warmup_epochs=50",))
    train(config)
    first, second = history(config)
    assert first["coef_audio"] == first["coef_visual"] == 1.0 and first["modulated_steps"] == 0.0
    assert min(second["coef_audio"], second["coef_visual"]) < 1.0 and second["modulated_steps"] > 0.0


def test_ogm_refuses_a_head_without_unimodal_logits(packed_avdigits, tmp_path):
    with pytest.raises(ConfigError, match=r"method 'ogm_ge' works with fusion \['concat', 'sum'\] on 2 modalities"):
        cell_config(packed_avdigits, tmp_path, "ogm_ge", "film")
