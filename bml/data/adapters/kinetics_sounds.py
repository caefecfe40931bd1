"""Kinetics-Sounds (Arandjelović & Zisserman, ICCV 2017): the Kinetics-400 classes that can be heard, read from
Kinetics-400 as CVDF releases it (`<root>/{train,val,test}/<youtube_id>_<start:06d>_<end:06d>.mp4`, annotations in
`<root>/annotations/`). Both modalities come from the same mp4.

The class list and the split lists are settings; the defaults are the 31 classes and the 14,799 / 2,597 split of
the GeWu-Lab papers (BML TPAMI 2024; bml/data/lists/kinetics_sounds/). Train names are Kinetics-400 file stems and
match a file by full name; test names are `<youtube_id>_<n>`, of undocumented origin, and match by YouTube id (the
start second when a video has several clips). A validation part is carved out of train for model selection.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from pathlib import Path

from bml.data.adapters import Clip, LayoutError, Listing, Skip
from bml.data.adapters.cremad import carve_val, file_problem, folder_summary, list_path, merged_settings, summarize

EXPECTS = """Kinetics-400 as released by CVDF (github.com/cvdfoundation/kinetics-dataset, k400_downloader.sh):
  <root>/train/, <root>/val/, <root>/test/   <youtube_id>_<start:06d>_<end:06d>.mp4 (directly or in class folders)
  <root>/replacement/replacement_for_corrupted_k400/   replacements of the corrupt train videos (optional)
  <root>/annotations/{train,val,test}.csv   label,youtube_id,time_start,time_end,split[,is_cc] (optional: labels
                                            are cross-checked against the split lists when present)"""

DEFAULTS = {
    "adapter": "kinetics_sounds",
    "root": None,
    "classes": "classes.json",  # {"labels": [...]} or a JSON list; relative: bml/data/lists/kinetics_sounds/, then cwd
    "split_lists": {"train": "train.txt", "test": "test.txt"},  # rows `name,...,label` (label: index or class name)
    # Folders searched for videos, first match wins: the replacement archive first, so that a corrupt train video
    # is read from its replacement (cvdfoundation/kinetics-dataset arrange_by_classes.py does the same).
    "video_dirs": ["replacement/replacement_for_corrupted_k400", "train", "val", "test"],
    "annotations": "annotations",  # folder of the release's CSVs; null: no label cross-check
    "val_share": 0.1,
    "split_seed": 0,
}
K400_STEM = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<start>\d{6})_(?P<end>\d{6})$")  # CVDF's file names
SHORT_NAME = re.compile(r"^(?P<ytid>[A-Za-z0-9_-]{11})_(?P<n>\d+)$")  # the papers' test names
# A class name as Kinetics' CSVs write it ("playing bass guitar") and as the class list does ("playing_bass_guitar").
_CANON = str.maketrans(" ", "_")


def list_clips(root: Path, settings: dict) -> Listing:
    """The listed Kinetics-Sounds clips found in a Kinetics-400 release, sorted by clip_id."""
    cfg = merged_settings(settings, DEFAULTS, "kinetics_sounds")
    folders = [root / d for d in cfg["video_dirs"] if (root / d).is_dir()]
    if not folders:
        raise LayoutError(
            f"{root}: not a Kinetics-400 release: none of the video folders {cfg['video_dirs']} is "
            f"there; found {folder_summary(root)}\nExpected:\n{EXPECTS}"
        )
    classes = read_classes(list_path("kinetics_sounds", cfg["classes"]))
    skipped: list[Skip] = []
    entries = _read_split_lists(cfg, classes, skipped)  # name -> (split, label, where)
    splits = {name: split for name, (split, _, _) in entries.items()}
    if "val" not in splits.values():  # a val list, where given, replaces the carve-out
        carve_val(splits, {name: label for name, (_, label, _) in entries.items()}, cfg["val_share"], cfg["split_seed"])
    by_stem, by_ytid = index_videos(folders)
    annotations = read_annotations(root / cfg["annotations"]) if cfg["annotations"] else {}

    clips, unmatched_short, n_short = [], [], 0
    for name, (_, label, where) in sorted(entries.items()):
        split = splits[name]
        if match := K400_STEM.match(name):
            path = by_stem.get(name)
            if path is None:
                others = ", ".join(p.name for p in by_ytid.get(match["ytid"], []))
                also = f" (the same YouTube id is on disk as {others})" if others else ""
                skipped.append(Skip(name, f"missing: {name}.mp4 ({where}) is in none of {cfg['video_dirs']}{also}"))
                continue
        elif match := SHORT_NAME.match(name):
            n_short += 1
            candidates = by_ytid.get(match["ytid"], [])
            at_start = [p for p in candidates if int(K400_STEM.match(p.stem)["start"]) == int(match["n"])]
            path = candidates[0] if len(candidates) == 1 else at_start[0] if len(at_start) == 1 else None
            if path is None:
                unmatched_short.append((name, where, candidates))
                continue
        else:
            skipped.append(
                Skip(
                    name,
                    f"unexpected name {name!r} ({where}): neither <youtube_id>_<start:06d>_<end:06d> "
                    "nor <youtube_id>_<n>",
                )
            )
            continue
        problem = file_problem(path, path.stat().st_size)
        annotated = annotations.get(match["ytid"])
        if problem:
            skipped.append(Skip(name, problem))
        elif annotated and annotated[0] and annotated[0].translate(_CANON) != classes[label].translate(_CANON):
            skipped.append(
                Skip(
                    name,
                    f"label conflict: {where} says {classes[label]}, {annotated[1]} says "
                    f"{annotated[0]!r} for {match['ytid']}",
                )
            )
        else:
            clips.append(Clip(name, label, split, {"audio": path, "visual": path}))

    matched = n_short - len(unmatched_short)
    for name, where, candidates in unmatched_short:
        if candidates:
            start = SHORT_NAME.match(name)["n"]
            names = ", ".join(p.name for p in candidates)
            kind, why = "ambiguous", f"{len(candidates)} files of its YouTube id, none at second {start}: {names}"
        else:
            kind, why = "missing", "no file of its YouTube id"
        skipped.append(
            Skip(
                name,
                f"{kind}: {name} ({where}), matched by YouTube id: {why} ({matched:,} of "
                f"{n_short:,} such names matched)",
            )
        )
    if not clips:
        raise LayoutError(
            f"{root}: no listed Kinetics-Sounds clip found in {[str(f) for f in folders]} "
            f"({summarize(skipped)})\nExpected:\n{EXPECTS}"
        )
    return Listing(
        classes=classes, clips=sorted(clips, key=lambda c: c.clip_id), skipped=sorted(skipped, key=lambda s: s.clip_id)
    )


def read_classes(path: Path) -> list[str]:
    """The class names in label order from a JSON file: {"labels": [...]} (the BML TPAMI code's KS.json) or a list."""
    data = json.loads(path.read_text())
    names = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f'{path}: expected a JSON list of class names or {{"labels": [...]}}')
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a class name appears twice")
    return names


