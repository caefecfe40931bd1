"""The training core on real packed avdigits: the loop, evaluation, MLflow, checkpoints, NaN guards and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, bml_env, cell_config

from bml.data.loader import PackedSplit, epoch_order, make_loader
from bml.data.pack import PackedDataError
from bml.job import open_run
from bml.methods import METHODS, MethodSpec
from bml.methods.base import Method
from bml.results import WALL_TIMES
from bml.train import TrainingError, train

MODALITIES = {"audio": "audio", "visual": "frames"}


def tiny_config(data_root, results, method="joint", fusion="concat", seed=0, epochs=3, tracking=None, sets=()):
    return cell_config(data_root, results, method, fusion, seed, epochs, tuple(sets), tracking)


def packed(data_root) -> Path:
    return data_root / "avdigits" / "embedded" / "packed"


@pytest.fixture
def no_env_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ---- data -------------------------------------------------------------------------------------------


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert epoch_order(50, 0, 3) == epoch_order(50, 0, 3)
    assert epoch_order(50, 0, 3) != epoch_order(50, 0, 4)
    assert epoch_order(50, 1, 3) != epoch_order(50, 0, 3)
    assert sorted(epoch_order(50, 0, 3)) == list(range(50))


def test_training_frames_are_random_sorted_and_reproducible_eval_frames_fixed(packed_avdigits):
    train = PackedSplit(packed(packed_avdigits), "train", MODALITIES, 3, train=True, seed=0)
    seen = set()
    for epoch in range(6):
        train.set_epoch(epoch)
        idx = train.frame_indices(5, 8)
        assert idx == sorted(idx) and len(set(idx)) == 3 and max(idx) < 8
        assert idx == train.frame_indices(5, 8)  # no hidden state
        seen.add(tuple(idx))
    assert len(seen) > 1
    test = PackedSplit(packed(packed_avdigits), "test", MODALITIES, 3, train=False)
    assert test.frame_indices(0, 8) == test.frame_indices(7, 8) == [1, 4, 6]
    with pytest.raises(ValueError, match="only 8 are packed per clip for 'visual'"):
        PackedSplit(packed(packed_avdigits), "test", MODALITIES, 9, train=False)


def test_loader_gives_the_same_batches_with_and_without_workers(packed_avdigits):
    ds = PackedSplit(packed(packed_avdigits), "train", MODALITIES, 3, train=True, seed=2)
    a = next(iter(make_loader(ds, 16, epoch=1, num_workers=0)))
    b = next(iter(make_loader(ds, 16, epoch=1, num_workers=2)))
    for key in ("audio", "visual"):
        assert torch.equal(a["inputs"][key], b["inputs"][key])
    assert torch.equal(a["label"], b["label"]) and torch.equal(a["index"], b["index"])
    assert a["inputs"]["visual"].dtype == torch.uint8 and a["inputs"]["visual"].shape == (16, 3, 3, 32, 32)
    assert a["inputs"]["audio"].shape == (16, 64, 50)


def test_training_crops_keep_the_protocols_area_share_and_are_reproducible(packed_avdigits):
    """frame_crop_scale reaches the crop: with a share of 1 (and the default ratios, which then never fit) every
    crop is the whole frame, flipped or not; torchvision's default share crops; the same (seed, epoch) crops alike."""
    stored = PackedSplit(packed(packed_avdigits), "train", MODALITIES, 3, train=True, seed=1)
    whole = PackedSplit(
        packed(packed_avdigits),
        "train",
        MODALITIES,
        3,
        train=True,
        seed=1,
        augment="random_resized_crop_flip",
        crop_scale=(1.0, 1.0),
    )
    cropped = PackedSplit(
        packed(packed_avdigits), "train", MODALITIES, 3, train=True, seed=1, augment="random_resized_crop_flip"
    )
    raw, full, some = (ds[list(range(8))]["inputs"]["visual"] for ds in (stored, whole, cropped))
    frames = list(zip(raw.flatten(0, 1), full.flatten(0, 1), some.flatten(0, 1), strict=True))  # (3, S, S) each
    assert all(torch.equal(f, r) or torch.equal(f, r.flip(-1)) for r, f, _ in frames)
    assert not all(torch.equal(c, r) or torch.equal(c, r.flip(-1)) for r, _, c in frames)
    assert torch.equal(some, cropped[list(range(8))]["inputs"]["visual"])


