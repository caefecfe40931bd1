"""Extraction: bad media files skipped with their reason, thresholds, spans, batched decoding, flow, and no
half-written shard after a kill. Every media file is made by the real ffmpeg at test time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bml.data.audio import spectrogram
from bml.data.decode import Limits, _run_ffmpeg, clip_job, decode_clip, decode_clips, select_frames
from bml.data.extract import extract_shard, features
from bml.data.ffmpeg import MediaError, ffmpeg_exe, read_summary
from bml.data.flow import quantise_flow
from bml.data.manifest import Row
from bml.data.pack import read_shard_status

AV = {"audio": "audio", "visual": "frames"}
SETTINGS = {
    "span": {"start": 0.0, "duration": 3.0},
    "audio": {"preset": "avdigits"},  # params/audio_presets.yaml: 16 kHz, 3 s, 64 x 100 log-mel
    "visual": {"fps": 10, "frames": 4, "size": 32},
}
REPO = Path(__file__).resolve().parents[1]


# ---- media made by ffmpeg -----------------------------------------------------------------------------


def make_clip(
    path: Path,
    seconds: float = 3.0,
    size: int = 32,
    video: str | None = "testsrc2",
    audio: str | None = "sine",
    faststart: bool = False,
    gop: int | None = None,
    threads: int | None = 1,
) -> Path:
    """An H.264 + AAC MP4 from ffmpeg's test sources (`video`/`audio`: a lavfi source, or None for none);
    encoded with one thread by default, so the bytes (and where a corruption lands) are the same anywhere."""
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-y"]
    if video:
        source = f"testsrc2=s={size}x{size}:r=10:d={seconds}" if video == "testsrc2" else video
        cmd += ["-f", "lavfi", "-i", source]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=f=440:sample_rate=16000:d={seconds}" if audio == "sine" else audio]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k"]
    cmd += ["-threads", str(threads)] if threads else []
    cmd += ["-movflags", "+faststart"] if faststart else []
    cmd += ["-g", str(gop)] if gop else []  # a keyframe every `gop` frames: decoding resumes after damage
    subprocess.run(cmd + [str(path)], check=True)
    return path


def corrupt_middle(src: Path, dst: Path, n_bytes: int = 8192, seed: int = 0) -> Path:
    """A copy of src with n_bytes in its middle overwritten by random bytes (its size unchanged)."""
    data = bytearray(src.read_bytes())
    at = len(data) // 2
    data[at : at + n_bytes] = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def truncate(src: Path, dst: Path, share: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * share)])
    return dst


def row_of(path: Path | str, clip_id: str = "clip", start: float = 0.0, end: float | None = None) -> Row:
    return Row(clip_id, 0, "train", {"audio": str(path), "visual": str(path)}, start, end)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Good and bad files, made once."""
    d = tmp_path_factory.mktemp("media")
    good = make_clip(d / "good.mp4")
    files = {
        "good": good,
        "good2": make_clip(d / "good2.mp4", seconds=2.0),
        "corrupt": corrupt_middle(make_clip(d / "big.mp4", size=96, gop=10), d / "corrupt.mp4"),
        "truncated": truncate(good, d / "truncated.mp4"),
        "truncated_faststart": truncate(make_clip(d / "fs.mp4", faststart=True), d / "truncated_faststart.mp4"),
        "silent": make_clip(d / "silent.mp4", audio=None),
        "empty": d / "empty.mp4",
        "text": d / "notes.mp4",
        "missing": d / "missing.mp4",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("not a video\n")
    return files


# ---- every bad input is skipped with its reason -------------------------------------------------------


@pytest.mark.parametrize(
    "name,reason",
    [
        (
            "corrupt",
            r"corrupt\.mp4: .*damaged: decode errors \(\d+ of \d+ audio packets, \d+ of \d+ video packets; at most 1",
        ),
        ("truncated", r"truncated\.mp4: truncated or unfinished MP4: ffmpeg cannot read it \(moov atom not found\)"),
        (
            "truncated_faststart",
            r"truncated_faststart\.mp4: truncated or damaged audio: decoded \d+ of the 48000 samples its container",
        ),
        ("silent", r"silent\.mp4: no audio stream"),
        ("empty", r"empty\.mp4: empty file \(0 bytes\)"),
        ("text", r"notes\.mp4: not a media file \(no MP4 header\)"),
        ("missing", r"missing\.mp4: file not found"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_problem(media, name, reason):
    with pytest.raises(MediaError, match=reason):
        decode_clip(row_of(media[name]), AV, SETTINGS)


def test_mid_file_corruption_counts_decode_errors_and_frames(media):
    """The issue's case: ffmpeg's fps filter would fill the gap with duplicates; the decoder's own count does not."""
    job = clip_job(row_of(media["corrupt"]), AV, SETTINGS)
    code, err, data, _ = _run_ffmpeg([job], AV, SETTINGS)
    video = read_summary(err)[(0, "video")]
    assert code == 0 and video.errors > 0 and video.frames < 30 == video.packets  # 3 s at 10 fps declared
    assert len(data[(0, "visual")]) == 30 * 32 * 32 * 3  # what the frame-rate filter hands on: the gap filled


def test_the_thresholds_are_honoured_on_both_sides(media):
    with pytest.raises(MediaError) as refused:
        decode_clip(row_of(media["corrupt"]), AV, SETTINGS, Limits(max_decode_error_share=0))
    counts = re.findall(r"(\d+) of (\d+) (?:audio|video) packets", str(refused.value))
    worst = max(int(bad) / int(packets) for bad, packets in counts)
    decode_clip(row_of(media["corrupt"]), AV, SETTINGS, Limits(min_decoded_share=0.5, max_decode_error_share=worst))
    with pytest.raises(MediaError, match=r"damaged: decode errors .* per stream: params.yaml extract.max_decode_err"):
        decode_clip(row_of(media["corrupt"]), AV, SETTINGS, Limits(0.5, max_decode_error_share=worst - 0.001))

    lenient = Limits(min_decoded_share=0.9, max_decode_error_share=1.0)  # only the share decoded decides
    under = r"truncated or damaged (audio|video): decoded \d+ of the \d+ .* \(under 90%: params.yaml extract"
    with pytest.raises(MediaError, match=under):
        decode_clip(row_of(media["truncated_faststart"]), AV, SETTINGS, lenient)
    out = decode_clip(row_of(media["truncated_faststart"]), AV, SETTINGS, Limits(0.3, 1.0))
    assert 10 <= len(out["visual"]) < 30  # about 60% of the 30 frames


def make_avi(path: Path, video: list[str], audio: list[str] | None = None, seconds: float = 3.0, vf: str = "") -> Path:
    """An AVI from ffmpeg's test sources with the given encoder options (one thread: the same bytes anywhere)."""
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s=32x32:r=10:d={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=f=440:sample_rate=48000:d={seconds}", *audio]
    cmd += (["-vf", vf, "-fps_mode", "vfr"] if vf else []) + video + ["-threads", "1", str(path)]
    subprocess.run(cmd, check=True)
    return path


def test_one_bad_audio_packet_in_hundreds_is_a_healthy_file(tmp_path):
    """An XviD + AC3 AVI with one AC3 frame damaged (its header's bytes flipped): 1 decode error in 312 audio
    packets, a share far under the limit, so the clip packs; a limit of 0 still refuses it, naming the count."""
    avi = make_avi(tmp_path / "xvid.avi", ["-c:v", "libxvid"], ["-c:a", "ac3", "-b:a", "96k"], seconds=10.0)
    data = bytearray(avi.read_bytes())
    at = data.index(b"01wb", len(data) // 2) + 8  # an audio chunk in the middle: its AC3 frame
    assert data[at : at + 2] == b"\x0b\x77"  # AC3's sync word
    data[at + 5] ^= 0xFF
    (tmp_path / "damaged.avi").write_bytes(bytes(data))
    whole = {**SETTINGS, "span": {"start": 0.0, "duration": None}}  # the damaged frame is 5 s in
    out = decode_clip(row_of(tmp_path / "damaged.avi"), AV, whole)
    assert len(out["visual"]) == 100 and out["audio"].size > 0.99 * 10 * 48000
    refused = r"damaged\.avi: damaged: decode errors \(1 of 31\d audio packets; at most 0\.0%"
    with pytest.raises(MediaError, match=refused):
        decode_clip(row_of(tmp_path / "damaged.avi"), AV, whole, Limits(max_decode_error_share=0))


def test_null_chunks_of_an_avi_are_repeated_frames_not_a_truncation(tmp_path):
    """A cinepak AVI whose muxer wrote null chunks for 10 dropped frames (a player repeats the frame before):
    the container holds 30 packets, the decoder makes 20 frames with no error, and the clip's 3 s are all there."""
    avi = make_avi(tmp_path / "cinepak.avi", ["-c:v", "cinepak"], vf="select='not(between(n,5,14))'")
    job = clip_job(row_of(avi), {"visual": "frames"}, SETTINGS)
    video = read_summary(_run_ffmpeg([job], {"visual": "frames"}, SETTINGS)[1])[(0, "video")]
    assert (video.packets, video.frames, video.errors) == (30, 20, 0)  # the fixture is what it claims
    frames = decode_clip(row_of(avi), {"visual": "frames"}, SETTINGS)["visual"]
    assert len(frames) == 30 and np.array_equal(frames[5], frames[4]) and not np.array_equal(frames[4], frames[3])


def test_a_truncation_inside_a_span_that_starts_mid_gop_is_refused(tmp_path):
    """A 30 s video with one keyframe every 25 s, cut at about 21.5 s: the span 20-23 s holds 15 of its 30 frames,
    though ffmpeg decodes about 215 (from the keyframe at 0 s on). The frames of the span decide."""
    whole = make_clip(tmp_path / "long.mp4", seconds=30.0, audio=None, gop=250, faststart=True)
    cut = truncate(whole, tmp_path / "cut.mp4", share=0.72)
    span = {**SETTINGS, "span": {"start": 20.0, "duration": 3.0}}
    visual = {"visual": "frames"}
    video = read_summary(_run_ffmpeg([clip_job(row_of(cut), visual, span)], visual, span)[1])[(0, "video")]
    assert video.frames > 150  # what the old count saw: "decoded 200 of 30"
    assert len(decode_clip(row_of(whole), visual, span)["visual"]) == 30
    only_frames = Limits(max_decode_error_share=1.0)  # the cut packet's decode error aside: the count decides
    with pytest.raises(MediaError, match=r"cut\.mp4: truncated or damaged video: decoded 1\d of the 30 frames"):
        decode_clip(row_of(cut), visual, span, only_frames)


def test_bad_clips_in_a_chunk_never_cost_their_neighbours(media):
    names = ["good", "corrupt", "good2", "truncated", "text", "silent", "empty", "missing", "good"]
    rows = [row_of(media[n], f"c{i}") for i, n in enumerate(names)]
    batched = decode_clips(rows, AV, SETTINGS)
    for name, row, out in zip(names, rows, batched, strict=True):
        if name.startswith("good"):
            alone = decode_clip(row, AV, SETTINGS)
            assert set(out) == set(alone) and all(np.array_equal(out[k], alone[k]) for k in alone)
        else:
            assert isinstance(out, MediaError) and str(media[name]) in str(out)


def test_a_shard_lists_every_clip_and_packs_the_good_ones(media, tmp_path):
    names = ["good", "silent", "good2", "corrupt", "empty", "good"]
    rows = [row_of(media[n], f"c{i}_{n}") for i, n in enumerate(names)]
    statuses = extract_shard(rows, AV, SETTINGS, tmp_path / "shard0.npy", log=lambda _: None, clips_per_process=4)
    assert [s["clip_id"] for s in statuses] == [r.clip_id for r in rows]
    assert read_shard_status(tmp_path / "shard0.tsv") == [{k: str(v) for k, v in s.items()} for s in statuses]
    ok = [s["clip_id"] for s in statuses if s["status"] == "ok"]
    assert ok == ["c0_good", "c2_good2", "c5_good"]
    assert all(s["reason"] for s in statuses if s["status"] == "skipped")
    records = np.load(tmp_path / "shard0.npy", mmap_mode="r")
    assert records["clip_id"].tolist() == ok
    # records are what one clip decoded alone gives: spectrograms batched over the chunk equal the per-clip one
    alone = decode_clip(rows[2], AV, SETTINGS)
    expected = spectrogram(alone["audio"], int(alone["audio:rate"]), "avdigits").astype(np.float16)
    assert np.array_equal(records[1]["audio"], expected)
    frames = alone["visual"][select_frames(len(alone["visual"]), 4)].transpose(0, 3, 1, 2)
    assert np.array_equal(records[1]["visual"], frames)
    assert not list(tmp_path.glob(".*tmp"))


def test_workers_and_chunk_size_do_not_change_the_records(media, tmp_path):
    rows = [row_of(media[n], f"c{i}") for i, n in enumerate(["good", "good2", "silent", "good", "good2"])]
    extract_shard(rows, AV, SETTINGS, tmp_path / "a.npy", log=lambda _: None)
    extract_shard(rows, AV, SETTINGS, tmp_path / "b.npy", log=lambda _: None, workers=2, clips_per_process=2)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert (tmp_path / "a.tsv").read_text().count("\tok\t") == 4


# ---- only the span that is used is decoded, frames and audio over the same seconds --------------------


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """A 10-minute clip (tiny frames, so that ffmpeg makes it in seconds)."""
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", seconds=600, size=32, threads=None)


@pytest.mark.slow
def test_a_long_clip_decodes_only_the_recipes_span(long_clip, media):
    row = row_of(long_clip)
    t0 = time.perf_counter()
    out = decode_clip(row, AV, SETTINGS)
    t_long = time.perf_counter() - t0
    assert len(out["visual"]) == 30  # 3 s at 10 fps
    assert abs(len(out["audio"]) - 3 * 16000) <= 1024  # 3 s at 16 kHz, give or take an AAC frame
    err = _run_ffmpeg([clip_job(row, AV, SETTINGS)], AV, SETTINGS)[1]
    assert read_summary(err)[(0, "video")].frames <= 40  # ffmpeg decoded 3 s (and a few frames it read ahead), not 600
    t0 = time.perf_counter()
    decode_clip(row_of(media["good"]), AV, SETTINGS)  # a 3 s clip
    t_short = time.perf_counter() - t0
    assert t_long < 3 * t_short + 0.5, (t_long, t_short)  # a full decode of 6,000 frames would take far longer


@pytest.fixture(scope="module")
def step_clip(tmp_path_factory) -> Path:
    """10 s: dark frames and a 300 Hz tone before t = 5 s, bright frames and a 3 kHz tone after."""
    video = "color=c=black:s=32x32:r=10:d=10,format=yuv420p,geq=lum='if(lt(T\\,5)\\,40\\,210)':cb=128:cr=128"
    audio = "aevalsrc='0.5*sin(2*PI*if(lt(t\\,5)\\,300\\,3000)*t)':s=16000:d=10"
    return make_clip(tmp_path_factory.mktemp("step") / "step.mp4", video=video, audio=audio)


def tone_hz(wave: np.ndarray, rate: int = 16000) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(wave))) * rate / len(wave))


@pytest.mark.parametrize(
    "start,end,span,bright,hz,seconds",
    [
        (1.0, 4.0, {"start": 0.0, "duration": None}, False, 300, 3.0),  # AVE-style segment before the change
        (5.5, 8.0, {"start": 0.0, "duration": None}, True, 3000, 2.5),  # ... and after it
        (6.0, None, {"start": 0.0, "duration": 2.0}, True, 3000, 2.0),  # the recipe's duration cuts the segment
        (0.0, None, {"start": 5.0, "duration": 3.0}, True, 3000, 3.0),  # the recipe's own start
    ],
)
def test_a_clip_with_a_start_offset_decodes_its_span(step_clip, start, end, span, bright, hz, seconds):
    out = decode_clip(row_of(step_clip, start=start, end=end), AV, {**SETTINGS, "span": span})
    brightness = out["visual"].mean(axis=(1, 2, 3))
    assert len(brightness) == round(10 * seconds)
    assert (brightness > 150).all() if bright else (brightness < 60).all()
    assert len(out["audio"]) == round(16000 * seconds)
    assert tone_hz(out["audio"]) == pytest.approx(hz, rel=0.02)


def test_frames_and_audio_cover_the_same_seconds(step_clip):
    out = decode_clip(row_of(step_clip, start=4.5, end=5.5), AV, {**SETTINGS, "span": {"start": 0, "duration": None}})
    brightness = out["visual"].mean(axis=(1, 2, 3))
    assert (brightness[:5] < 60).all() and (brightness[5:] > 150).all()  # the change half-way through the frames
    half = len(out["audio"]) // 2
    assert tone_hz(out["audio"][: half - 400]) == pytest.approx(300, rel=0.05)  # ... and through the audio
    assert tone_hz(out["audio"][half + 400 :]) == pytest.approx(3000, rel=0.05)


def test_an_empty_span_is_refused(step_clip):
    with pytest.raises(MediaError, match="clip c: empty span"):
        decode_clip(row_of(step_clip, "c", start=4.0, end=4.0), AV, SETTINGS)


# ---- flow ---------------------------------------------------------------------------------------------

FLOW = {"visual": "frames", "flow": "flow"}
FLOW_SETTINGS = {
    "span": {"start": 0.0, "duration": None},
    "visual": {"fps": 10, "frames": 4, "size": 64},
    "flow": {"fps": 25, "frames": 3, "size": 64},
}


@pytest.fixture(scope="module")
def panning_clip(tmp_path_factory) -> Path:
    """3 s at 25 fps of a smooth random texture panned left by 3 px per frame (96 x 96 window)."""
    d = tmp_path_factory.mktemp("pan")
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (96, 352)).astype(np.float32)
    import cv2

    texture = cv2.GaussianBlur(noise, (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255
    Image.fromarray(texture.astype(np.uint8)).save(d / "texture.png")
    cmd = [ffmpeg_exe(), "-loglevel", "error", "-y", "-loop", "1", "-framerate", "25", "-i", str(d / "texture.png")]
    cmd += ["-vf", "crop=96:96:x='t*75':y=0,format=yuv420p", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast"]
    subprocess.run(cmd + [str(d / "pan.mp4")], check=True)
    return d / "pan.mp4"


def test_flow_from_a_video_is_farneback_between_native_frames(panning_clip, tmp_path):
    row = Row("pan", 0, "train", {"visual": str(panning_clip), "flow": str(panning_clip)})
    decoded = decode_clip(row, FLOW, FLOW_SETTINGS)
    assert decoded["flow"].shape == (75, 64, 64, 3)  # every native frame of 3 s at 25 fps, at the recipe's size
    assert decoded["visual"].shape == (30, 64, 64, 3)  # the frames modality at its own 10 fps
    flow = features([decoded], FLOW, FLOW_SETTINGS)[0]["flow"]
    assert flow.shape == (3, 2, 64, 64) and flow.dtype == np.uint8
    # the window moves 3 px per frame to the right at 96 px, 2 px at 64: the content moves 2 px left
    expected_u = quantise_flow(np.array([-2.0]))[0].astype(int)
    for u, v in flow.astype(int):
        assert abs(np.median(u) - expected_u) <= 2 and abs(np.median(v) - 128) <= 1
    statuses = extract_shard([row], FLOW, FLOW_SETTINGS, tmp_path / "s.npy", log=lambda _: None)
    assert statuses[0]["status"] == "ok"
    assert np.array_equal(np.load(tmp_path / "s.npy")[0]["flow"], flow)


def write_release(root: Path, clip: str, n_flow: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A TV-L1-style release of one clip: u/<clip>/frame%06d.jpg and v/..., flow frame k filled with k
    (u) and 200 - k (v), so the frames read back say which they were."""
    for c, value in (("u", lambda k: k), ("v", lambda k: 200 - k)):
        (root / c / clip).mkdir(parents=True)
        for k in range(1, n_flow + 1):
            Image.new("L", size, value(k)).save(root / c / clip / f"frame{k:06d}.jpg", quality=100)
    return root / "u" / clip


def test_flow_from_a_release_reads_its_jpegs_at_evenly_spaced_frames(tmp_path, panning_clip):
    u_dir = write_release(tmp_path / "tvl1_flow", "v_X_g01_c01", n_flow=30)
    row = Row("v_X_g01_c01", 0, "train", {"flow": str(u_dir)})
    out = decode_clip(row, {"flow": "flow"}, FLOW_SETTINGS)
    assert out["flow"].shape == (3, 2, 64, 64) and out["flow"].dtype == np.uint8
    chosen = [k + 1 for k in select_frames(30, 3)]  # 1-based flow frames 6, 16, 26
    assert [int(np.median(f[0])) for f in out["flow"]] == chosen
    assert [int(np.median(f[1])) for f in out["flow"]] == [200 - k for k in chosen]
    # a span maps to flow frames through the video's frame rate (25 fps): 0.4-0.8 s holds video frames 11..20,
    # so flow frames 11..19 (from frame k to k + 1, both in the span)
    both = Row("v_X_g01_c01", 0, "train", {"visual": str(panning_clip), "flow": str(u_dir)}, 0.4, 0.8)
    out = decode_clip(both, FLOW, FLOW_SETTINGS)
    assert [int(np.median(f[0])) for f in out["flow"]] == [11 + k for k in select_frames(9, 3)]
    assert len(out["visual"]) == 4  # and the frames cover the same 0.4 s
    shutil_missing = u_dir.parent.parent / "v" / "v_X_g01_c01" / "frame000016.jpg"
    shutil_missing.unlink()
    with pytest.raises(MediaError, match=r"v_X_g01_c01.*frame000016\.jpg"):
        decode_clip(row, {"flow": "flow"}, FLOW_SETTINGS)


# ---- no half-written file after a kill ----------------------------------------------------------------

KILLED = """
import sys
from bml.data.extract import extract_shard
from bml.data.manifest import Row
rows = [Row(f"c{i:03d}", 0, "train", {"audio": sys.argv[1], "visual": sys.argv[1]}) for i in range(400)]
extract_shard(rows, {"audio": "audio", "visual": "frames"}, {"span": {"start": 0.0, "duration": 3.0},
              "audio": {"preset": "avdigits"}, "visual": {"fps": 10, "frames": 4, "size": 32}}, sys.argv[2],
              clips_per_process=1)
"""


@pytest.mark.slow
def test_a_killed_shard_leaves_no_shard_and_a_rerun_completes(media, tmp_path):
    shards = tmp_path / "shards"
    done = [row_of(media["good"], "other")]
    extract_shard(done, AV, SETTINGS, shards / "shard1.npy", log=lambda _: None)  # a finished neighbour
    before = {p.name: p.read_bytes() for p in shards.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(media["good"]), str(shards / "shard0.npy")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes its ffmpeg children too
    )
    tmp = shards / ".shard0.npy.tmp"
    deadline = time.monotonic() + 120
    while not (tmp.is_file() and tmp.stat().st_size > 256 + 10 * 1000) and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until records are being written (header 256 bytes, then records)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tmp.is_file(), "the test did not catch the job mid-shard"
    assert not (shards / "shard0.npy").exists() and not (shards / "shard0.tsv").exists()
    assert {p.name: p.read_bytes() for p in shards.iterdir() if p.name in before} == before

    rows = [row_of(media["good"], f"c{i:03d}") for i in range(3)]
    extract_shard(rows, AV, SETTINGS, shards / "shard0.npy", log=lambda _: None)
    assert np.load(shards / "shard0.npy")["clip_id"].tolist() == ["c000", "c001", "c002"]
    assert not tmp.exists()
    assert {p.name: p.read_bytes() for p in shards.iterdir() if p.name in before} == before
