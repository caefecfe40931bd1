"""Features out of media files: ffmpeg decodes every modality a recipe needs in one pass over each clip.

One ffmpeg command opens each file of a clip once (CREMA-D: the FLV and the WAV; most datasets: one MP4),
decodes only the span the recipe uses (`-ss`/`-t` before the input, the same for every stream, so frames
and audio cover the same seconds), and writes every modality to its own pipe: frames already at the
recipe's rate and size as raw RGB, flow's source frames at the video's own rate, audio as float32 at the
file's own rate. Nothing touches the disk between the video file and the shard of packed records.

A short clip costs ffmpeg more to start than to decode, so one ffmpeg process decodes a chunk of
CLIPS_PER_PROCESS clips (one input and its own pipes per clip: nothing mixes between clips); a chunk whose
ffmpeg fails is decoded again clip by clip, so a bad file is named on its own and never costs its
neighbours. Chunks are decoded ahead in a background thread while the features of the previous chunk are
computed (spectrograms batched over the chunk, bml/data/audio.py), so ffmpeg and Python overlap.

ffmpeg's own account of the decode (its `verbose` summary: frames decoded and decode errors per stream)
is checked against what the container declares over the span: a clip with more decode errors than
`max_decode_errors`, or with fewer frames or samples than `min_decoded_share` of what it should have, is
skipped with the reason, as is a missing stream, an unreadable, empty or missing file. A skipped clip
never stops the shard.

Flow (kind `flow`): from a video, Farneback flow (bml/data/flow.py) between native frames k and k + 1 at
`frames` evenly spaced k within the span; from a precomputed TV-L1 release (the clip's flow path is its
`u/<clip>` folder), the release's JPEGs at the same positions, read without ffmpeg.

A shard is `shards/shard<k>.npy` (records, bml/data/pack.py's format) plus `shards/shard<k>.tsv` (every clip
of the shard: ok or skipped, why, seconds spent), both written through a temporary name, the .tsv last:
a shard without its .tsv is unfinished, and a killed job leaves no half-written file under a final name.
"""

from __future__ import annotations

import csv
import math
import os
import re
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from bml.data.manifest import Row
from bml.data.pack import RecordWriter, record_dtype

