"""Features out of media files: one ffmpeg process per clip decodes every modality a recipe needs.

For each clip, one ffmpeg command opens each of the clip's files once (CREMA-D: the FLV and the WAV; most
datasets: one MP4), decodes only the span the recipe uses (`-ss`/`-t` before the input), and writes every
modality to its own pipe: frames already at the recipe's rate and size as raw RGB, audio as float32 at the
file's own rate. Nothing touches the disk between the video file and the shard of packed records, so a
clip costs one decode, not one per stage.

ffmpeg's own account of the decode (its `verbose` summary: frames decoded, decode errors, per stream) is
checked against what the container declares over that span: a clip with decode errors, or with fewer
frames or samples than `min_decoded_share` of what it should have, is skipped with the reason, as is a
missing stream or an unreadable file. A skipped clip never stops the shard.

A shard is `shards/shard<k>.npy` (records, bml/data/pack.py's format) plus `shards/shard<k>.tsv` (every clip
of the shard: ok or skipped, why, and the seconds spent decoding and computing features), both written
through a temporary name: a killed job leaves no half-written shard.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from bml.data.manifest import Row

SHARD_FIELDS = ["clip_id", "status", "reason", "decode_s", "features_s"]


class MediaError(RuntimeError):
    """A clip that cannot be used; the message names the file and the problem."""


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class Limits:
    min_decoded_share: float = 0.9  # params.yaml extract.min_decoded_share
    max_decode_errors: int = 0  # params.yaml extract.max_decode_errors


def select_frames(n_available: int, n_frames: int) -> list[int]:
    """Indices of n_frames frames evenly spaced over n_available: the centre of each of n_frames segments.

    Deterministic (the test-time rule of the authors' loaders, without their unsorted listings); a clip with
    fewer frames than asked repeats frames rather than failing.
    """
    if n_available < 1:
        raise ValueError("a clip needs at least one frame")
    return [min(n_available - 1, int((i + 0.5) * n_available / n_frames)) for i in range(n_frames)]


# ---- reading ffmpeg's account of a run ----------------------------------------------------------------

_INPUT = re.compile(r"^Input #(\d+), .*? from '(.*)':$", re.M)
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #(\d+):(\d+)\S*: (Video|Audio): (.*)$", re.M)
_FPS = re.compile(r"([\d.]+) fps")
_RATE = re.compile(r"(\d+) Hz")
_SIZE = re.compile(r", (\d{2,5})x(\d{2,5})")
_SUMMARY = re.compile(
    r"Input stream #(\d+):(\d+) \((video|audio)\): \d+ packets read \(\d+ bytes\); "
    r"(\d+) frames decoded; (\d+) decode errors(?:; \((\d+) samples\))?"
)


@dataclass
class InputInfo:
    path: str
    duration: float | None = None
    fps: float | None = None  # first video stream
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None  # first audio stream
    has_video: bool = False
    has_audio: bool = False


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


def read_summary(text: str) -> dict[tuple[int, str], tuple[int, int, int | None]]:
    """{(input, "video"|"audio"): (frames decoded, decode errors, samples)} from the verbose end-of-run lines."""
    out = {}
    for inp, _, kind, frames, errors, samples in _SUMMARY.findall(text):
        out.setdefault((int(inp), kind), (int(frames), int(errors), int(samples) if samples else None))
    return out


def _why_unreadable(path: str, text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    mine = [ln for ln in lines if path in ln and ":" in ln.replace(path, "", 1)]
    reason = (mine or lines[-1:] or ["no message"])[-1].replace(f"{path}: ", "")
    return f"{path}: ffmpeg cannot read it ({reason})"


# ---- one clip -----------------------------------------------------------------------------------------


def decode_clip(
    row: Row, modalities: dict[str, str], settings: dict, limits: Limits = Limits()
) -> dict[str, np.ndarray]:
    """{modality: decoded array} for one clip: frames (n, S, S, 3) uint8 at the recipe's rate, audio (T,)
    float32 mono at the file's rate (key `<modality>:rate` holds it); MediaError names file and problem."""
    span = settings["span"]
    start = row.start + span["start"]
    length = span["duration"]
    if row.end is not None:
        length = min(length, row.end - start) if length is not None else row.end - start
    if length is not None and length <= 0:
        raise MediaError(f"clip {row.clip_id}: empty span (start {start:.2f} s, end {row.end} s)")
    files = list(dict.fromkeys(row.paths[m] for m in modalities))
    for f in files:
        if not os.path.isfile(f):
            raise MediaError(f"{f}: file not found")
        if os.path.getsize(f) == 0:
            raise MediaError(f"{f}: empty file (0 bytes)")
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "verbose"]
    for f in files:
        # input seeking (-ss before -i) decodes only from the span's start; at 0 it is left out: some containers
        # (FLV with a 0.05 s stream start, as CREMA-D's) then read no packet at all
        cmd += (["-ss", f"{start:.3f}"] if start > 0 else []) + (["-t", f"{length:.3f}"] if length is not None else [])
        cmd += ["-i", f]
    pipes, outputs = {}, []
    for m, kind in modalities.items():
        read_fd, write_fd = os.pipe()
        pipes[m] = (read_fd, write_fd)
        source = files.index(row.paths[m])
        if kind == "audio":
            outputs += ["-map", f"{source}:a:0", "-ac", "1", "-f", "f32le", f"pipe:{write_fd}"]
        elif kind == "frames":
            s = settings[m]
            outputs += [
                "-map",
                f"{source}:v:0",
                "-vf",
                f"fps={s['fps']},scale={s['size']}:{s['size']}:flags=area",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                f"pipe:{write_fd}",
            ]
        else:
            raise MediaError(f"modality {m!r}: kind {kind!r} cannot be extracted yet")
    data: dict[str, bytes] = {}

    def drain(m: str, fd: int) -> None:
        with os.fdopen(fd, "rb") as f:
            data[m] = f.read()

    proc = subprocess.Popen(
        cmd + outputs,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=[w for _, w in pipes.values()],
    )
    for _, w in pipes.values():
        os.close(w)
    readers = [threading.Thread(target=drain, args=(m, r)) for m, (r, _) in pipes.items()]
    for t in readers:
        t.start()
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    for t in readers:
        t.join()
    return _check(row, modalities, settings, limits, files, start, length, err, proc.returncode, data)


