"""AVE (Tian et al., ECCV 2018, "Audio-Visual Event Localization in Unconstrained Videos") as its users have it:
the AVE_Dataset download (YapengTian/AVE-ECCV18 README), one clip per annotated event row of the released
split lists, audio and frames taken from the event's span of the 10 s video.

Facts of the release, counted on its lists (as copied in haoyi-duan/DG-SCT data/AVE/): Annotations.txt has a
header line and 4,143 rows; trainSet/valSet/testSet.txt have none and 3,339 / 402 / 402 rows, each row also
in Annotations.txt; rows are `Category&VideoID&Quality&StartTime&EndTime` (integer seconds) and category
names hold commas ("Violin, fiddle"), so rows are split on '&' only. 4,097 distinct videos: 45 have two or
three rows, always with different categories (44 over overlapping spans, e.g. male and female speech over the
same seconds), 18 of them in more than one split; one event has zero length (Church bell, VWi2ENBuTbw, 0..0).

What bml does with them: every row is its own clip (id `<VideoID>_<start>_<end>_<category>`), so a video
with two events gives two clips; a zero-length event is skipped with its reason. `duplicates: first` keeps
only each video's first row per split list instead (what PMR's loader does: one sample per video per split);
`cross_split: drop` removes a video from train (and val) when a later split also lists it (test is never
changed), so no footage is shared between splits. Both default to keeping the released lists as they are.

Class order: the 28 categories in their order of first appearance in the release's lists, which PMR's loader
uses (fanyunfeng-bit/Modal-Imbalance-PMR dataset/AVEDataset.py: label = first appearance in testSet.txt) and
which equals the order of Annotations.txt; shipped as bml/data/lists/ave/classes.txt.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bml.data.adapters import LISTS_DIR, Clip, LayoutError, Listing, Skip

EXPECTS = """\
<root>/AVE/<VideoID>.mp4            the 4,097 videos (10 s, H.264 + AAC)
<root>/trainSet.txt, valSet.txt, testSet.txt
                                    rows Category&VideoID&Quality&StartTime&EndTime (3,339 / 402 / 402)
