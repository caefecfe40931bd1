"""UCF-101 release adapter (bml/data/adapters/ucf101.py) on small release trees made with the real ffmpeg."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from release_fixtures_ucf import ucf101 as fixture

from bml.data.adapters import LayoutError, list_release
from bml.data.adapters.ucf101 import DEFAULTS
from bml.data.ffmpeg import MediaError, probe
from bml.data.flow import dequantise_flow, flow_v_dir, read_flow_frames

GOOD = {fixture.clip_name(cls, g, c) for cls in fixture.FIXTURE_CLASSES for g in fixture.GROUPS for c in (1, 2)}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Flow release and every broken case on; tests must not modify it (copy it first)."""
    return fixture.make_tree(tmp_path_factory.mktemp("ucf") / "data", with_flow=True, broken=fixture.BROKEN)


@pytest.fixture(scope="module")
def listing(tree):
    return list_release("ucf101", tree, {})


def group(clip_id: str) -> int:
    return int(re.search(r"_g(\d+)_c", clip_id).group(1))


def copy_lists(tree: Path, dst: Path) -> Path:
    """A tree sharing the videos and flow (symlinks) with its own editable lists."""
    dst.mkdir()
    shutil.copytree(tree / "ucfTrainTestlist", dst / "ucfTrainTestlist")
    for name in ("UCF-101", "tvl1_flow"):
        (dst / name).symlink_to(tree / name)
    return dst


def test_class_order_is_balancebenchmarks_sorted_names_or_classind(tree, listing):
    assert listing.classes == sorted(fixture.CLASS_IND) and len(listing.classes) == 101
    by_classind = list_release("ucf101", tree, {"class_order": "classind"})
    assert by_classind.classes == fixture.CLASS_IND
    # sorted() swaps Hammering/HammerThrow against classInd's numbering: labels must follow the chosen order.
    for lst in (listing, by_classind):
        for clip in lst.clips:
            folder = clip.paths["visual"].parent.name
            assert lst.classes[clip.label] == folder
    ham = next(c for c in listing.clips if c.clip_id.startswith("v_Hammering_"))
    ham_ci = next(c for c in by_classind.clips if c.clip_id == ham.clip_id)
    assert (ham.label, ham_ci.label) == (sorted(fixture.CLASS_IND).index("Hammering"), 34)
    assert ham.label != ham_ci.label


def test_crlf_and_lf_lists_read_the_same(tree, listing, tmp_path):
    assert all("\r" not in name for name in listing.classes)
    copy = copy_lists(tree, tmp_path / "lf")
    for path in (copy / "ucfTrainTestlist").iterdir():
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
    lf = list_release("ucf101", copy, {})
    assert [(c.clip_id, c.label, c.split) for c in lf.clips] == [(c.clip_id, c.label, c.split) for c in listing.clips]
    assert lf.skipped == listing.skipped


def test_split_1_tests_on_groups_1_to_7_and_carves_val_by_group(listing):
    test = {c.clip_id for c in listing.clips if c.split == "test"}
    assert test == {n for n in GOOD if group(n) in fixture.groups_tested(1)}
    val_groups = {group(c.clip_id) for c in listing.clips if c.split == "val"}
    train_groups = {group(c.clip_id) for c in listing.clips if c.split == "train"}
    assert len(val_groups) == 1 and not val_groups & train_groups  # max(1, round(0.1 * 4 groups)) = 1
    assert not (val_groups | train_groups) & set(fixture.groups_tested(1))
    val_labels = {c.label for c in listing.clips if c.split == "val"}
    assert val_labels == {listing.classes.index(name) for name in fixture.FIXTURE_CLASSES}  # every class


@pytest.mark.parametrize("split", [2, 3])
def test_other_official_splits(tree, split):
    lst = list_release("ucf101", tree, {"split": split, "flow_dir": None})
    test = {c.clip_id for c in lst.clips if c.split == "test"}
    assert test == {n for n in GOOD if group(n) in fixture.groups_tested(split)}
    assert {c.clip_id for c in lst.clips if c.split != "test"} == GOOD - test


def test_val_carve_is_deterministic_and_seeded(tree, listing):
    assert list_release("ucf101", tree, {}) == listing
    vals = [
        {c.clip_id for c in list_release("ucf101", tree, {"split_seed": s}).clips if c.split == "val"} for s in range(4)
    ]
    assert len({frozenset(v) for v in vals}) > 1  # the seed picks the groups


def test_val_by_clip_is_stratified(tree):
    lst = list_release("ucf101", tree, {"val_by": "clip", "val_share": 0.25, "flow_dir": None})
    for name in fixture.FIXTURE_CLASSES:
        label = lst.classes.index(name)
        splits = [c.split for c in lst.clips if c.label == label and c.split != "test"]
        assert splits.count("val") == round(0.25 * len(splits))  # 2 of each class's 8 train clips
    none = list_release("ucf101", tree, {"val_share": 0, "flow_dir": None})
    assert not [c for c in none.clips if c.split == "val"]


