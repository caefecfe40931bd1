"""The Kinetics-Sounds adapter on a small Kinetics-400 release tree made with the real ffmpeg
(tests/release_fixtures/kinetics_sounds.py)."""

from __future__ import annotations

import json

import pytest
import yaml
from release_fixtures.kinetics_sounds import REPLACEMENT_DIR, broken_name, good_names, k400_stem, make_tree

from bml.config import PARAMS_DIR
from bml.data.adapters import LISTS_DIR, LayoutError, list_release
from bml.data.adapters.cremad import stratified_pick
from bml.data.adapters.kinetics_sounds import DEFAULTS, K400_STEM, SHORT_NAME
from bml.data.ffmpeg import probe

N_TEST_LISTED = 2597  # bml/data/lists/kinetics_sounds/README.md: 14,799 / 2,597


def read_list(split: str) -> dict[str, int]:
    lines = (LISTS_DIR / "kinetics_sounds" / f"{split}.txt").read_text().splitlines()
    return {line.split(",")[0]: int(line.split(",")[2]) for line in lines if line.strip()}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    broken = (
        "empty",
        "no_audio_stream",
        "replacement",
        "label_conflict",
        "class_folder",
        "ambiguous_test",
        "test_other_start",
    )
    return make_tree(tmp_path_factory.mktemp("k400") / "k400", broken=broken)


@pytest.fixture(scope="module")
def listing(release):
    return list_release("kinetics_sounds", release, {})


def clips_by_id(listing):
    return {c.clip_id: c for c in listing.clips}


def reasons(listing) -> dict[str, str]:
    return {s.clip_id: s.reason for s in listing.skipped}


def test_shipped_lists_are_the_papers_split():
    classes = json.loads((LISTS_DIR / "kinetics_sounds" / "classes.json").read_text())["labels"]
    train, test = read_list("train"), read_list("test")
    assert (len(classes), len(train), len(test)) == (31, 14799, N_TEST_LISTED)
    assert classes == sorted(classes)  # alphabetical, as BML_TPAMI2024 code/dataset/KS.json
    assert set(train.values()) == set(test.values()) == set(range(31))
    assert all(K400_STEM.match(name) for name in train) and all(SHORT_NAME.match(name) for name in test)
    assert not {n[:11] for n in train} & {n[:11] for n in test}  # no YouTube video on both sides


def test_classes_and_labels_follow_the_class_list(listing):
    classes = json.loads((LISTS_DIR / "kinetics_sounds" / "classes.json").read_text())["labels"]
    assert listing.classes == classes
    listed = read_list("train") | read_list("test")
    assert listing.clips and all(clip.label == listed[clip.clip_id] for clip in listing.clips)
    positions = {label for _, label in good_names().values()}  # 0, 4, 27: position in the alphabetical list
    assert {listing.classes[i] for i in positions} == {"blowing_nose", "dribbling_basketball", "tap_dancing"}


def test_train_names_match_by_full_name_and_test_names_by_youtube_id(listing, release):
    clips = clips_by_id(listing)
    for name, (split, _) in good_names().items():
        clip = clips[name]
        assert clip.paths["audio"] == clip.paths["visual"]
        if split == "train":
            assert clip.split in ("train", "val") and clip.paths["visual"] == release / "train" / f"{name}.mp4"
        else:
            assert clip.split == "test" and clip.paths["visual"] == release / "val" / f"{k400_stem(name)}.mp4"
    other_start = broken_name("test_other_start")  # its only file starts 3 s later: matched by YouTube id alone
    assert clips[other_start].paths["visual"].name == f"{k400_stem(other_start, 3)}.mp4"
    ambiguous = reasons(listing)[broken_name("ambiguous_test")]
    n_matched = sum(c.split == "test" for c in listing.clips)
    assert ambiguous.startswith("ambiguous: ") and "2 files of its YouTube id, none at second" in ambiguous
    assert f"({n_matched:,} of {N_TEST_LISTED:,} such names matched)" in ambiguous
    missing_test = next(
        r
        for name, r in reasons(listing).items()
        if name in read_list("test") and name not in clips and name != broken_name("ambiguous_test")
    )
    assert missing_test.startswith("missing: ") and "no file of its YouTube id" in missing_test


