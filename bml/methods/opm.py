"""OPM: on-the-fly prediction modulation.

Wei et al., "On-the-fly Modulation for Balanced Multimodal Learning", TPAMI 2024. Formulas and defaults
from the paper and the authors' code (GeWu-Lab/BML_TPAMI2024 code/main.py, code/scripts/train_opm.sh;
docs/methods.md):

- per step, from the fusion head's uni-modal logits (no gradient through them): s_m = sum over the batch
  of softmax(z_m)[y]; dominance r_m = tanh(relu(s_m / s_other - 1));
- drop probability q_m = q_base * (1 + lambda * r_m) where r_m > 0, else 0, clipped to [0, 1]: only the
  dominant modality is ever dropped;
- with probability p_exe per step (after the warm-up: the TPAMI code drops nothing while `epoch <= 5`,
  i.e. `warmup_epochs: 6`, scaled to the protocol's length by base.scale_epoch): per sample, the dominant
  modality's feature is zeroed with probability q_m; every feature is rescaled by 1 / (1 - theta),
  theta = sum_m d_m q_m / sum_m d_m (d_m the feature width), so the fused input keeps its expected
  magnitude; a sample that lost every modality leaves the batch. The head then sees the dropped features,
  so the weaker modality must carry those samples alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bml.methods import MethodSpec
from bml.methods.base import Batch, Method, RunContext, StepContext, labels_of, scale_epoch, two_modalities
from bml.models.model import Output


def _score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return F.softmax(logits.detach().float(), dim=1).gather(1, labels[:, None]).sum().item()


def drop_probabilities(
    logits_a: torch.Tensor, logits_v: torch.Tensor, labels: torch.Tensor, q_base: float, lam: float
) -> tuple[float, float]:
    """(q_a, q_v): the dominant modality's drop probability, 0.0 for the other (and for both on a tie)."""
    s_a, s_v = _score(logits_a, labels), _score(logits_v, labels)

    def q(s_m: float, s_other: float) -> float:
        r = math.tanh(max(s_m / max(s_other, 1e-12) - 1.0, 0.0))
        return min(max(q_base * (1.0 + lam * r), 0.0), 1.0) if r > 0 else 0.0

    return q(s_a, s_v), q(s_v, s_a)


def drop_features(
    f_a: torch.Tensor, f_v: torch.Tensor, q_a: float, q_v: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample Bernoulli(1 - q_m) masks on each feature, every feature rescaled by 1 / (1 - theta).

    Returns the masked, rescaled features of the whole batch and the two keep masks (B,); the caller
    removes the samples where both masks are False.
    """
    n = f_a.shape[0]
    keep_a = torch.rand(n, device=f_a.device, generator=generator) >= q_a  # (B,) True: keep
    keep_v = torch.rand(n, device=f_v.device, generator=generator) >= q_v
    d_a, d_v = f_a.shape[1], f_v.shape[1]
    theta = (d_a * q_a + d_v * q_v) / (d_a + d_v)
    scale = 1.0 / (1.0 - theta) if theta < 1.0 else 1.0
    return (f_a * keep_a[:, None].to(f_a.dtype) * scale, f_v * keep_v[:, None].to(f_v.dtype) * scale, keep_a, keep_v)


class OPM(Method):
    """OPM (TPAMI 2024): drop the dominant modality's features on the fly, in proportion to its lead."""

    def __init__(self, spec: MethodSpec, params: dict, run: RunContext) -> None:
        super().__init__(spec, params, run)
        # the warm-up on this run's length (base.scale_epoch): 6 of 100 epochs is 1 of 20
        self.warmup = scale_epoch(self.params["warmup_epochs"], run.epochs, self.params["reference_epochs"])

    def active(self, epoch: int) -> bool:
        return epoch >= self.warmup

    def on_features(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> Output:
        a, v = two_modalities(self.run, self.spec.title)
        with torch.no_grad():
            z = model.unimodal_logits({m: f.detach() for m, f in out.features.items()})
        q_a, q_v = drop_probabilities(z[a], z[v], batch.labels, self.params["q_base"], self.params["lam"])
        self.record(f"drop_prob_{a}", q_a)
        self.record(f"drop_prob_{v}", q_v)
        # the per-step draw comes first and always, so the random stream does not depend on the scores
        execute = torch.rand((), device=out.logits.device).item() < self.params["p_exe"] and self.active(ctx.epoch)
        self.record("dropped_steps", float(execute and max(q_a, q_v) > 0))
        if not execute or max(q_a, q_v) == 0.0:
            self.record(f"kept_{a}", 1.0)
            self.record(f"kept_{v}", 1.0)
            return out
        f_a, f_v, keep_a, keep_v = drop_features(out.features[a], out.features[v], q_a, q_v)
        self.record(f"kept_{a}", keep_a.float().mean().item())
        self.record(f"kept_{v}", keep_v.float().mean().item())
        kept = torch.nonzero(keep_a | keep_v).squeeze(1)  # (B',) samples that kept some modality
        return Output(model.fusion({a: f_a[kept], v: f_v[kept]}), out.features, keep=kept)

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        labels = labels_of(out, batch)
        if labels.numel() == 0:  # every sample lost every modality (only when both q are 1): nothing to learn
            return {"ce": out.logits.sum() * 0.0}
        return {"ce": F.cross_entropy(out.logits, labels)}
