"""ffmpeg extraction: frame counts, WAV format, bad clips reported and skipped, outputs packed."""

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from bml.data.extract import (
    MediaError,
    audio_work,
    extract_audio,
    extract_frames,
    ffmpeg_exe,
    frames_work,
    list_frames,
    probe,
    read_index,
    read_manifest,
    run_shards,
)
from bml.data.pack import load_split, pack, select_frames


def clip_path(manifest, clip_id="avd_00000"):
    return manifest.parent / "clips" / f"{clip_id}.mp4"


@pytest.mark.parametrize("fps", [10, 4, 1])
def test_frame_count_matches_fps_times_duration(tiny_avdigits, tmp_path, fps):
    for row in read_manifest(tiny_avdigits)[:5]:
        n = extract_frames(row["path"], tmp_path / row["clip_id"], fps=fps)
        assert abs(n - fps * float(row["duration"])) <= 1, (row["clip_id"], n)
        files = list_frames(tmp_path / row["clip_id"])
        assert [f.name for f in files] == [f"{i:06d}.jpg" for i in range(1, n + 1)]
        assert not (tmp_path / f"{row['clip_id']}.tmp").exists()


@pytest.mark.parametrize("rate", [16000, 22050])
def test_wav_is_mono_16_bit_at_the_asked_rate_and_length(tiny_avdigits, tmp_path, rate):
    row = read_manifest(tiny_avdigits)[3]
    n = extract_audio(row["path"], tmp_path / "a.wav", sample_rate=rate)
    info = soundfile.info(str(tmp_path / "a.wav"))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (rate, 1, "PCM_16", n)
    assert abs(n / rate - float(row["duration"])) < 0.1


def make_bad_clips(manifest, folder):
    """A truncated MP4, a clip without audio, a zero-length file and a missing file."""
    folder.mkdir()
    good = clip_path(manifest).read_bytes()
    (folder / "truncated.mp4").write_bytes(good[: len(good) // 3])
    subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-i",
            str(clip_path(manifest)),
            "-an",
            "-c",
            "copy",
            str(folder / "silent.mp4"),
        ],
        check=True,
    )
    (folder / "empty.mp4").write_bytes(b"")
    return {
        "truncated": folder / "truncated.mp4",
        "silent": folder / "silent.mp4",
        "empty": folder / "empty.mp4",
        "missing": folder / "missing.mp4",
    }


def test_probe_names_the_file_and_the_problem(tiny_avdigits, tmp_path):
    bad = make_bad_clips(tiny_avdigits, tmp_path / "bad")
    with pytest.raises(MediaError, match=r"truncated\.mp4: ffmpeg cannot read it"):
        probe(bad["truncated"])
    with pytest.raises(MediaError, match=r"empty\.mp4: empty file"):
        probe(bad["empty"])
    with pytest.raises(MediaError, match=r"missing\.mp4: file not found"):
        probe(bad["missing"])
    assert probe(bad["silent"]).has_audio is False
    with pytest.raises(MediaError, match=r"silent\.mp4: no audio stream"):
        extract_audio(bad["silent"], tmp_path / "s.wav", 16000)
    assert not (tmp_path / "s.wav").exists()


def test_bad_clips_are_skipped_and_listed_and_the_others_go_on(tiny_avdigits, tmp_path):
    bad = make_bad_clips(tiny_avdigits, tmp_path / "bad")
    rows = read_manifest(tiny_avdigits)[:6]
    for row, (name, path) in zip(rows[1:5], bad.items(), strict=True):
        row["path"], row["clip_id"] = str(path), f"{row['clip_id']}_{name}"
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    frames = run_shards(manifest, tmp_path / "frames", 2, frames_work(10, 2), workers=2)
    audio = run_shards(manifest, tmp_path / "audio", 2, audio_work(16000), workers=2)
    status = {r["clip_id"]: r["status"] for r in frames}
    assert sum(s == "ok" for s in status.values()) == 3  # two good clips + the silent one
    assert {r["clip_id"] for r in audio if r["status"] == "ok"} == {rows[0]["clip_id"], rows[5]["clip_id"]}

    from bml.cli import main

    main(
        [
            "spectrograms",
            "--audio",
            str(tmp_path / "audio"),
            "--preset",
            "avdigits",
            "--n-shards",
            "2",
            "--out",
            str(tmp_path / "spec"),
        ]
    )
    summary = pack(
        manifest,
        tmp_path / "frames",
        tmp_path / "audio",
        tmp_path / "spec",
        tmp_path / "packed",
        n_frames=4,
        frame_size=32,
        log=lambda _: None,
    )
    assert summary["n_packed"] == 2 and summary["n_skipped_clips"] == 4
    with (tmp_path / "packed" / "skipped.tsv").open() as f:
        skipped = list(csv.DictReader(f, delimiter="\t"))
    reasons = {(s["clip_id"].rsplit("_", 1)[1], s["stage"]): s["reason"] for s in skipped}
    assert "ffmpeg cannot read it" in reasons[("truncated", "frames")]
    assert "truncated.mp4" in reasons[("truncated", "frames")]
    assert "no audio stream" in reasons[("silent", "audio")]
    assert "empty file" in reasons[("empty", "audio")]
    assert "file not found" in reasons[("missing", "frames")]
    assert ("silent", "frames") not in reasons  # its frames were fine


