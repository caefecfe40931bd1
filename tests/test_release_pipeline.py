"""Every real dataset's release, as a small tree made at test time with its real names and containers
(tests/release_fixtures/, tests/release_fixtures_ucf/), through the whole data part of the pipeline with the real
`bml` commands (`bml manifest`, `bml extract`, `bml pack`) and a one-epoch `bml train`, in a project folder of its
own whose params/ is a copy of the repository's with the release root, a tiny recipe and a tiny protocol.

Each test checks what a user of that release gets: the manifest's clips, labels and splits; every broken clip in
skipped.tsv exactly once, at the stage that caught it (listing or extraction) and with a reason naming its file
and problem; summary.json's counts; the packed splits' records and shapes; and metrics.json of the training.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import release_fixtures.cremad as cremad_fixture
import release_fixtures.kinetics_sounds as ks_fixture
import release_fixtures.vggsound as vgg_fixture
import release_fixtures_ucf.ave as ave_fixture
import release_fixtures_ucf.ucf101 as ucf_fixture
import yaml
from conftest import REPO, bml_env, run
from release_fixtures import video, wav
from release_fixtures_ucf import undecodable

from bml.data.adapters import LISTS_DIR
from bml.data.pack import open_split

RECIPE = "release_test"  # the tiny recipe each test adds to params/datasets/<dataset>.yaml
PROTOCOL = "release_test"  # the tiny protocol each test writes to params/protocols/
SPLITS = ("train", "val", "test")
# Frames of the tiny recipes: 2 frames of 32 x 32 (the fixture clips are 1-3 s of 32 x 24 video).
FRAMES = {"fps": 2, "frames": 2, "size": 32}
SPAN = {"start": 0.0, "duration": 3.0}
# The spectrogram shape of each real preset, from the "Output:" lines of params/audio_presets.yaml.
AUDIO_SHAPE = {
    "ogm_cremad": (257, 188),
    "ks_fbank": (1024, 128),
    "ogm_vggsound": (129, 626),
    "ave_stft": (257, 1004),
}


# ---- one project, one pipeline run ----------------------------------------------------------------------


def make_project(tmp_path: Path, dataset: str, source: dict, recipe: dict) -> Path:
    """A project folder holding a copy of params/ with `source` as datasets.<dataset> in params.yaml, `recipe` as
    recipe RECIPE of the dataset, and protocol PROTOCOL (embedded's train section, 1 epoch) in a one-cell matrix."""
    project = tmp_path / "project"
    shutil.copytree(REPO / "params", project / "params")
    params_path = project / "params" / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["datasets"] = {dataset: source}
    params["matrices"] = {
        "release": [
            {"dataset": dataset, "protocol": PROTOCOL, "seeds": [0], "runs": [{"method": "joint", "fusion": "concat"}]}
        ]
    }
    params["matrix"] = "release"
    params["evaluation"].update(probe_cs=[0.1, 1.0], probe_max_iter=50)  # as tests/conftest.py's tiny_project
    params["tracking"]["uri"] = "none"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    dataset_path = project / "params" / "datasets" / f"{dataset}.yaml"
    spec = yaml.safe_load(dataset_path.read_text())
    spec["recipes"][RECIPE] = recipe
    dataset_path.write_text(yaml.safe_dump(spec, sort_keys=False))

    protocol = yaml.safe_load((REPO / "params" / "protocols" / "embedded.yaml").read_text())
    protocol["description"] = f"one tiny epoch on the {dataset} fixture (tests/test_release_pipeline.py)"
    protocol["datasets"] = {dataset: {"recipe": RECIPE}}
    frames = min(s["frames"] for s in recipe.values() if isinstance(s, dict) and "frames" in s)
    protocol["train"].update(epochs=1, batch_size=4, probe_every=1, train_frames=frames, eval_frames=frames)
    (project / "params" / "protocols" / f"{PROTOCOL}.yaml").write_text(yaml.safe_dump(protocol, sort_keys=False))
    return project


@dataclass
class Outcome:
    manifest: dict[str, dict]  # clip_id -> manifest.csv row
    classes: list[str]
    listing_skipped: list[dict]  # data/<dataset>/listing_skipped.tsv
    skipped: list[dict]  # data/<dataset>/<recipe>/packed/skipped.tsv
    summary: dict
    packed: dict[str, np.ndarray]  # split -> records (size and sha256 checked by open_split)
    metrics: dict  # metrics.json of the one-epoch run


def read_tsv(path: Path, delimiter: str = "\t") -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def run_pipeline(project: Path, dataset: str) -> Outcome:
    """`bml manifest`, `bml extract`, `bml pack` and `bml train --cell` in `project`, as a user runs them."""
    script = Path(sys.executable).parent / "bml"  # the venv's `bml` entry point (pyproject.toml [project.scripts])
    bml = [str(script)] if script.is_file() else [sys.executable, "-m", "bml.cli"]
    env = {**bml_env(), "MLFLOW_TRACKING_URI": "none"}
    cell = f"{dataset}-{PROTOCOL}-joint-concat-s0"
    for command in (
        ["manifest", "--dataset", dataset],
        ["extract", "--dataset", dataset, "--recipe", RECIPE],
        ["pack", "--dataset", dataset, "--recipe", RECIPE],
        ["train", "--cell", cell, "--device", "cpu", "--threads", "1"],
    ):
        run([*bml, *command], cwd=project, env=env)
    data, recipe_dir = project / "data" / dataset, project / "data" / dataset / RECIPE
    packed = {split: open_split(recipe_dir / "packed", split)[0] for split in SPLITS}
    return Outcome(
        manifest={row["clip_id"]: row for row in read_tsv(data / "manifest.csv", ",")},
        classes=json.loads((data / "manifest.json").read_text())["classes"],
        listing_skipped=read_tsv(data / "listing_skipped.tsv"),
        skipped=read_tsv(recipe_dir / "packed" / "skipped.tsv"),
        summary=json.loads((recipe_dir / "summary.json").read_text()),
        packed=packed,
        metrics=json.loads(
            (project / "results" / dataset / PROTOCOL / "concat" / "joint" / "seed0" / "metrics.json").read_text()
        ),
    )


# ---- what every dataset must satisfy --------------------------------------------------------------------


def check_outcome(
    out: Outcome,
    expected: dict[str, tuple[int, set[str]]],
    listing_broken: dict[str, tuple[str, ...]],
    extract_broken: dict[str, tuple[str, ...]],
    shapes: dict[str, tuple[int, ...]],
) -> None:
    """`expected`: clip_id -> (label, the splits it may be in) of every clip that must be packed;
    `listing_broken` / `extract_broken`: clip_id -> words its reason must hold (its file and its problem);
    `shapes`: modality -> the shape of its packed field."""
    # The manifest: the good clips and the clips only extraction can find broken, with the right labels and splits.
    assert set(out.manifest) == set(expected) | set(extract_broken)
    for clip_id, (label, splits) in expected.items():
        row = out.manifest[clip_id]
        assert int(row["label"]) == label, (clip_id, row["label"], label)
        assert row["split"] in splits, (clip_id, row["split"], splits)
    assert not set(listing_broken) & set(out.manifest)

    # skipped.tsv: each broken clip exactly once, at the stage that caught it, its reason naming file and problem.
    rows_of = Counter(s["clip_id"] for s in out.skipped)
    for stage, broken in (("listing", listing_broken), ("extract", extract_broken)):
        for clip_id, words in broken.items():
            assert rows_of[clip_id] == 1, (clip_id, rows_of[clip_id])
            entry = next(s for s in out.skipped if s["clip_id"] == clip_id)
            assert entry["stage"] == stage, (clip_id, entry)
            for word in words:
                assert word in entry["reason"], (clip_id, word, entry["reason"])
    assert {s["clip_id"] for s in out.skipped if s["stage"] == "extract"} == set(extract_broken)
    assert [s for s in out.skipped if s["stage"] == "listing"] == out.listing_skipped  # pack carries the listing over

    # summary.json counts them.
    packed_ids = {split: [str(c) for c in out.packed[split]["clip_id"]] for split in SPLITS}
    assert out.summary["skipped_by_stage"] == {"listing": len(out.listing_skipped), "extract": len(extract_broken)}
    assert out.summary["n_packed"] == len(expected) == sum(map(len, packed_ids.values()))
    assert out.summary["n_skipped"] == len(rows_of)
    assert out.summary["n_clips"] == len(out.manifest) + len(out.listing_skipped)
    assert out.summary["splits"] == {split: len(ids) for split, ids in packed_ids.items()}

    # The packed splits: every good clip in its manifest split with its label, each modality at the recipe's shape.
    for split in SPLITS:
        records = out.packed[split]
        assert len(records) > 0, split
        assert packed_ids[split] == sorted(c for c in expected if out.manifest[c]["split"] == split)
        assert [int(x) for x in records["label"]] == [int(out.manifest[c]["label"]) for c in packed_ids[split]]
        assert {m: records[m].shape[1:] for m in shapes} == shapes
        for m in shapes:
            values = np.asarray(records[m], dtype=np.float32)
            assert np.isfinite(values).all() and values.std() > 0, (split, m)  # decoded content, not zeros

    # The one-epoch training: finite accuracy and one probe per modality.
    best = out.metrics["test"]["best"]
    assert math.isfinite(best["acc"]) and 0.0 <= best["acc"] <= 100.0
    probes = {key for key in best if key.startswith("probe_")}
    assert probes == {f"probe_{m}" for m in shapes}
    assert all(math.isfinite(best[key]) for key in probes)


def frames_shape(settings: dict, channels: int = 3) -> tuple[int, ...]:
    return (settings["frames"], channels, settings["size"], settings["size"])


# ---- CREMA-D ----------------------------------------------------------------------------------------------

# OGM-GE's label order (params/datasets/cremad.yaml's description: NEU 0, HAP 1, SAD 2, FEA 3, DIS 4, ANG 5).
CREMAD_ORDER = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]


