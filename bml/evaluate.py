"""Evaluation: what the tables report for one trained model, for any number of modalities.

- accuracy, macro-F1 and mAP (macro average precision over the classes present) of the fused logits;
- per-modality accuracy (`acc_<m>`) from the per-modality logits, where the model has them
  (bml/models/fusion.py; docs/methods.md, "Uni-modal logits from a fusion head");
- linear-probe accuracy of each frozen encoder (`probe_<m>`): a multinomial logistic regression on
  train-split features, its C chosen on validation, scored on test. A model with more than one encoder of a
  modality (I2M2) keys the others' features `<m>.<part>` (bml/catalog.py: encoder_key), probed as
  `probe_<m>.<part>` (probe_audio.unimodal): every encoder measured, today's keys unchanged. The BML papers'
  measure of an under-optimized modality (e.g. Peng et al., CVPR 2022; Wei et al., TPAMI 2024): a joint model's
  encoder that probes below a uni-modal model's encoder was held back by the other modality;
- robustness: accuracy with one modality's input zeroed (`acc_zero_<m>`), and with Gaussian noise added
  to it (`acc_noise_<m>`, std `noise_std` times that input's own std over the batch);
- adversarial robustness (bml/attacks.py): accuracy under CRMT's l2 attacks (Yang et al., ICLR 2024;
  GeWu-Lab/Certifiable-Robust-Multi-modal-Training rob_test.py), a one-step l2 attack (`acc_fgm`, on every
  modality at once; `acc_fgm_<m>`, on one) and PGD-l2 (`acc_pgd`, `acc_pgd_<m>`), on a fixed subset of test;
- the Shapley share of each modality (`shapley_<m>`): the mean over test samples of its Shapley value in
  the game v(S) = |S| if the model is right with the other modalities zeroed, else 0 (Wei, Feng, Wang & Hu,
  "Enhancing Multimodal Cooperation via Sample-level Modality Valuation", CVPR 2024; for two modalities
  phi_a = (v_a + v_av - v_v) / 2): how much each modality contributes to correct predictions. Zeroed as the
  paper values a modality: the *pooled features* of the other modalities are zeroed before the fusion head,
  the encoders having seen the real inputs (the authors' code, GeWu-Lab/Valuate-and-Enhance-Multimodal-
  Cooperation code/models/models.py: exec_drop), so BatchNorm and the encoders never meet all-zero inputs.
  A model without a head over features (`head_logits`) falls back to the game on zeroed inputs;
- whatever the method adds (`Method.evaluations`, given the model and the data: bml/methods/base.py EvalContext).

Model selection happens on validation; test is scored for the checkpoints chosen, and its accuracy after every
epoch is recorded apart (metrics.json: test_by_epoch), where no selection reads it (bml/train.py).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from bml.attacks import robustness
from bml.data.loader import PackedSplit, make_loader
from bml.methods.base import EvalContext
from bml.models.model import unimodal_logits

Inputs = dict[str, torch.Tensor]


class NonFiniteError(FloatingPointError):
    """Evaluation met NaN or infinite features or logits; names the split."""


@torch.no_grad()
def collect(
    model: nn.Module,
    predict: Callable,
    dataset: PackedSplit,
    device: torch.device,
    prepare: Callable[[Inputs], Inputs],
    batch_size: int = 256,
    corrupt: Callable[[Inputs], Inputs] | None = None,
) -> dict:
    """Fused logits, features, per-modality logits and labels of a whole split, as numpy arrays:
    {"logits": (N, C), "label": (N,), "features": {m: (N, D_m)}, "unimodal": {m: (N, C)}}."""
    model.eval()
    parts: dict[str, list] = {"logits": [], "label": []}
    features: dict[str, list] = {}
    unimodal: dict[str, list] = {}
    for batch in make_loader(dataset, batch_size):
        inputs = prepare({m: x.to(device) for m, x in batch["inputs"].items()})
        if corrupt is not None:
            inputs = corrupt(inputs)
        out = predict(model, inputs)
        parts["logits"].append(out.logits.float().cpu().numpy())
        parts["label"].append(batch["label"].numpy())
        for m, f in out.features.items():
            features.setdefault(m, []).append(f.float().cpu().numpy())
        for m, z in unimodal_logits(model, out).items():
            unimodal.setdefault(m, []).append(z.float().cpu().numpy())
    found = {k: np.concatenate(v) for k, v in parts.items()}
    found["features"] = {m: np.concatenate(v) for m, v in features.items()}
    found["unimodal"] = {m: np.concatenate(v) for m, v in unimodal.items()}
    bad = [k for k in ("logits",) if not np.isfinite(found[k]).all()]
    bad += [f"features of {m}" for m, f in found["features"].items() if not np.isfinite(f).all()]
    if bad:
        raise NonFiniteError(f"{dataset.path}: non-finite {', '.join(bad)} at evaluation")
    return found


def macro_f1(labels: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> float:
    """Mean over `classes` of 2 TP / (2 TP + FP + FN), 0 where a class is never predicted nor present
    (scikit-learn's f1_score(average="macro", labels=classes); numpy here, to spare each run importing sklearn)."""
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (labels == c))
        wrong = np.sum((pred == c) != (labels == c))
        scores.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return float(np.mean(scores))


