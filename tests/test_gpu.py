"""GPU claims between real processes holding real flock locks; BML_FAKE_GPUS stands for the machine's GPUs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bml.gpu import claim_gpu, describe, machine_gpus, release_gpus, require_slurm_gpus

GPU_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "BML_FAKE_GPUS",
    "BML_GPU_LOCK_DIR",
    "SLURM_JOB_ID",
    "SLURM_JOB_GPUS",
    "SLURM_STEP_GPUS",
)

# A job: claim, record the device and the time it held it (monotonic clock: one clock for all processes on Linux).
JOB = """
import json, os, sys, time
from bml.gpu import claim_gpu
claim = claim_gpu(poll_s=0.02, timeout_s=float(sys.argv[3]))
start = time.monotonic()
time.sleep(float(sys.argv[2]))
end = time.monotonic()
record = {"device": claim.device, "visible": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": end}
open(sys.argv[1], "w").write(json.dumps(record))
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Each test starts from no GPU variables and its own lock dir; monkeypatch restores what claims set."""
    for var in GPU_VARS:
        monkeypatch.setenv(var, "")  # recorded, so that teardown also removes what a claim sets
        monkeypatch.delenv(var)
    monkeypatch.setenv("BML_GPU_LOCK_DIR", str(tmp_path / "locks"))
    yield
    release_gpus()


def start_job(out: Path, hold_s: float, timeout_s: float = 30.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(out), str(hold_s), str(timeout_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


def hold_lock() -> subprocess.Popen:
    """A process that claims, prints its device and keeps it until killed."""
    code = "from bml.gpu import claim_gpu; import time; print(claim_gpu().device, flush=True); time.sleep(60)"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same instant)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = most = 0
    for _, step in events:
        open_now += step
        most = max(most, open_now)
    return most


def test_concurrent_jobs_never_share_a_device(monkeypatch, tmp_path):
    devices, n_jobs, hold_s = ["a", "b", "c"], 8, 0.4
    monkeypatch.setenv("BML_FAKE_GPUS", ",".join(devices))
    outs = [tmp_path / f"job{i}.json" for i in range(n_jobs)]
    began = time.monotonic()
    procs = [start_job(out, hold_s) for out in outs]
    errs = [finish(p) for p in procs]
    wall_s = time.monotonic() - began
    records = [json.loads(out.read_text()) for out in outs]

    assert all(r["device"] in devices and r["visible"] == r["device"] for r in records)
    assert {r["device"] for r in records} == set(devices)
    per_device = {d: max_overlap([(r["start"], r["end"]) for r in records if r["device"] == d]) for d in devices}
    assert per_device == dict.fromkeys(devices, 1)
    # 8 jobs on 3 devices: at least 5 waited, and said so naming the lock dir.
    waited = [e for e in errs if "waiting" in e]
    assert len(waited) >= n_jobs - len(devices)
    assert all(str(tmp_path / "locks") in e for e in waited)
    print(
        f"\n{n_jobs} processes, {len(devices)} devices, jobs per device "
        f"{ {d: sum(r['device'] == d for r in records) for d in devices} }, max concurrent holders per device "
        f"{per_device}, all jobs held at once {max_overlap([(r['start'], r['end']) for r in records])}, "
        f"wall {wall_s:.2f} s (hold {hold_s} s each)"
    )


def test_sigkilled_holder_frees_its_device(monkeypatch, tmp_path):
    monkeypatch.setenv("BML_FAKE_GPUS", "only")
    holder = hold_lock()
    try:
        assert holder.stdout.readline().strip() == "only"
        with pytest.raises(RuntimeError) as raised:
            claim_gpu(timeout_s=0.3, poll_s=0.05)
        assert str(tmp_path / "locks") in str(raised.value) and f"pid={holder.pid}" in str(raised.value)
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    began = time.monotonic()
    claim = claim_gpu(timeout_s=5, poll_s=0.05)
    assert claim.device == "only" and os.environ["CUDA_VISIBLE_DEVICES"] == "only"
    assert time.monotonic() - began < 1.0  # freed at once by the kill, not by a stale-lock timeout
    assert f"pid={os.getpid()}" in claim.lock_path.read_text()


def test_user_visible_devices_restrict_and_order_claims(monkeypatch, tmp_path):
    monkeypatch.setenv("BML_FAKE_GPUS", "0,1,2,3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    first = claim_gpu(timeout_s=1)
    assert first.device == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert claim_gpu() is first  # a second call in the same process keeps its GPU instead of waiting for itself
    assert "GPU 3" in describe()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")  # what the other jobs inherit
    other = start_job(tmp_path / "other.json", 0.0, timeout_s=2)
    finish(other)
    assert json.loads((tmp_path / "other.json").read_text())["device"] == "2"  # not 0: outside the user's list
    with_both_held = hold_lock()
    try:
        assert with_both_held.stdout.readline().strip() == "2"
        blocked = start_job(tmp_path / "blocked.json", 0.0, timeout_s=0.3)
        _, err = blocked.communicate(timeout=30)
        assert blocked.returncode != 0 and "no free GPU" in err and "3,2" in err
    finally:
        with_both_held.kill()
        with_both_held.wait()


def test_uuids_work_as_devices(monkeypatch, tmp_path):
    uuids = ["GPU-0f5c1a2b-1111-2222-3333-444455556666", "MIG-GPU-0f5c1a2b-1111-2222-3333-444455556666/1/0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(uuids))
    assert claim_gpu(timeout_s=1).device == uuids[0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(uuids))
    other = start_job(tmp_path / "other.json", 0.0, timeout_s=2)
    finish(other)
    record = json.loads((tmp_path / "other.json").read_text())
    assert record["device"] == record["visible"] == uuids[1]  # the "/" of a MIG UUID only changes the lock name


def test_slurm_assignment_is_respected(monkeypatch, tmp_path):
    monkeypatch.setenv("BML_FAKE_GPUS", "0,1,2,3")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("SLURM_JOB_GPUS", "2")
    assert claim_gpu(timeout_s=0.2) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert not (tmp_path / "locks").exists()
    assert "SLURM job 4242" in describe()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # only SLURM's own variable: still nothing claimed or set
    monkeypatch.delenv("SLURM_JOB_GPUS")
    monkeypatch.setenv("SLURM_STEP_GPUS", "1")
    assert claim_gpu(timeout_s=0.2) is None and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_slurm_job_given_the_gpu_it_asked_for_passes_and_none_outside_slurm_is_checked(monkeypatch):
    # the refusal itself runs in a real SLURM job: tests/test_slurm.py
    monkeypatch.setenv("BML_FAKE_GPUS", "0,1")  # a machine with GPUs, none of them SLURM's: not checked outside SLURM
    require_slurm_gpus(1)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    require_slurm_gpus(0)  # a CPU job (--set-resources train:gpu=0)
    with pytest.raises(RuntimeError, match="SLURM job 4242 asked for 1 GPU"):
        require_slurm_gpus(1)
    monkeypatch.setenv("SLURM_JOB_GPUS", "3")
    require_slurm_gpus(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # SLURM's GPU hidden from CUDA: none for this job
    with pytest.raises(RuntimeError, match="gave it none"):
        require_slurm_gpus(1)


def test_several_slurm_gpus_are_shared_out_within_the_job(monkeypatch, tmp_path):
    # snakemake --resources gpu=2 inside one SLURM job with 2 GPUs; device cgroups number every job's GPUs
    # from 0, so another job on the node with the same numbers must not wait for ours.
    monkeypatch.setenv("SLURM_JOB_ID", "100")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert claim_gpu(timeout_s=1).device == "0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    finish(start_job(tmp_path / "same_job.json", 0.0, timeout_s=2))
    assert json.loads((tmp_path / "same_job.json").read_text())["device"] == "1"
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    finish(start_job(tmp_path / "other_job.json", 0.0, timeout_s=2))
    assert json.loads((tmp_path / "other_job.json").read_text())["device"] == "0"


def test_no_gpus_means_none_and_untouched_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BML_FAKE_GPUS", "")
    assert machine_gpus() == [] and claim_gpu(timeout_s=0.2) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.delenv("BML_FAKE_GPUS")
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without nvidia-smi
    assert machine_gpus() == [] and claim_gpu(timeout_s=0.2) is None
    for hidden in ("", "-1"):  # the user hid every GPU
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        monkeypatch.setenv("BML_FAKE_GPUS", "0,1")
        assert claim_gpu(timeout_s=0.2) is None and os.environ["CUDA_VISIBLE_DEVICES"] == hidden
    assert not (tmp_path / "locks").exists()


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs nvidia-smi (a GPU machine)")
def test_machine_gpus_match_nvidia_smi_count():
    count = subprocess.run(
        ["nvidia-smi", "--query-gpu=count", "--format=csv,noheader"], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert machine_gpus() == [str(i) for i in range(int(count))]


def test_claiming_does_not_import_torch(monkeypatch):
    # CUDA reads CUDA_VISIBLE_DEVICES once, when torch starts it: the claim must come first.
    monkeypatch.setenv("BML_FAKE_GPUS", "0")
    code = "import sys; from bml.gpu import claim_gpu; claim_gpu(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
