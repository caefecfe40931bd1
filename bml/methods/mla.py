"""MLA: multimodal learning by alternating uni-modal adaptation, with one head shared by every modality.

Zhang, Yoon, Bansal & Yao (Xiaohui Zhang, Jaehong Yoon, Mohit Bansal, Huaxiu Yao), "Multimodal Representation
Learning by Alternating Unimodal Adaptation", CVPR 2024. Authors' code: Cecile-hi/Multimodal-Learning-with-
Alternating-Unimodal-Adaptation (commit 11ae1ee), main.py (train_epoch's `gs_flag` branch, valid, main) and
utils/utils.py (GSPlugin). BalanceBenchmark's re-implementation: GeWu-Lab/BalanceBenchmark
balancemm/trainer/MLA_trainer.py. docs/methods.md ("MLA") restates what follows.

- The model: each modality's encoder and ONE linear head shared by all of them, Linear(D, C) (main.py: every
  modality's features go through `fusion_module.fc_out`); so the encoders must share a feature width D.
- The step (main.py train_epoch, gs branch): one forward of every encoder, then for each modality in turn:
  CE(head(f_m), y), backward, the gradient projection below, optimizer step, zero_grad. So two optimizer
  steps per batch for two modalities; the head is stepped by every modality, each encoder by its own.
- The projection (utils.py GSPlugin.before_update, orthogonal weight modification): one matrix P (D x D,
  identity at the start) shared by every modality; before each optimizer step but the run's very first
  (`train_exp_counter != 0`), with a = 0.1^(1 + batch_index / batches_per_epoch) and r the batch mean of the
  (detached) features of the modality being stepped:
      k = P r^T;  P <- P - k k^T / (a + r k);  P <- P / ||P||_F;
  then the gradient of the shared head's weight (C x D) is changed with G P^T. The official and
  BalanceBenchmark's codes differ in two ways, so `projection` has three values:
    * `replace` (default): weight.grad = G P^T, the official plugin's formula (`w.grad.data = ...`), as the
      paper describes its gradient modification;
    * `add`: weight.grad = G + G P^T, BalanceBenchmark's (`w.grad.add_(...)`): its published MLA number
      (params/published.yaml) was trained so, and the `balancebench` protocol sets it;
    * `none`: what the official code actually runs: its plugin is handed the head module itself, whose
      parameters are named `weight` and `bias`, but it looks for `module.weight`, so the projection never
      applies (P is never updated either). An ablation that shows what the published code trained.
  Only the head's weight is projected (not its bias, not the encoders), in both codes. P is Frobenius-normalised
  each step, so `replace` keeps about 1/sqrt(D) of the gradient in unseen directions (the logged proj_ratio_<m>);
  `add` keeps G plus a few percent (docs/methods.md gives a measured comparison).
- Test time (main.py valid, gs branch): fixed weights, fused = w o_1 + (1 - w) o_2, w = 0.55 for the first
  modality (main.py: `main(av_alpha=0.55)`, the weight its training loop's validation uses; audio first), or
  entropy weights (`--dynamic`): w_m = exp(max_j e_j - e_m) / sum_j exp(max_j e_j - e_j), e_m the entropy of
  softmax(o_m). The official code takes one entropy per batch (softmax over the batch dimension, summed over
  the whole batch), so a sample's prediction would depend on the rest of its batch (and on the batch size); bml
  computes the entropies per sample, so a prediction is the sample's own. `test_fusion` chooses; `fixed` is the
  default (the code's, without `--dynamic`). Each modality's accuracy (acc_<m>) is the shared head on that
  modality's features.
- Defaults of the official script: SGD lr 1e-3, momentum 0.9, weight decay 1e-4, StepLR(70, 0.1), batch 64,
  100 epochs: those are the protocol's, not the method's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bml.methods.base import Batch, LossNotFinite, Method, StepContext
from bml.models.encoders import build_encoder
from bml.models.model import ModelSpec, Output


def owm_update(P: torch.Tensor, features: torch.Tensor, batch_index: int, batches: int) -> torch.Tensor:
    """The new projector after one batch: P - k k^T / (a + r k), Frobenius-normalised (GSPlugin.before_update).

    features: (B, D) of the modality being stepped (detached); a = 0.1^(1 + batch_index / batches)."""
    a = 0.1 ** (1.0 + batch_index / batches)
    r = features.detach().to(P.dtype).mean(0, keepdim=True)  # (1, D)
    k = P @ r.T  # (D, 1)
    P = P - (k @ k.T) / (a + (r @ k))  # (D, D)
    return P / torch.linalg.matrix_norm(P)  # Frobenius


def project(grad: torch.Tensor, P: torch.Tensor, how: str) -> torch.Tensor:
    """The head weight's gradient (C, D) after the projection: G P^T (replace), G + G P^T (add), or G (none)."""
    if how == "none":
        return grad
    projected = grad @ P.to(grad.dtype).T
    return projected if how == "replace" else grad + projected


