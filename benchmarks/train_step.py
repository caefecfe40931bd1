"""Training-step cost: bml's training loop against a bare PyTorch loop, and the loader against the step.

    python benchmarks/train_step.py [--steps 60] [--rounds 0] [--threads 2] [--data-root data]
                                    [--out benchmarks/results/train_step.json]

Both sides train the same model (small_cnn + concat, seeded alike, so the same initial weights) on the same
batches (PackedSplit + make_loader, epoch 0, batch_size and frames of params/protocols/embedded.yaml, the packed
data under --data-root) with the same SGD settings; each round trains one epoch on each side, alternating which
goes first, and the medians over the rounds are reported, so a machine loaded by other jobs slows both sides
alike. One round is one epoch (14 steps on the default 1,200 clips, seconds), so a burst of load can still hit
one side of a round: on a shared machine ask for more rounds (--steps 200 gives 15) and read step_ms_per_round
in the JSON before trusting a ratio away from 1.

- bml: `bml.train.train(config)` itself (method joint, whose hooks are the base ones; the cell resolved as
  bml/plan.py resolves it), tracking off, results in a temporary folder, probe_every=0. Its own clocks, read
  from checkpoint.pt's history: `step_time_ms` (the epoch's training steps: the method's epoch hooks, loader,
  moving and preparing the batch, the step, the finiteness check of the weights; per step) and `epoch_time_s`
  (that plus the scheduler, the method's epoch end and validation: collect on val plus the metrics; not the
  checkpoint writes). To skip the final test evaluation, which is never timed, the `log` callback raises once
  the last epoch is logged; nothing in bml is patched.
- bare: for b in make_loader(...): prepare_inputs, forward, F.cross_entropy, zero_grad, backward, step,
  loss.item(); then the same val pass a bare script would make (bml.evaluate.collect + argmax accuracy).

Reported: (a) per-step time, bml's step_time_ms against the bare loop's training time over its steps; both are
epoch means (the last batch is short on both). The ratio bml/bare is the loop's overhead (goal <= 1.05).
(b) whole epochs (train + validation) as each side does them, so bml's extra metrics count against it.
(c) the loader alone (no model, num_workers 0 and 2) in samples/s against what training consumes
(n_train / bml's training time per epoch); supply/demand > 1 means the loader is not the bottleneck.
The two sides' mean training losses are compared too: equal means they did the same work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from timed_training import cell_config, train_epochs  # noqa: E402

from bml.checkpoint import seed_everything  # noqa: E402
from bml.data.loader import PackedSplit, make_loader, prepare_inputs  # noqa: E402
from bml.evaluate import collect  # noqa: E402
from bml.models.model import ModelSpec, build_model  # noqa: E402


def bml_round(config: dict) -> dict[str, float]:
    row = train_epochs(config)[-1]
    return {"step_s": row["step_time_ms"] * 1e-3, "epoch_s": row["epoch_time_s"], "loss": row["train_loss"]}


def bare_round(config: dict, splits: dict[str, PackedSplit]) -> dict[str, float]:
    tcfg, opt, modalities = config["train"], config["train"]["optimizer"], config["data"]["modalities"]
    seed_everything(config["run"]["seed"])  # as train() does before building its model: the same initial weights
    model = build_model(ModelSpec(tcfg["encoder"], config["run"]["fusion"], splits["train"].n_classes, modalities))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"]
    )
    t0 = time.perf_counter()
    model.train()
    loss_sum, seen = 0.0, 0
    for batch in make_loader(splits["train"], tcfg["batch_size"], epoch=0):
        out = model(prepare_inputs(batch["inputs"], modalities, tcfg))
        loss = F.cross_entropy(out.logits, batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum, seen = loss_sum + loss.item() * len(batch["label"]), seen + len(batch["label"])
    t1 = time.perf_counter()
    found = collect(
        model, lambda m, x: m(x), splits["val"], torch.device("cpu"), lambda x: prepare_inputs(x, modalities, tcfg)
    )
    float((found["logits"].argmax(1) == found["label"]).mean())
    t2 = time.perf_counter()
    return {"train_s": t1 - t0, "val_s": t2 - t1, "loss": loss_sum / seen}


def loader_round(dataset: PackedSplit, batch_size: int, workers: int) -> float:
    t0 = time.perf_counter()
    n = sum(len(b["label"]) for b in make_loader(dataset, batch_size, epoch=0, num_workers=workers))
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per side, at least (whole epochs)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of one epoch per side (0: from --steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=REPO / "data", help="holds avdigits/embedded/packed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["MLFLOW_TRACKING_URI"] = "none"  # bml.tracking.open_tracker honours it: no MLflow

    tmp = tempfile.TemporaryDirectory()
    config = cell_config(
        args.data_root,
        tmp.name,
        "joint",
        "concat",
        args.seed,
        ("train.epochs=1", "train.probe_every=0", "train.num_workers=0"),
    )
    tcfg, packed, modalities = config["train"], config["paths"]["packed_dir"], config["data"]["modalities"]
    if tcfg["optimizer"]["name"] != "sgd" or tcfg.get("frame_augment", "none") != "none":
        raise SystemExit(f"the bare loop is SGD without frame augmentation; protocol embedded has {tcfg}")
    # the splits as bml.job.open_run opens them
    splits = {
        "train": PackedSplit(packed, "train", modalities, tcfg["train_frames"], train=True, seed=args.seed),
        "val": PackedSplit(packed, "val", modalities, tcfg["eval_frames"], train=False, seed=args.seed),
    }
    n_train, batch_size = len(splits["train"]), tcfg["batch_size"]
    n_steps = math.ceil(n_train / batch_size)
    rounds = args.rounds or max(3, math.ceil(args.steps / n_steps))

    bml, bare, supply = [], [], {0: [], 2: []}
    started = time.perf_counter()
    with tmp:
        for r in range(rounds):
            if r % 2 == 1:  # alternate which side goes first
                bare.append(bare_round(config, splits))
            bml.append(bml_round(config))
            if r % 2 == 0:
                bare.append(bare_round(config, splits))
            for workers in supply:
                supply[workers].append(loader_round(splits["train"], batch_size, workers))
            print(
                f"round {r + 1}/{rounds}: bml steps {bml[-1]['step_s'] * n_steps:.2f}s, "
                f"epoch {bml[-1]['epoch_s']:.2f}s; "
                f"bare train {bare[-1]['train_s']:.2f}s + val {bare[-1]['val_s']:.2f}s",
                file=sys.stderr,
                flush=True,
            )

    med = statistics.median
    bml_step = med(b["step_s"] for b in bml)
    bare_step = med(a["train_s"] for a in bare) / n_steps
    bml_epoch, bare_epoch = med(b["epoch_s"] for b in bml), med(a["train_s"] + a["val_s"] for a in bare)
    demand = n_train / (n_steps * bml_step)  # samples/s that bml's training steps consume
    result = {
        "threads": args.threads,
        "rounds": rounds,
        "steps_per_side": rounds * n_steps,
        "steps_per_epoch": n_steps,
        "batch_size": batch_size,
        "n_train": n_train,
        "wall_s": round(time.perf_counter() - started, 1),
        "bml_step_ms": round(1e3 * bml_step, 2),
        "bare_step_ms": round(1e3 * bare_step, 2),
        "step_ratio_bml_over_bare": round(bml_step / bare_step, 3),
        "bml_epoch_s": round(bml_epoch, 3),
        "bare_epoch_s": round(bare_epoch, 3),
        "epoch_ratio_bml_over_bare": round(bml_epoch / bare_epoch, 3),
        # bml's epoch beyond its training steps (scheduler, epoch end, validation) against the bare val pass
        "bml_epoch_rest_s": round(med(b["epoch_s"] - b["step_s"] * n_steps for b in bml), 3),
        "bare_val_s": round(med(a["val_s"] for a in bare), 3),
        "step_ms_per_round": {
            "bml": [round(1e3 * b["step_s"], 1) for b in bml],
            "bare": [round(1e3 * a["train_s"] / n_steps, 1) for a in bare],
        },
        "same_train_loss": bool(np.allclose([b["loss"] for b in bml], [a["loss"] for a in bare], rtol=1e-5)),
        "loader_samples_per_s": {f"workers{w}": round(med(v), 1) for w, v in supply.items()},
        "train_demand_samples_per_s": round(demand, 1),
        "loader_supply_over_demand": {f"workers{w}": round(med(v) / demand, 2) for w, v in supply.items()},
    }
    rows = [
        ("bml step (ms)", result["bml_step_ms"]),
        ("bare step (ms)", result["bare_step_ms"]),
        ("step ratio bml/bare", result["step_ratio_bml_over_bare"]),
        ("bml epoch incl. val (s)", result["bml_epoch_s"]),
        ("bare epoch incl. val (s)", result["bare_epoch_s"]),
        ("epoch ratio bml/bare", result["epoch_ratio_bml_over_bare"]),
        ("training demand (samples/s)", result["train_demand_samples_per_s"]),
        *((f"loader {k} (samples/s)", v) for k, v in result["loader_samples_per_s"].items()),
        *((f"supply/demand {k}", v) for k, v in result["loader_supply_over_demand"].items()),
        ("same train loss both sides", result["same_train_loss"]),
    ]
    print(f"{rounds} rounds x {n_steps} steps per side, {args.threads} threads, {result['wall_s']} s")
    for name, value in rows:
        print(f"  {name:<30} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
