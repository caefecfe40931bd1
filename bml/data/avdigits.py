"""avdigits: the embedded audio-visual dataset, generated offline as real MP4 files.

Each clip shows a real handwritten digit (scikit-learn's bundled digits, upscaled, jittered, with
Gaussian pixel noise on every frame) and speaks a digit (espeak-ng, varied voice, rate and pitch, over
white noise at a set SNR); both usually agree with the clip's label. The presets in
params/datasets/avdigits.yaml set which modality dominates (calibrated on a prototype: docs/methods.md):
`audio_dominant` makes vision informative but slow to learn (heavy per-frame noise that only averaging
over frames beats) while audio is easy, so joint training leaves the visual encoder under-optimized, the
effect the balanced-multimodal-learning papers describe on CREMA-D.

Two different effects, on purpose kept apart:
- a modality that is *hard* (visual_noise, audio_snr_db, speech_absent) is under-optimized by joint
  training: the phenomenon the balancing methods address;
- a modality that shows a *wrong* digit (p_wrong_visual, p_wrong_audio) is *uninformative*: its encoder
  learns what it sees as well alone as jointly, and no balancing can recover what is not there.

Honesty: the sklearn digit images are partitioned between the splits (a test clip never shows an image
seen in training), the labels are balanced, the splits stratified. Every clip draws from its own random
stream, seeded by (seed, clip index), so the output does not depend on the number of workers.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image
from scipy.signal import resample_poly

from bml.data import speech
from bml.data.ffmpeg import ffmpeg_exe, ffmpeg_version
from bml.layout import SPLITS
from bml.runtime import FFMPEG_CPU_FLAGS

MANIFEST_FIELDS = ["clip_id", "path", "label", "split", "digit_shown", "digit_spoken", "duration"]
NO_SPEECH = -1


@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one clip, drawn up front so generation can run in any order."""

    index: int
    clip_id: str
    label: int
    split: str
    digit_shown: int
    digit_spoken: int  # NO_SPEECH when the speech is absent
    image_index: int  # row of sklearn's digits
    n_frames: int
    voice: str
    rate: int
    pitch: int