def test_a_method_can_choose_the_epochs_samples(packed_avdigits):
    ds = PackedSplit(packed(packed_avdigits), "train", MODALITIES, 3, train=True, seed=2)
    chosen = np.array([0, 0, 5, 7, 7, 7])
    batches = list(make_loader(ds, 4, epoch=3, indices=chosen))
    got = sorted(torch.cat([b["index"] for b in batches]).tolist())
    positions = sorted(torch.cat([b["position"] for b in batches]).tolist())
    assert got == sorted(chosen.tolist()) and positions == list(range(6))


def test_validation_split_is_disjoint_from_test_and_train(packed_avdigits, tmp_path):
    splits = open_run(tiny_config(packed_avdigits, tmp_path), torch.device("cpu")).splits
    ids = {name: set(splits[name].records["clip_id"].tolist()) for name in ("train", "val", "test")}
    assert ids["val"] and not ids["val"] & ids["test"] and not ids["val"] & ids["train"]
    assert not ids["train"] & ids["test"]


# ---- bad input ------------------------------------------------------------------------------------


def test_missing_or_damaged_packed_data_is_named_before_training(packed_avdigits, tmp_path):
    import shutil

    config = tiny_config(packed_avdigits, tmp_path)
    config["paths"]["packed_dir"] = str(tmp_path / "nowhere")
    with pytest.raises(PackedDataError, match="nowhere/train.npy: packed split not found"):
        train(config)
    copy = tmp_path / "copy"
    shutil.copytree(packed(packed_avdigits), copy)
    data = bytearray((copy / "val.npy").read_bytes())
    data[-100] ^= 0xFF  # same size, one byte altered
    (copy / "val.npy").write_bytes(bytes(data))
    config["paths"]["packed_dir"] = str(copy)
    with pytest.raises(PackedDataError, match="val.npy: sha256 .* differs"):
        train(config)
    assert not (tmp_path / "avdigits").exists() or not any((tmp_path).rglob("checkpoint.pt"))


def test_an_edited_configuration_is_refused(packed_avdigits, tmp_path):
    config = tiny_config(packed_avdigits, tmp_path)
    config["train"]["optimizer"]["lr"] = 0.5  # edited by hand after the plan resolved it: the hash no longer fits
    with pytest.raises(TrainingError, match="hash .* does not match its values"):
        train(config)


# ---- training ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_audio_only_beats_chance_clearly(packed_avdigits, tmp_path):
    # 84 training clips: batches of 16 give the embedded protocol enough steps (about 6 s on 2 cores)
    result = train(
        tiny_config(packed_avdigits, tmp_path, "audio_only", "none", epochs=20, sets=["train.batch_size=16"])
    )
    best = result["test"]["best"]
    # 10 classes: chance is 10 %; at chance, 6 or more right of 24 test clips has probability 0.03, so a run that
    # learned nothing fails this
    assert best["acc"] >= 25.0, best
    assert best["acc_audio"] == best["acc"] and "acc_visual" not in best
    assert 1 <= result["best_epoch"] <= 20
    assert result["flags"] == []  # a run that learned is not flagged at chance
    out = Path(result["config"]["paths"]["run_dir"])
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "history.csv", "checkpoint.pt", "best.pt"}


