"""Evaluation: what the tables report for one trained model.

- accuracy, macro-F1 and mAP (macro average precision over the classes present) of the fused logits;
- per-modality accuracy from the head's uni-modal logits, where the fusion has them
  (bml/models/fusion.py; ../shared/METHODS.md);
- linear-probe accuracy of each frozen encoder: a logistic regression on train-split features, its C
  chosen on validation, scored on test. This is the BML papers' measure of an under-optimized modality
  (e.g. Peng et al., CVPR 2022; Wei et al., TPAMI 2024): a joint model's encoder that probes below a
  uni-modal model's encoder was held back by the other modality;
- robustness: accuracy with one modality's input zeroed, and with Gaussian noise added to one modality's
  input (std `noise_std` times that input's own std over the batch).

Model selection happens on validation; test is scored only for the checkpoints chosen (bml/train.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from bml.data.loader import PackedSplit, make_loader, prepare_frames

Corruption = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def has_unimodal_logits(model: nn.Module) -> bool:
    fusion = getattr(model, "fusion", None)
    return bool(getattr(fusion, "has_unimodal_logits", False) or getattr(model, "has_unimodal_logits", False))


@torch.no_grad()
def collect(model: nn.Module, dataset: PackedSplit, device: torch.device, frame_norm: tuple[list, list],
            batch_size: int = 256, corrupt: Corruption | None = None) -> dict[str, np.ndarray]:
    """Fused logits, uni-modal logits (where the head has them), features and labels of a whole split."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for batch in make_loader(dataset, batch_size):
        audio = batch["audio"].to(device)
        frames = prepare_frames(batch["frames"].to(device), *frame_norm)
        if corrupt is not None:
            audio, frames = corrupt(audio, frames)
        out = model(audio, frames)
        found = {"logits": out["logits"], "label": batch["label"]}
        for key in ("f_a", "f_v"):
            if key in out:
                found[key] = out[key]
        if "z_a" in out:  # a model that computes its own uni-modal logits (the ensemble)
            found["z_a"], found["z_v"] = out["z_a"], out["z_v"]
        elif has_unimodal_logits(model):
            found["z_a"], found["z_v"] = model.unimodal_logits(out["f_a"], out["f_v"])
        for key, value in found.items():
            parts.setdefault(key, []).append(value.float().cpu().numpy() if value.is_floating_point()
                                             else value.cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and mAP, in percent."""
    pred = logits.argmax(1)
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    probs = shifted / shifted.sum(1, keepdims=True)
    present = np.unique(labels)
    onehot = (labels[:, None] == present[None, :]).astype(int)
    return {"acc": 100.0 * float((pred == labels).mean()),
            "macro_f1": 100.0 * float(f1_score(labels, pred, average="macro", labels=present)),
            "map": 100.0 * float(average_precision_score(onehot, probs[:, present], average="macro"))}


def modality_accuracies(found: dict[str, np.ndarray], model: nn.Module) -> dict[str, float]:
    """acc_audio / acc_visual from the uni-modal logits; a uni-modal model's own accuracy for its modality."""
    labels = found["label"]
    if "z_a" in found:
        return {"acc_audio": 100.0 * float((found["z_a"].argmax(1) == labels).mean()),
                "acc_visual": 100.0 * float((found["z_v"].argmax(1) == labels).mean())}
    modality = getattr(model, "modality", None)
    if modality is not None:
        return {f"acc_{modality}": 100.0 * float((found["logits"].argmax(1) == labels).mean())}
    return {}


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                 test_x: np.ndarray | None = None, test_y: np.ndarray | None = None,
                 cs: tuple[float, ...] = (0.01, 0.1, 1.0), max_iter: int = 100) -> dict[str, float]:
    """Logistic regression on standardised frozen features; C chosen by validation accuracy (ties: the
    smaller C). Returns val accuracy at the chosen C and, if given, test accuracy, in percent.

    The Cs are fit in increasing order, each warm-started from the last, with tol 1e-3 and at most
    `max_iter` L-BFGS steps: raw encoder features are ill-conditioned and a cold fit to tol 1e-4 took
    seconds per C on avdigits, for the same accuracy within about a point.
    """
    scaler = StandardScaler().fit(train_x)
    train_x, val_x = scaler.transform(train_x), scaler.transform(val_x)
    best = None
    clf = LogisticRegression(max_iter=max_iter, tol=1e-3, warm_start=True)
    for c in sorted(cs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.set_params(C=c).fit(train_x, train_y)
        acc = float((clf.predict(val_x) == val_y).mean())
        if best is None or acc > best[0]:
            test_pred = None if test_x is None else clf.predict(scaler.transform(test_x))
            best = (acc, c, test_pred)
    result = {"val_acc": 100.0 * best[0], "C": best[1]}
    if test_x is not None:
        result["test_acc"] = 100.0 * float((best[2] == test_y).mean())
    return result


def probes(train: dict, val: dict, test: dict | None, cs: tuple[float, ...], max_iter: int = 100) -> dict[str, float]:
    """probe_audio / probe_visual for each encoder the model has (test accuracy, or val without test)."""
    result = {}
    for key, name in (("f_a", "audio"), ("f_v", "visual")):
        if key not in train:
            continue
        r = linear_probe(train[key], train["label"], val[key], val["label"],
                         None if test is None else test[key], None if test is None else test["label"], cs, max_iter)
        result[f"probe_{name}"] = r["test_acc"] if test is not None else r["val_acc"]
    return result


def zero(modality: str) -> Corruption:
    def corrupt(audio: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros_like(audio), frames) if modality == "audio" else (audio, torch.zeros_like(frames))
    return corrupt


def gaussian_noise(modality: str, noise_std: float, seed: int) -> Corruption:
    """Add N(0, (noise_std * std(x))^2) to one modality's input x; the noise is fixed by `seed`."""
    generator = torch.Generator().manual_seed(seed)

    def corrupt(audio: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = audio if modality == "audio" else frames
        noise = torch.randn(x.shape, generator=generator).to(x.device) * (noise_std * x.std())
        return (x + noise, frames) if modality == "audio" else (audio, x + noise)
    return corrupt


def robustness(model: nn.Module, dataset: PackedSplit, device: torch.device, frame_norm: tuple[list, list],
               noise_std: float, seed: int) -> dict[str, float]:
    """Accuracy with each modality zeroed and with each modality noised."""
    result = {}
    for modality in ("audio", "visual"):
        for name, corrupt in ((f"acc_zero_{modality}", zero(modality)),
                              (f"acc_noise_{modality}", gaussian_noise(modality, noise_std, seed))):
            found = collect(model, dataset, device, frame_norm, corrupt=corrupt)
            result[name] = 100.0 * float((found["logits"].argmax(1) == found["label"]).mean())
    return result


def evaluate_model(model: nn.Module, splits: dict[str, PackedSplit], device: torch.device,
                   frame_norm: tuple[list, list], probe_cs: tuple[float, ...], probe_max_iter: int,
                   noise_std: float, seed: int) -> dict[str, float]:
    """Every final metric of one model on the test split (probes fit on train, C chosen on val)."""
    found = {name: collect(model, ds, device, frame_norm) for name, ds in splits.items()}
    test = found["test"]
    metrics = classification_metrics(test["logits"], test["label"])
    metrics.update(modality_accuracies(test, model))
    metrics.update(probes(found["train"], found["val"], test, probe_cs, probe_max_iter))
    metrics.update(robustness(model, splits["test"], device, frame_norm, noise_std, seed))
    metrics["val_acc"] = classification_metrics(found["val"]["logits"], found["val"]["label"])["acc"]
    return metrics
