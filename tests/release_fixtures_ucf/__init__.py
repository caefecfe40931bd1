"""Small release trees of AVE and UCF-101 made at test time: real containers written by the real ffmpeg, the
releases' file names, list formats and quirks, and broken cases on request. One module per dataset, each
with `make_tree(root, ...) -> Path`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg


def encode_segments(
    outputs: list[Path], seconds: float, video: list[str], audio: list[str] | None, fps: int, size: str = "32x24"
) -> None:
    """Write len(outputs) clips of `seconds` each in ONE ffmpeg run: consecutive segments of a moving test
    pattern (and a tone when `audio` gives the audio codec arguments), so every clip differs."""
    total = seconds * len(outputs)
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={fps}:duration={total}",
    ]
    if audio is not None:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={total}"]
    for k, out in enumerate(outputs):
        out.parent.mkdir(parents=True, exist_ok=True)
        maps = ["-map", "0:v"] + (["-map", "1:a"] + audio if audio is not None else ["-an"])
        cmd += maps + ["-ss", str(k * seconds), "-t", str(seconds), *video, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed making fixture clips: {proc.stderr[-2000:]}")


def write_lines(path: Path, lines: list[str], crlf: bool) -> None:
    """A text list with the release's line endings (bytes, so Python does not translate them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    path.write_bytes("".join(line + end for line in lines).encode())


def undecodable(path: Path, n_bytes: int = 4096) -> None:
    """A non-empty file that no demuxer recognises (fixed bytes, so runs are identical)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes((7 * i + 3) % 251 for i in range(n_bytes)))
