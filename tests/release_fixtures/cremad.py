"""A small CREMA-D release tree: `AudioWAV/<stem>.wav` (16 kHz mono PCM) and `VideoFlash/<stem>.flv` (Sorenson
H.263 with MP3 audio, the FLV codecs), stems taken from the papers' split lists so the default settings apply."""

from __future__ import annotations

from pathlib import Path

from bml.data.adapters import LISTS_DIR

from . import lfs_stub, run_jobs, video, wav

WAV_RATE = 16000  # CREMA-D's AudioWAV files are 16 kHz (the release)
FLV_AUDIO_RATE = 22050  # one of the rates FLV allows for MP3
# Stems for the broken cases: train-list stems of emotions that `make_tree` does not use for good clips by default
# (SAD, FEA, DIS), plus names that are in no list.
BROKEN = {
    "lfs_stub": "1001_IEO_FEA_HI",  # WAV is a git-lfs pointer, FLV real
    "empty": "1001_IEO_FEA_LO",  # FLV has 0 bytes, WAV real
    "missing_flv": "1001_IEO_DIS_HI",  # WAV only
    "missing_wav": "1001_IEO_DIS_LO",  # FLV only
    # FLV without an audio stream, WAV real: a usable clip, since bml reads CREMA-D's audio from the WAV
    # (tests/test_release_pipeline.py packs it)
    "no_audio_stream": "1001_IEO_SAD_HI",
    "known_broken": "1076_MTI_SAD_XX",  # one of the release's four broken clips (here: real media)
    "unknown_label": "1001_DFA_CAL_XX",  # an emotion code CREMA-D does not have
    "unlisted": "1092_DFA_ANG_XX",  # a well-formed name in no split list (actors end at 1091)
}


def list_stems(split: str, emotion: str) -> list[str]:
    """The stems of one emotion in the shipped papers' list of `split`, sorted."""
    lines = (LISTS_DIR / "cremad" / f"{split}.csv").read_text(encoding="utf-8-sig").splitlines()
    return sorted(row.split(",")[0] for row in lines if row.strip().endswith("," + emotion))


def good_stems(emotions: tuple[str, ...] = ("NEU", "HAP", "ANG"), n_train: int = 2, n_test: int = 1) -> dict[str, str]:
    """stem -> split of the complete clips `make_tree` writes: the first stems of each emotion in each list."""
    return {
        stem: split
        for e in emotions
        for split, n in (("train", n_train), ("test", n_test))
        for stem in list_stems(split, e)[:n]
    }


def make_tree(
    root: Path,
    emotions: tuple[str, ...] = ("NEU", "HAP", "ANG"),
    n_train: int = 2,
    n_test: int = 1,
    broken: tuple[str, ...] = (),
) -> Path:
    """Write the release under `root` (returned): complete clips for `good_stems(...)`, plus the `broken` cases
    named in BROKEN."""
    unknown = set(broken) - set(BROKEN)
    if unknown:
        raise ValueError(f"unknown broken case(s) {sorted(unknown)}; known: {sorted(BROKEN)}")
    audio_dir, video_dir = root / "AudioWAV", root / "VideoFlash"
    audio_dir.mkdir(parents=True, exist_ok=True)
    video_dir.mkdir(parents=True, exist_ok=True)

    def flv(stem: str, tone: float, with_audio: bool = True):
        return lambda: video(
            video_dir / f"{stem}.flv",
            1.0,
            tone,
            vcodec="flv",
            acodec="libmp3lame" if with_audio else None,
            audio_rate=FLV_AUDIO_RATE,
        )

    def wave(stem: str, tone: float):
        return lambda: wav(audio_dir / f"{stem}.wav", 1.0, tone, WAV_RATE)

    stems = list(good_stems(emotions, n_train, n_test))
    stems += [BROKEN[case] for case in ("known_broken", "unknown_label", "unlisted") if case in broken]
    jobs = [job for i, stem in enumerate(stems) for job in (flv(stem, 200 + 20 * i), wave(stem, 200 + 20 * i))]
    if "lfs_stub" in broken:
        lfs_stub(audio_dir / f"{BROKEN['lfs_stub']}.wav")
        jobs.append(flv(BROKEN["lfs_stub"], 900))
    if "empty" in broken:
        (video_dir / f"{BROKEN['empty']}.flv").write_bytes(b"")
        jobs.append(wave(BROKEN["empty"], 900))
    if "missing_flv" in broken:
        jobs.append(wave(BROKEN["missing_flv"], 900))
    if "missing_wav" in broken:
        jobs.append(flv(BROKEN["missing_wav"], 900))
    if "no_audio_stream" in broken:
        jobs += [flv(BROKEN["no_audio_stream"], 900, with_audio=False), wave(BROKEN["no_audio_stream"], 900)]
    run_jobs(jobs)
    return root
