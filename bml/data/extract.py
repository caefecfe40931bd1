"""A shard of clips: decoded (bml/data/decode.py), turned into features, and written as packed records.

Chunks of CLIPS_PER_PROCESS clips are decoded ahead in background threads (one ffmpeg process each) while
the features of the previous chunk are computed (spectrograms batched over the chunk, bml/data/audio.py;
flow by bml/data/flow.py), so ffmpeg and Python overlap. A skipped clip never stops the shard.

A shard is `shards/shard<k>.npy` (records, bml/data/pack.py's format) plus `shards/shard<k>.tsv` (every clip
of the shard: ok or skipped, why, seconds spent), both written through a temporary name, the .tsv last:
a shard without its .tsv is unfinished, and a killed job leaves no half-written file under a final name.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bml.data.decode import Limits, decode_clips
from bml.data.ffmpeg import MediaError
from bml.data.manifest import Row
from bml.data.pack import SHARD_FIELDS, RecordWriter, record_dtype
from bml.kinds import KINDS

# Clips per ffmpeg process: 8 cost almost half the CPU per clip of 1, as little as 16, and keep a chunk's arrays
# small (benchmarks/results/timings.md, "Clips per ffmpeg process").
CLIPS_PER_PROCESS = 8
# Decoded arrays held ahead of the feature step (bml's choice): enough to keep ffmpeg busy while the
# first chunk waits for torch to import (benchmarks/results/timings.md), small beside a worker's memory.
AHEAD_BYTES = 256 << 20


def features(
    decoded: list[dict[str, np.ndarray]], modalities: dict[str, str], settings: dict
) -> list[dict[str, np.ndarray] | ValueError]:
    """Decoded clips -> what each packed record stores per modality (or why it cannot), each modality by its
    kind (bml/kinds/), over the whole chunk at once (spectrograms are batched)."""
    out: list = [{} for _ in decoded]
    for m, kind in modalities.items():
        for i, value in enumerate(KINDS[kind].features(decoded, m, settings[m])):
            out[i][m] = value
    return [next((v for v in f.values() if isinstance(v, ValueError)), f) for f in out]


@contextmanager
def one_torch_thread(needed: bool) -> Iterator[None]:
    """torch on one thread while extracting (one process per core, and ffmpeg beside it: the shards are the
    parallelism), restored afterwards. Imported only when a modality needs it (spectrograms), and only
    once ffmpeg has started: the import (seconds: benchmarks/results/timings.md) overlaps the first decodes."""
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
    limits: Limits | None = None,
    log=print,
    workers: int = 1,
    clips_per_process: int = CLIPS_PER_PROCESS,
) -> list[dict]:
    """Decode every clip of a shard into out_npy (records) and out_npy's .tsv (status of every clip), with
    `workers` ffmpeg processes at a time (the records do not depend on it)."""
    t_start = time.perf_counter()
    limits = limits or Limits()
    out_npy = Path(out_npy)
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    tsv = out_npy.with_suffix(".tsv")
    tsv.unlink(missing_ok=True)  # the .tsv says the shard is finished: not while it is being replaced
    chunks = [rows[i : i + clips_per_process] for i in range(0, len(rows), clips_per_process)]
    decoded = DecodeAhead(chunks, lambda chunk: decode_clips(chunk, modalities, settings, limits), workers=workers)

    statuses, t_ffmpeg, t_waited, t_features = [], 0.0, 0.0, 0.0
    try:
        with (
            one_torch_thread(any(KINDS[k].uses_torch for k in modalities.values())),
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