@pytest.mark.slow
def test_same_seed_gives_identical_results(packed_avdigits, tmp_path):
    first = train(tiny_config(packed_avdigits, tmp_path / "a", seed=1))
    second = train(tiny_config(packed_avdigits, tmp_path / "b", seed=1))
    other = train(tiny_config(packed_avdigits, tmp_path / "c", seed=2))
    assert first["test"] == second["test"]
    assert first["test"] != other["test"]
    metrics = first["test"]["best"]
    for key in (
        "acc",
        "macro_f1",
        "map",
        "acc_audio",
        "acc_visual",
        "probe_audio",
        "probe_visual",
        "acc_zero_audio",
        "acc_zero_visual",
        "acc_noise_audio",
        "acc_noise_visual",
        "acc_fgm",
        "acc_fgm_audio",
        "acc_fgm_visual",
        "acc_pgd",
        "acc_pgd_audio",
        "acc_pgd_visual",
        "val_acc",
    ):
        assert 0.0 <= metrics[key] <= 100.0, key
    assert metrics["shapley_audio"] + metrics["shapley_visual"] == pytest.approx(2 * metrics["acc"] / 100)


def test_a_checkpoint_of_another_configuration_is_refused(packed_avdigits, tmp_path):
    train(tiny_config(packed_avdigits, tmp_path, epochs=1))
    with pytest.raises(TrainingError, match="checkpoint of another configuration.*--restart"):
        train(tiny_config(packed_avdigits, tmp_path, epochs=1, sets=["train.optimizer.lr=0.01"]))
    train(tiny_config(packed_avdigits, tmp_path, epochs=1, sets=["train.optimizer.lr=0.01"]), restart=True)


class NaNAtSecondEpoch(Method):
    def loss(self, model, out, batch, ctx):
        losses = super().loss(model, out, batch, ctx)
        return {"ce": losses["ce"] * float("nan")} if ctx.epoch == 1 else losses


class NaNWeightsAtLastStep(Method):
    def after_backward(self, model, out, batch, ctx):
        if ctx.epoch == 1 and ctx.step == ctx.steps_per_epoch - 1:
            next(iter(model.fusion.parameters())).grad.fill_(float("nan"))


@pytest.fixture
def test_method(monkeypatch):
    def register(name, cls):
        monkeypatch.setitem(METHODS, name, MethodSpec(name, name, __name__, cls.__name__, "a test method"))
        monkeypatch.setattr(sys.modules[__name__], cls.__name__, cls, raising=False)
        return name

    return register


def _nan_config(packed_avdigits, tmp_path, name):
    config = tiny_config(packed_avdigits, tmp_path)
    config["run"]["method"] = name  # a test method's cell: resolved as joint, renamed (same hash rules)
    from bml.plan import digest, hashed_config

    config["hash"] = digest(hashed_config(config))
    return config


@pytest.mark.parametrize(
    "cls, message",
    [
        (NaNAtSecondEpoch, r"loss is not finite \(ce = nan\) at epoch 2, step 1; the last good checkpoint \(epoch 1\)"),
        (
            NaNWeightsAtLastStep,
            r"weights or running statistics are not finite after the optimizer step \(fusion.fc.weight\) "
            r"at epoch 2, step 2",
        ),
    ],
)
def test_a_nan_stops_the_run_with_bmls_message_and_keeps_the_last_good_checkpoint(
    packed_avdigits, tmp_path, test_method, cls, message
):
    config = _nan_config(packed_avdigits, tmp_path, test_method(cls.__name__.lower(), cls))
    with pytest.raises(TrainingError, match=message):
        train(config)
    run = Path(config["paths"]["run_dir"])
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert not (run / "metrics.json").exists()


def test_the_ensemble_combines_the_unimodal_runs(packed_avdigits, tmp_path):
    audio = train(tiny_config(packed_avdigits, tmp_path, "audio_only", "none"))
    with pytest.raises(FileNotFoundError, match="visual_only/seed0/best.pt: the ensemble needs"):
        train(tiny_config(packed_avdigits, tmp_path, "ensemble", "none"))
    visual = train(tiny_config(packed_avdigits, tmp_path, "visual_only", "none"))
    ensemble = train(tiny_config(packed_avdigits, tmp_path, "ensemble", "none"))["test"]["best"]
    assert ensemble["acc_audio"] == audio["test"]["best"]["acc"]
    assert ensemble["acc_visual"] == visual["test"]["best"]["acc"]
    assert ensemble["probe_audio"] == audio["test"]["best"]["probe_audio"]


