"""PMR: prototypical modal rebalance.

Fan, Xu, Wei, Wang & Hu, "PMR: Prototypical Modal Rebalance for Multimodal Learning", CVPR 2023. The formulas
follow the authors' code, fanyunfeng-bit/Modal-Imbalance-PMR at 3615e48 (main_Prototype_grad.py, "the code"
below; docs/methods.md):

- class prototypes c_m,k: the mean feature of encoder m over the samples of class k, with the model in eval mode
  and no gradient, over the first tenth of the batches of the shuffled training loader (calculate_prototype,
  lines 383-441: `sample_count >= all_num // 10` stops it, which still reads one batch when the loader has fewer
  than 20); computed once before training and again after every epoch, with the moving average
  c = (1 - m) c_new + m c_old (m = `momentum_coef`, 0.2) except after epoch 0 (the code passes the epoch just
  trained and averages only when it is > 0, lines 435-440): so epochs 0 and 1 train on fresh prototypes and the
  average starts with epoch 2;
- prototype logits -|f_m - c_m,k|_2 (EU_dist, lines 69-75); L_PCE^m = CE of those (lines 152-153, 166-167);
- the rule (lines 156-178): with s_m = sum over the batch of softmax(-dist_m)[y], if s_a / s_v > 1 the visual
  term gets weight alpha and the audio term 0, if < 1 the reverse, on a tie neither; the loss is
  CE(z) + those weighted terms, inside `modulation_starts <= epoch <= modulation_ends` (0-based, 0-100 of 150
  epochs: argparse defaults, lines 37-49); outside, CE(z) alone;
- the prototypes are constants to the loss: the PCE gradient reaches the encoders only.

Paper and code differ: the paper's loss also has an entropy regularisation of the prototype predictions, and
scales the PCE terms with a coefficient from the scores' ratio; the code (the published numbers' source) has
neither and switches a fixed alpha on the weaker modality only. bml follows the code; the entropy term is
not implemented (its exact form is unverified: docs/methods.md).

bml's choices, said in params/methods/pmr.yaml too:
- the prototype batches come from a fresh shuffle of the training split drawn from (seed, epoch) and the
  training frames of that epoch (the code's second pass over its shuffled training loader), so a resumed run
  computes the same prototypes; `proto_share` (0.1) is the code's tenth, at least one batch;
- a class that none of those batches holds (the code divides by its zero count: NaN) keeps its previous
  prototype; batches are read on until every class has a sample or the split ends, so the first prototypes
  exist for every class that the training split holds;
- prototypes are computed at the start of each epoch from the model as the previous epoch left it (the same
  model as the code's end-of-epoch pass), and not after the window has ended (nothing reads them then);
- the window scales with the protocol's length (bml/methods/base.py: scale_epoch): 0-100 of 150 is 0-11 of 16.

Works with every fusion head (it reads only the encoders' features) on two modalities.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bml.data.loader import prepare_inputs
from bml.methods import MethodSpec
from bml.methods.base import Batch, EpochContext, Method, RunContext, StepContext, scale_epoch, two_modalities
from bml.models.model import Output

STREAM = 0x504D52  # "PMR": the prototype batches' own random stream, apart from the training order's


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """-|f_i - c_k|_2 for every sample i and class k: (B, D), (C, D) -> (B, C), in float32 whatever the autocast.
    A distance of exactly 0 has no direction: its gradient is 0, not the NaN of the square root's derivative."""
    squared = (features.float()[:, None, :] - prototypes.float()[None, :, :]).pow(2).sum(-1)  # (B, C)
    return -squared.clamp_min(1e-12).sqrt()


def prototype_score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """sum over the batch of softmax(prototype logits)[y]."""
    return F.softmax(logits.detach().float(), dim=1).gather(1, labels[:, None]).sum().item()


def pce_weights(score_a: float, score_v: float, alpha: float) -> tuple[float, float]:
    """(w_a, w_v): alpha on the modality whose prototypes fit worse, 0 on the other; (0, 0) on a tie.
    The code's ratio s_a / s_v > 1, written as a comparison (no division by a zero score)."""
    if score_a > score_v:
        return 0.0, alpha
    if score_a < score_v:
        return alpha, 0.0
    return 0.0, 0.0


def class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums' means (C, D) and counts (C,); a class without samples has mean 0 and count 0."""
    sums = torch.zeros(n_classes, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, labels, features.double())
    counts = torch.bincount(labels, minlength=n_classes)
    means = sums / counts.clamp_min(1)[:, None]
    return means.to(features.dtype), counts


def update_prototypes(
    new: torch.Tensor, counts: torch.Tensor, old: torch.Tensor | None, momentum: float, average: bool
) -> torch.Tensor:
    """c = (1 - m) c_new + m c_old when `average`, else c_new; a class without samples keeps c_old (0 if none)."""
    seen = (counts > 0)[:, None]
    if old is None:
        return torch.where(seen, new, torch.zeros_like(new))
    blended = (1.0 - momentum) * new + momentum * old if average else new
    return torch.where(seen, blended, old)


