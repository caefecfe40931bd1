"""Greedy: the learning speeds and the re-balancing rule by hand, the MMTM model, the plan's refusals, a short run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.config import ConfigError
from bml.methods import method_spec
from bml.methods.base import Batch, StepContext
from bml.methods.greedy import (
    MMTM,
    Greedy,
    StagedEncoder,
    bdr_difference,
    decide,
    learning_speed,
    utilisation_rate,
)
from bml.models.encoders import build_encoder
from bml.models.model import ModelSpec
from bml.train import train

AV = {"audio": "audio", "visual": "frames"}
PARAMS = {"epsilon": 0.01, "window": 5, "warmup_epochs": 0, "ratio": 4, "blocks": 3, "utilisation": True}


def test_learning_speed_and_bdr_by_hand():
    assert learning_speed(2.0, 8.0) == 0.25
    assert learning_speed(0.0, 0.0) == 0.0  # an all-zero group (no gradient, no weight): no speed, no NaN
    # BDR_0 = log10(10 / 1) = 1, BDR_1 = log10(1 / 1) = 0: d = 1
    assert bdr_difference((10.0, 1.0), (1.0, 1.0)) == pytest.approx((1.0, 0.0, 1.0))
    # a tie: d = 0
    assert bdr_difference((3.0, 3.0), (2.0, 2.0))[2] == 0.0
    # zero gradients so far: undefined, NaN (never re-balances on it)
    assert math.isnan(bdr_difference((0.0, 1.0), (1.0, 1.0))[2])


def test_the_rebalancing_rule():
    eps, window = 0.01, 5
    assert decide(False, 0, 0.005, eps, window) == (False, None, 0)  # |d| within epsilon: a regular step
    assert decide(False, 0, 0.02, eps, window) == (True, 0, 0)  # modality 0's bypass learns faster: care for 0
    assert decide(False, 0, -2.0, eps, window) == (True, 1, 0)  # one modality far ahead the other way
    assert decide(False, 0, float("nan"), eps, window) == (False, None, 0)
    # inside the window: exactly `window` re-balancing steps, then back to regular ones
    on, step, steps = True, 0, 0
    while on:
        on, _, step = decide(True, step, 0.0, eps, window)
        steps += 1
    assert steps == window


def test_utilisation_rate():
    assert utilisation_rate(0.8, 0.6) == pytest.approx(0.25)
    assert utilisation_rate(0.5, 0.5) == 0.0
    assert utilisation_rate(0.0, 0.0) == 0.0


def test_mmtm_rebalancing_replaces_the_cared_scale_by_its_running_mean():
    torch.manual_seed(0)
    block = MMTM((4, 6), ratio=4).train()
    assert block.squeeze.out_features == 5  # int(2 * 10 / 4)
    s = [torch.randn(3, 4), torch.randn(3, 6)]
    first = block(s)
    assert torch.allclose(block.scale_mean_0, first[0].mean(0)) and torch.allclose(block.scale_mean_1, first[1].mean(0))
    s2 = [torch.randn(3, 4), torch.randn(3, 6)]
    scales = block(s2, cared=1)
    h = torch.relu(block.squeeze(torch.cat(s2, 1)))
    assert torch.allclose(scales[0], torch.sigmoid(block.excite[0](h)))  # the other modality keeps its own
    assert torch.allclose(scales[1], block.scale_mean_1.expand(3, 6))  # no information from modality 0
    assert int(block.seen) == 2
    # evaluation does not move the running means
    block.eval()
    before = block.scale_mean_0.clone()
    block(s2)
    assert torch.equal(block.scale_mean_0, before)


def test_flow_off_cuts_the_other_modality():
    torch.manual_seed(0)
    block = MMTM((4, 4), ratio=4).train()
    block([torch.randn(8, 4), torch.randn(8, 4)])
    block.eval()
    a = torch.randn(2, 4)
    one = block([a, torch.randn(2, 4)], flow_off=True)[0]
    two = block([a, torch.randn(2, 4)], flow_off=True)[0]
    assert torch.equal(one, two)  # audio's scale no longer depends on the visual input


@pytest.mark.parametrize("family", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("kind, shape", [("audio", (2, 1, 64, 50)), ("frames", (2, 2, 3, 64, 64))])
def test_the_stages_compose_to_the_encoder_itself(family, kind, shape):
    """Without MMTM blocks the staged view is bml's encoder, stage by stage (so the blocks sit between its stages)."""
    torch.manual_seed(0)
    encoder = build_encoder(family, kind).eval()
    staged = StagedEncoder(encoder)
    assert len(staged.stages) == {"small_cnn": 5, "resnet18": 4}[family]
    x = torch.randn(shape)
    with torch.no_grad():
        h, T = staged.begin(x)
        for stage in staged.stages:
            h = stage(h)
        assert torch.allclose(StagedEncoder.pool(h, T), encoder(x), atol=1e-5)
    assert staged.channels[-1] == encoder.out_dim


