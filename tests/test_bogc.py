"""BOGC-MML (bml's reading): moments, evidence and the Dempster weights by hand, the edge cases, the step,
the plan's refusal and a short real run."""

from __future__ import annotations

import pytest
import torch
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.config import ConfigError
from bml.methods import method_spec
from bml.methods.base import Batch, StepContext
from bml.methods.bogc import BOGC, calibrated, chunk_moments, dempster_weights, evidence_of
from bml.models.model import ModelSpec
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}
AVF = {"audio": "audio", "visual": "frames", "flow": "flow"}
PARAMS = {"chunks": 2, "evidence": "snr", "evidence_scale": 1.0, "prior_weight": 1.0}


def test_chunk_moments_by_hand():
    grads = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)  # two equal chunks
    mean, var = chunk_moments(grads, torch.tensor([2.0, 2.0]))
    # mean 2; var of the mean = 2 / 1 * (1/4 * 1 + 1/4 * 1) = 1 (sample variance 2, over S = 2)
    assert torch.equal(mean, torch.tensor([2.0, 0.0], dtype=torch.float64))
    assert torch.allclose(var, torch.tensor([1.0, 0.0], dtype=torch.float64))
    # unequal chunks: the batch mean is the size-weighted mean (3 samples at 1, 1 at 5: 2)
    mean, _ = chunk_moments(torch.tensor([[1.0], [5.0]], dtype=torch.float64), torch.tensor([3.0, 1.0]))
    assert mean.item() == pytest.approx(2.0)
    # one chunk: no spread, infinite variance, no evidence
    mean, var = chunk_moments(torch.tensor([[4.0]], dtype=torch.float64), torch.tensor([5.0]))
    assert mean.item() == 4.0 and torch.isinf(var).all()
    assert evidence_of(mean, var, "snr", 1.0).item() == 0.0


def test_evidence_snr_is_scale_free_and_precision_is_not():
    mean, var = torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    assert evidence_of(mean, var, "snr", 1.0).item() == pytest.approx(4.0)  # 2^2 / 1
    assert evidence_of(10 * mean, 100 * var, "snr", 1.0).item() == pytest.approx(4.0)
    assert evidence_of(mean, var, "precision", 3.0).item() == pytest.approx(3.0)  # 3 / 1
    assert evidence_of(10 * mean, 100 * var, "precision", 3.0).item() == pytest.approx(0.03)


def test_dempster_weights_match_the_explicit_combination():
    e = torch.tensor([[3.0], [1.0]], dtype=torch.float64)
    # b1 = 3/4, u1 = 1/4; b2 = 1/2, u2 = 1/2. m({1}) = b1 u2 = 3/8, m({2}) = b2 u1 = 1/8, m(frame) = u1 u2 = 1/8,
    # conflict b1 b2 = 3/8; normalised by 5/8: 3/5, 1/5, 1/5. Pignistic: 3/5 + 1/10 = 0.7, 1/5 + 1/10 = 0.3
    assert torch.allclose(dempster_weights(e, 1.0), torch.tensor([[0.7], [0.3]], dtype=torch.float64))
    # the closed form: (K e_k + W) / (K (W + sum e))
    assert dempster_weights(e, 2.0)[0].item() == pytest.approx((6 + 2) / (2 * (2 + 4)))


def test_ties_and_zero_evidence_give_the_plain_sum():
    tied = dempster_weights(torch.tensor([[5.0, 0.0], [5.0, 0.0]], dtype=torch.float64), 1.0)
    assert torch.allclose(tied, torch.full((2, 2), 0.5, dtype=torch.float64))
    means = torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=torch.float64)
    assert torch.allclose(calibrated(means, tied), means.sum(0))


def test_a_far_more_certain_source_takes_nearly_all_and_certainty_never_divides_zero_by_zero():
    w = dempster_weights(torch.tensor([[1e6], [0.0]], dtype=torch.float64), 1.0)
    assert w[0].item() == pytest.approx(1.0, abs=1e-6)
    means = torch.tensor([[1.0], [-4.0]], dtype=torch.float64)
    assert calibrated(means, w).item() == pytest.approx(2.0, abs=1e-4)  # K * w_1 * 1: twice the certain one
    # zero variance everywhere: huge but finite evidence, equal weights, no NaN
    zero = torch.zeros(2, 1, dtype=torch.float64)
    e = evidence_of(torch.ones(1, dtype=torch.float64), zero[0], "snr", 1.0)
    w = dempster_weights(torch.stack([e, e]), 1.0)
    assert torch.isfinite(w).all() and torch.allclose(w, torch.full((2, 1), 0.5, dtype=torch.float64))


