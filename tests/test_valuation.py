"""Sample-level modality valuation: the Shapley values, the copies and the gap by hand, feature-level masks, the
feature game, the refusals, and short real runs of both variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cell_config
from test_methods_resume import history, one_torch_thread, unit_run  # noqa: F401 (an autouse fixture)

from bml.config import ConfigError
from bml.evaluate import feature_game, sample_shapley, shapley_shares
from bml.methods import method_spec
from bml.methods.base import Batch, EpochContext, Samples, forward
from bml.methods.checks import schedule_problems
from bml.methods.valuation import ModalityValuation, keep_only, modality_gap_copies, sample_copies
from bml.models.model import ModelSpec, MultimodalModel, build_model
from bml.train import _to_batch, train

AV = ("audio", "visual")


def game(rows: list[tuple[bool, bool, bool]]) -> dict[frozenset, np.ndarray]:
    """correct(S) from rows (audio alone right, visual alone right, both right)."""
    a, v, av = (np.array(col, dtype=bool) for col in zip(*rows, strict=True))
    return {frozenset({"audio"}): a, frozenset({"visual"}): v, frozenset(AV): av}


# ---- the valuation by hand ---------------------------------------------------------------------------------


def test_two_modality_shapley_values_by_hand():
    rows = [
        (True, True, True),  # a tie: both right alone and together: (1 + 2 - 1) / 2 = 1 each
        (True, False, True),  # audio far ahead: phi_a = (1 + 2 - 0) / 2 = 1.5, phi_v = (0 + 2 - 1) / 2 = 0.5
        (True, False, False),  # audio alone right, the pair wrong: phi_a = 0.5, phi_v = -0.5
        (False, False, False),  # nothing right: 0 and 0
        (False, False, True),  # only the pair: 1 and 1
    ]
    phi = sample_shapley(game(rows), AV)
    assert phi["audio"].tolist() == [1.0, 1.5, 0.5, 0.0, 1.0]
    assert phi["visual"].tolist() == [1.0, 0.5, -0.5, 0.0, 1.0]
    # efficiency: phi_a + phi_v = v(both) = 2 * correct(both)
    assert (phi["audio"] + phi["visual"]).tolist() == [2.0, 2.0, 0.0, 0.0, 2.0]
    assert shapley_shares(game(rows), AV) == {"shapley_audio": 0.8, "shapley_visual": 0.4}


def test_copies_by_the_authors_bands():
    # dataloader.py: 0.5 -> 1 copy, 0 -> 2, -0.5 -> 3; a modality that contributes 1 or 1.5 gets none
    assert sample_copies(np.array([-0.5, 0.0, 0.5, 1.0, 1.5])).tolist() == [3, 2, 1, 0, 0]
    assert sample_copies(np.array([])).tolist() == []


def test_sample_level_copies_keep_only_the_low_contributing_modality():
    phi = sample_shapley(game([(True, False, False), (True, True, True), (False, False, False)]), AV)
    copies = [np.repeat(np.arange(3), sample_copies(phi[m])) for m in AV]
    # sample 0: audio 0.5 -> 1 audio-only copy, visual -0.5 -> 3 visual-only; sample 1: none; sample 2: 2 and 2
    assert copies[0].tolist() == [0, 2, 2] and copies[1].tolist() == [0, 0, 0, 2, 2]
    order, masks = keep_only(copies, AV, 3)
    assert order.tolist() == [0, 1, 2, 0, 2, 2, 0, 0, 0, 2, 2]
    assert masks["audio"].tolist() == [True] * 3 + [True] * 3 + [False] * 5
    assert masks["visual"].tolist() == [True] * 3 + [False] * 3 + [True] * 5
    assert not (~masks["audio"] & ~masks["visual"]).any()  # no copy loses both


def test_modality_gap_by_hand():
    # audio contributes 1.5 on average, visual 0.5: gaps -0.5 and 0.5, |difference| 1 -> 2/3 of n, keep visual
    assert modality_gap_copies(1.5, 0.5, alpha=1.0, n=300) == (200, 1)
    assert modality_gap_copies(0.5, 1.5, alpha=0.5, n=300) == (100, 0)  # audio weaker: keep audio
    assert modality_gap_copies(1.0, 1.0, alpha=1.0, n=300) == (0, 1)  # a tie: no copy (the code's else: visual)
    assert modality_gap_copies(1.0, 0.99, alpha=1.0, n=100) == (0, 1)  # int() floors 0.67 copies to none
    assert modality_gap_copies(1.5, 0.5, alpha=0.0, n=300) == (0, 1)  # alpha 0: plain training


# ---- feature-level masks: the encoder sees the real input --------------------------------------------------


def tiny_model(n_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("small_cnn", "concat", n_classes, {"audio": "audio", "visual": "frames"}))


def tiny_inputs(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"audio": torch.randn(b, 1, 40, 32, generator=g), "visual": torch.randn(b, 3, 3, 32, 32, generator=g)}


def test_feature_masks_zero_the_pooled_feature_and_leave_batchnorm_the_real_input():
    inputs = tiny_inputs()
    keep_v = torch.tensor([True, False, True, False])
    plain, masked = tiny_model(), tiny_model()
    plain.train(), masked.train()
    out_plain = plain(inputs)
    batch = Batch(inputs, torch.zeros(4, dtype=torch.long), torch.arange(4), {"visual": keep_v}, "feature")
    out = forward(masked, batch)
    # the encoders saw the real inputs: BatchNorm's running statistics move exactly as without masks
    for (name, a), b in zip(plain.state_dict().items(), masked.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(out.features["visual"][~keep_v], torch.zeros(2, out.features["visual"].shape[1]))
    assert torch.equal(out.features["visual"][keep_v], out_plain.features["visual"][keep_v])
    expected = masked.fusion({"audio": out_plain.features["audio"], "visual": out.features["visual"]})
    assert torch.allclose(out.logits, expected)


def test_input_level_masks_still_zero_the_inputs_when_the_batch_is_made():
    raw = {"inputs": tiny_inputs(), "label": torch.zeros(4, dtype=torch.long), "index": torch.arange(4)}
    raw["position"] = torch.arange(4)
    keep = np.array([True, False, True, False])
    made = _to_batch(raw, torch.device("cpu"), lambda x: dict(x), Samples(np.arange(4), {"visual": keep}))
    assert made.mask_level == "input" and (made.inputs["visual"][~keep] == 0).all()
    made = _to_batch(raw, torch.device("cpu"), lambda x: dict(x), Samples(np.arange(4), {"visual": keep}, "feature"))
    assert made.mask_level == "feature" and torch.equal(made.inputs["visual"], raw["inputs"]["visual"])
    assert made.masks["visual"].tolist() == keep.tolist()
    with pytest.raises(ValueError, match="mask_level 'pooled'"):
        Samples(np.arange(4), {}, "pooled")


def test_the_feature_game_zeroes_features_before_the_head():
    model = tiny_model(n_classes=2)
    with torch.no_grad():  # a head that reads audio's first feature only: class 1 when it is positive
        model.fusion.fc.weight.zero_()
        model.fusion.fc.bias.copy_(torch.tensor([0.1, 0.0]))  # zero features: class 0
        model.fusion.fc.weight[1, 0] = 1.0
    d = model.fusion.dims
    features = {"audio": np.zeros((3, d["audio"]), np.float32), "visual": np.ones((3, d["visual"]), np.float32)}
    features["audio"][:, 0] = [1.0, 1.0, -1.0]
    found = {"features": features, "label": np.array([1, 0, 0])}
    correct = feature_game(model, found, torch.device("cpu"))
    assert correct[frozenset(AV)].tolist() == [True, False, True]
    assert correct[frozenset({"audio"})].tolist() == [True, False, True]
    assert correct[frozenset({"visual"})].tolist() == [False, True, True]  # audio zeroed: the bias says 0
    phi = sample_shapley(correct, AV)
    assert phi["audio"].tolist() == [1.5, -0.5, 1.0] and phi["visual"].tolist() == [0.5, 0.5, 1.0]


# ---- the method's draws, and the refusals -----------------------------------------------------------------


def test_modality_level_draws_depend_on_seed_and_epoch_only(monkeypatch):
    spec = method_spec("modality_valuation")
    params = {"alpha": 1.0, "part_ratio": 0.5, "warmup_epochs": 0, "reference_epochs": 3, "mask_level": "feature"}
    method = ModalityValuation(spec, params, unit_run({"audio": "audio", "visual": "frames"}, n_classes=2))
    phi = {"audio": np.full(40, 1.5), "visual": np.full(40, 0.5)}  # audio far ahead: copies keep visual
    monkeypatch.setattr(method, "valuate", lambda ctx: phi)
    ctx = EpochContext(method.run, None, 1)
    first, again = method.epoch_samples(ctx), method.epoch_samples(ctx)
    assert np.array_equal(first.indices, again.indices) and first.mask_level == "feature"
    assert len(first.indices) == 40 + int(1.0 * 2 / 3 * 40)  # |gap_a - gap_v| = 1: 26 copies
    assert first.masks["audio"][40:].sum() == 0 and first.masks["visual"].all()
    other = method.epoch_samples(EpochContext(method.run, None, 2))
    assert not np.array_equal(first.indices, other.indices)
    log = method.epoch_log()
    assert log["resampled_visual"] == 26 and log["resampled_audio"] == 0 and log["part_valuation_audio"] == 1.5
    warm = ModalityValuation(spec, params | {"warmup_epochs": 2}, unit_run(n_classes=2))
    assert warm.epoch_samples(EpochContext(warm.run, None, 1)) is None  # 2 of 3 epochs: epochs 0 and 1 plain


def test_a_warm_up_covering_the_run_is_refused(packed_avdigits, tmp_path):
    spec = method_spec("sample_valuation")
    assert schedule_problems(spec, {"warmup_epochs": 5, "reference_epochs": 60}, 16) == []  # 5 of 60 -> 1 of 16
    problems = schedule_problems(spec, {"warmup_epochs": 59, "reference_epochs": 60}, 16)  # 59 of 60 -> 16 of 16
    assert len(problems) == 1 and "'warmup_epochs'" in problems[0] and "never act" in problems[0]
    with pytest.raises(ConfigError, match="warmup_epochs"):
        cell_config(packed_avdigits, tmp_path, "sample_valuation", epochs=3, sets=("method.warmup_epochs=60",))
    with pytest.raises(ConfigError, match=r"mask_level.*choose one of \['feature', 'input'\]"):
        cell_config(packed_avdigits, tmp_path, "modality_valuation", epochs=3, sets=("method.mask_level=pooled",))


# ---- short real runs --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sample_valuation", "modality_valuation"])
def test_a_short_run_on_tiny_avdigits_values_and_resamples(packed_avdigits, tmp_path, monkeypatch, method):
    # 5 of 60 warm-up epochs scale to 0 of 3: every epoch is valued and re-sampled
    config = cell_config(packed_avdigits, tmp_path, method, "concat", epochs=3)
    original, masked_rows, zero_inputs = MultimodalModel.forward, [0], [0]

    def spy(self, inputs, feature_masks=None):  # the loop hands the masks to the model, never zeroes the input
        for m, keep in (feature_masks or {}).items():
            masked_rows[0] += int((~keep).sum())
            zero_inputs[0] += int((inputs[m][~keep].flatten(1) == 0).all(1).sum())
        return original(self, inputs, feature_masks)

    monkeypatch.setattr(MultimodalModel, "forward", spy)
    result = train(config)
    rows = history(config)
    assert masked_rows[0] > 0 and zero_inputs[0] == 0
    for row in rows:
        for m in AV:
            assert -0.5 <= row[f"valuation_{m}"] <= 1.5
            assert row[f"resampled_{m}"] >= 0
    assert any(row["resampled_audio"] + row["resampled_visual"] > 0 for row in rows)
    best = result["test"]["best"]
    assert best["shapley_audio"] + best["shapley_visual"] == pytest.approx(2 * best["acc"] / 100.0)
