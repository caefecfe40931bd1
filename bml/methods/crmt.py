"""CRMT: Certifiable Robust Multi-modal Training, in two phases.

Yang, Wei, Liang & Hu, "Quantifying and Enhancing Multi-modal Robustness with Modality Preference", ICLR 2024.
The authors' code: GeWu-Lab/Certifiable-Robust-Multi-modal-Training (also njustkmg/ICLR24-CRMT), read at
commit 9f42759 (cfgs/) and 9cb6420 (train.py, models/fusion_model.py); docs/methods.md, "CRMT".

- The head (models/fusion_model.py, orthogonal_linear with OWNNorm(norm_groups=outdim)): one Linear over the
  concatenated features; each modality's block W_m of its weight is used row by row centred and unit-normalised
  (W~_m; with one row per group OWNNorm's whitening is exactly that: the rows are not mutually orthogonal),
  giving per-modality logits out_m = f_m W~_m^T (no bias) and fused = sum_m a_m * out_m + b, with a_m in R^C
  initialised to 0.1 (`a_init`).
- Step 1 (train.py, train_CRMT_JT): CE(fused) + rho * mean log(sum_m sum_{k != y} exp(out_{m,k} - out_{m,y})
  + 1e-5) (rho 2.0 at 9f42759 cfgs/methods/CRMT_JT.yaml), with the protocol's optimizer and schedule.
- Step 2 (train.py, get_lip and the_second_step): each modality's Lipschitz constant per class, tau_{m,k} =
  max over train samples of |d out_{m,k} / d x_m|_2, once; then only the a_m are trained, by a new SGD
  (lr 0.03 x the protocol's, momentum 0.9, weight decay 1e-2), to maximise the certified margin: with j the
  fused runner-up class, loss = -mean (sum_m (a_{m,y} out_{m,y} - a_{m,j} out_{m,j}) + b_y - b_j)
  / sqrt(sum_m (a_{m,y} tau_{m,y} + a_{m,j} tau_{m,j})^2), the logits and b held fixed.
- Step 2 runs n_epochs // 3 - 1 epochs after the n_epochs of step 1 (train.py: range(1, n_epochs // 3)): 45
  after 140 (cfgs/train.yaml at 9f42759). bml runs both inside the protocol's epochs: step 2 is the last
  `second_phase_epochs` of a `reference_epochs` (185) schedule, scaled (bml/methods/base.py: scale_epoch).

Where bml differs from the code, and why (docs/methods.md):
- tau is the gradient norm of the uni-modal logit out_{m,k}, as the paper defines the uni-modal margin's
  Lipschitz constant; get_lip differentiates the fused logit, i.e. a_{m,k} tau_{m,k} with a of the end of
  step 1 (the step-2 bound then counts a twice), and zeroes only the audio input's gradient between classes, so
  the visual constants accumulate over classes. tau is estimated on the fixed-frame train split (train_eval).
- One step-2 optimizer for the whole phase (the code builds a new one every step-2 epoch, resetting momentum):
  the paper describes one optimisation of a; it also keeps the phase's state in the checkpoint like any other.
- The code's OWNNorm draws torch.randn (then overwrites it) at every forward, moving the global RNG; bml does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bml.data.loader import make_loader
from bml.methods.base import Batch, EpochContext, Method, Phase, StepContext, labels_of, scale_epoch
from bml.models.encoders import build_encoder
from bml.models.model import ModelSpec, MultimodalModel, Output

MARGIN_TINY = 1e-5  # train.py: torch.log(margin_loss + 1e-5)
NORM_TINY = 1e-12  # bml's guard: a zero row of W_m stays zero instead of dividing by zero


def unit_rows(w: torch.Tensor) -> torch.Tensor:
    """Each row centred (its mean removed) and scaled to unit l2 norm: OWNNorm with one row per group."""
    centred = w - w.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(NORM_TINY)


class OrthogonalHead(nn.Module):
    """CRMT's head: out_m = f_m W~_m^T per modality, fused = sum_m a_m * out_m + b."""

    def __init__(self, dims: dict[str, int], n_classes: int, a_init: float = 0.1) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.fc = nn.Linear(sum(dims.values()), n_classes)  # its weight's blocks W_m; its bias b
        self.a = nn.ParameterDict({m: nn.Parameter(torch.full((n_classes,), float(a_init))) for m in dims})

    def unimodal_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for m, d in self.dims.items():
            out[m] = features[m] @ unit_rows(self.fc.weight[:, start : start + d]).T  # (B, C)
            start += d
        return out

    def fuse(self, unimodal: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.a[m] * z for m, z in unimodal.items()) + self.fc.bias  # (B, C)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fuse(self.unimodal_logits(features))


