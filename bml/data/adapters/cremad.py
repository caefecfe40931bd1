"""CREMA-D (Cao et al., IEEE Trans. Affective Computing 2014) read from its release as users clone it:
`VideoFlash/<stem>.flv` (visual) and `AudioWAV/<stem>.wav` (audio, 16 kHz), stems
`ActorID_Sentence_Emotion_Level`; the label is the emotion in the stem.

Splits: the OGM-GE papers' lists (shipped in bml/data/lists/cremad/) or a stratified split drawn with a
seed; either way a validation part is carved out of train (stratified, seeded) for model selection, so the
test split is never used to pick a checkpoint.

The helpers below the adapter (settings, list paths, git-lfs stubs, stratified picks) are shared by the
Kinetics-Sounds and VGGSound adapters.
"""

from __future__ import annotations

import csv
import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

from bml.data.adapters import LISTS_DIR, Clip, LayoutError, Listing, Skip

EXPECTS = """CREMA-D release (github.com/CheyneyComputerScience/CREMA-D, cloned with git-lfs so the media are real):
  <root>/VideoFlash/<stem>.flv   Flash videos, 7,442 (the visual modality)
  <root>/AudioWAV/<stem>.wav     16 kHz WAVs, 7,442 (the audio modality)
  stem = ActorID_Sentence_Emotion_Level, e.g. 1001_DFA_ANG_XX"""

# OGM-GE's label order (GeWu-Lab/OGM-GE_CVPR2022 dataset/CramedDataset.py, class_dict; the same dict in
# GeWu-Lab/BalanceBenchmark balancemm/datasets/cremad_dataset.py).
CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
# The release's file names (its README, "Filename labeling conventions"): actor 1001-1091, a 3-letter sentence
# code, the emotion, the level (LO, MD, HI or XX for unspecified).
STEM = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>LO|MD|HI|XX)$")
# Clips the release's README names as not matching their file name (github.com/CheyneyComputerScience/CREMA-D
# README.md, notes under "Video Files" and "Audio Files"); all four are in the papers' train list.
KNOWN_BROKEN = {
    "1076_MTI_NEU_XX": "very short, no audio in the FLV",
    "1076_MTI_SAD_XX": "error picture, no audio, very short",
    "1064_TIE_SAD_XX": "the FLV has no duration",
    "1064_IEO_DIS_MD": "one minute long, every emotion of the sentence",
}
DEFAULTS = {
    "adapter": "cremad",
    "root": None,
    "split": "papers",  # "papers": the lists below; "seed": a stratified split of the clips found, by split_seed
    "split_lists": {"train": "train.csv", "test": "test.csv"},  # relative: bml/data/lists/cremad/ first, then cwd
    "test_share": 0.1,  # split "seed" only: share of each emotion sent to test (the papers: 744 of 7,442)
    "val_share": 0.1,  # share of train carved out as val, per emotion
    "split_seed": 0,
    "keep_broken": False,  # True: keep the four clips of KNOWN_BROKEN
}


