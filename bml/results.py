"""The run record, written and read in one place: what `bml train` leaves in a run's folder and what the
tables, figures and report are built from.

A run directory results/<dataset>/<protocol>/<fusion>/<method>/seed<k>/ holds metrics.json (written last by
bml/train.py, so its presence means the run finished) and history.csv (per-epoch numbers; the ensemble has
none). A metrics file that does not parse is not fatal: it is reported with its path and left out, so
one broken run never stops a report of the others.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bml.config import PROJECT_ROOT
from bml.layout import Layout
from bml.methods import method_title

CHECKPOINT, BEST, METRICS, HISTORY = "checkpoint.pt", "best.pt", "metrics.json", "history.csv"
# Written after metrics.json and kept when an engine deletes that file to rerun the cell (bml/train.py, resume)
FINISHED = "finished"
# history columns that differ run to run: wall times, and the GPU's figures where one ran (bml/train.py gpu_figures)
WALL_TIMES = ("epoch_time_s", "step_time_ms", "epoch_end_time_s", "gpu_peak_memory_gb", "gpu_utilisation_pct")


def method_name(method: str) -> str:
    return method_title(method)


def cell_label(method: str, fusion: str) -> str:
    """'OGM-GE (concat)', 'Joint (baseline, concat)'; uni-modal runs have no fusion, so 'Audio only'."""
    name = method_name(method)
    if fusion == "none":
        return name
    return f"{name[:-1]}, {fusion})" if name.endswith(")") else f"{name} ({fusion})"


@dataclass
class Run:
    dataset: str
    protocol: str
    fusion: str
    method: str
    seed: int
    path: Path  # the run directory
    test: dict  # metrics.json "test": {"best": {...}, "last": {...}}
    history: list[dict[str, float]] = field(default_factory=list)  # history.csv rows; numbers, empty cells left out

    @property
    def cell(self) -> tuple[str, str, str, str]:
        return self.dataset, self.protocol, self.fusion, self.method


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def load_runs(results_root: str | Path, only: set[str] | None = None) -> tuple[list[Run], list[str]]:
    """Every finished run under results_root (or only those whose run directory is in `only`: the plan's cells),
    sorted; and one line per metrics file that could not be read."""
    runs, problems = [], []
    for path in sorted(Path(results_root).glob(f"{Layout().run_glob}/{METRICS}")):
        if only is not None and str(path.parent) not in only:
            continue
        try:
            metrics = json.loads(path.read_text())
            r = metrics["run"]
            run = Run(
                r["dataset"],
                r["protocol"],
                r["fusion"],
                r["method"],
                int(r["seed"]),
                path.parent,
                metrics["test"],
                read_history(path.parent / HISTORY),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            problems.append(f"{path}: unreadable metrics file ({type(err).__name__}: {err}); run left out")
            continue
        runs.append(run)
    return runs, problems


def by_seed(runs: list[Run], cell: tuple[str, str, str, str], key: str, which: str = "best") -> dict[int, float]:
    """{seed: value} of one metric for one (dataset, protocol, fusion, method) cell; runs lacking it are left out."""
    return {r.seed: r.test[which][key] for r in runs if r.cell == cell and key in r.test.get(which, {})}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_history(run_dir: Path, history: list[dict[str, float]]) -> None:
    """history.csv: one row per epoch, every column any epoch has (empty where an epoch lacks it)."""
    if not history:
        return
    fields = list(dict.fromkeys(k for row in history for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    _write_atomic(run_dir / HISTORY, text.getvalue())


def write_metrics(
    run_dir: Path,
    config: dict,
    data_hash: str,
    git_commit: str,
    run_id: str | None,
    best_epoch: int | None,
    final: dict,
    timings: dict[str, float],
    flags: list[str],
    test_by_epoch: dict[str, list],
    runtime: dict | None = None,
) -> dict[str, Any]:
    """metrics.json, written last: its presence means the run finished.

    `flags`: what is wrong with a run that finished (["at_chance"]: its final validation accuracy is at chance).
    `test_by_epoch`: {"epoch": [1, 2, ...], "acc": [...]}, the test accuracy after every epoch, the papers'
    selection recorded for comparison only: no selection, early stopping or checkpoint choice reads it, and it
    is not in history.csv (which selection and the plots read)."""
    result = {
        "run": config["run"],
        "config_hash": config["hash"],
        "data_hash": data_hash,
        "git_commit": git_commit,
        "mlflow_run_id": run_id,
        "epochs": config["train"]["epochs"],
        "best_epoch": best_epoch,
        "selection": "best validation accuracy (val split carved from train; test never used for selection)",
        "test": final,
        "flags": flags,
        "test_by_epoch": test_by_epoch,
        "timings_s": timings,
        "runtime": runtime or {},  # the CPU, kernels, threads and versions it ran with (bml/runtime.py)
        "config": config,
    }
    _write_atomic(run_dir / METRICS, json.dumps(result, indent=2) + "\n")
    return result


def code_version() -> str:
    """The project's git commit, with -dirty when tracked files differ from it; "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
