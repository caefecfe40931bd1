"""The training settings, typed: built once from a resolved configuration's `train:` section, read as attributes
inside the loop (bml/train.py), so a misspelt key fails at the start and not at the last epoch.

The protocol schema (workflow/schemas/protocol.schema.yaml) checks the values. The step services (precision,
clipping, accumulation) are off by default: STEP_DEFAULTS, which the plan puts under every protocol's `train:`
(bml/plan.py), so a protocol that does not name them trains exactly as before and `--set train.precision=bf16`
works everywhere. A setting added after results were kept (`init`) has its default in UNHASHED_DEFAULTS
instead: the plan fills it in too, but a cell's hash leaves it out while it holds its default (bml/plan.py:
hashed_config), so a protocol that does not name it keeps its cells' hashes and results. Torch-free, as the
plan imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

PRECISIONS = ("fp32", "bf16", "fp16")
# fp32; bf16: autocast to bfloat16; fp16: autocast to float16 with a GradScaler (bml/methods/base.py: StepServices).
# grad_clip: the gradients' total L2 norm clipped to it before each optimizer step. accumulate: batches per step.
STEP_DEFAULTS = {"precision": "fp32", "grad_clip": None, "accumulate": 1}
# the weights' initialisation (bml/models/init.py): default, PyTorch's (and torchvision's ResNet's own);
# ogm_ge, the OGM-GE and TPAMI 2024 authors' weight_init; gewu_backbone, the GeWu-Lab ResNet-18's own
INITS = ("default", "ogm_ge", "gewu_backbone")
UNHASHED_DEFAULTS = {"init": "default"}


@dataclass(frozen=True)
class TrainSettings:
    encoder: str
    optimizer: dict  # bml/optim.py: build_optimizer
    scheduler: dict  # bml/optim.py: build_scheduler
    batch_size: int
    epochs: int
    train_frames: int
    eval_frames: int
    probe_every: int  # linear probes on val every k epochs (and at the last); 0: only at the end
    num_workers: int
    frame_mean: tuple[float, ...]
    frame_std: tuple[float, ...]
    precision: str
    grad_clip: float | None
    accumulate: int
    init: str
    frame_augment: str = "none"
    frame_crop_scale: tuple[float, float] | None = None  # None: the loader's default (bml/data/loader.py)

    @classmethod
    def from_config(cls, train: dict) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(train) - known)
        if unknown:
            raise ValueError(f"train.{unknown[0]}: not a training setting; known: {sorted(known)}")
        values = {
            k: tuple(v) if isinstance(v, list) else v for k, v in (STEP_DEFAULTS | UNHASHED_DEFAULTS | train).items()
        }
        settings = cls(**values)
        if settings.precision not in PRECISIONS:
            raise ValueError(f"train.precision: {settings.precision!r} is not one of {list(PRECISIONS)}")
        if settings.init not in INITS:
            raise ValueError(f"train.init: {settings.init!r} is not one of {list(INITS)}")
        if settings.accumulate < 1:
            raise ValueError(f"train.accumulate: {settings.accumulate} must be at least 1")
        return settings

    def probes_due(self, epoch: int) -> bool:
        """Whether the 0-based `epoch` ends with linear probes on val."""
        return self.probe_every > 0 and ((epoch + 1) % self.probe_every == 0 or epoch + 1 == self.epochs)
