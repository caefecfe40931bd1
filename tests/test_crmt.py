"""CRMT: the head, the margin regulariser and the certified margin by hand, the phases, the plan's refusal, and
short real runs (the phase switch, resume inside step 2 bit-identical)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import cell_config
from test_methods_resume import (  # noqa: F401 (an autouse fixture)
    Interrupted,
    assert_same_run,
    history,
    one_torch_thread,
    run_folder,
    unit_run,
)

import bml.checkpoint
from bml.checkpoint import TrainingError
from bml.config import ConfigError
from bml.methods import method_spec
from bml.methods.base import Phase
from bml.methods.crmt import (
    CRMT,
    OrthogonalHead,
    certified_margin_loss,
    margin_regulariser,
    runner_up,
    unit_rows,
)
from bml.results import CHECKPOINT
from bml.train import run_phases, train


def crmt(epochs: int = 16, **params) -> CRMT:
    spec = method_spec("crmt")
    values = {
        "rho": 2.0,
        "a_init": 0.1,
        "second_phase_epochs": 45,
        "reference_epochs": 185,
        "second_lr_factor": 0.03,
        "second_momentum": 0.9,
        "second_weight_decay": 0.01,
    } | params
    run = unit_run(epochs=epochs)
    run.config["train"]["optimizer"] = {"name": "sgd", "lr": 0.05}
    return CRMT(spec, values, run)


def test_unit_rows_centre_and_normalise_each_row():
    w = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]])
    # row 1: centred (-1, 1), norm sqrt 2; row 2: centred (0, 0) stays zero (no NaN); row 3: (-2, 2) / sqrt 8
    s = 1 / math.sqrt(2)
    assert torch.allclose(unit_rows(w), torch.tensor([[-s, s], [0.0, 0.0], [-s, s]]))


def test_the_head_fuses_the_modalities_with_a_and_the_bias():
    head = OrthogonalHead({"audio": 2, "visual": 2}, 2, a_init=0.5)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 3.0, 0.0, 2.0], [2.0, 0.0, 5.0, 5.0]]))
        head.fc.bias.copy_(torch.tensor([0.25, -0.25]))
    f = {"audio": torch.tensor([[1.0, 2.0]]), "visual": torch.tensor([[3.0, 1.0]])}
    s = 1 / math.sqrt(2)
    uni = head.unimodal_logits(f)
    # audio rows (-s, s) and (s, -s): logits (s, -s); visual rows (-s, s) and (0, 0): logits (-2 s, 0)
    assert torch.allclose(uni["audio"], torch.tensor([[s, -s]]))
    assert torch.allclose(uni["visual"], torch.tensor([[-2 * s, 0.0]]))
    assert torch.allclose(head(f), torch.tensor([[0.5 * (s - 2 * s) + 0.25, 0.5 * -s - 0.25]]))


def test_the_margin_regulariser_by_hand_ties_and_one_far_ahead():
    y = torch.tensor([0])
    tie = {"audio": torch.zeros(1, 3), "visual": torch.zeros(1, 3)}  # 2 other classes x 2 modalities: exp(0) each
    assert margin_regulariser(tie, y).item() == pytest.approx(math.log(4 + 1e-5))
    ahead = {"audio": torch.tensor([[50.0, 0.0, 0.0]]), "visual": torch.tensor([[50.0, 0.0, 0.0]])}
    assert margin_regulariser(ahead, y).item() == pytest.approx(math.log(4 * math.exp(-50) + 1e-5))  # floor 1e-5
    mixed = {"audio": torch.tensor([[1.0, 0.0, 2.0]])}  # exp(-1) + exp(1)
    assert margin_regulariser(mixed, y).item() == pytest.approx(math.log(math.exp(-1) + math.exp(1) + 1e-5))


def test_the_runner_up_skips_the_label():
    logits = torch.tensor([[5.0, 1.0, 3.0], [0.0, 2.0, 2.0]])
    assert runner_up(logits, torch.tensor([0, 1])).tolist() == [2, 2]


def test_the_certified_margin_by_hand_and_only_a_gets_a_gradient():
    a = {"audio": torch.tensor([1.0, 2.0], requires_grad=True), "visual": torch.tensor([0.5, 1.0], requires_grad=True)}
    uni = {"audio": torch.tensor([[3.0, 1.0]], requires_grad=True), "visual": torch.tensor([[2.0, 2.0]])}
    tau = {"audio": torch.tensor([1.0, 1.0]), "visual": torch.tensor([2.0, 0.0])}
    bias = torch.tensor([0.5, 0.0], requires_grad=True)
    loss = certified_margin_loss(uni, a, bias, tau, torch.tensor([0]), torch.tensor([1]))
    # numer = (1*3 - 2*1) + (0.5*2 - 1*2) + 0.5 = 0.5; denom = sqrt((1 + 2)^2 + (1 + 0)^2) = sqrt 10
    assert loss.item() == pytest.approx(-0.5 / math.sqrt(10))
    loss.backward()
    assert a["audio"].grad is not None and a["visual"].grad is not None
    assert uni["audio"].grad is None and bias.grad is None


def test_a_zero_numerator_gives_zero_loss_not_nan():
    a = {"audio": torch.tensor([1.0, 1.0])}
    uni = {"audio": torch.tensor([[1.0, 1.0]])}
    loss = certified_margin_loss(uni, a, torch.zeros(2), {"audio": torch.ones(2)}, torch.tensor([0]), torch.tensor([1]))
    assert loss.item() == 0.0


def test_zero_lipschitz_constants_leave_the_sample_out_instead_of_dividing_by_zero():
    a = {"audio": torch.tensor([1.0, 1.0], requires_grad=True)}
    uni = {"audio": torch.tensor([[2.0, 1.0], [3.0, 0.0]])}
    tau = {"audio": torch.tensor([1.0, 0.0, 0.0])[:2]}  # class 1's constant is zero
    y, j = torch.tensor([0, 1]), torch.tensor([1, 1])
    # sample 1 (y 0, j 1): (2 - 1) / (1 + 0) = 1; sample 2 (y = j = 1 here, constants 0): left out
    loss = certified_margin_loss(uni, a, torch.zeros(2), tau, y, j)
    assert loss.item() == pytest.approx(-1.0)
    none = certified_margin_loss(uni, a, torch.zeros(2), {"audio": torch.zeros(2)}, y, j)
    assert none.item() == 0.0 and none.requires_grad


def test_step_two_is_the_scaled_last_phase_with_its_own_optimizer():
    method = crmt(epochs=16)
    first, second = method.phases(16)
    assert (first.start, first.end, second.start, second.end) == (0, 12, 12, 16)  # 45 * 16 / 185 = 3.9 -> 4
    assert second.optimizer == {"name": "sgd", "lr": 0.05 * 0.03, "momentum": 0.9, "weight_decay": 0.01}
    assert first.optimizer is None  # the protocol's
    assert crmt(epochs=16).phases(2) == [Phase("step1", 0, 2)]  # 45 * 2 / 185 rounds to 0: no step 2


def test_a_phase_longer_than_the_protocol_is_refused_before_any_job(packed_avdigits, tmp_path):
    with pytest.raises(ConfigError) as err:
        cell_config(packed_avdigits, tmp_path, "crmt", "crmt", epochs=3, sets=("method.second_phase_epochs=185",))
    message = str(err.value)
    assert "second_phase_epochs" in message and "leaving none" in message and "choose at most 154" in message


def test_crmt_works_only_with_its_own_head(packed_avdigits, tmp_path):
    with pytest.raises(ConfigError, match=r"works with fusion \['crmt'\]"):
        cell_config(packed_avdigits, tmp_path, "crmt", "concat", epochs=3)


@pytest.mark.slow
def test_a_short_run_switches_to_step_two_and_trains_only_a(packed_avdigits, tmp_path):
    # 3 epochs: 93 of 185 -> 2 epochs of step 2, after 1 of step 1
    config = cell_config(packed_avdigits, tmp_path, "crmt", "crmt", epochs=3, sets=("method.second_phase_epochs=93",))
    result = train(config)
    rows = history(config)
    assert "loss_margin" in rows[0] and "loss_certified" not in rows[0]
    assert "loss_margin" not in rows[1]  # step 2's one term, the certified margin, is the whole loss
    assert rows[1]["lr"] == pytest.approx(0.05 * 0.03)
    saved = torch.load(run_folder(config) / CHECKPOINT, weights_only=False)
    assert len(saved["optimizer"]["param_groups"][0]["params"]) == 2  # a_audio, a_visual
    assert set(saved["method"]["tau"]) == {"audio", "visual"}
    for key in ("acc", "acc_fgm", "acc_pgd_audio"):
        assert 0.0 <= result["test"]["best"][key] <= 100.0


@pytest.mark.slow
def test_resumed_inside_step_two_is_bit_identical(packed_avdigits, tmp_path, monkeypatch):
    sets = ("method.second_phase_epochs=93",)  # step 1: epoch 1; step 2: epochs 2-3; killed after epoch 2
    whole_config = cell_config(packed_avdigits, tmp_path / "whole", "crmt", "crmt", epochs=3, sets=sets)
    whole = train(whole_config)
    cut_config = cell_config(packed_avdigits, tmp_path / "cut", "crmt", "crmt", epochs=3, sets=sets)
    original = bml.checkpoint.save_atomic

    def stop_after_epoch_2(obj, path):
        original(obj, path)
        if path.name == CHECKPOINT and obj["epoch"] == 2:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(bml.checkpoint, "save_atomic", stop_after_epoch_2)
        with pytest.raises(Interrupted):
            train(cut_config)
    torch.manual_seed(12345)
    resumed = train(cut_config)
    assert_same_run(whole, whole_config, resumed, cut_config)


def test_the_loop_refuses_phases_that_do_not_cover_the_run_one_after_the_other():
    def job(phases):
        method = SimpleNamespace(phases=lambda epochs: phases, spec=SimpleNamespace(name="m"))
        return SimpleNamespace(settings=SimpleNamespace(epochs=4), method=method)

    assert run_phases(job([Phase("a", 0, 1), Phase("b", 1, 4)]))[1].epochs == 3
    for bad in ([Phase("a", 0, 3)], [Phase("a", 0, 2), Phase("b", 3, 4)], [Phase("a", 0, 0), Phase("b", 0, 4)]):
        with pytest.raises(TrainingError, match="phases"):
            run_phases(job(bad))
