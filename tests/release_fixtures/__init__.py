"""Small copies of real dataset releases for tests: the releases' folder layouts, file names, containers and
codecs, with tiny synthetic media encoded by the real ffmpeg (imageio-ffmpeg's binary) at test time.

Each `<dataset>.py` has `make_tree(root, ...) -> Path`; broken cases (a git-lfs stub, a zero-size file, a clip
without an audio stream, ...) are added on request.
"""

from __future__ import annotations

import hashlib
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imageio_ffmpeg

FRAME_SIZE = "32x24"  # tiny frames keep encoding fast; the adapters never decode media
FPS = 10


def ffmpeg(args: list[str]) -> None:
    """Run ffmpeg; RuntimeError with its message when it fails."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({' '.join(args[-1:])}): {proc.stderr[-1000:]}")


def video(path: Path, seconds: float, tone_hz: float, *, vcodec: str, acodec: str | None, audio_rate: int) -> Path:
    """A test-pattern video with a sine tone (or no audio stream when acodec is None) in the container of
    `path`'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = ["-f", "lavfi", "-i", f"testsrc=size={FRAME_SIZE}:rate={FPS}:duration={seconds}"]
    if acodec:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate={audio_rate}:duration={seconds}"]
        codecs = ["-c:v", vcodec, "-c:a", acodec, "-ar", str(audio_rate), "-ac", "1", "-shortest"]
    else:
        codecs = ["-c:v", vcodec]
    if vcodec == "libx264":
        codecs += ["-pix_fmt", "yuv420p", "-preset", "ultrafast"]
    ffmpeg([*inputs, *codecs, str(path)])
    return path


def wav(path: Path, seconds: float, tone_hz: float, rate: int) -> Path:
    """A mono 16-bit PCM WAV of a sine tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate={rate}:duration={seconds}",
            "-c:a",
            "pcm_s16le",
            "-ac",
            "1",
            str(path),
        ]
    )
    return path


def lfs_stub(path: Path, real_size: int = 72862) -> Path:
    """What a zip download of a git-lfs repository holds instead of the media: the pointer file (git-lfs spec v1;
    CREMA-D's AudioWAV/1001_DFA_ANG_XX.wav pointer is exactly this form, 130 bytes, real size 72,862)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    oid = hashlib.sha256(path.name.encode()).hexdigest()
    path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {real_size}\n")
    return path


def run_jobs(jobs: list) -> None:
    """Run zero-argument callables two at a time (the machine has 2 cores); the first failure is raised."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()
