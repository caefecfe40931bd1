"""Evaluation's own numbers: the torch linear probe against scikit-learn's LogisticRegression (same C, same
standardised features) and the Shapley shares by hand for two and three modalities. The probe's speed is a
benchmark: benchmarks/probe_time.py."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from bml.evaluate import _fit_softmax, _one_thread, classification_metrics, linear_probe, shapley_shares

N_CLASSES, DIM = 10, 128  # the avdigits features: 10 digits, small_cnn's 128-wide encoders
CS = (0.01, 0.1, 1.0)  # params/params.yaml: evaluation.probe_cs


def synthetic(kind: str, seed: int) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, val_x, val_y, test_x, test_y): Gaussian classes in DIM dimensions, columns of unequal
    scales."""
    rng = np.random.default_rng(seed)
    n_train, separation = {"separated": (400, 0.5), "overlapping": (400, 0.1), "few": (84, 0.3)}[kind]
    centres = rng.normal(size=(N_CLASSES, DIM)) * separation
    scales = rng.uniform(0.5, 3.0, DIM)  # unequal column scales: the standardisation matters

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % N_CLASSES)
        x = centres[y] + rng.normal(size=(n, DIM)) * scales
        return x * 7.0 + 3.0, y  # off-centre and wide, as ReLU features are

    (x, y), (vx, vy), (tx, ty) = draw(n_train), draw(120), draw(240)
    x[:, 5] = vx[:, 5] = tx[:, 5] = 1.5  # a constant column (a dead ReLU unit): std 0, left as zeros by both
    return x, y, vx, vy, tx, ty


def standardise(x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """As linear_probe does: train mean and std, a zero std read as 1."""
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (x, *others)]


def objective(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, c: float) -> float:
    """mean CE + |W|^2 / (2 C n): scikit-learn's objective (C sum CE + |W|^2 / 2) divided by C n."""
    z = x @ w + b
    z = z - z.max(1, keepdims=True)
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
    return float(ce.mean() + (w * w).sum() / (2.0 * c * len(y)))


def sklearn_fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    """The reference solution: L2 multinomial logistic regression, solved far past the probe's tolerance."""
    # one BLAS thread: on a shared 2-core machine a second one makes it 5-10 times slower, not faster
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # lbfgs convergence chatter at tol 1e-8
        return LogisticRegression(C=c, max_iter=10_000, tol=1e-8).fit(x, y)


@pytest.mark.parametrize("kind", ["separated", "overlapping", "few"])
@pytest.mark.parametrize("c", CS)
def test_probe_matches_scikit_learn(kind, c):
    x, y, vx, vy, _, _ = synthetic(kind, seed=1)
    xs, vxs = standardise(x, vx)
    ours = linear_probe(x, y, vx, vy, cs=(c,), max_iter=100, n_classes=N_CLASSES)
    ref = sklearn_fit(xs, y, c)
    ref_acc = 100.0 * float((ref.predict(vxs) == vy).mean())
    assert abs(ours["val_acc"] - ref_acc) <= 100.0 / len(vy) + 1e-9  # equal, or one sample apart
    # the same objective at the probe's solution as at scikit-learn's (the minimum)
    with torch.enable_grad(), _one_thread():  # as linear_probe fits
        w, b = _fit_softmax(torch.from_numpy(xs), torch.from_numpy(y), N_CLASSES, c, 100, None)
    ours_obj = objective(xs, y, w.numpy(), b.numpy(), c)
    ref_obj = objective(xs, y, ref.coef_.T, ref.intercept_, c)
    assert ours_obj == pytest.approx(ref_obj, rel=1e-4)
    assert ours_obj >= ref_obj * (1 - 1e-6)  # scikit-learn solved to the minimum: the probe is not below it


def test_probe_picks_the_c_with_the_best_validation_accuracy_and_scores_test():
    x, y, vx, vy, tx, ty = synthetic("few", seed=2)
    xs, vxs, txs = standardise(x, vx, tx)
    ours = linear_probe(x, y, vx, vy, tx, ty, cs=CS, max_iter=100, n_classes=N_CLASSES)
    ref_val = {c: 100.0 * float((sklearn_fit(xs, y, c).predict(vxs) == vy).mean()) for c in CS}
    assert ours["C"] in CS
    assert abs(ours["val_acc"] - max(ref_val.values())) <= 100.0 / len(vy) + 1e-9
    ref_test = 100.0 * float((sklearn_fit(xs, y, ours["C"]).predict(txs) == ty).mean())
    assert abs(ours["test_acc"] - ref_test) <= 100.0 / len(ty) + 1e-9


def test_probe_reads_labels_missing_from_train_as_classes():
    # a class absent from train (a tiny split) still has a column: the probe never predicts it, and
    # n_classes from the caller keeps the shapes right
    x, y, vx, vy, _, _ = synthetic("separated", seed=4)
    keep = y != 9
    ours = linear_probe(x[keep], y[keep], vx, vy, cs=(0.1,), n_classes=N_CLASSES)
    xs, vxs = standardise(x[keep], vx)
    ref_acc = 100.0 * float((sklearn_fit(xs, y[keep], 0.1).predict(vxs) == vy).mean())
    assert abs(ours["val_acc"] - ref_acc) <= 100.0 / len(vy) + 1e-9
    assert ours["val_acc"] <= 100.0 * float((vy != 9).mean())


# ---- Shapley shares ---------------------------------------------------------------------------------


