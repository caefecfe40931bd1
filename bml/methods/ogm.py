"""OGM-GE and OGM: on-the-fly gradient modulation.

Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022 (OGM-GE), and
Wei et al., "On-the-fly Modulation for Balanced Multimodal Learning", TPAMI 2024 (OGM). Formulas and
defaults as restated in ../shared/METHODS.md:

- per step, from the fusion head's uni-modal logits: s_m = sum over the batch of softmax(z_m)[y];
  rho_v = s_v / s_a, rho_a = 1 / rho_v;
- the dominant modality m (rho_m > 1) gets k_m = 1 - tanh(alpha * relu(rho_m)), the other k = 1.
  The authors' code applies relu to rho itself, so k drops to 1 - tanh(alpha) as soon as rho passes 1;
  the paper's Eq. 10 (1 - tanh(alpha * rho)) agrees: that is the default here (form "code"). Form
  "paper" uses relu(rho - 1), which is in neither (METHODS.md): an ablation whose value name is kept
  only because the parameter schema (workflow/schemas/methods.schema.yaml) spells it so;
- after backward, inside the modulation window and after the warm-up, the gradients of the encoders'
  4-D (convolution) weights only are scaled by k (not BatchNorm, not the fusion head);
- OGM-GE also adds N(0, sigma^2) to each such gradient, sigma the std of that unmodulated gradient tensor
  plus 1e-8; as in the authors' code, both encoders get the noise (the weaker one with k = 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bml.methods.base import Batch, Method, StepContext, two_modalities
from bml.models.model import Output


def modulation_coefficients(
    logits_a: torch.Tensor, logits_v: torch.Tensor, labels: torch.Tensor, alpha: float, form: str = "code"
) -> tuple[float, float]:
    """(k_a, k_v) for one batch; the non-dominant modality (and both, on a tie) keeps 1.0."""
    if form not in ("code", "paper"):
        raise ValueError(f"form must be 'code' or 'paper', got {form!r}")
    with torch.no_grad():
        s_a = F.softmax(logits_a.float(), dim=1).gather(1, labels[:, None]).sum().item()
        s_v = F.softmax(logits_v.float(), dim=1).gather(1, labels[:, None]).sum().item()
    rho_a = s_a / max(s_v, 1e-12)
    rho_v = s_v / max(s_a, 1e-12)

    def k(rho: float) -> float:
        x = rho if form == "code" else rho - 1.0
        return 1.0 - math.tanh(alpha * max(x, 0.0))

    if rho_a > 1.0:
        return k(rho_a), 1.0
    if rho_v > 1.0:
        return 1.0, k(rho_v)
    return 1.0, 1.0


def modulate_conv_gradients(encoder: nn.Module, k: float, gaussian_noise: bool) -> int:
    """grad <- k * grad (+ N(0, std(grad)^2) for OGM-GE) on the encoder's 4-D weight gradients; returns how many."""
    touched = 0
    for param in encoder.parameters():
        if param.grad is None or param.grad.dim() != 4:
            continue
        if gaussian_noise:
            std = param.grad.std().item() + 1e-8
            param.grad.mul_(k).add_(torch.randn_like(param.grad) * std)
        else:
            param.grad.mul_(k)
        touched += 1
    return touched


class OGMGE(Method):
    """OGM-GE (CVPR 2022): gradient modulation with Gaussian-noise generalisation enhancement."""

    gaussian_noise = True

    def active(self, epoch: int) -> bool:
        p = self.params
        return epoch >= p["warmup_epochs"] and p["modulation_starts"] <= epoch <= p["modulation_ends"]

    def after_backward(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> None:
        a, v = two_modalities(self.run, self.spec.title)
        z = model.unimodal_logits(out.features)
        k_a, k_v = modulation_coefficients(z[a], z[v], batch.labels, self.params["alpha"], self.params["form"])
        on = self.active(ctx.epoch)
        if on:
            modulate_conv_gradients(model.encoders[a], k_a, self.gaussian_noise)
            modulate_conv_gradients(model.encoders[v], k_v, self.gaussian_noise)
        self.record(f"coef_{a}", k_a if on else 1.0)
        self.record(f"coef_{v}", k_v if on else 1.0)
        self.record("modulated_steps", float(on and min(k_a, k_v) < 1.0))


class OGM(OGMGE):
    """OGM (TPAMI 2024): the same coefficients, without the Gaussian noise."""

    gaussian_noise = False
