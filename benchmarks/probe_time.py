"""What a linear probe costs on avdigits-sized features, as a ratio to scikit-learn's LogisticRegression fitting
the same C grid on the same standardised features in the same run; and the probe on torch's default threads,
which is why bml/evaluate.py fits it on one thread (`_one_thread`).

    python benchmarks/probe_time.py [--rounds 5] [--out benchmarks/results/probe_time.json]

The features are 840 x 128 Gaussian classes (the train split of the 1,200-clip avdigits, small_cnn's 128-wide
encoders, 10 classes), 120 for val and 240 for test; the C grid and iteration cap are params/params.yaml's
`evaluation`. Each figure is the fastest of --rounds, the three fits interleaved so load hits them alike;
`all_s` keeps every round (on a loaded machine the default-threads fit varies most).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bml import evaluate  # noqa: E402
from bml.evaluate import linear_probe  # noqa: E402
from bml.plan import load_pipeline  # noqa: E402

N_TRAIN, N_VAL, N_TEST, DIM, N_CLASSES = 840, 120, 240, 128, 10


def features(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CLASSES, DIM)) * 0.3
    out = []
    for n in (N_TRAIN, N_VAL, N_TEST):
        y = np.arange(n) % N_CLASSES
        out += [centres[y] + rng.normal(size=(n, DIM)), y]
    return tuple(out)


def sklearn_grid(x, y, vx, vy, cs, max_iter) -> float:
    """scikit-learn's lbfgs multinomial logistic regression at each C, the best on val kept, on one BLAS
    thread as bml's probe runs on one torch thread: the baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(x)
    x, vx = scaler.transform(x), scaler.transform(vx)
    best = 0.0
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # max_iter reached: the same cap as bml's
        for c in cs:
            best = max(best, LogisticRegression(C=c, max_iter=max_iter).fit(x, y).score(vx, vy))
    return best


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "probe_time.json"))
    args = parser.parse_args()
    ev = load_pipeline()["evaluation"]
    cs, max_iter = tuple(ev["probe_cs"]), ev["probe_max_iter"]
    x, y, vx, vy, tx, ty = features()
    default_threads = torch.get_num_threads()

    def bml_probe():
        return linear_probe(x, y, vx, vy, tx, ty, cs, max_iter, N_CLASSES)

    def bml_probe_default_threads():
        shipped = evaluate._one_thread
        evaluate._one_thread = contextlib.nullcontext  # torch's default thread count, as before bml pinned it
        try:
            return bml_probe()
        finally:
            evaluate._one_thread = shipped

    fits = {"sklearn": lambda: sklearn_grid(x, y, vx, vy, cs, max_iter), "bml_probe": bml_probe}
    fits["bml_probe_default_threads"] = bml_probe_default_threads
    runs: dict[str, list[float]] = {name: [] for name in fits}
    for _ in range(args.rounds):
        for name, fit in fits.items():
            runs[name].append(timed(fit))
    fastest = {k: min(v) for k, v in runs.items()}
    result = {
        "features": f"{N_TRAIN} x {DIM}, {N_CLASSES} classes",
        "cs": list(cs),
        "max_iter": max_iter,
        "torch_threads": default_threads,
        "rounds": args.rounds,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "fastest_s": {k: round(v, 4) for k, v in fastest.items()},
        "all_s": {k: [round(t, 4) for t in v] for k, v in runs.items()},
        "ratio_bml_over_sklearn": round(fastest["bml_probe"] / fastest["sklearn"], 3),
        "ratio_default_threads_over_one": round(fastest["bml_probe_default_threads"] / fastest["bml_probe"], 3),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
