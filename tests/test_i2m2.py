"""I2M2 (bml/methods/i2m2.py): the product of experts by hand, the runs it needs (plan, both engines, refusals),
the model's encoders each probed, and a short fine-tuning of runs trained first on tiny avdigits."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import PARAMS, cell_config, tiny_project
from test_methods_resume import (  # noqa: F401 (one_torch_thread: an autouse fixture)
    AV,
    history,
    one_torch_thread,
    run_folder,
    unit_run,
)
from test_workflow import snakemake

from bml.config import ConfigError
from bml.dvc_stages import dvc_yaml
from bml.evaluate import probes
from bml.methods import METHODS, method_spec, required_runs
from bml.methods.i2m2 import I2M2, I2M2Model, product_of_experts
from bml.models.model import ModelSpec, build_model
from bml.plan import load_plan
from bml.train import train

# ---- the product of experts, by hand ------------------------------------------------------------------------


def test_equal_experts_tie_and_a_uniform_expert_changes_nothing():
    uniform = torch.zeros(1, 2)
    assert torch.allclose(product_of_experts([uniform, uniform, uniform]), torch.log(torch.tensor([[0.5, 0.5]])))
    # a uniform expert is a factor constant over the classes: the product is the other experts' alone
    z = torch.tensor([[math.log(3.0), 0.0]])
    assert torch.allclose(product_of_experts([uniform, z, uniform]), torch.log(torch.tensor([[0.75, 0.25]])))


def test_the_product_multiplies_probabilities_and_one_far_ahead_expert_decides():
    # p_1 = (0.5, 0.5), p_2 = (0.75, 0.25), p_3 = (0.25, 0.75): product (0.09375, 0.09375), a tie again
    z = [torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, math.log(3.0)]])]
    assert torch.allclose(product_of_experts(z), torch.log(torch.tensor([[0.5, 0.5]])))
    # one expert sure of class 1 (logit gap 40) outweighs two mildly sure of class 0 (gap ln 3 each)
    far = [torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 40.0]])]
    out = product_of_experts(far)
    assert out.argmax(1).item() == 1 and out.exp().sum().item() == pytest.approx(1.0)
    assert out[0, 1].exp().item() == pytest.approx(1.0 / (1.0 + 9.0 * math.exp(-40.0)))


def test_the_product_is_the_softmax_of_the_summed_logits():
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(5, 4, generator=g) * 3 for _ in range(3)]
    assert torch.allclose(product_of_experts(z), torch.log_softmax(sum(z), dim=-1), atol=1e-6)


def test_each_part_gets_the_same_gradient_and_a_sure_right_product_gets_none():
    # z = (ln 3, 0) summed: p = (3/4, 1/4); label 0: loss -ln 3/4, d loss / d z_i = p - onehot = (-1/4, 1/4)
    z = [torch.zeros(1, 2, requires_grad=True) for _ in range(2)]
    z.append(torch.tensor([[math.log(3.0), 0.0]], requires_grad=True))
    loss = torch.nn.functional.nll_loss(product_of_experts(z), torch.tensor([0]))
    loss.backward()
    assert loss.item() == pytest.approx(-math.log(0.75))
    for part in z:
        assert torch.allclose(part.grad, torch.tensor([[-0.25, 0.25]]))
    # a product that is sure and right: no gradient left for any part (float32: exactly zero)
    sure = [torch.tensor([[60.0, 0.0]], requires_grad=True) for _ in range(3)]
    torch.nn.functional.nll_loss(product_of_experts(sure), torch.tensor([0])).backward()
    assert all(torch.equal(part.grad, torch.zeros(1, 2)) for part in sure)


# ---- the runs it needs --------------------------------------------------------------------------------------


def test_it_needs_each_uni_modal_run_and_the_joint_run_of_its_own_fusion():
    spec = method_spec("i2m2")
    assert required_runs(spec, ["audio", "visual"], "sum") == [
        ("audio_only", "none"),
        ("visual_only", "none"),
        ("joint", "sum"),
    ]
    assert required_runs(METHODS["ensemble"], ["audio", "visual", "flow"]) == [
        ("audio_only", "none"),
        ("visual_only", "none"),
        ("flow_only", "none"),
    ]
    with pytest.raises(ValueError, match="cell's own fusion"):
        required_runs(spec, ["audio", "visual"])


def test_the_plan_makes_them_workflow_edges_in_both_engines():
    plan = load_plan(PARAMS, {"matrix": "all"})
    cell = plan.find("avdigits", "embedded", "i2m2", "film", 0)
    assert cell.requires == (
        "avdigits-embedded-audio_only-none-s0",
        "avdigits-embedded-visual_only-none-s0",
        "avdigits-embedded-joint-film-s0",
    )
    assert cell.config["requires"]["joint"].endswith("embedded/film/joint/seed0")
    # DVC: the stage depends on each needed run's metrics.json (Snakemake's rule reads the same cell.requires)
    stage = yaml.safe_load(dvc_yaml(plan))["stages"]["train-avdigits-embedded-i2m2-film-s0"]
    for name in cell.requires:
        assert plan.cell(name).metrics in stage["deps"]


def test_a_block_without_the_joint_run_is_refused_naming_the_key_and_the_run(tmp_path):
    params = tmp_path / "params"
    shutil.copytree(PARAMS, params)
    path = params / "params.yaml"
    data = yaml.safe_load(path.read_text())
    runs = [{"method": m, "fusion": "none"} for m in ("audio_only", "visual_only")] + [
        {"method": "i2m2", "fusion": "sum"},
        {"method": "joint", "fusion": "concat"},
    ]
    data["matrices"][data["matrix"]] = [{"dataset": "avdigits", "protocol": "embedded", "seeds": [0], "runs": runs}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    needs = r"key 'matrix\[0\].runs'.*i2m2 needs.*\{'method': 'joint', 'fusion': 'sum'\}"
    with pytest.raises(ConfigError, match=needs):
        load_plan(params)


def test_a_declared_run_bml_cannot_make_is_refused_naming_the_declaration(monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(METHODS, "i2m2", replace(METHODS["i2m2"], requires=(("flow_only", "none"),)))
    with pytest.raises(ConfigError, match=r"'i2m2' needs runs bml cannot make.*flow_only with fusion none.*requires"):
        cell_config(PARAMS.parent / "data", PARAMS.parent / "results", "i2m2")


def test_a_bad_parameter_is_refused_before_any_job():
    with pytest.raises(ConfigError, match="grad_clip"):
        cell_config(PARAMS.parent / "data", PARAMS.parent / "results", "i2m2", sets=("method.grad_clip=-1",))


# ---- the model: each encoder probed --------------------------------------------------------------------------


def _fresh_model(fusion: str = "concat", n_classes: int = 3) -> I2M2Model:
    experts = {m: build_model(ModelSpec("small_cnn", "none", n_classes, {m: k})) for m, k in AV.items()}
    return I2M2Model(experts, build_model(ModelSpec("small_cnn", fusion, n_classes, dict(AV))))


def test_the_model_keys_the_experts_encoders_apart_and_the_probes_measure_each():
    torch.manual_seed(0)
    model = _fresh_model().eval()
    inputs = {"audio": torch.randn(4, 64, 50), "visual": torch.randn(4, 3, 3, 32, 32)}
    with torch.no_grad():
        out = model(inputs)
    assert list(out.features) == ["audio", "visual", "audio.unimodal", "visual.unimodal"]
    assert set(out.unimodal) == {"audio", "visual"} and out.logits.shape == (4, 3)
    assert torch.allclose(out.logits.exp().sum(1), torch.ones(4))
    rng = np.random.default_rng(0)
    found = {"features": {k: rng.normal(size=(30, 5)) for k in out.features}, "label": rng.integers(0, 3, 30)}
    keys = probes(found, found, found, (1.0,), 20, 3)
    assert list(keys) == ["probe_audio", "probe_visual", "probe_audio.unimodal", "probe_visual.unimodal"]


def test_its_own_lr_and_clip_and_a_missing_run_named(tmp_path):
    run = unit_run()
    method = I2M2(method_spec("i2m2"), {"lr": 0.01, "grad_clip": 8.0}, run)
    assert method.grad_clip(None) == 8.0 and method.grad_clip(1.0) == 8.0
    assert method.param_groups(_fresh_model())[0]["lr"] == 0.01
    run.required.update({"audio_only": tmp_path / "a", "visual_only": tmp_path / "v", "joint": tmp_path / "j"})
    with pytest.raises(FileNotFoundError, match="I2M2 needs the trained audio_only run of seed 0"):
        method.build_model(ModelSpec("small_cnn", "concat", 2, dict(AV)))


# ---- a short run ---------------------------------------------------------------------------------------------


def train_required(data_root, results, fusion: str = "concat", epochs: int = 1) -> None:
    """The runs an I2M2 cell of `fusion` needs, trained under `results`."""
    for method, head in required_runs(method_spec("i2m2"), list(AV), fusion):
        train(cell_config(data_root, results, method, head, epochs=epochs))


@pytest.mark.slow
def test_a_short_run_fine_tunes_the_trained_runs(packed_avdigits, tmp_path):
    train_required(packed_avdigits, tmp_path)
    config = cell_config(packed_avdigits, tmp_path, "i2m2", "concat", epochs=2)
    # the model starts from the runs' best checkpoints
    joint = torch.load(tmp_path / "avdigits/embedded/concat/joint/seed0/best.pt", weights_only=False)["model"]
    audio = torch.load(tmp_path / "avdigits/embedded/none/audio_only/seed0/best.pt", weights_only=False)["model"]
    method = I2M2(method_spec("i2m2"), config["method"], unit_run())
    method.run.required.update({k: run_folder({"paths": {"run_dir": v}}) for k, v in config["requires"].items()})
    model = method.build_model(ModelSpec("small_cnn", "concat", 10, dict(AV)))
    for k, v in joint.items():
        assert torch.equal(model.inter.state_dict()[k], v), k
    for k, v in audio.items():
        assert torch.equal(model.experts["audio"].state_dict()[k], v), k
    result = train(config)
    rows = history(config)
    assert len(rows) == 2 and rows[0]["lr"] == pytest.approx(0.01)
    assert all(r["expert_ce_audio"] > 0.0 and r["expert_ce_visual"] > 0.0 for r in rows)
    best = result["test"]["best"]
    for key in ("acc", "acc_audio", "acc_visual", "probe_audio", "probe_audio.unimodal", "probe_visual.unimodal"):
        assert 0.0 <= best[key] <= 100.0, key


def test_snakemake_schedules_the_needed_runs_first(project_copy):
    runs = [{"method": m, "fusion": f} for m, f in [("audio_only", "none"), ("visual_only", "none")]]
    runs += [{"method": "joint", "fusion": "sum"}, {"method": "i2m2", "fusion": "sum"}]
    tiny_project(project_copy, runs=runs)
    target = "results/avdigits/embedded/sum/i2m2/seed0/metrics.json"
    out = snakemake(project_copy, "-n", "--cores", "1", target).stdout
    # asked for the I2M2 run alone, Snakemake schedules the three it reads too: its inputs (the plan's edges)
    assert any(line.split() == ["train", "4"] for line in out.splitlines()), out[-1500:]
    for cell in ("none/audio_only", "none/visual_only", "sum/joint"):
        assert f"results/avdigits/embedded/{cell}/seed0/metrics.json" in out, cell
