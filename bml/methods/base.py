"""The method interface: what a balancing method may change in bml's one training loop (bml/train.py).

The loop owns data, devices, checkpoints, evaluation and tracking; a method overrides only the hooks it
needs, each a no-op (or plain cross-entropy) by default. Per training step the loop calls, in order:

    batch  = method.before_forward(batch, state)        # e.g. re-sample or perturb inputs
    out    = model(batch["audio"], batch["frames"])     # {"logits", "f_a", "f_v"}
    out    = method.on_features(model, out, batch, state) # e.g. drop features (OPM), add heads' logits
    losses = method.loss(model, out, batch, state)      # {"ce": ...} or several named terms (MMPareto)
    method.backward(model, losses, state)               # default: sum(losses).backward()
    method.after_backward(model, out, batch, state)     # e.g. scale or replace gradients (OGM, MMPareto)
    optimizer.step()

and after every epoch `method.on_epoch_end(model, state)` (e.g. re-initialise: Re-learning) and
`method.epoch_log()` (per-epoch numbers for MLflow, e.g. modulation coefficients). Anything a method
keeps across epochs goes in `state_dict()`, so a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ALL_FUSIONS = ("concat", "sum", "film", "gated")


@dataclass
class StepState:
    """Where the loop is; hooks read it, never write it."""

    epoch: int  # 0-based epoch being trained (on_epoch_end: the one just finished)
    step: int  # 0-based step within the epoch
    steps_per_epoch: int
    config: dict  # the run's resolved configuration (bml/train.py: resolve_config)
    loop: Any = None  # the loop's data and device (bml/train.py: LoopContext), e.g. for Re-learning's diagnosis


class Method:
    """Joint training with multimodal cross-entropy: the baseline that every method starts from."""

    name = "joint"
    modalities: tuple[str, ...] = ("audio", "visual")
    fusions: tuple[str, ...] = ALL_FUSIONS  # the fusion heads this method works with
    trains = True  # False: nothing to train (an ensemble of trained runs)

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = dict(params or {})
        self._log: dict[str, list[float]] = {}

    # hooks of the training step ------------------------------------------------------------------
    def setup(self, model: nn.Module, config: dict) -> None:
        """Once, after the model is built and before the optimizer is: may add modules (extra heads)."""

    def before_forward(self, batch: dict, state: StepState) -> dict:
        return batch

    def on_features(self, model: nn.Module, out: dict, batch: dict, state: StepState) -> dict:
        return out

    def loss(self, model: nn.Module, out: dict, batch: dict, state: StepState) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(out["logits"], batch["label"])}

    def backward(self, model: nn.Module, losses: dict[str, torch.Tensor], state: StepState) -> None:
        sum(losses.values()).backward()

    def after_backward(self, model: nn.Module, out: dict, batch: dict, state: StepState) -> None:
        """Between backward and the optimizer step: gradients may be read, scaled or replaced."""

    def on_epoch_end(self, model: nn.Module, state: StepState) -> None:
        """After each epoch's training steps, before validation."""

    # what the method reports and keeps -----------------------------------------------------------
    def record(self, name: str, value: float) -> None:
        """Note a per-step number; epoch_log() gives each one's mean over the epoch."""
        self._log.setdefault(name, []).append(float(value))

    def epoch_log(self) -> dict[str, float]:
        """Per-epoch numbers for MLflow (means of what was recorded); resets for the next epoch."""
        means = {k: sum(v) / len(v) for k, v in self._log.items() if v}
        self._log = {}
        return means

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
