"""AVE release adapter (bml/data/adapters/ave.py) on small AVE_Dataset trees made with the real ffmpeg."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from release_fixtures_ucf import ave as fixture

from bml.data.adapters import LISTS_DIR, LayoutError, list_release
from bml.data.adapters.ave import DEFAULTS, read_classes, read_rows
from bml.data.ffmpeg import MediaError, probe


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Every broken case on; tests must not modify it (copy it first)."""
    return fixture.make_tree(tmp_path_factory.mktemp("ave") / "AVE_Dataset", broken=fixture.BROKEN)


@pytest.fixture(scope="module")
def listing(tree):
    return list_release("ave", tree, {})


def listed_rows(root: Path) -> dict[str, list[list[str]]]:
    """The split lists as plain '&'-split rows, read independently of the adapter."""
    out = {}
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        lines = (root / name).read_text().splitlines()
        out[split] = [ln.split("&") for ln in lines if ln and not ln.startswith(fixture.HEADER)]
    return out


def by_video(listing, video: str):
    return sorted((c for c in listing.clips if c.paths["visual"].stem == video), key=lambda c: c.split)


def test_classes_are_the_28_in_release_order(listing):
    classes = read_classes(LISTS_DIR / "ave" / "classes.txt")
    assert listing.classes == classes and len(classes) == 28 and len(set(classes)) == 28
    # The order of first appearance in Annotations.txt / testSet.txt, not alphabetical.
    assert classes[:3] == ["Church bell", "Male speech, man speaking", "Bark"] and classes != sorted(classes)
    assert {"Violin, fiddle", "Rodents, rats, mice", "Frying (food)"} <= set(classes)


def test_every_good_row_is_a_clip_with_its_label_split_and_span(tree, listing):
    broken_ids = set(fixture.BROKEN.values()) - {fixture.BROKEN["undecodable"]}
    expected = {
        (video, split, listing.classes.index(category), float(start), float(end))
        for split, rows in listed_rows(tree).items()
        for category, video, _, start, end in rows
        if video not in broken_ids
    }
    got = {(c.paths["visual"].stem, c.split, c.label, c.start, c.end) for c in listing.clips}
    assert got == expected
    assert all(
        c.paths["audio"] == c.paths["visual"] == tree / "AVE" / f"{c.paths['visual'].stem}.mp4" for c in listing.clips
    )
    assert all(c.paths["visual"].is_file() for c in listing.clips)


