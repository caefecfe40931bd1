"""MLA: the OWM projector and the test-time fusions by hand, the alternating step, the plan's refusals, a short run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cell_config
from test_contract import avdigits3  # noqa: F401 (a fixture: avdigits with a third modality)
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.config import ConfigError
from bml.methods import method_spec
from bml.methods.base import Batch, StepContext
from bml.methods.mla import MLA, entropy_fusion, fixed_fusion, owm_update, project
from bml.models.model import ModelSpec
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}
PARAMS = {"projection": "replace", "test_fusion": "fixed", "fixed_weight": 0.55}


def test_owm_update_by_hand():
    # P = I (2 x 2), r = mean of [[2, 0], [0, 0]] = (1, 0); batch 0 of 1: a = 0.1
    # k = P r^T = (1, 0)^T; r k = 1; P - k k^T / 1.1 = diag(1 - 1/1.1, 1) = diag(1/11, 1); / ||.||_F
    P = owm_update(torch.eye(2, dtype=torch.float64), torch.tensor([[2.0, 0.0], [0.0, 0.0]]), 0, 1)
    d = torch.tensor([1 / 11, 1.0], dtype=torch.float64)
    assert torch.allclose(P, torch.diag(d / d.norm()))
    # halfway through an epoch a = 0.1^1.5: the direction seen is removed more strongly the smaller a
    P_half = owm_update(torch.eye(2, dtype=torch.float64), torch.tensor([[1.0, 0.0]]), 1, 2)
    a = 0.1**1.5
    d = torch.tensor([1 - 1 / (a + 1), 1.0], dtype=torch.float64)
    assert torch.allclose(P_half, torch.diag(d / d.norm()))


def test_owm_update_with_zero_features_only_normalises():
    P = owm_update(torch.eye(3, dtype=torch.float64), torch.zeros(4, 3), 0, 1)  # k = 0: nothing removed
    assert torch.allclose(P, torch.eye(3, dtype=torch.float64) / math.sqrt(3))


def test_the_three_projections():
    G = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    P = torch.tensor([[0.5, 0.0], [0.0, 0.0]])  # keeps half of the first input direction, drops the second
    assert torch.equal(project(G, P, "replace"), torch.tensor([[0.5, 0.0], [1.5, 0.0]]))
    assert torch.equal(project(G, P, "add"), torch.tensor([[1.5, 2.0], [4.5, 4.0]]))
    assert torch.equal(project(G, P, "none"), G)
    assert torch.equal(project(torch.zeros(2, 2), P, "replace"), torch.zeros(2, 2))  # a zero gradient stays zero


def test_fixed_fusion_weights_the_first_modality():
    a, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert torch.allclose(fixed_fusion({"audio": a, "visual": v}, 0.55), torch.tensor([[0.55, 0.45]]))


def test_entropy_fusion_per_sample():
    # sample 0: audio confident, visual uniform; sample 1: the reverse; a tie gives equal weights
    a = torch.tensor([[10.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    v = torch.tensor([[0.0, 0.0], [0.0, -10.0], [1.0, 0.0]])
    fused = entropy_fusion({"audio": a, "visual": v})

    def entropy(z):
        p = torch.softmax(z, 0)
        return -(p * p.log()).sum()

    for i in range(3):
        e_a, e_v = entropy(a[i]), entropy(v[i])
        m = max(e_a, e_v)
        w_a = torch.exp(m - e_a) / (torch.exp(m - e_a) + torch.exp(m - e_v))
        assert torch.allclose(fused[i], w_a * a[i] + (1 - w_a) * v[i], atol=1e-6)
    assert torch.allclose(fused[2], a[2])  # equal logits, equal entropy: the mean is either
    # the confident modality dominates: sample 0 is nearly audio's, sample 1 nearly visual's
    assert fused[0, 0] > 0.9 * a[0, 0] / 2 and fused[1, 1] < -0.5 * 10 / 2


def test_a_step_takes_one_optimizer_step_per_modality_and_projects_the_head():
    torch.manual_seed(0)
    method = MLA(method_spec("mla"), PARAMS, unit_run(AV, n_classes=3))
    model = method.build_model(ModelSpec("small_cnn", "mla", 3, AV))
    assert model.head.weight.shape == (3, 128)  # one head for both modalities
    inputs = {"audio": torch.randn(4, 1, 64, 50), "visual": torch.randn(4, 3, 3, 32, 32)}
    batch = Batch(inputs, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    opt.register_step_pre_hook(lambda o, *_: steps.append(model.head.weight.grad.clone()))
    # the expected head gradient of the second (visual) update: computed by hand on the same weights
    with torch.no_grad():
        f_v = model.encoders["visual"](inputs["visual"])
    values = method.training_step(StepContext(method.run, model, opt, 0, 0, 2), batch)
    assert set(values) == set(AV) and len(steps) == 2 and method.updates == 2
    # the first step of the run is not projected; the second is, with P updated from the visual features
    P = owm_update(torch.eye(128), f_v, 0, 2)
    assert torch.allclose(method.P, P, atol=1e-6)
    assert not torch.allclose(steps[1], steps[0])
    log = method.epoch_log()
    assert log["proj_ratio_audio"] == 1.0 and 0.0 < log["proj_ratio_visual"] < 1.0


def test_the_plan_refuses_fixed_fusion_on_three_modalities_and_accumulation(packed_avdigits, tmp_path):
    with pytest.raises(ConfigError, match="train.accumulate"):
        cell_config(packed_avdigits, tmp_path, "mla", "mla", sets=("train.accumulate=2",))
    with pytest.raises(ConfigError, match="works with fusion \\['mla'\\]"):
        cell_config(packed_avdigits, tmp_path, "mla", "concat")
    with pytest.raises(ConfigError, match="projection"):
        cell_config(packed_avdigits, tmp_path, "mla", "mla", sets=("method.projection=both",))


def test_a_short_run_on_tiny_avdigits(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "mla", "mla", epochs=2, sets=("method.test_fusion=entropy",))
    assert config["run"]["fusion"] == "mla" and "/mla/" in config["paths"]["run_dir"] + "/"
    result = train(config)
    for row in history(config):
        assert {"loss_audio", "loss_visual", "proj_ratio_audio", "proj_ratio_visual"} <= set(row)
        assert row["train_loss"] == pytest.approx(row["loss_audio"] + row["loss_visual"])
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
    assert "acc_audio" in result["test"]["last"]


@pytest.mark.slow
def test_three_modalities_refuse_fixed_weights_and_train_with_entropy_ones(avdigits3, tmp_path):  # noqa: F811
    data_root, params = avdigits3
    with pytest.raises(ConfigError, match=r"key 'test_fusion': 'fixed' has weights for two modalities.*'entropy'"):
        cell_config(data_root, tmp_path, "mla", "mla", params_dir=params, dataset="avdigits3")
    assert not (tmp_path / "avdigits3").exists()  # nothing was started
    sets = ("method.test_fusion=entropy",)
    config = cell_config(data_root, tmp_path, "mla", "mla", epochs=1, sets=sets, params_dir=params, dataset="avdigits3")
    best = train(config)["test"]["best"]
    (row,) = history(config)
    assert {"loss_audio", "loss_visual", "loss_visual2", "proj_ratio_visual2"} <= set(row)
    assert all(math.isfinite(v) for v in best.values())


def test_the_published_tables_find_mla_and_greedy_runs_under_their_own_heads():
    from bml.table_rows import fusion_of

    # BalanceBenchmark's table is "fusion concat"; bml's MLA and Greedy runs carry their heads' names
    assert fusion_of("mla", "concat") == "mla" and fusion_of("greedy", "concat") == "mmtm"
    assert fusion_of("ogm", "concat") == "concat" and fusion_of("audio_only", "concat") == "none"
    assert fusion_of("pmr", "concat") == "concat"  # a published row bml does not run
