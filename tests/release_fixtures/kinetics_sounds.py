"""A small Kinetics-400 release tree as CVDF ships it: `{train,val,test}/<ytid>_<start:06d>_<end:06d>.mp4`
(H.264 + AAC) and `annotations/{train,val,test}.csv`, with clips named after rows of the papers' Kinetics-Sounds
split lists so the default settings apply. Test names (`<ytid>_<n>`) become Kinetics-400 `val/` files starting
at second n."""

from __future__ import annotations

import csv
from pathlib import Path

from bml.data.adapters import LISTS_DIR
from bml.data.adapters.kinetics_sounds import read_classes

from . import run_jobs, video

AUDIO_RATE = 44100
# Broken cases: (split list, class index, position among that class's sorted rows); class 11 (playing_drums) is
# not among make_tree's default good classes.
BROKEN = {
    "empty": ("train", 11, 0),  # a 0-byte mp4
    "no_audio_stream": ("train", 11, 1),  # video only: listing cannot tell, extraction must
    "replacement": (
        "train",
        11,
        2,
    ),  # corrupt bytes in train/, a good copy in replacement/replacement_for_corrupted_k400/
    "label_conflict": ("train", 11, 3),  # annotations/train.csv calls it "juggling balls"
    "class_folder": ("train", 11, 4),  # in train/<class>/ as cvdfoundation's arrange_by_classes.py leaves it
    "ambiguous_test": ("test", 11, 0),  # two files of its YouTube id, neither at second n
    "test_other_start": ("test", 11, 1),  # one file of its YouTube id, at another second: still matched
}
REPLACEMENT_DIR = "replacement/replacement_for_corrupted_k400"
CLASSES = read_classes(LISTS_DIR / "kinetics_sounds" / "classes.json")


def list_names(split: str, label: int) -> list[str]:
    """The names of one class in the shipped papers' list of `split`, sorted."""
    lines = (LISTS_DIR / "kinetics_sounds" / f"{split}.txt").read_text().splitlines()
    return sorted(row.split(",")[0] for row in lines if row.strip().endswith(f",{label}"))


def broken_name(case: str) -> str:
    split, label, position = BROKEN[case]
    return list_names(split, label)[position]


def good_names(labels: tuple[int, ...] = (0, 4, 27), n_train: int = 2, n_test: int = 1) -> dict[str, tuple[str, int]]:
    """name -> (split, label) of the complete clips `make_tree` writes."""
    return {
        name: (split, label)
        for label in labels
        for split, n in (("train", n_train), ("test", n_test))
        for name in list_names(split, label)[:n]
    }


def k400_stem(test_name: str, shift: int = 0) -> str:
    """The Kinetics-400 stem given to a `<ytid>_<n>` test name: a 10 s clip from second n + shift."""
    ytid, n = test_name[:11], int(test_name[12:]) + shift
    return f"{ytid}_{n:06d}_{n + 10:06d}"


def make_tree(
    root: Path, labels: tuple[int, ...] = (0, 4, 27), n_train: int = 2, n_test: int = 1, broken: tuple[str, ...] = ()
) -> Path:
    """Write the release under `root` (returned): complete clips for `good_names(...)` plus the `broken` cases."""
    unknown = set(broken) - set(BROKEN)
    if unknown:
        raise ValueError(f"unknown broken case(s) {sorted(unknown)}; known: {sorted(BROKEN)}")
    for folder in ("train", "val", "test", "annotations"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    jobs, annotated = [], {"train": [], "val": []}  # K400 split -> (label, stem)

    def mp4(path: Path, tone: float, with_audio: bool = True):
        return lambda: video(
            path, 1.0, tone, vcodec="libx264", acodec="aac" if with_audio else None, audio_rate=AUDIO_RATE
        )

    for i, (name, (split, label)) in enumerate(sorted(good_names(labels, n_train, n_test).items())):
        stem, k400_split = (name, "train") if split == "train" else (k400_stem(name), "val")
        jobs.append(mp4(root / k400_split / f"{stem}.mp4", 200 + 20 * i))
        annotated[k400_split].append((CLASSES[label], stem))
    # A clip of a class outside Kinetics-Sounds, in no list: the adapter must not list it.
    jobs.append(mp4(root / "train" / "zzzzzzzzzzz_000000_000010.mp4", 150))
    annotated["train"].append(("abseiling", "zzzzzzzzzzz_000000_000010"))

    for case in broken:
        name = broken_name(case)
        label_name = CLASSES[BROKEN[case][1]]
        if case == "empty":
            (root / "train" / f"{name}.mp4").write_bytes(b"")
        elif case == "no_audio_stream":
            jobs.append(mp4(root / "train" / f"{name}.mp4", 900, with_audio=False))
        elif case == "replacement":
            (root / "train" / f"{name}.mp4").write_bytes(bytes(range(256)) * 8)  # not an mp4
            jobs.append(mp4(root / REPLACEMENT_DIR / f"{name}.mp4", 900))
        elif case == "label_conflict":
            jobs.append(mp4(root / "train" / f"{name}.mp4", 900))
            label_name = "juggling balls"
        elif case == "class_folder":
            jobs.append(mp4(root / "train" / label_name / f"{name}.mp4", 900))
        elif case == "ambiguous_test":
            jobs += [
                mp4(root / "val" / f"{k400_stem(name, 1)}.mp4", 900),
                mp4(root / "test" / f"{k400_stem(name, 2)}.mp4", 900),
            ]
        elif case == "test_other_start":
            jobs.append(mp4(root / "val" / f"{k400_stem(name, 3)}.mp4", 900))
        if BROKEN[case][0] == "train":
            annotated["train"].append((label_name, name))
    run_jobs(jobs)
    _write_annotations(root / "annotations", annotated)
    return root


def _write_annotations(folder: Path, annotated: dict[str, list[tuple[str, str]]]) -> None:
    """Kinetics-400's CSVs: header `label,youtube_id,time_start,time_end,split,is_cc`, class names with spaces;
    val.csv quotes every field (Kinetics' CSVs come both ways); test.csv has no label column."""
    for split, quoting in (("train", csv.QUOTE_MINIMAL), ("val", csv.QUOTE_NONNUMERIC)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f, quoting=quoting)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
            for label, stem in sorted(annotated[split], key=lambda row: row[1]):
                ytid, start, end = stem[:11], int(stem[12:18]), int(stem[19:25])
                writer.writerow([label.replace("_", " "), ytid, start, end, split, 0])
    (folder / "test.csv").write_text("youtube_id,time_start,time_end,split\nyyyyyyyyyyy,0,10,test\n")
