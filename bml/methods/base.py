"""The method contract: what a balancing method may change in bml's one training loop (bml/train.py).

The loop owns the data, devices, checkpoints, evaluation and tracking. A method overrides what it needs:

- the model: `build_model(spec)` (add uni-modal heads, its own head, experts loaded from other runs) and
  `param_groups(model, phase)` (per-part learning rates; what a phase trains), `grad_clip(configured)` (a
  clip of its own); nothing else touches the model's structure;
- the epoch: `on_epoch_start(ctx)` and `on_epoch_end(ctx)` with the run's data (prototypes, diagnoses,
  valuations), `after_validation(ctx)` once the epoch's model is validated (Re-learning's reset, which its
  authors' code makes after validating), and `epoch_samples(ctx)`: the epoch's training samples (repeats
  allowed) and per-sample modality masks, drawn from the run's seeded generators so a resumed run draws the
  same. A mask acts at the level the method's paper masks (`Samples.mask_level`): "input" (the default)
  zeroes the masked input before the encoder; "feature" leaves the encoder its real input and zeroes its
  pooled feature before the fusion head (sample-level valuation), so BatchNorm in train mode never sees
  all-zero images;
- the step: `training_step(ctx, batch)` owns the whole step (several optimizer steps per batch); the
  default runs the hooks below, in this order, with one optimizer step:

      batch  = before_forward(batch, ctx)                  # re-sample or perturb inputs
      ctx.zero_grad()
      out    = on_features(model, forward(model, batch), batch, ctx)  # drop features, add logits
      losses = loss(model, out, batch, ctx)                # {"ce": ...} or several named terms
      backward(model, losses, ctx)                         # default: ctx.backward(sum of losses)
      after_backward(model, out, batch, ctx)               # scale or replace gradients
      ctx.optimizer_step()                                 # the optimizer step (and the loop's services)

  The loop runs `training_step` under the precision's autocast; `ctx.backward` and `ctx.optimizer_step`
  bring the scaler, clipping and accumulation (StepServices), so a method never handles them itself.

- test time: `predict(model, inputs)` (the default is the model's own output);
- other runs: a method's `requires` (bml/methods/__init__.py) declares the runs it reads as (method, fusion)
  patterns (("<modality>_only", "none"), ("joint", "<fusion>")); the plan resolves them, refuses a matrix that
  lacks them and turns them into workflow edges, and `ctx.run.required` gives their folders by method name;
- evaluation: `evaluations(ctx)` adds metrics to every final evaluation of the run; its `EvalContext` holds
  what was collected and the model, the splits, the input preparation and the device, so an evaluation can
  perturb inputs or features itself (attacks);
- phases: `phases(epochs)` splits the run's epochs into consecutive `Phase`s (CRMT's second step trains only
  its fusion weights with an optimizer of its own). At each phase's first epoch the loop builds that phase's
  optimizer over `param_groups(model, phase)` and its scheduler over the phase's epochs; a checkpoint holds
  the optimizer and scheduler of the phase of its last epoch, so a resume continues exactly across a switch.

Between hooks, typed records (`Batch`, `Output`, the contexts), never free dict keys. Per-epoch numbers
go through `record` (means per epoch in history.csv and MLflow); anything kept across epochs goes in
`state_dict()`, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bml.methods import MethodSpec
from bml.methods.schedule import scale_epoch  # noqa: F401 (re-exported: the methods import it from here)
from bml.models.model import ModelSpec, Output, build_model


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # modality -> (B, ...) on the device, ready for the encoder
    labels: torch.Tensor  # (B,)
    index: torch.Tensor  # (B,) positions of the samples in the training split
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # modality -> (B,) bool, False: masked
    mask_level: str = "input"  # where `masks` act: "input" (already zeroed in `inputs`) or "feature" (forward)


MASK_LEVELS = ("input", "feature")


@dataclass
class Samples:
    """A method's choice of one epoch's training samples."""

    indices: np.ndarray  # (N',) positions in the training split; repeats allowed
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (N',) bool, False: masked
    # "input": zero the masked sample's input (the contract's default, as every method before valuation had it);
    # "feature": the encoder sees the real input, its pooled feature is zeroed before the fusion head
    mask_level: str = "input"

    def __post_init__(self) -> None:
        if self.mask_level not in MASK_LEVELS:
            raise ValueError(f"Samples.mask_level {self.mask_level!r}: choose one of {MASK_LEVELS}")


@dataclass
class RunContext:
    """What every hook may read about the run: its configuration, data and device (built by the loop)."""

    config: dict
    modalities: dict[str, str]  # the dataset's modalities, name -> kind
    n_classes: int
    device: torch.device
    splits: dict[str, Any]  # train (training frames), train_eval (fixed frames), val, test: PackedSplit
    required: dict[str, Path]  # method -> the folder of a run this one needs (same dataset, protocol, seed)
    collect: Any = None  # collect(model, split_name) -> {"features": {m: array}, "logits", "label"} (evaluate.py)
    prepare: Any = None  # prepare(inputs) -> the encoders' inputs (bml/data/loader.py: prepare_inputs)

    @property
    def seed(self) -> int:
        return self.config["run"]["seed"]

    @property
    def epochs(self) -> int:
        return self.config["train"]["epochs"]


@dataclass
class EpochContext:
    run: RunContext
    model: nn.Module
    epoch: int  # 0-based: the epoch about to start (on_epoch_start) or just trained (on_epoch_end, after_validation)
    phase: Phase | None = None  # the phase the epoch belongs to (Method.phases)


@dataclass(frozen=True)
class Phase:
    """Consecutive epochs [start, end) of a run trained the same way: their own optimizer and schedule.

    `optimizer` / `scheduler`: bml/optim.py settings ({"name": "sgd", "lr": ...}); None takes the protocol's. The
    scheduler runs over the phase's epochs (a cosine anneals within the phase)."""

    name: str
    start: int  # 0-based first epoch
    end: int  # one past the last epoch
    optimizer: dict | None = None
    scheduler: dict | None = None

    @property
    def epochs(self) -> int:
        return self.end - self.start


