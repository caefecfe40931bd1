"""The CREMA-D release adapter on a small release tree made with the real ffmpeg (tests/release_fixtures/cremad.py)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import yaml
from release_fixtures import lfs_stub
from release_fixtures.cremad import BROKEN, good_stems, make_tree

from bml.config import PARAMS_DIR
from bml.data.adapters import LISTS_DIR, LayoutError, list_release
from bml.data.adapters.cremad import CLASSES, DEFAULTS, KNOWN_BROKEN, carve_val, stratified_pick
from bml.data.ffmpeg import probe


def read_list(split: str) -> dict[str, str]:
    lines = (LISTS_DIR / "cremad" / f"{split}.csv").read_text(encoding="utf-8-sig").splitlines()
    return dict(line.split(",") for line in lines if line.strip())


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("cremad") / "CREMA-D", broken=tuple(BROKEN))


@pytest.fixture(scope="module")
def listing(release):
    return list_release("cremad", release, {})


def reasons(listing) -> dict[str, str]:
    return {s.clip_id: s.reason for s in listing.skipped}


def test_shipped_lists_are_the_papers_split():
    train, test = read_list("train"), read_list("test")
    assert (len(train), len(test)) == (6698, 744)  # OGM-GE's lists (bml/data/lists/cremad/README.md)
    assert not set(train) & set(test)
    assert all(stem.split("_")[2] == emotion for stem, emotion in {**train, **test}.items())
    assert set(KNOWN_BROKEN) <= set(train)  # the release's four broken clips are all in the papers' train list
    assert len({stem.split("_")[0] for stem in {**train, **test}}) == 91  # actors 1001-1091


def test_classes_in_ogm_ge_order_and_labels_from_file_names(listing):
    assert listing.classes == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
    assert listing.clips, "no clip listed"
    for clip in listing.clips:
        assert listing.classes[clip.label] == clip.clip_id.split("_")[2]
        assert clip.paths["audio"].name == f"{clip.clip_id}.wav" and clip.paths["audio"].parent.name == "AudioWAV"
        assert clip.paths["visual"].name == f"{clip.clip_id}.flv" and clip.paths["visual"].parent.name == "VideoFlash"
        assert (clip.start, clip.end) == (0.0, None)
    assert [c.clip_id for c in listing.clips] == sorted(c.clip_id for c in listing.clips)


def test_papers_split_puts_each_clip_in_its_list(listing):
    train, test = read_list("train"), read_list("test")
    listed = {c.clip_id: c.split for c in listing.clips}
    assert set(good_stems()) <= set(listed)
    for stem, split in listed.items():
        assert split == "test" if stem in test else split in ("train", "val") and stem in train


def test_val_is_carved_from_train_stratified_and_deterministic():
    train = {stem: CLASSES.index(e) for stem, e in read_list("train").items()}
    splits = dict.fromkeys(train, "train") | dict.fromkeys(read_list("test"), "test")
    carve_val(splits, train | {s: 0 for s in read_list("test")}, 0.1, seed=0)
    val = {s for s, split in splits.items() if split == "val"}
    assert val <= set(train) and len(val) == round(0.1 * len(train))
    per_class, sizes = Counter(train[s] for s in val), Counter(train.values())
    assert all(abs(per_class[c] - 0.1 * sizes[c]) < 1 for c in sizes)  # stratified: within one clip of the share
    assert val == stratified_pick(train, 0.1, 0, "val")  # the same draw again
    assert val != stratified_pick(train, 0.1, 1, "val")  # another seed, another draw


def test_val_on_disk_is_the_list_level_carve(release):
    listing = list_release("cremad", release, {"val_share": 0.5, "split_seed": 3})
    train = {stem: CLASSES.index(e) for stem, e in read_list("train").items()}
    expected_val = stratified_pick(train, 0.5, 3, "val")
    on_disk = {c.clip_id: c.split for c in listing.clips}
    assert {s for s, split in on_disk.items() if split == "val"} == expected_val & set(on_disk)
    assert any(split == "val" for split in on_disk.values()) and any(split == "train" for split in on_disk.values())


def test_seed_split_is_stratified_deterministic_and_disjoint(tmp_path):
    release = make_tree(tmp_path / "CREMA-D", n_train=3, n_test=1)  # 4 clips of each of 3 emotions
    settings = {"split": "seed", "test_share": 0.25, "val_share": 1 / 3, "split_seed": 7}
    first, again = list_release("cremad", release, settings), list_release("cremad", release, settings)
    assert first.clips == again.clips and len(first.clips) == 12
    splits = {c.clip_id: c.split for c in first.clips}
    for emotion in ("NEU", "HAP", "ANG"):  # a quarter to test, a third of the rest to val, in every emotion
        assert sorted(s for stem, s in splits.items() if stem.split("_")[2] == emotion) == [
            "test",
            "train",
            "train",
            "val",
        ]
    others = [list_release("cremad", release, {**settings, "split_seed": seed}).clips for seed in (8, 9)]
    assert any({c.clip_id: c.split for c in other} != splits for other in others)


def test_every_broken_case_is_skipped_with_its_reason(listing, release):
    why = reasons(listing)
    assert why[BROKEN["lfs_stub"]].startswith("git-lfs pointer stub: ") and "git lfs pull" in why[BROKEN["lfs_stub"]]
    assert why[BROKEN["empty"]].startswith("empty file: ") and f"{BROKEN['empty']}.flv" in why[BROKEN["empty"]]
    assert why[BROKEN["missing_flv"]].startswith("no counterpart: ") and ".flv" in why[BROKEN["missing_flv"]]
    assert why[BROKEN["missing_wav"]].startswith("no counterpart: ") and ".wav" in why[BROKEN["missing_wav"]]
    assert why[BROKEN["known_broken"]].startswith("known broken: ")
    assert why[BROKEN["unknown_label"]].startswith("unknown emotion: 'CAL'")
    assert why[BROKEN["unlisted"]].startswith("not in the split lists: ")
    listed_not_on_disk = "1091_WSI_SAD_XX"
    assert why[listed_not_on_disk].startswith("missing: ") and "AudioWAV" in why[listed_not_on_disk]
    assert sum(r.startswith("missing: ") for r in why.values()) == 7442 - len(good_stems()) - 6  # 6 broken listed
    # Listing never decodes media: the FLV without an audio stream is listed; extraction has to catch it.
    no_audio = next(c for c in listing.clips if c.clip_id == BROKEN["no_audio_stream"])
    assert not probe(no_audio.paths["visual"]).has_audio and probe(no_audio.paths["audio"]).has_audio


def test_keep_broken_keeps_the_release_broken_clips(release):
    kept = list_release("cremad", release, {"keep_broken": True})
    assert BROKEN["known_broken"] in {c.clip_id for c in kept.clips}


def test_list_label_conflicting_with_the_file_name_is_skipped(release, tmp_path):
    stem = good_stems()
    stem = next(s for s, split in stem.items() if split == "train" and s.split("_")[2] == "NEU")
    custom = tmp_path / "train.csv"
    custom.write_text(f"{stem},SAD\r\n")
    listing = list_release("cremad", release, {"split_lists": {"train": str(custom), "test": "test.csv"}})
    assert reasons(listing)[stem].startswith("label conflict: the train list says SAD, the file name says NEU")


def test_a_val_list_replaces_the_carve_out(release, tmp_path):
    train = [s for s, split in good_stems().items() if split == "train"]
    (tmp_path / "train.csv").write_text("".join(f"{s},{s.split('_')[2]}\n" for s in train[1:]))
    (tmp_path / "val.csv").write_text(f"{train[0]},{train[0].split('_')[2]}\n")
    lists = {"train": str(tmp_path / "train.csv"), "val": str(tmp_path / "val.csv"), "test": "test.csv"}
    listing = list_release("cremad", release, {"split_lists": lists, "val_share": 0.5})
    assert [c.clip_id for c in listing.clips if c.split == "val"] == [train[0]]
    assert {c.clip_id for c in listing.clips if c.split == "train"} == set(train[1:])
    with pytest.raises(ValueError, match="split_lists keys must be train, val, test"):
        list_release("cremad", release, {"split_lists": {"training": "train.csv"}})


def test_layout_errors_say_what_was_expected_and_found(tmp_path):
    (tmp_path / "AudioMP3").mkdir()
    with pytest.raises(LayoutError, match=r"no AudioWAV/ nor VideoFlash/.*found AudioMP3/(.|\n)*VideoFlash/<stem>.flv"):
        list_release("cremad", tmp_path, {})
    with pytest.raises(LayoutError, match="no such folder"):
        list_release("cremad", tmp_path / "nowhere", {})


def test_a_zip_download_of_stubs_only_is_a_layout_error(tmp_path):
    for stem in ("1001_DFA_ANG_XX", "1001_DFA_HAP_XX"):
        lfs_stub(tmp_path / "AudioWAV" / f"{stem}.wav")
        lfs_stub(tmp_path / "VideoFlash" / f"{stem}.flv", real_size=300_000)
    with pytest.raises(LayoutError, match="no usable CREMA-D clip.*2 git-lfs pointer stub"):
        list_release("cremad", tmp_path, {})


def test_bad_settings_are_refused(release):
    with pytest.raises(ValueError, match="unknown key.*val_shar"):
        list_release("cremad", release, {"val_shar": 0.2})
    with pytest.raises(ValueError, match="val_share must be in"):
        list_release("cremad", release, {"val_share": 1.5})
    with pytest.raises(FileNotFoundError, match="no_such_list.csv"):
        list_release("cremad", release, {"split_lists": {"train": "no_such_list.csv"}})


def test_params_file_documents_the_adapter_defaults():
    spec = yaml.safe_load((PARAMS_DIR / "datasets" / "cremad.yaml").read_text())
    assert {k: v for k, v in spec["source"].items() if k != "kind"} == DEFAULTS
    assert spec["modalities"] == {"audio": {"kind": "audio"}, "visual": {"kind": "frames"}}
    assert "Cao et al." in spec["description"]


def test_check_dataset_probe_sums_up_what_extraction_would_skip(tmp_path, capsys):
    """Missing and empty files are found by the listing; a truncated FLV and a WAV saved under an .flv name pass
    it and are found only by opening the media (--probe). The output sums up by reason; the file lists every clip."""
    from bml.cli import main

    root = make_tree(tmp_path / "CREMA-D", broken=("empty", "missing_flv", "missing_wav", "unknown_label"))
    truncated, mislabelled = sorted(good_stems())[:2]
    flv = root / "VideoFlash" / f"{truncated}.flv"
    flv.write_bytes(flv.read_bytes()[: flv.stat().st_size // 2])
    (root / "VideoFlash" / f"{mislabelled}.flv").write_bytes((root / "AudioWAV" / f"{mislabelled}.wav").read_bytes())
    out = tmp_path / "left_out.tsv"
    argv = ["check-dataset", "cremad", "--root", str(root), "--out", str(out)]

    main(argv)
    listed = capsys.readouterr().out
    by_listing = int(re.search(rf": {len(good_stems())} usable clips .*, (\d+) left out by the listing", listed)[1])
    assert by_listing > 7000  # the tree lacks most of the release: its listed clips are missing

    main([*argv, "--probe", "--workers", "2"])
    run = capsys.readouterr()
    lines = run.out.splitlines()
    assert f": {len(good_stems()) - 2} usable clips" in lines[0] and f", {by_listing + 2} left out" in lines[0]
    assert re.search(r"^\s+\d{4}  missing \(listing\)$", run.out, re.M)
    assert re.search(r"^\s+1  empty file \(listing\)$", run.out, re.M)
    assert re.search(r"^\s+1  truncated or damaged video \(probe \(ogm\)\)$", run.out, re.M)
    assert re.search(r"^\s+1  no video stream \(probe \(ogm\)\)$", run.out, re.M)
    assert re.search(
        rf"e\.g\. {truncated}: .*{truncated}\.flv: truncated or damaged video: decoded \d of the 10", run.out
    )
    assert re.search(r"^\s+2  no counterpart \(listing\)$", run.out, re.M)
    assert lines[-1] == f"every clip left out, with its reason: {out}" and len(lines) < 20
    assert re.search(r"probe: \d+/\d+ clips opened in \d+ s, 2 would be skipped", run.err)
    table = out.read_text().splitlines()
    assert table[0] == "clip_id\tstage\treason" and len(table) == 1 + by_listing + 2
    assert {row.split("\t")[0] for row in table[1:]} >= {truncated, mislabelled, BROKEN["empty"], BROKEN["missing_flv"]}
