"""UCF-101 (Soomro, Zamir & Shah, arXiv:1212.0402, 2012) as its users have it: the `UCF101.rar` videos and the
`UCF101TrainTestSplits-RecognitionTask.zip` lists, read under one of the three official splits, with RGB
(`visual`) and optical flow (`flow`) as the two modalities, as in BalanceBenchmark's UCF-101 setting.

Facts of the release (lists as copied in jeffreyyihuang/two-stream-action-recognition UCF_list/): classInd.txt
holds `1 ApplyEyeMakeup` ... `101 YoYo`; trainlist01/02/03.txt hold `Class/v_Class_gGG_cCC.avi <classInd
number>` (9,537 / 9,586 / 9,624 lines) and testlist0N.txt the same paths without a number (3,783 / 3,734 /
3,696); split N tests on groups 7N-6..7N (split 1: groups 1-7), so train and test never share a group. The
HandstandPushups folder holds `v_HandStandPushups_*` files (128 list lines), and the TV-L1 flow release names
those clips `v_HandstandPushups_*` (two-stream-action-recognition renames them to match): bml matches every
folder and file name case-insensitively.

Label order: `class_order: sorted` (default) is BalanceBenchmark's: it reads the names of classInd.txt and
sorts them (balancemm/datasets/ucf101_dataset.py, `self.classes = sorted(classes)`), which swaps two pairs
against classInd's numbering (Hammering/HammerThrow, 35/36, and JumpingJack/JumpRope, 47/48, 1-based);
`class_order: classind` uses classInd's number - 1.

Validation: carved from the split's train list, deterministically (a hash of split_seed and the name, so it
does not depend on the Python or NumPy version). `val_by: group` (default) moves whole groups, the same group
numbers in every class, as the official splits do between train and test: clips of one group share actor and
scene (UCF-101 README), so a clip-level carve would put near-duplicates in train and val. `val_by: clip` moves
round(val_share * n) clips of each class instead.

Flow: where `<root>/<flow_dir>/{u,v}/<clip>/frame000001.jpg` exists (the TV-L1 release of feichtenhofer's
two-stream code, `ucf101_tvl1_flow`), a clip's `flow` path is its u folder (bml.data.flow.flow_v_dir gives
the v folder) and a clip missing from it is skipped, so the flow of one dataset is never a mix of TV-L1 and
Farneback; without that folder it is the avi, and flow is computed at extraction (bml.data.flow).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from bml.data.adapters import Clip, LayoutError, Listing, Skip

EXPECTS = """\
<root>/UCF-101/<Class>/v_<Class>_gGG_cCC.avi     13,320 clips in 101 class folders
<root>/ucfTrainTestlist/classInd.txt             '1 ApplyEyeMakeup' ... '101 YoYo'
<root>/ucfTrainTestlist/trainlist0N.txt, testlist0N.txt   the official splits N = 1, 2, 3
<root>/tvl1_flow/{u,v}/v_<Class>_gGG_cCC/frame000001.jpg  optional: the precomputed TV-L1 flow release"""

DEFAULTS = {
    "videos": "UCF-101",  # folder of class folders under the root
    "lists": "ucfTrainTestlist",  # folder of classInd.txt and the split lists
    "split": 1,  # official split 1, 2 or 3
    "class_order": "sorted",  # sorted: BalanceBenchmark's label order | classind: classInd's number - 1
    "val_share": 0.1,  # share of the train list carved out as val (0: no val)
    "val_by": "group",  # group: whole groups move to val | clip: clips, stratified by class
    "split_seed": 0,  # seeds the val carve
    "flow_dir": "tvl1_flow",  # precomputed flow release under the root, used when present; None: never
}
CLIP_NAME = re.compile(r"^v_(?P<cls>[A-Za-z]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$", re.IGNORECASE)


def read_class_index(path: Path) -> list[str]:
    """classInd.txt -> class names in classInd order (numbers checked to run 1..n)."""
    names = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
            raise LayoutError(f"{path}:{lineno}: expected '<number> <ClassName>' numbered from 1, got {line!r}")
        names.append(parts[1])
    if not names:
        raise LayoutError(f"{path}: no classes")
    return names


def read_split_list(path: Path) -> list[tuple[int, str, str, int | None]]:
    """(line number, class folder, file name, classInd number or None) of each line of a split list."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        folder_file = parts[0].split("/")
        if len(parts) > 2 or len(folder_file) != 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise LayoutError(f"{path}:{lineno}: expected '<Class>/v_<Class>_gGG_cCC.avi [number]', got {line!r}")
        rows.append((lineno, folder_file[0], folder_file[1], int(parts[1]) if len(parts) == 2 else None))
    return rows


