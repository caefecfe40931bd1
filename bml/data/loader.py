"""Batches from the packed splits (bml/data/pack.py), keyed by modality, reproducible whatever the workers.

Randomness comes from (seed, epoch) only, never from a worker's or the loop's state: the order of an
epoch is a permutation drawn from a generator seeded with (seed, epoch), and the frames a training sample
shows are drawn from a generator seeded with (seed, epoch, index). So a run resumed at epoch k sees
exactly the batches an uninterrupted run sees, and 0 or 8 loader workers give the same batches.

Training samples `n_frames` random frames of the T stored per clip (sorted, so time order is kept; the
same frames for every frame-like modality of a sample); evaluation uses n_frames fixed, evenly spaced
ones. That is what the authors' loaders do, and a prototype measured that without it the visual-only
model memorises its clips (docs/methods.md, "The embedded dataset's settings").

A batch is fetched whole (`dataset[list_of_indices]`), one read per record, and collated here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from bml.data.decode import select_frames
from bml.data.pack import open_split
from bml.kinds import KINDS

FRAME_KINDS = tuple(name for name, kind in KINDS.items() if kind.frame_like)
AUGMENTS = ("none", "random_resized_crop_flip")
CROP_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop default area share; a protocol's frame_crop_scale overrides


def random_resized_crop_flip(
    frames: np.ndarray,
    rng: np.random.Generator,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """The papers' training transform, RandomResizedCrop(S) + RandomHorizontalFlip (OGM-GE's loaders; torchvision's
    defaults for scale and ratio), on each frame (T, 3, S, S) uint8 on its own, drawn from `rng` (seeded by
    (seed, epoch, sample)) so a resumed run crops alike. The crop is drawn as torchvision does: up to 10 tries of
    an area share and a log-uniform aspect ratio, else the central crop of the nearest allowed ratio."""
    import torch
    from torchvision.transforms.v2.functional import resized_crop

    out = np.empty_like(frames)
    size = frames.shape[-1]
    for t, frame in enumerate(frames):
        h = w = size
        for _ in range(10):
            area = size * size * rng.uniform(*scale)
            aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
            w, h = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 0 < w <= size and 0 < h <= size:
                top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
                break
        else:
            h = w = size
            top = left = 0
        crop = resized_crop(
            torch.from_numpy(np.ascontiguousarray(frame)), top, left, h, w, [size, size], antialias=True
        )
        out[t] = crop.flip(-1).numpy() if rng.random() < 0.5 else crop.numpy()
    return out


class PackedSplit(Dataset):
    """One packed split; `split[indices]` is a batch: {"inputs": {modality: tensor}, "label", "index"}."""

    def __init__(
        self,
        packed_dir: str | Path,
        split: str,
        modalities: dict[str, str],
        n_frames: int,
        train: bool,
        seed: int = 0,
        augment: str = "none",
        crop_scale: tuple[float, float] = CROP_SCALE,
    ) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"unknown frame augmentation {augment!r}; choose one of {AUGMENTS}")
        self.augment = augment if train else "none"  # test-time frames are the stored ones (resized at extraction)
        self.crop_scale = tuple(crop_scale)  # the area share a random crop keeps (RandomResizedCrop's `scale`)
        self.records, self.meta = open_split(packed_dir, split)
        self.path = Path(packed_dir) / f"{split}.npy"
        self.modalities = {m: k for m, k in modalities.items() if m in self.records.dtype.names}
        missing = sorted(set(modalities) - set(self.modalities))
        if missing:
            raise ValueError(
                f"{self.path}: no field for modalities {missing}; it holds "
                f"{[n for n in self.records.dtype.names if n not in ('clip_id', 'label')]}"
            )
        self.stored = {m: self.records.dtype[m].shape[0] for m, k in self.modalities.items() if k in FRAME_KINDS}
        for m, stored in self.stored.items():
            if n_frames > stored:
                raise ValueError(
                    f"{self.path}: {n_frames} frames asked per sample but only {stored} are packed per "
                    f"clip for {m!r}; lower train_frames/eval_frames or repack with more frames"
                )
        self.n_frames, self.train, self.seed, self.epoch = n_frames, train, seed, 0
        self.labels = np.asarray(self.records["label"], dtype=np.int64)
        self.n_classes = len(self.meta["classes"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def frame_indices(self, index: int, stored: int) -> list[int]:
        if not self.train:
            return select_frames(stored, self.n_frames)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return sorted(rng.choice(stored, size=self.n_frames, replace=False).tolist())

    def __getitem__(self, indices: list[int]) -> dict:
        inputs: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        for i in indices:
            record = self.records[i]
            for m, name in self.modalities.items():
                value, kind = record[m], KINDS[name]
                if kind.frame_like:
                    value = value[self.frame_indices(i, len(value))]
                    if self.augment != "none" and kind.augmented:
                        rng = np.random.default_rng([self.seed, self.epoch, i, 1])
                        value = random_resized_crop_flip(value, rng, scale=self.crop_scale)
                inputs[m].append(value)
        idx = np.asarray(indices, dtype=np.int64)
        return {
            "inputs": {
                m: torch.from_numpy(np.stack(v).astype(KINDS[self.modalities[m]].batch_dtype))
                for m, v in inputs.items()
            },
            "label": torch.from_numpy(self.labels[idx]),
            "index": torch.from_numpy(idx),
        }


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of one training epoch, a function of (seed, epoch) alone."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


class Chosen(Dataset):
    """A method's choice of an epoch's samples (positions into `indices`, repeats allowed); each batch also
    carries the positions, so per-sample masks can follow their sample."""

    def __init__(self, dataset: PackedSplit, indices: np.ndarray) -> None:
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: list[int]) -> dict:
        return {**self.dataset[self.indices[positions].tolist()], "position": torch.as_tensor(positions)}


def make_loader(
    dataset: PackedSplit,
    batch_size: int,
    epoch: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    indices: np.ndarray | None = None,
) -> DataLoader:
    """Batches of one epoch: shuffled by (seed, epoch) for training, in file order for evaluation.

    `indices` (a method's choice of the epoch's samples, repeats allowed) replaces the whole split; it is
    shuffled the same way.
    """
    dataset.set_epoch(epoch)
    source = dataset if indices is None else Chosen(dataset, indices)
    order = epoch_order(len(source), dataset.seed, epoch) if dataset.train else list(range(len(source)))
    return DataLoader(
        source,
        sampler=BatchSampler(order, batch_size, drop_last=False),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def prepare_inputs(inputs: dict[str, torch.Tensor], modalities: dict[str, str], train_cfg: dict) -> dict:
    """Stored values on the device -> the encoders' inputs, as each kind prepares them (bml/kinds/): frames
    normalised per channel with the protocol's statistics, flow centred on its zero and scaled to [-1, 1]."""
    return {m: KINDS[modalities[m]].prepare(x, train_cfg) for m, x in inputs.items()}
