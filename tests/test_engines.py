"""Both engines, for real, on a tiny matrix in temp folders: DVC gives Snakemake's numbers; a DVC remote restores
every result in a fresh clone; `dvc exp run -S` reruns what the parameter reaches; Snakemake's own report; a
killed workflow, under either engine, restarts without redoing finished jobs and its interrupted training resumes
from its checkpoint and ends identical to an uninterrupted one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import bml_env, copy_project, run, tiny_project, two_by_two

pytestmark = pytest.mark.slow
CELLS = [f"concat/{m}/seed{s}" for m in ("joint", "ogm_ge") for s in (0, 1)]


def snakemake(project: Path, *args, check=True):
    return run(["snakemake", "-s", str(project / "Snakefile"), "--directory", str(project), *args], check=check)


def git_dvc_init(project: Path) -> None:
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["bml", "plan", "--dvc-yaml", "dvc.yaml"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        run(cmd, cwd=project)


def metrics(project: Path, cell: str) -> dict:
    return json.loads((project / "results/avdigits/embedded" / cell / "metrics.json").read_text())


def test_snakemakes_own_report_carries_the_tables_and_figures(built_2x2, tmp_path):
    built = built_2x2
    out = tmp_path / "report.zip"
    snakemake(built, "--report", str(out))
    names = zipfile.ZipFile(out).namelist()
    assert any(n.endswith("main_embedded_concat.md") for n in names), names[:20]
    assert any(n.endswith("avdigits_embedded_concat_probes.png") for n in names)


def test_a_forced_rerun_of_a_finished_cell_trains_it_again(built_2x2, tmp_path):
    """`snakemake --forcerun` deletes the cell's metrics.json before its job runs; the job then finds a finished
    run's checkpoint and must train from the first epoch, not resume after the last one and only evaluate."""
    project = tmp_path / "project"
    shutil.copytree(built_2x2, project, symlinks=True)
    cell = "results/avdigits/embedded/concat/joint/seed0"
    before = metrics(project, "concat/joint/seed0")
    snakemake(project, "--cores", "1", f"{cell}/metrics.json", "--forcerun", f"{cell}/metrics.json")
    log = (project / "logs/train/avdigits/embedded/concat/joint/seed0.log").read_text()
    assert "starting over" in log and "resuming" not in log, log[-2000:]
    epochs = len(before["test_by_epoch"]["epoch"])
    assert all(f"epoch {e}/{epochs}:" in log for e in range(1, epochs + 1)), log[-2000:]
    after = metrics(project, "concat/joint/seed0")
    assert after["mlflow_run_id"] != before["mlflow_run_id"]  # a new run, not the finished one continued
    assert after["test"] == before["test"]  # the same seed trained again gives the same numbers


def test_dvc_gives_snakemakes_numbers_and_a_remote_restores_them_in_a_fresh_clone(built_2x2, tmp_path):
    built = built_2x2
    project = two_by_two(copy_project(tmp_path / "dvc"))
    git_dvc_init(project)
    run(["dvc", "repro"], cwd=project)
    for cell in CELLS:  # the same metrics.json, whichever engine trained it
        assert metrics(project, cell)["test"] == metrics(built, cell)["test"], cell
    assert run(["dvc", "plots", "show", "--json"], cwd=project).returncode == 0

    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "store", str(remote)], cwd=project)
    run(["dvc", "push"], cwd=project)
    run(["git", "add", "-A"], cwd=project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], cwd=project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)])
    assert not (clone / "results").exists() and not (clone / "data").exists()
    run(["dvc", "pull"], cwd=clone)
    for path in (
        "data/avdigits/embedded/packed/train.npy",
        "data/avdigits/manifest.csv",
        "results/avdigits/embedded/concat/ogm_ge/seed1/checkpoint.pt",
        "reports/summary.json",
        *[f"results/avdigits/embedded/{cell}/metrics.json" for cell in CELLS],
    ):
        assert (clone / path).is_file(), path
    assert metrics(clone, CELLS[0]) == metrics(project, CELLS[0])
    out = run(["dvc", "repro"], cwd=clone).stdout  # only the plan's witnesses (not cached) are written again
    assert {ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage")} <= {"plan"}

    # an experiment with one method parameter set: that method's cells and the report run, nothing else
    out = run(["dvc", "exp", "run", "-S", "params/methods/ogm_ge.yaml:alpha=0.5"], cwd=project).stdout
    ran = {ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage")} - {"plan"}
    assert ran == {"train-avdigits-embedded-ogm_ge-concat-s0", "train-avdigits-embedded-ogm_ge-concat-s1", "report"}
    shown = run(["dvc", "exp", "show", "--json"], cwd=project).stdout
    assert '"alpha": 0.5' in shown and "params/methods/ogm_ge.yaml" in shown


def _kill_when_training(cmd: list[str], cwd: Path, checkpoint: Path) -> int:
    """Start a whole workflow, SIGKILL it (every process of it) once `checkpoint` holds epoch 2; the epoch killed at."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=bml_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists():
            with contextlib.suppress(EOFError, RuntimeError):  # renamed into place while read: read it next time
                if torch.load(checkpoint, weights_only=False)["epoch"] >= 2:
                    break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return torch.load(checkpoint, weights_only=False)["epoch"]


@pytest.mark.parametrize("engine", ["snakemake", "dvc"])
def test_a_killed_workflow_restarts_and_its_training_resumes_identically(tmp_path, engine):
    project = copy_project(tmp_path / "project")
    tiny_project(project, epochs=6, runs=[{"method": "joint", "fusion": "concat"}])
    cell = "results/avdigits/embedded/concat/joint/seed0"
    if engine == "dvc":
        git_dvc_init(project)
        start = restart = ["dvc", "repro"]
    else:
        start = ["snakemake", "--cores", "2"]
        restart = ["bash", "-c", "snakemake --unlock && snakemake --cores 2"]  # what `make run` does by itself
    stopped = _kill_when_training(start, project, project / cell / "checkpoint.pt")
    assert 2 <= stopped < 6 and not (project / cell / "metrics.json").exists()
    shard = project / "data/avdigits/embedded/shards/shard0.npy"
    before = shard.stat().st_mtime_ns

    out = run(restart, cwd=project)
    assert shard.stat().st_mtime_ns == before  # finished jobs are not redone
    log = (
        (project / "logs/train/avdigits/embedded/concat/joint/seed0.log").read_text()
        if engine == "snakemake"
        else out.stderr + out.stdout
    )
    assert f"resuming {cell} after epoch {stopped}" in log

    reference = run(
        [
            "bml",
            "train",
            "--cell",
            "avdigits-embedded-joint-concat-s0",
            "--threads",
            "1",
            "--overrides",
            json.dumps({"results_root": "reference"}),
        ],
        cwd=project,
    )
    assert reference.returncode == 0
    resumed = json.loads((project / cell / "metrics.json").read_text())
    whole = json.loads((project / "reference/avdigits/embedded/concat/joint/seed0/metrics.json").read_text())
    assert resumed["test"] == whole["test"] and resumed["best_epoch"] == whole["best_epoch"]
