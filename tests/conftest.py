"""Shared fixtures: tiny avdigits datasets (real MP4s through the real ffmpeg and the real `bml` commands),
project copies for Snakemake and DVC, and resolved cell configurations for the loop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bml.data.avdigits import generate
from bml.data.sources import generator_settings
from bml.datasets import load_dataset
from bml.layout import Layout
from bml.plan import load_pipeline, resolve_cell

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params"
TINY_CLIPS = 40
TRAIN_CLIPS = 120  # 84 train / 12 val / 24 test: enough for audio to beat chance in a few epochs
NO_TRACKING = {"uri": "none", "artifacts": "mlartifacts"}


def bml_env() -> dict[str, str]:
    """The environment for subprocesses: the venv's scripts (bml, snakemake, dvc) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(
    cmd: list[str], cwd: Path | None = None, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env or bml_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def avdigits_settings(preset: str = "audio_dominant") -> dict:
    """The generator's settings of a preset, as params/datasets/avdigits.yaml gives them."""
    source = load_dataset("avdigits", PARAMS, load_pipeline(PARAMS)).source
    return generator_settings({**source, "preset": preset})


def make_data(root: Path, n_clips: int, seed: int, extra: dict | None = None) -> Path:
    """Run the real data stages (`bml manifest`, `extract`, `pack`) for avdigits in `root`; returns root."""
    overrides = json.dumps({"datasets": {"avdigits": {"n_clips": n_clips, "seed": seed}}, **(extra or {})})
    for cmd in (
        ["manifest", "--dataset", "avdigits"],
        ["extract", "--dataset", "avdigits", "--recipe", "embedded"],
        ["pack", "--dataset", "avdigits", "--recipe", "embedded"],
    ):
        run([sys.executable, "-m", "bml.cli", *cmd, "--overrides", overrides], cwd=root)
    return root


def cell_config(
    data_root: Path,
    results: Path,
    method: str = "joint",
    fusion: str = "concat",
    seed: int = 0,
    epochs: int = 3,
    sets: tuple[str, ...] = (),
    tracking: dict | None = None,
    params_dir: Path = PARAMS,
    dataset: str = "avdigits",
    protocol: str = "embedded",
) -> dict:
    """A cell's resolved configuration whose data is under data_root and whose run folder is under results."""
    pipeline = load_pipeline(
        params_dir, {"data_root": str(data_root), "results_root": str(results), "tracking": tracking or NO_TRACKING}
    )
    layout = Layout(str(data_root), str(results), str(results / "reports"))
    cell = resolve_cell(
        load_dataset(dataset, params_dir, pipeline),
        protocol,
        method,
        fusion,
        seed,
        params_dir,
        pipeline,
        layout,
        (f"train.epochs={epochs}", "train.probe_every=2", *sets),
    )
    return cell.config


@pytest.fixture(scope="session")
def tiny_avdigits(tmp_path_factory) -> Path:
    """40 generated clips of the default preset; returns the generator's manifest. Tests must not modify it."""
    out = tmp_path_factory.mktemp("avdigits") / "raw"
    return generate(out, n_clips=TINY_CLIPS, seed=0, settings=avdigits_settings(), workers=2, log=lambda _: None)


@pytest.fixture(scope="session")
def packed_avdigits(tmp_path_factory) -> Path:
    """A data root holding avdigits/embedded/packed/{train,val,test}.npy of 120 clips, made by the real data
    stages. Tests must not modify it."""
    return make_data(tmp_path_factory.mktemp("data_root"), TRAIN_CLIPS, seed=3) / "data"


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """The pipeline's files in a fresh folder (the package runs from its install; DVC hashes its files)."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in ["Snakefile", "dvc.yaml", ".gitignore", ".dvcignore"]:
        shutil.copy(REPO / name, dest / name)
    for name in ["params", "workflow", "bml", "profiles"]:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


TINY_RUNS = [
    {"method": m, "fusion": f}
    for m, f in (
        ("audio_only", "none"),
        ("visual_only", "none"),
        ("ensemble", "none"),
        ("joint", "concat"),
        ("ogm_ge", "concat"),
    )
]


def tiny_project(
    project: Path,
    epochs: int = 2,
    n_clips: int = 20,
    runs: list[dict] | None = None,
    extra_blocks: list[dict] | None = None,
    datasets: dict | None = None,
) -> dict:
    """Shrink a project copy's params to a tiny matrix (one seed, 2 shards, `epochs` epochs); returns params.yaml."""
    path = project / "params" / "params.yaml"
    params = load_pipeline(project / "params")
    params["datasets"] = {"avdigits": {"n_clips": n_clips, "seed": 1}, **(datasets or {})}
    params["extract"]["n_shards"] = 2
    params["matrices"] = {
        "tiny": [
            {"dataset": "avdigits", "protocol": "embedded", "seeds": [0], "runs": runs or TINY_RUNS},
            *(extra_blocks or []),
        ]
    }
    params["matrix"] = "tiny"
    params["evaluation"]["probe_cs"] = [0.1, 1.0]
    params["evaluation"]["probe_max_iter"] = 50
    import yaml

    path.write_text(yaml.safe_dump(params, sort_keys=False))
    protocol = project / "params" / "protocols" / "embedded.yaml"
    protocol.write_text(protocol.read_text().replace("epochs: 16 ", f"epochs: {epochs} "))
    return params


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests share 2 cores with each other's subprocesses: torch's default 2 threads made runs about 5x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TWO_BY_TWO = [{"method": "joint", "fusion": "concat"}, {"method": "ogm_ge", "fusion": "concat"}]


def copy_project(dest: Path) -> Path:
    """The pipeline's files in `dest` (a fresh project folder)."""
    dest.mkdir(parents=True)
    for name in ["Snakefile", "dvc.yaml", ".gitignore", ".dvcignore"]:
        shutil.copy(REPO / name, dest / name)
    for name in ["params", "workflow", "bml", "profiles"]:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def two_by_two(project: Path, epochs: int = 2, runs: list[dict] | None = None) -> Path:
    """The tiny 2 x 2 matrix (joint and OGM-GE, seeds 0 and 1) in a project copy."""
    import yaml

    params = tiny_project(project, epochs=epochs, runs=runs or TWO_BY_TWO)
    params["matrices"]["tiny"][0]["seeds"] = [0, 1]
    (project / "params" / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


@pytest.fixture(scope="session")
def built_2x2(tmp_path_factory) -> Path:
    """The 2 x 2 matrix built by a local Snakemake: the reference other engines and executors are compared with.
    Tests must not modify it (copy it)."""
    project = two_by_two(copy_project(tmp_path_factory.mktemp("built") / "project"))
    run(["snakemake", "-s", str(project / "Snakefile"), "--directory", str(project), "--cores", "2"])
    return project
