"""BOGC-MML, bml's reading: per-dimension gradient weights from the gradients' uncertainty, fused by Dempster.

Guo, Wang, Guo, Li, Sun, Zheng & Qiang, "Multi-Modal Learning with Bayesian-Oriented Gradient Calibration",
arXiv 2505.23071 v1 (2025; v2/v3 retitled "Rethinking Multi-Modal Learning from Gradient Uncertainty"). No
authors' code was found in the stored copies.

What bml could verify (the abstracts of v1 and v3 and third-party summaries: sciencestack.ai and
themoonlight.io; the method section itself was not readable here, so this is "bml's reading", flagged in its
title):

- training combines uni-modal losses and the fused loss (v3, Introduction and its Figure 2); instead of fixed
  weights for their gradients, each gradient is a random variable with a distribution (Gaussian; mean and
  variance by Monte Carlo moment matching), per dimension;
- the precision (inverse variance) of each distribution becomes evidence, per dimension (subjective logic,
  Dirichlet evidence); the evidences are fused with a reduced Dempster-Shafer rule, and the resulting
  uncertainty-weighted aggregation is the update.

bml's reading (docs/methods.md, "BOGC-MML"); every open choice is a parameter (params/methods/bogc.yaml):

- sources: the losses whose gradient reaches a parameter. With a fusion head and a linear head per encoder,
  encoder m has two, the fused loss L_mm and its uni-modal loss L_m; the heads have one each, and keep it;
- mean and variance per dimension: where v1 (by its summaries) samples a Laplace posterior of the last layer,
  bml takes the Monte Carlo samples from the batch (no Hessian, every encoder parameter): it is split into
  `chunks` parts; each
  part's mean loss gives a gradient g_c; mu = sum_c (n_c / N) g_c is the batch gradient exactly, and
  var = S / (S - 1) * sum_c (n_c / N)^2 (g_c - mu)^2 the variance of that mean (var / S for equal parts);
- evidence e = evidence_scale * q, with q = mu^2 / var (`evidence: snr`, the precision of the gradient measured
  in units of itself, so the evidence does not depend on the loss's scale) or q = 1 / var (`precision`, as the
  paper words it, scale-dependent);
- each source's opinion on "my gradient is reliable": belief b = e / (e + W), uncertainty u = W / (e + W)
  (W = `prior_weight`). Dempster's rule on the frame of sources, each source's mass on its own singleton and
  the rest on the whole frame (the reduced rule: singletons and the frame only), then the pignistic share of
  each source: w_k = m({k}) + m(frame) / K. In closed form (dividing every mass by prod_j u_j)
  w_k = (K e_k + W) / (K (W + sum_j e_j)): no 0/0 when every source is certain;
- the calibrated gradient, per dimension: K * sum_k w_k mu_k. Equal evidence gives the plain sum of the
  gradients (joint plus uni-modal training); a far more certain source takes nearly all of it.

Costlier by design: 2 x `chunks` gradient passes per step besides the usual backward (one for L_mm, one for the
uni-modal losses together, whose gradients reach disjoint encoders, per chunk). A batch too small to split
(fewer than 2 samples) has no variance: zero evidence, so the plain sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bml.methods.base import Batch, StepContext, WithUnimodalHeads
from bml.models.model import Output

TINY = 1e-30  # added to variances (in float64): a zero variance gives a finite, very large evidence


def chunk_moments(grads: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, variance of the mean) per dimension of S chunk gradients (S, D) of chunks of `sizes` samples."""
    w = (sizes / sizes.sum()).to(grads).unsqueeze(1)  # (S, 1), on the gradients' device
    mean = (w * grads).sum(0)
    s = grads.shape[0]
    if s < 2:
        return mean, torch.full_like(mean, float("inf"))  # no spread to measure: no evidence
    var = s / (s - 1) * (w.pow(2) * (grads - mean).pow(2)).sum(0)
    return mean, var


