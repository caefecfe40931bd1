"""One GPU per training job, chosen before torch starts.

`snakemake --resources gpu=4` lets four training jobs run at once but does not say which GPU each should use.
Each job calls claim_gpu() before importing torch: it locks the first free device of those it may use (flock on
one lock file per device, released by the OS when the process ends, even on SIGKILL) and sets
CUDA_VISIBLE_DEVICES to exactly that device, so CUDA never opens a context on another GPU. When every device is
held it waits for one to free. A SLURM job given one GPU already sees only its own, and then nothing is claimed.
This module must not import torch: CUDA reads CUDA_VISIBLE_DEVICES once, when it starts.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

FAKE_GPUS_VAR = "BML_FAKE_GPUS"  # tests: "a,b,c" stands for the machine's GPUs
LOCK_DIR_VAR = "BML_GPU_LOCK_DIR"
# Where SLURM names a job's GPUs, most specific first (sbatch/srun man pages, "OUTPUT ENVIRONMENT VARIABLES").
SLURM_GPU_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")
NVIDIA_SMI_TIMEOUT_S = 60  # nvidia-smi -L takes well under a second; a hung driver should not hang the job


@dataclass(frozen=True)
class Claim:
    device: str  # as CUDA_VISIBLE_DEVICES spells it: an index or a UUID
    lock_path: Path
    describe: str  # one line for logs


_held: list[tuple[Claim, IO]] = []  # the claim and its open lock file; closing the file frees the GPU


def _log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_visible_devices(value: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES as a list: CUDA stops at the first negative entry ("-1" hides every GPU)."""
    devices = []
    for part in (p.strip() for p in value.split(",")):
        if not part or part.startswith("-"):
            break
        devices.append(part)
    return devices


def machine_gpus() -> list[str]:
    """Indices of this machine's GPUs from `nvidia-smi -L` (NVML, no CUDA context); [] without nvidia-smi."""
    fake = os.environ.get(FAKE_GPUS_VAR)
    if fake is not None:
        return [part.strip() for part in fake.split(",") if part.strip()]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        listing = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        _log_stderr(f"bml.gpu: `{exe} -L` failed ({error}); using no GPU")
        return []
    # One line "GPU <index>: <name> (UUID: GPU-...)" per GPU; MIG instances are indented lines below it.
    return re.findall(r"^GPU (\d+):", listing.stdout, flags=re.MULTILINE)


def slurm_gpus() -> list[str] | None:
    """The GPUs SLURM gave this job, or None when this is not a SLURM job with GPUs."""
    if not os.environ.get("SLURM_JOB_ID"):
        return None
    for var in SLURM_GPU_VARS:
        if var in os.environ:
            return parse_visible_devices(os.environ[var])
    return None


def require_slurm_gpus(asked: int) -> None:
    """Stop a SLURM job that asked for GPUs and was given none, before it trains on the CPU for hours.

    `asked` is the job's `gpu` resource (the train rule passes it): SLURM names the GPUs it gives a job, so a
    job that sees none was submitted without them (a cluster or partition whose GPUs sbatch did not bind).
    Outside SLURM nothing is checked: a machine without GPUs trains on its CPU.
    """
    if asked < 1 or not os.environ.get("SLURM_JOB_ID") or slurm_gpus():
        return
    raise RuntimeError(
        f"SLURM job {os.environ['SLURM_JOB_ID']} asked for {asked} GPU(s) (the rule's `gpu` resource) but SLURM "
        f"gave it none (none of {', '.join(SLURM_GPU_VARS)} names one): it would train on the CPU. Submit train "
        "jobs to a partition with GPUs (`--set-resources train:slurm_partition=<name>`), or train on CPUs on "
        "purpose with `--set-resources train:gpu=0`"
    )


def default_lock_dir() -> Path:
    """One folder per user: another user's folder in /tmp (sticky bit) would refuse our lock files."""
    return Path(tempfile.gettempdir()) / f"bml-gpu-locks-uid{os.getuid()}"