def test_zero_gradients_stay_zero():
    grads = torch.zeros(3, 4, dtype=torch.float64)
    mean, var = chunk_moments(grads, torch.tensor([2.0, 2.0, 2.0]))
    for kind in ("snr", "precision"):
        e = evidence_of(mean, var, kind, 1.0)
        w = dempster_weights(torch.stack([e, e]), 1.0)
        assert torch.equal(calibrated(torch.stack([mean, mean]), w), torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("modalities", [AV, AVF], ids=["two", "three"])
def test_the_step_gives_encoders_the_calibrated_gradient_and_heads_their_own(modalities):
    torch.manual_seed(0)
    method = BOGC(method_spec("bogc"), PARAMS, unit_run(modalities, n_classes=3))
    model = method.build_model(ModelSpec("small_cnn", "concat", 3, modalities)).eval()  # no batch-norm coupling
    shapes = {"audio": (4, 1, 64, 100), "frames": (4, 3, 3, 32, 32), "flow": (4, 3, 2, 32, 32)}
    inputs = {m: torch.randn(shapes[kind]) for m, kind in modalities.items()}
    y = torch.tensor([0, 1, 2, 0])
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 0, 0, 1)
    ce = torch.nn.functional.cross_entropy
    out = model(inputs)

    def grad(loss, params):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)]).double()

    # the expected, per encoder: chunks {0, 1} and {2, 3}, sources L_mm and L_m, by the pure functions
    parts = (slice(0, 2), slice(2, 4))
    expected, plain = {}, {}
    for m in modalities:
        enc = list(model.encoders[m].parameters())
        means, evidence = [], []
        for logits in (out.logits, model.heads[m](out.features[m])):
            g = torch.stack([grad(ce(logits[s], y[s]), enc) for s in parts])
            mean, var = chunk_moments(g, torch.tensor([2.0, 2.0]))
            means.append(mean)
            evidence.append(evidence_of(mean, var, "snr", 1.0))
        expected[m] = calibrated(torch.stack(means), dempster_weights(torch.stack(evidence), 1.0))
        plain[m] = torch.stack(means).sum(0)
    heads = {m: grad(ce(model.heads[m](out.features[m]), y), list(model.heads[m].parameters())) for m in modalities}
    fusion = grad(ce(out.logits, y), list(model.fusion.parameters()))
    model.zero_grad()
    method.backward(model, method.loss(model, model(inputs), Batch(inputs, y, torch.arange(4)), ctx), ctx)
    for m in modalities:
        got = torch.cat([p.grad.flatten() for p in model.encoders[m].parameters()]).double()
        assert torch.allclose(got, expected[m], atol=1e-6), m
        assert not torch.allclose(got, plain[m], atol=1e-6), m  # the calibration changed something
        got_head = torch.cat([p.grad.flatten() for p in model.heads[m].parameters()]).double()
        assert torch.allclose(got_head, heads[m], atol=1e-7), m  # each head: its own loss only
    assert torch.allclose(torch.cat([p.grad.flatten() for p in model.fusion.parameters()]).double(), fusion, atol=1e-7)
    log = method.epoch_log()
    assert all(0.0 < log[f"fusion_weight_{m}"] < 1.0 for m in modalities)


def test_more_chunks_than_the_batch_is_refused_before_any_job(packed_avdigits, tmp_path):
    with pytest.raises(ConfigError, match="chunks.*batch_size"):
        cell_config(packed_avdigits, tmp_path, "bogc", "concat", epochs=2, sets=("method.chunks=100000",))
    with pytest.raises(ConfigError, match="evidence"):
        cell_config(packed_avdigits, tmp_path, "bogc", "concat", epochs=2, sets=("method.evidence=variance",))


def test_a_short_run_on_tiny_avdigits_logs_the_shares(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "bogc", "concat", epochs=2)
    result = train(config)
    for row in history(config):
        for column in ("loss_mm", "loss_audio", "loss_visual", "fusion_weight_audio", "fusion_weight_visual"):
            assert column in row, column
        assert 0.0 < row["fusion_weight_audio"] < 1.0
        assert row["train_loss"] == pytest.approx(row["loss_mm"] + row["loss_audio"] + row["loss_visual"])
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
