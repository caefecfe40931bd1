"""Diagnosing & Re-learning: re-initialise each encoder in proportion to how much it over-fits.

Wei, Li, Feng & Hu, "Diagnosing and Re-learning for Balanced Multimodal Learning", ECCV 2024. Formulas and
defaults from the paper and the authors' code (GeWu-Lab/Diagnosing_Relearning_ECCV2024 code/ours.py,
code/script/ours.sh; docs/methods.md):

- diagnosis of encoder m: its features on the training set and on a held-out set, each min-max scaled to
  [-1, 1], clustered by k-means with k = the number of classes (fixed random_state); cluster purity
  against the labels on each; gap_m = |purity_train - purity_heldout|; w_m = tanh(lambda * gap_m);
- re-learning: every parameter of encoder m (not the BatchNorm buffers) moves towards the model's own
  initial state, theta_m <- w_m * theta_m,init + (1 - w_m) * theta_m: an encoder whose clusters are
  much purer on train than on held-out data (it memorises) is reset more;
- schedule: the authors' code (GeWu-Lab/Diagnosing_Relearning_ECCV2024 code/ours.py) re-learns after the
  0-based epoch `e` with `e % reinit_epoch == 0 and e > 0`, at most `reinit_num` times: after epochs 20, 40
  and 60 (0-based, i.e. after 21, 41 and 61 epochs) of a 90-epoch run; multimodal cross-entropy only;
- order: that code validates the epoch's model first (ours.py line 386) and diagnoses and re-learns after
  (lines 418-427), so the validation, test record and best checkpoint of a re-learning epoch see the model
  before its reset: bml re-learns in `after_validation` (bml/methods/base.py);
- the initial state is the model's as training starts, after the protocol's `train.init` (ours.py line 345
  saves it right after building the model).

bml's choices, said here and in params/methods/relearning.yaml:
- the held-out set is the validation split (carved from train; test is never looked at);
- the training features are subsampled to the held-out set's size (`match_heldout_size`): k-means purity
  falls with the number of samples, so a 120-sample validation split against 840 training samples shows
  a purity gap of about 0.11 on pure noise (measured: 0.263 vs 0.156), which alone would give w = 0.31;
- the schedule scales with the protocol's length by the rule every method's schedule follows
  (bml/methods/base.py: scale_epoch), so a 20-epoch protocol re-learns after 0-based epochs 4, 9 and 13
  rather than once at its very end; never after the last epoch (nothing would train on the result).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from bml.methods.base import EpochContext, Method, scale_epoch
from bml.models.model import ModelSpec


def _scale(features: np.ndarray) -> np.ndarray:
    """Min-max scale each column to [-1, 1]; a constant column becomes 0."""
    lo, hi = features.min(0, keepdims=True), features.max(0, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, 2.0 * (features - lo) / span - 1.0, 0.0)


def cluster_purity(features: np.ndarray, labels: np.ndarray, n_clusters: int, seed: int, n_init: int = 10) -> float:
    """Share of samples whose k-means cluster's majority label is their own label, in [0, 1]."""
    features = _scale(np.asarray(features, dtype=np.float64))
    labels = np.asarray(labels)
    # k = the number of classes, as the authors; a held-out set smaller than that (a tiny test dataset) caps it
    k = min(n_clusters, len(features))
    assign = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit_predict(features)
    majority = sum(np.bincount(labels[assign == c]).max() for c in np.unique(assign))
    return float(majority) / len(labels)


def relearn_weight(purity_train: float, purity_heldout: float, lam: float) -> float:
    """w = tanh(lambda * |purity_train - purity_heldout|), in [0, 1)."""
    return math.tanh(lam * abs(purity_train - purity_heldout))


def relearn_epochs(every: int, times: int, reference_epochs: int, epochs: int) -> list[int]:
    """0-based epochs after which to re-learn: every `every`-th of `reference_epochs` (not epoch 0), at most
    `times`, scaled to `epochs` (base.scale_epoch); never after the run's last epoch."""
    found = [scale_epoch(k * every, epochs, reference_epochs) for k in range(1, times + 1)]
    return sorted({e for e in found if 1 <= e <= epochs - 2})


@torch.no_grad()
def blend_towards(module: nn.Module, initial: dict[str, torch.Tensor], weight: float) -> None:
    """theta <- weight * theta_init + (1 - weight) * theta for every parameter (buffers are left alone)."""
    for name, param in module.named_parameters():
        param.mul_(1.0 - weight).add_(initial[name].to(param.device), alpha=weight)


class Relearning(Method):
    """Diagnosing & Re-learning (ECCV 2024): per-encoder soft re-initialisation on a schedule."""

    def build_model(self, spec: ModelSpec) -> nn.Module:
        p = self.params
        self.schedule = relearn_epochs(p["every"], p["times"], p["reference_epochs"], self.run.epochs)
        self.initial = None  # taken as the first epoch starts: the loop initialises the model after build_model
        return super().build_model(spec)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        if self.initial is None:  # kept in state_dict, so a resumed run blends towards the same state
            self.initial = {
                m: {n: p.detach().clone().cpu() for n, p in enc.named_parameters()}
                for m, enc in ctx.model.encoders.items()
            }

    def after_validation(self, ctx: EpochContext) -> None:
        if ctx.epoch not in self.schedule:
            return
        train, heldout = self.run.collect(ctx.model, "train_eval"), self.run.collect(ctx.model, "val")
        n_train, n_held = len(train["label"]), len(heldout["label"])
        pick = np.arange(n_train)
        if self.params["match_heldout_size"] and n_train > n_held:
            # its own generator: the diagnosis leaves the training's random stream alone
            rng = np.random.default_rng([self.run.seed, ctx.epoch])
            pick = np.sort(rng.choice(n_train, n_held, replace=False))
        seed, n_init = self.params["kmeans_seed"], self.params["kmeans_n_init"]
        for m, encoder in ctx.model.encoders.items():
            p_train = cluster_purity(train["features"][m][pick], train["label"][pick], self.run.n_classes, seed, n_init)
            p_held = cluster_purity(heldout["features"][m], heldout["label"], self.run.n_classes, seed, n_init)
            w = relearn_weight(p_train, p_held, self.params["lam"])
            blend_towards(encoder, self.initial[m], w)
            self.record(f"purity_train_{m}", p_train)
            self.record(f"purity_heldout_{m}", p_held)
            self.record(f"relearn_weight_{m}", w)

    def state_dict(self) -> dict:
        return {"initial": self.initial}

    def load_state_dict(self, state: dict) -> None:
        self.initial = state["initial"]
