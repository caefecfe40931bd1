"""Pack each split's features into one memory-mappable file, so training reads fast.

`<split>.npy` is a NumPy array of records, one per clip: clip_id, label, `frames` (uint8,
(T, 3, S, S): T frames evenly spaced over the clip, resized to S x S) and `spec` (float16 spectrogram).
One record per clip keeps a sample's bytes together, so a random-access read is one contiguous slice, and
`np.load(path, mmap_mode="r")` opens it without reading it. `<split>.json` says how it was made.
`skipped.tsv` lists every clip that some stage could not use (clip, stage, reason).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bml.data.extract import INDEX_NAME, list_frames, read_index, read_manifest

SKIPPED_FIELDS = ["clip_id", "stage", "reason"]


def select_frames(n_available: int, n_frames: int) -> list[int]:
    """Indices of n_frames frames evenly spaced over n_available: the centre of each of n_frames segments.

    Deterministic (the test-time rule of the authors' loaders, without their unsorted listings); a clip
    with fewer frames than asked repeats frames rather than failing.
    """
    if n_available < 1:
        raise ValueError("a clip needs at least one frame")
    return [min(n_available - 1, int((i + 0.5) * n_available / n_frames)) for i in range(n_frames)]


def load_frame(path: Path, size: int) -> np.ndarray:
    """(3, size, size) uint8 RGB."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def collect_stage(root: Path, stage: str) -> tuple[dict[str, Path], list[dict]]:
    """Clips that a stage finished ({clip_id: shard dir}) and those it skipped, from its shard indexes."""
    done: dict[str, Path] = {}
    skipped: list[dict] = []
    for index in sorted(root.glob(f"shard*/{INDEX_NAME}")):
        for row in read_index(index):
            if row["status"] == "ok":
                done[row["clip_id"]] = index.parent
            else:
                skipped.append({"clip_id": row["clip_id"], "stage": stage, "reason": row["reason"]})
    return done, skipped


def record_dtype(n_frames: int, frame_size: int, spec_shape: tuple[int, int]) -> np.dtype:
    return np.dtype([("clip_id", "U32"), ("label", "<i8"),
                     ("frames", "u1", (n_frames, 3, frame_size, frame_size)),
                     ("spec", "<f2", spec_shape)])


def pack(manifest: str | Path, frames_root: str | Path, audio_root: str | Path, spec_root: str | Path,
         out_dir: str | Path, n_frames: int, frame_size: int, summary_path: str | Path | None = None,
         log=print) -> dict:
    """Write out_dir/<split>.npy and .json for every split in the manifest, and out_dir/skipped.tsv.

    The counts go to summary_path (default out_dir/summary.json), a small metrics file for DVC.
    """
    rows = read_manifest(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames_done, skipped = collect_stage(Path(frames_root), "frames")
    audio_done, audio_skipped = collect_stage(Path(audio_root), "audio")
    spec_done, spec_skipped = collect_stage(Path(spec_root), "spectrogram")
    skipped += audio_skipped + spec_skipped
    reported = {(s["clip_id"], s["stage"]) for s in skipped}
    for row in rows:   # a clip that no shard index mentions was never processed: say so, don't hide it
        cid = row["clip_id"]
        if cid not in frames_done and (cid, "frames") not in reported:
            skipped.append({"clip_id": cid, "stage": "frames", "reason": "no frames were extracted"})
        if cid in audio_done and cid not in spec_done and (cid, "spectrogram") not in reported:
            skipped.append({"clip_id": cid, "stage": "spectrogram", "reason": "no spectrogram was computed"})

    usable = [r for r in rows if r["clip_id"] in frames_done and r["clip_id"] in spec_done]
    if not usable:
        raise RuntimeError(f"{manifest}: no clip has both frames and a spectrogram; see the skipped list")
    spec_shape = np.load(spec_done[usable[0]["clip_id"]] / f"{usable[0]['clip_id']}.npy").shape
    dtype = record_dtype(n_frames, frame_size, spec_shape)

    summary = {"n_clips": len(rows), "n_packed": len(usable), "n_skipped_clips": len(rows) - len(usable),
               "splits": {}}
    for split in sorted({r["split"] for r in rows}):
        members = [r for r in usable if r["split"] == split]
        path = out_dir / f"{split}.npy"
        tmp = out_dir / f"{split}.tmp.npy"
        packed = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(members),))
        for i, row in enumerate(members):
            cid = row["clip_id"]
            frame_files = list_frames(frames_done[cid] / cid)
            packed[i]["clip_id"] = cid
            packed[i]["label"] = int(row["label"])
            packed[i]["frames"] = np.stack([load_frame(frame_files[j], frame_size)
                                            for j in select_frames(len(frame_files), n_frames)])
            packed[i]["spec"] = np.load(spec_done[cid] / f"{cid}.npy").astype(np.float16)
        packed.flush()
        del packed
        tmp.rename(path)
        meta = {"split": split, "n": len(members), "n_frames": n_frames, "frame_size": frame_size,
                "spec_shape": list(spec_shape), "labels": sorted({int(r["label"]) for r in rows}),
                "sha256": file_sha256(path)}
        (out_dir / f"{split}.json").write_text(json.dumps(meta, indent=2) + "\n")
        summary["splits"][split] = len(members)
        log(f"pack: {split}: {len(members)} clips -> {path}")

    with (out_dir / "skipped.tsv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SKIPPED_FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(skipped, key=lambda s: (s["clip_id"], s["stage"])))
    if skipped:
        log(f"pack: {len(skipped)} clip-stage failures listed in {out_dir / 'skipped.tsv'}")
    Path(summary_path or out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_split(packed_dir: str | Path, split: str) -> tuple[np.ndarray, dict]:
    """The memory-mapped records of one split and their metadata; names the file when it is missing."""
    path = Path(packed_dir) / f"{split}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: packed split not found; run the data stages first (make run)")
    return np.load(path, mmap_mode="r"), json.loads(path.with_suffix(".json").read_text())
