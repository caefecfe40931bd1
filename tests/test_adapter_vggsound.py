"""The VGGSound adapter on a small, partly downloaded release made with the real ffmpeg
(tests/release_fixtures/vggsound.py)."""

from __future__ import annotations

import re

import pytest
import yaml
from release_fixtures.vggsound import CLASSES_CSV_ORDER, broken_rows, downloaded, make_tree, rows

from bml.config import PARAMS_DIR
from bml.data.adapters import LayoutError, list_release
from bml.data.adapters.vggsound import DEFAULTS
from bml.data.ffmpeg import probe

SMALL = {"n_classes": 5}  # the fixture's csv has 5 of VGGSound's 309 classes
BROKEN_CASES = ("empty", "no_audio_stream", "duplicate_row")


def clip_id(row) -> str:
    return f"{row[0]}_{row[1]:06d}"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("vggsound") / "VGGSound", broken=BROKEN_CASES)


@pytest.fixture(scope="module")
def listing(release):
    return list_release("vggsound", release, SMALL)


def reasons(listing) -> dict[str, str]:
    return {s.clip_id: s.reason for s in listing.skipped}


def test_label_indices_come_from_the_whole_csv_in_sorted_order(listing):
    assert listing.classes == sorted(CLASSES_CSV_ORDER)  # includes "race car, auto racing", of which nothing is on disk
    labels = {clip_id(r): r[2] for r in rows(BROKEN_CASES)}
    assert listing.clips and all(listing.classes[c.label] == labels[c.clip_id] for c in listing.clips)
    assert "male speech, man speaking" in listing.classes  # a quoted label with a comma, read whole


def test_class_order_can_follow_the_csv_train_rows(release):
    listing = list_release("vggsound", release, {**SMALL, "class_order": "csv_train_order"})
    assert listing.classes == CLASSES_CSV_ORDER
    labels = {clip_id(r): r[2] for r in rows(BROKEN_CASES)}
    assert all(listing.classes[c.label] == labels[c.clip_id] for c in listing.clips)


def test_the_papers_class_count_is_checked(release):
    with pytest.raises(ValueError, match="5 classes, expected 309"):
        list_release("vggsound", release, {})
    assert list_release("vggsound", release, {"n_classes": None}).classes == sorted(CLASSES_CSV_ORDER)


def test_coverage_is_reported_per_split(listing, release):
    found = {c.clip_id for c in listing.clips}
    on_disk = {clip_id(r) for r in downloaded()} | {
        clip_id(broken_rows()[c]) for c in ("no_audio_stream", "duplicate_row")
    }
    assert found == on_disk
    not_downloaded = {n: r for n, r in reasons(listing).items() if r.startswith("not downloaded: ")}
    assert set(not_downloaded) == {clip_id(r) for r in rows(BROKEN_CASES)} - on_disk - {clip_id(broken_rows()["empty"])}
    splits = {c.clip_id: c.split for c in listing.clips}
    for reason in not_downloaded.values():
        split, n_found, n_listed = re.search(r"\((\w+): (\d+) of (\d+) listed clips found\)", reason).groups()
        assert int(n_found) == sum(s == split for s in splits.values())
        assert int(n_found) < int(n_listed)
    assert next(iter(not_downloaded.values())).startswith(f"not downloaded: no {release / 'video'}/")


def test_val_is_carved_from_train_disjoint_and_deterministic(release):
    settings = {**SMALL, "val_share": 0.5, "split_seed": 1}
    first = list_release("vggsound", release, settings)
    assert first.clips == list_release("vggsound", release, settings).clips
    csv_split = {clip_id(r): r[3] for r in rows(BROKEN_CASES)}
    assert {c.split for c in first.clips} == {"train", "val", "test"}
    assert all(csv_split[c.clip_id] == ("test" if c.split == "test" else "train") for c in first.clips)


def test_skip_reasons_and_media_left_to_extraction(listing):
    why = reasons(listing)
    assert why[clip_id(broken_rows()["empty"])].startswith("empty file: ")
    assert why[clip_id(broken_rows()["duplicate_row"])].startswith("duplicate row: vggsound.csv:")
    no_audio = next(c for c in listing.clips if c.clip_id == clip_id(broken_rows()["no_audio_stream"]))
    assert not probe(no_audio.paths["audio"]).has_audio and no_audio.paths["audio"] == no_audio.paths["visual"]


def test_folder_and_file_pattern_are_settings(tmp_path):
    pattern = "{split}/{label}/{ytid}_{start}.mp4"
    release = make_tree(tmp_path / "vgg", video_dir="clips", pattern=pattern)
    listing = list_release("vggsound", release, {**SMALL, "video_dir": "clips", "file_pattern": pattern})
    assert {c.clip_id for c in listing.clips} == {clip_id(r) for r in downloaded()}
    some = listing.clips[0]
    assert some.paths["visual"].relative_to(release / "clips").parts[0] in ("train", "test")
    with pytest.raises(LayoutError, match=r"none of the 30 clips of vggsound.csv found as .*\{ytid\}_\{start:06d\}"):
        list_release("vggsound", release, {**SMALL, "video_dir": "clips"})


def test_malformed_csv_rows_name_their_line(tmp_path):
    (tmp_path / "video").mkdir()
    (tmp_path / "vggsound.csv").write_text("abcdefghijk,10,dog barking,train\nabcdefghijl,ten,dog barking,train\n")
    with pytest.raises(ValueError, match=r"vggsound.csv:2: start seconds 'ten'"):
        list_release("vggsound", tmp_path, {"n_classes": None})
    (tmp_path / "vggsound.csv").write_text("abcdefghijk,10,dog barking,validation\n")
    with pytest.raises(ValueError, match=r"vggsound.csv:1: split 'validation'"):
        list_release("vggsound", tmp_path, {"n_classes": None})


def test_layout_error_without_the_csv(tmp_path):
    (tmp_path / "video").mkdir()
    with pytest.raises(LayoutError, match=r"no .*vggsound.csv; found video/"):
        list_release("vggsound", tmp_path, {})


def test_params_file_documents_the_adapter_defaults():
    spec = yaml.safe_load((PARAMS_DIR / "datasets" / "vggsound.yaml").read_text())
    assert {k: v for k, v in spec["source"].items() if k != "kind"} == DEFAULTS
    assert spec["modalities"] == {"audio": {"kind": "audio"}, "visual": {"kind": "frames"}}
    assert "Chen" in spec["description"]