def test_handstand_pushups_files_and_flow_match_case_insensitively(tree, listing, tmp_path):
    hsp = [c for c in listing.clips if listing.classes[c.label] == "HandstandPushups"]
    assert len(hsp) == 2 * len(fixture.GROUPS)
    for clip in hsp:  # the avi as spelt on disk, the flow folder as spelt in the flow release
        assert clip.clip_id.startswith("v_HandStandPushups_") and clip.paths["visual"].is_file()
        assert clip.paths["flow"].name.startswith("v_HandstandPushups_") and clip.paths["flow"].is_dir()
    copy = copy_lists(tree, tmp_path / "lower")
    for path in (copy / "ucfTrainTestlist").glob("*list0*.txt"):
        path.write_text(path.read_text().replace("HandStandPushups", "HandstandPushups").replace("/v_", "/V_"))
    assert [c.clip_id for c in list_release("ucf101", copy, {}).clips] == [c.clip_id for c in listing.clips]


def test_flow_points_at_the_release_where_present_else_at_the_avi(tree, listing):
    for clip in listing.clips:
        assert clip.paths["flow"].parent == tree / "tvl1_flow" / "u" and flow_v_dir(clip.paths["flow"]).is_dir()
    clip = listing.clips[0]
    flows = dequantise_flow(read_flow_frames(clip.paths["flow"], flow_v_dir(clip.paths["flow"]), [1, 24], 8))
    assert np.abs(flows.mean(axis=(2, 3)) - np.array(fixture.FLOW_UV)).max() <= 0.35
    no_flow = list_release("ucf101", tree, {"flow_dir": None})
    assert all(c.paths["flow"] == c.paths["visual"] for c in no_flow.clips)
    absent = list_release("ucf101", tree, {"flow_dir": "no_such_folder"})
    assert [c.clip_id for c in absent.clips] == [c.clip_id for c in no_flow.clips]


def test_every_skip_reason(listing):
    reasons = {s.clip_id: s.reason for s in listing.skipped}
    assert "UCF-101/YoYo/v_YoYo_g08_c09.avi not found" in reasons[fixture.BROKEN["missing"]]
    assert "class 'MoonWalking' is not in classInd.txt" in reasons[fixture.BROKEN["unknown_class"]]
    assert "empty (0 bytes)" in reasons[fixture.BROKEN["empty"]]
    assert "no precomputed flow tvl1_flow/{u,v}/v_YoYo_g22_c01" in reasons[fixture.BROKEN["flow_missing"]]
    assert "no precomputed flow" in reasons[fixture.BROKEN["undecodable"]]  # the flow release lacks it too
    assert all(re.match(r"trainlist01\.txt:\d+: ", r) for r in reasons.values())
    assert set(reasons) == set(fixture.BROKEN.values())
    assert {c.clip_id for c in listing.clips} == GOOD - {fixture.BROKEN["flow_missing"]}


def test_an_undecodable_avi_is_listed_and_extraction_rejects_it(tree):
    lst = list_release("ucf101", tree, {"flow_dir": None})
    (clip,) = [c for c in lst.clips if c.clip_id == fixture.BROKEN["undecodable"]]
    with pytest.raises(MediaError, match="cannot read"):
        probe(clip.paths["visual"])
    info = probe(next(c for c in lst.clips if c.clip_id != clip.clip_id).paths["visual"])
    assert info.has_video and not info.has_audio and info.fps == fixture.FPS


def test_wrong_root_says_what_was_expected_and_found(tree, tmp_path):
    with pytest.raises(LayoutError) as error:
        list_release("ucf101", tree / "UCF-101", {})
    message = str(error.value)
    assert "ucfTrainTestlist/classInd.txt" in message and "UCF-101/<Class>/v_<Class>_gGG_cCC.avi" in message
    assert "Found: ApplyEyeMakeup/" in message
    copy = copy_lists(tree, tmp_path / "no_split3")
    (copy / "ucfTrainTestlist" / "testlist03.txt").unlink()
    with pytest.raises(LayoutError, match="testlist03.txt"):
        list_release("ucf101", copy, {"split": 3})
    flat = copy_lists(tree, tmp_path / "flat_flow")
    (flat / "tvl1_flow").unlink()
    (flat / "tvl1_flow" / "v_YoYo_g01_c01").mkdir(parents=True)
    with pytest.raises(LayoutError, match="u/ and v/ folders"):
        list_release("ucf101", flat, {})


def test_bad_list_lines_name_file_and_line(tree, tmp_path):
    copy = copy_lists(tree, tmp_path / "bad")
    train = copy / "ucfTrainTestlist" / "trainlist01.txt"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:2] + ["YoYo/v_YoYo_g22_c01.avi 7"] + lines[3:]) + "\n")
    with pytest.raises(LayoutError, match=r"trainlist01\.txt:3: YoYo is number 101 in classInd\.txt"):
        list_release("ucf101", copy, {})
    train.write_text("\n".join(lines[:1] + ["YoYo v_YoYo_g22_c01.avi"] + lines[2:]) + "\n")
    with pytest.raises(LayoutError, match=r"trainlist01\.txt:2: expected"):
        list_release("ucf101", copy, {})


@pytest.mark.parametrize("settings", [{"split": 4}, {"class_order": "alpha"}, {"val_share": 1.0}, {"val_by": "x"}])
def test_bad_settings_are_refused(tree, settings):
    with pytest.raises(ValueError, match="ucf101"):
        list_release("ucf101", tree, settings)


def test_params_draft_is_the_adapters_defaults(tree, listing):
    source = yaml.safe_load((REPO / "params" / "datasets" / "ucf101.yaml").read_text())["source"]
    assert source["adapter"] == "ucf101" and source["root"] is None
    assert {k: v for k, v in source.items() if k not in ("adapter", "root", "kind")} == DEFAULTS
    assert list_release("ucf101", tree, source) == listing
