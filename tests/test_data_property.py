"""Property: whatever the manifest and however broken its files, the data path (manifest -> extract_shard ->
pack) packs every clip or lists it in skipped.tsv with a reason, never both, never neither, never with a
traceback, and never removes a finished output. A manifest with problems is refused whole, naming each.

Hypothesis draws manifests over a pool of real media files made once by ffmpeg (good ones and broken
ones: corrupted in the middle, truncated, truncated with the index first, without audio, empty, not media,
deleted after the manifest was written), with spans, shard counts and a rerun of one shard.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_extract import AV, SETTINGS, corrupt_middle, make_clip, truncate

from bml.data.extract import extract_shard, shard_rows
from bml.data.manifest import MAX_ID, SPLITS, ManifestError, read_manifest, read_skipped, write_manifest
from bml.data.pack import PackedDataError, pack

CLASSES = ["zero", "one", "two"]
GOOD = {"good3s": 3.0, "good1s": 1.5, "good2s": 2.0}  # kind -> duration (s)
BROKEN = ["corrupt", "truncated", "truncated_faststart", "silent", "empty", "text", "vanishes"]
DEFECTS = ["duplicate", "separator", "dotdot", "too_long", "label_name", "label_outside", "split", "missing_file"]
EXAMPLES = 300  # ~0.2 s each on the project's 2-core machine
CASES: list[str] = []  # what each generated case was, for the count


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pool")
    files = {name: make_clip(d / f"{name}.mp4", seconds=seconds) for name, seconds in GOOD.items()}
    files["corrupt"] = corrupt_middle(make_clip(d / "big.mp4", size=96, gop=10), d / "corrupt.mp4")
    files["truncated"] = truncate(files["good3s"], d / "truncated.mp4")
    files["truncated_faststart"] = truncate(make_clip(d / "fs.mp4", faststart=True), d / "truncated_faststart.mp4")
    files["silent"] = make_clip(d / "silent.mp4", seconds=1.0, audio=None)
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("these are notes, not a video\n")
    files["empty"], files["text"], files["vanishes"] = d / "empty.mp4", d / "notes.mp4", files["good1s"]
    return files


clip_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,15}", fullmatch=True).filter(lambda s: ".." not in s)


@st.composite
def cases(draw) -> dict:
    n = draw(st.integers(3, 9))
    return {
        "ids": draw(st.lists(clip_ids, min_size=n, max_size=n, unique=True)),
        "kinds": draw(st.lists(st.sampled_from(list(GOOD) * 5 + BROKEN), min_size=n, max_size=n)),
        "labels": draw(st.lists(st.integers(0, len(CLASSES) - 1), min_size=n, max_size=n)),
        "as_text": draw(st.booleans()),  # labels as the CSV's strings or as an adapter's ints
        "splits": ["train", "val", "test"]
        + draw(st.lists(st.sampled_from(["train", "val", "test"]), min_size=n - 3, max_size=n - 3)),
        "starts": draw(st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.5, 1.0, 5.0]), min_size=n, max_size=n)),
        "defects": draw(st.lists(st.tuples(st.sampled_from(DEFECTS), st.integers(0, n - 1)), max_size=2))
        if draw(st.integers(0, 3)) == 0
        else [],  # a quarter of the manifests have problems
        "n_shards": draw(st.integers(1, 3)),
        "rerun": draw(st.integers(-1, 2)),  # a shard extracted again after packing (-1: none)
    }


def manifest_rows(case: dict, pool: dict[str, Path], work: Path) -> tuple[list[dict], dict[int, str]]:
    """Rows of the case, each clip's own copy of its file (so deleting one touches no other), and the problem
    each defect makes, by row index."""
    rows, problems = [], {}
    for i, (cid, kind) in enumerate(zip(case["ids"], case["kinds"], strict=True)):
        path = work / "media" / f"{i}_{pool[kind].name}"
        shutil.copyfile(pool[kind], path)
        label = case["labels"][i] if not case["as_text"] else str(case["labels"][i])
        rows.append(
            {
                "clip_id": cid,
                "label": label,
                "split": case["splits"][i],
                "start": case["starts"][i],
                "end": "",
                "path_audio": str(path),
                "path_visual": str(path),
            }
        )
    for defect, i in case["defects"]:
        if i in problems or (defect == "duplicate" and i == 0):
            continue
        changes = {
            "duplicate": ("clip_id", rows[0]["clip_id"], "repeats row 2"),
            "separator": ("clip_id", f"a/{i}", "clip_id must be letters"),
            "dotdot": ("clip_id", f"x..{i}", "clip_id must be letters"),
            "too_long": ("clip_id", f"{i}" + "x" * MAX_ID, f"at most {MAX_ID} fit"),
            "label_name": ("label", CLASSES[0], "is not an integer index"),
            "label_outside": ("label", len(CLASSES) + i, "is outside the class list"),
            "split": ("split", "training", "is not one of"),
            "missing_file": ("path_visual", str(work / "media" / "nowhere.mp4"), "does not exist"),
        }
        key, value, problems[i] = changes[defect]
        if key == "split" and i < 3:  # the first three rows hold one clip of each split
            problems.pop(i)
            continue
        rows[i][key] = value
    return rows, problems


def expect_packed(kind: str, start: float) -> bool:
    return kind in GOOD and start < GOOD[kind]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every finished file of a folder, a shard's .tsv without its timings."""
    return {p.name: untimed(p) for p in folder.iterdir() if not p.name.startswith(".")}


