"""VGGSound (Chen et al., ICASSP 2020): 10 s YouTube clips of 309 sound classes, listed in the release's
`vggsound.csv` (no header: youtube_id,start_seconds,label,split), with whatever part of the videos a user has
downloaded under one folder.

Labels are numbered over the full csv (sorted class names, as the dataset authors' loader does), never over the
downloaded clips, so a partial download keeps the papers' label indices; coverage (found vs listed per split) is
reported in the skipped entries. A validation part is carved out of train for model selection.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bml.data.adapters import Clip, LayoutError, Listing, Skip
from bml.data.adapters.cremad import carve_val, file_problem, folder_summary, merged_settings, read_csv_rows

EXPECTS = """VGGSound (www.robots.ox.ac.uk/~vgg/data/vggsound/), all or part of it:
  <root>/vggsound.csv                    no header: youtube_id,start_seconds,label,split (train|test); 309 classes
  <root>/video/<youtube_id>_<start:06d>.mp4   the downloaded 10 s clips (folder: setting video_dir; names:
                                              setting file_pattern)"""

DEFAULTS = {
    "adapter": "vggsound",
    "root": None,
    "csv": "vggsound.csv",  # relative to the root
    "video_dir": "video",  # relative to the root
    # Relative to video_dir; fields ytid, start (int), label, split. Mirrors name clips {ytid}_{start:06d}.mp4 (the
    # dataset authors' example audio, hche11/VGGSound example_audio/FwVYUHKoLtQ_000034.wav, has that form).
    "file_pattern": "{ytid}_{start:06d}.mp4",
    # "sorted": label = position of the class in the sorted class names of the whole csv (hche11/VGGSound
    # datasets/dataloader.py: sorted(classes)). "csv_train_order": order of first appearance in the csv's train
    # rows, what the OGM-GE and BalanceBenchmark loaders compute (over the downloaded train rows only).
    "class_order": "sorted",
    "n_classes": 309,  # the papers' class count, checked against the csv; null: no check
    "val_share": 0.1,
    "split_seed": 0,
}
SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # bml's clip_id rule (bml/data/adapters/__init__.py, Clip)


def list_clips(root: Path, settings: dict) -> Listing:
    """The downloaded VGGSound clips under the csv's split, sorted by clip_id; the rest as "not downloaded"."""
    cfg = merged_settings(settings, DEFAULTS, "vggsound")
    if cfg["class_order"] not in ("sorted", "csv_train_order"):
        raise ValueError(f"vggsound settings: class_order {cfg['class_order']!r} is not 'sorted' or 'csv_train_order'")
    csv_path, video_dir = root / cfg["csv"], root / cfg["video_dir"]
    if not csv_path.is_file() or not video_dir.is_dir():
        missing = " and ".join(
            str(p) for p, ok in ((csv_path, csv_path.is_file()), (video_dir, video_dir.is_dir())) if not ok
        )
        raise LayoutError(
            f"{root}: not a VGGSound release: no {missing}; found {folder_summary(root)}\nExpected:\n{EXPECTS}"
        )
    skipped: list[Skip] = []
    rows = _read_csv(csv_path, skipped)  # clip_id -> (ytid, start, label name, split)
    if cfg["class_order"] == "sorted":
        classes = sorted({label for _, _, label, _ in rows.values()})
    else:
        classes = list(dict.fromkeys(label for _, _, label, split in rows.values() if split == "train"))
        classes += sorted({label for _, _, label, _ in rows.values()} - set(classes))
    if cfg["n_classes"] is not None and len(classes) != cfg["n_classes"]:
        raise ValueError(
            f"{csv_path}: {len(classes)} classes, expected {cfg['n_classes']} (the papers' VGGSound); "
            "set n_classes to null to accept another class list"
        )
    index = {name: i for i, name in enumerate(classes)}
    labels = {clip_id: index[label] for clip_id, (_, _, label, _) in rows.items()}
    splits = {clip_id: split for clip_id, (_, _, _, split) in rows.items()}
    carve_val(splits, labels, cfg["val_share"], cfg["split_seed"])

    listings: dict[str, dict[str, os.DirEntry]] = {}  # folder -> its files, each folder listed once
    clips, missing = [], []
    for clip_id, (ytid, start, label, split) in sorted(rows.items()):
        name = cfg["file_pattern"].format(ytid=ytid, start=start, label=label, split=split)
        folder, file_name = os.path.split(os.path.join(video_dir, name))  # plain strings: 200k Paths are slow
        if folder not in listings:
            listings[folder] = _files(Path(folder))
        entry = listings[folder].get(file_name)
        if entry is None:
            missing.append((clip_id, splits[clip_id], os.path.join(folder, file_name)))
        elif problem := file_problem(Path(entry.path), entry.stat().st_size):
            skipped.append(Skip(clip_id, problem))
        else:
            path = Path(entry.path)
            clips.append(Clip(clip_id, labels[clip_id], splits[clip_id], {"audio": path, "visual": path}))

    listed = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")}
    found = {s: sum(1 for c in clips if c.split == s) for s in listed}
    for clip_id, split, path in missing:
        skipped.append(
            Skip(
                clip_id,
                f"not downloaded: no {path} ({split}: {found[split]:,} of {listed[split]:,} listed clips found)",
            )
        )
    if not clips:
        raise LayoutError(
            f"{root}: none of the {len(rows):,} clips of {csv_path.name} found as "
            f"{video_dir}/{cfg['file_pattern']}; {video_dir.name}/ holds {folder_summary(video_dir)}\n"
            f"Expected:\n{EXPECTS}"
        )
    return Listing(classes=classes, clips=clips, skipped=sorted(skipped, key=lambda s: s.clip_id))


def _read_csv(path: Path, skipped: list[Skip]) -> dict[str, tuple[str, int, str, str]]:
    """clip_id -> (youtube_id, start second, label, split) of each row; a header or '#' comment line is passed
    over, a malformed row is an error naming its line, a repeated clip is skipped."""
    rows: dict[str, tuple[str, int, str, str]] = {}
    first_line: dict[str, int] = {}
    for line_no, row in read_csv_rows(path):
        if row[0].lstrip().startswith("#"):
            continue
        if len(row) < 4:
            raise ValueError(f"{path}:{line_no}: expected youtube_id,start_seconds,label,split, got {','.join(row)!r}")
        ytid, start, label, split = (field.strip() for field in row[:4])
        if not start.isdigit():
            if line_no == 1:  # a header line
                continue
            raise ValueError(f"{path}:{line_no}: start seconds {start!r} is not a whole number")
        if split not in ("train", "test"):
            raise ValueError(f"{path}:{line_no}: split {split!r} is not 'train' or 'test'")
        clip_id = f"{ytid}_{int(start):06d}"
        if not SAFE_ID.match(clip_id):
            skipped.append(
                Skip(
                    ytid,
                    f"unusable YouTube id {ytid!r} ({path.name}:{line_no}): a clip id takes letters, "
                    "digits, '_', '-', '.'",
                )
            )
        elif clip_id in rows:
            skipped.append(
                Skip(
                    clip_id,
                    f"duplicate row: {path.name}:{line_no} repeats {clip_id} (first at line {first_line[clip_id]})",
                )
            )
        else:
            rows[clip_id], first_line[clip_id] = (ytid, int(start), label, split), line_no
    if not rows:
        raise ValueError(f"{path}: no clip rows")
    return rows


def _files(folder: Path) -> dict[str, os.DirEntry]:
    if not folder.is_dir():
        return {}
    return {e.name: e for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")}
