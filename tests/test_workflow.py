"""The real Snakemake and DVC pipelines on a tiny configuration, in temporary folders."""

import json

import numpy as np
import pytest
import yaml
from conftest import REPO, run

TINY = {
    "data_root": "data",
    "avdigits": {"preset": "audio_dominant", "n_clips": 20, "seed": 1, "workers": 2},
    "extract": {"fps": 10, "sample_rate": 16000, "jpeg_quality": 2, "n_shards": 2},
    "features": {"audio_preset": "avdigits", "n_frames": 4, "frame_size": 32},
    "results_root": "results",
    "train": {"dataset": "avdigits", "protocol": "embedded", "seeds": [0],
              "runs": [{"method": "audio_only", "fusion": "none"}, {"method": "visual_only", "fusion": "none"},
                       {"method": "joint", "fusion": "concat"}],
              "ensemble": True},
    "report": {"out_dir": "reports", "baseline": "joint", "test": "t", "alpha": 0.05, "which": "best"},
    "evaluation": {"probe_cs": [0.1, 1.0], "probe_max_iter": 50, "noise_std": 1.0},
    "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"},
}
TRAIN_CELLS = ["none/audio_only", "none/visual_only", "concat/joint", "none/ensemble"]


def tiny_project(project, config=TINY, epochs=2):
    """Write the tiny config, and a 2-epoch embedded protocol, into a project copy."""
    (project / "params" / "params.yaml").write_text(yaml.safe_dump(config))
    protocol = project / "params" / "protocols" / "embedded.yaml"
    protocol.write_text(protocol.read_text().replace("epochs: 20 ", f"epochs: {epochs} "))


def snakemake(project, *args, check=True):
    return run(["snakemake", "-s", str(project / "Snakefile"), "--directory", str(project), *args], check=check)


def test_dry_run_lists_every_data_and_training_job(project_copy):
    tiny_project(project_copy)
    out = snakemake(project_copy, "-n", "--cores", "2").stdout
    for rule, count in [("generate_avdigits", 1), ("extract_frames", 2), ("extract_audio", 2),
                        ("spectrograms", 2), ("pack", 1), ("train", 4), ("report", 1)]:
        assert any(line.split() == [rule, str(count)] for line in out.splitlines()), (rule, out[-1500:])


def test_bad_config_is_refused_before_any_job(project_copy):
    bad = {**TINY, "avdigits": {**TINY["avdigits"], "preset": "loud"}}
    (project_copy / "params" / "params.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(project_copy, "--cores", "2", check=False)
    assert proc.returncode != 0
    assert "avdigits.preset" in proc.stderr + proc.stdout and "audio_dominant" in proc.stderr + proc.stdout
    assert not (project_copy / "data").exists()


def test_a_training_cell_the_method_cannot_run_is_refused_before_any_job(project_copy):
    bad = {**TINY, "train": {**TINY["train"], "runs": [{"method": "audio_only", "fusion": "concat"}]}}
    (project_copy / "params" / "params.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(project_copy, "--cores", "2", check=False)
    assert proc.returncode != 0
    assert "method 'audio_only' works with fusion ['none']" in proc.stderr + proc.stdout
    assert not (project_copy / "data").exists()


@pytest.mark.slow
def test_tiny_snakemake_run_builds_the_packed_splits_and_trains_the_matrix(project_copy):
    tiny_project(project_copy)
    snakemake(project_copy, "--cores", "2")
    root = project_copy / "data" / "avdigits"
    summary = json.loads((root / "summary.json").read_text())
    assert summary["n_packed"] == 20 and summary["splits"] == {"test": 4, "train": 14, "val": 2}
    train = np.load(root / "packed" / "train.npy", mmap_mode="r")
    assert train["frames"].shape == (14, 4, 3, 32, 32)
    assert (root / "logs" / "extract_frames_0.log").is_file()
    assert (root / "benchmarks" / "generate.tsv").is_file()
    for cell in TRAIN_CELLS:
        metrics = json.loads((project_copy / "results" / "avdigits" / "embedded" / cell / "seed0" /
                              "metrics.json").read_text())
        assert metrics["run"]["seed"] == 0 and metrics["config"]["train"]["epochs"] == 2, cell
        assert 0 <= metrics["test"]["best"]["acc"] <= 100
    assert (project_copy / "mlflow.db").is_file()
    assert (project_copy / "logs" / "train" / "avdigits" / "embedded" / "concat" / "joint" / "seed0.log").is_file()
    summary = json.loads((project_copy / "reports" / "summary.json").read_text())
    assert summary["avdigits/embedded/concat/joint"]["n_seeds"] == 1
    assert "main_embedded_concat" in (project_copy / "reports" / "index.html").read_text()
    # nothing left to do the second time
    assert "Nothing to be done" in snakemake(project_copy, "--cores", "2").stderr


@pytest.mark.slow
def test_dvc_repro_in_a_fresh_git_repository(project_copy):
    tiny_project(project_copy)
    run(["git", "init", "-q"], cwd=project_copy)
    run(["dvc", "init", "-q"], cwd=project_copy)
    run(["git", "add", "-A"], cwd=project_copy)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], cwd=project_copy)

    run(["dvc", "repro"], cwd=project_copy)
    root = project_copy / "data" / "avdigits"
    first = (root / "packed" / "train.npy").read_bytes()
    assert json.loads((root / "summary.json").read_text())["n_packed"] == 20
    for cell in TRAIN_CELLS:
        assert (project_copy / "results" / "avdigits" / "embedded" / cell / "seed0" / "metrics.json").is_file()
    metrics = run(["dvc", "metrics", "show", "--json"], cwd=project_copy).stdout
    assert "test" in metrics and "ensemble" in metrics and "reports/summary.json" in metrics
    lock = yaml.safe_load((project_copy / "dvc.lock").read_text())
    assert lock["stages"]["generate_avdigits"]["params"]["params/params.yaml"]["avdigits"]["n_clips"] == 20

    again = run(["dvc", "repro"], cwd=project_copy).stdout
    assert "Running stage" not in again and "up to date" in again

    # outputs are cached: delete them and get them back without running anything
    (root / "packed" / "train.npy").unlink()
    run(["dvc", "checkout"], cwd=project_copy)
    assert (root / "packed" / "train.npy").read_bytes() == first

    # a changed parameter reruns exactly the stages that depend on it
    params = yaml.safe_load((project_copy / "params" / "params.yaml").read_text())
    params["features"]["frame_size"] = 16
    (project_copy / "params" / "params.yaml").write_text(yaml.safe_dump(params))
    out = run(["dvc", "repro"], cwd=project_copy).stdout
    assert "Running stage 'pack'" in out and "Running stage 'generate_avdigits'" not in out
    assert "Running stage 'train@0-run2'" in out  # new features: the models are retrained
    assert np.load(root / "packed" / "train.npy", mmap_mode="r")["frames"].shape[-1] == 16


def test_dvc_yaml_and_snakemake_read_the_same_parameter_file():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert dvc["vars"] == ["params/params.yaml"]
    assert 'configfile: f"{workflow.basedir}/params/params.yaml"' in (REPO / "Snakefile").read_text()
