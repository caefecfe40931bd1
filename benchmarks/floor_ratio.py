"""bml's time against the floor: a bare PyTorch loop doing only a run's forward and backward steps.

    python benchmarks/floor_ratio.py [--cells joint:concat,audio_only:none,...] [--seed 0] [--epochs N]
                                     [--out benchmarks/results/floor_ratio.json]

Per cell (avdigits/embedded, the cell resolved as `bml train` resolves it, tracking off), in the same session:

- **bml**: `bml train` in its own process, as a workflow job runs it; its CPU time (user + system, from the
  kernel's accounting of the child) and wall time, and the phases the loop times itself (metrics.json:
  timings_s), so the time above the floor is broken down: process start and imports (wall time the run's
  clock did not see), data, validation, test by epoch, probes, final evaluation, checkpoints, tracking;
- **the floor**: in a fresh process, the same model, optimizer, scheduler and method step (`training_step`: its
  forwards, backwards and optimizer step), on the same batches (the loader's, for each epoch, made and moved to
  the device before the clock starts), for the same epochs, and nothing else: no validation, probes, test,
  checkpoints or tracking. Its CPU time is the floor's.

The ratio is bml's CPU time over the floor's, per cell and summed over the cells (the matrix's ratio weighs
each cell by its cost). The machine is noisy: the two processes of a cell run back to back, and each cell's
pair in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CELLS = "audio_only:none,visual_only:none,joint:concat,ogm_ge:concat,mmpareto:concat"
PHASES = (
    "data",
    "validation",
    "test_by_epoch",
    "probes",
    "final_evaluation",
    "checkpoints",
    "tracking",
    "method_epoch_end",
)


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall, CPU seconds, stdout) of one child process."""
    cpu0, wall0 = _child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall0, _child_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, cpu, proc.stdout


def bml_run(method: str, fusion: str, seed: int, sets: list[str], results: Path) -> dict:
    cmd = [sys.executable, "-m", "bml.cli", "train", "--dataset", "avdigits", "--protocol", "embedded"]
    cmd += ["--method", method, "--fusion", fusion, "--seed", str(seed), "--device", "cpu"]
    cmd += ["--results-root", str(results)] + [a for s in sets for a in ("--set", s)]
    wall, cpu, _ = _timed(cmd, {**os.environ, "MLFLOW_TRACKING_URI": "none"})
    metrics = json.loads(next(results.glob(f"avdigits/embedded/{fusion}/{method}/seed{seed}/metrics.json")).read_text())
    return {"wall_s": wall, "cpu_s": cpu, "timings_s": metrics["timings_s"]}


def floor_run(method: str, fusion: str, seed: int, sets: list[str], results: Path) -> dict:
    cmd = [sys.executable, __file__, "--floor-of", f"{method}:{fusion}", "--seed", str(seed), "--results", str(results)]
    cmd += [a for s in sets for a in ("--set", s)]
    wall, cpu, out = _timed(cmd, {**os.environ, "MLFLOW_TRACKING_URI": "none"})
    inner = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": cpu, **inner}


def floor_loop(method: str, fusion: str, seed: int, sets: tuple[str, ...], results: Path) -> dict:
    """The bare loop, in this process: prints {"steps_cpu_s": ..., "steps_wall_s": ..., "steps": ...}."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bml  # noqa: F401 (first: the CPU pins)

    # isort: split
    from timed_training import cell_config

    from bml.data.loader import make_loader
    from bml.job import start_job
    from bml.methods.base import StepContext, StepServices
    from bml.train import Parts, _to_batch, enter_phase, phase_of, run_phases

    config = cell_config(REPO / "data", results, method, fusion, seed, sets)
    job = start_job(config, "cpu")
    ts, run = job.settings, job.run
    services = StepServices(run.device, ts.precision, job.method.grad_clip(ts.grad_clip), ts.accumulate)
    phases = run_phases(job)
    parts = Parts(job.model, None, None, services, job.method)
    enter_phase(job, parts, phases, phases[0])
    cpu, wall, steps = 0.0, 0.0, 0
    for epoch in range(ts.epochs):
        phase = phase_of(phases, epoch)
        if epoch and phase is not phase_of(phases, epoch - 1):
            enter_phase(job, parts, phases, phase)
        job.model.train()
        loader = make_loader(run.splits["train"], ts.batch_size, epoch, 0, False, None)
        batches = [_to_batch(raw, run.device, job.prepare, None) for raw in loader]  # not timed
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for step, batch in enumerate(batches):
            ctx = StepContext(run, job.model, parts.optimizer, epoch, step, len(batches), services, phase)
            job.method.training_step(ctx, batch)
        parts.scheduler.step()
        cpu, wall, steps = cpu + time.process_time() - cpu0, wall + time.perf_counter() - wall0, steps + len(batches)
    return {"steps_cpu_s": cpu, "steps_wall_s": wall, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=CELLS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the protocol's")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "floor_ratio.json")
    parser.add_argument("--floor-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_of:  # the child process of floor_run
        method, fusion = args.floor_of.split(":")
        print(json.dumps(floor_loop(method, fusion, args.seed, tuple(args.set), args.results)))
        return
    sets = [f"train.epochs={args.epochs}"] if args.epochs else []
    cells, total_bml, total_floor = {}, 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells.split(","):
            method, fusion = cell.split(":")
            got = bml_run(method, fusion, args.seed, sets, Path(tmp) / f"bml-{method}")
            floor = floor_run(method, fusion, args.seed, sets, Path(tmp) / f"floor-{method}")
            t = got["timings_s"]
            breakdown = {"start and imports": got["wall_s"] - t["total"], **{p: t.get(p, 0.0) for p in PHASES}}
            breakdown["training steps over the floor's"] = t["training_steps"] - floor["steps_wall_s"]
            cells[cell] = {
                "bml_cpu_s": got["cpu_s"],
                "bml_wall_s": got["wall_s"],
                "floor_cpu_s": floor["steps_cpu_s"],
                "ratio": got["cpu_s"] / floor["steps_cpu_s"],
                "above_floor_wall_s": breakdown,
            }
            total_bml, total_floor = total_bml + got["cpu_s"], total_floor + floor["steps_cpu_s"]
            print(
                f"{cell}: bml {got['cpu_s']:.1f} CPU s, floor {floor['steps_cpu_s']:.1f} CPU s, ratio "
                f"{cells[cell]['ratio']:.2f}"
            )
            for name, seconds in breakdown.items():
                print(f"    {name:<32} {seconds:6.1f} s")
    result = {"cells": cells, "ratio_all": total_bml / total_floor, "load_average": os.getloadavg()[0]}
    print(f"all cells: ratio {result['ratio_all']:.2f} (bml CPU time over the floor's)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