def average_precision(relevant: np.ndarray, score: np.ndarray) -> float:
    """Sum over score thresholds of (R_n - R_{n-1}) P_n, ties sharing one threshold (scikit-learn's
    average_precision_score for one class)."""
    order = np.argsort(-score, kind="mergesort")
    score, relevant = score[order], relevant[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the last index of each distinct score
    tp = np.cumsum(relevant)[last]
    precision, recall = tp / (last + 1), tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and mAP (over the classes present), in percent."""
    pred = logits.argmax(1)
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    probs = shifted / shifted.sum(1, keepdims=True)
    present = np.unique(labels)
    return {
        "acc": 100.0 * float((pred == labels).mean()),
        "macro_f1": 100.0 * macro_f1(labels, pred, present),
        "map": 100.0 * float(np.mean([average_precision(labels == c, probs[:, c]) for c in present])),
    }


def modality_accuracies(found: dict) -> dict[str, float]:
    """acc_<m> from each modality's own logits (a uni-modal model's are its logits)."""
    return {f"acc_{m}": 100.0 * float((z.argmax(1) == found["label"]).mean()) for m, z in found["unimodal"].items()}


def _fit_softmax(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    c: float,
    max_iter: int,
    start: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin over (W, b) of mean CE(xW + b, y) + |W|^2 / (2 C n): scikit-learn's LogisticRegression objective
    (C * sum of losses + |W|^2 / 2, intercept unpenalised) divided by C n, by L-BFGS."""
    w = (start[0].clone() if start else torch.zeros(x.shape[1], n_classes, dtype=x.dtype)).requires_grad_()
    b = (start[1].clone() if start else torch.zeros(n_classes, dtype=x.dtype)).requires_grad_()
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    penalty = 1.0 / (2.0 * c * len(y))

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    return w.detach(), b.detach()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one CPU thread for the block. The probe's matrices are tiny (840 x 128 x 10): a second thread
    gains nothing, and on a shared machine every L-BFGS step waits for the descheduled one (measured:
    benchmarks/results/timings.md, "The linear probe on one thread"; benchmarks/probe_time.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    test_x: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
    cs: tuple[float, ...] = (0.01, 0.1, 1.0),
    max_iter: int = 100,
    n_classes: int | None = None,
) -> dict[str, float]:
    """Multinomial logistic regression on standardised frozen features; C chosen by validation accuracy
    (ties: the smaller C), each C warm-started from the last. Val (and test) accuracy in percent.

    Full-batch L-BFGS in float64, on one thread, on features already in memory: as fast as scikit-learn's
    lbfgs on one thread (benchmarks/probe_time.py), for the same objective (tests/test_evaluate.py compares
    their solutions).
    """
    n_classes = n_classes or int(max(train_y.max(), val_y.max()) + 1)
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 0, std, 1.0)

    def prep(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((a - mean) / std).double()

    x, y, vx = prep(train_x), torch.from_numpy(np.asarray(train_y, dtype=np.int64)), prep(val_x)
    best, start = None, None
    with torch.enable_grad(), _one_thread():
        for c in sorted(cs):
            start = _fit_softmax(x, y, n_classes, c, max_iter, start)
            acc = float(((vx @ start[0] + start[1]).argmax(1).numpy() == val_y).mean())
            if best is None or acc > best[0]:
                best = (acc, c, start)
    result = {"val_acc": 100.0 * best[0], "C": best[1]}
    if test_x is not None:
        w, b = best[2]
        result["test_acc"] = 100.0 * float(((prep(test_x) @ w + b).argmax(1).numpy() == test_y).mean())
    return result


def probes(
    train: dict, val: dict, test: dict | None, cs: tuple[float, ...], max_iter: int, n_classes: int
) -> dict[str, float]:
    """probe_<key> for each encoder of the model, keyed as its features are (`<m>`, or `<m>.<part>` for a further
    encoder of modality m): test accuracy, or val accuracy without test."""
    result = {}
    for m in train["features"]:
        r = linear_probe(
            train["features"][m],
            train["label"],
            val["features"][m],
            val["label"],
            None if test is None else test["features"][m],
            None if test is None else test["label"],
            cs,
            max_iter,
            n_classes,
        )
        result[f"probe_{m}"] = r["test_acc"] if test is not None else r["val_acc"]
    return result


def zeroed(modalities: tuple[str, ...]) -> Callable[[Inputs], Inputs]:
    return lambda inputs: {m: torch.zeros_like(x) if m in modalities else x for m, x in inputs.items()}


def noised(modality: str, noise_std: float, seed: int) -> Callable[[Inputs], Inputs]:
    """Add N(0, (noise_std * std(x))^2) to one modality's input x; the noise is fixed by `seed`."""
    generator = torch.Generator().manual_seed(seed)

    def corrupt(inputs: Inputs) -> Inputs:
        x = inputs[modality]
        noise = torch.randn(x.shape, generator=generator).to(x.device) * (noise_std * x.std())
        return {**inputs, modality: x + noise}

    return corrupt


def sample_shapley(correct: dict[frozenset, np.ndarray], modalities: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each sample's Shapley value per modality, {m: (N,)}, in the game v(S) = |S| * correct(S) (v of the empty
    set is 0). Two modalities: phi_a = (v_a + v_av - v_v) / 2 = (correct_a + 2 correct_av - correct_v) / 2,
    one of -0.5, 0, 0.5, 1, 1.5."""
    n = len(modalities)
    out = {}
    for m in modalities:
        others = [o for o in modalities if o != m]
        phi = np.zeros(len(next(iter(correct.values()))))
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for subset in itertools.combinations(others, k):
                s = frozenset(subset)
                with_m = (k + 1) * correct[s | {m}].astype(np.float64)
                without = k * correct[s].astype(np.float64) if s else 0.0
                phi = phi + weight * (with_m - without)
        out[m] = phi
    return out


def shapley_shares(correct: dict[frozenset, np.ndarray], modalities: tuple[str, ...]) -> dict[str, float]:
    """Mean Shapley value per modality of the game v(S) = |S| * correct(S) (v of the empty set is 0)."""
    return {f"shapley_{m}": float(np.mean(phi)) for m, phi in sample_shapley(correct, modalities).items()}


@torch.no_grad()
def feature_game(model: nn.Module, found: dict, device: torch.device, batch_size: int = 1024) -> dict | None:
    """correct(S) for every non-empty subset S of the model's modalities, the head's prediction on the collected
    features with those outside S zeroed (as the valuation paper zeroes a modality: its pooled feature, the
    encoder having seen the real input); None for a model without a head over features (`head_logits`)."""
    head = getattr(model, "head_logits", None)
    modalities = tuple(getattr(model, "modalities", ()))
    if head is None or set(found["features"]) != set(modalities):
        return None
    model.eval()
    correct = {}
    for k in range(1, len(modalities) + 1):
        for kept in itertools.combinations(modalities, k):
            preds = []
            for start in range(0, len(found["label"]), batch_size):
                features = {
                    m: torch.from_numpy(found["features"][m][start : start + batch_size]).to(device) for m in modalities
                }
                features = {m: f if m in kept else torch.zeros_like(f) for m, f in features.items()}
                preds.append(head(features).argmax(1).cpu().numpy())
            correct[frozenset(kept)] = np.concatenate(preds) == found["label"]
    return correct


def evaluate_model(
    model: nn.Module,
    predict: Callable,
    splits: dict[str, PackedSplit],
    device: torch.device,
    prepare: Callable[[Inputs], Inputs],
    eval_cfg: dict,
    seed: int,
    n_classes: int,
    extra: Callable[[EvalContext], dict] | None = None,
    collected: dict[str, dict] | None = None,
) -> dict[str, float]:
    """Every final metric of one model on the test split (probes fit on train, C chosen on val). `collected`:
    splits already collected from this very model (the last epoch's validation), not collected again."""
    collected = collected or {}
    found = {name: collected.get(name) or collect(model, predict, ds, device, prepare) for name, ds in splits.items()}
    test = found["test"]
    metrics = classification_metrics(test["logits"], test["label"])
    metrics.update(modality_accuracies(test))
    metrics.update(
        probes(found["train"], found["val"], test, tuple(eval_cfg["probe_cs"]), eval_cfg["probe_max_iter"], n_classes)
    )
    modalities = tuple(getattr(model, "modalities", ()))
    correct = {frozenset(modalities): test["logits"].argmax(1) == test["label"]}
    if len(modalities) > 1:
        for k in range(1, len(modalities)):
            for kept in itertools.combinations(modalities, k):
                dropped = tuple(m for m in modalities if m not in kept)
                pred = collect(model, predict, splits["test"], device, prepare, corrupt=zeroed(dropped))["logits"]
                correct[frozenset(kept)] = pred.argmax(1) == test["label"]
        metrics.update(
            {f"acc_zero_{m}": 100.0 * float(correct[frozenset(modalities) - {m}].mean()) for m in modalities}
        )
        on_features = feature_game(model, test, device)  # the paper's game; on zeroed inputs where it cannot be
        metrics.update(shapley_shares(correct if on_features is None else on_features, modalities))
    for m in modalities:
        noisy = collect(model, predict, splits["test"], device, prepare, corrupt=noised(m, eval_cfg["noise_std"], seed))
        metrics[f"acc_noise_{m}"] = 100.0 * float((noisy["logits"].argmax(1) == test["label"]).mean())
    metrics.update(robustness(model, predict, splits["test"], device, prepare, eval_cfg, modalities))
    metrics["val_acc"] = classification_metrics(found["val"]["logits"], found["val"]["label"])["acc"]
    if extra is not None:
        metrics.update(extra(EvalContext(found, model, predict, splits, prepare, device, eval_cfg, seed, n_classes)))
    return metrics
