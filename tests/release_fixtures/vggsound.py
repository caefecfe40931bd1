"""A small, partly downloaded VGGSound: `vggsound.csv` in the release's form (no header,
`youtube_id,start_seconds,label,split`, start not zero-padded, labels with commas quoted) and some of its clips
as `video/{ytid}_{start:06d}.mp4` (H.264 + AAC), or under another folder and name pattern."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from . import run_jobs, video

AUDIO_RATE = 16000
# Real VGGSound class names (hche11/VGGSound data/stat.csv), in the order their train rows first appear in the csv
# written below; sorted, they are dog barking 0, male speech 1, people marching 2, playing bass guitar 3, race car 4.
CLASSES_CSV_ORDER = [
    "race car, auto racing",
    "people marching",
    "dog barking",
    "male speech, man speaking",
    "playing bass guitar",
]
LISTED = {"train": 4, "test": 2}  # rows per class and split in the csv
DOWNLOADED = {"train": 2, "test": 1}  # of which on disk, for every class but the first (nothing of it downloaded)
BROKEN = ("empty", "no_audio_stream", "duplicate_row")  # on extra train rows of "dog barking"


def youtube_id(label: str, split: str, i: int) -> str:
    """A made-up but valid 11-character YouTube id (base64url alphabet), fixed for (label, split, i)."""
    digest = hashlib.sha256(f"{label}/{split}/{i}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:11]


def rows(broken: tuple[str, ...] = ()) -> list[tuple[str, int, str, str]]:
    """(ytid, start, label, split) of the csv, in file order; `broken` adds its cases' rows at the end."""
    out = []
    for split in ("train", "test"):
        for c, label in enumerate(CLASSES_CSV_ORDER):
            out += [(youtube_id(label, split, i), 7 * c + 30 * i, label, split) for i in range(LISTED[split])]
    extra = broken_rows()
    out += [extra[case] for case in BROKEN if case in broken]
    return out + ([extra["duplicate_row"]] if "duplicate_row" in broken else [])


def broken_rows() -> dict[str, tuple[str, int, str, str]]:
    """case -> its extra train row (class "dog barking")."""
    return {case: (youtube_id("dog barking", "broken", i), 5, "dog barking", "train") for i, case in enumerate(BROKEN)}


def downloaded() -> list[tuple[str, int, str, str]]:
    """The rows whose clip `make_tree` writes (broken cases aside): the first DOWNLOADED[split] rows of each class
    and split, except for the first class."""
    first = {
        (label, split): {youtube_id(label, split, i) for i in range(DOWNLOADED[split])}
        for label in CLASSES_CSV_ORDER[1:]
        for split in DOWNLOADED
    }
    return [row for row in rows() if row[0] in first.get((row[2], row[3]), ())]


def make_tree(
    root: Path, video_dir: str = "video", pattern: str = "{ytid}_{start:06d}.mp4", broken: tuple[str, ...] = ()
) -> Path:
    """Write the csv and the downloaded clips under `root` (returned); `broken` adds cases from BROKEN."""
    unknown = set(broken) - set(BROKEN)
    if unknown:
        raise ValueError(f"unknown broken case(s) {sorted(unknown)}; known: {list(BROKEN)}")
    (root / video_dir).mkdir(parents=True, exist_ok=True)

    def path(row: tuple[str, int, str, str]) -> Path:
        ytid, start, label, split = row
        return root / video_dir / pattern.format(ytid=ytid, start=start, label=label, split=split)

    def mp4(row, tone: float, with_audio: bool = True):
        return lambda: video(
            path(row), 1.0, tone, vcodec="libx264", acodec="aac" if with_audio else None, audio_rate=AUDIO_RATE
        )

    jobs = [mp4(row, 200 + 20 * i) for i, row in enumerate(downloaded())]
    extra = broken_rows()
    if "empty" in broken:
        path(extra["empty"]).parent.mkdir(parents=True, exist_ok=True)
        path(extra["empty"]).write_bytes(b"")
    if "no_audio_stream" in broken:
        jobs.append(mp4(extra["no_audio_stream"], 900, with_audio=False))
    if "duplicate_row" in broken:
        jobs.append(mp4(extra["duplicate_row"], 900))
    run_jobs(jobs)
    # Labels with a comma are quoted, as in the release; "dog barking" is quoted too, as some copies do.
    lines = [f"{ytid},{start},{quote(label)},{split}" for ytid, start, label, split in rows(broken)]
    (root / "vggsound.csv").write_text("\n".join(lines) + "\n")
    return root


def quote(label: str) -> str:
    return f'"{label}"' if "," in label or label == "dog barking" else label
