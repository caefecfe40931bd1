"""SLURM for real: start a one-node cluster with scripts/slurm-cluster.sh, run a 3-job workflow
(tests/slurm_fixture/) through the real profiles/slurm and bml's workflow profile (profiles/default, which
Snakemake loads beside bml's Snakefile by itself), and check that every job ran as a SLURM job with as many CPUs
as its threads (the rule's, or the profile's set-threads), even from a one-core login node. A cluster that cannot
start fails the test (never a skip).

Test-only overrides, layered over the real profile with a second --profile (later profiles replace whole
top-level keys, so each overridden key is the real one with a few values changed):
- train's gpu 1 -> 0 (set-resources, which the real profile leaves to the command line: the rules say what jobs
  need): the test node has no GPU (test_profile_asks_sbatch_for_one_gpu checks the rule's value);
- mem_mb -> TEST_MEM_MB: sbatch rejects --mem above the node's RealMemory (bml's train rule asks 32000 MB);
- train's threads -> TRAIN_THREADS: sbatch rejects more CPUs per task than the node has (the profile asks 8);
- the plugin's first status check after 1 s instead of 40 s, to keep the test short.
"""

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"
PROFILE = ROOT / "profiles" / "slurm"
FIXTURE = ROOT / "tests" / "slurm_fixture"

TEST_MEM_MB = 500  # fits any node that runs the test suite; not enforced (the test cluster has no cgroups)
# set-threads for train (the rule itself says 1, as bml's does): above 1, so that set-threads -> threads ->
# --cpus-per-task and --threads is visible; needs a node with >= 2 CPUs.
TRAIN_THREADS = 2
# The submitting Snakemake runs on this many cores (taskset), fewer than TRAIN_THREADS: a login node's core count
# must not cap a cluster job's threads (profiles/default has no `cores`).
LOGIN_CORES = 1
PREPARE_THREADS = 1  # `threads: 1` of rule prepare in tests/slurm_fixture/Snakefile
FIXTURE_TRAIN_RUNTIME = 90  # `runtime=90` of rule train there: a rule's own walltime beats default-resources
INIT_STATUS_SECONDS = 1  # --slurm-init-seconds-before-status-checks: the plugin's minimum (validation.py)
RUN_TIMEOUT_S = 300  # the run takes about 30 s; a plugin that never sees its jobs finish hangs instead

pytestmark = pytest.mark.slow


def run_script(action: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), action], capture_output=True, text=True, timeout=600)


def start_cluster() -> None:
    """Start the cluster (idempotent: about 50 ms when it is up); a cluster that cannot start fails the test."""
    started = run_script("start")
    if started.returncode != 0:
        pytest.fail(f"scripts/slurm-cluster.sh start failed (exit {started.returncode}):\n{started.stderr}")
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    assert cpus >= TRAIN_THREADS, f"the test node has {cpus} CPUs; the train job asks for {TRAIN_THREADS}"


@pytest.fixture(scope="module")
def stop_cluster_after():
    """Stops the cluster after this module's tests if it was not up before them (someone else's stays up)."""
    was_up = run_script("status").returncode == 0
    yield
    if not was_up:
        stopped = run_script("stop")
        assert stopped.returncode == 0, f"scripts/slurm-cluster.sh stop failed:\n{stopped.stderr}"


def override_profile(folder: Path, train_gpu: int) -> Path:
    """A profile with the test-only overrides (module docstring), each built from the real profile's value."""
    real = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert "set-resources" not in real  # else the block below would drop the real profile's
    overrides = {
        "default-resources": {**real["default-resources"], "mem_mb": TEST_MEM_MB},
        "set-resources": {"train": {"gpu": train_gpu, "mem_mb": TEST_MEM_MB}},
        "set-threads": {**real["set-threads"], "train": TRAIN_THREADS},
        "slurm-init-seconds-before-status-checks": INIT_STATUS_SECONDS,
    }
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(overrides))
    return folder