@pytest.mark.slow
def test_mlflow_run_has_params_metric_history_and_artifacts(packed_avdigits, tmp_path, no_env_tracking):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = train(
        tiny_config(packed_avdigits, tmp_path, epochs=3, tracking={"uri": uri, "artifacts": str(tmp_path / "art")}),
    )
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.optimizer.lr"] == "0.05" and run.data.params["run.method"] == "joint"
    for tag in ("dataset", "protocol", "method", "fusion", "seed", "git_commit", "data_hash", "config_hash"):
        assert run.data.tags[tag], tag
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "val_probe_visual")) == 2  # epochs 2 and 3
    assert run.data.tags["test.best.acc"] == repr(result["test"]["best"]["acc"])  # the summary: a tag
    assert not any(k.startswith("test.") for k in run.data.metrics)  # only the per-epoch series are metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "history.csv", "best.pt"} <= artifacts


# ---- kill and resume --------------------------------------------------------------------------------


def _bml_train(project_params, data_root, results, epochs, extra=()):
    overrides = json.dumps({"data_root": str(data_root), "tracking": {"uri": "none", "artifacts": "a"}})
    return [
        sys.executable,
        "-m",
        "bml.cli",
        "train",
        "--method",
        "joint",
        "--fusion",
        "concat",
        "--seed",
        "0",
        "--threads",
        "1",
        "--params-dir",
        str(project_params),
        "--results-root",
        str(results),
        "--overrides",
        overrides,
        "--set",
        f"train.epochs={epochs}",
        "--set",
        "train.probe_every=3",
        *extra,
    ]


@pytest.fixture
def project_params():
    return REPO / "params"


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(
    project_params, packed_avdigits, tmp_path, no_env_tracking
):
    epochs = 7
    data = packed_avdigits
    whole = subprocess.run(
        _bml_train(project_params, data, tmp_path / "whole", epochs),
        env=bml_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "\r" not in whole.stderr and "it/s" not in whole.stderr  # no progress bars without a terminal

    cut = tmp_path / "cut"
    checkpoint = cut / "avdigits" / "embedded" / "concat" / "joint" / "seed0" / "checkpoint.pt"
    proc = subprocess.Popen(
        _bml_train(project_params, data, cut, epochs),
        env=bml_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=False)["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 2 <= stopped_at < epochs, "the run was not interrupted mid-way"
    assert not (checkpoint.parent / "metrics.json").exists()

    resumed = subprocess.run(
        _bml_train(project_params, data, cut, epochs), env=bml_env(), capture_output=True, text=True, cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {checkpoint.parent} after epoch {stopped_at}" in resumed.stderr

    a = torch.load(tmp_path / "whole" / checkpoint.relative_to(cut), weights_only=False)
    b = torch.load(checkpoint, weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda rows: [{k: v for k, v in r.items() if k not in WALL_TIMES} for r in rows]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    ma = json.loads((tmp_path / "whole" / checkpoint.relative_to(cut).parent / "metrics.json").read_text())
    mb = json.loads((checkpoint.parent / "metrics.json").read_text())
    assert ma["test"] == mb["test"] and ma["best_epoch"] == mb["best_epoch"]
    assert np.isfinite(ma["test"]["best"]["acc"])


@pytest.mark.parametrize("fusion", ["sum", "film", "gated"])
def test_joint_training_runs_with_every_fusion_head(packed_avdigits, tmp_path, fusion):
    best = train(tiny_config(packed_avdigits, tmp_path, "joint", fusion, epochs=1))["test"]["best"]
    assert 0.0 <= best["acc"] <= 100.0 and "probe_visual" in best
    # FiLM and gated heads have no per-modality logits: no per-modality accuracy rather than a made-up one
    assert ("acc_audio" in best) == (fusion == "sum")