@pytest.mark.slow
def test_cremad_release_through_the_pipeline(tmp_path):
    broken = ("lfs_stub", "empty", "missing_wav", "unknown_label", "unlisted", "no_audio_stream")
    root = cremad_fixture.make_tree(tmp_path / "CREMA-D", broken=broken)
    # Two clips only extraction can find broken (train-list stems of an emotion the good clips do not use):
    # an FLV of bytes no demuxer knows, and an FLV cut to a third (an interrupted download: its header still
    # declares the whole clip).
    spare = [s for s in cremad_fixture.list_stems("train", "SAD") if s not in cremad_fixture.BROKEN.values()]
    garbage, cut = spare[0], spare[1]
    undecodable(root / "VideoFlash" / f"{garbage}.flv")
    flv = video(root / "VideoFlash" / f"{cut}.flv", 1.0, 700, vcodec="flv", acodec="libmp3lame", audio_rate=22050)
    flv.write_bytes(flv.read_bytes()[: flv.stat().st_size // 3])
    for stem in (garbage, cut):
        wav(root / "AudioWAV" / f"{stem}.wav", 1.0, 700, 16000)

    recipe = {"span": SPAN, "audio": {"preset": "ogm_cremad"}, "visual": FRAMES}
    # val_share 0.5: the carve-out is drawn over the list's 6,698 train stems, so a larger share puts some of the
    # fixture's six train stems in val (with split_seed 0: two of them).
    source = {"root": str(root), "val_share": 0.5}
    out = run_pipeline(make_project(tmp_path, "cremad", source, recipe), "cremad")

    assert out.classes == CREMAD_ORDER
    expected = {
        stem: (CREMAD_ORDER.index(stem.split("_")[2]), {"test"} if split == "test" else {"train", "val"})
        for stem, split in cremad_fixture.good_stems().items()
    }
    # An FLV without an audio stream is usable: CREMA-D's audio is read from AudioWAV/, never from the FLV.
    expected[cremad_fixture.BROKEN["no_audio_stream"]] = (CREMAD_ORDER.index("SAD"), {"train", "val"})
    b = cremad_fixture.BROKEN
    listing_broken = {
        b["lfs_stub"]: ("git-lfs pointer stub", f"AudioWAV/{b['lfs_stub']}.wav"),
        b["empty"]: ("empty file", f"VideoFlash/{b['empty']}.flv", "0 bytes"),
        b["missing_wav"]: ("no counterpart", f"VideoFlash/{b['missing_wav']}.flv", f"{b['missing_wav']}.wav"),
        b["unknown_label"]: ("unknown emotion", "'CAL'", b["unknown_label"]),
        b["unlisted"]: ("not in the split lists", b["unlisted"]),
    }
    extract_broken = {
        garbage: (f"VideoFlash/{garbage}.flv", "ffmpeg cannot read it"),
        cut: (f"VideoFlash/{cut}.flv", "truncated or damaged video"),
    }
    shapes = {"audio": AUDIO_SHAPE["ogm_cremad"], "visual": frames_shape(FRAMES)}
    check_outcome(out, expected, listing_broken, extract_broken, shapes)
    assert {out.manifest[s]["split"] for s in expected} == set(SPLITS)  # the carve-out reached the fixture
    # The papers' lists name 7,442 stems; every one not on disk is listed once as missing.
    missing = [s for s in out.listing_skipped if s["reason"].startswith("missing: ")]
    assert len(missing) == 7442 - len(out.manifest) - 3  # 3 listed broken stems are on disk: lfs, empty, missing_wav
    assert all(f"AudioWAV/{s['clip_id']}.wav nor " in s["reason"] for s in missing)


# ---- Kinetics-Sounds --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kinetics_sounds_release_through_the_pipeline(tmp_path):
    broken = ("empty", "no_audio_stream", "replacement", "label_conflict", "ambiguous_test")
    root = ks_fixture.make_tree(tmp_path / "kinetics400", broken=broken)
    recipe = {"span": SPAN, "audio": {"preset": "ks_fbank"}, "visual": FRAMES}
    # val_share 0.2: carved over the list's 14,799 train names; with split_seed 0 two of the fixture's train
    # clips go to val.
    source = {"root": str(root), "val_share": 0.2}
    out = run_pipeline(make_project(tmp_path, "kinetics_sounds", source, recipe), "kinetics_sounds")

    classes = json.loads((LISTS_DIR / "kinetics_sounds" / "classes.json").read_text())
    classes = classes["labels"] if isinstance(classes, dict) else classes
    assert out.classes == classes and len(classes) == 31  # the papers' 31 classes
    allowed = {"train": {"train", "val"}, "test": {"test"}}
    expected = {name: (label, allowed[split]) for name, (split, label) in ks_fixture.good_names().items()}
    # The corrupt train video has a good copy in the replacement archive, which the adapter reads first.
    replaced = ks_fixture.broken_name("replacement")
    expected[replaced] = (ks_fixture.BROKEN["replacement"][1], allowed["train"])
    no_audio = ks_fixture.broken_name("no_audio_stream")
    listing_broken = {
        ks_fixture.broken_name("empty"): ("empty file", f"train/{ks_fixture.broken_name('empty')}.mp4", "0 bytes"),
        ks_fixture.broken_name("label_conflict"): ("label conflict", "'juggling balls'", "annotations/train.csv"),
        ks_fixture.broken_name("ambiguous_test"): ("ambiguous", "none at second"),
    }
    extract_broken = {no_audio: (f"train/{no_audio}.mp4", "no audio stream")}
    shapes = {"audio": AUDIO_SHAPE["ks_fbank"], "visual": frames_shape(FRAMES)}
    check_outcome(out, expected, listing_broken, extract_broken, shapes)
    assert sum(c.startswith("-") for c in out.manifest) == 9  # YouTube ids may start with '-': kept as they are
    assert ks_fixture.REPLACEMENT_DIR in out.manifest[replaced]["path_visual"]
    assert "zzzzzzzzzzz_000000_000010" not in out.manifest  # a Kinetics-400 clip of another class: not listed
    # Test names are `<ytid>_<n>`, matched by YouTube id to a Kinetics-400 val/ file.
    for name, (_, splits) in expected.items():
        if splits == {"test"}:
            assert Path(out.manifest[name]["path_audio"]).name == f"{ks_fixture.k400_stem(name)}.mp4"


# ---- VGGSound ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vggsound_release_through_the_pipeline(tmp_path):
    root = vgg_fixture.make_tree(tmp_path / "VGGSound", broken=vgg_fixture.BROKEN)
    recipe = {"span": SPAN, "audio": {"preset": "ogm_vggsound"}, "visual": FRAMES}
    # n_classes null: the fixture's csv has 5 of the 309 classes. The default val_share (0.1) with split_seed 0
    # carves two downloaded train clips.
    source = {"root": str(root), "n_classes": None}
    out = run_pipeline(make_project(tmp_path, "vggsound", source, recipe), "vggsound")

    classes = sorted(vgg_fixture.CLASSES_CSV_ORDER)  # the dataset authors' loader: sorted class names
    assert out.classes == classes
    clip_id = "{}_{:06d}".format
    allowed = {"train": {"train", "val"}, "test": {"test"}}
    expected = {
        clip_id(ytid, start): (classes.index(label), allowed[split])
        for ytid, start, label, split in vgg_fixture.downloaded()
    }
    extra = vgg_fixture.broken_rows()
    # A repeated csv row: the clip is packed once (its first row) and the repeat is listed as skipped.
    duplicate = clip_id(*extra["duplicate_row"][:2])
    expected[duplicate] = (classes.index("dog barking"), allowed["train"])
    empty, no_audio = clip_id(*extra["empty"][:2]), clip_id(*extra["no_audio_stream"][:2])
    listing_broken = {empty: ("empty file", f"video/{empty}.mp4", "0 bytes")}
    extract_broken = {no_audio: (f"video/{no_audio}.mp4", "no audio stream")}
    shapes = {"audio": AUDIO_SHAPE["ogm_vggsound"], "visual": frames_shape(FRAMES)}
    check_outcome(out, expected, listing_broken, extract_broken, shapes)
    repeat = [s for s in out.skipped if s["clip_id"] == duplicate]
    assert (
        len(repeat) == 1 and repeat[0]["stage"] == "listing" and "duplicate row: vggsound.csv:" in repeat[0]["reason"]
    )
    # Every csv row not on disk is listed once as not downloaded, with its path.
    not_downloaded = {s["clip_id"] for s in out.listing_skipped if s["reason"].startswith("not downloaded: no ")}
    listed = {clip_id(ytid, start) for ytid, start, _, _ in vgg_fixture.rows(vgg_fixture.BROKEN)}
    assert not_downloaded == listed - set(out.manifest) - {empty}


# ---- AVE --------------------------------------------------------------------------------------------------


def ave_id(video_id: str, start: int, end: int, category: str) -> str:
    """The clip id of one AVE event row: video, span and category (runs of other characters as one '_')."""
    words = "".join(ch if ch.isalnum() else " " for ch in category).split()
    return f"{video_id}_{start:02d}_{end:02d}_{'_'.join(words)}"


@pytest.mark.slow
def test_ave_release_through_the_pipeline(tmp_path):
    root = ave_fixture.make_tree(tmp_path / "AVE_Dataset", broken=ave_fixture.BROKEN)
    recipe = {"span": SPAN, "audio": {"preset": "ave_stft"}, "visual": FRAMES}
    out = run_pipeline(make_project(tmp_path, "ave", {"root": str(root)}, recipe), "ave")

    lines = (LISTS_DIR / "ave" / "classes.txt").read_text().splitlines()
    classes = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert out.classes == classes and len(classes) == 28  # AVE's 28 categories
    seconds = 3  # make_tree's default clip length; event i of a class spans i % 2 .. 3 s
    spans = {}  # clip_id -> (label, split, start, end)
    for c, category in enumerate(ave_fixture.FIXTURE_CLASSES):
        for i, split in enumerate(ave_fixture.SPLIT_OF):
            video_id = ave_fixture.video_id(c, i)
            spans[ave_id(video_id, i % 2, seconds, category)] = (classes.index(category), split, i % 2, seconds)
    # A video with two events in different splits and one with two events in train: one clip per event.
    for video_id, category, split, start, end in (
        (ave_fixture.DUP_CROSS, "Male speech, man speaking", "train", 0, 2),
        (ave_fixture.DUP_CROSS, "Female speech, woman speaking", "test", 0, 2),
        (ave_fixture.DUP_SAME, "Violin, fiddle", "train", 0, seconds),
        (ave_fixture.DUP_SAME, "Banjo", "train", 1, seconds),
    ):
        spans[ave_id(video_id, start, end, category)] = (classes.index(category), split, start, end)
    expected = {clip_id: (label, {split}) for clip_id, (label, split, _, _) in spans.items()}
    b = ave_fixture.BROKEN
    listing_broken = {
        ave_id(b["missing"], 0, seconds, "Church bell"): ("trainSet.txt:", f"AVE/{b['missing']}.mp4 is missing"),
        ave_id(b["unknown_class"], 0, seconds, "Didgeridoo"): ("trainSet.txt:", "'Didgeridoo' is not one of the 28"),
        ave_id(b["zero_length"], 0, 0, "Church bell"): ("zero-length event", b["zero_length"]),
        ave_id(b["empty"], 0, seconds, "Church bell"): (f"AVE/{b['empty']}.mp4 is empty (0 bytes)",),
    }
    garbage = ave_id(b["undecodable"], 0, seconds, "Church bell")
    extract_broken = {garbage: (f"AVE/{b['undecodable']}.mp4", "ffmpeg cannot read it")}
    shapes = {"audio": AUDIO_SHAPE["ave_stft"], "visual": frames_shape(FRAMES)}
    check_outcome(out, expected, listing_broken, extract_broken, shapes)
    for clip_id, (_, _, start, end) in spans.items():  # the event's span goes to extraction
        assert (float(out.manifest[clip_id]["start"]), float(out.manifest[clip_id]["end"])) == (start, end)
    # The same video's two events over the same seconds give different records (they differ in label only).
    cross = [
        ave_id(ave_fixture.DUP_CROSS, 0, 2, c) for c in ("Male speech, man speaking", "Female speech, woman speaking")
    ]
    train_rec = out.packed["train"][[str(c) for c in out.packed["train"]["clip_id"]].index(cross[0])]
    test_rec = out.packed["test"][[str(c) for c in out.packed["test"]["clip_id"]].index(cross[1])]
    assert np.array_equal(train_rec["visual"], test_rec["visual"]) and train_rec["label"] != test_rec["label"]


# ---- UCF-101 (RGB + optical flow) -------------------------------------------------------------------------

UCF_RECIPE = {"span": SPAN, "visual": FRAMES, "flow": FRAMES}
UCF_SHAPES = {"visual": frames_shape(FRAMES), "flow": frames_shape(FRAMES, channels=2)}
ZERO_FLOW = 128  # a flow of 0 px as the TV-L1 releases store it: rint((0 + 20) * 255 / 40) (bml/data/flow.py)


def ucf_expected(test_groups: range) -> dict[str, tuple[int, set[str]]]:
    """clip_id -> (label, splits) of the good clips of a tree made with clips_per_group=1: labels are positions in
    the sorted class names (BalanceBenchmark), split 1 tests on groups 1-7, the rest is train or val."""
    classes = sorted(ucf_fixture.CLASS_IND)
    return {
        ucf_fixture.clip_name(cls, g, 1): (classes.index(cls), {"test"} if g in test_groups else {"train", "val"})
        for cls in ucf_fixture.FIXTURE_CLASSES
        for g in ucf_fixture.GROUPS
    }


def check_ucf_splits(out: Outcome) -> None:
    """Val is whole groups carved from train (val_by: group): one group of the four train groups, every class."""
    assert out.classes == sorted(ucf_fixture.CLASS_IND)
    groups = {
        split: {int(c.split("_g")[1][:2]) for c, r in out.manifest.items() if r["split"] == split} for split in SPLITS
    }
    assert groups["test"] == {1} and len(groups["val"]) == 1 and not groups["val"] & groups["train"]


@pytest.mark.slow
def test_ucf101_release_with_farneback_flow_through_the_pipeline(tmp_path):
    broken = ("undecodable", "missing", "unknown_class", "empty")
    root = ucf_fixture.make_tree(tmp_path / "ucf", clips_per_group=1, broken=broken)
    out = run_pipeline(make_project(tmp_path, "ucf101", {"root": str(root)}, UCF_RECIPE), "ucf101")

    b = ucf_fixture.BROKEN
    listing_broken = {
        b["missing"]: ("trainlist01.txt:", f"UCF-101/YoYo/{b['missing']}.avi not found"),
        b["unknown_class"]: ("trainlist01.txt:", "class 'MoonWalking' is not in classInd.txt"),
        b["empty"]: (f"UCF-101/Hammering/{b['empty']}.avi is empty (0 bytes)",),
    }
    extract_broken = {b["undecodable"]: (f"UCF-101/ApplyEyeMakeup/{b['undecodable']}.avi", "ffmpeg cannot read it")}
    check_outcome(out, ucf_expected(ucf_fixture.groups_tested(1)), listing_broken, extract_broken, UCF_SHAPES)
    check_ucf_splits(out)
    # No flow release on disk: flow is computed from the avi (Farneback), and the test pattern moves.
    assert all(row["path_flow"] == row["path_visual"] for row in out.manifest.values())
    assert all((out.packed[split]["flow"] != ZERO_FLOW).any() for split in SPLITS)


@pytest.mark.slow
def test_ucf101_release_with_tvl1_flow_through_the_pipeline(tmp_path):
    root = ucf_fixture.make_tree(tmp_path / "ucf", clips_per_group=1, with_flow=True, broken=("flow_missing",))
    # A clip whose v/ folder lost every flow frame but the first (an interrupted unzip): listing checks frame 1 of
    # u/ and v/ only, so extraction must find it.
    cut = ucf_fixture.clip_name("YoYo", 1, 1)
    for frame in sorted((root / "tvl1_flow" / "v" / cut).glob("frame*.jpg"))[1:]:
        frame.unlink()
    out = run_pipeline(make_project(tmp_path, "ucf101", {"root": str(root)}, UCF_RECIPE), "ucf101")

    missing = ucf_fixture.BROKEN["flow_missing"]
    listing_broken = {missing: ("trainlist01.txt:", f"no precomputed flow tvl1_flow/{{u,v}}/{missing}/frame000001.jpg")}
    extract_broken = {cut: (f"tvl1_flow/v/{cut}/frame", "not found")}
    expected = {c: v for c, v in ucf_expected(ucf_fixture.groups_tested(1)).items() if c not in (cut, missing)}
    check_outcome(out, expected, listing_broken, extract_broken, UCF_SHAPES)
    check_ucf_splits(out)
    # The flow is the release's: its u/ folders (HandstandPushups spelt as the flow release spells it), and the
    # constant flow the fixture wrote, stored as the release stores it: rint((f + 20) * 255 / 40) for f in px.
    for row in out.manifest.values():
        assert Path(row["path_flow"]).parent == root / "tvl1_flow" / "u"
        assert Path(row["path_flow"]).name.lower() == row["clip_id"].lower()
    u_px, v_px = ucf_fixture.FLOW_UV
    stored = [round((f + 20.0) * 255.0 / 40.0) for f in (u_px, v_px)]
    for split in SPLITS:
        flow = out.packed[split]["flow"].astype(int)
        assert np.abs(flow[:, :, 0] - stored[0]).max() <= 1 and np.abs(flow[:, :, 1] - stored[1]).max() <= 1