def phase_of(phases: list[Phase], epoch: int) -> Phase:
    """The phase holding 0-based `epoch`."""
    for phase in phases:
        if phase.start <= epoch < phase.end:
            return phase
    raise ValueError(f"epoch {epoch} is in no phase of {[(p.name, p.start, p.end) for p in phases]}")


@dataclass
class EvalContext:
    """What a method's evaluation may use: the collected outputs of the model being evaluated, the model itself,
    the splits, the input preparation and the device (an evaluation may perturb inputs and features)."""

    found: dict[str, dict]  # split ("train", "val", "test") -> collect()'s arrays of this model
    model: nn.Module
    predict: Any  # predict(model, inputs) -> Output (the method's)
    splits: dict[str, Any]  # "train", "val", "test": PackedSplit (fixed frames)
    prepare: Any  # prepare(inputs) -> the encoders' inputs
    device: torch.device
    eval_cfg: dict  # params/params.yaml evaluation
    seed: int
    n_classes: int


class StepServices:
    """The step's services, the same for every method and off by default: mixed precision (`precision`),
    gradient clipping (`grad_clip`) and gradient accumulation (`accumulate`), from the train settings.

    bf16 runs the step under autocast to bfloat16; fp16 under autocast to float16 with a GradScaler (the loss is
    scaled before backward, the gradients unscaled before clipping and the step, a step with infinite gradients
    skipped). Backward runs outside autocast. With `accumulate` k, each loss is divided by k and the optimizer
    steps after every k-th batch (and the epoch's last); a method that replaces gradients (MMPareto) sees the
    accumulated ones.
    """

    def __init__(
        self, device: torch.device, precision: str = "fp32", grad_clip: float | None = None, accumulate: int = 1
    ) -> None:
        self.device_type, self.precision, self.grad_clip, self.accumulate = (
            device.type,
            precision,
            grad_clip,
            accumulate,
        )
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor, **kw) -> None:
        if self.accumulate > 1:
            loss = loss / self.accumulate
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        with torch.autocast(self.device_type, enabled=False) if self.dtype is not None else contextlib.nullcontext():
            loss.backward(**kw)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if self.grad_clip is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


@dataclass
class StepContext:
    """One training step: where the loop is, and the loop's services (zero_grad, backward, optimizer step)."""

    run: RunContext
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int  # 0-based
    step: int  # 0-based within the epoch
    steps_per_epoch: int
    services: StepServices | None = None  # None: fp32, no clipping, no accumulation
    phase: Phase | None = None  # the phase of the step's epoch (Method.phases)

    def __post_init__(self) -> None:
        if self.services is None:
            self.services = StepServices(torch.device("cpu"))

    def zero_grad(self) -> None:
        """At the first batch of each accumulation group only (every batch by default)."""
        if self.step % self.services.accumulate == 0:
            self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, **kw) -> None:
        self.services.backward(loss, **kw)

    def optimizer_step(self) -> None:
        """After the last batch of each accumulation group (every batch by default) and the epoch's last."""
        if (self.step + 1) % self.services.accumulate == 0 or self.step + 1 == self.steps_per_epoch:
            self.services.step(self.optimizer)


class LossNotFinite(FloatingPointError):
    """A loss term that is NaN or infinite; the loop turns it into its message (epoch, step, checkpoint)."""


