"""What each balancing method costs per training step, as a ratio to joint concat measured in the same run.

    python benchmarks/method_cost.py [--rounds 8] [--epochs 2] [--threads 2] [--out benchmarks/results/method_cost.json]

Every method trains through `bml.train.train` itself (small_cnn + concat, embedded protocol, seed 0, the
default avdigits data, tracking off, probe_every 0), for `--epochs` epochs per round; the methods take turns
within a round, in an order rotated every round, so load on a shared machine falls on all of them alike.
The final test evaluation is skipped (the log callback raises after the last epoch: it is never timed).

Each run's history gives, per epoch, `step_time_ms` (the training steps: data, hooks, backward, optimizer,
over the steps of the epoch) and `epoch_end_time_s` (the method's end-of-epoch work). The methods act from
the first step: the warm-ups are set to 0 (OGM, OPM), and Re-learning's schedule is set to diagnose after
epoch 1 so its diagnosis is timed.

Reported per method: its ratio to joint in two ways, (a) the fastest epoch's step time over joint's fastest
(timeit's rule: the least-disturbed measurement is the closest to the true cost; the headline figure) and
(b) the median over rounds of the ratio of the two runs' median step times in that round (goal: OGM-GE and
OPM at most 1.10 either way); and, for Re-learning, the diagnosis time and its amortized cost over the
embedded protocol's real schedule (3 diagnoses in 20 epochs): (step time x steps x epochs + diagnoses x
diagnosis time) / (joint's step time x steps x epochs).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timed_training import train_epochs  # noqa: E402

from bml import train as bt  # noqa: E402
from bml.methods.relearning import relearn_epochs  # noqa: E402

METHODS = ["joint", "ogm", "ogm_ge", "opm", "mmpareto", "relearning"]
ACT_NOW = {
    "ogm": ["method.warmup_epochs=0"],
    "ogm_ge": ["method.warmup_epochs=0"],
    "opm": ["method.warmup_epochs=0"],
    "relearning": ["method.every=1", "method.times=1", "method.reference_epochs=2"],
}


def one_run(method: str, epochs: int, root: str) -> list[dict]:
    config = bt.resolve_config(
        "avdigits",
        "embedded",
        method,
        "concat",
        0,
        [f"train.epochs={epochs}", "train.probe_every=0", *ACT_NOW.get(method, [])],
    )
    config["data"]["packed_dir"] = str(REPO / config["data"]["packed_dir"])
    return train_epochs(config, root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs per run (at least 2: Re-learning diagnoses after 1)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "method_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["MLFLOW_TRACKING_URI"] = "none"

    steps: dict[str, list[float]] = {m: [] for m in METHODS}
    per_round: list[dict[str, float]] = []
    diagnosis: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]
            per_round.append({})
            for method in order:
                history = one_run(method, args.epochs, f"{tmp}/r{r}")
                steps[method] += [row["step_time_ms"] for row in history]
                per_round[-1][method] = statistics.median(row["step_time_ms"] for row in history)
                if method == "relearning":
                    diagnosis.append(history[0]["epoch_end_time_s"])
            print(
                f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {steps[m][-1]:.0f} ms" for m in METHODS),
                file=sys.stderr,
                flush=True,
            )

    med = {m: statistics.median(v) for m, v in steps.items()}
    fastest = {m: min(v) for m, v in steps.items()}
    round_ratio = {m: statistics.median(r[m] / r["joint"] for r in per_round) for m in METHODS}
    protocol = bt.resolve_config("avdigits", "embedded", "relearning", "concat", 0)
    epochs, rl = protocol["train"]["epochs"], protocol["method"]
    n_diag = len(relearn_epochs(rl["every"], rl["times"], rl["reference_epochs"], epochs))
    splits = bt.load_splits(
        {**copy.deepcopy(protocol), "data": {"packed_dir": str(REPO / protocol["data"]["packed_dir"])}}
    )
    n_steps = -(-len(splits["train"]) // protocol["train"]["batch_size"])
    diag_s = statistics.median(diagnosis)
    # Re-learning's steps are joint's: its amortized cost is joint's training time plus the diagnoses
    amortized = (fastest["relearning"] * 1e-3 * n_steps * epochs + n_diag * diag_s) / (
        fastest["joint"] * 1e-3 * n_steps * epochs
    )
    result = {
        "threads": args.threads,
        "rounds": args.rounds,
        "epochs_per_run": args.epochs,
        "wall_s": round(time.perf_counter() - started, 1),
        "step_ms_median": {m: round(v, 2) for m, v in med.items()},
        "step_ms_fastest": {m: round(v, 2) for m, v in fastest.items()},
        "ratio_fastest_over_joint": {m: round(v / fastest["joint"], 3) for m, v in fastest.items()},
        "ratio_median_per_round_over_joint": {m: round(v, 3) for m, v in round_ratio.items()},
        "step_ms_all": {m: [round(x, 1) for x in v] for m, v in steps.items()},
        "relearning_diagnosis_s": round(diag_s, 3),
        "relearning_amortized_ratio_embedded": round(amortized, 3),
        "relearning_schedule_embedded": f"{n_diag} diagnoses in {epochs} epochs of {n_steps} steps",
    }
    print(f"{args.rounds} rounds x {args.epochs} epochs per method, {args.threads} threads, {result['wall_s']} s")
    for m in METHODS:
        print(
            f"  {m:<11} fastest {fastest[m]:7.1f} ms/step  x{result['ratio_fastest_over_joint'][m]:.3f} of joint   "
            f"median per round x{result['ratio_median_per_round_over_joint'][m]:.3f}"
        )
    print(
        f"  re-learning diagnosis {diag_s:.2f} s; amortized over the embedded protocol "
        f"({result['relearning_schedule_embedded']}): x{amortized:.3f} of joint"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