def test_a_clip_never_processed_is_listed_not_hidden(tiny_avdigits, tmp_path):
    rows = read_manifest(tiny_avdigits)[:4]
    run_shards(tiny_avdigits, tmp_path / "frames", 10, frames_work(10, 2), shards=[0])  # one shard only
    records = read_index(tmp_path / "frames" / "shard0" / "index.tsv")
    assert [r["clip_id"] for r in records] == [r["clip_id"] for r in read_manifest(tiny_avdigits)[::10]]
    assert rows  # the other shards were never run: pack must say so rather than pack silently
    run_shards(tiny_avdigits, tmp_path / "audio", 10, audio_work(16000), shards=[0])
    from bml.cli import main

    main(
        [
            "spectrograms",
            "--audio",
            str(tmp_path / "audio"),
            "--preset",
            "avdigits",
            "--n-shards",
            "10",
            "--shard",
            "0",
            "--out",
            str(tmp_path / "spec"),
        ]
    )
    summary = pack(
        tiny_avdigits,
        tmp_path / "frames",
        tmp_path / "audio",
        tmp_path / "spec",
        tmp_path / "packed",
        n_frames=2,
        frame_size=16,
        log=lambda _: None,
    )
    assert summary["n_packed"] == 4 and summary["n_skipped_clips"] == 36
    text = (tmp_path / "packed" / "skipped.tsv").read_text()
    assert text.count("no frames were extracted") == 36


@pytest.mark.parametrize(
    "available,wanted,expected",
    [
        (10, 5, [1, 3, 5, 7, 9]),
        (8, 8, list(range(8))),
        (3, 6, [0, 0, 1, 1, 2, 2]),
        (1, 3, [0, 0, 0]),
        (30, 3, [5, 15, 25]),
    ],
)
def test_select_frames_is_evenly_spaced_and_deterministic(available, wanted, expected):
    assert select_frames(available, wanted) == expected


def test_pack_writes_one_memory_mappable_record_file_per_split(tiny_avdigits, tmp_path):
    run_shards(tiny_avdigits, tmp_path / "frames", 3, frames_work(10, 2), workers=2)
    run_shards(tiny_avdigits, tmp_path / "audio", 3, audio_work(16000), workers=2)
    from bml.cli import main

    main(
        [
            "spectrograms",
            "--audio",
            str(tmp_path / "audio"),
            "--preset",
            "avdigits",
            "--n-shards",
            "3",
            "--out",
            str(tmp_path / "spec"),
        ]
    )
    pack(
        tiny_avdigits,
        tmp_path / "frames",
        tmp_path / "audio",
        tmp_path / "spec",
        tmp_path / "packed",
        n_frames=8,
        frame_size=64,
        log=lambda _: None,
    )
    manifest = {r["clip_id"]: r for r in read_manifest(tiny_avdigits)}
    sizes = {}
    for split in ("train", "val", "test"):
        records, meta = load_split(tmp_path / "packed", split)
        assert isinstance(records, np.memmap)
        assert records["frames"].shape[1:] == (8, 3, 64, 64) and records.dtype["frames"].base == np.uint8
        assert records["spec"].shape[1:] == (64, 100) and records.dtype["spec"].base == np.float16
        assert meta["n"] == len(records)
        for rec in records:
            assert manifest[str(rec["clip_id"])]["split"] == split
            assert int(rec["label"]) == int(manifest[str(rec["clip_id"])]["label"])
        sizes[split] = len(records)
        assert np.isfinite(records["spec"].astype(np.float32)).all()
    assert sizes == {"train": 28, "val": 4, "test": 8}
    assert json.loads((tmp_path / "packed" / "summary.json").read_text())["n_packed"] == 40
    # the packed frames are the extracted JPEGs at the evenly spaced indices
    records, _ = load_split(tmp_path / "packed", "test")
    cid = str(records[0]["clip_id"])
    shard = next(p for p in (tmp_path / "frames").glob("shard*") if (p / cid).is_dir())
    from bml.data.pack import load_frame

    files = list_frames(shard / cid)
    assert np.array_equal(records[0]["frames"][0], load_frame(files[select_frames(len(files), 8)[0]], 64))
    shutil.rmtree(tmp_path / "frames")