def _split_counts(n: int, shares: dict[str, float]) -> dict[str, int]:
    n_train = int(round(n * shares["train"]))
    n_val = int(round(n * shares["val"]))
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def plan_clips(n_clips: int, seed: int, settings: dict) -> list[ClipPlan]:
    """Labels, splits, digits shown and spoken, images and voices for every clip."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng([seed, 0])
    labels = rng.permutation(np.arange(n_clips) % 10)  # balanced classes
    # Stratified split with exact global sizes: shuffle each class, interleave the classes round-robin
    # (every prefix of that order is class-balanced), then cut it at the split sizes.
    per_class = [rng.permutation(np.flatnonzero(labels == d)) for d in range(10)]
    order = [c[j] for j in range(max(map(len, per_class))) for c in per_class if j < len(c)]
    counts = _split_counts(n_clips, settings["splits"])
    split_of = np.empty(n_clips, dtype=object)
    split_of[order[: counts["train"]]] = "train"
    split_of[order[counts["train"] : counts["train"] + counts["val"]]] = "val"
    split_of[order[counts["train"] + counts["val"] :]] = "test"

    # Partition sklearn's 1,797 images between the splits, per digit, with the same shares.
    targets = load_digits().target
    pools: dict[tuple[str, int], np.ndarray] = {}
    for digit in range(10):
        images = rng.permutation(np.flatnonzero(targets == digit))
        counts = _split_counts(len(images), settings["splits"])
        pools[("train", digit)] = images[: counts["train"]]
        pools[("val", digit)] = images[counts["train"] : counts["train"] + counts["val"]]
        pools[("test", digit)] = images[counts["train"] + counts["val"] :]

    lo, hi = settings["duration"]
    plans = []
    for i in range(n_clips):
        r = np.random.default_rng([seed, 1, i])
        label, split = int(labels[i]), str(split_of[i])
        shown = _maybe_wrong(r, label, settings["p_wrong_visual"])
        spoken = _maybe_wrong(r, label, settings["p_wrong_audio"])
        if r.random() < settings["speech_absent"]:
            spoken = NO_SPEECH
        pool = pools[(split, shown)]
        n_frames = max(1, int(round(r.uniform(lo, hi) * settings["fps"])))
        plans.append(
            ClipPlan(
                index=i,
                clip_id=f"avd_{i:05d}",
                label=label,
                split=split,
                digit_shown=shown,
                digit_spoken=spoken,
                image_index=int(pool[r.integers(len(pool))]),
                n_frames=n_frames,
                voice=speech.VOICES[r.integers(len(speech.VOICES))],
                rate=int(r.integers(settings["rate"][0], settings["rate"][1] + 1)),
                pitch=int(r.integers(settings["pitch"][0], settings["pitch"][1] + 1)),
            )
        )
    return plans


def _maybe_wrong(rng: np.random.Generator, label: int, p_wrong: float) -> int:
    if rng.random() < p_wrong:
        return int((label + rng.integers(1, 10)) % 10)  # any other digit, uniformly
    return label


def render_frames(image_8x8: np.ndarray, n_frames: int, settings: dict, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, size, size) uint8 grey frames: the digit, jittered, under fresh noise on every frame."""
    size, digit_size = settings["size"], settings["digit_size"]
    digit = Image.fromarray((image_8x8 / 16.0 * 255).astype(np.uint8))
    digit = np.asarray(digit.resize((digit_size, digit_size), Image.BICUBIC), dtype=np.float32) / 255.0
    base = (size - digit_size) // 2 + rng.integers(-settings["jitter_px"], settings["jitter_px"] + 1, size=2)
    frames = np.zeros((n_frames, size, size), dtype=np.float32)  # (T, H, W) in [0, 1]
    for t in range(n_frames):
        dy, dx = base + rng.integers(-settings["frame_jitter_px"], settings["frame_jitter_px"] + 1, size=2)
        dy, dx = np.clip([dy, dx], 0, size - digit_size)
        frames[t, dy : dy + digit_size, dx : dx + digit_size] = digit
    frames += rng.normal(0.0, settings["visual_noise"], size=frames.shape).astype(np.float32)
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def render_audio(plan: ClipPlan, duration: float, settings: dict, rng: np.random.Generator) -> np.ndarray:
    """float32 mono track of `duration` s: the spoken digit at a random offset over white noise."""
    sr = settings["sample_rate"]
    n = int(round(duration * sr))
    track = np.zeros(n, dtype=np.float32)
    if plan.digit_spoken != NO_SPEECH:
        voice, voice_sr = speech.speak_digit(plan.digit_spoken, voice=plan.voice, rate=plan.rate, pitch=plan.pitch)
        gcd = np.gcd(sr, voice_sr)
        voice = resample_poly(voice, sr // gcd, voice_sr // gcd).astype(np.float32)[:n]
        voice /= max(np.abs(voice).max(), 1e-6) / 0.5  # speech peaks at half scale
        start = int(rng.integers(0, n - len(voice) + 1))
        track[start : start + len(voice)] = voice
        speech_power = float(np.mean(voice[np.abs(voice) > 0.02] ** 2))
    else:
        speech_power = 0.01  # a typical speech power at this peak
    noise_std = np.sqrt(speech_power / 10 ** (settings["audio_snr_db"] / 10))
    track += rng.normal(0.0, noise_std, size=n).astype(np.float32)
    return np.clip(track, -1.0, 1.0)


def encode_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, settings: dict) -> None:
    """Mux grey frames and a mono track into an H.264 (yuv420p) + AAC MP4, byte-for-byte reproducibly."""
    import ffmpeg

    n, h, w = frames.shape
    wav = path.with_suffix(".tmp.wav")
    tmp = path.with_suffix(".tmp.mp4")
    soundfile.write(wav, audio, settings["sample_rate"], subtype="PCM_16")
    video_in = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="gray", s=f"{w}x{h}", framerate=settings["fps"])
    audio_in = ffmpeg.input(str(wav))
    out = ffmpeg.output(
        video_in,
        audio_in,
        str(tmp),
        vcodec="libx264",
        pix_fmt="yuv420p",
        crf=settings["crf"],
        preset=settings["x264_preset"],
        acodec="aac",
        audio_bitrate="64k",
        t=n / settings["fps"],
        **{"threads": 1, "fflags": "+bitexact", "flags:v": "+bitexact", "flags:a": "+bitexact"},
    ).global_args("-hide_banner", "-loglevel", "error", "-y", *FFMPEG_CPU_FLAGS)
    try:
        out.run(cmd=ffmpeg_exe(), input=frames.tobytes(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as err:
        raise RuntimeError(f"{path}: ffmpeg could not encode the clip: {err.stderr.decode()[-500:]}") from err
    finally:
        wav.unlink(missing_ok=True)
    tmp.rename(path)


def make_clip(args: tuple[ClipPlan, int, dict, str]) -> dict:
    """Render and encode one clip; returns its manifest row. Runs in a worker process."""
    plan, seed, settings, out_dir = args
    rng = np.random.default_rng([seed, 2, plan.index])
    image = _digit_images()[plan.image_index]
    frames = render_frames(image, plan.n_frames, settings, rng)
    duration = plan.n_frames / settings["fps"]
    audio = render_audio(plan, duration, settings, rng)
    path = Path(out_dir) / "clips" / f"{plan.clip_id}.mp4"
    encode_mp4(path, frames, audio, settings)
    return {
        "clip_id": plan.clip_id,
        "path": f"clips/{plan.clip_id}.mp4",
        "label": plan.label,
        "split": plan.split,
        "digit_shown": plan.digit_shown,
        "digit_spoken": plan.digit_spoken,
        "duration": f"{duration:.2f}",
    }


_IMAGES: np.ndarray | None = None


def _digit_images() -> np.ndarray:
    """sklearn's 1,797 handwritten digits, (1797, 8, 8) with values 0..16, loaded once per process."""
    global _IMAGES
    if _IMAGES is None:
        from sklearn.datasets import load_digits

        _IMAGES = load_digits().images
    return _IMAGES


def generate(out_dir: str | Path, n_clips: int, seed: int, settings: dict, workers: int = 1, log=print) -> Path:
    """Write out_dir/clips/*.mp4, out_dir/manifest.csv and out_dir/generator.json; return the manifest."""
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    plans = plan_clips(n_clips, seed, settings)
    jobs = [(p, seed, settings, str(out_dir)) for p in plans]
    if workers > 1:
        # spawn, not fork: espeak-ng's library state must not be shared with a forked parent.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = list(pool.imap(make_clip, jobs, chunksize=8))
    else:
        rows = [make_clip(job) for job in jobs]
    manifest = out_dir / "manifest.csv"
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "generator.json").write_text(
        json.dumps(
            {
                "n_clips": n_clips,
                "seed": seed,
                "settings": settings,
                "voices": list(speech.VOICES),
                "ffmpeg": ffmpeg_version(),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    tmp.rename(manifest)  # the manifest last: it marks completion
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    log(f"avdigits: wrote {len(rows)} clips to {out_dir} ({counts})")
    return manifest


def read_generated(out_dir: str | Path) -> list[dict]:
    """The rows of a generated manifest, each clip's path made absolute."""
    out_dir = Path(out_dir).resolve()
    with (out_dir / "manifest.csv").open(newline="") as f:
        return [{**row, "path": str(out_dir / row["path"])} for row in csv.DictReader(f)]
