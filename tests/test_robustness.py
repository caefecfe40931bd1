"""The robustness evaluation (CRMT's l2 attacks, bml/evaluate.py) by hand, and a method's evaluation with the
model and the data (bml/methods/base.py: EvalContext)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cell_config
from test_methods_resume import one_torch_thread  # noqa: F401 (an autouse fixture)
from torch import nn

from bml.attacks import attack_subset, l2_attack, l2_direction, project_l2
from bml.data.loader import make_loader
from bml.evaluate import classification_metrics
from bml.methods import METHODS, MethodSpec
from bml.methods.base import EvalContext, Method
from bml.models.model import Output
from bml.train import train


def test_the_direction_is_normalised_over_the_attacked_modalities_only():
    grads = {"audio": torch.tensor([[3.0, 0.0]]), "visual": torch.tensor([[0.0, 4.0]])}
    both = l2_direction(grads, ("audio", "visual"))
    assert torch.allclose(both["audio"], torch.tensor([[0.6, 0.0]]))
    assert torch.allclose(both["visual"], torch.tensor([[0.0, 0.8]]))
    audio = l2_direction(grads, ("audio",))
    assert torch.allclose(audio["audio"], torch.tensor([[1.0, 0.0]]))
    assert torch.equal(audio["visual"], torch.zeros(1, 2))  # the other modality is not moved


def test_a_zero_gradient_gives_a_zero_step_not_nan():
    step = l2_direction({"audio": torch.zeros(2, 3)}, ("audio",))
    assert torch.equal(step["audio"], torch.zeros(2, 3))


def test_projection_shrinks_the_joint_perturbation_onto_the_ball():
    clean = {"audio": torch.zeros(2, 1), "visual": torch.zeros(2, 1)}
    adv = {"audio": torch.tensor([[3.0], [0.3]]), "visual": torch.tensor([[4.0], [0.4]])}
    out = project_l2(adv, clean, 1.0)
    # sample 1: |(3, 4)| = 5 -> (0.6, 0.8); sample 2: |(0.3, 0.4)| = 0.5 inside the ball, unchanged
    assert torch.allclose(out["audio"], torch.tensor([[0.6], [0.3]]))
    assert torch.allclose(out["visual"], torch.tensor([[0.8], [0.4]]))


class Linear(nn.Module):
    """logits = audio @ Wa + visual @ Wv: a model whose input gradients are known."""

    def __init__(self) -> None:
        super().__init__()
        self.wa = nn.Parameter(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
        self.wv = nn.Parameter(torch.tensor([[0.0, 0.0], [2.0, -2.0]]))

    def forward(self, inputs):
        return Output(inputs["audio"] @ self.wa + inputs["visual"] @ self.wv, {})


def predict(model, inputs):
    return model(inputs)


def test_the_one_step_attack_moves_eps_up_the_loss_and_pgd_stays_in_the_ball():
    model, y = Linear(), torch.tensor([0])
    x = {"audio": torch.tensor([[1.0, 1.0]]), "visual": torch.tensor([[1.0, 1.0]])}
    clean_loss = F.cross_entropy(model(x).logits, y)
    # d CE / d logits = p - onehot = (p0 - 1, 1 - p0); d / d audio = (2 (p0 - 1), 0), d / d visual = (0, 4 (p0 - 1))
    # so the l2 direction over both is -(1, 0, 0, 2) / sqrt 5
    adv = l2_attack(model, predict, x, y, ("audio", "visual"), 0.5, 1, 3.0)
    s = 0.5 / 5**0.5
    assert torch.allclose(adv["audio"], torch.tensor([[1.0 - s, 1.0]]))
    assert torch.allclose(adv["visual"], torch.tensor([[1.0, 1.0 - 2 * s]]))
    assert F.cross_entropy(model(adv).logits, y) > clean_loss
    assert model.wa.grad is None  # the parameters' gradients are left alone
    pgd = l2_attack(model, predict, x, y, ("visual",), 0.5, 4, 3.0)
    assert torch.equal(pgd["audio"], x["audio"])
    assert (pgd["visual"] - x["visual"]).norm() <= 0.5 + 1e-6
    assert F.cross_entropy(model(pgd).logits, y) > clean_loss


def test_the_attacked_subset_is_evenly_spaced_and_all_when_asked():
    assert attack_subset(10, 0).tolist() == list(range(10))
    assert attack_subset(10, 20).tolist() == list(range(10))
    assert attack_subset(9, 3).tolist() == [0, 4, 8]


class ZeroedFeatures(Method):
    """An evaluation that needs the model and the data: accuracy with the audio encoder's features zeroed (not
    its input), and the clean accuracy again from the collected outputs."""

    def evaluations(self, ctx: EvalContext) -> dict[str, float]:
        test = ctx.found["test"]
        right, n = 0, 0
        with torch.no_grad():
            for batch in make_loader(ctx.splits["test"], 256):
                inputs = ctx.prepare({m: x.to(ctx.device) for m, x in batch["inputs"].items()})
                features = {m: enc(inputs[m]) for m, enc in ctx.model.encoders.items()}
                features["audio"] = torch.zeros_like(features["audio"])
                right += int((ctx.model.fusion(features).argmax(1).cpu() == batch["label"]).sum())
                n += len(batch["label"])
        clean = classification_metrics(test["logits"], test["label"])["acc"]
        return {"acc_zero_features_audio": 100.0 * right / n, "acc_again": clean}


@pytest.mark.slow
def test_an_evaluation_gets_the_model_and_data_and_the_attacks_change_no_other_number(
    packed_avdigits, tmp_path, monkeypatch
):
    spec = MethodSpec("zeroedfeatures", "Zeroed features", __name__, "ZeroedFeatures", "contract test")
    monkeypatch.setitem(METHODS, "zeroedfeatures", spec)
    with_attacks = train(cell_config(packed_avdigits, tmp_path / "a", "zeroedfeatures", "concat", epochs=1))
    without = train(
        cell_config(packed_avdigits, tmp_path / "b", "zeroedfeatures", "concat", epochs=1, sets=("eval.attack_eps=0",))
    )
    best, plain = with_attacks["test"]["best"], without["test"]["best"]
    assert best["acc_again"] == best["acc"]
    assert 0.0 <= best["acc_zero_features_audio"] <= 100.0
    attacks = {k for k in best if k.startswith(("acc_fgm", "acc_pgd"))}
    assert attacks == {"acc_fgm", "acc_fgm_audio", "acc_fgm_visual", "acc_pgd", "acc_pgd_audio", "acc_pgd_visual"}
    assert {k: v for k, v in best.items() if k not in attacks} == plain  # every other number as it was
    assert np.isfinite(list(best.values())).all()
