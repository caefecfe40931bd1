"""MLflow tracking: source tags, system metrics, and concurrent writers that lose nothing (real sqlite store)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import bml_env

WRITER = """
import sys
from bml.tracking import open_tracker
k = int(sys.argv[2])
run = {"dataset": "d", "protocol": "p", "method": "m", "fusion": "f", "seed": k}
tracker = open_tracker({"uri": sys.argv[1], "artifacts": sys.argv[3]}, run, {"git_commit": "abc"})
import time
for step in range(1, 21):
    tracker.log_metrics({"loss": 1.0 / step, "acc": float(step), "nested": {"x": float(k)}}, step)
    time.sleep(0.3)  # a run long enough for the system-metrics monitor to sample it (every 5 s)
tracker.end()
"""


@pytest.mark.slow
def test_eight_concurrent_writers_lose_no_run_and_no_metric(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in bml_env().items() if k != "MLFLOW_TRACKING_URI"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, uri, str(k), str(tmp_path / "art")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(8)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("d/p").experiment_id])
    assert len(runs) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.info.run_name for r in runs) == sorted(f"m-f-seed{k}" for k in range(8))
    for run in runs:
        for key in ("loss", "acc", "nested.x"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(1, 21)), key
        assert run.data.tags["mlflow.source.name"] == "bml train"
        assert run.data.tags["mlflow.source.git.commit"] == "abc"
        assert any(k.startswith("system/") for k in run.data.metrics)  # system metrics, sampled during the run


def test_a_failing_tracking_call_is_retried_once_then_tracking_goes_off_with_one_warning(caplog):
    import logging

    from bml.tracking import GuardedTracker, NoTracker

    guard = GuardedTracker("sqlite:///somewhere/mlflow.db", NoTracker())
    tries = []

    def locked_once() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise OSError("database is locked")
        return "logged"

    with caplog.at_level(logging.WARNING, logger="bml"):
        assert guard.call("logging metrics", locked_once) == "logged" and len(tries) == 2
        assert not caplog.records  # a transient failure, retried: nothing to say

        def broken() -> None:
            tries.append(1)
            raise ValueError("file is not a database\nand more lines")

        assert guard.call("logging metrics", broken, fallback="none") == "none" and len(tries) == 4
    assert [r.getMessage() for r in caplog.records] == [
        "MLflow store sqlite:///somewhere/mlflow.db: logging metrics failed (ValueError: file is not a database); "
        "the run goes on without tracking"
    ]
    assert isinstance(guard.tracker, NoTracker)


def _git(root, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_the_source_tags_keep_dirty_and_name_the_real_remote_without_its_credentials(tmp_path):
    from bml.tracking import source_tags

    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    tags = source_tags({"git_commit": "abc123-dirty"}, root=outside)
    assert tags["mlflow.source.git.commit"] == "abc123-dirty"  # a modified working tree says so
    assert "mlflow.source.git.repoURL" not in tags  # no git, no URL: nothing made up

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    assert "mlflow.source.git.repoURL" not in source_tags({}, root=repo)  # a repository without a remote
    _git(repo, "remote", "add", "upstream", "https://someone:s3cret@example.org/lab/bml.git")
    assert source_tags({}, root=repo)["mlflow.source.git.repoURL"] == "https://example.org/lab/bml.git"
    _git(repo, "remote", "add", "origin", "git@example.org:lab/bml.git")
    assert source_tags({}, root=repo)["mlflow.source.git.repoURL"] == "git@example.org:lab/bml.git"


def test_final_numbers_are_tags_and_only_the_epochs_are_metric_series(tmp_path, monkeypatch):
    """The run page charts every metric, one logged once included: the final test numbers are tags instead."""
    from mlflow.tracking import MlflowClient

    from bml.tracking import open_tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = {"dataset": "d", "protocol": "p", "method": "m", "fusion": "f", "seed": 0}
    tracker = open_tracker({"uri": uri, "artifacts": str(tmp_path / "art")}, run, {"git_commit": "abc-dirty"})
    for epoch in (1, 2, 3):
        tracker.log_metrics({"val_acc": 10.0 * epoch, "train_loss": 1.0 / epoch}, epoch)
    final = {"acc": 81.25, "probe_audio.unimodal": 1 / 3, "n": 7, "at_chance": False, "per_class": [1.0]}
    tracker.log_summary({"test": {"best": final, "last": {**final, "acc": 80.0}}})
    tracker.end()

    client = MlflowClient(tracking_uri=uri)
    found = client.get_run(tracker.run_id)
    assert {k for k in found.data.metrics if not k.startswith("system/")} == {"val_acc", "train_loss"}
    assert [m.step for m in client.get_metric_history(tracker.run_id, "val_acc")] == [1, 2, 3]
    summary = {k: v for k, v in found.data.tags.items() if k.startswith("test.")}
    assert summary == {
        "test.best.acc": "81.25",
        "test.best.probe_audio.unimodal": repr(1 / 3),  # the exact float, as metrics.json has it
        "test.best.n": "7.0",
        "test.last.acc": "80.0",
        "test.last.probe_audio.unimodal": repr(1 / 3),
        "test.last.n": "7.0",
    }
    assert found.data.tags["mlflow.source.git.commit"] == "abc-dirty"
