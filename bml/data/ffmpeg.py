"""Talking to the ffmpeg binary: where it is, what it says about a file, and its account of a run.

imageio-ffmpeg's wheel carries a static ffmpeg and no ffprobe, so a file is described by `ffmpeg -i` and a
decode is checked against the `verbose` end-of-run summary (packets read, frames decoded and decode errors per
stream).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import imageio_ffmpeg


class MediaError(RuntimeError):
    """A clip that cannot be used; the message names the file and the problem."""


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_version() -> str:
    """The first line of `ffmpeg -version` (recorded with what the binary made)."""
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


# ---- reading ffmpeg's account of a run ----------------------------------------------------------------

_INPUT = re.compile(r"^Input #(\d+), .*? from '(.*)':$", re.M)
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #(\d+):(\d+)\S*: (Video|Audio): (.*)$", re.M)
_FPS = re.compile(r"([\d.]+) fps")
_RATE = re.compile(r"(\d+) Hz")
_SUMMARY = re.compile(
    r"Input stream #(\d+):(\d+) \((video|audio)\): (\d+) packets read \(\d+ bytes\); "
    r"(\d+) frames decoded; (\d+) decode errors(?:;? \((\d+) samples\))?"
)


@dataclass
class InputInfo:
    path: str
    duration: float | None = None
    fps: float | None = None  # first video stream
    sample_rate: int | None = None  # first audio stream
    has_video: bool = False
    has_audio: bool = False
    width: int | None = None
    height: int | None = None


_SIZE = re.compile(r", (\d+)x(\d+)[, ]")


def read_inputs(text: str) -> dict[int, InputInfo]:
    """Per input index: its duration and first video/audio stream, from ffmpeg's stderr (loglevel info+)."""
    found: dict[int, InputInfo] = {}
    blocks = list(_INPUT.finditer(text))
    for k, match in enumerate(blocks):
        block = text[match.end() : blocks[k + 1].start() if k + 1 < len(blocks) else len(text)]
        block = block.split("Stream mapping:")[0]
        info = InputInfo(match.group(2))
        if (d := _DURATION.search(block)) is not None:
            h, m, s = d.groups()
            info.duration = int(h) * 3600 + int(m) * 60 + float(s)
        for _, _, kind, desc in _STREAM.findall(block):
            if kind == "Video" and not info.has_video:
                info.has_video = True
                info.fps = float(f.group(1)) if (f := _FPS.search(desc)) else None
                if (size := _SIZE.search(desc)) is not None:
                    info.width, info.height = int(size.group(1)), int(size.group(2))
            elif kind == "Audio" and not info.has_audio:
                info.has_audio = True
                info.sample_rate = int(r.group(1)) if (r := _RATE.search(desc)) else None
        found[int(match.group(1))] = info
    return found


class StreamCount(NamedTuple):
    """ffmpeg's count of one input stream over a run (from the seek point on: a seek starts at a keyframe)."""

    packets: int  # read from the container
    frames: int  # decoded
    errors: int  # packets the decoder refused
    samples: int | None  # audio samples decoded


def read_summary(text: str) -> dict[tuple[int, str], StreamCount]:
    """{(input, "video"|"audio"): its StreamCount} from the verbose end-of-run lines."""
    out = {}
    for inp, _, kind, packets, frames, errors, samples in _SUMMARY.findall(text):
        count = StreamCount(int(packets), int(frames), int(errors), int(samples) if samples else None)
        out.setdefault((int(inp), kind), count)
    return out


_SPAN_FILTER = re.compile(r"^\[fps@(\w+) @ 0x[0-9a-f]+\] \d+ frames in, (\d+) frames out", re.M)


def read_span_frames(text: str) -> dict[str, int]:
    """{tag: frames out} of the `fps@<tag>=source_fps` filters (bml/kinds/base.py, SPAN_COUNTER), from their
    verbose end-of-run lines (the last one: a filter graph is configured once before the first frame)."""
    return {tag: int(frames) for tag, frames in _SPAN_FILTER.findall(text)}


def why_unreadable(path: str, text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Exiting with exit code")]
    opening = [m.group(1) for ln in lines if (m := re.search(r"Error opening input: (.*)", ln))]
    mine = [ln.replace(f"{path}: ", "") for ln in lines if path in ln and ":" in ln.replace(path, "", 1)]
    reason = (opening or mine or lines[-1:] or ["no message"])[-1]
    if "moov atom not found" in text:  # an MP4 without its index, which ffmpeg writes last
        with open(path, "rb") as f:
            is_mp4 = f.read(12)[4:8] == b"ftyp"  # an MP4 (ISO BMFF) opens with its 'ftyp' box
        what = "truncated or unfinished MP4" if is_mp4 else "not a media file (no MP4 header)"
        return f"{path}: {what}: ffmpeg cannot read it (moov atom not found)"
    return f"{path}: ffmpeg cannot read it ({reason})"


def probe(path: str | Path) -> InputInfo:
    """What streams a media file holds and how long it is (ffmpeg's description of it; no ffprobe is shipped);
    MediaError when ffmpeg cannot read it."""
    path = str(path)
    if not os.path.isfile(path):
        raise MediaError(f"{path}: file not found")
    # Given an input and no output, ffmpeg describes the input on stderr and exits 1: that is expected.
    text = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path],
        capture_output=True,
    ).stderr.decode(errors="replace")
    found = read_inputs(text)
    if 0 not in found or found[0].duration is None:
        raise MediaError(why_unreadable(path, text))
    return found[0]


# ---- what one clip asks of ffmpeg ---------------------------------------------------------------------
