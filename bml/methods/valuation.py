"""Sample-level modality valuation: value each modality per training sample, then re-sample the low-contributing one.

Wei, Feng, Wang & Hu, "Enhancing Multimodal Cooperation via Sample-level Modality Valuation", CVPR 2024
(arXiv 2309.06255). Facts from the authors' code, GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation at
7ed12b0 (paths under code/; docs/methods.md, "Sample-level modality valuation"); the paper's method and
implementation sections could not be read here (the stored copies hold its abstract), so where it might differ
from the code, bml runs the code:

- valuation (sample_level.py lines 75-153 and modality_level.py lines 79-179, `execute_modulation`): in eval
  mode, no gradient, over the whole training set with test-time transforms (its `train_val_dataloader`),
  the fused prediction with all features and with each modality's *pooled feature* zeroed before the fusion
  head (models/models.py, `exec_drop`, line 74 on: the encoders see the real inputs, the head's bias stays);
  the game v(S) = |S| if the prediction from S is right, else 0, and each modality's Shapley value
  phi_a = (v_a + v_av - v_v) / 2, phi_v likewise (sample_level.py lines 105-118): one of -0.5, 0, 0.5, 1,
  1.5 (bml/evaluate.py: feature_game, sample_shapley; the same game gives every run's shapley_<m>);
- warm-up (`--warmup 5`, sample_level.py lines 44, 141 and 321-336): epochs 0-4 train on the plain training set;
  after each epoch from epoch 4 on the valuation rebuilds the next epoch's training set, so from epoch 5 each
  epoch trains on the set re-sampled from the model as the previous epoch left it. bml values at the start of
  each epoch >= warmup_epochs (the same weights: validation changes none) and re-samples through
  `epoch_samples`;
- sample-level re-sampling (datasets/dataloader.py, `AV_KS_Dataset_sample_level`, lines 152-186): the
  originals stay; a sample whose phi_m is 0.5 gets 1 extra copy, 0 gets 2, -0.5 gets 3 (the code's bands
  0.4 < phi < 1, -0.1 < phi < 0.4, phi < -0.1), each copy keeping modality m only: the other modality's
  feature zeroed (models.py, `forward`, lines 62-67: drop 1 zeroes audio's pooled feature, drop 2 visual's),
  so the low-contributing modality must carry the copy alone;
- modality-level re-sampling (modality_level.py lines 143-161, dataloader.py `AV_KS_Dataset_modality_level`,
  lines 294-317): the mean phi of each modality over a random part (`--part_ratio 0.2`, drawn with
  replacement: np.random.choice(N, num)), gap_m = 1 - mean phi_m, int(alpha * |gap_a - gap_v| * 2 / 3 * N)
  copies of samples drawn with replacement, each keeping only the modality of the larger gap (on a tie the
  code keeps visual, but then no copy is made). The code's `func` alternatives (tanh, square) are not
  exposed by its command line: bml implements the default, linear.

What bml follows where sources differ:
- masks: at the feature level, as the code (`mask_level: feature`); `mask_level: input` zeroes the copies'
  inputs instead (the contract's default for other methods), an ablation only;
- the game's value: |S| * correct, as the authors' code. BalanceBenchmark's re-implementation
  (balancemm/evaluation/modalitys.py, `Calculate_Shapley_Sample`, lines 58-103) scores v(S) = correct only
  (phi_a = (c_a + c_av - c_v) / 2: half a point lower wherever the pair is right) and caches the subsets'
  results across batches (res_cache is never reset, so every batch reuses the first batch's predictions);
  its modality level ignores alpha, adds a plain duplicate beside each copy and zeroes inputs
  (balancemm/datasets/__init__.py lines 221-346): not followed (params/protocols/balancebench.yaml);
- the optimizer: both scripts' defaults (sample_level.py lines 40-61, modality_level.py lines 44-65 and their
  Adam betas 0.9/0.999, wd 1e-4): Adam lr 5e-5, StepLR(30, 0.1), 60 epochs, batch 64: params/protocols/
  valuation_cvpr24.yaml (modality_level.py defaulted to SGD lr 1e-3 until commit 7ed12b0, 2024-11-05);
- the random draws (modality level) come from generators seeded by (seed, epoch), never the global state,
  so a resumed run draws the same parts and copies.

BalanceBenchmark's "Modality valuation" row (params/published.yaml) is the modality-level variant
(configs/trainer_config.yaml Sample: method 'Modality-level', alpha 0.5, part_ratio 0.2, modulation_starts 1):
bml's `modality_valuation`, set so in params/protocols/balancebench.yaml.
"""

from __future__ import annotations

import numpy as np
import torch

from bml.evaluate import feature_game, sample_shapley
from bml.methods import MethodSpec
from bml.methods.base import EpochContext, Method, RunContext, Samples, scale_epoch, two_modalities

