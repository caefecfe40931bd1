"""What goes wrong around a run and what the loop does about it, on real files: damaged checkpoints, a full disk
(/dev/full), a broken MLflow store, a diverging run, a run at chance; and the per-epoch test record that no
selection reads."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cell_config
from test_methods_resume import one_torch_thread, run_folder  # noqa: F401 (an autouse fixture)

import bml.job
import bml.train
from bml.checkpoint import Checkpoint, DamagedFile, Parts, save_atomic
from bml.methods.base import StepServices
from bml.results import BEST, CHECKPOINT, FINISHED, HISTORY, WALL_TIMES, read_history
from bml.tracking import store_problem
from bml.train import TrainingError, train

DAMAGES = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: np.random.default_rng(0).bytes(len(data)),
}


def damage(path: Path, how: str) -> None:
    path.write_bytes(DAMAGES[how](path.read_bytes()))


@pytest.mark.parametrize("how", sorted(DAMAGES))
def test_a_damaged_checkpoint_file_is_named_and_moved_aside(tmp_path, how):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    parts = Parts(
        model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1), StepServices(torch.device("cpu")), model
    )
    path = tmp_path / CHECKPOINT
    Checkpoint({"hash": "h"}, "h", "d", epoch=1).save(path, parts)
    assert Checkpoint.load(path, torch.device("cpu")).epoch == 1
    damage(path, how)
    with pytest.raises(DamagedFile, match=f"{path}: damaged checkpoint .*; moved to checkpoint.pt.damaged"):
        Checkpoint.load(path, torch.device("cpu"))
    assert not path.exists() and (tmp_path / "checkpoint.pt.damaged").is_file()


def test_a_run_with_a_damaged_checkpoint_starts_over_and_says_so(packed_avdigits, tmp_path, caplog):
    config = cell_config(packed_avdigits, tmp_path, epochs=1)
    first = train(config)
    checkpoint = run_folder(config) / CHECKPOINT
    damage(checkpoint, "truncated")
    with caplog.at_level(logging.WARNING, logger="bml"):
        again = train(config)
    assert f"{checkpoint}: damaged checkpoint" in caplog.text and "starting over" in caplog.text
    assert (checkpoint.parent / "checkpoint.pt.damaged").is_file()
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1
    assert again["test"] == first["test"]  # started over from the seed: the same run


def test_a_damaged_best_checkpoint_after_training_is_written_again_not_fatal(packed_avdigits, tmp_path, caplog):
    config = cell_config(packed_avdigits, tmp_path, epochs=3)
    first = train(config)
    assert first["best_epoch"] < 3  # the best model is not the last one, so the final evaluation reads best.pt
    folder = run_folder(config)
    # as a job killed in its final evaluation leaves its folder: the run again does only the final evaluation
    (folder / "metrics.json").unlink()
    (folder / FINISHED).unlink()
    damage(folder / BEST, "garbage")
    with caplog.at_level(logging.WARNING, logger="bml"):
        again = train(config)
    assert f"{folder / BEST}: damaged checkpoint" in caplog.text and "writing it again" in caplog.text
    assert again["test"] == first["test"]  # the checkpoint's copy is the same best model
    best, record = (torch.load(folder / name, weights_only=False) for name in (BEST, CHECKPOINT))
    assert best["epoch"] == first["best_epoch"] and (folder / "best.pt.damaged").is_file()
    assert all(torch.equal(best["model"][k], record["best_model"][k]) for k in best["model"])


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_leaves_no_temporary_file_and_one_line_naming_the_file(tmp_path):
    path = tmp_path / CHECKPOINT
    save_atomic({"epoch": 1}, path)
    tmp = tmp_path / f".{CHECKPOINT}.tmp"
    tmp.symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(TrainingError) as err:
        save_atomic({"epoch": 2, "weights": torch.zeros(100_000)}, path)
    assert str(err.value) == f"{path}: disk full (No space left on device); the previous checkpoint.pt is kept"
    assert not tmp.exists() and not tmp.is_symlink()
    assert torch.load(path, weights_only=False) == {"epoch": 1}


def test_a_corrupt_mlflow_store_costs_the_run_nothing(packed_avdigits, tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "mlflow.db"
    store.write_bytes(np.random.default_rng(1).bytes(20_000))
    uri = f"sqlite:///{store}"
    config = cell_config(packed_avdigits, tmp_path, epochs=1, tracking={"uri": uri, "artifacts": str(tmp_path / "a")})
    with caplog.at_level(logging.WARNING, logger="bml"):
        result = train(config)
    assert f"MLflow store {uri}: opening the run failed (DatabaseError: file is not a database)" in caplog.text
    assert result["mlflow_run_id"] is None and (run_folder(config) / "metrics.json").is_file()
    assert result["timings_s"]["tracking"] < 5.0  # found at once, not after MLflow's 32 s of retries


def test_a_truncated_or_locked_store_is_found_before_mlflow_opens_it(tmp_path):
    db = tmp_path / "store.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (name TEXT)")
        con.executemany("INSERT INTO runs VALUES (?)", [("x" * 200,)] * 2000)
    assert store_problem(f"sqlite:///{db}") is None
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another process writing, and not letting go
    assert store_problem(f"sqlite:///{db}") == "OperationalError: database is locked"  # waited for, twice
    locker.close()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(db.read_bytes()[: os.path.getsize(db) // 2])
    assert store_problem(f"sqlite:///{truncated}") == "DatabaseError: database disk image is malformed"


def test_diverging_batchnorm_statistics_stop_the_run(packed_avdigits, tmp_path):
    """At lr 40 the weights stay finite while BatchNorm's running variances overflow: the guard sees buffers."""
    config = cell_config(packed_avdigits, tmp_path, epochs=2, sets=("train.optimizer.lr=40", "train.batch_size=16"))
    with pytest.raises(
        TrainingError, match=r"not finite after the optimizer step \(encoders\.\w+\.cnn\.\d\.1\.running_var"
    ):
        train(config)
    assert not (run_folder(config) / "metrics.json").exists()


