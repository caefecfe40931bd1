"""What the CPU pins cost (bml/runtime.py): one cell trained with the pins (AVX2 kernels, MKL's COMPATIBLE
branch, ATen's convolutions instead of oneDNN's, one thread) against the same cell with MKL's AVX2 branch
(Intel-only) and with the pins lifted (BML_NATIVE_CPU=1: this CPU's own kernels and oneDNN, one thread, and two
threads), alternating rounds so that the machine's noise falls on both. Prints each setting's median
training-step time and its ratio to the pinned one.

    python benchmarks/determinism_cost.py --rounds 3 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

CELL = """
import json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import bml
import torch
from conftest import cell_config
from bml.train import train
torch.set_num_threads({threads})  # kept with the pins lifted; the pinned run's configure_torch sets 1
cfg = cell_config(Path({data!r}), Path({out!r}), epochs={epochs})
result = train(cfg, device="cpu")
print(json.dumps(result["timings_s"]))
"""

SETTINGS = {
    "pinned": ({}, 1),
    "pinned, MKL's AVX2 branch (Intel-only)": ({"BML_MKL_CBWR": "AVX2,STRICT"}, 1),
    "native, 1 thread": ({"BML_NATIVE_CPU": "1"}, 1),
    "native, 2 threads": ({"BML_NATIVE_CPU": "1"}, 2),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "determinism.json"))
    args = ap.parse_args()
    from conftest import make_data

    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), 120, seed=3) / "data"
        steps: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for k in range(args.rounds):
            for name, (extra, threads) in SETTINGS.items():
                code = CELL.format(
                    tests=str(REPO / "tests"),
                    data=str(data),
                    out=f"{tmp}/r{k}/{name}",
                    epochs=args.epochs,
                    threads=threads,
                )
                env = {**os.environ, **extra}
                out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
                steps[name].append(json.loads(out.stdout.strip().splitlines()[-1])["training_steps"])
    base = statistics.median(steps["pinned"])
    result = {
        name: {"training_steps_s": statistics.median(v), "ratio_to_pinned": statistics.median(v) / base}
        for name, v in steps.items()
    }
    result["load_average"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, v in result.items():
        print(name, v)


if __name__ == "__main__":
    main()
