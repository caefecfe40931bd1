"""Extraction throughput: bml's Snakemake data rules against a naive per-clip loop, in the same run.

    python benchmarks/extract_throughput.py [--clips 200] [--cores 2]

1. Generates N avdigits clips (reports the generator's clips per second).
2. bml: Snakemake runs the extract_frames and extract_audio rules (one job per shard) with --cores.
3. Naive: one Python loop that decodes every frame of each clip into Python, keeps one per second (saved
   as JPEG), then decodes the audio in a second pass: what a first script typically does.
Both keep 1 frame per second and 16 kHz mono audio. The figure to quote is the ratio of the two rates,
measured side by side on the same machine (absolute rates vary with the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import soundfile
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bml.config import avdigits_settings  # noqa: E402
from bml.data.avdigits import generate  # noqa: E402
from bml.data.extract import ffmpeg_exe, read_manifest  # noqa: E402


def naive_extract(manifest: Path, out: Path) -> None:
    for row in read_manifest(manifest):
        clip_dir = out / row["clip_id"]
        clip_dir.mkdir(parents=True)
        reader = imageio_ffmpeg.read_frames(row["path"])
        meta = reader.__next__()
        w, h = meta["size"]
        fps = meta["fps"]
        for i, frame in enumerate(reader):                         # every frame comes into Python
            if i % round(fps) == 0:
                img = np.frombuffer(frame, np.uint8).reshape(h, w, 3)
                Image.fromarray(img).save(clip_dir / f"{i // round(fps) + 1:06d}.jpg", quality=95)
        pcm = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", row["path"], "-vn", "-ac", "1",
                              "-ar", "16000", "-f", "s16le", "-"], capture_output=True, check=True).stdout
        soundfile.write(out / f"{row['clip_id']}.wav", np.frombuffer(pcm, np.int16), 16000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ["Snakefile", "params", "workflow"]:
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, work / name)
        config = yaml.safe_load((REPO / "params" / "params.yaml").read_text())
        config["avdigits"].update(n_clips=args.clips, workers=args.cores)
        config["extract"].update(fps=1, n_shards=args.shards)
        (work / "params" / "params.yaml").write_text(yaml.safe_dump(config))
        raw = work / "data" / "avdigits" / "raw"

        t0 = time.perf_counter()
        manifest = generate(raw, n_clips=args.clips, seed=0, settings=avdigits_settings("audio_dominant"),
                            workers=args.cores, log=lambda _: None)
        t_generate = time.perf_counter() - t0

        targets = [f"data/avdigits/{stage}/shard{k}" for stage in ("frames", "audio") for k in range(args.shards)]
        t0 = time.perf_counter()
        command = ["snakemake", "-s", str(work / "Snakefile"), "--directory", str(work),
                   "--cores", str(args.cores), "--quiet", "all", "--", *targets]
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"snakemake failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        t_bml = time.perf_counter() - t0

        t0 = time.perf_counter()
        naive_extract(manifest, work / "naive")
        t_naive = time.perf_counter() - t0

        n_bml = sum(1 for _ in (work / "data" / "avdigits" / "frames").glob("shard*/*/000001.jpg"))
        n_naive = sum(1 for _ in (work / "naive").glob("*/000001.jpg"))
        assert n_bml == n_naive == args.clips, (n_bml, n_naive)

    result = {
        "clips": args.clips, "cores": args.cores,
        "generator_clips_per_s": round(args.clips / t_generate, 2),
        "bml_snakemake_clips_per_s": round(args.clips / t_bml, 2),
        "naive_clips_per_s": round(args.clips / t_naive, 2),
        "speedup_bml_over_naive": round(t_naive / t_bml, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
