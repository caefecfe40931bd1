"""A small AVE_Dataset tree: AVE/<VideoID>.mp4 (H.264 + AAC, as released), Annotations.txt with its header
line, and trainSet/valSet/testSet.txt rows `Category&VideoID&Quality&StartTime&EndTime` (LF, no header, as
released), including a video with two events in different splits and one with two events in one split."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import encode_segments, undecodable, write_lines

# Categories with commas and one without, as the release spells them.
FIXTURE_CLASSES = ("Church bell", "Male speech, man speaking", "Violin, fiddle", "Banjo")
SPLIT_OF = ["train", "val", "test"]  # i-th clip of a class goes to SPLIT_OF[i] (later ones to train)
# Videos with two events, as 45 real videos have (ids are 11 characters like YouTube's).
DUP_CROSS = "-dupXsplit1"  # male speech in train, female speech over the same seconds in test
DUP_SAME = "_dupSame_02"  # violin and banjo events, both in train
BROKEN = {  # case -> the video id of the row that shows it (all rows in trainSet.txt)
    "undecodable": "-brokenBits",  # mp4 of garbage bytes (listing keeps it; extraction's probe rejects it)
    "missing": "-missingVid",  # listed, no mp4
    "unknown_class": "-unknownCls",  # category not among the 28
    "zero_length": "-zeroLength",  # StartTime == EndTime, as the release's VWi2ENBuTbw row (0&0)
    "empty": "-emptyFile0",  # mp4 of 0 bytes
}
HEADER = "Category&VideoID&Quality&StartTime&EndTime"


def video_id(c: int, i: int) -> str:
    """The fixture's 11-character id of clip i of class c."""
    return f"v{c:02d}x{i:02d}-_AbC"


def make_tree(
    root: Path,
    classes: Sequence[str] = FIXTURE_CLASSES,
    per_class: int = 3,
    seconds: int = 3,
    header: bool = False,
    broken: Iterable[str] = (),
) -> Path:
    """Write the tree under root; returns root. `header` also puts the header line on the split lists."""
    broken = set(broken)
    if broken - set(BROKEN):
        raise ValueError(f"unknown broken cases {sorted(broken - set(BROKEN))}; choose from {sorted(BROKEN)}")
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    encode: list[str] = []  # video ids that get a real mp4
    for c, category in enumerate(classes):
        for i in range(per_class):
            vid = video_id(c, i)
            rows[SPLIT_OF[i] if i < len(SPLIT_OF) else "train"].append(f"{category}&{vid}&good&{i % 2}&{seconds}")
            encode.append(vid)
    rows["train"].append(f"Male speech, man speaking&{DUP_CROSS}&good&0&2")
    rows["test"].append(f"Female speech, woman speaking&{DUP_CROSS}&good&0&2")
    rows["train"].append(f"Violin, fiddle&{DUP_SAME}&good&0&{seconds}")
    rows["train"].append(f"Banjo&{DUP_SAME}&good&1&{seconds}")
    encode += [DUP_CROSS, DUP_SAME]
    bad = {
        "undecodable": classes[0],
        "missing": classes[0],
        "unknown_class": "Didgeridoo",
        "zero_length": classes[0],
        "empty": classes[0],
    }
    for case in sorted(broken):
        span = "0&0" if case == "zero_length" else f"0&{seconds}"
        rows["train"].append(f"{bad[case]}&{BROKEN[case]}&good&{span}")
    if broken & {"unknown_class", "zero_length"}:
        encode += [BROKEN[c] for c in ("unknown_class", "zero_length") if c in broken]

    videos = root / "AVE"
    encode_segments(
        [videos / f"{vid}.mp4" for vid in encode],
        seconds,
        video=["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
        audio=["-c:a", "aac", "-b:a", "32k"],
        fps=10,
    )
    if "undecodable" in broken:
        undecodable(videos / f"{BROKEN['undecodable']}.mp4")
    if "empty" in broken:
        (videos / f"{BROKEN['empty']}.mp4").write_bytes(b"")
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        write_lines(root / name, ([HEADER] if header else []) + rows[split], crlf=False)
    write_lines(root / "Annotations.txt", [HEADER] + rows["train"] + rows["val"] + rows["test"], crlf=False)
    return root


def copy_tree(src: Path, dst: Path) -> Path:
    """A copy a test may edit (the clips are a few kB each)."""
    shutil.copytree(src, dst)
    return dst
