"""The training core on real packed avdigits: the loop, evaluation, MLflow, checkpoints and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO, bml_env

from bml.config import ConfigError
from bml.data.loader import PackedSplit, epoch_order, make_loader
from bml.methods import METHODS, Method
from bml.train import WALL_TIMES, TrainingError, config_hash, load_splits, resolve_config, run_dir, train

QUIET = lambda _msg: None  # noqa: E731


def tiny_config(data_root, results, method="joint", fusion="concat", seed=0, epochs=3, tracking="none", sets=()):
    config = resolve_config("avdigits", "embedded", method, fusion, seed,
                            [f"train.epochs={epochs}", "train.probe_every=2", *sets])
    config["data"]["packed_dir"] = str(data_root / "avdigits" / "packed")
    config["paths"]["results_root"] = str(results)
    config["tracking"] = {"uri": tracking, "artifacts": str(results / "mlartifacts")}
    return config


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
    packed = packed_avdigits / "avdigits" / "packed"
    train = PackedSplit(packed, "train", 3, train=True, seed=0)
    seen = set()
    for epoch in range(6):
        train.set_epoch(epoch)
        idx = train.frame_indices(5)
        assert idx == sorted(idx) and len(set(idx)) == 3 and max(idx) < 8
        assert idx == train.frame_indices(5)  # no hidden state
        seen.add(tuple(idx))
    assert len(seen) > 1
    test = PackedSplit(packed, "test", 3, train=False)
    assert test.frame_indices(0) == test.frame_indices(7) == [1, 4, 6]
    with pytest.raises(ValueError, match="only 8 are packed"):
        PackedSplit(packed, "test", 9, train=False)


def test_loader_gives_the_same_batches_with_and_without_workers(packed_avdigits):
    ds = PackedSplit(packed_avdigits / "avdigits" / "packed", "train", 3, train=True, seed=2)
    a = next(iter(make_loader(ds, 16, epoch=1, num_workers=0)))
    b = next(iter(make_loader(ds, 16, epoch=1, num_workers=2)))
    for key in ("audio", "frames", "label"):
        assert torch.equal(a[key], b[key])
    assert a["frames"].dtype == torch.uint8 and a["frames"].shape == (16, 3, 3, 64, 64)
    assert a["audio"].shape == (16, 64, 100)


def test_validation_split_is_disjoint_from_test_and_train(packed_avdigits, tmp_path):
    splits = load_splits(tiny_config(packed_avdigits, tmp_path))
    ids = {name: set(splits[name].records["clip_id"].tolist()) for name in ("train", "val", "test")}
    assert ids["val"] and not ids["val"] & ids["test"] and not ids["val"] & ids["train"]
    assert not ids["train"] & ids["test"]


# ---- configuration and bad input --------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (("avdigits", "nope", "joint", "concat"), "unknown protocol 'nope'; choose one of"),
    (("avdigits", "embedded", "magic", "concat"), "unknown method 'magic'; choose one of"),
    (("avdigits", "embedded", "joint", "bilinear"), "unknown fusion 'bilinear'; choose one of"),
    (("avdigits", "embedded", "audio_only", "concat"), "method 'audio_only' works with fusion ['none']"),
    (("avdigits", "embedded", "joint", "none"), "method 'joint' works with fusion"),
])
def test_bad_names_are_refused_with_the_choices(args, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve_config(*args, seed=0)


def test_bad_overrides_are_refused():
    with pytest.raises(ConfigError, match="unknown key 'epoch'; choose one of"):
        resolve_config("avdigits", "embedded", "joint", "concat", 0, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="keys start with train., method. or eval."):
        resolve_config("avdigits", "embedded", "joint", "concat", 0, ["epochs=3"])
    with pytest.raises(ConfigError, match="optimizer.name"):
        resolve_config("avdigits", "embedded", "joint", "concat", 0, ["train.optimizer.name=lamb"])


def test_missing_features_and_wrong_audio_preset_are_named(packed_avdigits, tmp_path):
    config = tiny_config(packed_avdigits, tmp_path)
    config["data"]["packed_dir"] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere/train.npy"):
        train(config, log=QUIET)
    config = tiny_config(packed_avdigits, tmp_path, sets=["train.audio_preset=ogm_cremad"])
    with pytest.raises(ConfigError, match="expects audio preset 'ogm_cremad'"):
        train(config, log=QUIET)


def test_config_hash_ignores_speed_settings_only():
    base = resolve_config("avdigits", "embedded", "joint", "concat", 0)
    assert config_hash(base) == config_hash(resolve_config("avdigits", "embedded", "joint", "concat", 0,
                                                           ["train.num_workers=4"]))
    assert config_hash(base) != config_hash(resolve_config("avdigits", "embedded", "joint", "concat", 1))
    assert config_hash(base) != config_hash(resolve_config("avdigits", "embedded", "joint", "concat", 0,
                                                           ["train.optimizer.lr=0.01"]))


# ---- training ---------------------------------------------------------------------------------------


def test_audio_only_beats_chance_clearly(packed_avdigits, tmp_path):
    # 84 training clips: batches of 16 give the embedded protocol enough steps (about 6 s on 2 cores)
    result = train(tiny_config(packed_avdigits, tmp_path, "audio_only", "none", epochs=20,
                               sets=["train.batch_size=16"]), log=QUIET)
    best = result["test"]["best"]
    assert best["acc"] >= 40.0, best  # 10 classes: chance is 10 %; 24 test clips
    assert best["acc_audio"] == best["acc"] and "acc_visual" not in best
    assert 1 <= result["best_epoch"] <= 20
    out = run_dir(result["config"])
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "history.csv", "checkpoint.pt", "best.pt"}


def test_same_seed_gives_identical_results(packed_avdigits, tmp_path):
    first = train(tiny_config(packed_avdigits, tmp_path / "a", seed=1), log=QUIET)
    second = train(tiny_config(packed_avdigits, tmp_path / "b", seed=1), log=QUIET)
    other = train(tiny_config(packed_avdigits, tmp_path / "c", seed=2), log=QUIET)
    assert first["test"] == second["test"]
    assert first["test"] != other["test"]
    metrics = first["test"]["best"]
    for key in ("acc", "macro_f1", "map", "acc_audio", "acc_visual", "probe_audio", "probe_visual",
                "acc_zero_audio", "acc_zero_visual", "acc_noise_audio", "acc_noise_visual", "val_acc"):
        assert 0.0 <= metrics[key] <= 100.0, key


def test_a_checkpoint_of_another_configuration_is_refused(packed_avdigits, tmp_path):
    train(tiny_config(packed_avdigits, tmp_path, epochs=1), log=QUIET)
    with pytest.raises(TrainingError, match="checkpoint of another configuration.*--restart"):
        train(tiny_config(packed_avdigits, tmp_path, epochs=1, sets=["train.optimizer.lr=0.01"]), log=QUIET)
    train(tiny_config(packed_avdigits, tmp_path, epochs=1, sets=["train.optimizer.lr=0.01"]), restart=True,
          log=QUIET)


class NaNAtSecondEpoch(Method):
    name = "nan_test"

    def loss(self, model, out, batch, state):
        losses = super().loss(model, out, batch, state)
        return {"ce": losses["ce"] * float("nan")} if state.epoch == 1 else losses


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(packed_avdigits, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "nan_test", NaNAtSecondEpoch)
    config = tiny_config(packed_avdigits, tmp_path, "nan_test", "concat")
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 2.*last good checkpoint \(epoch 1\)"):
        train(config, log=QUIET)
    checkpoint = torch.load(run_dir(config) / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert not (run_dir(config) / "metrics.json").exists()


def test_the_ensemble_combines_the_unimodal_runs(packed_avdigits, tmp_path):
    audio = train(tiny_config(packed_avdigits, tmp_path, "audio_only", "none"), log=QUIET)
    with pytest.raises(TrainingError, match="visual_only/seed0/best.pt: the ensemble needs"):
        train(tiny_config(packed_avdigits, tmp_path, "ensemble", "none"), log=QUIET)
    visual = train(tiny_config(packed_avdigits, tmp_path, "visual_only", "none"), log=QUIET)
    ensemble = train(tiny_config(packed_avdigits, tmp_path, "ensemble", "none"), log=QUIET)["test"]["best"]
    assert ensemble["acc_audio"] == audio["test"]["best"]["acc"]
    assert ensemble["acc_visual"] == visual["test"]["best"]["acc"]
    assert ensemble["probe_audio"] == audio["test"]["best"]["probe_audio"]


def test_mlflow_run_has_params_metric_history_and_artifacts(packed_avdigits, tmp_path, no_env_tracking):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = train(tiny_config(packed_avdigits, tmp_path, epochs=3, tracking=uri), log=QUIET)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.optimizer.lr"] == "0.05" and run.data.params["run.method"] == "joint"
    for tag in ("dataset", "protocol", "method", "fusion", "seed", "git_commit", "data_hash", "config_hash"):
        assert run.data.tags[tag], tag
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "val_probe_visual")) == 2  # epochs 2 and 3
    assert run.data.metrics["test.best.acc"] == pytest.approx(result["test"]["best"]["acc"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "history.csv", "best.pt"} <= artifacts


# ---- kill and resume --------------------------------------------------------------------------------


def _bml_train(project_params, data_root, results, epochs, extra=()):
    return [sys.executable, "-m", "bml.cli", "train", "--method", "joint", "--fusion", "concat", "--seed", "0",
            "--threads", "1", "--params-dir", str(project_params), "--results-root", str(results),
            "--set", f"train.epochs={epochs}", "--set", "train.probe_every=3", *extra]


@pytest.fixture
def project_params(packed_avdigits, tmp_path):
    """A params/ folder whose data_root is the packed test data and with tracking off."""
    import shutil

    import yaml

    params = tmp_path / "params"
    shutil.copytree(REPO / "params", params)
    pipeline = yaml.safe_load((params / "params.yaml").read_text())
    pipeline["data_root"] = str(packed_avdigits)
    pipeline["tracking"]["uri"] = "none"
    (params / "params.yaml").write_text(yaml.safe_dump(pipeline))
    return params


def test_killed_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(project_params, tmp_path,
                                                                          no_env_tracking):
    epochs = 7
    whole = subprocess.run(_bml_train(project_params, None, tmp_path / "whole", epochs), env=bml_env(),
                           capture_output=True, text=True, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "\r" not in whole.stderr and "it/s" not in whole.stderr  # no progress bars without a terminal

    cut = tmp_path / "cut"
    checkpoint = cut / "avdigits" / "embedded" / "concat" / "joint" / "seed0" / "checkpoint.pt"
    proc = subprocess.Popen(_bml_train(project_params, None, cut, epochs), env=bml_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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

    resumed = subprocess.run(_bml_train(project_params, None, cut, epochs), env=bml_env(), capture_output=True,
                             text=True, cwd=tmp_path)
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
    best = train(tiny_config(packed_avdigits, tmp_path, "joint", fusion, epochs=1), log=QUIET)["test"]["best"]
    assert 0.0 <= best["acc"] <= 100.0 and "probe_visual" in best
    # FiLM and gated heads have no uni-modal logits: no per-modality accuracy rather than a made-up one
    assert ("acc_audio" in best) == (fusion == "sum")
