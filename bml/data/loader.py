"""Batches from the packed splits (bml/data/pack.py), reproducible whatever the number of workers.

Randomness comes from (seed, epoch) only, never from a worker's or the loop's state: the order of an
epoch is a permutation drawn from a generator seeded with (seed, epoch), and the frames a training
sample shows are drawn from a generator seeded with (seed, epoch, index). So a run resumed at epoch k
sees exactly the batches an uninterrupted run sees, and 0 or 8 loader workers give the same batches.

Training samples `n_frames` random frames of the T stored per clip (sorted, so time order is kept);
evaluation uses n_frames fixed, evenly spaced ones. That is what the authors' loaders do, and
../shared/AVDIGITS.md measured that without it the visual-only model memorises its clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bml.data.pack import load_split, select_frames


class PackedSplit(Dataset):
    """One packed split as (spectrogram float32 (F, T), frames uint8 (n_frames, 3, S, S), label)."""

    def __init__(self, packed_dir: str | Path, split: str, n_frames: int, train: bool, seed: int = 0) -> None:
        self.records, self.meta = load_split(packed_dir, split)
        self.path = Path(packed_dir) / f"{split}.npy"
        stored = self.meta["n_frames"]
        if n_frames > stored:
            raise ValueError(f"{self.path}: {n_frames} frames asked per sample but only {stored} are packed "
                             f"per clip; lower train_frames/eval_frames or repack with features.n_frames >= {n_frames}")
        self.n_frames, self.train, self.seed, self.epoch = n_frames, train, seed, 0
        self.fixed_frames = select_frames(stored, n_frames)
        self.labels = np.asarray(self.records["label"], dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def frame_indices(self, index: int) -> list[int]:
        if not self.train:
            return self.fixed_frames
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return sorted(rng.choice(self.meta["n_frames"], size=self.n_frames, replace=False).tolist())

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        frames = record["frames"][self.frame_indices(index)]  # (n_frames, 3, S, S) uint8
        return {"audio": torch.from_numpy(record["spec"].astype(np.float32)),
                "frames": torch.from_numpy(np.ascontiguousarray(frames)),
                "label": torch.tensor(int(record["label"]))}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one training epoch, a function of (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def make_loader(dataset: PackedSplit, batch_size: int, epoch: int = 0, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """Batches of one epoch: shuffled by (seed, epoch) for training, in file order for evaluation."""
    dataset.set_epoch(epoch)
    order = epoch_order(len(dataset), dataset.seed, epoch) if dataset.train else list(range(len(dataset)))
    return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False)


def prepare_frames(frames: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 (B, T, 3, S, S) on any device -> float normalised per channel; done on the device, after transfer."""
    m = torch.tensor(mean, device=frames.device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, device=frames.device).view(1, 1, 3, 1, 1)
    return (frames.float() / 255.0 - m) / s
