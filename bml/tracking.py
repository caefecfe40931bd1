"""Experiment tracking: MLflow with a sqlite store, so `mlflow ui --backend-store-uri sqlite:///mlflow.db`
shows every run's parameters, per-epoch metrics (curves), final test numbers (tags: a table, see
`Tracker.log_summary`) and artifacts without a server running during training.

The tables never read MLflow: each run also writes results/.../metrics.json (bml/train.py).
Several training jobs may start at once (Snakemake); creating the database and the experiment happens
under a file lock, because MLflow's schema migration is not safe to run twice concurrently.

Tracking never costs a run its training: a sqlite store that is corrupt, truncated or locked is found by one
quick read before MLflow opens it (MLflow retries a broken store for 32 s, then raises), and any tracking call
that fails is retried once, then tracking is off for the rest of the run, with one warning naming the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bml.config import PROJECT_ROOT

log = logging.getLogger(__name__)
LOCK_WAIT_S = 1.0  # how long the store check waits for another process's lock, each of two tries
RETRY_AFTER_S = 1.0  # pause before the one retry of a failed tracking call


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"optimizer": {"lr": 0.05}}} -> {"train.optimizer.lr": 0.05}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numbers(tree: dict[str, Any]) -> dict[str, float]:
    """The numeric leaves of `tree`, flattened, as floats (a flag or a list is not a metric)."""
    return {k: float(v) for k, v in flatten(tree).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


SYSTEM_METRICS_EVERY_S = 5


def remote_url(root: Path) -> str | None:
    """The URL of the git remote of `root` (origin, else the first one), with any user and password taken out
    (an https remote may carry a token); None outside git or without a remote."""
    try:
        names = subprocess.run(["git", "remote"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
        if not names:
            return None
        name = "origin" if "origin" in names else names[0]
        url = subprocess.run(
            ["git", "remote", "get-url", name], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:  # scheme://user:secret@host/path -> scheme://host/path
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url or None


def source_tags(tags: dict[str, str], root: Path = PROJECT_ROOT) -> dict[str, str]:
    """MLflow's own tags for where a run came from, which fill the UI's Source, Version and User columns. The
    commit keeps code_version()'s -dirty: a run from a modified working tree is not that commit's code. The
    repository URL is the git remote's, left out where there is none."""
    import getpass

    found = {
        "mlflow.source.name": "bml train",
        "mlflow.source.type": "JOB" if os.environ.get("SLURM_JOB_ID") else "LOCAL",
        "mlflow.source.git.commit": tags.get("git_commit", "unknown"),
        "mlflow.user": getpass.getuser(),
    }
    url = remote_url(root)
    if url:
        found["mlflow.source.git.repoURL"] = url
    return found


