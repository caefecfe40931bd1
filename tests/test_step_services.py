"""The step's services behind StepContext (bml/methods/base.py): clipping and accumulation on hand examples, the
fp16 scaler, and mixed precision in a real run that resumes bit-identical and stays finite."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import cell_config
from test_methods_resume import assert_same_run, interrupted_and_resumed, one_torch_thread, unit_run  # noqa: F401

from bml.methods.base import StepContext, StepServices
from bml.settings import TrainSettings
from bml.train import train

CPU = torch.device("cpu")


def linear_zero(n: int) -> torch.nn.Linear:
    model = torch.nn.Linear(n, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    return model


def one_step(model, optimizer, services, x, step=0, steps=1, factor=1.0):
    """A method's step through the context: zero_grad, backward of factor * w.x (its gradient: factor * x), step."""
    ctx = StepContext(unit_run(), model, optimizer, 0, step, steps, services)
    ctx.zero_grad()
    with services.autocast():
        loss = factor * model(x).float().sum()
    ctx.backward(loss)
    ctx.optimizer_step()


@pytest.mark.parametrize("clip, expected", [(None, [-30.0, -40.0]), (1.0, [-0.6, -0.8]), (100.0, [-30.0, -40.0])])
def test_clipping_scales_the_gradient_to_the_norm_it_is_given(clip, expected):
    """The gradient (30, 40) has norm 50: clipped to 1 it is (0.6, 0.8); a larger bound leaves it alone."""
    model = linear_zero(2)
    one_step(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        StepServices(CPU, grad_clip=clip),
        torch.tensor([30.0, 40.0]),
    )
    assert model.weight.detach().flatten().tolist() == pytest.approx(expected)


def test_accumulation_adds_up_batches_into_one_step_of_their_mean():
    """Two batches of gradient x1 and x2 with accumulate 2: no step after the first, then one of -(x1 + x2) / 2,
    which is one step on both batches together; the epoch's last batch always steps."""
    x1, x2, x3 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 4.0]), torch.tensor([6.0, 6.0])
    model = linear_zero(2)
    optimizer, services = torch.optim.SGD(model.parameters(), lr=1.0), StepServices(CPU, accumulate=2)
    one_step(model, optimizer, services, x1, step=0, steps=3)
    assert model.weight.detach().flatten().tolist() == [0.0, 0.0]
    one_step(model, optimizer, services, x2, step=1, steps=3)
    assert model.weight.detach().flatten().tolist() == pytest.approx([-1.0, -2.0])
    one_step(model, optimizer, services, x3, step=2, steps=3)  # a group of one, at the epoch's end: it steps
    assert model.weight.detach().flatten().tolist() == pytest.approx([-4.0, -5.0])


def test_fp16_scales_the_loss_unscales_before_the_step_and_skips_an_infinite_one():
    model = linear_zero(2)
    optimizer, services = torch.optim.SGD(model.parameters(), lr=1.0), StepServices(CPU, "fp16", grad_clip=0.05)
    scale = services.scaler.get_scale()
    assert scale > 1.0
    # the gradient 0.5 * (0.3, 0.4) has norm 0.25: unscaled, then clipped to 0.05, it is (0.03, 0.04). The factor
    # keeps the scaled backward (2^16 times the gradient) inside float16's range, as a mean loss does
    one_step(model, optimizer, services, torch.tensor([0.3, 0.4]), factor=0.5)
    assert model.weight.detach().flatten().tolist() == pytest.approx([-0.03, -0.04], rel=1e-3)
    before = model.weight.detach().clone()
    one_step(model, optimizer, services, torch.tensor([math.inf, 0.1]), factor=0.5)
    assert torch.equal(model.weight.detach(), before) and services.scaler.get_scale() < scale  # skipped, scale lowered
    again = StepServices(CPU, "fp16")
    again.load_state_dict(services.state_dict())
    assert again.scaler.get_scale() == services.scaler.get_scale()  # what a resumed run continues with


def test_bf16_runs_the_forward_in_bfloat16_and_the_defaults_change_nothing():
    model = torch.nn.Linear(4, 3)
    with StepServices(CPU, "bf16").autocast():
        assert model(torch.ones(2, 4)).dtype == torch.bfloat16
    with StepServices(CPU).autocast():
        assert model(torch.ones(2, 4)).dtype == torch.float32
    settings = TrainSettings.from_config(cell_config_train())
    assert (settings.precision, settings.grad_clip, settings.accumulate) == ("fp32", None, 1)
    with pytest.raises(ValueError, match="train.precision: 'fp8' is not one of"):
        TrainSettings.from_config(cell_config_train() | {"precision": "fp8"})


def cell_config_train() -> dict:
    from conftest import PARAMS

    from bml.config import read_yaml

    return read_yaml(PARAMS / "protocols" / "embedded.yaml")["train"]


def test_a_bf16_run_resumes_bit_identical_and_stays_finite(packed_avdigits, tmp_path, monkeypatch):
    sets = ("train.precision=bf16", "train.grad_clip=5.0", "train.batch_size=32")
    whole_config = cell_config(packed_avdigits, tmp_path / "whole", "audio_only", "none", epochs=2, sets=sets)
    whole = train(whole_config)
    cut_config = cell_config(packed_avdigits, tmp_path / "cut", "audio_only", "none", epochs=2, sets=sets)
    assert_same_run(whole, whole_config, interrupted_and_resumed(cut_config, monkeypatch), cut_config)
    assert all(np.isfinite(v) for v in whole["test"]["best"].values())
    fp32 = train(cell_config(packed_avdigits, tmp_path / "fp32", "audio_only", "none", epochs=2, sets=sets[1:]))
    assert fp32["test"] != whole["test"]  # bf16 did run: other numbers


def test_the_gpu_figures_are_absent_on_the_cpu():
    from bml.train import gpu_figures

    assert gpu_figures(CPU) == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_gpu_figures_give_the_epochs_peak_memory_and_reset_it():
    from bml.train import gpu_figures

    device = torch.device("cuda")
    big = torch.empty(256, 1024, 1024, device=device)  # 1 GiB
    del big
    first = gpu_figures(device)
    assert first["gpu_peak_memory_gb"] >= 1.0
    assert gpu_figures(device)["gpu_peak_memory_gb"] < 0.5  # the peak was reset after the first epoch
