"""The method contract (bml/methods/base.py) hosts the rest of the field: a method may own its training step,
choose its samples, predict its own way at test time, add model parts with their own learning rate, and any
of them runs on a dataset of three modalities.

Each kind is a small Method defined here and registered for its test with `monkeypatch.setitem` on
bml.methods.METHODS: a MethodSpec whose module is this file. The plan (resolve_cell, through conftest's
cell_config) and the loop (load_method) both read that registry, so the test method goes through the same
checks and the same `bml.train.train` as a shipped one, and the registry is restored after the test.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import PARAMS, cell_config
from test_methods_resume import (  # noqa: F401 (one_torch_thread: an autouse fixture)
    assert_same_run,
    history,
    interrupted_and_resumed,
    one_torch_thread,
    run_folder,
)
from torch import nn

from bml.config import ConfigError
from bml.data.loader import PackedSplit, epoch_order, prepare_inputs
from bml.data.pack import RecordWriter, file_sha256, record_dtype
from bml.evaluate import classification_metrics
from bml.methods import METHODS, MethodSpec
from bml.methods.base import Batch, EpochContext, Method, Samples, StepContext
from bml.models.model import ModelSpec, Output, build_model
from bml.results import BEST, CHECKPOINT
from bml.train import train


def register(monkeypatch, cls: type[Method], **spec) -> str:
    """Put `cls` in the method registry for one test, under its class name in lower case; returns the name."""
    name = cls.__name__.lower()
    monkeypatch.setitem(METHODS, name, MethodSpec(name, cls.__name__, __name__, cls.__name__, "contract test", **spec))
    return name


def finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


# ---- (a) a method that owns its training step -------------------------------------------------------


class AlternatingSteps(Method):
    """MLA-like (Zhang et al., CVPR 2024): one head shared by every modality; per batch,
    each modality in turn: its encoder's forward, CE through the shared head, backward, optimizer step."""

    runs: list[AlternatingSteps] = []  # the instances the loop made, for the test to read

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.calls: list[int] = []  # per batch: ctx.optimizer_step() calls
        self.steps_taken: list[int] = []  # per batch: optimizer.step() runs, seen by a hook on the optimizer
        self._hooked, self._counted = False, 0
        AlternatingSteps.runs.append(self)

    def build_model(self, spec: ModelSpec) -> nn.Module:
        model = build_model(spec)
        (width,) = {enc.out_dim for enc in model.encoders.values()}  # a shared head needs one feature width
        model.shared_head = nn.Linear(width, spec.n_classes)
        return model

    def training_step(self, ctx: StepContext, batch: Batch) -> dict[str, float]:
        if not self._hooked:  # count what the optimizer really does, apart from what this method asks
            ctx.optimizer.register_step_post_hook(lambda *_: setattr(self, "_counted", self._counted + 1))
            self._hooked = True
        before, values, calls = self._counted, {}, 0
        for m in ctx.model.modalities:
            ctx.zero_grad()
            loss = F.cross_entropy(ctx.model.shared_head(ctx.model.encoders[m](batch.inputs[m])), batch.labels)
            ctx.backward(loss)
            ctx.optimizer_step()
            calls += 1
            values[m] = loss.item()
        self.calls.append(calls)
        self.steps_taken.append(self._counted - before)
        self.record("optimizer_steps", self._counted - before)
        return values


