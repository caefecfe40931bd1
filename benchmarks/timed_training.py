"""Shared by the training benchmarks: resolve a cell as the plan does, run bml's own training loop on it, stop
before the untimed final evaluation."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from bml import train as bt
from bml.datasets import load_dataset
from bml.layout import Layout
from bml.plan import load_pipeline, resolve_cell
from bml.results import CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params"
NO_TRACKING = {"uri": "none", "artifacts": "mlartifacts"}  # bml/tracking.py: uri "none" switches MLflow off


def cell_config(
    data_root: str | Path,
    results_root: str | Path,
    method: str,
    fusion: str,
    seed: int = 0,
    sets: tuple[str, ...] = (),
    dataset: str = "avdigits",
    protocol: str = "embedded",
    params_dir: Path = PARAMS,
) -> dict:
    """The resolved configuration of one cell (bml/plan.py: resolve_cell, as `bml train` resolves it), its packed
    data under data_root, its run folder under results_root, tracking off; `sets` are `bml train --set` items."""
    data_root, results_root = str(Path(data_root).resolve()), str(Path(results_root).resolve())
    pipeline = load_pipeline(
        params_dir, {"data_root": data_root, "results_root": results_root, "tracking": NO_TRACKING}
    )
    layout = Layout(data_root, results_root, str(Path(results_root) / "reports"))
    cell = resolve_cell(
        load_dataset(dataset, params_dir, pipeline), protocol, method, fusion, seed, params_dir, pipeline, layout, sets
    )
    return cell.config


class LastEpochDone(Exception):
    """Raised from train()'s log callback after the last epoch, before the (untimed) final test evaluation."""


def train_epochs(config: dict) -> list[dict]:
    """`bml.train.train(config)` on the CPU from scratch in config["paths"]["run_dir"]; returns the history of
    its epochs (checkpoint.pt's, with each epoch's step_time_ms, epoch_end_time_s and epoch_time_s).

    A handler on bml.train's logger raises once the last epoch is logged (after its checkpoint is written), so
    the final test evaluation, never timed, is skipped; nothing in bml is patched. (train() has no `log`
    callback any more: it logs through the logging module.)
    """
    config = copy.deepcopy(config)
    epochs = config["train"]["epochs"]
    last = f"epoch {epochs}/{epochs}:"

    class StopAfterLast(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith(last):
                raise LastEpochDone

    handler, before = StopAfterLast(), bt.log.level
    bt.log.addHandler(handler)
    bt.log.setLevel(logging.INFO)
    try:
        bt.train(config, device="cpu", restart=True)
    except LastEpochDone:
        pass
    finally:
        bt.log.removeHandler(handler)
        bt.log.setLevel(before)
    return torch.load(Path(config["paths"]["run_dir"]) / CHECKPOINT, weights_only=False)["history"]