SHARD_FIELDS = ["clip_id", "status", "reason", "decode_s", "features_s"]
# Clips per ffmpeg process. Measured on this project's 2-core machine, 200 avdigits clips decoded as extraction
# decodes them, one process at a time: 36-39 ms of CPU per clip with 1 clip per process, 21-24 ms with 8,
# 21 ms with 16 (ffmpeg decoding each clip to null: 33-35 ms); 8 keeps a chunk's arrays small.
CLIPS_PER_PROCESS = 8
# Decoded arrays held ahead of the feature step (bml's choice): enough to keep ffmpeg busy while the
# first chunk waits for torch to import (~1-3 s), small beside a worker's memory.
AHEAD_BYTES = 256 << 20
FLOW_FIRST = "frame000001.jpg"  # a TV-L1 release numbers flow frames from 1 (bml/data/flow.py)


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
_SUMMARY = re.compile(
    r"Input stream #(\d+):(\d+) \((video|audio)\): \d+ packets read \(\d+ bytes\); "
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


def read_summary(text: str) -> dict[tuple[int, str], tuple[int, int, int | None]]:
    """{(input, "video"|"audio"): (frames decoded, decode errors, samples)} from the verbose end-of-run lines."""
    out = {}
    for inp, _, kind, frames, errors, samples in _SUMMARY.findall(text):
        out.setdefault((int(inp), kind), (int(frames), int(errors), int(samples) if samples else None))
    return out


def _why_unreadable(path: str, text: str) -> str:
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
        raise MediaError(_why_unreadable(path, text))
    return found[0]


# ---- what one clip asks of ffmpeg ---------------------------------------------------------------------


def is_flow_release(path: str) -> bool:
    """A flow path that is a folder: the clip's u/ folder of a precomputed TV-L1 release."""
    return os.path.isdir(path)


@dataclass
class ClipJob:
    row: Row
    start: float  # seconds into the files
    length: float | None  # None: to the end of the files
    files: list[str]  # the media files ffmpeg opens (a flow release folder is read without ffmpeg)


def clip_job(row: Row, modalities: dict[str, str], settings: dict) -> ClipJob:
    """The span and files of one clip, after the checks that need no decoding (MediaError names the file)."""
    span = settings["span"]
    start = row.start + span["start"]
    length = span["duration"]
    if row.end is not None:
        length = min(length, row.end - start) if length is not None else row.end - start
    if length is not None and length <= 0:
        raise MediaError(f"clip {row.clip_id}: empty span (start {start:.2f} s, end {row.end} s)")
    files = []
    for m, kind in modalities.items():
        path = row.paths[m]
        if kind == "flow" and is_flow_release(path):
            if not os.path.isfile(os.path.join(path, FLOW_FIRST)):
                raise MediaError(f"{path}: no flow frame {FLOW_FIRST} in this flow folder")
            continue
        if not os.path.isfile(path):
            raise MediaError(f"{path}: file not found")
        if os.path.getsize(path) == 0:
            raise MediaError(f"{path}: empty file (0 bytes)")
        if path not in files:
            files.append(path)
    return ClipJob(row, start, length, files)


def _outputs(job: ClipJob, first_input: int, modalities: dict[str, str], settings: dict) -> list[tuple[str, list]]:
    """(modality, ffmpeg output options before the pipe) for each modality ffmpeg decodes for this clip."""
    outs = []
    for m, kind in modalities.items():
        if job.row.paths[m] not in job.files:
            continue  # a flow release folder
        source = first_input + job.files.index(job.row.paths[m])
        if kind == "audio":
            outs.append((m, ["-map", f"{source}:a:0", "-ac", "1", "-filter_threads", "1", "-f", "f32le"]))
            continue
        s = settings[m]
        rate = f"fps={s['fps']}," if kind == "frames" else ""  # flow: every frame at the video's own rate
        video = ["-map", f"{source}:v:0", "-vf", f"{rate}scale={s['size']}:{s['size']}:flags=area"]
        video += ["-fps_mode", "passthrough"] if kind == "flow" else []
        outs.append((m, video + ["-filter_threads", "1", "-f", "rawvideo", "-pix_fmt", "rgb24"]))
    return outs


def _run_ffmpeg(jobs: list[ClipJob], modalities: dict[str, str], settings: dict):
    """One ffmpeg process for all jobs: (return code, stderr, {(job, modality): bytes}, first input per job)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "verbose"]
    firsts, outputs, pipes = [], [], {}
    for j, job in enumerate(jobs):
        firsts.append(sum(len(x.files) for x in jobs[:j]))
        for f in job.files:
            # -threads 1 (and -filter_threads 1 below): one thread per decoder and filter graph; measured on
            # 200 avdigits clips, 8 per process: 21 ms of CPU per clip against 27 ms with ffmpeg's default
            # threads (and 34 ms for ffmpeg decoding one clip per process to null)
            cmd += ["-threads", "1"] + (["-ss", f"{job.start:.3f}"] if job.start > 0 else [])
            cmd += (["-t", f"{job.length:.3f}"] if job.length is not None else []) + ["-i", f]
        for m, options in _outputs(job, firsts[-1], modalities, settings):
            read_fd, write_fd = os.pipe()
            pipes[(j, m)] = (read_fd, write_fd)
            outputs += options + [f"pipe:{write_fd}"]
    proc = subprocess.Popen(
        cmd + outputs,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=[w for _, w in pipes.values()],
    )
    for _, w in pipes.values():
        os.close(w)
    chunks: dict = {key: [] for key in pipes}
    chunks["stderr"] = []
    with selectors.DefaultSelector() as sel:  # read every pipe as it fills: ffmpeg never blocks on one
        for key, (r, _) in pipes.items():
            sel.register(r, selectors.EVENT_READ, key)
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
        while sel.get_map():
            for sk, _ in sel.select():
                block = os.read(sk.fd, 1 << 20)
                if block:
                    chunks[sk.data].append(block)
                else:
                    sel.unregister(sk.fd)
                    if sk.data != "stderr":
                        os.close(sk.fd)
    proc.stderr.close()
    proc.wait()
    err = b"".join(chunks.pop("stderr")).decode(errors="replace")
    return proc.returncode, err, {key: b"".join(v) for key, v in chunks.items()}, firsts


def decode_clips(
    rows: list[Row], modalities: dict[str, str], settings: dict, limits: Limits = Limits()
) -> list[dict[str, np.ndarray] | MediaError]:
    """Decode several clips with one ffmpeg process: per clip its decoded arrays (see decode_clip) or the
    MediaError saying why it cannot be used. A failed process is retried clip by clip, so each reason is
    the clip's own."""
    results: list = [None] * len(rows)
    jobs: dict[int, ClipJob] = {}
    for i, row in enumerate(rows):
        try:
            jobs[i] = clip_job(row, modalities, settings)
        except MediaError as err:
            results[i] = err
    batch = [i for i, job in jobs.items() if job.files]
    if len(batch) > 0:
        code, err, data, firsts = _run_ffmpeg([jobs[i] for i in batch], modalities, settings)
        if code != 0 and len(batch) > 1:  # decode each alone: the failure is one clip's, its reason its own
            for i in batch:
                results[i] = decode_clips([rows[i]], modalities, settings, limits)[0]
            batch = []
        inputs, summary = read_inputs(err), read_summary(err)
    for j, i in enumerate(batch):
        job, first, n = jobs[i], firsts[j], len(jobs[i].files)
        mine = {k: inputs[first + k] for k in range(n) if first + k in inputs}
        counts = {
            (k, s): summary[(first + k, s)] for k in range(n) for s in ("video", "audio") if (first + k, s) in summary
        }
        pipes = {m: block for (jj, m), block in data.items() if jj == j}
        results[i] = _or_error(MediaError, _finish, job, modalities, settings, limits, mine, counts, pipes, code, err)
    for i in set(jobs) - {i for i, job in jobs.items() if job.files}:  # only a flow release folder: no ffmpeg
        results[i] = _or_error(MediaError, _finish, jobs[i], modalities, settings, limits, {}, {}, {}, 0, "")
    return results


def _or_error(kind: type[Exception], fn: Callable, *args):
    """fn(*args), or the exception of type `kind` it raised."""
    try:
        return fn(*args)
    except kind as err:
        return err


def decode_clip(
    row: Row, modalities: dict[str, str], settings: dict, limits: Limits = Limits()
) -> dict[str, np.ndarray]:
    """{modality: decoded array} for one clip: frames (n, S, S, 3) uint8 at the recipe's rate; flow from a
    video: its native frames (n, S, S, 3); flow from a release: (frames, 2, S, S) uint8 (key
    `<modality>:release` set); audio (T,) float32 mono at the file's rate (key `<modality>:rate` holds it).
    MediaError names the file and the problem."""
    out = decode_clips([row], modalities, settings, limits)[0]
    if isinstance(out, MediaError):
        raise out
    return out


def _finish(
    job: ClipJob,
    modalities: dict[str, str],
    settings: dict,
    limits: Limits,
    inputs: dict[int, InputInfo],
    summary: dict,
    data: dict[str, bytes],
    returncode: int,
    err: str,
) -> dict[str, np.ndarray]:
    """Check ffmpeg's account of one clip against its container and turn its pipes into arrays."""
    row = job.row
    for k, f in enumerate(job.files):
        if k not in inputs or inputs[k].duration is None:
            raise MediaError(_why_unreadable(f, err))
    used_by = {}  # modality -> (input, stream) it is decoded from
    for m, kind in modalities.items():
        if row.paths[m] in job.files:
            k, stream = job.files.index(row.paths[m]), "audio" if kind == "audio" else "video"
            if not (inputs[k].has_audio if stream == "audio" else inputs[k].has_video):
                raise MediaError(f"{job.files[k]}: no {stream} stream")
            used_by[m] = (k, stream)
    if returncode != 0:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip() and "Input stream #" not in ln]
        raise MediaError(f"{job.files[0]}: ffmpeg failed ({lines[-1] if lines else 'no message'})")
    out: dict[str, np.ndarray] = {}
    problems = []  # (file, what): every shortfall and the decode errors, in one reason
    under = f"(under {limits.min_decoded_share:.0%}: params.yaml extract.min_decoded_share)"
    for m, (k, _) in used_by.items():
        info, kind = inputs[k], modalities[m]
        if info.duration <= job.start:
            raise MediaError(
                f"{job.files[k]}: the span starts at {job.start:.2f} s, after the end of the file "
                f"({info.duration:.2f} s)"
            )
        used = info.duration - job.start if job.length is None else min(info.duration - job.start, job.length)
        if kind == "audio":
            wave = np.frombuffer(data.get(m, b""), dtype="<f4")
            expected = used * (info.sample_rate or 0)
            if wave.size == 0 or wave.size < limits.min_decoded_share * expected - 0.1 * (info.sample_rate or 0):
                what = f"decoded {wave.size} of the {expected:.0f} samples its container declares over {used:.2f} s"
                problems.append((job.files[k], f"truncated or damaged audio: {what} {under}"))
            out[m], out[f"{m}:rate"] = wave, np.asarray(info.sample_rate)
            continue
        decoded = summary.get((k, "video"), (0, 0, None))[0]
        expected = used * (info.fps or 0)
        if decoded == 0 or decoded < limits.min_decoded_share * expected - 1:
            what = f"decoded {decoded} of the {expected:.0f} frames its container declares over {used:.2f} s"
            problems.append((job.files[k], f"truncated or damaged video: {what} {under}"))
            continue
        size = settings[m]["size"]
        raw = np.frombuffer(data.get(m, b""), dtype=np.uint8)
        n = raw.size // (size * size * 3)
        if n < (2 if kind == "flow" else 1):
            problems.append((job.files[k], f"{n} frames in the span {job.start:.2f}-{job.start + used:.2f} s"))
        out[m] = raw[: n * size * size * 3].reshape(n, size, size, 3)
    errors = {key: summary.get(key, (0, 0, None))[1] for key in sorted(set(used_by.values()))}
    if max(errors.values(), default=0) > limits.max_decode_errors:
        counts = ", ".join(f"{n} {s}" for (_, s), n in errors.items() if n)
        bad = next(job.files[k] for (k, _), n in errors.items() if n > limits.max_decode_errors)
        allowed = f"at most {limits.max_decode_errors} per stream allowed: params.yaml extract.max_decode_errors"
        problems.append((bad, f"damaged: decode errors ({counts}; {allowed})"))
    if problems:
        by_file: dict[str, list[str]] = {}
        for f, what in problems:
            by_file.setdefault(f, []).append(what)
        raise MediaError("; ".join(f"{f}: " + "; ".join(whats) for f, whats in by_file.items()))
    for m, kind in modalities.items():
        if kind == "flow" and row.paths[m] not in job.files:
            fps = next((inputs[k].fps for k in range(len(job.files)) if inputs[k].has_video), None)
            out[m], out[f"{m}:release"] = read_released_flow(row.paths[m], job, settings[m], fps), np.asarray(True)
    return out


