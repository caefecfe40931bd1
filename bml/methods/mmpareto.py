"""MMPareto: Pareto integration of the multimodal and uni-modal gradients.

Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024.
Formulas and defaults from the paper and the authors' code (GeWu-Lab/MMPareto_ICML2024 code/MMPareto.py;
docs/methods.md):

- besides the fusion head (loss L_mm), each encoder gets its own linear head (losses L_a, L_v);
- per step and per encoder m, g_mm and g_m are the gradients of L_mm and L_m with respect to all of that
  encoder's parameters, flattened. If cos(g_mm, g_m) > 0 they do not conflict and get weights
  (0.5, 0.5); otherwise the weights are the min-norm point of the two (two-gradient MGDA, Sener & Koltun
  2018);
- per parameter tensor: new = 2 k0 g_mm + 2 k1 g_m; with n = |g_mm + g_m| (the plain summed gradient),
  grad = gamma * new * n / |new| where n / |new| > 1, else gamma * new (gamma 1.5): the combined
  gradient keeps at least the plain sum's magnitude;
- heads are trained by their own losses only;
- each modality's accuracy (acc_<m>, val_acc_<m>) is read from its own head, as the authors' valid() reads
  out_audio / out_video from head_audio / head_video (code/MMPareto.py, code/models/models.py), not from a split
  of the fusion head.

Zero norms are guarded (one public re-implementation divides by one and gets NaN): a zero gradient has
no direction to conflict with, so it gets the (0.5, 0.5) weights, and a zero combined gradient stays zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bml.methods.base import Batch, StepContext, WithUnimodalHeads
from bml.models.model import Output


def pareto_weights(g_mm: torch.Tensor, g_uni: torch.Tensor) -> tuple[float, float]:
    """(k0, k1) for two flattened gradients: (0.5, 0.5) without conflict, else the min-norm point."""
    g_mm, g_uni = g_mm.double(), g_uni.double()
    norm_mm, norm_uni = g_mm.norm().item(), g_uni.norm().item()
    if norm_mm == 0.0 or norm_uni == 0.0:
        return 0.5, 0.5
    if torch.dot(g_mm, g_uni).item() / (norm_mm * norm_uni) > 0.0:
        return 0.5, 0.5
    # min over c in [0, 1] of |c g_mm + (1 - c) g_uni|^2: c = (g_uni - g_mm) . g_uni / |g_mm - g_uni|^2
    diff = (g_mm - g_uni).pow(2).sum().item()
    c = torch.dot(g_uni - g_mm, g_uni).item() / diff if diff > 0 else 0.5
    c = min(max(c, 0.0), 1.0)
    return c, 1.0 - c


def combine(g_mm: torch.Tensor, g_uni: torch.Tensor, k0: float, k1: float, gamma: float) -> torch.Tensor:
    """The combined gradient of one parameter tensor, with MMPareto's magnitude rule."""
    new = 2.0 * k0 * g_mm + 2.0 * k1 * g_uni
    norm_new = new.norm().item()
    if norm_new == 0.0:
        return gamma * new
    ratio = (g_mm + g_uni).norm().item() / norm_new
    return gamma * new * ratio if ratio > 1.0 else gamma * new


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    a, b = a.double(), b.double()
    na, nb = a.norm().item(), b.norm().item()
    return torch.dot(a, b).item() / (na * nb) if na > 0 and nb > 0 else None


class MMPareto(WithUnimodalHeads):
    """MMPareto (ICML 2024): multimodal and uni-modal losses, their encoder gradients merged without conflict.

    Works with every fusion head (the uni-modal heads are its own) and any number of modalities: the
    paper's rule is per encoder, between its multimodal and its own uni-modal gradient.
    """

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        y = batch.labels
        return {
            "mm": F.cross_entropy(out.logits, y),
            **{m: F.cross_entropy(model.heads[m](out.features[m]), y) for m in model.modalities},
        }

    def backward(self, model: nn.Module, losses: dict[str, torch.Tensor], ctx: StepContext) -> None:
        gamma = self.params["gamma"]
        enc_params = {m: [p for p in enc.parameters() if p.requires_grad] for m, enc in model.encoders.items()}
        # L_mm reaches every encoder and the fusion head: keep its encoder gradients apart
        ctx.backward(losses["mm"], retain_graph=True)
        g_mm = {
            m: [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in ps]
            for m, ps in enc_params.items()
        }
        for ps in enc_params.values():
            for p in ps:
                p.grad = None
        # each uni-modal loss reaches only its encoder and its head; its head keeps that gradient
        for m in model.modalities:
            ctx.backward(losses[m])
            g_m = [p.grad if p.grad is not None else torch.zeros_like(p) for p in enc_params[m]]
            flat_mm = torch.cat([g.flatten() for g in g_mm[m]])
            flat_m = torch.cat([g.flatten() for g in g_m])
            k0, k1 = pareto_weights(flat_mm, flat_m)
            for p, gmm, gm in zip(enc_params[m], g_mm[m], g_m, strict=True):
                p.grad = combine(gmm, gm, k0, k1, gamma)
            cos = _cosine(flat_mm, flat_m)
            if cos is not None:
                self.record(f"cosine_{m}", cos)
            self.record(f"conflict_{m}", float(cos is not None and cos <= 0.0))  # share of steps in conflict
            self.record(f"weight_mm_{m}", k0)