class PMR(Method):
    """PMR (CVPR 2023): a prototype cross-entropy on the modality whose features fit its class prototypes worse."""

    def __init__(self, spec: MethodSpec, params: dict, run: RunContext) -> None:
        super().__init__(spec, params, run)
        p = self.params
        self.starts = scale_epoch(p["modulation_starts"], run.epochs, p["reference_epochs"])
        self.ends = scale_epoch(p["modulation_ends"], run.epochs, p["reference_epochs"])
        self.prototypes: dict[str, torch.Tensor] = {}  # modality -> (C, D), what the epoch's steps read
        self.computed = -1  # the epoch whose start computed them (-1: never)

    def active(self, epoch: int) -> bool:
        return self.starts <= epoch <= self.ends

    # the prototypes ---------------------------------------------------------------------------------
    def prototype_indices(self, epoch: int, n: int, batch_size: int, labels: np.ndarray) -> np.ndarray:
        """The samples the epoch's prototypes average: whole batches of a fresh (seed, epoch) shuffle, the
        share `proto_share` of them (at least one), then on until every class present in `labels` is seen."""
        order = np.random.default_rng([self.run.seed, epoch, STREAM]).permutation(n)
        n_batches = math.ceil(n / batch_size)
        take = max(1, int(n_batches * self.params["proto_share"])) * batch_size
        wanted, seen = set(np.unique(labels).tolist()), set(labels[order[:take]].tolist())
        while seen != wanted and take < n:
            seen |= set(labels[order[take : take + batch_size]].tolist())
            take += batch_size
        return order[:take]

    @torch.no_grad()
    def compute_prototypes(self, model: nn.Module, epoch: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{modality: (class means, counts)} over the epoch's prototype batches, the model in eval mode."""
        split, config = self.run.splits["train"], self.run.config
        batch_size = config["train"]["batch_size"]
        chosen = self.prototype_indices(epoch, len(split), batch_size, split.labels)
        was_training = model.training
        model.eval()
        split.set_epoch(epoch)  # the frames (and crops) of this epoch's training, as the code's train loader
        features: dict[str, list[torch.Tensor]] = {m: [] for m in model.encoders}
        labels = []
        try:
            for start in range(0, len(chosen), batch_size):
                raw = split[chosen[start : start + batch_size].tolist()]
                inputs = {m: x.to(self.run.device) for m, x in raw["inputs"].items()}
                inputs = prepare_inputs(inputs, self.run.modalities, config["train"])
                for m, encoder in model.encoders.items():
                    features[m].append(encoder(inputs[m]).float())  # (b, D_m)
                labels.append(raw["label"].to(self.run.device))
        finally:
            model.train(was_training)
        y = torch.cat(labels)
        return {m: class_means(torch.cat(f), y, self.run.n_classes) for m, f in features.items()}

    def on_epoch_start(self, ctx: EpochContext) -> None:
        if ctx.epoch > self.ends:  # the window is over: nothing reads prototypes any more
            return
        a, v = two_modalities(self.run, self.spec.title)
        found = self.compute_prototypes(ctx.model, ctx.epoch)
        # the code averages from its third computation on (after epoch 1): see the module docstring
        average = ctx.epoch >= 2
        for m in (a, v):
            new, counts = found[m]
            self.prototypes[m] = update_prototypes(
                new, counts, self.prototypes.get(m), self.params["momentum"], average
            )
            self.record(f"proto_classes_{m}", float((counts > 0).sum().item()))
        self.computed = ctx.epoch

    # the step ---------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, out: Output, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        a, v = two_modalities(self.run, self.spec.title)
        y = batch.labels
        losses = {"ce": F.cross_entropy(out.logits, y)}
        if not self.active(ctx.epoch):  # CE alone; the same columns every epoch
            for m in (a, v):
                self.record(f"pce_weight_{m}", 0.0)
                losses[f"pce_{m}"] = out.logits.new_zeros(())
            return losses
        logits = {m: prototype_logits(out.features[m], self.prototypes[m]) for m in (a, v)}
        w_a, w_v = pce_weights(prototype_score(logits[a], y), prototype_score(logits[v], y), self.params["alpha"])
        for m, w in ((a, w_a), (v, w_v)):
            self.record(f"pce_weight_{m}", w)
            self.record(f"proto_acc_{m}", 100.0 * (logits[m].argmax(1) == y).float().mean().item())
            losses[f"pce_{m}"] = w * F.cross_entropy(logits[m], y)
        return losses

    # what it keeps ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"prototypes": {m: c.cpu() for m, c in self.prototypes.items()}, "computed": self.computed}

    def load_state_dict(self, state: dict) -> None:
        self.prototypes = {m: c.to(self.run.device) for m, c in state.get("prototypes", {}).items()}
        self.computed = state.get("computed", -1)
