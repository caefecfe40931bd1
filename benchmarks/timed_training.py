"""Shared by the training benchmarks: run bml's own training loop, stop before the untimed final evaluation."""

from __future__ import annotations

import copy

import torch

from bml import train as bt


class LastEpochDone(Exception):
    """Raised from train()'s log callback after the last epoch, before the (untimed) final test evaluation."""


def train_epochs(config: dict, root: str) -> list[dict]:
    """`bml.train.train(config)` on the CPU with results under `root`; returns the history of its epochs.

    The log callback raises once the last epoch is logged, so the final test evaluation (never timed) is
    skipped; nothing in bml is patched.
    """
    config = copy.deepcopy(config)
    config["paths"]["results_root"] = root
    epochs = config["train"]["epochs"]
    last = f"epoch {epochs}/{epochs}:"

    def log(msg: str) -> None:
        if msg.startswith(last):
            raise LastEpochDone

    try:
        bt.train(config, device="cpu", restart=True, log=log)
    except LastEpochDone:
        pass
    return torch.load(bt.run_dir(config) / bt.CHECKPOINT, weights_only=False)["history"]
