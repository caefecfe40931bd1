"""The packed format: one memory-mappable file of records per split, checked before training reads it.

`<split>.npy` is a NumPy array of records, one per clip: `clip_id`, `label`, and one field per modality,
keyed by the modality's name, of its kind's type and shape (bml/kinds/: audio a float16 spectrogram, frames
uint8 (T, 3, S, S), flow uint8 (T, 2, S, S)). One record per clip keeps a sample's bytes together, so a
random read is one slice, and `np.load(path, mmap_mode="r")` opens it without reading it. `<split>.json`
says how it was made, with the file's size and sha256: `open_split` checks both (once per process) and
refuses a damaged file, naming it.

`pack` joins the shards that extraction wrote (bml/data/extract.py) into the splits, and writes
`skipped.tsv` (every clip of the manifest that is not packed, with the reason, and the release entries
the listing left out) and `summary.json` (counts, a DVC metric). It refuses, naming the shard, a shard
without its .tsv (unfinished: its job was killed), one whose records and .tsv disagree, one holding clips
the manifest does not have or another shard has (extracted from another manifest or shard count), and a
split that extraction left empty; every file it writes goes through a temporary name.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from bml.data.manifest import MAX_ID, SPLITS, read_manifest, read_skipped, write_skipped
from bml.kinds import KINDS

SHARD_FIELDS = ["clip_id", "status", "reason", "decode_s", "features_s"]  # a shard's .tsv (bml/data/extract.py)
HEADER = 256  # bytes reserved for the .npy header, so a streamed file's record count can be written last
_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime) -> sha256, checked once per process


class PackedDataError(RuntimeError):
    """A packed split that is missing, truncated or altered; names the file and what does not match."""


def record_dtype(modalities: dict[str, str], settings: dict) -> np.dtype:
    fields = [("clip_id", f"U{MAX_ID}"), ("label", "<i8")]
    for m, kind in modalities.items():
        dtype, shape = KINDS[kind].field(settings[m])
        fields.append((m, dtype, shape))
    return np.dtype(fields)


def _header(dtype: np.dtype, n: int) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)})
    body = text.encode("latin1")
    pad = HEADER - 10 - len(body) - 1
    if pad < 0:
        raise ValueError(f"record type too long for a {HEADER}-byte header")
    return b"\x93NUMPY\x01\x00" + (HEADER - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"


class RecordWriter:
    """Append records to a .npy file as they come (no shard is held in memory); renamed into place on close."""

    def __init__(self, path: str | Path, dtype: np.dtype, capacity: int = 0) -> None:
        self.path, self.dtype, self.n = Path(path), dtype, 0
        if len(_header(dtype, 10**12)) != HEADER:  # the largest count must fit the reserved header too
            raise ValueError("record type too long for the packed header")
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.file = self.tmp.open("wb")
        self.file.write(_header(dtype, 0))
        self.record = np.zeros(1, dtype=dtype)

    def append(self, clip_id: str, label: int, values: dict[str, np.ndarray]) -> None:
        rec = self.record
        rec["clip_id"], rec["label"] = clip_id, label
        for name, value in values.items():
            if value.shape != rec[name].shape[1:]:
                raise ValueError(
                    f"clip {clip_id}: {name} has shape {value.shape}, the record holds {rec[name].shape[1:]}"
                )
            rec[name] = value
        self.append_raw(rec)

    def append_raw(self, records: np.ndarray) -> None:
        """Records already of this type (a slice of another packed file)."""
        self.file.write(records.tobytes())
        self.n += len(records)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is not None:
            self.file.close()
            self.tmp.unlink(missing_ok=True)
            return
        self.file.seek(0)
        self.file.write(_header(self.dtype, self.n))
        self.file.close()
        os.replace(self.tmp, self.path)


def read_shard_status(tsv: Path) -> list[dict]:
    """The rows of a shard's .tsv; PackedDataError, naming it, for anything but the table extraction writes."""
    try:
        with tsv.open(newline="", encoding="utf-8-sig") as f:
            table = csv.DictReader(f, delimiter="\t")
            statuses, fields = list(table), table.fieldnames
    except (UnicodeDecodeError, csv.Error):
        statuses, fields = [], None
    if fields != SHARD_FIELDS or any(s["status"] not in ("ok", "skipped") or not s["clip_id"] for s in statuses):
        raise PackedDataError(f"{tsv}: not the status table extraction writes; run its extraction again (bml extract)")
    return statuses


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_shard(path: Path, manifest_ids: set[str]) -> tuple[np.ndarray, list[dict]]:
    """A finished shard's records and statuses, checked against each other and the manifest."""
    tsv = path.with_suffix(".tsv")
    if not tsv.is_file():
        raise PackedDataError(f"{path}: unfinished shard (no {tsv.name}); run its extraction again (bml extract)")
    try:
        records = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise PackedDataError(f"{path}: not a readable shard ({err}); run its extraction again") from None
    statuses = read_shard_status(tsv)
    stale = sorted({s["clip_id"] for s in statuses} - manifest_ids)
    ok = [s["clip_id"] for s in statuses if s["status"] == "ok"]
    if stale or records.dtype.names is None or ok != records["clip_id"].tolist():
        why = f"clips {stale[:3]} are not in the manifest" if stale else f"{tsv.name} does not match its records"
        raise PackedDataError(f"{path}: {why}: the shard is from another extraction; run it again (bml extract)")
    return records, statuses


