"""Finished runs read back from disk: what the tables, figures and report are built from.

A run directory results/<dataset>/<protocol>/<fusion>/<method>/seed<k>/ holds metrics.json (written last by
bml/train.py, so its presence means the run finished) and history.csv (per-epoch numbers; the ensemble has
none). A metrics file that does not parse is not fatal: it is reported with its path and left out, so
one broken run never stops a report of the others.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

METHOD_NAMES = {"audio_only": "Audio only", "visual_only": "Visual only", "ensemble": "Uni-modal ensemble",
                "joint": "Joint (baseline)", "ogm": "OGM", "ogm_ge": "OGM-GE", "opm": "OPM", "mmpareto": "MMPareto",
                "relearning": "Re-learning", "unimodal_1": "Uni-modal 1", "unimodal_2": "Uni-modal 2", "pmr": "PMR",
                "agm": "AGM", "mla": "MLA", "greedy": "Greedy", "modality_valuation": "Modality valuation"}


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


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


def load_runs(results_root: str | Path) -> tuple[list[Run], list[str]]:
    """Every finished run under results_root, sorted; and one line per metrics file that could not be read."""
    runs, problems = [], []
    for path in sorted(Path(results_root).glob("*/*/*/*/seed*/metrics.json")):
        try:
            metrics = json.loads(path.read_text())
            r = metrics["run"]
            run = Run(r["dataset"], r["protocol"], r["fusion"], r["method"], int(r["seed"]), path.parent,
                      metrics["test"], read_history(path.parent / "history.csv"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            problems.append(f"{path}: unreadable metrics file ({type(err).__name__}: {err}); run left out")
            continue
        runs.append(run)
    return runs, problems


def by_seed(runs: list[Run], cell: tuple[str, str, str, str], key: str, which: str = "best") -> dict[int, float]:
    """{seed: value} of one metric for one (dataset, protocol, fusion, method) cell; runs lacking it are left out."""
    return {r.seed: r.test[which][key] for r in runs if r.cell == cell and key in r.test.get(which, {})}