def test_resnet18_branches_get_blocks_after_layer2_3_4():
    method = Greedy(method_spec("greedy"), PARAMS, unit_run(AV, n_classes=3))
    model = method.build_model(ModelSpec("resnet18", "mmtm", 3, AV))
    assert [b.squeeze.in_features for b in model.mmtm] == [256, 512, 1024]  # (128 + 128), (256 + 256), (512 + 512)
    assert [b.squeeze.out_features for b in model.mmtm] == [128, 256, 512]  # model.py: MMTM(c, c, 4)


def test_model_and_step_record_speeds():
    torch.manual_seed(0)
    method = Greedy(method_spec("greedy"), PARAMS, unit_run(AV, n_classes=3))
    model = method.build_model(ModelSpec("small_cnn", "mmtm", 3, AV))
    assert len(model.mmtm) == 3 and set(model.heads) == set(AV)
    inputs = {"audio": torch.randn(4, 1, 64, 50), "visual": torch.randn(4, 3, 3, 32, 32)}
    out = model(inputs)
    assert out.logits.shape == (4, 3) and out.features["visual"].shape == (4, 128)
    assert torch.allclose(out.logits, (out.unimodal["audio"] + out.unimodal["visual"]) / 2)
    batch = Batch(inputs, torch.tensor([0, 1, 2, 0]), torch.arange(4))
    ctx = StepContext(method.run, model, torch.optim.SGD(model.parameters(), lr=0.1), 0, 0, 1)
    values = method.training_step(ctx, batch)
    assert set(values) == set(AV)
    log = method.epoch_log()
    assert {"bdr_audio", "bdr_visual", "d_bdr", "rebalance_audio"} <= set(log)
    assert log["d_bdr"] == pytest.approx(log["bdr_audio"] - log["bdr_visual"])


def test_the_plan_refuses_a_warmup_as_long_as_the_run_and_other_fusions(packed_avdigits, tmp_path):
    with pytest.raises(ConfigError, match="warmup_epochs"):
        cell_config(packed_avdigits, tmp_path, "greedy", "mmtm", epochs=2, sets=("method.warmup_epochs=2",))
    with pytest.raises(ConfigError, match="blocks"):
        cell_config(packed_avdigits, tmp_path, "greedy", "mmtm", sets=("method.blocks=6",))
    with pytest.raises(ConfigError, match="works with fusion \\['mmtm'\\]"):
        cell_config(packed_avdigits, tmp_path, "greedy", "concat")


@pytest.mark.slow
def test_a_short_run_on_tiny_avdigits(packed_avdigits, tmp_path):
    config = cell_config(packed_avdigits, tmp_path, "greedy", "mmtm", epochs=2)
    result = train(config)
    rows = history(config)
    for row in rows:
        assert {"loss_audio", "loss_visual", "d_bdr", "util_audio", "util_visual"} <= set(row)
        assert 0.0 <= row["rebalance_audio"] + row["rebalance_visual"] <= 1.0
    assert rows[0]["rebalance_audio"] + rows[0]["rebalance_visual"] == 0.0  # the warm-up epoch
    assert rows[1]["rebalance_audio"] + rows[1]["rebalance_visual"] > 0.0
    assert 0.0 <= result["test"]["best"]["acc"] <= 100.0