@pytest.mark.slow
def test_a_method_that_owns_its_step_takes_one_optimizer_step_per_modality(packed_avdigits, tmp_path, monkeypatch):
    monkeypatch.setattr(AlternatingSteps, "runs", [])
    name = register(monkeypatch, AlternatingSteps)
    config = cell_config(packed_avdigits, tmp_path, name, "concat", epochs=2)
    result = train(config)
    (method,) = AlternatingSteps.runs
    n_train, batch_size = len(np.load(Path(config["paths"]["packed_dir"]) / "train.npy", mmap_mode="r")), 64
    batches = 2 * math.ceil(n_train / batch_size)  # 2 epochs of ceil(84 / 64) = 2 batches
    assert method.calls == [2] * batches  # two modalities: two optimizer steps per batch
    assert method.steps_taken == [2] * batches
    rows = history(config)
    assert [r["optimizer_steps"] for r in rows] == [2.0, 2.0]
    assert all({"loss_audio", "loss_visual"} <= set(r) for r in rows)  # the step's loss terms reach the history
    assert finite(result["test"]["best"]) and finite(result["test"]["last"])
    # the shared head was trained and saved with the model
    saved = torch.load(run_folder(config) / CHECKPOINT, weights_only=False)["model"]
    assert "shared_head.weight" in saved


# ---- (b) a method that chooses its samples ----------------------------------------------------------


