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