class Method:
    """Joint training with multimodal cross-entropy: the baseline that every method starts from."""

    def __init__(self, spec: MethodSpec, params: dict[str, Any], run: RunContext) -> None:
        self.spec, self.params, self.run = spec, dict(params), run
        self._log: dict[str, list[float]] = {}

    # the model --------------------------------------------------------------------------------------
    def build_model(self, spec: ModelSpec) -> nn.Module:
        return build_model(spec)

    def param_groups(self, model: nn.Module, phase: Phase | None = None) -> list[dict]:
        """What `phase`'s optimizer trains (None: the run's only phase); every trainable parameter by default."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def grad_clip(self, configured: float | None) -> float | None:
        """The gradient-norm clip of the loop's StepServices: the protocol's (train.grad_clip) unless the method
        has its own (I2M2's authors clip at 8)."""
        return configured

    def phases(self, epochs: int) -> list[Phase]:
        """The run's `epochs` split into phases; by default one, with the protocol's optimizer and schedule."""
        return [Phase("train", 0, epochs)]

    # the epoch --------------------------------------------------------------------------------------
    def on_epoch_start(self, ctx: EpochContext) -> None:
        """Before the epoch's first step (PMR's prototypes, sample valuation)."""

    def epoch_samples(self, ctx: EpochContext) -> Samples | None:
        """The epoch's training samples; None: every sample once."""
        return None

    def on_epoch_end(self, ctx: EpochContext) -> None:
        """After the epoch's training steps, before validation (Greedy's utilisation rate)."""

    def after_validation(self, ctx: EpochContext) -> None:
        """After the epoch's validation, its test record and best.pt, before checkpoint.pt: a change to the model
        here is what the next epoch trains, never what this epoch's numbers saw (Re-learning's reset). Not
        called after the run's last epoch."""

    # the step ---------------------------------------------------------------------------------------
    def training_step(self, ctx: StepContext, batch: Batch) -> dict[str, float]:
        """One step; returns each loss term's value (batch mean) for the history."""
        batch = self.before_forward(batch, ctx)
        ctx.zero_grad()
        out = self.on_features(ctx.model, forward(ctx.model, batch), batch, ctx)
        losses = self.loss(ctx.model, out, batch, ctx)
        values = {name: term.item() for name, term in losses.items()}
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:
            raise LossNotFinite(", ".join(f"{k} = {v}" for k, v in bad.items()))
        self.backward(ctx.model, losses, ctx)
        self.after_backward(ctx.model, out, batch, ctx)
        ctx.optimizer_step()
        return values

    def before_forward(self, batch: Batch, ctx: StepContext) -> Batch:
        return batch

    def on_features(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> Output:
        return out

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(out.logits, labels_of(out, batch))}

    def backward(self, model: nn.Module, losses: dict[str, torch.Tensor], ctx: StepContext) -> None:
        ctx.backward(sum(losses.values()))

    def after_backward(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> None:
        """Between backward and the optimizer step: gradients may be read, scaled or replaced."""

    # test time --------------------------------------------------------------------------------------
    def predict(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> Output:
        return model(inputs)

    def evaluations(self, ctx: EvalContext) -> dict[str, float]:
        """Extra metrics of a final evaluation (ctx.found: {split: collected}; the model and data); none by default."""
        return {}

    # what the method reports and keeps --------------------------------------------------------------
    def record(self, name: str, value: float) -> None:
        """Note a per-step number; epoch_log() gives each one's mean over the epoch."""
        self._log.setdefault(name, []).append(float(value))

    def epoch_log(self) -> dict[str, float]:
        """Per-epoch numbers for the history and MLflow (means of what was recorded); resets for the next epoch."""
        means = {k: sum(v) / len(v) for k, v in self._log.items() if v}
        self._log = {}
        return means

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() returned (nothing by default)."""


def forward(model: nn.Module, batch: Batch) -> Output:
    """The model on a batch; feature-level masks zero the masked samples' features before the fusion head
    (the model's `feature_masks`; input-level ones were applied to the inputs when the batch was made). A method
    that owns its step (`training_step`) calls this rather than `model(batch.inputs)` to honour them."""
    if batch.mask_level == "feature" and batch.masks:
        if "feature_masks" not in inspect.signature(model.forward).parameters:
            raise TypeError(
                f"{type(model).__name__} cannot zero features (its forward takes no feature_masks); a method "
                f"that builds its own model masks at mask_level 'input' or gives its model feature_masks"
            )
        return model(batch.inputs, feature_masks=batch.masks)
    return model(batch.inputs)


class WithUnimodalHeads(Method):
    """A method that trains a linear head per encoder on that modality's features alone (MMPareto, MIMO,
    BOGC-MML): its model gets the heads, and each modality's logits at test time (acc_<m>) are its head's."""

    def build_model(self, spec: ModelSpec) -> nn.Module:
        return build_model(replace(spec, unimodal_heads=True))

    def predict(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> Output:
        out = model(inputs)
        return replace(out, unimodal={m: model.heads[m](out.features[m]) for m in model.modalities})


def labels_of(out: Output, batch: Batch) -> torch.Tensor:
    """The labels of the rows `out.logits` covers (all, unless the method dropped samples)."""
    return batch.labels if out.keep is None else batch.labels[out.keep]


def two_modalities(run: RunContext, who: str) -> tuple[str, str]:
    """The dataset's two modalities, for a formula its paper defines for two (the plan refuses other counts)."""
    if len(run.modalities) != 2:
        raise ValueError(f"{who} is defined for two modalities; this run has {list(run.modalities)}")
    first, second = run.modalities
    return first, second