def _check(
    row: Row,
    modalities: dict[str, str],
    settings: dict,
    limits: Limits,
    files: list[str],
    start: float,
    length: float | None,
    err: str,
    returncode: int,
    data: dict[str, bytes],
) -> dict[str, np.ndarray]:
    inputs, summary = read_inputs(err), read_summary(err)
    for i, f in enumerate(files):
        if i not in inputs or inputs[i].duration is None:
            raise MediaError(_why_unreadable(f, err))
    for m, kind in modalities.items():
        i = files.index(row.paths[m])
        stream = "video" if kind in ("frames", "flow") else "audio"
        if not (inputs[i].has_video if stream == "video" else inputs[i].has_audio):
            raise MediaError(f"{files[i]}: no {stream} stream")
    if returncode != 0:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip() and "Input stream #" not in ln]
        raise MediaError(f"{row.paths[next(iter(modalities))]}: ffmpeg failed ({lines[-1] if lines else 'no message'})")
    out: dict[str, np.ndarray] = {}
    for m, kind in modalities.items():
        i = files.index(row.paths[m])
        info = inputs[i]
        used = max(0.0, info.duration - start) if length is None else max(0.0, min(info.duration - start, length))
        stream = "video" if kind in ("frames", "flow") else "audio"
        decoded, errors, samples = summary.get((i, stream), (0, 0, None))
        if errors > limits.max_decode_errors:
            raise MediaError(
                f"{files[i]}: {errors} {stream} decode errors (at most {limits.max_decode_errors} "
                f"allowed: params.yaml extract.max_decode_errors)"
            )
        if kind == "audio":
            wave = np.frombuffer(data.get(m, b""), dtype="<f4").copy()
            expected = used * (info.sample_rate or 0)
            if wave.size == 0 or wave.size < limits.min_decoded_share * expected - 0.1 * (info.sample_rate or 0):
                raise MediaError(
                    f"{files[i]}: truncated or damaged audio: decoded {wave.size} samples, the container "
                    f"declares {used:.2f} s ({expected:.0f} samples at {info.sample_rate} Hz)"
                )
            out[m], out[f"{m}:rate"] = wave, np.asarray(info.sample_rate)
        else:
            s = settings[m]
            expected = used * (info.fps or 0)
            if decoded == 0 or decoded < limits.min_decoded_share * expected - 1:
                raise MediaError(
                    f"{files[i]}: truncated or damaged video: decoded {decoded} frames, the container "
                    f"declares {used:.2f} s ({expected:.0f} frames at {info.fps} fps)"
                )
            raw = np.frombuffer(data.get(m, b""), dtype=np.uint8)
            n = raw.size // (s["size"] * s["size"] * 3)
            if n == 0:
                raise MediaError(f"{files[i]}: no frame in the span {start:.2f}-{start + used:.2f} s")
            out[m] = raw[: n * s["size"] * s["size"] * 3].reshape(n, s["size"], s["size"], 3)
    return out