def fixed_fusion(logits: dict[str, torch.Tensor], first_weight: float) -> torch.Tensor:
    """w o_1 + (1 - w) o_2 for two modalities, in the dataset's order (the plan refuses other counts)."""
    first, second = logits.values()
    return first_weight * first + (1.0 - first_weight) * second


def entropy_fusion(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per sample: w_m = exp(max_j e_j - e_m) / sum_j exp(max_j e_j - e_j), e_m the entropy of softmax(o_m);
    fused = sum_m w_m o_m. The more confident modality (lower entropy) weighs more."""
    z = list(logits.values())
    e = torch.stack([-(F.softmax(o, 1) * F.log_softmax(o, 1)).sum(1) for o in z], 1)  # (B, M)
    w = F.softmax(-e, dim=1)  # exp(-e_m) / sum exp(-e_j): the same as the max-shifted form
    return sum(w[:, i : i + 1] * o for i, o in enumerate(z))  # (B, C)


class SharedHeadModel(nn.Module):
    """An encoder per modality and one Linear head shared by all: Output.unimodal = the head on each modality."""

    def __init__(self, encoders: dict[str, nn.Module], n_classes: int, first_weight: float, test_fusion: str):
        super().__init__()
        widths = {m: e.out_dim for m, e in encoders.items()}
        if len(set(widths.values())) != 1:
            raise ValueError(f"MLA's shared head needs one feature width for every encoder; got {widths}")
        self.n_classes, self.modalities = n_classes, tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.head = nn.Linear(next(iter(widths.values())), n_classes)
        self.first_weight, self.test_fusion = first_weight, test_fusion

    def fuse(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.test_fusion == "entropy":
            return entropy_fusion(logits)
        return fixed_fusion(logits, self.first_weight)

    def forward(self, inputs: dict[str, torch.Tensor]) -> Output:
        features = {m: enc(inputs[m]) for m, enc in self.encoders.items()}  # (B, D) each
        logits = {m: self.head(f) for m, f in features.items()}  # (B, C) each
        return Output(self.fuse(logits), features, logits)


class MLA(Method):
    """MLA (CVPR 2024): per batch, one optimizer step per modality through the shared head, with the OWM
    projection of the head's weight gradient; test-time fixed or entropy fusion."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.P: torch.Tensor | None = None  # (D, D), built with the model
        self.updates = 0  # optimizer steps taken so far (the official exp_count)

    def build_model(self, spec: ModelSpec) -> nn.Module:
        encoders = {m: build_encoder(spec.encoder, kind) for m, kind in spec.modalities.items()}
        model = SharedHeadModel(encoders, spec.n_classes, self.params["fixed_weight"], self.params["test_fusion"])
        self.P = torch.eye(model.head.in_features)
        return model

    def training_step(self, ctx: StepContext, batch: Batch) -> dict[str, float]:
        model, how = ctx.model, self.params["projection"]
        features = {m: enc(batch.inputs[m]) for m, enc in model.encoders.items()}  # one forward of each encoder
        values = {}
        for m in model.modalities:
            ctx.zero_grad()
            loss = F.cross_entropy(model.head(features[m]), batch.labels)
            values[m] = loss.item()
            if not torch.isfinite(loss):
                raise LossNotFinite(f"{m} = {values[m]}")
            ctx.backward(loss)
            ratio = 1.0
            if how != "none" and self.updates > 0:  # the official plugin skips the run's first step
                self.P = owm_update(self.P.to(features[m].device), features[m], ctx.step, ctx.steps_per_epoch)
                grad = model.head.weight.grad
                new = project(grad, self.P, how)
                norm = grad.norm().item()
                ratio = new.norm().item() / norm if norm > 0 else 1.0
                model.head.weight.grad = new
            ctx.optimizer_step()
            self.updates += 1
            self.record(f"proj_ratio_{m}", ratio)
        return values

    def state_dict(self) -> dict:
        return {"P": self.P.detach().cpu().clone(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.P, self.updates = state["P"].clone(), int(state["updates"])
