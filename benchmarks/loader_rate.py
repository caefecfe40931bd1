"""Does bml's loader outrun a GPU? Records per second on CREMA-D-shaped packed records, against the GPU step rate.

    python benchmarks/loader_rate.py [--records 256] [--workers 0,1,2] [--batches 6]
                                     [--out benchmarks/results/loader_rate.json]

A packed train split of --records random records with CREMA-D's `ogm` recipe shapes (a 257 x 188 float16 spectrogram,
3 frames of 224 x 224 RGB uint8: params/datasets/cremad.yaml) is written with bml's own writer (bml/data/pack.py) to a
temporary folder; then bml's loader (bml/data/loader.py: PackedSplit + make_loader, as the training loop calls it)
reads it under the `ogm_cvpr22` protocol's frame settings (1 training frame, RandomResizedCrop + flip), at each worker
count, with pinned memory where a GPU is present. Reported: records per second (the mean over --batches batches after
one warm-up batch) and, per worker, the rate a GPU needs: batch size over the GPU step time that
benchmarks/gpu_estimate.py assumes for CREMA-D's joint run (benchmarks/results/gpu_estimate.json, `gpu_step_s_est`).
The loader keeps up when records/s >= that rate; the protocol's num_workers (8) then has that margin per worker, the
machine's cores allowing. Reads come from the page cache (the file was just written): a cold disk is slower and is not
measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# isort: off
import bml  # noqa: E402, F401 (first: the CPU pins, bml/runtime.py)
import numpy as np  # noqa: E402
import torch  # noqa: E402

# isort: on
from bml.data.loader import PackedSplit, make_loader  # noqa: E402
from bml.data.pack import RecordWriter, file_sha256  # noqa: E402

MODALITIES = {"audio": "audio", "visual": "frames"}
SHAPES = {"audio": (257, 188), "visual": (3, 3, 224, 224)}  # the ogm recipe: spectrogram; frames, RGB, S, S
CLASSES = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]


def write_split(folder: Path, n: int) -> None:
    dtype = np.dtype(
        [("clip_id", "U64"), ("label", "<i8"), ("audio", "<f2", SHAPES["audio"]), ("visual", "u1", SHAPES["visual"])]
    )
    rng = np.random.default_rng(0)
    path = folder / "train.npy"
    with RecordWriter(path, dtype) as writer:
        for i in range(n):
            values = {
                "audio": rng.standard_normal(SHAPES["audio"]).astype(np.float16),
                "visual": rng.integers(0, 256, SHAPES["visual"], dtype=np.uint8),
            }
            writer.append(f"clip{i:05d}", i % len(CLASSES), values)
    meta = {"size": path.stat().st_size, "sha256": file_sha256(path), "dtype": str(dtype.descr), "classes": CLASSES}
    (folder / "train.json").write_text(json.dumps(meta))


def rate(folder: Path, workers: int, batch: int, batches: int) -> float:
    split = PackedSplit(folder, "train", MODALITIES, 1, True, 0, "random_resized_crop_flip")
    loader = make_loader(split, batch, 0, workers, torch.cuda.is_available())  # pinned where a GPU is
    it = iter(loader)
    next(it)  # the warm-up batch (workers start)
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        seen += len(next(it)["label"])
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "loader_rate.json")
    args = parser.parse_args()
    estimate = json.loads((REPO / "benchmarks" / "results" / "gpu_estimate.json").read_text())
    cremad = estimate["pairs"]["cremad/ogm_cvpr22"]
    needed = cremad["batch_size"] / cremad["gpu_step_s_est"]
    result = {"gpu_step_s_assumed": cremad["gpu_step_s_est"], "records_per_s_needed": needed, "rates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        write_split(Path(tmp), args.records)
        for workers in map(int, args.workers.split(",")):
            got = rate(Path(tmp), workers, args.batch, args.batches)
            result["rates"][workers] = got
            print(
                f"{workers} workers: {got:7.0f} records/s "
                f"(a GPU at {cremad['gpu_step_s_est']} s a step needs {needed:.0f})"
            )
    per_worker = result["rates"].get(1) or result["rates"][max(result["rates"])]
    result["workers_to_keep_up"] = int(np.ceil(needed / per_worker))
    result["load_average"] = os.getloadavg()[0]
    print(f"about {result['workers_to_keep_up']} loader workers keep up with the GPU (one core each)")
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