# ---- a shard of clips ---------------------------------------------------------------------------------


def features(decoded: dict[str, np.ndarray], modalities: dict[str, str], settings: dict) -> dict[str, np.ndarray]:
    """Decoded arrays -> what the packed record stores per modality."""
    from bml.data.audio import spectrogram

    out = {}
    for m, kind in modalities.items():
        if kind == "audio":
            out[m] = spectrogram(decoded[m], int(decoded[f"{m}:rate"]), settings[m]["preset"]).astype(np.float16)
        else:
            frames = decoded[m]
            out[m] = frames[select_frames(len(frames), settings[m]["frames"])].transpose(0, 3, 1, 2)  # (T, 3, S, S)
    return out


def extract_shard(
    rows: list[Row],
    modalities: dict[str, str],
    settings: dict,
    out_npy: str | Path,
    limits: Limits = Limits(),
    log=print,
) -> list[dict]:
    """Decode every clip of a shard into out_npy (records) and out_npy's .tsv (status of every clip)."""
    from bml.data.pack import RecordWriter, record_dtype

    out_npy = Path(out_npy)
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    statuses = []
    with RecordWriter(out_npy, record_dtype(modalities, settings), capacity=len(rows)) as writer:
        for row in rows:
            t0 = time.perf_counter()
            try:
                decoded = decode_clip(row, modalities, settings, limits)
                t1 = time.perf_counter()
                writer.append(row.clip_id, row.label, features(decoded, modalities, settings))
                t2 = time.perf_counter()
                statuses.append(
                    {
                        "clip_id": row.clip_id,
                        "status": "ok",
                        "reason": "",
                        "decode_s": f"{t1 - t0:.4f}",
                        "features_s": f"{t2 - t1:.4f}",
                    }
                )
            except (MediaError, ValueError, OSError) as err:
                reason = " ".join(str(err).split())
                log(f"skipped {row.clip_id}: {reason}")
                statuses.append(
                    {
                        "clip_id": row.clip_id,
                        "status": "skipped",
                        "reason": reason,
                        "decode_s": f"{time.perf_counter() - t0:.4f}",
                        "features_s": "",
                    }
                )
    tsv = out_npy.with_suffix(".tsv")
    tmp = tsv.with_name(f".{tsv.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SHARD_FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(statuses)
    os.replace(tmp, tsv)
    return statuses


def shard_rows(rows: list[Row], shard: int, n_shards: int) -> list[Row]:
    """The clips of one shard: every n_shards-th clip in clip_id order, so shards stay balanced."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    return rows[shard::n_shards]


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
        raise MediaError(_why_unreadable(path, text))
    return found[0]