class Tracker:
    """One MLflow run: opened (or reopened, on resume) by run_id, closed with a status."""

    def __init__(
        self, uri: str, artifacts: str, experiment: str, run_name: str, tags: dict[str, str], run_id: str | None = None
    ) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        db = sqlite_path(uri)
        lock = (db.parent if db else Path(".")) / ".mlflow.lock"
        with _lock(lock):  # first use creates and migrates the database: one process at a time
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                location = Path(artifacts).resolve().as_uri()
                experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                experiment_id = found.experiment_id
            resumed = run_id is not None and self._exists(run_id)
            if resumed:
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
            else:
                run = self.client.create_run(experiment_id, run_name=run_name, tags={**source_tags(tags), **tags})
                self.run_id = run.info.run_id
        self._mlflow = mlflow
        self.monitor = None
        try:  # CPU, memory (and GPU where there is one) every few seconds, a resumed run continuing its series
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.monitor = SystemMetricsMonitor(
                self.run_id, sampling_interval=SYSTEM_METRICS_EVERY_S, resume_logging=resumed, tracking_uri=uri
            )
            self.monitor.start()
        except Exception as err:  # psutil missing or the monitor refusing: the run goes on without it
            log.warning(f"no MLflow system metrics ({type(err).__name__}: {err})")

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # MlflowException: the database was reset since the checkpoint was written
            return False

    def log_params(self, config: dict[str, Any]) -> None:
        """Every value the run depends on (run, data, train, method, eval sections), flattened."""
        from mlflow.entities import Param

        params = {k: v for k, v in config.items() if k in ("run", "data", "train", "method", "eval")}
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)) for k, v in flatten(params).items() if k not in existing]
        for i in range(0, len(new), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """One point of each per-epoch series (a curve in the UI)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in numbers(metrics).items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def log_summary(self, values: dict[str, Any]) -> None:
        """The run's final numbers (its test metrics) as tags, one table on the run's Overview tab and columns
        of the runs table: MLflow's run page draws a chart for every metric outside system/, a value logged
        once included (one bar), so final values logged as metrics bury the curves under single-bar charts.
        A tag is a string (searches compare it as text); the value is the float's exact repr, as in
        metrics.json, which with bml's report is where runs are compared by number."""
        from mlflow.entities import RunTag

        batch = [RunTag(k, repr(v)) for k, v in numbers(values).items()]
        for i in range(0, len(batch), 100):  # MLflow's batch limit for tags
            self.client.log_batch(self.run_id, tags=batch[i : i + 100])

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def log_run_files(self, run_dir: Path) -> None:
        """A finished run's record: metrics.json, history.csv and the best checkpoint."""
        for name in ("metrics.json", "history.csv", "best.pt"):
            if (run_dir / name).is_file():
                self.log_artifact(run_dir / name)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def end(self, status: str = "FINISHED") -> None:
        if self.monitor is not None:
            self.monitor.finish()
        self.client.set_terminated(self.run_id, status=status)


class NoTracker:
    """Tracking switched off (tracking.uri: none): every call does nothing, so the loop needs no ifs."""

    run_id = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_summary(self, values: dict[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path) -> None: ...
    def log_run_files(self, run_dir: Path) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


def store_problem(uri: str) -> str | None:
    """Why a sqlite store cannot be read (corrupt, truncated, locked), or None; a lock is waited out once more."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return None  # not sqlite, or a store MLflow will create
    for attempt in (1, 2):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=LOCK_WAIT_S)) as con:
                found = con.execute("PRAGMA quick_check(1)").fetchone()[0]
            return None if found == "ok" else f"damaged database ({found})"
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == 2:
                return f"{type(err).__name__}: {err}"
        except sqlite3.Error as err:
            return f"{type(err).__name__}: {err}"
    return None


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or ['no detail'])[0]}"


class GuardedTracker:
    """A Tracker whose failures cost the run nothing: a failed call is retried once; if it fails again, one
    warning names the store and the rest of the run goes on untracked (its results are in metrics.json)."""

    def __init__(self, uri: str, tracker: Tracker | NoTracker) -> None:
        self.uri, self.tracker, self.run_id = uri, tracker, tracker.run_id

    @classmethod
    def open(cls, uri: str, make: Callable[[], Tracker]) -> GuardedTracker:
        problem = store_problem(uri)
        guard = cls(uri, NoTracker())
        if problem:
            guard.off("opening the run", problem)
            return guard
        guard.tracker = guard.call("opening the run", make, fallback=NoTracker())
        guard.run_id = guard.tracker.run_id
        return guard

    def call(self, what: str, fn: Callable, *args, fallback: Any = None) -> Any:
        for attempt in (1, 2):
            try:
                return fn(*args)
            except Exception as err:  # sqlalchemy, MLflow or OS errors: all end in the same warning
                if attempt == 2:
                    self.off(what, _first_line(err))
                    return fallback
                time.sleep(RETRY_AFTER_S)

    def off(self, what: str, problem: str) -> None:
        log.warning(f"MLflow store {self.uri}: {what} failed ({problem}); the run goes on without tracking")
        self.tracker = NoTracker()

    def log_params(self, config: dict[str, Any]) -> None:
        self.call("logging parameters", self.tracker.log_params, config)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.call("logging metrics", self.tracker.log_metrics, metrics, step)

    def log_summary(self, values: dict[str, Any]) -> None:
        self.call("logging the summary", self.tracker.log_summary, values)

    def log_run_files(self, run_dir: Path) -> None:
        self.call("logging the run's files", self.tracker.log_run_files, run_dir)

    def end(self, status: str = "FINISHED") -> None:
        self.call("closing the run", self.tracker.end, status)


def open_tracker(
    tracking: dict, run: dict, tags: dict[str, str], run_id: str | None = None
) -> GuardedTracker | NoTracker:
    """The MLflow run of one cell (experiment <dataset>/<protocol>, run <method>-<fusion>-seed<k>), reopened by
    run_id on resume; MLFLOW_TRACKING_URI overrides the configured store; uri "none" switches tracking off."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", tracking["uri"])
    if uri in ("none", ""):
        return NoTracker()
    experiment, name = f"{run['dataset']}/{run['protocol']}", f"{run['method']}-{run['fusion']}-seed{run['seed']}"
    return GuardedTracker.open(uri, lambda: Tracker(uri, tracking["artifacts"], experiment, name, tags, run_id))
