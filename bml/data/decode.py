"""Decoding clips: one ffmpeg pass over each clip yields every modality a recipe needs, as arrays.

One ffmpeg command opens each file of a clip once (CREMA-D: the FLV and the WAV; most datasets: one MP4),
decodes only the span the recipe uses (`-ss`/`-t` before the input, the same for every stream, so frames
and audio cover the same seconds), and writes every modality to its own pipe: frames already at the
recipe's rate and size as raw RGB, flow's source frames at the video's own rate, audio as float32 at the
file's own rate. Nothing touches the disk between the video file and the shard of packed records.

A short clip costs ffmpeg more to start than to decode, so one ffmpeg process decodes a chunk of clips
(one input and its own pipes per clip: nothing mixes between clips); a chunk whose ffmpeg fails is decoded
again clip by clip, so a bad file is named on its own and never costs its neighbours.

ffmpeg's own account of the decode (bml/data/ffmpeg.py) is checked against what the container declares
over the span: a clip with more decode errors than `max_decode_errors`, or with fewer frames or samples
than `min_decoded_share` of what it should have, is refused with the reason (MediaError), as is a missing
stream, an unreadable, empty or missing file.

Flow (kind `flow`): from a video, the native frames that Farneback flow (bml/data/flow.py) is computed
between; from a precomputed TV-L1 release (the clip's flow path is its `u/<clip>` folder), the release's
JPEGs at evenly spaced positions within the span, read without ffmpeg.
"""

from __future__ import annotations

import math
import os
import selectors
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bml.data.ffmpeg import InputInfo, MediaError, ffmpeg_exe, read_inputs, read_summary, why_unreadable
from bml.data.manifest import Row

FLOW_FIRST = "frame000001.jpg"  # a TV-L1 release numbers flow frames from 1 (bml/data/flow.py)


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
            # -threads 1 (and -filter_threads 1 below): one thread per decoder and filter graph, less CPU per
            # clip than ffmpeg's default threads (benchmarks/results/timings.md, "One ffmpeg thread per decoder")
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
        results[i] = or_error(MediaError, _finish, job, modalities, settings, limits, mine, counts, pipes, code, err)
    for i in set(jobs) - {i for i, job in jobs.items() if job.files}:  # only a flow release folder: no ffmpeg
        results[i] = or_error(MediaError, _finish, jobs[i], modalities, settings, limits, {}, {}, {}, 0, "")
    return results


def or_error(kind: type[Exception], fn: Callable, *args):
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
            raise MediaError(why_unreadable(f, err))
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
