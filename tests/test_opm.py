"""OPM: drop probabilities by hand, the kept fraction over many draws, what the step does, and a short real run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.methods import method_spec
from bml.methods.base import Batch, StepContext
from bml.methods.opm import OPM, drop_features, drop_probabilities
from bml.models.model import ModelSpec, Output, build_model
from bml.train import train

LABELS = torch.tensor([0, 0])
AHEAD = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])  # p(y) = 3/4 each: s = 1.5
UNSURE = torch.zeros(2, 2)  # p(y) = 1/2 each: s = 1.0
AV = {"audio": "audio", "visual": "frames"}


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
    # the kept share is Bernoulli(1 - q): within 4 binomial standard deviations (0.0035 each at n = 20000)
    assert keep_a.float().mean().item() == pytest.approx(1 - q_a, abs=4 * math.sqrt(q_a * (1 - q_a) / n))
    assert bool(keep_v.all())
    theta = 6 * q_a / 8  # widths 6 and 2
    assert out_v[0, 0].item() == pytest.approx(1 / (1 - theta))
    assert torch.equal(out_a[~keep_a], torch.zeros_like(out_a[~keep_a]))
    assert torch.allclose(out_a[keep_a], torch.full_like(out_a[keep_a], 1 / (1 - theta)))
    # the rescaling keeps the expected fused input: E[sum of features] over the batch stays 8 per sample
    assert (out_a.sum() + out_v.sum()).item() / n == pytest.approx(8.0, rel=0.03)


def _method(params: dict) -> OPM:
    return OPM(method_spec("opm"), params, unit_run(AV, n_classes=2))


def _ctx(method: OPM, model: torch.nn.Module, epoch: int) -> StepContext:
    return StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), epoch, 0, 1)


def test_samples_that_lost_every_modality_leave_the_batch():
    torch.manual_seed(0)
    f_a, f_v = torch.ones(4, 128), torch.ones(4, 128)
    out_a, _, keep_a, keep_v = drop_features(f_a, f_v, 1.0, 1.0)
    assert not bool((keep_a | keep_v).any()) and torch.equal(out_a, f_a * 0)
    # through the method: audio dominant with q_a = 1, every sample keeps its visual feature
    model = build_model(ModelSpec("small_cnn", "concat", 2, AV))
    method = _method({"q_base": 1.0, "lam": 0.5, "p_exe": 1.0, "warmup_epochs": 0, "reference_epochs": 3})
    with torch.no_grad():
        model.fusion.fc.weight.zero_()
        model.fusion.fc.weight[0, 0] = 1.0
    f_a[:, 0] = 10.0
    features = {"audio": f_a, "visual": f_v}
    batch = Batch({}, torch.zeros(4, dtype=torch.long), torch.arange(4))
    out = method.on_features(model, Output(model.fusion(features), features), batch, _ctx(method, model, 0))
    assert out.keep.tolist() == [0, 1, 2, 3] and out.logits.shape == (4, 2)
    # the head saw the audio features zeroed: its logits are the visual ones alone (rescaled) plus the bias
    theta = 128 * 1.0 / 256
    expected = model.fusion({"audio": torch.zeros_like(f_a), "visual": f_v / (1 - theta)})
    assert torch.allclose(out.logits, expected)
    log = method.epoch_log()
    assert log["drop_prob_audio"] == 1.0 and log["kept_audio"] == 0.0 and log["kept_visual"] == 1.0
    assert log["dropped_steps"] == 1.0


def test_the_loss_reads_only_the_kept_samples():
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", "concat", 3, AV))
    method = _method({"q_base": 0.5, "lam": 0.5, "p_exe": 1.0, "warmup_epochs": 0, "reference_epochs": 3})
    labels = torch.tensor([0, 1, 2, 1])
    logits = torch.randn(2, 3)
    out = Output(logits, {}, keep=torch.tensor([1, 3]))
    losses = method.loss(model, out, Batch({}, labels, torch.arange(4)), _ctx(method, model, 0))
    assert losses["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels[[1, 3]]).item())
    empty = Output(torch.zeros(0, 3, requires_grad=True), {}, keep=torch.zeros(0, dtype=torch.long))
    assert method.loss(model, empty, Batch({}, labels, torch.arange(4)), _ctx(method, model, 0))["ce"].item() == 0.0


def test_no_drop_during_the_warm_up():
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", "concat", 2, AV))
    method = _method({"q_base": 1.0, "lam": 0.5, "p_exe": 1.0, "warmup_epochs": 2, "reference_epochs": 3})
    f = torch.randn(4, 128)
    features = {"audio": f, "visual": f}
    out = Output(model.fusion(features), features)
    batch = Batch({}, torch.zeros(4, dtype=torch.long), torch.arange(4))
    assert method.on_features(model, out, batch, _ctx(method, model, 1)) is out
    assert method.epoch_log()["dropped_steps"] == 0.0


@pytest.mark.parametrize("epochs, first_drop", [(100, 6), (20, 1), (30, 2), (5, 0)])
def test_the_warm_up_scales_with_the_protocol_length(epochs, first_drop):
    # opm.yaml: no drop while epoch <= 5 of 100 (warm-up 6), scaled by epochs / 100, rounded half up
    params = {"q_base": 0.5, "lam": 0.5, "p_exe": 0.7, "warmup_epochs": 6, "reference_epochs": 100}
    method = OPM(method_spec("opm"), params, unit_run(AV, n_classes=2, epochs=epochs))
    assert [method.active(e) for e in range(epochs)] == [e >= first_drop for e in range(epochs)]


def test_a_short_run_on_tiny_avdigits_logs_the_drop(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "opm", "concat", epochs=2, sets=("method.warmup_epochs=0",))
    result = train(config)
    rows = history(config)
    for row in rows:
        for column in ("drop_prob_audio", "drop_prob_visual", "dropped_steps", "kept_audio", "kept_visual"):
            assert 0.0 <= row[column] <= 1.0, column
        # each step, only the dominant modality gets a drop probability, q_base (1 + lam r) with r in (0, 1]:
        # so the two epoch means add up to a value in [q_base, q_base (1 + lam)] = [0.5, 0.75]
        assert 0.5 <= row["drop_prob_audio"] + row["drop_prob_visual"] <= 0.75
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