def snakemake(workdir: Path, overrides: Path) -> subprocess.CompletedProcess:
    """The fixture workflow from a login node with LOGIN_CORES cores, bml's workflow profile applied as to bml's."""
    command = ["taskset", "-c", ",".join(map(str, range(LOGIN_CORES))), sys.executable, "-m", "snakemake"]
    command += ["--profile", str(PROFILE), "--profile", str(overrides)]
    command += ["--workflow-profile", str(ROOT / "profiles" / "default"), "--snakefile", str(FIXTURE / "Snakefile")]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def slurm_job(job_id: str) -> dict[str, str]:
    """scontrol's record of a job (kept MinJobAge seconds after it ends), as a dict of its KEY=VALUE fields."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True)
    return dict(field.split("=", 1) for field in out.stdout.split() if "=" in field)


def finish_times(log: str) -> dict[str, float]:
    """SLURM job id -> when Snakemake saw it finish, from the run's log (timestamps to the second; the target
    rule `all` finishes too but is no SLURM job)."""
    slurm_id = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    finished = re.findall(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]\nFinished jobid: (\d+)", log)
    stamps = {job: datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y").timestamp() for stamp, job in finished}
    return {slurm_job_id: stamps[job] for job, slurm_job_id in slurm_id.items()}


def slurm_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").timestamp()


def test_workflow_runs_as_slurm_jobs_with_their_threads(stop_cluster_after, tmp_path):
    start_cluster()
    workdir = tmp_path / "work"
    workdir.mkdir()
    overrides = override_profile(tmp_path / "overrides", train_gpu=0)
    began = time.monotonic()
    run = snakemake(workdir, overrides)
    wall_s = time.monotonic() - began
    assert run.returncode == 0, f"snakemake failed (exit {run.returncode}):\n{run.stderr[-4000:]}"

    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    default_runtime = profile["default-resources"]["runtime"]
    expected = {  # output -> (threads, walltime in minutes) the job should have got
        "prepare/seed0.json": (PREPARE_THREADS, default_runtime),
        "prepare/seed1.json": (PREPARE_THREADS, default_runtime),
        "train/metrics.json": (TRAIN_THREADS, FIXTURE_TRAIN_RUNTIME),
    }
    finished = finish_times(run.stderr)
    rows = []
    for name, (threads, runtime_min) in expected.items():
        record = json.loads((workdir / name).read_text())
        job_id = record["slurm_job_id"]
        assert job_id and job_id.isdigit(), f"{name} did not run as a SLURM job: {record}"
        assert record["threads"] == threads, f"{name}: the command got --threads {record['threads']}, not {threads}"
        assert record["slurm_cpus_per_task"] == str(threads), f"{name}: SLURM gave {record['slurm_cpus_per_task']}"
        job = slurm_job(job_id)
        assert job["JobState"] == "COMPLETED" and job["NumCPUs"] == str(threads), f"{name}: {job}"
        assert job["TimeLimit"] == f"{runtime_min // 60:02d}:{runtime_min % 60:02d}:00", f"{name}: {job['TimeLimit']}"
        assert job["Account"] == "(null)", f"{name}: submitted with an account, {job['Account']}"
        own = record["end"] - record["start"]
        submit, start, end = (slurm_time(job[key]) for key in ("SubmitTime", "StartTime", "EndTime"))
        rows.append((name, job_id, own, start - submit, end - start - own, finished[job_id] - end))
    assert len({row[1] for row in rows}) == len(rows), f"jobs share a SLURM job id: {rows}"

    print(f"\nwall time of the 3-job run through profiles/slurm: {wall_s:.1f} s")
    print("job                  slurm id  own s  overhead s (queued + in-job start/stop + until Snakemake saw it)")
    for name, job_id, own, queued, in_job, noticed in rows:
        total = queued + in_job + noticed
        print(f"{name:20s} {job_id:>8s}  {own:5.1f}  {total:5.1f} = {queued:.0f} + {in_job:.1f} + {noticed:.0f}")
        # The plugin checks again at most 180 s later (max_sleep_time in its __init__.py); 2 s for the timestamps'
        # one-second resolution. A plugin blind to finished jobs (sacct without a database) never sees them.
        assert noticed <= 182, f"{name}: Snakemake saw the job finish {noticed:.0f} s after it ended"


def test_profile_asks_sbatch_for_one_gpu(stop_cluster_after, tmp_path):
    """The train rule's `gpu=1` (as bml's) reaches sbatch as --gpus=1: the test cluster has no GPU (no GRES
    configured), so sbatch refuses the job, and the plugin's error message shows the sbatch call."""
    start_cluster()
    workdir = tmp_path / "work"
    (workdir / "prepare").mkdir(parents=True)
    for seed in (0, 1):
        (workdir / "prepare" / f"seed{seed}.json").write_text("{}")  # train's inputs, so only train runs
    run = snakemake(workdir, override_profile(tmp_path / "overrides", train_gpu=1))
    assert run.returncode != 0, "sbatch accepted a GPU job on a cluster without GPUs"
    assert "SLURM sbatch failed" in run.stderr and "--gpus=1" in run.stderr, run.stderr[-4000:]
    # A GPU job's CPUs come from its threads as well (not from a separate cpus_per_task or cpus_per_gpu).
    assert f"--cpus-per-task={TRAIN_THREADS}" in run.stderr, run.stderr[-4000:]
    # restart-times: 1 in the profile: the refused job is submitted a second time before the run gives up.
    assert "--attempt 2" in run.stderr, run.stderr[-4000:]
    assert not (workdir / "train" / "metrics.json").exists()