def read_released_flow(u_dir: str, job: ClipJob, s: dict, fps: float | None) -> np.ndarray:
    """`frames` flow frames of a TV-L1 release folder, evenly spaced over the span: (frames, 2, S, S) uint8.
    Flow frame k (1-based) is the motion from video frame k to k + 1, at (k - 1) / fps seconds."""
    from bml.data.flow import flow_v_dir, read_flow_frames

    n_flow = sum(1 for name in os.listdir(u_dir) if name.startswith("frame") and name.endswith(".jpg"))
    numbers = list(range(1, n_flow + 1))
    if job.start > 0 or job.length is not None:
        if not fps:
            raise MediaError(f"{u_dir}: a flow release read over a span needs the clip's video for its frame rate")
        end = math.inf if job.length is None else job.start + job.length
        numbers = [k for k in numbers if job.start - 1e-6 <= (k - 1) / fps and k / fps < end - 1e-6]
        if not numbers:
            raise MediaError(f"{u_dir}: no flow frame in the span {job.start:.2f}-{end:.2f} s ({n_flow} frames)")
    chosen = [numbers[i] for i in select_frames(len(numbers), s["frames"])]
    try:
        return read_flow_frames(u_dir, flow_v_dir(u_dir), chosen, s["size"])
    except (OSError, ValueError) as err:
        raise MediaError(f"{u_dir}: {err}") from None