def untimed(path: Path) -> bytes:
    if path.suffix != ".tsv" or path.name == "skipped.tsv":
        return path.read_bytes()
    return "".join("\t".join(line.split("\t")[:3]) + "\n" for line in path.read_text().splitlines()).encode()


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_every_clip_is_packed_or_skipped_with_a_reason(pool, case):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "media").mkdir()
        rows, problems = manifest_rows(case, pool, work)
        data = work / "data"
        if problems:
            CASES.append("refused manifest")
            with pytest.raises(ManifestError) as error:
                write_manifest(data, "toy", rows, CLASSES, AV)
            for i, problem in problems.items():
                assert any(f"row {i + 2} (" in line and problem in line for line in str(error.value).splitlines())
            assert not data.exists()  # nothing written
            return
        CASES.append("data path")
        manifest = write_manifest(data, "toy", rows, CLASSES, AV)
        for row, kind in zip(rows, case["kinds"], strict=True):
            if kind == "vanishes":
                Path(row["path_audio"]).unlink()  # deleted after the manifest was written

        n = case["n_shards"]
        shard_paths = [data / "shards" / f"shard{k}.npy" for k in range(n)]
        listed, _ = read_manifest(manifest)
        for k, path in enumerate(shard_paths):
            finished = snapshot(path.parent) if path.parent.exists() else {}
            extract_shard(shard_rows(listed, k, n), AV, SETTINGS, path, log=lambda _: None)
            assert {name: b for name, b in snapshot(path.parent).items() if name in finished} == finished
        expected = [expect_packed(k, s) for k, s in zip(case["kinds"], case["starts"], strict=True)]
        if not all(any(e for e, r in zip(expected, rows, strict=True) if r["split"] == s) for s in SPLITS):
            with pytest.raises(PackedDataError, match=r"no clip of split\(s\) \[.*\] could be extracted"):
                pack(manifest, shard_paths, data / "packed", data / "summary.json", log=lambda _: None)
            CASES[-1] = "refused: a split left empty"
            check_outcome(rows, case, data / "packed", packed_too=False)
            return
        pack(manifest, shard_paths, data / "packed", data / "summary.json", log=lambda _: None)
        check_outcome(rows, case, data / "packed")

        if case["rerun"] >= 0 and case["rerun"] < n:  # a shard extracted again: nothing else moves
            before = snapshot(data / "shards") | {f"packed/{k}": v for k, v in snapshot(data / "packed").items()}
            k = case["rerun"]
            extract_shard(shard_rows(listed, k, n), AV, SETTINGS, shard_paths[k], log=lambda _: None)
            pack(manifest, shard_paths, data / "packed", data / "summary.json", log=lambda _: None)
            after = snapshot(data / "shards") | {f"packed/{k}": v for k, v in snapshot(data / "packed").items()}
            assert after == before  # deterministic, and every finished file still there


def check_outcome(rows: list[dict], case: dict, packed_dir: Path, packed_too: bool = True) -> None:
    """Each clip packed (in its split, with its label) or in skipped.tsv with a reason naming its file, never
    both; with packed_too False (pack refused), only the skipped ones are checked."""
    packed = {}
    for split in SPLITS if packed_too else ():
        for record in np.load(packed_dir / f"{split}.npy"):
            packed[str(record["clip_id"])] = (split, int(record["label"]))
    skipped = {s["clip_id"]: s["reason"] for s in read_skipped(packed_dir / "skipped.tsv") if s["stage"] == "extract"}
    for row, kind, start in zip(rows, case["kinds"], case["starts"], strict=True):
        cid = row["clip_id"]
        if expect_packed(kind, start):
            assert cid not in skipped, (cid, kind, skipped[cid])
            assert not packed_too or packed[cid] == (row["split"], int(row["label"])), (cid, kind)
        else:
            assert cid not in packed and row["path_audio"] in skipped.get(cid, ""), (cid, kind, skipped.get(cid))
    assert not packed_too or set(packed) | set(skipped) == {r["clip_id"] for r in rows}


def test_the_property_ran_its_cases():
    """Runs after the property (file order): says how many cases it generated."""
    if not CASES:
        pytest.skip("run with the property test")
    print(
        f"\nproperty: {len(CASES)} generated cases: {CASES.count('data path')} packed, "
        f"{CASES.count('refused: a split left empty')} extracted but refused by pack (a split left empty), "
        f"{CASES.count('refused manifest')} manifests refused"
    )
    assert CASES.count("data path") >= EXAMPLES // 5