def _rank(seed: int, name: str) -> str:
    """A reproducible pseudo-random order, the same on every Python and NumPy version: sort by this key."""
    return hashlib.sha256(f"{seed}/{name}".encode()).hexdigest()


def _listdir_ci(folder: Path) -> dict[str, str]:
    """Lower-cased entry name -> the name on disk."""
    return {e.lower(): e for e in os.listdir(folder)} if folder.is_dir() else {}


def _found(root: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    return ", ".join(entries[:12]) + (f", ... ({len(entries)} entries)" if len(entries) > 12 else "") or "nothing"


def carve_val(train: list[tuple[str, int, int]], share: float, by: str, seed: int) -> set[str]:
    """Clip ids moved from train to val; `train` holds (clip_id, label, group)."""
    if share <= 0 or not train:
        return set()
    if by == "group":  # the same group numbers in every class, at least one group
        groups = sorted({g for _, _, g in train}, key=lambda g: _rank(seed, f"g{g:02d}"))
        chosen = set(groups[: max(1, round(share * len(groups)))])
        return {cid for cid, _, g in train if g in chosen}
    val = set()
    for label in sorted({lab for _, lab, _ in train}):
        ids = sorted((cid for cid, lab, _ in train if lab == label), key=lambda c: _rank(seed, c))
        val.update(ids[: round(share * len(ids))])
    return val


class CaseInsensitiveVideos:
    """Finds a list entry's file under the videos folder, matching folder and file names case-insensitively
    (HandstandPushups/v_HandStandPushups_*); each folder is listed once."""

    def __init__(self, videos: Path):
        self.videos, self.folders, self.files = videos, _listdir_ci(videos), {}

    def find(self, folder: str, name: str) -> Path | None:
        on_disk_folder = self.folders.get(folder.lower())
        if on_disk_folder is None:
            return None
        if folder.lower() not in self.files:
            self.files[folder.lower()] = _listdir_ci(self.videos / on_disk_folder)
        on_disk_name = self.files[folder.lower()].get(name.lower())
        return None if on_disk_name is None else self.videos / on_disk_folder / on_disk_name


class FlowRelease:
    """A precomputed flow release: <flow>/u/<clip>/ and <flow>/v/<clip>/ of frame%06d.jpg, clip names matched
    case-insensitively (the release spells v_HandstandPushups_* what the videos spell v_HandStandPushups_*)."""

    FIRST = "frame000001.jpg"  # the release numbers flow frames from 1 (gpu_flow compute_flow.cpp)

    def __init__(self, folder: Path):
        if not (folder / "u").is_dir() or not (folder / "v").is_dir():
            raise LayoutError(
                f"{folder}: a flow release must hold u/ and v/ folders of per-clip JPEGs "
                f"(u/<clip>/{self.FIRST}); found: {_found(folder)}"
            )
        self.folder, self.clips = folder, {c: _listdir_ci(folder / c) for c in ("u", "v")}

    def u_dir(self, clip: str) -> Path | None:
        """The clip's u folder when both its u and v folders hold flow frame 1."""
        names = {c: self.clips[c].get(clip.lower()) for c in ("u", "v")}
        if any(n is None or not (self.folder / c / n / self.FIRST).is_file() for c, n in names.items()):
            return None
        return self.folder / "u" / names["u"]


def _check(cfg: dict) -> None:
    if cfg["split"] not in (1, 2, 3) or cfg["class_order"] not in ("sorted", "classind"):
        raise ValueError(
            f"ucf101: split must be 1, 2 or 3 and class_order sorted|classind, got {cfg['split']!r} "
            f"/ {cfg['class_order']!r}"
        )
    if not 0 <= cfg["val_share"] < 1 or cfg["val_by"] not in ("group", "clip"):
        raise ValueError(
            f"ucf101: val_share must be in [0, 1) and val_by group|clip, got {cfg['val_share']!r} / {cfg['val_by']!r}"
        )


def list_clips(root: Path, settings: dict) -> Listing:
    cfg = {**DEFAULTS, **settings}
    _check(cfg)
    root = Path(root)
    videos, lists = root / cfg["videos"], root / cfg["lists"]
    split_files = {"test": lists / f"testlist0{cfg['split']}.txt", "train": lists / f"trainlist0{cfg['split']}.txt"}
    missing = [
        str(p.relative_to(root)) for p in (videos, lists / "classInd.txt", *split_files.values()) if not p.exists()
    ]
    if missing:
        raise LayoutError(
            f"{root}: not the UCF-101 release: no {', '.join(missing)}. Expected:\n{EXPECTS}\nFound: {_found(root)}"
        )
    class_ind = read_class_index(lists / "classInd.txt")
    classes = sorted(class_ind) if cfg["class_order"] == "sorted" else list(class_ind)
    label_of = {name.lower(): classes.index(name) for name in class_ind}
    number_of = {name.lower(): i + 1 for i, name in enumerate(class_ind)}
    finder = CaseInsensitiveVideos(videos)
    flow_root = root / cfg["flow_dir"] if cfg["flow_dir"] else None
    flow = FlowRelease(flow_root) if flow_root is not None and flow_root.is_dir() else None

    skipped, kept, seen = [], {"test": [], "train": []}, set()
    for split, path in split_files.items():  # test first: a clip listed in both stays in test
        for lineno, folder, name, number in read_split_list(path):
            match, where = CLIP_NAME.match(name), f"{path.name}:{lineno}"
            if not match:
                raise LayoutError(f"{path}:{lineno}: {name!r} is not a UCF-101 clip name (v_<Class>_gGG_cCC.avi)")
            if folder.lower() in number_of and number not in (None, number_of[folder.lower()]):
                raise LayoutError(
                    f"{path}:{lineno}: {folder} is number {number_of[folder.lower()]} in "
                    f"classInd.txt, the line says {number}"
                )
            avi = finder.find(folder, name)
            cid = avi.stem if avi is not None else Path(name).stem
            flow_path = flow.u_dir(cid) if flow is not None and avi is not None else avi  # None: not released
            if folder.lower() not in label_of:
                reason = f"{where}: class {folder!r} is not in classInd.txt"
            elif avi is None:
                reason = f"{where}: {cfg['videos']}/{folder}/{name} not found"
            elif avi.stat().st_size == 0:
                reason = f"{where}: {avi.relative_to(root)} is empty (0 bytes)"
            elif cid.lower() in seen:
                reason = f"{where}: {name} is listed twice (test list read first)"
            elif flow_path is None:
                reason = f"{where}: no precomputed flow {cfg['flow_dir']}/{{u,v}}/{cid}/{FlowRelease.FIRST}"
            else:
                reason = None
            if reason:
                skipped.append(Skip(cid, reason))
                continue
            seen.add(cid.lower())
            kept[split].append((cid, label_of[folder.lower()], int(match["group"]), avi, flow_path))

    val = carve_val(
        [(cid, label, group) for cid, label, group, _, _ in kept["train"]],
        cfg["val_share"],
        cfg["val_by"],
        cfg["split_seed"],
    )
    clips = [
        Clip(cid, label, "val" if cid in val else split, {"visual": avi, "flow": flow_path})
        for split in ("train", "test")
        for cid, label, _, avi, flow_path in kept[split]
    ]
    return Listing(
        classes=classes, clips=sorted(clips, key=lambda c: c.clip_id), skipped=sorted(skipped, key=lambda s: s.clip_id)
    )
