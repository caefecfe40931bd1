"""OGM and OGM-GE: on-the-fly gradient modulation.

Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient Modulation", CVPR 2022 (OGM-GE), and
Wei et al., "On-the-fly Modulation for Balanced Multimodal Learning", TPAMI 2024 (OGM). Formulas and
defaults from the papers and the authors' code (GeWu-Lab/OGM-GE_CVPR2022 main.py, GeWu-Lab/BML_TPAMI2024
code/main.py and code/scripts/train_ogm.sh; docs/methods.md):

- per step, from the fusion head's uni-modal logits: s_m = sum over the batch of softmax(z_m)[y];
  rho_v = s_v / s_a, rho_a = 1 / rho_v;
- the dominant modality m (rho_m > 1) gets k_m = 1 - tanh(alpha * relu(rho_m)), the other k = 1
  (`form: standard`: both codes, and the paper's Eq. 10 as the CVPR code quotes it). `form: shifted`,
  relu(rho_m - 1), is in neither paper nor code: an ablation only;
- after backward, inside the modulation window (`modulation_starts <= epoch <= modulation_ends`, 0-based,
  as both codes) and after the warm-up (TPAMI code: none while `epoch <= 5`, i.e. `warmup_epochs: 6`), the
  gradients of the encoders' 4-D (convolution) weights only are scaled by k (not BatchNorm, not the head);
- `noise: true` (GE) also adds N(0, sigma^2) to each such gradient, sigma the std of that unmodulated
  gradient tensor plus 1e-8; as in both codes, both encoders get the noise (the weaker one with k = 1).
  The TPAMI code runs OGM with the noise (`--modulation OGM_GE` is its default and its script keeps it), and
  BalanceBenchmark's OGM row is `method: 'OGM_GE'`: so `ogm` has the noise; `ogm_noise_free` is the ablation.

Epoch numbers (warm-up, window) are written for a `reference_epochs`-epoch schedule and scale with the
protocol's length (bml/methods/base.py: scale_epoch): OGM-GE's 0-50 of 100 epochs is 0-10 of 20.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bml.methods import MethodSpec
from bml.methods.base import Batch, Method, RunContext, StepContext, scale_epoch, two_modalities
from bml.models.model import Output

FORMS = ("standard", "shifted")


def modulation_coefficients(
    logits_a: torch.Tensor, logits_v: torch.Tensor, labels: torch.Tensor, alpha: float, form: str = "standard"
) -> tuple[float, float]:
    """(k_a, k_v) for one batch; the non-dominant modality (and both, on a tie) keeps 1.0."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    with torch.no_grad():
        s_a = F.softmax(logits_a.float(), dim=1).gather(1, labels[:, None]).sum().item()
        s_v = F.softmax(logits_v.float(), dim=1).gather(1, labels[:, None]).sum().item()
    rho_a = s_a / max(s_v, 1e-12)
    rho_v = s_v / max(s_a, 1e-12)

    def k(rho: float) -> float:
        x = rho if form == "standard" else rho - 1.0
        return 1.0 - math.tanh(alpha * max(x, 0.0))

    if rho_a > 1.0:
        return k(rho_a), 1.0
    if rho_v > 1.0:
        return 1.0, k(rho_v)
    return 1.0, 1.0


def modulate_conv_gradients(encoder: nn.Module, k: float, gaussian_noise: bool) -> int:
    """grad <- k * grad (+ N(0, std(grad)^2) with GE) on the encoder's 4-D weight gradients; returns how many."""
    touched = 0
    for param in encoder.parameters():
        if param.grad is None or param.grad.dim() != 4:
            continue
        if gaussian_noise:
            # stays on the device (no .item(): one sync per layer on a GPU); in float64 like the authors' .item()
            std = param.grad.std().double() + 1e-8
            param.grad.mul_(k).add_(torch.randn_like(param.grad) * std)
        else:
            param.grad.mul_(k)
        touched += 1
    return touched


class OGM(Method):
    """OGM (TPAMI 2024), OGM-GE (CVPR 2022) and the noise-free ablation: one rule, told apart by parameters."""

    def __init__(self, spec: MethodSpec, params: dict, run: RunContext) -> None:
        super().__init__(spec, params, run)
        p, epochs = self.params, run.epochs
        # the schedule on this run's length (base.scale_epoch); kept for the history and the tests
        self.warmup = scale_epoch(p["warmup_epochs"], epochs, p["reference_epochs"])
        self.starts = scale_epoch(p["modulation_starts"], epochs, p["reference_epochs"])
        self.ends = scale_epoch(p["modulation_ends"], epochs, p["reference_epochs"])

    def active(self, epoch: int) -> bool:
        return epoch >= self.warmup and self.starts <= epoch <= self.ends

    def after_backward(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> None:
        a, v = two_modalities(self.run, self.spec.title)
        z = model.unimodal_logits(out.features)
        k_a, k_v = modulation_coefficients(z[a], z[v], batch.labels, self.params["alpha"], self.params["form"])
        on = self.active(ctx.epoch)
        if on:
            modulate_conv_gradients(model.encoders[a], k_a, self.params["noise"])
            modulate_conv_gradients(model.encoders[v], k_v, self.params["noise"])
        self.record(f"coef_{a}", k_a if on else 1.0)
        self.record(f"coef_{v}", k_v if on else 1.0)
        self.record("modulated_steps", float(on and min(k_a, k_v) < 1.0))