<root>/Annotations.txt              all 4,143 rows (not needed: the split lists hold every row)
(the unpacked AVE_Dataset download of YapengTian/AVE-ECCV18)"""

DEFAULTS = {
    "videos": "AVE",  # folder of <VideoID>.mp4 under the root
    "lists": {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"},
    "classes": None,  # None: bml/data/lists/ave/classes.txt; else a file of category names, one a line
    "duplicates": "keep",  # keep: every row a clip | first: a video's first row per split (PMR's loader)
    "cross_split": "keep",  # keep | drop: a video listed in a later split leaves the earlier (test kept whole)
}
SPLIT_ORDER = ["test", "val", "train"]  # cross_split: drop keeps a video in the first split of this order
HEADER_FIRST_FIELD = "Category"  # Annotations.txt's header: Category&VideoID&Quality&StartTime&EndTime


def read_classes(path: str | Path) -> list[str]:
    """Category names, one a line; '#' lines are comments."""
    names = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a category is listed twice")
    return names


def read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, the 5 fields) of each row of an AVE list; a header line is allowed first."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split("&")]
        if not rows and fields[0] == HEADER_FIRST_FIELD and len(fields) == 5 and not fields[3].isdigit():
            continue
        if len(fields) != 5 or not fields[3].isdigit() or not fields[4].isdigit():
            raise LayoutError(
                f"{path}:{lineno}: expected 'Category&VideoID&Quality&StartTime&EndTime' with "
                f"integer seconds, got {line!r}"
            )
        rows.append((lineno, fields))
    return rows


def clip_id(video_id: str, start: int, end: int, category: str) -> str:
    """File-name-safe id of one event row: unique even when a video has two events over the same span."""
    return f"{video_id}_{start:02d}_{end:02d}_{re.sub(r'[^A-Za-z0-9]+', '_', category).strip('_')}"


def _found(root: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    return ", ".join(entries[:12]) + (f", ... ({len(entries)} entries)" if len(entries) > 12 else "") or "nothing"


def list_clips(root: Path, settings: dict) -> Listing:
    cfg = {**DEFAULTS, **settings, "lists": {**DEFAULTS["lists"], **(settings.get("lists") or {})}}
    if cfg["duplicates"] not in ("keep", "first") or cfg["cross_split"] not in ("keep", "drop"):
        raise ValueError(
            f"ave: duplicates must be keep|first and cross_split keep|drop, got "
            f"{cfg['duplicates']!r} / {cfg['cross_split']!r}"
        )
    root = Path(root)
    videos = root / cfg["videos"]
    lists = {split: root / cfg["lists"][split] for split in ("train", "val", "test")}
    missing = [p for p in [videos, *lists.values()] if not p.exists()]
    if missing:
        raise LayoutError(
            f"{root}: not the AVE release: no {', '.join(p.name for p in missing)}. Expected:\n"
            f"{EXPECTS}\nFound: {_found(root)}"
        )
    on_disk = {e.name: e.stat().st_size for e in os.scandir(videos) if e.name.endswith(".mp4")}
    if not on_disk:
        raise LayoutError(f"{videos}: holds no .mp4 file; expected <VideoID>.mp4 files. Expected:\n{EXPECTS}")
    classes = read_classes(cfg["classes"] or LISTS_DIR / "ave" / "classes.txt")
    label_of = {name: i for i, name in enumerate(classes)}

    skipped: list[Skip] = []
    events: dict[str, list[tuple]] = {}  # split -> (clip id, label, start, end, video, list:line)
    seen_ids: dict[str, str] = {}  # clip id -> list:line that gave it
    for split in SPLIT_ORDER:
        events[split] = []
        seen_videos: dict[str, str] = {}  # video -> list:line of its first clip in this list
        for lineno, (category, video, _quality, start_s, end_s) in read_rows(lists[split]):
            start, end, where = int(start_s), int(end_s), f"{lists[split].name}:{lineno}"
            cid = clip_id(video, start, end, category)
            size = on_disk.get(f"{video}.mp4")
            reason = None
            if category not in label_of:
                reason = f"{where}: category {category!r} is not one of the {len(classes)} AVE classes"
            elif end <= start:
                reason = f"{where}: zero-length event: {video} from {start} s to {end} s"
            elif size is None:
                reason = f"{where}: {cfg['videos']}/{video}.mp4 is missing"
            elif size == 0:
                reason = f"{where}: {cfg['videos']}/{video}.mp4 is empty (0 bytes)"
            elif cid in seen_ids:
                reason = f"{where}: the same event is already listed at {seen_ids[cid]}"
            elif cfg["duplicates"] == "first" and video in seen_videos:
                reason = f"{where}: {video} already gave a clip at {seen_videos[video]} (duplicates: first)"
            if reason:
                skipped.append(Skip(cid, reason))
                continue
            seen_ids[cid] = where
            seen_videos.setdefault(video, where)
            events[split].append((cid, label_of[category], start, end, video, where))

    clips = []
    kept_in: dict[str, str] = {}  # video -> the first split (in SPLIT_ORDER) that kept it
    for split in SPLIT_ORDER:
        for cid, label, start, end, video, where in events[split]:
            earlier = kept_in.get(video)
            if cfg["cross_split"] == "drop" and earlier not in (None, split):
                skipped.append(Skip(cid, f"{where}: {video} is also in the {earlier} split (cross_split: drop)"))
                continue
            kept_in.setdefault(video, split)
            paths = {"audio": videos / f"{video}.mp4", "visual": videos / f"{video}.mp4"}
            clips.append(Clip(cid, label, split, paths, start=float(start), end=float(end)))
    return Listing(
        classes=classes, clips=sorted(clips, key=lambda c: c.clip_id), skipped=sorted(skipped, key=lambda s: s.clip_id)
    )