def pack(
    manifest: str | Path, shards: list[str | Path], out_dir: str | Path, summary_path: str | Path, log=print
) -> dict:
    """Join the shards into out_dir/<split>.npy + .json; write skipped.tsv and the summary.

    skipped.tsv lists every clip of the manifest that is not packed (stage `extract`, with the reason), and
    the release entries the listing left out of the manifest (stage `listing`)."""
    rows, meta = read_manifest(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split_of = {r.clip_id: r.split for r in rows}
    skipped = read_skipped(Path(manifest).with_name("listing_skipped.tsv"))
    where: dict[str, tuple[int, int]] = {}  # clip -> (shard, row)
    reported: dict[str, Path] = {}  # clip -> the shard that lists it
    arrays = []
    for k, path in enumerate(map(Path, shards)):
        records, statuses = read_shard(path, set(split_of))
        if arrays and records.dtype != arrays[0].dtype:
            raise PackedDataError(f"{path}: its record type differs from {shards[0]}'s: extract every shard again")
        arrays.append(records)
        for status in statuses:
            if status["clip_id"] in reported:
                raise PackedDataError(f"{path}: clip {status['clip_id']} is also in {reported[status['clip_id']]}")
            reported[status["clip_id"]] = path
            if status["status"] != "ok":
                skipped.append({"clip_id": status["clip_id"], "stage": "extract", "reason": status["reason"]})
        where.update({cid: (k, i) for i, cid in enumerate(records["clip_id"].tolist())})
    skipped += [
        {"clip_id": r.clip_id, "stage": "extract", "reason": "no shard lists it (was its shard extracted?)"}
        for r in rows
        if r.clip_id not in reported
    ]
    empty = [split for split in SPLITS if not any(split_of[cid] == split for cid in where)]
    if empty:  # nothing to train on, select with or report: refused, with every clip's reason written
        write_skipped(out_dir / "skipped.tsv", skipped)
        raise PackedDataError(
            f"{manifest}: no clip of split(s) {empty} could be extracted; the reasons are in {out_dir / 'skipped.tsv'}"
        )
    dtype = arrays[0].dtype
    summary = {
        "n_clips": len(rows) + len([s for s in skipped if s["stage"] == "listing"]),
        "n_packed": len(where),
        "n_skipped": len({s["clip_id"] for s in skipped}),
        "splits": {},
        "skipped_by_stage": {st: sum(s["stage"] == st for s in skipped) for st in ("listing", "extract")},
    }
    for split in SPLITS:
        members = sorted(cid for cid in where if split_of[cid] == split)
        path = out_dir / f"{split}.npy"
        with RecordWriter(path, dtype) as writer:
            for cid in members:
                k, i = where[cid]
                writer.append_raw(arrays[k][i : i + 1])
        meta_out = {
            "split": split,
            "n": len(members),
            "classes": meta["classes"],
            "modalities": meta["modalities"],
            "dtype": str(dtype.descr),
            "size": path.stat().st_size,
            "sha256": file_sha256(path),
        }
        _write_text(path.with_suffix(".json"), json.dumps(meta_out, indent=2) + "\n")
        summary["splits"][split] = len(members)
        log(f"pack: {split}: {len(members)} clips -> {path}")
    write_skipped(out_dir / "skipped.tsv", skipped)
    if skipped:
        log(f"pack: {summary['n_skipped']} clips left out, listed with the reason in {out_dir / 'skipped.tsv'}")
    _write_text(Path(summary_path), json.dumps(summary, indent=2) + "\n")
    return summary


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary name: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def open_split(packed_dir: str | Path, split: str) -> tuple[np.ndarray, dict]:
    """The memory-mapped records of one split and their metadata, after checking the file's size and hash."""
    path = Path(packed_dir) / f"{split}.npy"
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise PackedDataError(
            f"{path}: packed split not found; run the data stages first (make run, or snakemake {path})"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PackedDataError(f"{meta_path}: not valid JSON ({err}); rebuild the split") from None
    missing = [k for k in ("size", "sha256", "dtype") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise PackedDataError(f"{meta_path}: no {', '.join(missing)}: not the metadata pack writes; rebuild the split")
    stat = path.stat()
    if stat.st_size != meta["size"]:
        raise PackedDataError(
            f"{path}: {stat.st_size} bytes, but {meta_path.name} records {meta['size']}: the file "
            f"is truncated or was replaced; rebuild it (delete {path.parent} and rerun the workflow)"
        )
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = file_sha256(path)
    if _VERIFIED[key] != meta["sha256"]:
        raise PackedDataError(
            f"{path}: sha256 {_VERIFIED[key][:12]}... differs from {meta['sha256'][:12]}... recorded "
            f"in {meta_path.name}: the file was altered or damaged; rebuild it"
        )
    records = np.load(path, mmap_mode="r")
    if str(records.dtype.descr) != meta["dtype"]:
        raise PackedDataError(f"{path}: its record type does not match {meta_path.name}")
    return records, meta
