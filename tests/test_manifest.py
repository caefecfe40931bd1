"""The manifest check: every problem of a generated or listed manifest in one message, with its row; nothing
written until the whole manifest is right."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest

import bml.data.adapters as adapters
from bml.data.manifest import MAX_ID, ManifestError, read_manifest, write_manifest
from bml.data.sources import build_manifest
from bml.datasets import Dataset
from bml.layout import Layout

CLASSES = ["cat", "dog", "owl"]
AV = {"audio": "audio", "visual": "frames"}


def row(clip_id: str, path: Path, label="0", split="train", **extra) -> dict:
    return {
        "clip_id": clip_id,
        "label": label,
        "split": split,
        "path_audio": str(path),
        "path_visual": str(path),
    } | extra


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"the manifest check never opens a file, it only asks whether it is there")
    return path


def good_rows(clip: Path) -> list[dict]:
    return [row("b", clip, "1", "train"), row("a", clip, "0", "val"), row("c", clip, "2", "test")]


def test_a_good_manifest_is_written_sorted_and_read_back(tmp_path, clip):
    path = write_manifest(tmp_path / "out", "toy", good_rows(clip), CLASSES, AV)
    rows, meta = read_manifest(path)
    assert [r.clip_id for r in rows] == ["a", "b", "c"] and [r.label for r in rows] == [0, 1, 2]
    assert meta["classes"] == CLASSES and meta["modalities"] == AV
    assert rows[0].paths == {"audio": str(clip), "visual": str(clip)}


def test_every_problem_is_listed_with_its_row_and_nothing_is_written(tmp_path, clip):
    rows = good_rows(clip) + [
        row("b", clip, "1"),  # row 5: repeats row 2
        row("x/y", clip),  # row 6: a path separator
        row("..z", clip),  # row 7: '..'
        row("a" * (MAX_ID + 1), clip),  # row 8: too long for the packed field
        row("d", clip, "cat"),  # row 9: a class name, not an index
        row("e", clip, "3"),  # row 10: outside 0..2
        row("f", clip, "-1"),  # row 11
        row("g", clip, "1.0"),  # row 12: not an integer
        row("h", clip, split="training"),  # row 13
        row("i", tmp_path / "gone.mp4"),  # row 14: missing file
        row("j", clip, start="soon"),  # row 15
        row("k", clip, start="4", end="2"),  # row 16: ends before it starts
    ]
    out = tmp_path / "out"
    with pytest.raises(ManifestError) as error:
        write_manifest(out, "toy", rows, CLASSES, AV)
    message = str(error.value)
    expected = [
        "row 5 ('b'): clip_id repeats row 2",
        "row 6 ('x/y'): clip_id must be letters, digits",
        "row 7 ('..z'): clip_id must be letters, digits",
        f"row 8 ('{'a' * (MAX_ID + 1)}'): clip_id has {MAX_ID + 1} characters; at most {MAX_ID} fit the packed format",
        "row 9 ('d'): label 'cat' is not an integer index into the class list",
        "row 10 ('e'): label 3 is outside the class list (0..2)",
        "row 11 ('f'): label -1 is outside the class list (0..2)",
        "row 12 ('g'): label '1.0' is not an integer index into the class list",
        "row 13 ('h'): split 'training' is not one of ['train', 'val', 'test']",
        f"row 14 ('i'): audio file {tmp_path / 'gone.mp4'} does not exist",
        "row 15 ('j'): start 'soon' is not a number of seconds >= 0",
        "row 16 ('k'): end 2.0 s is not after start 4.0 s",
    ]
    for line in expected:
        assert line in message, line
    assert message.startswith(f"{out / 'manifest.csv'}: ") and "problem(s) in the manifest of 'toy'" in message
    assert not out.exists()


def test_a_split_without_clips_and_a_missing_path_column_are_problems(tmp_path, clip):
    rows = [row("a", clip, split="train"), row("b", clip, split="test") | {"path_visual": ""}]
    with pytest.raises(ManifestError) as error:
        write_manifest(tmp_path / "out", "toy", rows, CLASSES, AV)
    assert "split 'val' has no clip" in str(error.value)
    assert "row 3 ('b'): no file for modality 'visual' (column path_visual)" in str(error.value)


def test_a_flow_folder_is_a_flow_path_and_nothing_else(tmp_path, clip):
    u_dir = tmp_path / "tvl1_flow" / "u" / "v_X_g01_c01"
    u_dir.mkdir(parents=True)
    mods = {"visual": "frames", "flow": "flow"}
    rows = [{**r, "path_flow": str(u_dir)} for r in good_rows(clip)]
    write_manifest(tmp_path / "ok", "ucf", rows, CLASSES, mods)
    rows[0]["path_visual"] = str(u_dir)
    with pytest.raises(ManifestError, match=r"row 2 \('b'\): visual file .*v_X_g01_c01 does not exist"):
        write_manifest(tmp_path / "bad", "ucf", rows, CLASSES, mods)


def test_a_manifest_edited_by_hand_is_refused_when_read(tmp_path, clip):
    path = write_manifest(tmp_path / "out", "toy", good_rows(clip), CLASSES, AV)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    rows[1]["label"], rows[2]["clip_id"] = "dog", rows[0]["clip_id"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ManifestError) as error:
        read_manifest(path)
    assert "row 3 ('b'): label 'dog' is not an integer" in str(error.value)
    assert "row 4 ('a'): clip_id repeats row 2" in str(error.value)


FAKE_ADAPTER = '''
"""A release adapter for the test: one clip per file under the root, and the problems a listing can have."""
from pathlib import Path
from bml.data.adapters import Clip, Listing, Skip

EXPECTS = "<root>/*.mp4"


def list_clips(root: Path, settings: dict) -> Listing:
    files = sorted(root.glob("*.mp4"))
    splits = ("train", "val", "test")
    clips = [Clip(f.stem, i % 2, splits[i % 3], {"audio": f, "visual": f}) for i, f in enumerate(files)]
    clips.append(Clip(files[0].stem, 0, "train", {"audio": files[0], "visual": files[0]}))  # listed twice
    clips.append(Clip("gone", 1, "test", {"audio": root / "gone.mp4", "visual": root / "gone.mp4"}))
    clips.append(Clip("far", 7, "train", {"audio": files[1], "visual": files[1]}))  # no class 7
    return Listing(classes=["no", "yes"], clips=clips, skipped=[Skip("odd", "odd.txt is not a clip")])
'''


def release_dataset(root: Path) -> Dataset:
    return Dataset("fake", "Fake", "a fake release", {"kind": "release", "adapter": "fake", "root": str(root)}, AV, {})


def test_an_adapters_listing_goes_through_the_same_check(tmp_path, monkeypatch):
    (tmp_path / "code" / "fake_release.py").parent.mkdir()
    (tmp_path / "code" / "fake_release.py").write_text(textwrap.dedent(FAKE_ADAPTER))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    monkeypatch.setitem(adapters.ADAPTERS, "fake", "fake_release")
    root = tmp_path / "release"
    root.mkdir()
    for name in ("c1", "c2", "c3"):
        (root / f"{name}.mp4").write_bytes(b"x")
    layout = Layout(data_root=str(tmp_path / "data"))
    with pytest.raises(ManifestError) as error:
        build_manifest(release_dataset(root), layout, log=lambda _: None)
    message = str(error.value)
    assert "4 problem(s) in the manifest of 'fake'" in message
    assert "row 5 ('c1'): clip_id repeats row 2" in message
    assert f"row 6 ('gone'): audio file {root / 'gone.mp4'} does not exist" in message
    assert f"row 6 ('gone'): visual file {root / 'gone.mp4'} does not exist" in message
    assert "row 7 ('far'): label 7 is outside the class list (0..1)" in message
    assert not (tmp_path / "data" / "fake").exists()


def test_a_manifest_saved_with_a_bom_reads_as_without_one(tmp_path, clip):
    """Excel's "CSV UTF-8" and some editors start a file with a byte-order mark: it is accepted, not 39 problems."""
    path = write_manifest(tmp_path / "out", "toy", good_rows(clip), CLASSES, AV)
    plain = read_manifest(path)
    for f in (path, path.with_suffix(".json")):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert read_manifest(path) == plain


def test_a_damaged_manifest_is_one_message_naming_the_file(tmp_path, clip):
    path = write_manifest(tmp_path / "out", "toy", good_rows(clip), CLASSES, AV)
    meta = path.with_suffix(".json")
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])
    with pytest.raises(ManifestError, match=r"manifest\.json: not valid JSON \(.*\); write the manifest again"):
        read_manifest(path)
    meta.write_text("[]")
    with pytest.raises(ManifestError, match=r"manifest\.json: no classes, modalities: not the metadata"):
        read_manifest(path)
    meta.write_text(text)
    path.write_bytes(path.read_bytes().replace(b"train", "tr\xe4in".encode("latin-1")))  # saved as Latin-1
    with pytest.raises(ManifestError, match=r"manifest\.csv: not UTF-8 text \(.* at byte \d+\); save it as CSV UTF-8"):
        read_manifest(path)