# ---- a shard of clips ---------------------------------------------------------------------------------


def features(
    decoded: list[dict[str, np.ndarray]], modalities: dict[str, str], settings: dict
) -> list[dict[str, np.ndarray] | ValueError]:
    """Decoded clips -> what each packed record stores per modality (or why it cannot); audio is computed
    in one batched call per sample rate, equal to the per-clip spectrogram (tests/test_extract.py)."""
    from bml.data.audio import spectrogram, spectrograms

    out: list = [{} for _ in decoded]
    for m, kind in modalities.items():
        if kind == "audio":
            preset = settings[m]["preset"]
            for rate in sorted({int(d[f"{m}:rate"]) for d in decoded}):
                idx = [i for i, d in enumerate(decoded) if int(d[f"{m}:rate"]) == rate]
                try:
                    specs = spectrograms([decoded[i][m] for i in idx], rate, preset)
                except ValueError:  # name the clip: one at a time
                    specs = [_or_error(ValueError, spectrogram, decoded[i][m], rate, preset) for i in idx]
                for i, spec in zip(idx, specs, strict=True):
                    out[i][m] = spec if isinstance(spec, ValueError) else spec.astype(np.float16)
        elif kind == "frames":
            for i, d in enumerate(decoded):
                out[i][m] = d[m][select_frames(len(d[m]), settings[m]["frames"])].transpose(0, 3, 1, 2)
        else:
            from bml.data.flow import farneback_flow  # OpenCV: imported only where flow is asked

            for i, d in enumerate(decoded):
                if f"{m}:release" in d:
                    out[i][m] = d[m]
                    continue
                frames = d[m]  # native frames: flow k is from frame k to k + 1
                at = select_frames(len(frames) - 1, settings[m]["frames"])
                out[i][m] = np.stack([farneback_flow(frames[k : k + 2])[0] for k in at])  # (T, 2, S, S)
    return [next((v for v in f.values() if isinstance(v, ValueError)), f) for f in out]


