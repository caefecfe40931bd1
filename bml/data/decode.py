"""Decoding clips: one ffmpeg pass over each clip yields every modality a recipe needs, as arrays.

One ffmpeg command opens each file of a clip once (CREMA-D: the FLV and the WAV; most datasets: one MP4),
decodes only the span the recipe uses (`-ss`/`-t` before the input, the same for every stream, so frames
and audio cover the same seconds), and writes every modality to its own pipe: frames already at the
recipe's rate and size as raw RGB, flow's source frames at the video's own rate, audio as float32 at the
file's own rate. Nothing touches the disk between the video file and the shard of packed records.

A short clip costs ffmpeg more to start than to decode, so one ffmpeg process decodes a chunk of clips
(one input and its own pipes per clip: nothing mixes between clips); a chunk whose ffmpeg fails is decoded
again clip by clip, so a bad file is named on its own and never costs its neighbours.

What a clip's pipes hold is checked against what its container declares over the span, and ffmpeg's own
account of the decode (bml/data/ffmpeg.py) for damage: a clip whose frames or samples in the span fall short
of `min_decoded_share` of the declared ones, or a stream with a larger share than `max_decode_error_share` of
its packets refused by the decoder, is refused with the reason (MediaError), as is a missing stream, an
unreadable, empty or missing file. The pipes, not ffmpeg's input counts, say what the span holds: a seek
starts decoding at the keyframe before the span (a long-GOP video decodes 200 frames for a span of 30), and
the frame-rate filter repeats a frame where an AVI holds a null chunk (the player repeats it too).

What each modality asks of ffmpeg, and what its pipe holds, is its kind's (bml/kinds/): frames at the
recipe's rate, flow's native frames, audio samples; a kind may read a folder instead (a flow release).
"""

from __future__ import annotations

import os
import selectors
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bml.data.ffmpeg import (
    InputInfo,
    MediaError,
    ffmpeg_exe,
    read_inputs,
    read_span_frames,
    read_summary,
    why_unreadable,
)
from bml.data.manifest import Row
from bml.kinds import KINDS
from bml.runtime import FFMPEG_CPU_FLAGS


@dataclass(frozen=True)
class Limits:
    min_decoded_share: float = 0.9  # params.yaml extract.min_decoded_share
    max_decode_error_share: float = 0.01  # params.yaml extract.max_decode_error_share


def select_frames(n_available: int, n_frames: int) -> list[int]:
    """Indices of n_frames frames evenly spaced over n_available: the centre of each of n_frames segments.

    Deterministic (the test-time rule of the authors' loaders, without their unsorted listings); a clip with
    fewer frames than asked repeats frames rather than failing.
    """
    if n_available < 1:
        raise ValueError("a clip needs at least one frame")
    return [min(n_available - 1, int((i + 0.5) * n_available / n_frames)) for i in range(n_frames)]


# ---- what one clip asks of ffmpeg ---------------------------------------------------------------------


@dataclass
class ClipJob:
    row: Row
    start: float  # seconds into the files
    length: float | None  # None: to the end of the files
    files: list[str]  # the media files ffmpeg opens (a folder its kind reads, such as a flow release, is not one)


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
        if KINDS[kind].reads_folder(path):
            KINDS[kind].check_folder(path)
            continue
        if not os.path.isfile(path):
            raise MediaError(f"{path}: file not found")
        if os.path.getsize(path) == 0:
            raise MediaError(f"{path}: empty file (0 bytes)")
        if path not in files:
            files.append(path)
    return ClipJob(row, start, length, files)


def span_tag(job_index: int, m: str) -> str:
    """The name of the filter that counts the span's frames of modality m of the job_index-th clip of a process."""
    return f"c{job_index}_{m}"


def _outputs(
    job: ClipJob, job_index: int, first_input: int, modalities: dict[str, str], settings: dict
) -> list[tuple[str, list]]:
    """(modality, ffmpeg output options before the pipe) for each modality ffmpeg decodes for this clip."""
    outs = []
    for m, kind in modalities.items():
        if job.row.paths[m] not in job.files:
            continue  # a folder its kind reads without ffmpeg
        source = first_input + job.files.index(job.row.paths[m])
        outs.append((m, KINDS[kind].ffmpeg_output(source, settings.get(m, {}), span_tag(job_index, m))))
    return outs