def test_profile_leaves_account_to_slurm_and_cpus_to_threads():
    """No account (a placeholder stops the run; see the comments atop the profile), no cpus_per_task beside
    threads, and job states from squeue (no accounting database needed)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    resources = profile["default-resources"]
    assert not [r for r in resources if r in ("slurm_account", "cpus_per_task", "cpus_per_gpu")]
    assert profile["slurm-status-command"] == "squeue" and profile["executor"] == "slurm"
    # no set-resources: one `--set-resources` on the command line would replace the whole block
    assert "set-resources" not in profile


def test_script_refuses_unknown_action():
    result = subprocess.run([str(SCRIPT), "restart"], capture_output=True, text=True)
    assert result.returncode != 0 and "usage" in result.stderr


def test_the_tiny_matrix_on_slurm_gives_the_local_runs_numbers(stop_cluster_after, built_2x2, tmp_path):
    """bml's own workflow through the real profile: the manifest, extraction (a job per shard), packing and one
    training cell run as SLURM jobs, and the cell's metrics equal those of the same cell run locally (built_2x2:
    one thread, so the SLURM train job gets one thread too)."""
    from conftest import bml_env, copy_project, two_by_two

    start_cluster()
    project = two_by_two(copy_project(tmp_path / "project"))
    overrides = override_profile(tmp_path / "overrides", train_gpu=0)
    profile = yaml.safe_load((overrides / "config.yaml").read_text())
    profile["set-threads"]["train"] = 1  # CPU numbers depend on the thread count: the local run used one
    (overrides / "config.yaml").write_text(yaml.safe_dump(profile))
    cell = "results/avdigits/embedded/concat/joint/seed0/metrics.json"
    began = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(PROFILE),
        "--profile",
        str(overrides),
        "--snakefile",
        str(project / "Snakefile"),
        "--directory",
        str(project),
        cell,
    ]
    run = subprocess.run(command, cwd=project, env=bml_env(), capture_output=True, text=True, timeout=900)
    wall_s = time.monotonic() - began
    assert run.returncode == 0, f"snakemake failed (exit {run.returncode}):\n{run.stderr[-4000:]}"
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", run.stderr)
    n_shards = yaml.safe_load((project / "params" / "params.yaml").read_text())["extract"]["n_shards"]
    assert len(submitted) == 3 + n_shards, run.stderr[-3000:]  # generate, each extract shard, pack, train
    assert all(slurm_job(j)["JobState"] == "COMPLETED" for j in submitted)
    ours, local = (json.loads((p / cell).read_text()) for p in (project, built_2x2))
    assert ours["test"] == local["test"] and ours["config_hash"] == local["config_hash"]
    print(f"\nbml's tiny matrix cell through profiles/slurm ({len(submitted)} SLURM jobs): {wall_s:.1f} s")


def dry_run_resources(project: Path, *args: str) -> dict[str, list[dict[str, str]]]:
    """rule -> the resources of each of its jobs, as a dry run of bml's workflow through the real profile
    prints them (threads excepted: a dry run plans on one core)."""
    command = [sys.executable, "-m", "snakemake", "-n", "--profile", str(PROFILE), *args]
    command += ["--snakefile", str(project / "Snakefile"), "--directory", str(project)]
    run = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in run.stdout.split("\nrule ")[1:]:
        line = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
        fields = line.split("resources:", 1)[1].split(", ")
        jobs.setdefault(block.split(":")[0], []).append(dict(f.strip().split("=", 1) for f in fields))
    return jobs


def test_one_resource_override_keeps_the_others_and_the_ensemble_asks_for_no_gpu(tmp_path):
    """`--set-resources train:mem_mb=2000`, as the profile's comments invite, changes train's memory only: its GPU
    and walltime (train.smk) stay. The ensemble cells, which train nothing, ask for no GPU and the default walltime."""
    from conftest import copy_project

    project = copy_project(tmp_path / "project")  # the default matrix: it has ensemble cells
    rule_text = (ROOT / "workflow" / "rules" / "train.smk").read_text()
    train_runtime = re.search(r"^TRAIN_RUNTIME_MIN = (\d+)", rule_text, re.MULTILINE).group(1)
    default_runtime = str(yaml.safe_load((PROFILE / "config.yaml").read_text())["default-resources"]["runtime"])
    jobs = dry_run_resources(project, "--set-resources", "train:mem_mb=2000")
    assert jobs["train"] and jobs["evaluate_only"], sorted(jobs)
    for job in jobs["train"]:
        assert (job["gpu"], job["runtime"], job["mem_mb"]) == ("1", train_runtime, "2000"), job
    for job in jobs["evaluate_only"]:
        assert job["gpu"] == "0" and job["runtime"] == default_runtime, job
    assert int(default_runtime) < int(train_runtime)


def test_a_train_job_that_asked_for_a_gpu_and_got_none_stops_at_once(stop_cluster_after):
    """A real SLURM job (srun) running the train rule's command with --gpus 1 but given no GPU stops before
    training, and says how to fix it."""
    from bml.plan import load_plan

    start_cluster()
    cell = load_plan(str(ROOT / "params"), {}).cells[0].name
    bml = str(Path(sys.executable).parent / "bml")
    command = ["srun", "--cpus-per-task=1", bml, "train", "--cell", cell, "--params-dir", str(ROOT / "params")]
    refused = subprocess.run([*command, "--gpus", "1"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert refused.returncode != 0
    assert "asked for 1 GPU(s)" in refused.stderr and "SLURM gave it none" in refused.stderr, refused.stderr[-2000:]
    assert "--set-resources train:gpu=0" in refused.stderr and "Traceback" not in refused.stderr