def correct_table(modalities: tuple[str, ...], rows: list[dict[tuple[str, ...], bool]]) -> dict:
    """{frozenset(kept modalities): (N,) bool} from one dict per sample (kept modalities -> right or not)."""
    table = {}
    for k in range(1, len(modalities) + 1):
        for kept in itertools.combinations(modalities, k):
            table[frozenset(kept)] = np.array([row.get(kept, False) for row in rows])
    return table


def test_shapley_two_modalities_by_hand():
    # phi_a = (v_a + v_av - v_v) / 2 with v_S = |S| if right with only S kept (Wei et al., CVPR 2024)
    rows = [
        {("a", "v"): True},  # only together: phi_a = (0 + 2 - 0) / 2 = 1, phi_v = 1
        {("a",): True, ("a", "v"): True},  # audio carries it: phi_a = (1 + 2 - 0) / 2 = 1.5, phi_v = 0.5
        {("a",): True, ("v",): True, ("a", "v"): True},  # either: 1 and 1
        {("v",): True},  # visual alone, wrong together: phi_a = (0 + 0 - 1) / 2 = -0.5, phi_v = 0.5
        {},  # never right: 0 and 0
    ]
    shares = shapley_shares(correct_table(("a", "v"), rows), ("a", "v"))
    assert shares["shapley_a"] == pytest.approx((1 + 1.5 + 1 - 0.5 + 0) / 5)
    assert shares["shapley_v"] == pytest.approx((1 + 0.5 + 1 + 0.5 + 0) / 5)


def test_shapley_three_modalities_by_hand():
    # phi_m = sum over S not holding m of |S|! (2 - |S|)! / 3! * (v(S + m) - v(S)); weights 1/3, 1/6, 1/6, 1/3
    rows = [
        # right only with all three: each gets 1/3 * (3 - 0) = 1
        {("a", "v", "w"): True},
        # right whenever a is kept: phi_a = 1/3 * 1 + 1/6 * 2 + 1/6 * 2 + 1/3 * 3 = 2;
        # phi_v = 1/3 * 0 + 1/6 * (2 - 1) + 1/6 * 0 + 1/3 * (3 - 2) = 1/2, phi_w the same
        {("a",): True, ("a", "v"): True, ("a", "w"): True, ("a", "v", "w"): True},
        # right with v alone or w alone, wrong otherwise: phi_a = 0 + 1/6 * (0 - 1) + 1/6 * (0 - 1) + 0 = -1/3;
        # phi_v = 1/3 * 1 + 1/6 * 0 + 1/6 * (0 - 1) + 1/3 * (0 - 0) = 1/6, phi_w the same
        {("v",): True, ("w",): True},
    ]
    shares = shapley_shares(correct_table(("a", "v", "w"), rows), ("a", "v", "w"))
    assert shares["shapley_a"] == pytest.approx((1 + 2 - 1 / 3) / 3)
    assert shares["shapley_v"] == pytest.approx((1 + 0.5 + 1 / 6) / 3)
    assert shares["shapley_w"] == pytest.approx(shares["shapley_v"])


@pytest.mark.parametrize("modalities", [("a", "v"), ("a", "v", "w"), ("a", "v", "w", "f")])
def test_shapley_shares_add_up_to_the_full_models_value(modalities):
    # efficiency: sum_m phi_m = v(all) - v(empty) = M * (right with every modality), sample by sample
    rng = np.random.default_rng(len(modalities))
    n = 200
    table = {
        frozenset(kept): rng.random(n) < 0.6
        for k in range(1, len(modalities) + 1)
        for kept in itertools.combinations(modalities, k)
    }
    shares = shapley_shares(table, modalities)
    full = table[frozenset(modalities)]
    assert sum(shares.values()) == pytest.approx(len(modalities) * full.mean())
    # two modalities: the generic sum is the closed form (docs/methods.md)
    if len(modalities) == 2:
        a, v = modalities
        va, vv, vav = table[frozenset({a})], table[frozenset({v})], 2 * full
        assert shares[f"shapley_{a}"] == pytest.approx(np.mean((va + vav - vv) / 2))


def test_classification_metrics_by_hand():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [3.0, 0.0, 1.0]])
    labels = np.array([0, 1, 1, 2])  # right, right, wrong (says 2), wrong (says 0)
    m = classification_metrics(logits, labels)
    assert m["acc"] == pytest.approx(50.0)
    # per class F1: class 0 p=1/2 r=1 -> 2/3; class 1 p=1 r=1/2 -> 2/3; class 2 p=0 r=0 -> 0
    assert m["macro_f1"] == pytest.approx(100.0 * (2 / 3 + 2 / 3 + 0) / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_and_map_equal_scikit_learns(seed):
    from sklearn.metrics import average_precision_score, f1_score

    from bml.evaluate import classification_metrics

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 200)
    labels[labels == 5] = 4  # a class never present
    logits = rng.normal(size=(200, 6)) + 2.0 * np.eye(6)[labels] * rng.random((200, 1))
    logits[:20] = np.round(logits[:20])  # ties between scores
    ours = classification_metrics(logits, labels)
    present = np.unique(labels)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    onehot = (labels[:, None] == present[None, :]).astype(int)
    assert ours["macro_f1"] == pytest.approx(100 * f1_score(labels, logits.argmax(1), average="macro", labels=present))
    assert ours["map"] == pytest.approx(100 * average_precision_score(onehot, probs[:, present], average="macro"))