def margin_regulariser(unimodal: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """mean over the batch of log(sum_m sum_{k != y} exp(out_{m,k} - out_{m,y}) + 1e-5) (without rho)."""
    total = 0.0
    for z in unimodal.values():
        gap = z - z.gather(1, labels[:, None])  # (B, C): out_k - out_y
        others = torch.ones_like(gap, dtype=torch.bool).scatter_(1, labels[:, None], False)
        total = total + (gap.exp() * others).sum(1)
    return torch.log(total + MARGIN_TINY).mean()


def runner_up(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The highest-scoring class other than the label, per row (ties: the lowest index)."""
    return logits.detach().scatter(1, labels[:, None], float("-inf")).argmax(1)


def certified_margin_loss(
    unimodal: dict[str, torch.Tensor],
    a: dict[str, torch.Tensor],
    bias: torch.Tensor,
    tau: dict[str, torch.Tensor],
    labels: torch.Tensor,
    second: torch.Tensor,
) -> torch.Tensor:
    """Step 2's loss, minus the mean certified margin (over samples with a nonzero denominator); gradients reach
    only `a` (logits and bias detached)."""
    rows = torch.arange(labels.shape[0], device=labels.device)
    numer = (bias[labels] - bias[second]).detach()
    denom_sq = 0.0
    for m, z in unimodal.items():
        z = z.detach()
        numer = numer + a[m][labels] * z[rows, labels] - a[m][second] * z[rows, second]
        denom_sq = denom_sq + (a[m][labels] * tau[m][labels] + a[m][second] * tau[m][second]) ** 2
    # a sample whose constants are all zero (a modality whose logits ignore its input) has no finite bound: it is
    # left out rather than dividing by zero (bml's guard; the code has none); none left: a zero loss, still on a
    defined = denom_sq > 0
    if not bool(defined.any()):
        return 0.0 * sum(v.sum() for v in a.values())
    return -(numer[defined] / torch.sqrt(denom_sq[defined])).mean()


def lipschitz_constants(model: MultimodalModel, loader, prepare, device: torch.device) -> dict[str, torch.Tensor]:
    """tau_{m,k}: the largest |d out_{m,k} / d x_m|_2 over the loader's samples, per modality and class, the model
    in eval mode (each sample's logits depend on its own input only, so one backward per class serves the batch)."""
    was_training = model.training
    model.eval()
    tau = {m: torch.zeros(model.n_classes, device=device) for m in model.modalities}
    try:
        for batch in loader:
            inputs = {
                m: x.detach().requires_grad_()
                for m, x in prepare({m: x.to(device) for m, x in batch["inputs"].items()}).items()
            }
            with torch.enable_grad():
                features = {m: enc(inputs[m]) for m, enc in model.encoders.items()}
                unimodal = model.fusion.unimodal_logits(features)
                for k in range(model.n_classes):
                    total = sum(z[:, k].sum() for z in unimodal.values())
                    grads = torch.autograd.grad(total, [inputs[m] for m in model.modalities], retain_graph=True)
                    for m, g in zip(model.modalities, grads, strict=True):
                        tau[m][k] = torch.maximum(tau[m][k], g.flatten(1).norm(dim=1).max())
    finally:
        model.train(was_training)
    return tau


class CRMT(Method):
    """CRMT (ICLR 2024): the orthogonal head and margin regulariser, then the fusion weights a_m alone."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.tau: dict[str, torch.Tensor] | None = None  # step 2's Lipschitz constants, once estimated

    def build_model(self, spec: ModelSpec) -> nn.Module:
        encoders = {m: build_encoder(spec.encoder, kind) for m, kind in spec.modalities.items()}
        head = OrthogonalHead({m: e.out_dim for m, e in encoders.items()}, spec.n_classes, self.params["a_init"])
        return MultimodalModel(encoders, head, spec.n_classes)

    def phases(self, epochs: int) -> list[Phase]:
        second = scale_epoch(self.params["second_phase_epochs"], epochs, self.params["reference_epochs"])
        if second == 0:
            return [Phase("step1", 0, epochs)]
        lr = self.run.config["train"]["optimizer"]["lr"] * self.params["second_lr_factor"]
        optimizer = {
            "name": "sgd",
            "lr": lr,
            "momentum": self.params["second_momentum"],
            "weight_decay": self.params["second_weight_decay"],
        }
        step2 = Phase("step2", epochs - second, epochs, optimizer, {"name": "none"})  # no schedule: the code's
        return [Phase("step1", 0, epochs - second), step2]

    def param_groups(self, model: nn.Module, phase: Phase | None = None) -> list[dict]:
        if phase is not None and phase.name == "step2":
            return [{"params": list(model.fusion.a.parameters())}]
        return super().param_groups(model, phase)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        if ctx.phase is not None and ctx.phase.name == "step2" and self.tau is None:
            loader = make_loader(self.run.splits["train_eval"], 256)
            self.tau = lipschitz_constants(ctx.model, loader, self.run.prepare, self.run.device)

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        y = labels_of(out, batch)
        unimodal = model.fusion.unimodal_logits(out.features)
        for m in model.modalities:
            self.record(f"fusion_weight_{m}", model.fusion.a[m].mean().item())
        if ctx.phase is not None and ctx.phase.name == "step2":
            head = model.fusion
            loss = certified_margin_loss(unimodal, dict(head.a), head.fc.bias, self.tau, y, runner_up(out.logits, y))
            return {"certified": loss}
        return {"ce": F.cross_entropy(out.logits, y), "margin": self.params["rho"] * margin_regulariser(unimodal, y)}

    def state_dict(self) -> dict:
        return {} if self.tau is None else {"tau": {m: t.cpu() for m, t in self.tau.items()}}

    def load_state_dict(self, state: dict) -> None:
        if "tau" in state:
            self.tau = {m: t.to(self.run.device) for m, t in state["tau"].items()}
