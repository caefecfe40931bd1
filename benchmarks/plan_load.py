"""What resolving the plan costs in a fresh interpreter (what every `bml` command and Snakemake's start pay),
as a ratio to a fresh interpreter that only imports bml.plan, measured in the same run.

    python benchmarks/plan_load.py [--rounds 5] [--matrix default] [--out benchmarks/results/plan_load.json]

Each figure is the median of --rounds, the two commands interleaved so load hits both alike. The test suite
checks that planning never imports torch (tests/test_plan.py); how long it takes is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORT_ONLY = "import bml.plan"


def plan_code(matrix: str) -> str:
    return f"from bml.plan import load_plan; print(len(load_plan(overrides={{'matrix': {matrix!r}}}).cells))"


def timed(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--matrix", default="default", help="a matrix of params/params.yaml")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "plan_load.json"))
    args = parser.parse_args()
    code = plan_code(args.matrix)
    n_cells = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    runs: dict[str, list[float]] = {"import_only": [], "load_plan": []}
    for _ in range(args.rounds):
        runs["import_only"].append(timed(IMPORT_ONLY))
        runs["load_plan"].append(timed(code))
    median = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "matrix": args.matrix,
        "cells": n_cells,
        "rounds": args.rounds,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "median_s": {k: round(v, 3) for k, v in median.items()},
        "ratio_load_plan_over_import": round(median["load_plan"] / median["import_only"], 3),
        "planning_s_per_cell": round((median["load_plan"] - median["import_only"]) / n_cells, 4),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
