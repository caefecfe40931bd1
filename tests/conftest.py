"""Shared fixtures: one tiny avdigits dataset per test session (real MP4s through the real ffmpeg)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bml.config import avdigits_settings
from bml.data.avdigits import generate

REPO = Path(__file__).resolve().parents[1]
TINY_CLIPS = 40


def bml_env() -> dict[str, str]:
    """The environment for subprocesses: the venv's scripts (bml, snakemake, dvc) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(cmd: list[str], cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=bml_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_avdigits(tmp_path_factory) -> Path:
    """40 clips of the default preset; returns the manifest. Tests must not modify it."""
    out = tmp_path_factory.mktemp("avdigits") / "raw"
    return generate(out, n_clips=TINY_CLIPS, seed=0, settings=avdigits_settings("audio_dominant"),
                    workers=2, log=lambda _: None)


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """The pipeline's files in a fresh folder (the package runs from its install; DVC hashes its files)."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in ["Snakefile", "dvc.yaml", ".gitignore"]:
        shutil.copy(REPO / name, dest / name)
    for name in ["params", "workflow", "bml"]:
        shutil.copytree(REPO / name, dest / name)
    return dest


TRAIN_CLIPS = 120  # 84 train / 12 val / 24 test: enough for audio to beat chance in a few epochs


@pytest.fixture(scope="session")
def packed_avdigits(tmp_path_factory) -> Path:
    """A data root holding avdigits/packed/{train,val,test}.npy of 120 clips, made by the real pipeline
    commands (generator, ffmpeg extraction, spectrograms, pack). Tests must not modify it."""
    from bml.cli import main

    root = tmp_path_factory.mktemp("data_root")
    d = root / "avdigits"
    manifest = generate(d / "raw", n_clips=TRAIN_CLIPS, seed=3, settings=avdigits_settings("audio_dominant"),
                        workers=2, log=lambda _: None)
    main(["extract-frames", "--manifest", str(manifest), "--fps", "10", "--out", str(d / "frames"), "--workers", "2"])
    main(["extract-audio", "--manifest", str(manifest), "--sample-rate", "16000", "--out", str(d / "audio")])
    main(["spectrograms", "--audio", str(d / "audio"), "--preset", "avdigits", "--out", str(d / "spectrograms")])
    main(["pack", "--manifest", str(manifest), "--frames", str(d / "frames"), "--audio", str(d / "audio"),
          "--spectrograms", str(d / "spectrograms"), "--n-frames", "8", "--frame-size", "64", "--out",
          str(d / "packed")])
    return root
