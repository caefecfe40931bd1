"""What the adversarial robustness evaluation (bml/evaluate.py: robustness) adds to a run's final evaluation.

    python benchmarks/robustness_cost.py [--rounds 3] [--threads 2] [--data-root data] [--method joint]

The cell is resolved as bml/plan.py resolves it (avdigits/embedded, the method's fusion, seed 0, tracking off);
its model, untrained (the cost does not depend on the weights), is evaluated by the loop's own
`Job.final_metrics` with the attacks on (params/params.yaml evaluation) and off (attack_eps 0), alternately,
`--rounds` times; the fastest of each is reported, and their difference, which a run pays once per final
evaluation (twice when the best epoch is not the last).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import bml  # noqa: F401  (first: bml pins its CPU kernels before torch and numpy load, bml/runtime.py)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from timed_training import cell_config  # noqa: E402

from bml.methods import method_spec  # noqa: E402
from bml.plan import digest, hashed_config  # noqa: E402
from bml.train import start_job  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1: as bml/runtime.py pins every run")
    parser.add_argument("--data-root", type=Path, default=REPO / "data", help="holds avdigits/embedded/packed")
    parser.add_argument("--method", default="joint")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "robustness_cost.json")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = "none"
    fusion = method_spec(args.method).head or "concat"
    seconds: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        on = cell_config(args.data_root, tmp, args.method, fusion, 0)
        off = copy.deepcopy(on)
        off["eval"]["attack_eps"] = 0.0
        off["hash"] = digest(hashed_config(off))
        jobs = {"with": start_job(on, "cpu"), "without": start_job(off, "cpu")}
        torch.set_num_threads(args.threads)  # start_job pins one thread (bml/runtime.py), as every run has
        for _ in range(args.rounds):
            for name, job in jobs.items():
                started = time.perf_counter()
                job.final_metrics(job.model)
                seconds[name].append(time.perf_counter() - started)
        n_test = len(jobs["with"].run.splits["test"])
    best = {k: min(v) for k, v in seconds.items()}
    result = {
        "method": args.method,
        "threads": args.threads,
        "test_samples": n_test,
        "attack_samples": on["eval"]["attack_samples"],
        "final_evaluation_s_fastest": {k: round(v, 2) for k, v in best.items()},
        "attacks_s": round(best["with"] - best["without"], 2),
        "all_s": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