def list_clips(root: Path, settings: dict) -> Listing:
    """The clips of a CREMA-D release under the configured split, sorted by clip_id."""
    cfg = merged_settings(settings, DEFAULTS, "cremad")
    audio_dir, video_dir = root / "AudioWAV", root / "VideoFlash"
    if not audio_dir.is_dir() and not video_dir.is_dir():
        raise LayoutError(
            f"{root}: not a CREMA-D release: no AudioWAV/ nor VideoFlash/ folder; "
            f"found {folder_summary(root)}\nExpected:\n{EXPECTS}"
        )
    skipped: list[Skip] = []
    wavs = media_files(audio_dir, ".wav", skipped)
    flvs = media_files(video_dir, ".flv", skipped)

    labels: dict[str, int] = {}  # stem -> label, every stem on disk with a valid name
    for stem in sorted(set(wavs) | set(flvs)):
        match = STEM.match(stem)
        if match is None:
            where = ", ".join(str(p[stem][0]) for p in (wavs, flvs) if stem in p)
            skipped.append(Skip(stem, f"unexpected file name: {where} is not ActorID_Sentence_Emotion_Level"))
        elif match["emotion"] not in CLASSES:
            skipped.append(Skip(stem, f"unknown emotion: {match['emotion']!r} in {stem} (known: {', '.join(CLASSES)})"))
        else:
            labels[stem] = CLASSES.index(match["emotion"])

    if cfg["split"] == "papers":
        splits, list_labels = _papers_split(cfg, skipped)
        for stem in sorted(set(labels) - set(splits)):
            skipped.append(Skip(stem, f"not in the split lists: {stem} is on disk, in no list of {cfg['split_lists']}"))
    elif cfg["split"] == "seed":
        list_labels = dict(labels)
        test = stratified_pick(labels, cfg["test_share"], cfg["split_seed"], "test")
        splits = {stem: "test" if stem in test else "train" for stem in labels}
    else:
        raise ValueError(f"cremad settings: split {cfg['split']!r} is not 'papers' or 'seed'")
    if "val" not in splits.values():  # a val list, where given, replaces the carve-out
        carve_val(splits, list_labels, cfg["val_share"], cfg["split_seed"])

    clips = []
    for stem, split in sorted(splits.items()):
        wav, flv = wavs.get(stem), flvs.get(stem)
        if wav is None and flv is None:
            skipped.append(
                Skip(
                    stem, f"missing: {stem} (listed, {split}) has no {audio_dir}/{stem}.wav nor {video_dir}/{stem}.flv"
                )
            )
            continue
        if stem not in labels or stem not in list_labels:  # its file name or list row was already reported
            continue
        if list_labels[stem] != labels[stem]:
            skipped.append(
                Skip(
                    stem,
                    f"label conflict: the {split} list says {CLASSES[list_labels[stem]]}, the file "
                    f"name says {CLASSES[labels[stem]]}",
                )
            )
            continue
        problems = [problem for _, problem in filter(None, (wav, flv)) if problem]
        if flv is None:
            problems.append(f"no counterpart: {wav[0]} has no {video_dir}/{stem}.flv")
        if wav is None:
            problems.append(f"no counterpart: {flv[0]} has no {audio_dir}/{stem}.wav")
        if not problems and stem in KNOWN_BROKEN and not cfg["keep_broken"]:
            problems.append(f"known broken: {KNOWN_BROKEN[stem]} (the release's README); keep_broken: true keeps it")
        if problems:
            skipped.append(Skip(stem, "; ".join(problems)))
            continue
        clips.append(Clip(stem, labels[stem], split, {"audio": wav[0], "visual": flv[0]}))
    if not clips:
        raise LayoutError(f"{root}: no usable CREMA-D clip ({summarize(skipped)})\nExpected:\n{EXPECTS}")
    return Listing(classes=list(CLASSES), clips=clips, skipped=sorted(skipped, key=lambda s: s.clip_id))


def _papers_split(cfg: dict, skipped: list[Skip]) -> tuple[dict[str, str], dict[str, int]]:
    """stem -> split for every row of the split lists, and stem -> label for the rows with a known emotion."""
    splits, list_labels = {}, {}
    for split, name in sorted(cfg["split_lists"].items()):
        path = list_path("cremad", name)
        for line_no, row in read_csv_rows(path):
            if len(row) != 2:
                raise ValueError(f"{path}:{line_no}: expected 'stem,EMOTION', got {','.join(row)!r}")
            stem, emotion = row[0].strip(), row[1].strip()
            if stem in splits:
                raise ValueError(f"{path}:{line_no}: {stem} is listed twice (also in the {splits[stem]} list)")
            splits[stem] = split
            if emotion in CLASSES:
                list_labels[stem] = CLASSES.index(emotion)
            else:
                skipped.append(Skip(stem, f"unknown emotion: {emotion!r} in {path}:{line_no}"))
    return splits, list_labels


# ----------------------------------------------------------------------------------------------------------
# Shared by the release adapters.

# A git-lfs pointer is a few lines of text (CREMA-D's are 130 bytes; git-lfs spec: "version
# https://git-lfs.github.com/spec/v1", "oid sha256:...", "size N"); media files are kilobytes at least.
LFS_POINTER_PREFIX = b"version https://git-lfs"
LFS_POINTER_MAX_BYTES = 1024


def merged_settings(settings: dict, defaults: dict, dataset: str) -> dict:
    """The defaults with `settings` on top; unknown keys are refused (a typo must not silently use a default)."""
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ValueError(f"{dataset} settings: unknown key(s) {unknown}; known keys are {sorted(defaults)}")
    cfg = {**defaults, **settings}
    if not set(cfg.get("split_lists") or {}) <= {"train", "val", "test"}:
        raise ValueError(
            f"{dataset} settings: split_lists keys must be train, val, test; got {sorted(cfg['split_lists'])}"
        )
    for key in ("val_share", "test_share"):
        if key in cfg and not 0 <= float(cfg[key]) < 1:
            raise ValueError(f"{dataset} settings: {key} must be in [0, 1), got {cfg[key]!r}")
    return cfg


