"""The embedded dataset: real, decodable MP4s, deterministic, honest splits, presets that do what they say."""

import csv
from collections import Counter

import numpy as np
import pytest
from conftest import avdigits_settings

from bml.config import ConfigError
from bml.data.avdigits import NO_SPEECH, generate, plan_clips
from bml.data.decode import decode_clip
from bml.data.ffmpeg import probe
from bml.data.manifest import Row


def read_rows(manifest):
    with open(manifest, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_clips_are_h264_aac_mp4s_with_durations_in_range(tiny_avdigits):
    settings = avdigits_settings("audio_dominant")
    rows = read_rows(tiny_avdigits)
    assert len(rows) == 40
    for row in rows:
        info = probe(tiny_avdigits.parent / row["path"])
        assert info.has_video and info.has_audio, row["clip_id"]
        assert (info.width, info.height) == (settings["size"], settings["size"])
        assert info.fps == settings["fps"]
        lo, hi = settings["duration"]
        assert lo - 0.06 <= info.duration <= hi + 0.1, (row["clip_id"], info.duration)
        assert abs(info.duration - float(row["duration"])) < 0.1


def test_video_stream_is_yuv420p_h264(tiny_avdigits):
    import subprocess

    from bml.data.ffmpeg import ffmpeg_exe

    clip = tiny_avdigits.parent / "clips" / "avd_00000.mp4"
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(clip)], capture_output=True, text=True).stderr
    assert "Video: h264" in text and "yuv420p" in text and "Audio: aac" in text


def test_manifest_columns_labels_and_splits(tiny_avdigits):
    rows = read_rows(tiny_avdigits)
    assert list(rows[0]) == ["clip_id", "path", "label", "split", "digit_shown", "digit_spoken", "duration"]
    assert Counter(r["split"] for r in rows) == {"train": 28, "val": 4, "test": 8}
    assert Counter(r["label"] for r in rows) == {str(d): 4 for d in range(10)}
    # audio_dominant: both modalities show the label
    assert all(r["digit_shown"] == r["label"] == r["digit_spoken"] for r in rows)


@pytest.mark.slow
def test_same_seed_gives_identical_manifest_frames_and_samples(tmp_path):
    settings = avdigits_settings("missing_speech")
    a = generate(tmp_path / "a", n_clips=12, seed=3, settings=settings, workers=1, log=lambda _: None)
    b = generate(tmp_path / "b", n_clips=12, seed=3, settings=settings, workers=2, log=lambda _: None)
    c = generate(tmp_path / "c", n_clips=12, seed=4, settings=settings, workers=1, log=lambda _: None)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    recipe = {"span": {"start": 0.0, "duration": None}, "visual": {"fps": 10, "frames": 8, "size": 112}}
    for clip in ["avd_00000", "avd_00007"]:
        decoded = [
            decode_clip(
                Row(clip, 0, "train", {"audio": str(p), "visual": str(p)}),
                {"audio": "audio", "visual": "frames"},
                recipe,
            )
            for p in (a.parent / "clips" / f"{clip}.mp4", b.parent / "clips" / f"{clip}.mp4")
        ]
        assert np.array_equal(decoded[0]["visual"], decoded[1]["visual"]) and len(decoded[0]["visual"]) >= 10
        assert np.array_equal(decoded[0]["audio"], decoded[1]["audio"]) and decoded[0]["audio"].size >= 16000
        assert (a.parent / "clips" / f"{clip}.mp4").read_bytes() == (b.parent / "clips" / f"{clip}.mp4").read_bytes()


def test_split_image_pools_are_disjoint_and_split_sizes_exact():
    plans = plan_clips(1200, seed=0, settings=avdigits_settings("audio_dominant"))
    assert Counter(p.split for p in plans) == {"train": 840, "val": 120, "test": 240}
    images = {s: {p.image_index for p in plans if p.split == s} for s in ("train", "val", "test")}
    assert not images["train"] & images["test"] and not images["train"] & images["val"]
    assert not images["val"] & images["test"]
    per_split_labels = Counter((p.split, p.label) for p in plans)
    assert all(per_split_labels[("test", d)] == 24 for d in range(10))


def test_missing_speech_preset_drops_about_a_quarter_of_the_speech():
    plans = plan_clips(2000, seed=1, settings=avdigits_settings("missing_speech"))
    absent = np.mean([p.digit_spoken == NO_SPEECH for p in plans])
    assert 0.22 < absent < 0.28


@pytest.mark.parametrize("knob,field", [("p_wrong_visual", "digit_shown"), ("p_wrong_audio", "digit_spoken")])
def test_wrong_digit_knobs_show_another_digit_at_the_set_rate(knob, field):
    settings = {**avdigits_settings("audio_dominant"), knob: 0.3}
    plans = plan_clips(2000, seed=2, settings=settings)
    wrong = [getattr(p, field) != p.label for p in plans]
    assert 0.26 < np.mean(wrong) < 0.34
    assert all(0 <= getattr(p, field) <= 9 for p in plans)


def test_heavy_noise_hides_the_digit_in_one_frame_but_not_in_the_average(tiny_avdigits, tmp_path):
    """The audio_dominant preset's premise: vision is informative only after averaging over frames."""
    from PIL import Image

    from bml.data.avdigits import render_frames

    settings = avdigits_settings("audio_dominant")
    digit = np.zeros((8, 8))
    digit[1:7, 3:5] = 16  # a bar: a crude "1"
    frames = render_frames(
        digit, 30, {**settings, "jitter_px": 0, "frame_jitter_px": 0}, np.random.default_rng(0)
    ).astype(float)
    size, ds = settings["size"], settings["digit_size"]
    lo, hi = (size - ds) // 2, (size + ds) // 2
    inside = np.zeros((size, size), bool)
    inside[lo:hi, lo:hi] = np.kron(digit > 0, np.ones((ds // 8, ds // 8))) > 0
    one_gap = frames[0][inside].mean() - frames[0][~inside].mean()
    avg = frames.mean(0)
    avg_gap = (avg[inside].mean() - avg[~inside].mean()) / avg[~inside].std()
    single_snr = one_gap / frames[0][~inside].std()
    assert avg_gap > 3 * single_snr
    assert Image.fromarray(avg.astype(np.uint8)).size == (size, size)


def test_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'no_such_preset'; choose one of .*audio_dominant"):
        avdigits_settings("no_such_preset")