class HalfCopiesOneModality(Method):
    """Chooses its samples, like sample-level modality valuation's re-sampling (Wei et al., CVPR 2024):
    every training sample once, plus a copy of half of them, drawn by (seed, epoch),
    each copy with one modality (drawn too) zeroed."""

    runs: list[HalfCopiesOneModality] = []

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.chosen: dict[int, Samples] = {}
        self.delivered: list[tuple[int, np.ndarray, dict[str, np.ndarray], bool]] = []
        HalfCopiesOneModality.runs.append(self)

    def epoch_samples(self, ctx: EpochContext) -> Samples:
        n, modalities = len(ctx.run.splits["train"]), list(ctx.run.modalities)
        rng = np.random.default_rng([ctx.run.seed, ctx.epoch])
        copies = np.sort(rng.choice(n, n // 2, replace=False))
        zeroed = rng.integers(0, len(modalities), len(copies))  # which modality each copy loses
        masks = {m: np.concatenate([np.ones(n, bool), zeroed != i]) for i, m in enumerate(modalities)}
        self.chosen[ctx.epoch] = Samples(np.concatenate([np.arange(n), copies]), masks)
        return self.chosen[ctx.epoch]

    def before_forward(self, batch: Batch, ctx: StepContext) -> Batch:
        # exactly the masked inputs are zero: every element of a masked row, and no unmasked row entirely
        zero_rows_match = all(torch.equal((x.flatten(1) == 0).all(1), ~batch.masks[m]) for m, x in batch.inputs.items())
        masks = {m: mask.cpu().numpy() for m, mask in batch.masks.items()}
        self.delivered.append((ctx.epoch, batch.index.cpu().numpy(), masks, zero_rows_match))
        return batch


@pytest.mark.slow
def test_a_method_that_chooses_its_samples_gets_exactly_those(packed_avdigits, tmp_path, monkeypatch):
    monkeypatch.setattr(HalfCopiesOneModality, "runs", [])
    name = register(monkeypatch, HalfCopiesOneModality)
    whole_config = cell_config(packed_avdigits, tmp_path / "whole", name, "concat", epochs=3)
    whole = train(whole_config)
    (method,) = HalfCopiesOneModality.runs
    seed, batch_size = whole_config["run"]["seed"], whole_config["train"]["batch_size"]
    n_train = len(np.load(Path(whole_config["paths"]["packed_dir"]) / "train.npy", mmap_mode="r"))
    for epoch, samples in method.chosen.items():
        got = [d for d in method.delivered if d[0] == epoch]
        assert len(samples.indices) == n_train + n_train // 2
        # as a whole: every chosen sample once, repeats included, with its own masks
        delivered = np.concatenate([d[1] for d in got])
        assert sorted(delivered.tolist()) == sorted(samples.indices.tolist())
        # batch by batch: the loop's order is the (seed, epoch) permutation of the chosen list
        order = np.asarray(epoch_order(len(samples.indices), seed, epoch))
        assert len(got) == math.ceil(len(order) / batch_size)
        for k, (_, index, masks, zero_rows_match) in enumerate(got):
            positions = order[k * batch_size : (k + 1) * batch_size]
            assert np.array_equal(index, samples.indices[positions])
            for m, mask in samples.masks.items():
                assert np.array_equal(masks[m], mask[positions]), (epoch, k, m)
            assert zero_rows_match, (epoch, k)
        masked = sum((~mask).sum() for mask in samples.masks.values())
        assert masked == n_train // 2  # each copy lost exactly one modality
    assert sorted(method.chosen) == [0, 1, 2]
    assert not np.array_equal(method.chosen[0].indices, method.chosen[1].indices)  # drawn anew each epoch
    # killed after epoch 1 and resumed from a scrambled RNG: the same choices, the same run, bit for bit
    cut_config = cell_config(packed_avdigits, tmp_path / "cut", name, "concat", epochs=3)
    resumed = interrupted_and_resumed(cut_config, monkeypatch)
    assert_same_run(whole, whole_config, resumed, cut_config)
    _, cut_method, resumed_method = HalfCopiesOneModality.runs
    assert sorted(cut_method.chosen) == [0] and sorted(resumed_method.chosen) == [1, 2]
    for epoch in (1, 2):
        assert np.array_equal(resumed_method.chosen[epoch].indices, method.chosen[epoch].indices)


# ---- (c) a method that predicts its own way at test time --------------------------------------------


def entropy_weighted(logits: dict[str, np.ndarray]) -> np.ndarray:
    """MLA's test-time fusion (Zhang et al., CVPR 2024), per sample: e_m the entropy of softmax(z_m);
    w_m = exp(max_j e_j - e_m) / sum_j exp(max_j e_j - e_j); fused = sum_m w_m z_m. Numpy, for the check."""
    entropies = []
    for z in logits.values():
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        entropies.append(-(p * np.log(p + 1e-12)).sum(1))
    e = np.stack(entropies, 1)  # (N, M)
    w = np.exp(e.max(1, keepdims=True) - e)
    w /= w.sum(1, keepdims=True)
    return sum(w[:, i : i + 1] * z for i, z in enumerate(logits.values()))


class EntropyFusion(Method):
    """Trained jointly; at test time its prediction is the entropy-weighted sum of the per-modality logits
    (MLA's test-time fusion, Zhang et al., CVPR 2024), not the fusion head's output."""

    def predict(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> Output:
        out = model(inputs)
        z = model.unimodal_logits(out.features)
        e = torch.stack([-(F.softmax(v, 1) * F.log_softmax(v, 1)).sum(1) for v in z.values()], 1)  # (B, M)
        w = F.softmax(-e, dim=1)  # = exp(max e - e_m) / sum_j exp(max e - e_j)
        fused = sum(w[:, i : i + 1] * v for i, v in enumerate(z.values()))
        return Output(fused, out.features, z)


def test_final_metrics_come_from_the_methods_predict(packed_avdigits, tmp_path, monkeypatch):
    name = register(monkeypatch, EntropyFusion, fusions="split")
    config = cell_config(packed_avdigits, tmp_path, name, "concat", epochs=2)
    last = train(config)["test"]["last"]
    # the last model, run by hand over the test split: its per-modality logits, fused by entropy in numpy
    modalities, tcfg = config["data"]["modalities"], config["train"]
    test = PackedSplit(config["paths"]["packed_dir"], "test", modalities, tcfg["eval_frames"], train=False)
    model = build_model(ModelSpec(tcfg["encoder"], "concat", test.n_classes, modalities))
    model.load_state_dict(torch.load(run_folder(config) / CHECKPOINT, weights_only=False)["model"])
    model.eval()
    with torch.no_grad():
        batch = test[list(range(len(test)))]
        out = model(prepare_inputs(batch["inputs"], modalities, tcfg))
        per_modality = {m: z.numpy().astype(np.float64) for m, z in model.unimodal_logits(out.features).items()}
    labels = batch["label"].numpy()
    by_hand = classification_metrics(entropy_weighted(per_modality), labels)
    assert last["acc"] == pytest.approx(by_hand["acc"])
    assert last["macro_f1"] == pytest.approx(by_hand["macro_f1"])
    assert last["map"] == pytest.approx(by_hand["map"], abs=1e-3)
    for m, z in per_modality.items():
        assert last[f"acc_{m}"] == pytest.approx(100.0 * float((z.argmax(1) == labels).mean()))
    # and not from the fusion head: its logits rank the classes differently (mAP reads the whole ranking)
    head = classification_metrics(out.logits.numpy().astype(np.float64), labels)
    assert head["map"] != pytest.approx(by_hand["map"], abs=1e-3)


# ---- (d) a method that adds model parts with their own learning rate --------------------------------


class HeadsAtATenth(Method):
    """Adds model parts: a linear head per encoder (build_model), trained by its own CE on detached features,
    with a tenth of the protocol's learning rate (param_groups)."""

    factor = 0.1

    def build_model(self, spec: ModelSpec) -> nn.Module:
        return build_model(replace(spec, unimodal_heads=True))

    def param_groups(self, model: nn.Module) -> list[dict]:
        heads = list(model.heads.parameters())
        in_heads = {id(p) for p in heads}
        rest = [p for p in model.parameters() if id(p) not in in_heads]
        lr = self.run.config["train"]["optimizer"]["lr"]
        return [{"params": rest, "lr": lr}, {"params": heads, "lr": lr * self.factor}]

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        self.record("lr_heads", ctx.optimizer.param_groups[1]["lr"])
        heads = {
            f"head_{m}": F.cross_entropy(model.heads[m](f.detach()), batch.labels) for m, f in out.features.items()
        }
        return {"ce": F.cross_entropy(out.logits, batch.labels), **heads}


def test_a_method_adds_heads_with_their_own_learning_rate(packed_avdigits, tmp_path, monkeypatch):
    name = register(monkeypatch, HeadsAtATenth)
    config = cell_config(packed_avdigits, tmp_path, name, "concat", epochs=2)
    result = train(config)
    lr = config["train"]["optimizer"]["lr"]
    saved = torch.load(run_folder(config) / CHECKPOINT, weights_only=False)
    groups = saved["optimizer"]["param_groups"]
    assert len(groups) == 2
    assert [g["initial_lr"] for g in groups] == pytest.approx([lr, lr * 0.1])
    assert len(groups[1]["params"]) == 4  # two heads: a weight and a bias each
    assert {"heads.audio.weight", "heads.visual.bias"} <= set(saved["model"])
    # the schedule moves both groups together: the heads keep a tenth of the logged rate each epoch
    for row in history(config):
        assert row["lr_heads"] == pytest.approx(0.1 * row["lr"])
        assert {"loss_ce", "loss_head_audio", "loss_head_visual"} <= set(row)
    assert finite(result["test"]["best"])


# ---- (e) a method that changes the model after validation ------------------------------------------


class ZeroHeadAfterValidation(Method):
    """Re-learning-like (ECCV 2024: validate, then reset): after each epoch's validation, the fused head is set
    to predict class 0 for everything. The epoch's numbers must come from the model before, the next epoch must
    train the model after."""

    calls: list[dict] = []  # one per after_validation: the epoch, metrics before and after, the weights before
    starts: list[tuple[int, float]] = []  # (epoch, |W| of the head) as each epoch starts

    def on_epoch_start(self, ctx: EpochContext) -> None:
        self.starts.append((ctx.epoch, ctx.model.fusion.fc.weight.abs().sum().item()))

    def after_validation(self, ctx: EpochContext) -> None:
        metrics = {s: self._metrics(ctx, s) for s in ("val", "test")}
        before = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        with torch.no_grad():
            ctx.model.fusion.fc.weight.zero_()
            ctx.model.fusion.fc.bias.zero_()
            ctx.model.fusion.fc.bias[0] = 1.0
        after = self._metrics(ctx, "val")
        self.calls.append({"epoch": ctx.epoch, "before": metrics, "val_after": after, "weights": before})
        ctx.model.train()

    @staticmethod
    def _metrics(ctx: EpochContext, split: str) -> dict[str, float]:
        found = ctx.run.collect(ctx.model, split)
        return classification_metrics(found["logits"], found["label"])


def test_a_change_after_validation_is_trained_next_and_never_validated(packed_avdigits, tmp_path, monkeypatch):
    monkeypatch.setattr(ZeroHeadAfterValidation, "calls", [])
    monkeypatch.setattr(ZeroHeadAfterValidation, "starts", [])
    name = register(monkeypatch, ZeroHeadAfterValidation)
    config = cell_config(packed_avdigits, tmp_path, name, "concat", epochs=3)
    result = train(config)
    calls, rows = ZeroHeadAfterValidation.calls, history(config)
    assert [c["epoch"] for c in calls] == [0, 1]  # never after the last epoch
    for c in calls:  # the epoch's validation and test record saw the model before the change
        assert c["val_after"]["map"] != pytest.approx(c["before"]["val"]["map"])  # the change shows in the scores
        for k in ("acc", "map"):
            assert rows[c["epoch"]][f"val_{k}"] == pytest.approx(c["before"]["val"][k])
        assert result["test_by_epoch"]["acc"][c["epoch"]] == pytest.approx(c["before"]["test"]["acc"])
    starts = dict(ZeroHeadAfterValidation.starts)
    assert starts[0] > 0 and starts[1] == 0.0 and starts[2] == 0.0  # the next epoch trains the changed model
    best = torch.load(run_folder(config) / BEST, weights_only=False)
    if best["epoch"] <= 2:  # best.pt holds the weights validated, not the changed ones
        weights = calls[best["epoch"] - 1]["weights"]
    else:
        weights = torch.load(run_folder(config) / CHECKPOINT, weights_only=False)["model"]
    assert all(torch.equal(best["model"][k].cpu(), v.cpu()) for k, v in weights.items())


# ---- three modalities -------------------------------------------------------------------------------

THREE = {"audio": "audio", "visual": "frames", "visual2": "frames"}


@pytest.fixture(scope="module")
def avdigits3(packed_avdigits, tmp_path_factory) -> tuple[Path, Path]:
    """(data root, params dir) of `avdigits3`: the packed avdigits with a third modality, `visual2` (the
    frames flipped left-right), declared in a copy of params/ with its recipe and protocol."""
    root = tmp_path_factory.mktemp("avdigits3")
    params = root / "params"
    shutil.copytree(PARAMS, params)
    spec = yaml.safe_load((params / "datasets" / "avdigits.yaml").read_text())
    spec["description"] = "avdigits with its frames flipped left-right as a third modality (tests)"
    spec["modalities"]["visual2"] = {"kind": "frames"}
    recipe = {k: v for k, v in spec["recipes"]["embedded"].items()}
    recipe["visual2"] = dict(recipe["visual"])
    spec["recipes"] = {"embedded": recipe}
    (params / "datasets" / "avdigits3.yaml").write_text(yaml.safe_dump(spec))
    protocol = yaml.safe_load((params / "protocols" / "embedded.yaml").read_text())
    protocol["datasets"]["avdigits3"] = {"recipe": "embedded"}
    (params / "protocols" / "embedded.yaml").write_text(yaml.safe_dump(protocol))

    source = packed_avdigits / "avdigits" / "embedded" / "packed"
    packed = root / "data" / "avdigits3" / "embedded" / "packed"
    packed.mkdir(parents=True)
    dtype = record_dtype(THREE, recipe)
    for split in ("train", "val", "test"):
        records = np.load(source / f"{split}.npy", mmap_mode="r")
        path = packed / f"{split}.npy"
        with RecordWriter(path, dtype) as writer:
            for r in records:
                values = {"audio": r["audio"], "visual": r["visual"], "visual2": r["visual"][..., ::-1]}
                writer.append(str(r["clip_id"]), int(r["label"]), values)
        meta = json.loads((source / f"{split}.json").read_text())
        meta |= {"modalities": THREE, "dtype": str(dtype.descr), "size": path.stat().st_size}
        meta["sha256"] = file_sha256(path)
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return root / "data", params


def test_three_modalities_train_with_joint_concat_and_evaluate(avdigits3, tmp_path):
    data_root, params = avdigits3
    config = cell_config(data_root, tmp_path, "joint", "concat", epochs=2, params_dir=params, dataset="avdigits3")
    assert config["data"]["modalities"] == THREE
    best = train(config)["test"]["best"]
    for m in THREE:
        for metric in ("probe", "acc", "acc_zero", "acc_noise", "acc_fgm", "acc_pgd"):
            assert 0.0 <= best[f"{metric}_{m}"] <= 100.0, (metric, m)
        assert -1.0 <= best[f"shapley_{m}"] <= 3.0
    # efficiency of the Shapley shares: they add up to v(all) = 3 when right with every modality
    assert sum(best[f"shapley_{m}"] for m in THREE) == pytest.approx(3 * best["acc"] / 100.0)
    assert finite(best)
    assert {f"val_probe_{m}" for m in THREE} <= set(history(config)[-1])


def test_mmpareto_trains_on_three_modalities(avdigits3, tmp_path):
    data_root, params = avdigits3
    config = cell_config(data_root, tmp_path, "mmpareto", "concat", epochs=1, params_dir=params, dataset="avdigits3")
    best = train(config)["test"]["best"]
    (row,) = history(config)
    assert {f"conflict_{m}" for m in THREE} <= set(row) and {f"loss_{m}" for m in THREE} <= set(row)
    assert finite(best)


@pytest.mark.parametrize("method", ["ogm", "ogm_ge", "opm", "pmr", "agm"])
def test_two_modality_methods_are_refused_before_training(avdigits3, tmp_path, method):
    data_root, params = avdigits3
    with pytest.raises(ConfigError, match=r"formulas are defined for two modalities .*'avdigits3' has 3"):
        cell_config(data_root, tmp_path, method, "concat", params_dir=params, dataset="avdigits3")
    assert not (tmp_path / "avdigits3").exists()  # nothing was started


@pytest.mark.parametrize("fusion", ["film", "gated"])
def test_two_modality_heads_are_refused_on_three(avdigits3, tmp_path, fusion):
    data_root, params = avdigits3
    with pytest.raises(ConfigError, match=rf"works with fusion \['concat', 'sum'\] on 3 modalities, not '{fusion}'"):
        cell_config(data_root, tmp_path, "joint", fusion, params_dir=params, dataset="avdigits3")


def test_a_method_with_a_head_of_its_own_carries_its_name_not_a_catalog_heads(tmp_path, monkeypatch):
    """MLA's and CRMT's runs use a head of their own: the plan files them under that head's name, and refuses
    a catalog head the method would not use, naming the one it takes."""
    from bml.methods import allowed_fusions, every_run, fusion_names

    name = register(monkeypatch, AlternatingSteps, head="shared")
    assert allowed_fusions(METHODS[name], 2) == ["shared"] and (name, "shared") in every_run(["audio", "visual"])
    assert "shared" in fusion_names() and "concat" in fusion_names()
    config = cell_config(tmp_path / "data", tmp_path / "results", method=name, fusion="shared")
    assert Path(config["paths"]["run_dir"]).parts[-3:] == ("shared", name, "seed0")
    with pytest.raises(ConfigError, match=r"works with fusion \['shared'\].*not 'concat'"):
        cell_config(tmp_path / "data", tmp_path / "results", method=name, fusion="concat")