def list_path(dataset: str, name: str | Path) -> Path:
    """A list file named in the settings: absolute as given; relative, the shipped bml/data/lists/<dataset>/
    copy first, then the current folder."""
    path = Path(name).expanduser()
    candidates = [path] if path.is_absolute() else [LISTS_DIR / dataset / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(map(str, candidates))
    raise FileNotFoundError(f"{dataset}: list file {str(name)!r} not found (looked for {looked})")


def read_csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row; a byte-order mark and CRLF line ends are accepted."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(field.strip() for field in row)]


def file_problem(path: Path, size: int) -> str | None:
    """Why a media file cannot be used ('kind: details', naming the file), from its size and, for a tiny file, its
    first bytes; None when it may be used."""
    if size == 0:
        return f"empty file: {path} has 0 bytes"
    if size <= LFS_POINTER_MAX_BYTES:
        text = path.read_bytes()[:LFS_POINTER_MAX_BYTES]
        if text.startswith(LFS_POINTER_PREFIX):
            real = re.search(rb"size (\d+)", text)
            real_size = f" (the real file has {int(real[1]):,})" if real else ""
            return (
                f"git-lfs pointer stub: {path} is {size} bytes of text, not media{real_size}; the release was "
                "downloaded without git-lfs (a zip download): clone it with git-lfs installed or run `git lfs pull`"
            )
    return None


def media_files(folder: Path, suffix: str, skipped: list[Skip]) -> dict[str, tuple[Path, str | None]]:
    """stem -> (path, problem or None) of the files with `suffix` in `folder` (sorted; hidden files ignored);
    other files are reported in `skipped`."""
    found: dict[str, tuple[Path, str | None]] = {}
    if not folder.is_dir():
        return found
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_file() and path.suffix == suffix:
            found[path.stem] = (path, file_problem(path, entry.stat().st_size))
        else:
            skipped.append(Skip(path.name, f"unexpected entry {path}: {folder.name}/ holds only *{suffix} files"))
    return found


def stratified_pick(labels: dict[str, int], share: float, seed: int, purpose: str) -> set[str]:
    """round(share * N) ids drawn per class in proportion (largest remainder), by a seeded shuffle of each class's
    sorted ids: the same labels, share and seed always give the same ids."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for clip_id in sorted(labels):
        by_class[labels[clip_id]].append(clip_id)
    exact = {c: share * len(ids) for c, ids in by_class.items()}
    quota = {c: int(e) for c, e in exact.items()}
    remaining = round(share * len(labels)) - sum(quota.values())
    for c in sorted(by_class, key=lambda c: (quota[c] - exact[c], c))[:remaining]:
        quota[c] += 1
    rng = random.Random(f"{purpose}:{seed}")  # a str seed is hashed with SHA-512: stable across runs and versions
    picked: set[str] = set()
    for c in sorted(by_class):
        ids = by_class[c][:]
        rng.shuffle(ids)
        picked.update(ids[: quota[c]])
    return picked


def carve_val(splits: dict[str, str], labels: dict[str, int], share: float, seed: int) -> None:
    """Move a stratified `share` of the train entries to "val" (in place). Drawn over the split list's train
    entries, not over the files found, so val is the same whatever part of the release is on disk."""
    train = {clip_id: labels[clip_id] for clip_id, split in splits.items() if split == "train" and clip_id in labels}
    for clip_id in stratified_pick(train, share, seed, "val"):
        splits[clip_id] = "val"


def summarize(skipped: list[Skip]) -> str:
    """'N skipped: 7442 git-lfs pointer stub, ...': counts by the reason's first clause."""
    kinds = Counter(s.reason.split(":")[0] for s in skipped)
    return (
        f"{len(skipped)} skipped: " + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common(5))
        if kinds
        else "nothing found"
    )


def folder_summary(folder: Path, limit: int = 8) -> str:
    """A few entries of `folder`, for error messages."""
    if not folder.is_dir():
        return "no such folder"
    names = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(folder))
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return (", ".join(names[:limit]) + more) if names else "an empty folder"
