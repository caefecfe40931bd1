"""Frames and audio out of video files, through ffmpeg (driven by ffmpeg-python).

The ffmpeg binary comes from imageio-ffmpeg's wheel, so no system package is needed; ffprobe is not
shipped, so `probe` reads the stream list that `ffmpeg -i` prints. Each clip is probed first, so a
corrupt file, a clip without an audio stream or a zero-length clip is reported with its path and the
problem, recorded as skipped, and the other clips go on. A shard's outputs are written clip by clip
through a temporary name and a rename: an interruption never leaves a half-written clip behind.

Layout (one Snakemake job per shard; `index.tsv` lists every clip of the shard and its status):
    <out>/shard<k>/<clip_id>/000001.jpg ...     frames, numbered from 1, listed sorted
    <out>/shard<k>/<clip_id>.wav                 mono 16-bit PCM
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import soundfile

INDEX_NAME = "index.tsv"
INDEX_FIELDS = ["clip_id", "status", "count", "reason"]
# A clip whose decoded length falls short of what its container declares by more than this is truncated.
MIN_DECODED_SHARE = 0.9


class MediaError(RuntimeError):
    """A media file that cannot be used; the message names the file and the problem."""


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    duration: float          # seconds, from the container
    has_video: bool
    has_audio: bool
    fps: float | None        # the video stream's frame rate
    width: int | None
    height: int | None


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: .*?(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+) fps")
_AUDIO = re.compile(r"Stream #\d+:\d+.*?: Audio: ")


def probe(path: str | Path) -> MediaInfo:
    """What streams a media file holds and how long it is; MediaError when ffmpeg cannot read it."""
    path = _check_exists(path)
    # Given an input and no output, ffmpeg describes the input on stderr and exits 1: that is expected.
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True).stderr.decode(errors="replace")
    return describe(path, text)


def _check_exists(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    return path


def describe(path: Path, text: str) -> MediaInfo:
    """Parse the input description that ffmpeg prints on stderr (its log level must be info or higher)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    match = _DURATION.search(text)
    if match is None:
        reason = next((ln for ln in lines if str(path) in ln and ":" in ln.replace(str(path), "", 1)),
                      lines[-1] if lines else "no message")
        raise MediaError(f"{path}: ffmpeg cannot read it ({reason.replace(str(path) + ': ', '')})")
    h, m, s = match.groups()
    video = _VIDEO.search(text)
    fps = None
    if video:
        fps_match = _FPS.search(text[video.start():].splitlines()[0])
        fps = float(fps_match.group(1)) if fps_match else None
    return MediaInfo(path=path, duration=int(h) * 3600 + int(m) * 60 + float(s), has_video=bool(video),
                     has_audio=bool(_AUDIO.search(text)), fps=fps,
                     width=int(video.group(1)) if video else None,
                     height=int(video.group(2)) if video else None)


def _run_described(path: Path, stream, needs: str) -> tuple[MediaInfo, str]:
    """Run one ffmpeg command over `path` and read the input's description from its own stderr, so each
    clip costs one ffmpeg process per stage rather than a probe plus an extraction."""
    try:
        err = stream.global_args("-hide_banner", "-nostdin", "-nostats", "-loglevel", "info").run(
            cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)[1].decode(errors="replace")
        failed = None
    except ffmpeg.Error as error:
        err, failed = error.stderr.decode(errors="replace"), error
    info = describe(path, err)
    if not (info.has_video if needs == "video" else info.has_audio):
        raise MediaError(f"{path}: no {needs} stream")
    if info.duration <= 0:
        raise MediaError(f"{path}: zero duration")
    if failed is not None:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        raise MediaError(f"{path}: ffmpeg failed ({lines[-1] if lines else 'no message'})") from failed
    return info, err