def test_a_run_at_chance_is_flagged(packed_avdigits, tmp_path, caplog):
    config = cell_config(packed_avdigits, tmp_path, epochs=1, sets=("train.optimizer.lr=1e-6",))
    with caplog.at_level(logging.WARNING, logger="bml"):
        result = train(config)
    assert result["test"]["last"]["val_acc"] < 15.0  # 10 classes: chance is 10 %
    assert result["flags"] == ["at_chance"] and "is at chance (10.00 for 10 classes)" in caplog.text
    assert json.loads((run_folder(config) / "metrics.json").read_text())["flags"] == ["at_chance"]


def test_test_accuracy_is_recorded_every_epoch_and_never_selects(packed_avdigits, tmp_path, monkeypatch):
    """The same run with its test labels permuted picks the same best epoch and weights: selection never reads
    test. test_by_epoch is in metrics.json, not in history.csv."""
    normal_config = cell_config(packed_avdigits, tmp_path / "normal", epochs=3)
    normal = train(normal_config)
    original = bml.job.open_run

    def permuted_test_labels(config, device):
        run = original(config, device)
        run.splits["test"].labels = np.random.default_rng(7).permutation(run.splits["test"].labels)
        return run

    monkeypatch.setattr(bml.job, "open_run", permuted_test_labels)
    permuted_config = cell_config(packed_avdigits, tmp_path / "permuted", epochs=3)
    permuted = train(permuted_config)
    assert normal["test_by_epoch"]["epoch"] == [1, 2, 3] and len(normal["test_by_epoch"]["acc"]) == 3
    assert normal["test_by_epoch"]["acc"][-1] == normal["test"]["last"]["acc"]
    assert normal["test"] != permuted["test"]  # the permutation reached the test numbers
    assert permuted["best_epoch"] == normal["best_epoch"]

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in WALL_TIMES} for r in rows]

    assert strip(read_history(run_folder(normal_config) / HISTORY)) == strip(
        read_history(run_folder(permuted_config) / HISTORY)
    )
    assert not any(k.startswith("test") for k in read_history(run_folder(normal_config) / HISTORY)[0])
    a, b = (torch.load(run_folder(c) / BEST, weights_only=False)["model"] for c in (normal_config, permuted_config))
    assert all(torch.equal(a[k], b[k]) for k in a)
