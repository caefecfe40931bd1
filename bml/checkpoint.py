"""Checkpoints and random state: what lets a killed run resume and end bit-identical (on the CPU).

A checkpoint (`Checkpoint`) holds the model, optimizer, scheduler, step services (the fp16 scaler), the
method's state, every RNG state, the history so far, the best epoch and a copy of its weights, the MLflow run
and the hashes of the configuration and data it belongs to. It is written to a temporary file and renamed, so
a kill never leaves half a file; a write that fails (a full disk) removes the temporary file and names the
file and the OS error; a file that does not load is named and moved aside (`<name>.damaged`).
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingError(RuntimeError):
    """A run that cannot go on (a NaN, a checkpoint of another configuration, a full disk); names the file."""


class DamagedFile(TrainingError):
    """A checkpoint file that does not load (truncated, empty, garbage); `moved_to` is where it went."""

    def __init__(self, message: str, moved_to: Path) -> None:
        super().__init__(message)
        self.moved_to = moved_to


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename. A failed write (a full disk) leaves no
    temporary file and raises TrainingError naming `path` and the OS error; the previous file is kept."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:  # a Python file: a failed write raises the OS error, not torch's zip error
            torch.save(obj, handle)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        reason = "disk full" if err.errno == errno.ENOSPC else "write failed"
        raise TrainingError(f"{path}: {reason} ({err.strerror or err}); the previous {path.name} is kept") from None


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """A saved dict; a file that does not load is moved aside to <name>.damaged and DamagedFile names both."""
    try:
        found = torch.load(path, map_location=device, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated, empty or garbage: zip, pickle, EOF or value errors, all the same here
        raise damaged(path, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}") from None
    if not isinstance(found, dict):
        raise damaged(path, f"it holds a {type(found).__name__}, not a dict")
    return found


def damaged(path: Path, why: str) -> DamagedFile:
    """Move `path` aside to <name>.damaged (so no rerun trips on it again) and say so."""
    aside = path.with_name(f"{path.name}.damaged")
    os.replace(path, aside)
    return DamagedFile(f"{path}: damaged checkpoint ({why}); moved to {aside.name}", aside)


@contextmanager
def kept_rng() -> Iterator[None]:
    """Every RNG state as it was before the block: what runs inside leaves the random streams alone."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


@dataclass
class Parts:
    """What trains and what a checkpoint restores: each has state_dict() and load_state_dict()."""

    model: Any
    optimizer: Any
    scheduler: Any
    services: Any  # bml/methods/base.py: StepServices (the fp16 scaler)
    method: Any


@dataclass
class Checkpoint:
    """What checkpoint.pt holds after each epoch: the run's progress, and (in `states`) the parts' states and
    every RNG state as they were when it was saved, so a resumed run continues exactly."""

    config: dict
    config_hash: str
    data_hash: str
    epoch: int = 0  # epochs done
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict | None = None  # {"epoch", "val_acc"} of the best validation accuracy so far
    best_model: dict | None = None  # that epoch's weights, on the CPU: best.pt's content, kept should best.pt be lost
    test_by_epoch: dict = field(default_factory=lambda: {"epoch": [], "acc": []})  # recorded, never selected on
    mlflow_run_id: str | None = None
    states: dict = field(default_factory=dict)  # model, optimizer, scheduler, services, method, rng

    @classmethod
    def empty(cls, config: dict, data_hash: str) -> Checkpoint:
        return cls(config, config["hash"], data_hash)

    def save(self, path: Path, parts: Parts) -> None:
        """Flat, as older tools read it: checkpoint["model"], ["optimizer"], ["history"], ["epoch"], ..."""
        self.states = {f.name: getattr(parts, f.name).state_dict() for f in fields(parts)} | {"rng": rng_state()}
        save_atomic({f.name: getattr(self, f.name) for f in fields(self) if f.name != "states"} | self.states, path)

    def restore(self, parts: Parts) -> None:
        for f in fields(parts):
            getattr(parts, f.name).load_state_dict(self.states[f.name])
        set_rng_state(self.states["rng"])

    @classmethod
    def load(cls, path: Path, device: torch.device) -> Checkpoint:
        found = load(path, device)
        progress = [f.name for f in fields(cls) if f.name != "states"]
        states = [f.name for f in fields(Parts)] + ["rng"]
        missing = [k for k in progress + states if k not in found]
        if missing:  # an older or foreign layout: as useless as a damaged file
            raise damaged(path, f"not of this bml version: no {missing[0]}")
        record = cls(**{k: found[k] for k in progress if k in found})
        record.states = {k: found[k] for k in states}
        return record


def load_required(folder: Path, who: str, needed_by: str, seed: int) -> dict[str, Any]:
    """The best-on-validation checkpoint of a run another one reads (the ensemble's members, I2M2's experts); a
    FileNotFoundError naming the file and the run to train first when it is missing."""
    path = Path(folder) / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: {needed_by} needs the trained {who} run of seed {seed}; train it first (the plan makes it a "
            f"dependency of this cell: it must be in the same matrix block)"
        )
    return torch.load(path, map_location="cpu", weights_only=False)