def _lock_name(scope: str, device: str) -> str:
    # The host in the name keeps machines apart when BML_GPU_LOCK_DIR is on a shared filesystem; MIG UUIDs
    # may contain "/", so anything but [A-Za-z0-9._-] becomes "_".
    raw = f"{socket.gethostname()}-{scope}-gpu-{device}.lock"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


def _try_lock(path: Path) -> IO | None:
    """The open, exclusively locked lock file, or None when another process holds it."""
    try:
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+")
    except PermissionError:  # another user's file in a shared lock dir: flock works on a read-only file too
        handle = open(path)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _write_holder(handle: IO) -> None:
    """Who holds the lock, for the messages of jobs that wait for it."""
    if not handle.writable():
        return
    command = " ".join(sys.argv)[:200]
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid={os.getpid()} host={socket.gethostname()} since={since} command={command}\n")
    handle.flush()


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "holder unknown"
    except OSError:
        return "holder unknown"


def claim_gpu(
    lock_dir: str | Path | None = None,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
    log_every_s: float = 60.0,
    log: Callable[[str], None] = _log_stderr,
) -> Claim | None:
    """Lock one GPU for the life of this process and make it the only one CUDA will see.

    The candidates: the GPUs of a SLURM job with several; else the user's CUDA_VISIBLE_DEVICES in its order;
    else all GPUs of the machine. None (environment untouched) when there is no GPU, or SLURM gave exactly one.
    Waits while all candidates are held; raises RuntimeError after timeout_s (None: wait for ever).
    """
    if _held:
        return _held[0][0]  # a second lock on our own GPU would wait for ourselves
    assigned = slurm_gpus()
    if assigned is not None and len(assigned) <= 1:
        return None
    if assigned is not None:  # several GPUs for one SLURM job (snakemake run inside it): share them out
        devices, scope = assigned, f"slurm{os.environ['SLURM_JOB_ID']}"
    elif "CUDA_VISIBLE_DEVICES" in os.environ:
        devices, scope = parse_visible_devices(os.environ["CUDA_VISIBLE_DEVICES"]), "local"
    else:
        devices, scope = machine_gpus(), "local"
    if not devices:
        return None
    lock_dir = Path(lock_dir or os.environ.get(LOCK_DIR_VAR) or default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    paths = [lock_dir / _lock_name(scope, device) for device in devices]
    started = time.monotonic()
    last_log = None
    while True:
        for device, path in zip(devices, paths, strict=True):
            handle = _try_lock(path)
            if handle is not None:
                _write_holder(handle)
                os.environ["CUDA_VISIBLE_DEVICES"] = device
                claim = Claim(device, path, f"GPU {device} (CUDA_VISIBLE_DEVICES={device}, lock {path})")
                _held.append((claim, handle))
                return claim
        now = time.monotonic()
        holders = "; ".join(f"GPU {device}: {_holder(path)}" for device, path in zip(devices, paths, strict=True))
        if timeout_s is not None and now - started >= timeout_s:
            raise RuntimeError(
                f"no free GPU after {now - started:.0f} s: all of {','.join(devices)} are held by "
                f"other bml jobs (lock files in {lock_dir}): {holders}"
            )
        if last_log is None or now - last_log >= log_every_s:
            log(
                f"bml.gpu: waiting {now - started:.0f} s for a free GPU; all of {','.join(devices)} are held "
                f"(lock files in {lock_dir}): {holders}"
            )
            last_log = now
        time.sleep(poll_s)


def describe() -> str:
    """This process's GPU, for logs."""
    if _held:
        return _held[0][0].describe
    assigned = slurm_gpus()
    if assigned is not None:
        return f"GPUs of SLURM job {os.environ['SLURM_JOB_ID']}: {','.join(assigned) or 'none'}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "no GPU claimed" + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")


def release_gpus() -> None:
    """Free this process's GPU (tests; a job keeps its GPU until it exits)."""
    while _held:
        _held.pop()[1].close()


def pick_cuda_device() -> str:
    """'cuda': after claim_gpu() the process sees only its own GPU, as device 0."""
    return "cuda"
