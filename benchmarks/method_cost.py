"""What each balancing method costs per training step, as a ratio to joint concat measured in the same run.

    python benchmarks/method_cost.py [--rounds 8] [--epochs 3] [--threads 2] [--data-root data]
                                     [--methods joint,ogm,...] [--out benchmarks/results/method_cost.json]

The methods are those of the current matrix (params/params.yaml: matrices[matrix]) that train on every modality
with fusion concat (or their own head: MLA's `mla`, Greedy's `mmtm`) on avdigits/embedded, joint first;
`--methods` picks others. Every method trains through
`bml.train.train` itself (the cell resolved as bml/plan.py resolves it: small_cnn + concat, embedded protocol,
seed 0, the packed data under --data-root, tracking off, probe_every 0) for `--epochs` epochs per round; the
methods take turns within a round, in an order rotated every round, so load on a shared machine falls on all of
them alike. The final test evaluation is skipped (the log callback raises after the last epoch: it is never timed).
A method that reads other runs (I2M2: the uni-modal runs and joint) gets them trained first, one untimed epoch each.

Each run's history gives, per epoch, `step_time_ms` (the training steps: data, hooks, backward, optimizer,
over the steps of the epoch) and `epoch_end_time_s` (the method's end-of-epoch work). The methods act from
the first step: OGM's and OPM's warm-ups are set to 0 and OGM's modulation window to the whole run, and
Re-learning's schedule is set to diagnose once, after 0-based epoch 1 (its first allowed epoch,
bml/methods/relearning.py: relearn_epochs; so --epochs is at least 3), so its diagnosis is timed.

A method that re-samples the epoch (sample-level valuation) changes its number of steps and values the training set
before its first step (timed with the steps): its whole training time per epoch, over joint's, is reported beside
the step ratio (`train_s_fastest`, `ratio_train_fastest_over_joint`: step time x steps).

Reported per method: its ratio to joint in two ways, (a) the fastest epoch's step time over joint's fastest
(timeit's rule: the least-disturbed measurement is the closest to the true cost; the headline figure) and
(b) the median over rounds of the ratio of the two runs' median step times in that round (goal: OGM-GE and
OPM at most 1.10 either way); and, for Re-learning, the diagnosis time and its amortized cost over the
embedded protocol's real schedule (3 diagnoses in 20 epochs): (step time x steps x epochs + diagnoses x
diagnosis time) / (joint's step time x steps x epochs).

Methods outside the default matrix take `--methods`, e.g. MIMO and BOGC-MML (helper F's run,
benchmarks/results/method_cost_mimo_bogc.json: `--rounds 3 --epochs 2 --threads 1 --methods
joint,mmpareto,mimo,bogc` on the tests' 120-clip avdigits at load ~8 on 2 shared cores): MIMO 1.66x fastest
(1.29x median per round; one backward, plus its uni-modal heads), BOGC-MML 7.4x (6.0x), costlier by design:
2 x chunks (default 4) gradient passes per step to estimate each gradient's variance.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# isort: off
import bml  # noqa: E402, F401 (first: it pins torch's CPU kernels before numpy loads, bml/runtime.py)
import torch  # noqa: E402

# isort: on
from timed_training import cell_config, train_epochs  # noqa: E402

from bml.data.loader import PackedSplit  # noqa: E402
from bml.methods import method_spec, required_runs  # noqa: E402
from bml.methods.relearning import relearn_epochs  # noqa: E402
from bml.plan import load_pipeline  # noqa: E402

DATASET, PROTOCOL, FUSION = "avdigits", "embedded", "concat"
# --set items that make each method act from the first step (values of params/methods/<name>.yaml overridden)
ACT_NOW = {
    "ogm": ["method.warmup_epochs=0", "method.modulation_ends=100"],  # 100 = its reference_epochs: the whole run
    "ogm_ge": ["method.warmup_epochs=0", "method.modulation_ends=100"],
    "opm": ["method.warmup_epochs=0"],
    "greedy": ["method.warmup_epochs=0"],  # re-balancing windows from the first steps
    # valuation: re-sampled from the first epoch; its valuation pass over train (epoch_samples, timed with the
    # steps) and its extra copies make an epoch costlier by design: see the epoch-time ratio
    "sample_valuation": ["method.warmup_epochs=0"],
    "modality_valuation": ["method.warmup_epochs=0"],
    # pmr and agm act from the first step with their defaults (windows 0-100 of 150 and of 100); PMR's prototype
    # pass runs in on_epoch_start, inside the timed training steps (bml/train.py: step_time_ms), so its cost is
    # amortized over the epoch's steps as in a real run
    "pmr": [],
    "agm": [],
    "crmt": ["method.second_phase_epochs=0"],  # step 1 only: its steps are CRMT's cost; step 2 trains a_m alone
}


def fusion_of(method: str) -> str:
    """concat, or the method's own head (CRMT's)."""
    return method_spec(method).head or FUSION


def act_now(method: str, epochs: int) -> list[str]:
    if method == "relearning":  # diagnose once, after 0-based epoch 1 (scale_epoch(1, epochs, epochs) = 1)
        return ["method.every=1", "method.times=1", f"method.reference_epochs={epochs}"]
    return ACT_NOW.get(method, [])


def epoch_steps(config: dict, row: dict) -> int:
    """The steps of one epoch: the training split plus the copies a re-sampling method added (resampled_<m>)."""
    train = config["train"]
    n = len(
        PackedSplit(config["paths"]["packed_dir"], "train", config["data"]["modalities"], train["train_frames"], True)
    )
    extra = sum(v for k, v in row.items() if k.startswith("resampled_"))
    return math.ceil((n + extra) / train["batch_size"])


def train_required(methods: list[str], data_root: Path, results: str) -> None:
    """The runs the timed methods read (I2M2's uni-modal experts and joint model), one untimed epoch each, so
    that their best.pt is there to load; a run that is itself timed is trained again by its timing."""
    done: set[tuple[str, str]] = set()
    for method in methods:
        modalities = list(cell_config(data_root, results, method, FUSION, 0)["data"]["modalities"])
        for name, fusion in required_runs(method_spec(method), modalities, FUSION):
            if (name, fusion) not in done:
                done.add((name, fusion))
                once = ("train.epochs=1", "train.probe_every=0")
                train_epochs(cell_config(data_root, results, name, fusion, 0, once))


def matrix_methods() -> list[str]:
    """Methods of the current matrix on avdigits/embedded with fusion concat that train on every modality."""
    pipeline = load_pipeline(REPO / "params")
    found = [
        run["method"]
        for block in pipeline["matrices"][pipeline["matrix"]]
        if (block["dataset"], block["protocol"]) == (DATASET, PROTOCOL)
        for run in block["runs"]
        if run["fusion"] in (FUSION, method_spec(run["method"]).head)
        and method_spec(run["method"]).trains
        and method_spec(run["method"]).modality is None
    ]
    return ["joint", *[m for m in dict.fromkeys(found) if m != "joint"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs per run (at least 3: Re-learning diagnoses after 0-based epoch 1, never after the last)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=REPO / "data", help="holds avdigits/embedded/packed")
    parser.add_argument("--methods", default="", help="comma-separated (default: the current matrix's, see above)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "method_cost.json")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else matrix_methods()
    if methods[0] != "joint":
        methods = ["joint", *[m for m in methods if m != "joint"]]
    if "relearning" in methods and args.epochs < 3:
        parser.error("--epochs must be at least 3 for Re-learning to diagnose (after 0-based epoch 1)")
    torch.set_num_threads(args.threads)
    os.environ["MLFLOW_TRACKING_URI"] = "none"

    steps: dict[str, list[float]] = {m: [] for m in methods}
    train_s: dict[str, list[float]] = {m: [] for m in methods}  # step time x steps: an epoch's training time
    per_round: list[dict[str, float]] = []
    diagnosis: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        configs = {
            m: cell_config(
                args.data_root,
                tmp,
                m,
                method_spec(m).head or FUSION,  # a method with a head of its own (MLA, Greedy) runs on it
                fusion_of(m),
                0,
                (f"train.epochs={args.epochs}", "train.probe_every=0", *act_now(m, args.epochs)),
            )
            for m in methods
        }
        train_required(methods, args.data_root, tmp)
        for r in range(args.rounds):
            order = methods[r % len(methods) :] + methods[: r % len(methods)]
            per_round.append({})
            for method in order:
                history = train_epochs(configs[method])
                steps[method] += [row["step_time_ms"] for row in history]
                train_s[method] += [row["step_time_ms"] * 1e-3 * epoch_steps(configs[method], row) for row in history]
                per_round[-1][method] = statistics.median(row["step_time_ms"] for row in history)
                # the epochs Re-learning diagnosed after: those that recorded its re-learning weights
                diagnosis += [
                    row["epoch_end_time_s"] for row in history if any(k.startswith("relearn_weight_") for k in row)
                ]
            print(
                f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {steps[m][-1]:.0f} ms" for m in methods),
                file=sys.stderr,
                flush=True,
            )

    med = {m: statistics.median(v) for m, v in steps.items()}
    fastest = {m: min(v) for m, v in steps.items()}
    round_ratio = {m: statistics.median(r[m] / r["joint"] for r in per_round) for m in methods}
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
    }
    if any(m.endswith("valuation") for m in methods):
        result["train_s_fastest"] = {m: round(min(v), 3) for m, v in train_s.items()}
        result["ratio_train_fastest_over_joint"] = {
            m: round(min(v) / min(train_s["joint"]), 3) for m, v in train_s.items()
        }
    print(f"{args.rounds} rounds x {args.epochs} epochs per method, {args.threads} threads, {result['wall_s']} s")
    for m in methods:
        print(
            f"  {m:<11} fastest {fastest[m]:7.1f} ms/step  x{result['ratio_fastest_over_joint'][m]:.3f} of joint   "
            f"median per round x{result['ratio_median_per_round_over_joint'][m]:.3f}"
        )
    if "ratio_train_fastest_over_joint" in result:
        print(
            "  training time per epoch (steps x step time), fastest over joint's: "
            + ", ".join(f"{m} x{r:.3f}" for m, r in result["ratio_train_fastest_over_joint"].items())
        )
    if diagnosis:
        # the protocol's own Re-learning schedule and steps per epoch, on the same packed data
        protocol = cell_config(args.data_root, REPO / "results", "relearning", FUSION, 0)
        epochs, rl, tcfg = protocol["train"]["epochs"], protocol["method"], protocol["train"]
        n_diag = len(relearn_epochs(rl["every"], rl["times"], rl["reference_epochs"], epochs))
        n_train = len(
            PackedSplit(
                protocol["paths"]["packed_dir"],
                "train",
                protocol["data"]["modalities"],
                tcfg["train_frames"],
                train=True,
            )
        )
        n_steps = math.ceil(n_train / tcfg["batch_size"])
        diag_s = statistics.median(diagnosis)
        # Re-learning's steps are joint's: its amortized cost is joint's training time plus the diagnoses
        amortized = (fastest["relearning"] * 1e-3 * n_steps * epochs + n_diag * diag_s) / (
            fastest["joint"] * 1e-3 * n_steps * epochs
        )
        result["relearning_diagnosis_s"] = round(diag_s, 3)
        result["relearning_amortized_ratio_embedded"] = round(amortized, 3)
        result["relearning_schedule_embedded"] = f"{n_diag} diagnoses in {epochs} epochs of {n_steps} steps"
        print(
            f"  re-learning diagnosis {diag_s:.2f} s; amortized over the embedded protocol "
            f"({result['relearning_schedule_embedded']}): x{amortized:.3f} of joint"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