def extract_frames(video: str | Path, out_dir: str | Path, fps: float, jpeg_quality: int = 2) -> int:
    """Write the video's frames at `fps` as numbered JPEGs into out_dir; return how many."""
    video, out_dir = _check_exists(video), Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        stream = (ffmpeg.input(str(video)).filter("fps", fps=fps)
                  .output(str(tmp / "%06d.jpg"), **{"q:v": jpeg_quality, "start_number": 1}))
        info, _ = _run_described(video, stream, needs="video")
        n = len(list(tmp.glob("*.jpg")))
        expected = fps * info.duration
        if n == 0 or n < MIN_DECODED_SHARE * expected - 1:
            raise MediaError(f"{video}: truncated or damaged: decoded {n} frames, the container declares "
                             f"{info.duration:.2f} s ({expected:.0f} frames at {fps} fps)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return n


def extract_audio(video: str | Path, wav: str | Path, sample_rate: int) -> int:
    """Write the video's audio as mono 16-bit PCM WAV at sample_rate; return the number of samples."""
    video, wav = _check_exists(video), Path(wav)
    wav.parent.mkdir(parents=True, exist_ok=True)
    tmp = wav.with_name(wav.name + ".tmp")
    try:
        stream = ffmpeg.input(str(video)).output(str(tmp), f="wav", vn=None, ac=1, ar=sample_rate,
                                                 acodec="pcm_s16le").overwrite_output()
        info, _ = _run_described(video, stream, needs="audio")
        n = soundfile.info(str(tmp)).frames
        if n == 0 or n < MIN_DECODED_SHARE * sample_rate * info.duration - sample_rate * 0.1:
            raise MediaError(f"{video}: truncated or damaged: decoded {n / sample_rate:.2f} s of audio, "
                             f"the container declares {info.duration:.2f} s")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(wav)
    return n


# --- manifests and shards ---------------------------------------------------------------------------

def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows of a manifest CSV (clip_id, path, label, split, ...), sorted by clip_id; paths made absolute."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"clip_id", "path", "label", "split"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path}: manifest lacks the columns {sorted(missing)}")
    for row in rows:
        clip = Path(row["path"])
        row["path"] = str(clip if clip.is_absolute() else (path.parent / clip))
    return sorted(rows, key=lambda r: r["clip_id"])


def shard_rows(rows: list[dict[str, str]], shard: int, n_shards: int) -> list[dict[str, str]]:
    """The clips of one shard: every n_shards-th clip in clip_id order, so shards stay balanced."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    return rows[shard::n_shards]


def write_index(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    tmp.rename(path)


def read_index(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def run_shard(rows: list[dict[str, str]], shard_dir: Path, work: Callable[[dict[str, str], Path], int],
              log: Callable[[str], None] = print) -> list[dict]:
    """Apply `work(row, shard_dir)` to every clip; a MediaError skips that clip and is recorded."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for row in rows:
        try:
            count = work(row, shard_dir)
            records.append({"clip_id": row["clip_id"], "status": "ok", "count": count, "reason": ""})
        except (MediaError, OSError, ValueError) as err:
            log(f"skipped {row['clip_id']}: {err}")
            records.append({"clip_id": row["clip_id"], "status": "skipped", "count": 0,
                            "reason": str(err).replace("\t", " ").replace("\n", " ")})
    write_index(shard_dir / INDEX_NAME, records)
    return records


def frames_work(fps: float, jpeg_quality: int) -> Callable[[dict[str, str], Path], int]:
    return lambda row, shard_dir: extract_frames(row["path"], shard_dir / row["clip_id"], fps, jpeg_quality)


def audio_work(sample_rate: int) -> Callable[[dict[str, str], Path], int]:
    return lambda row, shard_dir: extract_audio(row["path"], shard_dir / f"{row['clip_id']}.wav", sample_rate)


def run_shards(manifest: str | Path, out_root: str | Path, n_shards: int,
               work: Callable[[dict[str, str], Path], int], shards: list[int] | None = None,
               workers: int = 1) -> list[dict]:
    """Run the given shards (all by default) of a manifest; threads suffice since ffmpeg does the work."""
    rows = read_manifest(manifest)
    shards = list(range(n_shards)) if shards is None else shards
    out_root = Path(out_root)

    def one(k: int) -> list[dict]:
        return run_shard(shard_rows(rows, k, n_shards), out_root / f"shard{k}", work)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [rec for recs in pool.map(one, shards) for rec in recs]


def list_frames(clip_dir: str | Path) -> list[Path]:
    """A clip's frame files in order (directory listings are unordered: always sort)."""
    return sorted(Path(clip_dir).glob("*.jpg"))