def test_replacements_and_class_folders_are_found(listing, release):
    clips = clips_by_id(listing)
    replaced = broken_name("replacement")
    assert clips[replaced].paths["visual"] == release / REPLACEMENT_DIR / f"{replaced}.mp4"
    in_class_folder = broken_name("class_folder")
    assert clips[in_class_folder].paths["visual"] == release / "train" / "playing_drums" / f"{in_class_folder}.mp4"


def test_skip_reasons(listing):
    why = reasons(listing)
    assert why[broken_name("empty")].startswith("empty file: ")
    conflict = why[broken_name("label_conflict")]
    assert conflict.startswith("label conflict: ") and "'juggling balls'" in conflict and "playing_drums" in conflict
    missing_train = why["-00nar1nEPc_000033_000043"]
    assert missing_train.startswith("missing: ") and "train.txt:3" in missing_train
    assert "zzzzzzzzzzz_000000_000010" not in clips_by_id(listing) | why  # a Kinetics clip outside the subset
    listed = len(read_list("train")) + N_TEST_LISTED
    assert len(listing.clips) + len(listing.skipped) == listed
    # Listing never decodes media: the mp4 without an audio stream is listed; extraction has to catch it.
    no_audio = clips_by_id(listing)[broken_name("no_audio_stream")]
    assert not probe(no_audio.paths["audio"]).has_audio


def test_annotations_null_turns_the_label_check_off(release):
    listing = list_release("kinetics_sounds", release, {"annotations": None})
    assert broken_name("label_conflict") in clips_by_id(listing)


def test_val_is_a_stratified_deterministic_carve_of_the_train_list(release):
    settings = {"val_share": 0.5, "split_seed": 2}
    listing = list_release("kinetics_sounds", release, settings)
    expected = stratified_pick(read_list("train"), 0.5, 2, "val")
    on_disk = {c.clip_id: c.split for c in listing.clips}
    assert {n for n, s in on_disk.items() if s == "val"} == expected & set(on_disk)
    assert {"train", "val", "test"} == set(on_disk.values())
    assert list_release("kinetics_sounds", release, settings).clips == listing.clips


def test_other_class_and_split_lists(release, tmp_path):
    good = good_names()
    train_name = next(n for n, (s, label) in good.items() if s == "train" and label == 4)
    test_name = next(n for n, (s, _) in good.items() if s == "test")
    (tmp_path / "classes.json").write_text(json.dumps(["dribbling_basketball", "tap_dancing"]))
    (tmp_path / "train.txt").write_text(f"{train_name} dribbling_basketball\n{broken_name('empty')} 7\n")
    (tmp_path / "test.txt").write_text(f"{test_name},10,1\n")
    settings = {
        "classes": str(tmp_path / "classes.json"),
        "split_lists": {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")},
        "val_share": 0.0,
        "annotations": None,
    }
    listing = list_release("kinetics_sounds", release, settings)
    assert listing.classes == ["dribbling_basketball", "tap_dancing"]
    assert {(c.clip_id, c.label, c.split) for c in listing.clips} == {(train_name, 0, "train"), (test_name, 1, "test")}
    assert reasons(listing)[broken_name("empty")].startswith("unknown class: label '7'")


def test_layout_errors(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(LayoutError, match=r"none of the video folders(.|\n)*found videos/(.|\n)*annotations"):
        list_release("kinetics_sounds", tmp_path, {})
    (tmp_path / "train").mkdir()
    with pytest.raises(LayoutError, match=r"no listed Kinetics-Sounds clip found.*17396 skipped: 17396 missing"):
        list_release("kinetics_sounds", tmp_path, {})


def test_params_file_documents_the_adapter_defaults():
    spec = yaml.safe_load((PARAMS_DIR / "datasets" / "kinetics_sounds.yaml").read_text())
    assert {k: v for k, v in spec["source"].items() if k != "kind"} == DEFAULTS
    assert spec["modalities"] == {"audio": {"kind": "audio"}, "visual": {"kind": "frames"}}
    assert "Arandjelović" in spec["description"]
