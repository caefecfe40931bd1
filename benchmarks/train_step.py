"""Training-step cost: bml's training loop against a bare PyTorch loop, and the loader against the step.

    python benchmarks/train_step.py [--steps 60] [--threads 2] [--out benchmarks/results/train_step.json]

Both sides train the same model (small_cnn + concat, seeded alike, so the same initial weights) on the same
batches (PackedSplit + make_loader, epoch 0, batch_size of params/protocols/embedded.yaml) with the same SGD
settings; each round trains one epoch on each side, alternating which goes first, and the medians over the
rounds are reported, so a machine loaded by other jobs slows both sides alike. One round is one epoch (14 steps,
seconds), so a burst of load can still hit one side of a round: on a shared machine ask for more rounds
(--steps 200 gives 15) and read step_ms_per_round in the JSON before trusting a ratio away from 1.

- bml: `bml.train.train(config)` itself (method joint, whose hooks are the base ones), tracking off
  (MLFLOW_TRACKING_URI=none), results in a temporary folder, probe_every=0. Its own clock, `epoch_time_s`
  (read from checkpoint.pt's history), covers the training steps, the scheduler and `validate` (collect on
  val plus sklearn metrics), not the checkpoint writes. To skip the final test evaluation, which is never
  timed, the `log` callback raises once the last epoch is logged; nothing in bml is patched.
- bare: for b in make_loader(...): forward, F.cross_entropy, zero_grad, backward, step, loss.item(); then the
  same val pass a bare script would make (bml.evaluate.collect + argmax accuracy).

Reported: (a) per-step time, bml's being its epoch_time_s minus `bml.train.validate` timed in the same round on
the bare side's model (same architecture and val split), divided by the steps per epoch; both sides' per-step
times are epoch means (the last batch is short on both). The ratio bml/bare is the loop's overhead (goal <= 1.05).
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

from timed_training import train_epochs  # noqa: E402

from bml import train as bt  # noqa: E402
from bml.data.loader import make_loader, prepare_frames  # noqa: E402
from bml.evaluate import collect  # noqa: E402
from bml.models.fusion import ModelConfig, build_model  # noqa: E402


def bml_round(config: dict, root: str) -> dict[str, float]:
    row = train_epochs(config, root)[-1]
    return {"epoch_s": row["epoch_time_s"], "loss": row["train_loss"]}


def bare_round(config: dict, splits: dict, ctx: bt.LoopContext) -> dict[str, float]:
    tcfg, opt = config["train"], config["train"]["optimizer"]
    bt.seed_everything(config["run"]["seed"])  # as train() does before building its model: the same initial weights
    model = build_model(ModelConfig(tcfg["encoder"], "concat", len(splits["train"].meta["labels"])))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"]
    )
    norm = (tcfg["frame_mean"], tcfg["frame_std"])
    t0 = time.perf_counter()
    model.train()
    loss_sum, seen = 0.0, 0
    for batch in make_loader(splits["train"], tcfg["batch_size"], epoch=0):
        out = model(batch["audio"], prepare_frames(batch["frames"], *norm))
        loss = F.cross_entropy(out["logits"], batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum, seen = loss_sum + loss.item() * len(batch["label"]), seen + len(batch["label"])
    t1 = time.perf_counter()
    found = collect(model, splits["val"], torch.device("cpu"), norm)
    float((found["logits"].argmax(1) == found["label"]).mean())
    t2 = time.perf_counter()
    bt.validate(model, ctx, with_probes=False)  # what bml's epoch_time_s spends on validation, to subtract
    t3 = time.perf_counter()
    return {"train_s": t1 - t0, "val_s": t2 - t1, "bml_val_s": t3 - t2, "loss": loss_sum / seen}


def loader_round(dataset, batch_size: int, workers: int) -> float:
    t0 = time.perf_counter()
    n = sum(len(b["label"]) for b in make_loader(dataset, batch_size, epoch=0, num_workers=workers))
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per side, at least (whole epochs)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of one epoch per side (0: from --steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["MLFLOW_TRACKING_URI"] = "none"  # bml.tracking.open_tracker honours it: no MLflow

    config = bt.resolve_config(
        "avdigits",
        "embedded",
        "joint",
        "concat",
        args.seed,
        overrides=["train.epochs=1", "train.probe_every=0", "train.num_workers=0"],
    )
    config["data"]["packed_dir"] = str(REPO / config["data"]["packed_dir"])
    splits = bt.load_splits(config)
    tcfg = config["train"]
    ctx = bt.LoopContext(
        splits,
        torch.device("cpu"),
        (tcfg["frame_mean"], tcfg["frame_std"]),
        tuple(config["eval"]["probe_cs"]),
        config["eval"]["probe_max_iter"],
    )
    n_train, batch_size = len(splits["train"]), tcfg["batch_size"]
    n_steps = math.ceil(n_train / batch_size)
    rounds = args.rounds or max(3, math.ceil(args.steps / n_steps))

    bml, bare, supply = [], [], {0: [], 2: []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            if r % 2 == 1:  # alternate which side goes first
                bare.append(bare_round(config, splits, ctx))
            bml.append(bml_round(config, f"{tmp}/r{r}"))
            if r % 2 == 0:
                bare.append(bare_round(config, splits, ctx))
            for workers in supply:
                supply[workers].append(loader_round(splits["train"], batch_size, workers))
            print(
                f"round {r + 1}/{rounds}: bml epoch {bml[-1]['epoch_s']:.2f}s, bare train "
                f"{bare[-1]['train_s']:.2f}s + val {bare[-1]['val_s']:.2f}s",
                file=sys.stderr,
                flush=True,
            )

    med = statistics.median
    bml_step = med(b["epoch_s"] - a["bml_val_s"] for b, a in zip(bml, bare, strict=True)) / n_steps
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
        "bml_validate_s": round(med(a["bml_val_s"] for a in bare), 3),
        "bare_val_s": round(med(a["val_s"] for a in bare), 3),
        "step_ms_per_round": {
            "bml": [round(1e3 * (b["epoch_s"] - a["bml_val_s"]) / n_steps, 1) for b, a in zip(bml, bare, strict=True)],
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
