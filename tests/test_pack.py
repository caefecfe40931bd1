"""Packing: shards joined into splits with every clip packed or listed as skipped, unfinished or stale shards
refused, and packed splits checked on load (size and sha256, once per process)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_extract import AV, SETTINGS, make_clip

import bml.data.pack as pack_module
from bml.data.extract import extract_shard, shard_rows
from bml.data.manifest import read_manifest, read_skipped, write_manifest
from bml.data.pack import PackedDataError, open_split, pack

CLASSES = ["a", "b"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A manifest of 7 clips (one without audio), extracted in 2 shards and packed. Tests copy it to change it."""
    root = tmp_path_factory.mktemp("built")
    good, silent = make_clip(root / "good.mp4", seconds=1.0), make_clip(root / "silent.mp4", seconds=1.0, audio=None)
    splits = ["train", "train", "train", "val", "test", "test", "train"]
    rows = [
        {"clip_id": f"c{i}", "label": str(i % 2), "split": s, "path_audio": str(good), "path_visual": str(good)}
        for i, s in enumerate(splits)
    ]
    rows[2]["path_audio"] = rows[2]["path_visual"] = str(silent)
    manifest = write_manifest(
        root / "data", "toy", rows, CLASSES, AV, [{"clip_id": "x", "stage": "listing", "reason": "x.avi is not listed"}]
    )
    extract_all(manifest, 2)
    pack(manifest, shards(manifest, 2), root / "data" / "packed", root / "data" / "summary.json", log=lambda _: None)
    return root / "data"


def shards(manifest: Path, n: int) -> list[Path]:
    return [manifest.parent / "shards" / f"shard{k}.npy" for k in range(n)]


def extract_all(manifest: Path, n: int) -> None:
    rows, _ = read_manifest(manifest)
    for k, path in enumerate(shards(manifest, n)):
        extract_shard(shard_rows(rows, k, n), AV, SETTINGS, path, log=lambda _: None)


def copy(built: Path, tmp_path: Path) -> Path:
    shutil.copytree(built, tmp_path / "data", symlinks=True)
    return tmp_path / "data"


def test_every_clip_is_packed_or_listed_with_its_reason(built):
    packed = {split: open_split(built / "packed", split)[0] for split in ("train", "val", "test")}
    assert {s: r["clip_id"].tolist() for s, r in packed.items()} == {
        "train": ["c0", "c1", "c6"],
        "val": ["c3"],
        "test": ["c4", "c5"],
    }
    assert packed["train"]["label"].tolist() == [0, 1, 0]
    skipped = read_skipped(built / "packed" / "skipped.tsv")
    assert [(s["clip_id"], s["stage"]) for s in skipped] == [("c2", "extract"), ("x", "listing")]
    assert skipped[0]["reason"].endswith("silent.mp4: no audio stream")
    summary = json.loads((built / "summary.json").read_text())
    assert summary["n_packed"] == 6 and summary["n_skipped"] == 2 and summary["splits"]["train"] == 3
    meta = json.loads((built / "packed" / "train.json").read_text())
    assert meta["size"] == (built / "packed" / "train.npy").stat().st_size and len(meta["sha256"]) == 64


def test_a_truncated_split_is_refused_naming_the_file(built, tmp_path):
    data = copy(built, tmp_path)
    path = data / "packed" / "train.npy"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 1000])
    with pytest.raises(PackedDataError, match=rf"{path}: {size - 1000} bytes, but train.json records {size}"):
        open_split(data / "packed", "train")


def test_a_same_size_corrupted_split_is_refused(built, tmp_path):
    data = copy(built, tmp_path)
    path = data / "packed" / "train.npy"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = bytes(16)
    path.write_bytes(bytes(raw))
    with pytest.raises(PackedDataError, match=rf"{path}: sha256 [0-9a-f]{{12}}\.\.\. differs from [0-9a-f]{{12}}"):
        open_split(data / "packed", "train")


def test_training_never_starts_on_a_damaged_split(built, tmp_path):
    from bml.data.loader import PackedSplit

    data = copy(built, tmp_path)
    PackedSplit(data / "packed", "train", AV, n_frames=2, train=True)  # a good split opens
    raw = bytearray((data / "packed" / "train.npy").read_bytes())
    raw[-5] ^= 0xFF
    (data / "packed" / "train.npy").write_bytes(bytes(raw))
    with pytest.raises(PackedDataError, match="train.npy: sha256"):
        PackedSplit(data / "packed", "train", AV, n_frames=2, train=True)


def test_bad_metadata_and_a_missing_split_are_named(built, tmp_path):
    data = copy(built, tmp_path)
    (data / "packed" / "val.json").write_text("{not json")
    with pytest.raises(PackedDataError, match=r"val\.json: not valid JSON"):
        open_split(data / "packed", "val")
    (data / "packed" / "test.json").write_text(json.dumps({"split": "test"}))
    with pytest.raises(PackedDataError, match=r"test\.json: no size, sha256, dtype"):
        open_split(data / "packed", "test")
    (data / "packed" / "train.npy").unlink()
    with pytest.raises(PackedDataError, match=r"train\.npy: packed split not found"):
        open_split(data / "packed", "train")