def evidence_of(mean: torch.Tensor, var: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    """Evidence per dimension: scale * mean^2 / var (snr) or scale / var (precision); 0 where var is infinite."""
    q = mean.pow(2) / (var + TINY) if kind == "snr" else 1.0 / (var + TINY)
    return scale * torch.where(torch.isinf(var), torch.zeros_like(q), q)


def dempster_weights(evidence: torch.Tensor, prior_weight: float) -> torch.Tensor:
    """Each source's share (K, D) from its evidence (K, D): the pignistic probability of the reduced Dempster
    combination of the sources' opinions, w_k = (K e_k + W) / (K (W + sum_j e_j)); each column sums to 1."""
    k = evidence.shape[0]
    return (k * evidence + prior_weight) / (k * (prior_weight + evidence.sum(0)))


def calibrated(means: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """K * sum_k w_k mu_k per dimension: equal weights give the plain sum of the K gradients."""
    return means.shape[0] * (weights * means).sum(0)


class BOGC(WithUnimodalHeads):
    """BOGC-MML (bml's reading): each encoder's fused and uni-modal gradients merged per dimension by their
    Dempster-fused reliability. Any fusion head and any number of modalities (the uni-modal heads are its own)."""

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        y = batch.labels
        rows = {"mm": F.cross_entropy(out.logits, y, reduction="none")}
        rows |= {m: F.cross_entropy(model.heads[m](out.features[m]), y, reduction="none") for m in model.modalities}
        self._rows = rows  # per-sample losses for backward's chunks, this step only
        return {name: r.mean() for name, r in rows.items()}

    def backward(self, model: nn.Module, losses: dict[str, torch.Tensor], ctx: StepContext) -> None:
        rows, self._rows = self._rows, None
        enc = {m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in model.modalities}
        flat = [p for m in model.modalities for p in enc[m]]
        uni_rows = sum(rows[m] for m in model.modalities)  # each L_m reaches its own encoder only
        parts = torch.arange(rows["mm"].shape[0], device=rows["mm"].device).tensor_split(self.params["chunks"])
        parts = [p for p in parts if len(p)]
        sizes = torch.tensor([float(len(p)) for p in parts])
        per_source = {"mm": [], "uni": []}  # source -> [chunk] -> (D,) over every encoder parameter
        with _backward_precision(ctx):
            for part in parts:
                for source, r in (("mm", rows["mm"]), ("uni", uni_rows)):
                    grads = torch.autograd.grad(r[part].mean(), flat, retain_graph=True, allow_unused=True)
                    per_source[source].append(_flatten(grads, flat))
        correction = []
        start = 0
        for m in model.modalities:
            n = sum(p.numel() for p in enc[m])
            means, evidence = [], []
            for source in ("mm", "uni"):
                g = torch.stack([c[start : start + n] for c in per_source[source]]).double()  # (S, D_m)
                mean, var = chunk_moments(g, sizes)
                means.append(mean)
                evidence.append(evidence_of(mean, var, self.params["evidence"], self.params["evidence_scale"]))
            means, weights = torch.stack(means), dempster_weights(torch.stack(evidence), self.params["prior_weight"])
            delta = calibrated(means, weights) - means.sum(0)  # what the plain backward below lacks
            correction.append(delta)
            self.record(f"fusion_weight_{m}", weights[0].mean().item())
            start += n
        delta = torch.cat(correction).to(flat[0].dtype) if flat else None
        # the plain sum of the losses through the loop's services (scaler, accumulation), plus <p, delta> whose
        # gradient is delta: encoders get the calibrated gradient, the heads their own loss's
        surrogate = sum(losses.values())
        offset = 0
        for p in flat:
            surrogate = surrogate + (p * delta[offset : offset + p.numel()].view_as(p)).sum()
            offset += p.numel()
        ctx.backward(surrogate)


def _flatten(grads: tuple[torch.Tensor | None, ...], params: list[torch.Tensor]) -> torch.Tensor:
    pairs = zip(grads, params, strict=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in pairs])


def _backward_precision(ctx: StepContext):
    """Gradients outside autocast, as the loop's backward takes them (bml/methods/base.py: StepServices)."""
    services = ctx.services
    return torch.autocast(services.device_type, enabled=False)