@contextmanager
def one_torch_thread(needed: bool) -> Iterator[None]:
    """torch on one thread while extracting (one process per core, and ffmpeg beside it: the shards are the
    parallelism), restored afterwards. Imported only when a modality needs it (spectrograms), and only
    once ffmpeg has started: the import (1-3 s) overlaps the first decodes."""
    if not needed:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class DecodeAhead:
    """(decode(chunk), seconds it took) for each chunk in order, from `workers` background threads that start
    at once and keep starting chunks, in order, while the results not yet taken hold less than limit_bytes.
    Close it (or use `with`) to stop early."""

    def __init__(self, chunks: list, decode: Callable, limit_bytes: int = AHEAD_BYTES, workers: int = 1) -> None:
        self.chunks, self.decode, self.limit = chunks, decode, limit_bytes
        self.done: dict[int, tuple] = {}  # chunk index -> (result or exception, seconds, bytes)
        self.started = self.taken = self.held = 0  # chunks started, chunks handed out, bytes held
        self.stopped = False
        self.cond = threading.Condition()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(max(1, workers))]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while True:
            with self.cond:  # a chunk is started only after every earlier one: the next one taken never waits
                self.cond.wait_for(lambda: self.held < self.limit or self.stopped)
                if self.stopped or self.started == len(self.chunks):
                    return
                i, self.started = self.started, self.started + 1
            t0 = time.perf_counter()
            try:
                result = self.decode(self.chunks[i])
                size = sum(v.nbytes for r in result if isinstance(r, dict) for v in r.values())
            except BaseException as err:  # handed to the consumer, which raises it
                result, size = err, 0
            with self.cond:
                self.done[i] = (result, time.perf_counter() - t0, size)
                self.held += size
                self.cond.notify_all()

    def __iter__(self) -> Iterator[tuple[list, float]]:
        return self

    def __next__(self) -> tuple[list, float]:
        with self.cond:
            if self.taken == len(self.chunks):
                raise StopIteration
            self.cond.wait_for(lambda: self.taken in self.done)
            result, seconds, size = self.done.pop(self.taken)
            self.taken, self.held = self.taken + 1, self.held - size
            self.cond.notify_all()
        if isinstance(result, BaseException):
            raise result
        return result, seconds

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join()

    def __enter__(self) -> DecodeAhead:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def extract_shard(
    rows: list[Row],
    modalities: dict[str, str],
    settings: dict,
    out_npy: str | Path,
    limits: Limits = Limits(),
    log=print,
    workers: int = 1,
    clips_per_process: int = CLIPS_PER_PROCESS,
) -> list[dict]:
    """Decode every clip of a shard into out_npy (records) and out_npy's .tsv (status of every clip), with
    `workers` ffmpeg processes at a time (the records do not depend on it)."""
    t_start = time.perf_counter()
    out_npy = Path(out_npy)
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    tsv = out_npy.with_suffix(".tsv")
    tsv.unlink(missing_ok=True)  # the .tsv says the shard is finished: not while it is being replaced
    chunks = [rows[i : i + clips_per_process] for i in range(0, len(rows), clips_per_process)]
    decoded = DecodeAhead(chunks, lambda chunk: decode_clips(chunk, modalities, settings, limits), workers=workers)

    statuses, t_ffmpeg, t_waited, t_features = [], 0.0, 0.0, 0.0
    try:
        with (
            one_torch_thread("audio" in modalities.values()),
            RecordWriter(out_npy, record_dtype(modalities, settings)) as writer,
        ):
            for chunk in chunks:
                t0 = time.perf_counter()
                results, seconds = next(decoded)
                t1 = time.perf_counter()
                ok = [i for i, r in enumerate(results) if not isinstance(r, MediaError)]
                for i, values in zip(ok, features([results[i] for i in ok], modalities, settings), strict=True):
                    results[i] = values
                for row, result in zip(chunk, results, strict=True):
                    if not isinstance(result, Exception):
                        writer.append(row.clip_id, row.label, result)
                t2 = time.perf_counter()
                t_ffmpeg, t_waited, t_features = t_ffmpeg + seconds, t_waited + t1 - t0, t_features + t2 - t1
                for row, result in zip(chunk, results, strict=True):
                    statuses.append(_status(row, result, seconds / len(chunk), (t2 - t1) / len(chunk), log))
    finally:
        decoded.close()
    tmp = tsv.with_name(f".{tsv.name}.tmp")
    with tmp.open("w", newline="") as f:
        table = csv.DictWriter(f, fieldnames=SHARD_FIELDS, delimiter="\t", lineterminator="\n")
        table.writeheader()
        table.writerows(statuses)
    os.replace(tmp, tsv)
    log(
        f"{out_npy}: {len(rows)} clips in {time.perf_counter() - t_start:.2f} s; decoding (ffmpeg, in a "
        f"background thread) {t_ffmpeg:.2f} s of which {t_waited:.2f} s waited for; features and writing "
        f"{t_features:.2f} s"
    )
    return statuses


def _status(row: Row, result, decode_s: float, features_s: float, log) -> dict:
    if isinstance(result, Exception):
        reason = " ".join(str(result).split())
        log(f"skipped {row.clip_id}: {reason}")
        return {
            "clip_id": row.clip_id,
            "status": "skipped",
            "reason": reason,
            "decode_s": f"{decode_s:.4f}",
            "features_s": "",
        }
    return {
        "clip_id": row.clip_id,
        "status": "ok",
        "reason": "",
        "decode_s": f"{decode_s:.4f}",
        "features_s": f"{features_s:.4f}",
    }


def shard_rows(rows: list[Row], shard: int, n_shards: int) -> list[Row]:
    """The clips of one shard: every n_shards-th clip in clip_id order, so shards stay balanced."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    return rows[shard::n_shards]