def test_the_hash_is_checked_once_per_process(built, tmp_path, monkeypatch):
    data = copy(built, tmp_path)
    hashed = []
    real = pack_module.file_sha256
    monkeypatch.setattr(pack_module, "file_sha256", lambda path: hashed.append(path) or real(path))
    for _ in range(3):
        open_split(data / "packed", "train")
    assert len(hashed) == 1
    path = data / "packed" / "train.npy"
    path.write_bytes(path.read_bytes())  # rewritten (a new mtime): checked again
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**7))  # however coarse the clock
    open_split(data / "packed", "train")
    assert len(hashed) == 2


def test_an_unfinished_or_stale_shard_is_refused(built, tmp_path):
    data = copy(built, tmp_path)
    manifest, out = data / "manifest.csv", data / "packed2"
    (data / "shards" / "shard1.tsv").rename(data / "shards" / "kept.tsv")
    with pytest.raises(PackedDataError, match=r"shard1\.npy: unfinished shard \(no shard1\.tsv\)"):
        pack(manifest, shards(manifest, 2), out, data / "s.json", log=lambda _: None)
    (data / "shards" / "kept.tsv").rename(data / "shards" / "shard1.tsv")

    # shards from another shard count: shard0 of 3 next to shard1 of 2 hold a clip twice
    rows, _ = read_manifest(manifest)
    extract_shard(shard_rows(rows, 0, 3), AV, SETTINGS, data / "shards" / "shard0.npy", log=lambda _: None)
    with pytest.raises(PackedDataError, match=r"shard1\.npy: clip c\d is also in .*shard0\.npy"):
        pack(manifest, shards(manifest, 2), out, data / "s.json", log=lambda _: None)

    # a shard of clips that the manifest no longer has
    rows_now = [
        {
            "clip_id": r.clip_id,
            "label": str(r.label),
            "split": r.split,
            "path_audio": r.paths["audio"],
            "path_visual": r.paths["visual"],
        }
        for r in rows
        if r.clip_id != "c3"
    ]
    rows_now[3]["split"] = "val"
    write_manifest(data, "toy", rows_now, CLASSES, AV)
    with pytest.raises(PackedDataError, match=r"shard0\.npy: clips \['c3'\] are not in the manifest"):
        pack(manifest, shards(manifest, 2), out, data / "s.json", log=lambda _: None)
    assert not out.exists() or not list(out.glob("*.npy"))


def test_a_shard_whose_records_disagree_with_its_status_is_refused(built, tmp_path):
    data = copy(built, tmp_path)
    tsv = data / "shards" / "shard0.tsv"
    tsv.write_text(tsv.read_text().replace("\tok\t", "\tskipped\t", 1))
    with pytest.raises(PackedDataError, match=r"shard0\.npy: shard0\.tsv does not match its records"):
        pack(data / "manifest.csv", shards(data / "manifest.csv", 2), data / "p", data / "s.json", log=lambda _: None)


def test_packing_again_gives_the_same_bytes(built, tmp_path):
    data = copy(built, tmp_path)
    pack(data / "manifest.csv", shards(data / "manifest.csv", 2), data / "again", data / "s.json", log=lambda _: None)
    for split in ("train", "val", "test"):
        assert (data / "again" / f"{split}.npy").read_bytes() == (built / "packed" / f"{split}.npy").read_bytes()
    records = np.load(data / "again" / "train.npy", mmap_mode="r")
    assert records.dtype == open_split(built / "packed", "train")[0].dtype


def test_damaged_packing_files_end_in_bmls_one_line_message(built, tmp_path, capsys):
    """`bml pack` on a truncated shard, a status table that is not one, and packed metadata with a BOM."""
    from bml.cli import main

    data = tmp_path / "data"
    shutil.copytree(built, data / "avdigits", ignore=shutil.ignore_patterns("packed", "shards"))
    shutil.copytree(built / "shards", data / "avdigits" / "embedded" / "shards")  # where the layout puts them
    argv = ["pack", "--dataset", "avdigits", "--recipe", "embedded"]
    argv += ["--overrides", json.dumps({"data_root": str(data), "extract": {"n_shards": 2}})]
    shard = data / "avdigits" / "embedded" / "shards" / "shard0.npy"
    whole = shard.read_bytes()

    def refused() -> str:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    shard.write_bytes(whole[: len(whole) // 2])
    unreadable = r"^bml pack: error: .*shard0\.npy: not a readable shard \(.*\); run its extraction again"
    assert re.search(unreadable, refused())
    shard.write_bytes(whole)
    tsv = shard.with_suffix(".tsv")
    kept = tsv.read_text()
    tsv.write_text("<html>not a table</html>\n")
    assert re.search(r"shard0\.tsv: not the status table extraction writes; run its extraction again", refused())
    tsv.write_text(kept)
    main(argv)
    packed = data / "avdigits" / "embedded" / "packed"
    meta = packed / "val.json"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())  # saved again by an editor that adds a BOM
    assert len(open_split(packed, "val")[0]) == 1
