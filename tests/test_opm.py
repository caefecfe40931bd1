"""OPM: drop probabilities by hand, the kept fraction over many draws, and a short real run."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import QUIET, tiny_config

from bml.methods.base import StepState
from bml.methods.opm import OPM, drop_features, drop_probabilities
from bml.models.fusion import ModelConfig, build_model
from bml.train import train

LABELS = torch.tensor([0, 0])
AHEAD = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])  # p(y) = 3/4 each: s = 1.5
UNSURE = torch.zeros(2, 2)  # p(y) = 1/2 each: s = 1.0


def test_equal_scores_drop_nothing():
    assert drop_probabilities(UNSURE, UNSURE, LABELS, q_base=0.5, lam=0.5) == (0.0, 0.0)


def test_only_the_dominant_modality_gets_a_drop_probability():
    r = math.tanh(1.5 / 1.0 - 1.0)  # s_a / s_v - 1 = 0.5
    q_a, q_v = drop_probabilities(AHEAD, UNSURE, LABELS, q_base=0.5, lam=0.5)
    assert q_a == pytest.approx(0.5 * (1 + 0.5 * r)) and q_v == 0.0
    q_a, q_v = drop_probabilities(UNSURE, AHEAD, LABELS, q_base=0.5, lam=0.5)
    assert q_a == 0.0 and q_v == pytest.approx(0.5 * (1 + 0.5 * r))


def test_one_modality_far_ahead_is_clipped_to_one():
    far, hopeless = torch.tensor([[20.0, 0.0]] * 2), torch.tensor([[0.0, 20.0]] * 2)
    q_a, q_v = drop_probabilities(far, hopeless, LABELS, q_base=0.5, lam=0.5)
    assert q_a == pytest.approx(0.5 * (1 + 0.5 * 1.0)) and q_v == 0.0  # tanh saturates at 1: q = 0.75
    q_a, _ = drop_probabilities(far, hopeless, LABELS, q_base=0.9, lam=0.5)
    assert q_a == 1.0  # 0.9 * 1.5 clipped


def test_kept_fraction_and_rescaling_over_many_draws():
    gen = torch.Generator().manual_seed(0)
    n, q_a = 20000, 0.6
    f_a, f_v = torch.ones(n, 6), torch.ones(n, 2)
    out_a, out_v, keep_a, keep_v = drop_features(f_a, f_v, q_a, 0.0, generator=gen)
    assert keep_a.float().mean().item() == pytest.approx(1 - q_a, abs=0.01)
    assert bool(keep_v.all())
    theta = 6 * q_a / 8  # widths 6 and 2
    assert out_v[0, 0].item() == pytest.approx(1 / (1 - theta))
    assert torch.equal(out_a[~keep_a], torch.zeros_like(out_a[~keep_a]))
    # the rescaling keeps the expected fused input: E[sum of features] over the batch stays 8 per sample
    assert (out_a.sum() + out_v.sum()).item() / n == pytest.approx(8.0, rel=0.03)


def test_samples_that_lost_every_modality_leave_the_batch():
    torch.manual_seed(0)
    model = build_model(ModelConfig("small_cnn", "concat", 2))
    method = OPM({"q_base": 1.0, "lam": 0.5, "p_exe": 1.0, "warmup_epochs": 0})
    # make both q = 1 impossible through scores (only the dominant modality drops), so drive it directly
    f_a, f_v = torch.ones(4, 128), torch.ones(4, 128)
    out_a, out_v, keep_a, keep_v = drop_features(f_a, f_v, 1.0, 1.0)
    assert not bool((keep_a | keep_v).any()) and torch.equal(out_a, f_a * 0)
    # through the method: audio dominant with q_a = 1, every sample keeps its visual feature
    with torch.no_grad():
        model.fusion.fc.weight.zero_()
        model.fusion.fc.weight[0, 0] = 1.0
    f_a[:, 0] = 10.0
    out = method.on_features(model, {"logits": None, "f_a": f_a, "f_v": f_v}, {"label": torch.zeros(4).long()},
                             StepState(0, 0, 1, {}))
    assert out["kept"].tolist() == [0, 1, 2, 3] and out["logits"].shape == (4, 2)
    log = method.epoch_log()
    assert log["drop_prob_audio"] == 1.0 and log["kept_audio"] == 0.0 and log["kept_visual"] == 1.0


def test_no_drop_during_the_warm_up():
    torch.manual_seed(0)
    model = build_model(ModelConfig("small_cnn", "concat", 2))
    method = OPM({"q_base": 1.0, "lam": 0.5, "p_exe": 1.0, "warmup_epochs": 2})
    f = torch.randn(4, 128)
    out = {"logits": torch.zeros(4, 2), "f_a": f, "f_v": f}
    assert method.on_features(model, out, {"label": torch.zeros(4).long()}, StepState(1, 0, 1, {})) is out
    assert method.epoch_log()["dropped_steps"] == 0.0


def test_a_short_run_on_tiny_avdigits_logs_the_drop(packed_avdigits, tmp_path):
    result = train(tiny_config(packed_avdigits, tmp_path, "opm", "concat", epochs=2,
                               sets=["method.warmup_epochs=0"]), log=QUIET)
    history = (tmp_path / "avdigits" / "embedded" / "concat" / "opm" / "seed0" / "history.csv").read_text()
    for column in ("drop_prob_audio", "drop_prob_visual", "dropped_steps", "kept_audio"):
        assert column in history
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