def _read_split_lists(cfg: dict, classes: list[str], skipped: list[Skip]) -> dict[str, tuple[str, int, str]]:
    """name -> (split, label index, 'file:line') for each usable row of the split lists. A row is `name,...,label`
    (or whitespace-separated); the label is an index into `classes` or a class name."""
    entries: dict[str, tuple[str, int, str]] = {}
    for split, list_name in sorted(cfg["split_lists"].items()):
        path = list_path("kinetics_sounds", list_name)
        for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            fields = [f.strip() for f in (line.split(",") if "," in line else line.split())]
            if not any(fields):
                continue
            where = f"{path.name}:{line_no}"
            if len(fields) < 2:
                raise ValueError(f"{path}:{line_no}: expected 'name,...,label', got {line!r}")
            name, label = fields[0], fields[-1]
            if name in entries:
                raise ValueError(f"{path}:{line_no}: {name} is listed twice (also at {entries[name][2]})")
            if label.isdigit() and int(label) < len(classes):
                entries[name] = (split, int(label), where)
            elif label in classes:
                entries[name] = (split, classes.index(label), where)
            else:
                skipped.append(
                    Skip(
                        name,
                        f"unknown class: label {label!r} ({where}) is not one of the {len(classes)} "
                        "classes of the class list",
                    )
                )
    return entries


def index_videos(folders: list[Path]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """stem -> path and YouTube id -> paths of the Kinetics-named mp4s in `folders` and their immediate subfolders
    (class folders), sorted; a stem found twice keeps its first folder's file."""
    by_stem: dict[str, Path] = {}
    by_ytid: dict[str, list[Path]] = defaultdict(list)
    for folder in folders:
        for path in _mp4s(folder, depth=1):
            match = K400_STEM.match(path.stem)
            if match and path.stem not in by_stem:
                by_stem[path.stem] = path
                by_ytid[match["ytid"]].append(path)
    return by_stem, by_ytid


def _mp4s(folder: Path, depth: int) -> list[Path]:
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and depth > 0:
            found += _mp4s(Path(entry.path), depth - 1)
        elif entry.name.endswith(".mp4"):
            found.append(Path(entry.path))
    return found


def read_annotations(folder: Path) -> dict[str, tuple[str | None, str]]:
    """YouTube id -> (class name or None where the CSV has no label, 'file:line') from the release's CSVs
    (header `label,youtube_id,time_start,time_end,split[,is_cc]`; quoted labels are fine)."""
    found: dict[str, tuple[str | None, str]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.csv")):
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            if "youtube_id" not in (reader.fieldnames or []):
                raise ValueError(
                    f"{path}: expected a header with a youtube_id column (Kinetics' "
                    f"label,youtube_id,time_start,time_end,split), got {reader.fieldnames}"
                )
            for line_no, row in enumerate(reader, start=2):
                label = (row.get("label") or "").strip() or None
                found.setdefault(row["youtube_id"].strip(), (label, f"{folder.name}/{path.name}:{line_no}"))
    return found
