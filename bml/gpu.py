"""One GPU per training job on a multi-GPU workstation.

`snakemake --resources gpu=4` lets four training jobs run at once but does not say which GPU each should
use; without this they would all land on cuda:0. Each job claims the first GPU whose lock file it can lock
(flock, released by the OS when the process ends, even when killed) and keeps it for its lifetime. Jobs
started by SLURM already see only their own GPUs (CUDA_VISIBLE_DEVICES), and then nothing is claimed.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

_held: list = []  # open lock files; closing one would release its GPU


def claim_gpu(n_gpus: int, lock_dir: str | Path | None = None) -> int:
    """The index of a GPU no other bml process holds; raises RuntimeError when all n_gpus are taken."""
    lock_dir = Path(lock_dir or os.environ.get("BML_GPU_LOCK_DIR", tempfile.gettempdir()))
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(n_gpus):
        handle = open(lock_dir / f"bml-gpu{index}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        return index
    raise RuntimeError(f"all {n_gpus} GPUs are held by other bml jobs (lock files in {lock_dir}); "
                       f"lower --resources gpu=N to the number of GPUs")


def release_gpus() -> None:
    while _held:
        _held.pop().close()


def pick_cuda_device() -> str:
    """'cuda:<k>' for a free GPU when several are visible and none was assigned; else 'cuda'."""
    import torch

    n = torch.cuda.device_count()
    if n <= 1 or os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "cuda"
    return f"cuda:{claim_gpu(n)}"