# the authors' bands around the two-modality Shapley values (dataloader.py lines 156-186): 0.5 -> 1, 0 -> 2, -0.5 -> 3
COPY_BANDS = ((0.4, 1.0, 1), (-0.1, 0.4, 2), (-np.inf, -0.1, 3))


def sample_copies(phi: np.ndarray) -> np.ndarray:
    """Extra copies of each sample that keep only this modality, from its Shapley values phi (N,): 1 for 0.5,
    2 for 0, 3 for -0.5, none for 1 and 1.5 (the code's open bands, so the values between are placed alike)."""
    phi = np.asarray(phi, dtype=np.float64)
    copies = np.zeros(len(phi), dtype=np.int64)
    for low, high, n in COPY_BANDS:
        copies[(phi > low) & (phi < high)] = n
    return copies


def modality_gap_copies(value_a: float, value_v: float, alpha: float, n: int) -> tuple[int, int]:
    """(copies, weaker) of the modality-level variant: gap_m = 1 - mean phi_m, int(alpha * |gap_a - gap_v| * 2/3 * n)
    copies, keeping modality `weaker` (0: the first, 1: the second), the one with the larger gap (a tie: 1)."""
    gap_a, gap_v = 1.0 - value_a, 1.0 - value_v
    copies = int(abs(gap_a - gap_v) / 3 * 2 * alpha * n)
    return copies, 0 if gap_a > gap_v else 1


def keep_only(indices: list[np.ndarray], modalities: tuple[str, ...], n: int) -> tuple[np.ndarray, dict]:
    """The originals (0..n-1, every modality kept) followed by indices[k]'s copies, which keep modalities[k] only."""
    order = np.concatenate([np.arange(n), *indices]).astype(np.int64)
    masks = {}
    for k, m in enumerate(modalities):
        masks[m] = np.concatenate([np.ones(n, bool), *[np.full(len(c), j == k) for j, c in enumerate(indices)]])
    return order, masks


class SampleValuation(Method):
    """Sample-level re-sampling (CVPR 2024): each sample's low-contributing modality gets copies of its own."""

    def __init__(self, spec: MethodSpec, params: dict, run: RunContext) -> None:
        super().__init__(spec, params, run)
        self.modalities = two_modalities(run, spec.title)
        self.warmup = scale_epoch(self.params["warmup_epochs"], run.epochs, self.params["reference_epochs"])

    @torch.no_grad()
    def valuate(self, ctx: EpochContext) -> dict[str, np.ndarray]:
        """Each training sample's Shapley value per modality ({m: (N,)}), the model in eval mode on the training
        set's test-time frames; the model is left in train mode, as the epoch needs it."""
        found = self.run.collect(ctx.model, "train_eval")
        correct = feature_game(ctx.model, found, self.run.device)
        ctx.model.train()
        if correct is None:
            raise TypeError(f"{self.spec.title}: {type(ctx.model).__name__} has no head over features (head_logits)")
        phi = sample_shapley(correct, self.modalities)
        for m, values in phi.items():
            self.record(f"valuation_{m}", float(values.mean()))
        return phi

    def epoch_samples(self, ctx: EpochContext) -> Samples | None:
        if ctx.epoch < self.warmup:
            return None
        phi = self.valuate(ctx)
        n = len(next(iter(phi.values())))
        copies = [np.repeat(np.arange(n), sample_copies(phi[m])) for m in self.modalities]
        return self.samples(copies, n)

    def samples(self, copies: list[np.ndarray], n: int) -> Samples:
        for m, c in zip(self.modalities, copies, strict=True):
            self.record(f"resampled_{m}", len(c))
        order, masks = keep_only(copies, self.modalities, n)
        return Samples(order, masks, mask_level=self.params["mask_level"])


class ModalityValuation(SampleValuation):
    """Modality-level re-sampling (CVPR 2024): copies of random samples keeping the modality that contributes less
    on average (over a random part of the training set). BalanceBenchmark's "Modality valuation" row."""

    def epoch_samples(self, ctx: EpochContext) -> Samples | None:
        if ctx.epoch < self.warmup:
            return None
        phi = self.valuate(ctx)
        n = len(next(iter(phi.values())))
        rng = np.random.default_rng([self.run.seed, ctx.epoch, 20240617])  # this epoch's draws, resumed alike
        part = rng.choice(n, max(int(n * self.params["part_ratio"]), 1))  # with replacement, as the code
        a, v = self.modalities
        value_a, value_v = float(phi[a][part].mean()), float(phi[v][part].mean())
        self.record(f"part_valuation_{a}", value_a)
        self.record(f"part_valuation_{v}", value_v)
        count, weaker = modality_gap_copies(value_a, value_v, self.params["alpha"], n)
        chosen = rng.choice(n, count)  # with replacement, as the code
        empty = np.zeros(0, dtype=np.int64)
        return self.samples([chosen, empty] if weaker == 0 else [empty, chosen], n)
