"""Where a run's time goes, and where the main job's time goes: the figures that catch regressions.

One run: `bml train` in its own process (as a Snakemake job runs it, one thread), its wall time split into
process start and imports (the wall time the run's own clock did not see) and the phases the loop times
itself (metrics.json: timings_s: data, training steps, the method's epoch-end work, validation, probes,
final evaluation, tracking, checkpoints).

    python benchmarks/run_phases.py                          # joint concat, seed 0, on data/avdigits/embedded
    python benchmarks/run_phases.py --methods joint,mmpareto --seeds 0,1
    python benchmarks/run_phases.py --main-job .             # also a finished `make run`: data stages, training
                                                             # and report, from Snakemake's benchmark files
    python benchmarks/run_phases.py --old-repo DIR           # the same run with an older checkout's code and
                                                             # data, in the same session: the ratio of the two
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = (
    "data",
    "training_steps",
    "method_epoch_end",
    "validation",
    "probes",
    "final_evaluation",
    "tracking",
    "checkpoints",
)


def one_run(method: str, fusion: str, seed: int, results: Path, cwd: Path = REPO, env: dict | None = None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bml.cli",
        "train",
        "--dataset",
        "avdigits",
        "--protocol",
        "embedded",
        "--method",
        method,
        "--fusion",
        fusion,
        "--seed",
        str(seed),
        "--threads",
        "1",
        "--device",
        "cpu",
        "--results-root",
        str(results),
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": "none", **(env or {})}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    found = list(results.glob(f"avdigits/embedded/{fusion}/{method}/seed{seed}/metrics.json"))
    timings = json.loads(found[0].read_text()).get("timings_s", {})
    return {"wall": wall, **timings}


def print_run(label: str, t: dict) -> None:
    wall = t["wall"]
    if "total" not in t:  # an older checkout that does not time its phases
        print(f"{label}: {wall:.1f} s wall")
        return
    parts = {"start and imports": wall - t.get("total", wall), **{p: t.get(p, 0.0) for p in PHASES}}
    print(f"{label}: {wall:.1f} s wall")
    for name, seconds in parts.items():
        print(f"  {name:<18} {seconds:7.1f} s  {100 * seconds / wall:5.1f} %")


def main_job(project: Path) -> None:
    """Sum of each stage's wall seconds (Snakemake's benchmark files) and the run's wall time."""
    groups: dict[str, float] = {}
    for path in project.glob("logs/**/*.benchmark.tsv"):
        with path.open() as f:
            seconds = float(next(csv.DictReader(f, delimiter="\t"))["s"])
        name = path.name.split(".")[0]
        group = "training" if "train" in path.parts else "report" if name == "report" else "data stages"
        groups[group] = groups.get(group, 0.0) + seconds
    total = sum(groups.values())
    print(f"main job in {project}: {total:.0f} job-seconds")
    for group, seconds in sorted(groups.items()):
        print(f"  {group:<12} {seconds:8.0f} s  {100 * seconds / total:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="joint")
    parser.add_argument("--fusion", default="concat")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--main-job", type=Path, default=None)
    parser.add_argument("--old-repo", type=Path, default=None, help="a checkout of older code, with its data/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            fusion = "none" if method.endswith("_only") else args.fusion
            for seed in map(int, args.seeds.split(",")):
                new = one_run(method, fusion, seed, Path(tmp) / f"new{seed}")
                print_run(f"{method} {fusion} seed {seed}", new)
                if args.old_repo:
                    old = one_run(
                        method,
                        fusion,
                        seed,
                        Path(tmp) / f"old{seed}",
                        cwd=args.old_repo,
                        env={"PYTHONPATH": str(args.old_repo)},
                    )
                    print_run(f"  the same with {args.old_repo}", old)
                    print(f"  ratio, old / new wall time: {old['wall'] / new['wall']:.2f}x")
    if args.main_job:
        main_job(args.main_job)


if __name__ == "__main__":
    main()
