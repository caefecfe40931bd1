"""The real Snakemake and DVC pipelines on a tiny configuration, in temporary folders."""

import json

import numpy as np
import pytest
import yaml
from conftest import run, tiny_project


def snakemake(project, *args, check=True):
    return run(["snakemake", "-s", str(project / "Snakefile"), "--directory", str(project), *args], check=check)


def test_dry_run_lists_every_data_and_training_job(project_copy):
    tiny_project(project_copy)
    out = snakemake(project_copy, "-n", "--cores", "2").stdout
    for rule, count in [
        ("generate", 1),
        ("extract", 2),
        ("pack", 1),
        ("train", 4),
        ("evaluate_only", 1),
        ("report", 1),
    ]:
        assert any(line.split() == [rule, str(count)] for line in out.splitlines()), (rule, out[-1500:])


def test_a_bad_value_is_refused_before_any_job(project_copy):
    tiny_project(project_copy, datasets={"avdigits": {"preset": "loud"}})
    proc = snakemake(project_copy, "--cores", "2", check=False)
    assert proc.returncode != 0
    text = proc.stderr + proc.stdout
    assert "source.preset" in text and "'loud' is not allowed" in text and "audio_dominant" in text
    assert not (project_copy / "data").exists()


@pytest.mark.slow
def test_the_default_profile_applies_to_a_plain_snakemake(project_copy):
    tiny_project(project_copy)
    out = snakemake(project_copy, "-n").stdout + snakemake(project_copy, "-n").stderr
    assert "profiles/default" in out  # Snakemake says which workflow profile it loaded


@pytest.mark.slow
def test_dvc_repro_in_a_fresh_git_repository(project_copy):
    tiny_project(project_copy)
    run(["git", "init", "-q"], cwd=project_copy)
    run(["dvc", "init", "-q"], cwd=project_copy)
    run(["bml", "plan", "--dvc-yaml", "dvc.yaml"], cwd=project_copy)
    run(["git", "add", "-A"], cwd=project_copy)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], cwd=project_copy)

    run(["dvc", "repro"], cwd=project_copy)
    root = project_copy / "data" / "avdigits"
    first = (root / "embedded" / "packed" / "train.npy").read_bytes()
    assert json.loads((root / "embedded" / "summary.json").read_text())["n_packed"] == 20
    for cell in ("none/audio_only", "none/visual_only", "none/ensemble", "concat/joint", "concat/ogm_ge"):
        assert (project_copy / "results" / "avdigits" / "embedded" / cell / "seed0" / "metrics.json").is_file()
    metrics = run(["dvc", "metrics", "show", "--json"], cwd=project_copy).stdout
    assert "ensemble" in metrics and "reports/summary.json" in metrics

    again = run(["dvc", "repro"], cwd=project_copy).stdout
    assert "Running stage" not in again.replace("Running stage 'plan'", "")

    # outputs are cached: delete them and get them back without running anything
    (root / "embedded" / "packed" / "train.npy").unlink()
    run(["dvc", "checkout"], cwd=project_copy)
    assert (root / "embedded" / "packed" / "train.npy").read_bytes() == first

    # a changed recipe value reruns the features and what depends on them, not the generator
    recipe = project_copy / "params" / "datasets" / "avdigits.yaml"
    spec = yaml.safe_load(recipe.read_text())
    assert spec["recipes"]["embedded"]["visual"]["size"] != 24
    spec["recipes"]["embedded"]["visual"]["size"] = 24
    recipe.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = run(["dvc", "repro"], cwd=project_copy).stdout
    assert "Running stage 'extract-avdigits-embedded-0'" in out and "Running stage 'manifest-avdigits'" not in out
    assert "Running stage 'train-avdigits-embedded-joint-concat-s0'" in out  # new features: retrained
    assert np.load(root / "embedded" / "packed" / "train.npy", mmap_mode="r")["visual"].shape[-1] == 24