def _run_ffmpeg(jobs: list[ClipJob], modalities: dict[str, str], settings: dict):
    """One ffmpeg process for all jobs: (return code, stderr, {(job, modality): bytes}, first input per job)."""
    cmd = [ffmpeg_exe(), *FFMPEG_CPU_FLAGS, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "verbose"]
    firsts, outputs, pipes = [], [], {}
    for j, job in enumerate(jobs):
        firsts.append(sum(len(x.files) for x in jobs[:j]))
        for f in job.files:
            # -threads 1 (and -filter_threads 1 below): one thread per decoder and filter graph, less CPU per
            # clip than ffmpeg's default threads (benchmarks/results/timings.md, "One ffmpeg thread per decoder")
            cmd += ["-threads", "1"] + (["-ss", f"{job.start:.3f}"] if job.start > 0 else [])
            cmd += (["-t", f"{job.length:.3f}"] if job.length is not None else []) + ["-i", f]
        for m, options in _outputs(job, j, firsts[-1], modalities, settings):
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
        inputs, summary, received = read_inputs(err), read_summary(err), read_span_frames(err)
    for j, i in enumerate(batch):
        job, first, n = jobs[i], firsts[j], len(jobs[i].files)
        mine = {k: inputs[first + k] for k in range(n) if first + k in inputs}
        counts = {
            (k, s): summary[(first + k, s)] for k in range(n) for s in ("video", "audio") if (first + k, s) in summary
        }
        pipes = {m: block for (jj, m), block in data.items() if jj == j}
        spans = {m: received.get(span_tag(j, m), 0) for m in modalities}
        results[i] = or_error(
            MediaError, _finish, job, modalities, settings, limits, mine, counts, spans, pipes, code, err
        )
    for i in set(jobs) - {i for i, job in jobs.items() if job.files}:  # only folders read without ffmpeg
        results[i] = or_error(MediaError, _finish, jobs[i], modalities, settings, limits, {}, {}, {}, {}, 0, "")
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
    spans: dict[str, int],
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
            k, stream = job.files.index(row.paths[m]), KINDS[kind].stream
            if not (inputs[k].has_audio if stream == "audio" else inputs[k].has_video):
                raise MediaError(f"{job.files[k]}: no {stream} stream")
            used_by[m] = (k, stream)
    if returncode != 0:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip() and "Input stream #" not in ln]
        raise MediaError(f"{job.files[0]}: ffmpeg failed ({lines[-1] if lines else 'no message'})")
    out: dict[str, np.ndarray] = {}
    problems = []  # (file, what): every shortfall and the decode errors, in one reason
    under = f"(under {limits.min_decoded_share:.0%}: params.yaml extract.min_decoded_share)"
    for m, (k, stream) in used_by.items():
        info, kind = inputs[k], KINDS[modalities[m]]
        if info.duration <= job.start:
            raise MediaError(
                f"{job.files[k]}: the span starts at {job.start:.2f} s, after the end of the file "
                f"({info.duration:.2f} s)"
            )
        used = info.duration - job.start if job.length is None else min(info.duration - job.start, job.length)
        arrays = kind.from_pipe(data.get(m, b""), settings.get(m, {}), info.sample_rate)
        rate, audio = (info.sample_rate if stream == "audio" else info.fps) or 0, stream == "audio"
        held = len(arrays[""]) if audio else spans.get(m, 0)  # video: the span's frames (SPAN_COUNTER's count)
        expected, allowance = used * rate, 0.1 * rate if audio else 1  # an encoder's priming samples; a rounded frame
        if held == 0 or held < limits.min_decoded_share * expected - allowance:
            what = f"decoded {held} of the {expected:.0f} {'samples' if audio else 'frames'} its container declares"
            problems.append((job.files[k], f"truncated or damaged {stream}: {what} over {used:.2f} s {under}"))
        elif not audio and len(arrays[""]) < kind.min_frames:
            n = len(arrays[""])
            problems.append((job.files[k], f"{n} frames in the span {job.start:.2f}-{job.start + used:.2f} s"))
        out.update({m + suffix: array for suffix, array in arrays.items()})
    counts = {key: summary[key] for key in sorted(set(used_by.values())) if key in summary}
    damaged = {key: c for key, c in counts.items() if c.errors > limits.max_decode_error_share * max(c.packets, 1)}
    if damaged:
        what = ", ".join(f"{c.errors} of {c.packets} {s} packets" for (_, s), c in counts.items() if c.errors)
        allowed = f"at most {limits.max_decode_error_share:.1%} per stream: params.yaml extract.max_decode_error_share"
        problems.append((job.files[next(iter(damaged))[0]], f"damaged: decode errors ({what}; {allowed})"))
    if problems:
        by_file: dict[str, list[str]] = {}
        for f, what in problems:
            by_file.setdefault(f, []).append(what)
        raise MediaError("; ".join(f"{f}: " + "; ".join(whats) for f, whats in by_file.items()))
    for m, kind in modalities.items():
        if row.paths[m] not in job.files:  # a folder its kind reads (a flow release): the span's rate from the video
            fps = next((inputs[k].fps for k in range(len(job.files)) if inputs[k].has_video), None)
            arrays = KINDS[kind].read_folder(row.paths[m], job, settings[m], fps)
            out.update({m + suffix: array for suffix, array in arrays.items()})
    return out