def test_categories_with_commas_are_one_field(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text(f"{fixture.HEADER}\nViolin, fiddle&-GJvu5hr6w4&good&0&10\nRodents, rats, mice&abc&good&2&7\n")
    assert read_rows(path) == [
        (2, ["Violin, fiddle", "-GJvu5hr6w4", "good", "0", "10"]),
        (3, ["Rodents, rats, mice", "abc", "good", "2", "7"]),
    ]


def test_a_video_with_two_events_gives_two_clips(listing):
    cross = by_video(listing, fixture.DUP_CROSS)
    assert [(c.split, listing.classes[c.label]) for c in cross] == [
        ("test", "Female speech, woman speaking"),
        ("train", "Male speech, man speaking"),
    ]
    same = by_video(listing, fixture.DUP_SAME)
    assert {(c.split, listing.classes[c.label], c.start) for c in same} == {
        ("train", "Violin, fiddle", 0.0),
        ("train", "Banjo", 1.0),
    }
    ids = [c.clip_id for c in listing.clips]
    assert len(ids) == len(set(ids)) == len(listing.clips) and ids == sorted(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", i) for i in ids)


def test_duplicates_first_keeps_one_clip_per_video_and_split(tree, listing):
    first = list_release("ave", tree, {"duplicates": "first"})
    same = by_video(first, fixture.DUP_SAME)
    assert [(listing.classes[c.label], c.start) for c in same] == [("Violin, fiddle", 0.0)]
    assert len(by_video(first, fixture.DUP_CROSS)) == 2  # one per split
    (skip,) = [s for s in first.skipped if s.clip_id.startswith(fixture.DUP_SAME)]
    assert "duplicates: first" in skip.reason and "trainSet.txt" in skip.reason
    assert len(first.clips) == len(listing.clips) - 1


def test_cross_split_drop_keeps_test_whole(tree, listing):
    dropped = list_release("ave", tree, {"cross_split": "drop"})
    assert [c.split for c in by_video(dropped, fixture.DUP_CROSS)] == ["test"]
    (skip,) = [s for s in dropped.skipped if s.clip_id.startswith(fixture.DUP_CROSS)]
    assert "also in the test split" in skip.reason
    assert [c for c in dropped.clips if c.split == "test"] == [c for c in listing.clips if c.split == "test"]
    videos_by_split = {}
    for c in dropped.clips:
        videos_by_split.setdefault(c.paths["visual"].stem, set()).add(c.split)
    assert all(len(splits) == 1 for splits in videos_by_split.values())


def test_every_skip_reason(listing):
    reasons = {s.clip_id.split("_")[0]: s.reason for s in listing.skipped}
    assert "zero-length" in reasons[fixture.BROKEN["zero_length"]]
    assert "-missingVid.mp4 is missing" in reasons[fixture.BROKEN["missing"]]
    assert "'Didgeridoo' is not one of the 28" in reasons[fixture.BROKEN["unknown_class"]]
    assert "empty (0 bytes)" in reasons[fixture.BROKEN["empty"]]
    assert all(re.match(r"trainSet\.txt:\d+: ", r) for r in reasons.values())
    assert len(listing.skipped) == 4


def test_an_undecodable_video_is_listed_and_extraction_rejects_it(listing):
    (clip,) = by_video(listing, fixture.BROKEN["undecodable"])  # listing never decodes media
    with pytest.raises(MediaError, match="cannot read"):
        probe(clip.paths["visual"])
    good = next(c for c in listing.clips if c.paths["visual"].stem == fixture.video_id(0, 0))
    info = probe(good.paths["visual"])
    assert info.has_audio and info.has_video and info.duration == pytest.approx(3, abs=0.2)


def test_header_line_is_optional(tree, listing, tmp_path):
    copy = fixture.copy_tree(tree, tmp_path / "copy")
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        (copy / name).write_text(f"{fixture.HEADER}\n" + (copy / name).read_text())
    with_header = list_release("ave", copy, {})
    assert [(c.clip_id, c.split, c.label) for c in with_header.clips] == [
        (c.clip_id, c.split, c.label) for c in listing.clips
    ]


def test_malformed_row_names_file_and_line(tree, tmp_path):
    copy = fixture.copy_tree(tree, tmp_path / "copy")
    n = len((copy / "valSet.txt").read_text().splitlines())
    with (copy / "valSet.txt").open("a") as f:
        f.write("Church bell&abcdefghijk&good&three&10\n")
    with pytest.raises(LayoutError, match=rf"valSet\.txt:{n + 1}: expected 'Category&VideoID"):
        list_release("ave", copy, {})


def test_wrong_root_says_what_was_expected_and_found(tree, tmp_path):
    with pytest.raises(LayoutError) as error:
        list_release("ave", tree / "AVE", {})  # the mp4 folder instead of the dataset folder
    message = str(error.value)
    assert "trainSet.txt" in message and "AVE/<VideoID>.mp4" in message
    assert f"Found: {fixture.BROKEN['undecodable']}.mp4" in message
    with pytest.raises(LayoutError, match="no such folder"):
        list_release("ave", tmp_path / "nowhere", {})
    (tmp_path / "bare" / "AVE").mkdir(parents=True)
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        (tmp_path / "bare" / name).write_text("")
    with pytest.raises(LayoutError, match="holds no .mp4"):
        list_release("ave", tmp_path / "bare", {})


def test_bad_settings_are_refused(tree):
    with pytest.raises(ValueError, match="duplicates"):
        list_release("ave", tree, {"duplicates": "all"})


def test_listing_is_deterministic(tree, listing):
    assert list_release("ave", tree, {}) == listing


def test_params_draft_is_the_adapters_defaults(tree, listing):
    source = yaml.safe_load((REPO / "params" / "datasets" / "ave.yaml").read_text())["source"]
    assert source["adapter"] == "ave" and source["root"] is None
    assert {k: v for k, v in source.items() if k not in ("adapter", "root", "kind")} == DEFAULTS
    assert list_release("ave", tree, source) == listing
