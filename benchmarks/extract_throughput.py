"""Extraction throughput: bml's data stages against ffmpeg's own decode rate and a naive loop, same clips, same run.

    python benchmarks/extract_throughput.py [--clips 200] [--repeat 3] [--no-naive]
                                            [--shards N] [--workers N] [--parallel N] [--ffmpeg-parallel N]

1. `bml manifest` generates N avdigits clips (params/datasets/avdigits.yaml, audio_dominant; not timed).
2. bml: `bml extract --shard k` for the `--shards` shards (default: params.yaml extract.n_shards), each with
   `--workers` ffmpeg processes (extract.workers), `--parallel` jobs at a time (what Snakemake runs with
   --cores = the CPU count), then `bml pack`: recipe `embedded` (params/datasets/avdigits.yaml), from each
   clip's MP4 to the packed splits.
3. ffmpeg: `ffmpeg -i clip -f null -` on every clip, `--ffmpeg-parallel` processes at a time (default: one per
   CPU, so ffmpeg has every core bml has): both streams decoded to nothing, the decoder's own rate.
4. naive: one Python process, clip by clip: every frame of the clip into Python at full size, 8 picked and
   resized with PIL, the audio decoded by a second ffmpeg, the spectrogram computed per clip, splits saved.

Each is run `--repeat` times, interleaved (the machine's load changes), and the median is reported, with
the ratios (bml / ffmpeg is the figure issue 15 asks to keep >= 0.8), the CPU seconds per clip of each, and
where bml's time goes, summed over its jobs: process start (Python, imports, the plan), the torch import
(which runs while ffmpeg decodes the first chunks), ffmpeg (extraction's background thread), the time the
feature step waited for ffmpeg, features and writing; and packing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bml.data.decode import select_frames  # noqa: E402
from bml.data.ffmpeg import ffmpeg_exe  # noqa: E402
from bml.data.manifest import read_manifest  # noqa: E402

RECIPE = "embedded"
SHARD_LOG = re.compile(
    r"(\d+) clips in ([\d.]+) s; decoding \(ffmpeg, in a background thread\) ([\d.]+) s of which ([\d.]+) s "
    r"waited for; features and writing ([\d.]+) s"
)


def cpu_seconds() -> float:
    """User + system seconds of every finished child process (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bml(args: list[str], work: Path, overrides: dict) -> tuple[float, str]:
    """Run `bml <args>` in the project folder; (seconds, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bml.cli", *args, "--overrides", json.dumps(overrides)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0, proc.stdout


def run_bml(work: Path, overrides: dict, shards: int, parallel: int, workers: int) -> dict:
    shutil.rmtree(work / "data" / "avdigits" / RECIPE, ignore_errors=True)
    extract = ["extract", "--dataset", "avdigits", "--recipe", RECIPE]
    extract += ["--workers", str(workers)] if workers > 1 else []  # ffmpeg processes at a time within a job
    extract += ["--shard"]
    cpu, t0 = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        jobs = list(pool.map(lambda k: bml([*extract, str(k)], work, overrides), range(shards)))
    t_extract = time.perf_counter() - t0
    t_pack, _ = bml(["pack", "--dataset", "avdigits", "--recipe", RECIPE], work, overrides)
    profile = dict.fromkeys(["process_start_s", "torch_import_s", "ffmpeg_s", "waited_for_ffmpeg_s", "features_s"], 0.0)
    for wall, out in jobs:
        n, inside, ffmpeg, waited, features = map(float, SHARD_LOG.search(out).groups())
        profile["process_start_s"] += wall - inside  # Python, imports, the plan, the manifest
        profile["torch_import_s"] += inside - waited - features  # and the record type; ffmpeg runs meanwhile
        profile["ffmpeg_s"] += ffmpeg  # in the background thread
        profile["waited_for_ffmpeg_s"] += waited
        profile["features_s"] += features  # spectrograms, frame selection, writing the records
    summary = json.loads((work / "data" / "avdigits" / RECIPE / "summary.json").read_text())
    return {
        "seconds": t_extract + t_pack,
        "cpu_s": round(cpu_seconds() - cpu, 2),
        "extract_s": t_extract,
        "pack_s": t_pack,
        "packed": summary["n_packed"],
        **{k: round(v, 2) for k, v in profile.items()},
    }


def run_ffmpeg_null(paths: list[str], parallel: int) -> dict:
    def decode(path: str) -> None:
        cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", path, "-f", "null", "-"]
        subprocess.run(cmd, check=True)

    cpu, t0 = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(decode, paths))
    return {"seconds": time.perf_counter() - t0, "cpu_s": round(cpu_seconds() - cpu, 2)}


def naive(manifest: Path, out: Path) -> None:
    """What a first script does: each clip decoded whole into Python, then its audio in a second pass."""
    import imageio_ffmpeg
    from PIL import Image

    from bml.data.audio import spectrogram

    rows, _ = read_manifest(manifest)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for row in rows:
        reader = imageio_ffmpeg.read_frames(row.paths["visual"])
        meta = next(reader)
        w, h = meta["size"]
        frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader][: int(3 * meta["fps"])]
        picked = [Image.fromarray(frames[i]).resize((64, 64), Image.BOX) for i in select_frames(len(frames), 8)]
        cmd = [ffmpeg_exe(), "-loglevel", "error", "-i", row.paths["audio"], "-vn", "-ac", "1", "-f", "f32le", "-"]
        wave = np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, "<f4")
        spec = spectrogram(wave, 16000, "avdigits").astype(np.float16)  # the clips' audio is 16 kHz
        splits[row.split].append((row.clip_id, row.label, np.stack([np.asarray(p) for p in picked]), spec))
    out.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        np.save(out / f"{split}_frames.npy", np.stack([f for _, _, f, _ in items]))
        np.save(out / f"{split}_audio.npy", np.stack([a for _, _, _, a in items]))
        np.save(out / f"{split}_labels.npy", np.asarray([label for _, label, _, _ in items]))


def run_naive(manifest: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cpu, t0 = cpu_seconds(), time.perf_counter()
    subprocess.run([sys.executable, __file__, "--naive", str(manifest), str(out)], env=env, check=True)
    return {"seconds": time.perf_counter() - t0, "cpu_s": round(cpu_seconds() - cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    shipped = yaml.safe_load((REPO / "params" / "params.yaml").read_text())["extract"]
    cores = os.cpu_count() or 1
    parser.add_argument("--shards", type=int, default=shipped["n_shards"], help="extraction jobs (extract.n_shards)")
    parser.add_argument("--workers", type=int, default=shipped["workers"], help="ffmpeg processes in one job")
    parser.add_argument("--parallel", type=int, default=None, help="extraction jobs at a time (min(shards, CPUs))")
    parser.add_argument("--ffmpeg-parallel", type=int, default=cores, help="ffmpeg -f null processes at a time")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop (slow at thousands of clips)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/extract_throughput_N.json")
    parser.add_argument("--naive", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive:
        return naive(Path(args.naive[0]), Path(args.naive[1]))
    args.parallel = args.parallel or min(args.shards, cores)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(REPO / "params", work / "params")
        overrides = {"datasets": {"avdigits": {"n_clips": args.clips, "seed": 0}}, "extract": {"n_shards": args.shards}}
        t_generate, _ = bml(["manifest", "--dataset", "avdigits", "--workers", str(cores)], work, overrides)
        manifest = work / "data" / "avdigits" / "manifest.csv"
        paths = [r.paths["visual"] for r in read_manifest(manifest)[0]]
        subprocess.run([sys.executable, "-c", "import torch"], check=True)  # warm the page cache: not a cold disk

        runs = {"bml": [], "ffmpeg": []} | ({} if args.no_naive else {"naive": []})
        for _ in range(args.repeat):
            runs["ffmpeg"].append(run_ffmpeg_null(paths, args.ffmpeg_parallel))
            runs["bml"].append(run_bml(work, overrides, args.shards, args.parallel, args.workers))
            if not args.no_naive:
                runs["naive"].append(run_naive(manifest, work / "naive"))
        assert all(r["packed"] == args.clips for r in runs["bml"]), runs["bml"]

    median = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_s"] for r in v) for k, v in runs.items()}
    result = {
        "clips": args.clips,
        "shards": args.shards,
        "parallel": args.parallel,
        "workers": args.workers,
        "ffmpeg_parallel": args.ffmpeg_parallel,
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "generator_clips_per_s": round(args.clips / t_generate, 2),
        "clips_per_s": {
            "bml_extract_and_pack": round(args.clips / median["bml"], 2),
            "ffmpeg_decode_to_null": round(args.clips / median["ffmpeg"], 2),
            **({"naive_loop": round(args.clips / median["naive"], 2)} if "naive" in median else {}),
        },
        "ratio_bml_over_ffmpeg": round(median["ffmpeg"] / median["bml"], 2),
        **({"ratio_bml_over_naive": round(median["naive"] / median["bml"], 2)} if "naive" in median else {}),
        "cpu_ms_per_clip": {k: round(1000 * v / args.clips, 1) for k, v in cpu.items()},
        "seconds": {k: [round(r["seconds"], 2) for r in v] for k, v in runs.items()},
        "bml_profile_median_run": sorted(runs["bml"], key=lambda r: r["seconds"])[len(runs["bml"]) // 2],
    }
    print(json.dumps(result, indent=2))
    out = args.out or REPO / "benchmarks" / "results" / f"extract_throughput_{args.clips}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
