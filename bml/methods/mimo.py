"""MIMO, bml's reading: the fused loss plus a penalty on a smooth maximum of the uni-modal losses.

Fernando, Ram, Zhou, Dan, Samulowitz, Baracaldo & Chen, "Mitigating Modality Imbalance in Multi-modal Learning
via Multi-objective Optimization", arXiv 2511.06686 (2025); authors' code announced at heshandevaka/MIMO.

What bml could verify (the stored copies hold the abstract, the repository's README and third-party summaries;
neither the method section nor the code was readable here, so this is "bml's reading", flagged in its title):

- the paper recasts multi-modal learning as a lexicographic multi-objective problem whose first priority is the
  worst uni-modal objective (max over modalities of L_m), while the fused loss L_mm is kept (abstract; summary
  at sciencestack.ai/paper/2511.06686);
- it is solved by plain gradient steps on a smoothly penalised objective that combines L_mm and the uni-modal
  losses, with a smooth approximation of the max over modalities; no per-step quadratic programme (that is
  the ~20x saving over MGDA-style solvers the abstract reports).

bml's reading of that objective (docs/methods.md, "MIMO"):

    F = L_mm + gamma * mu * log sum_m exp(L_m / mu)

mu * logsumexp(L / mu) lies between max_m L_m and max_m L_m + mu log M, so mu -> 0 is the hard max. Its
gradient with respect to L_m is softmax(L / mu)_m: the step weights each uni-modal loss by how far behind that
modality is, the worst one most; the weights sum to one, so gamma is the whole penalty's weight. Open choices,
each a parameter (params/methods/mimo.yaml): gamma (the penalty weight, held constant over the run; a penalty
method may grow it, bml does not), mu (the smoothing temperature).

Uni-modal losses L_m come from a linear head per encoder (ModelSpec.unimodal_heads): the method needs them, as
the paper's uni-modal objectives need a classifier per modality; they are trained by their L_m only, the fusion
head by L_mm. acc_<m> is read from those heads, as for MMPareto.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bml.methods.base import Batch, StepContext, WithUnimodalHeads
from bml.models.model import Output


def smooth_max(losses: torch.Tensor, mu: float) -> torch.Tensor:
    """mu * log sum_m exp(L_m / mu) of the (M,) uni-modal losses: the max, smoothed (exact as mu -> 0)."""
    return mu * torch.logsumexp(losses / mu, dim=0)


def worst_first_weights(losses: torch.Tensor, mu: float) -> torch.Tensor:
    """d smooth_max / d L_m = softmax(L / mu): each uni-modal loss's weight in the step (sum 1, worst largest)."""
    return torch.softmax(losses.detach() / mu, dim=0)


class MIMO(WithUnimodalHeads):
    """MIMO (bml's reading): L_mm + gamma * smooth max of the uni-modal losses, by plain gradient steps.

    Any fusion head and any number of modalities (the uni-modal heads are its own)."""

    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        y = batch.labels
        mu, gamma = self.params["mu"], self.params["gamma"]
        uni = torch.stack([F.cross_entropy(model.heads[m](out.features[m]), y) for m in model.modalities])
        for m, w, loss_m in zip(model.modalities, worst_first_weights(uni, mu), uni, strict=True):
            self.record(f"worst_weight_{m}", w.item())
            self.record(f"uni_loss_{m}", loss_m.item())
        # the two terms sum to F, so the history's train_loss is the objective itself
        return {"mm": F.cross_entropy(out.logits, y), "worst": gamma * smooth_max(uni, mu)}
