"""The numerical environment every bml number is computed in, pinned so that it does not depend on the machine.

Why: on the CPU, a run's numbers depend on the kernels each library picks for the processor at hand and on the
thread count. The same cell (joint concat, 3 epochs) ended at 48.3% test accuracy with this machine's AVX-512
kernels, 68.8% with ATen's AVX2 ones and 56.3% on 2 threads instead of 1: training amplifies a last-bit
difference in one reduction into a different model. Measured here (tests/test_runtime.py checks each):

- ATen's vectorised kernels are chosen by CPU capability: pinned to AVX2 (ATEN_CPU_CAPABILITY).
- MKL (torch's BLAS: every linear layer, and the convolutions below) picks its code path per CPU: pinned by
  Intel's conditional numerical reproducibility, MKL_CBWR=AVX2,STRICT (STRICT: also independent of alignment).
- oneDNN's JIT convolutions differ by ISA and by thread count, and nothing documented pins their blocking
  choices: torch's oneDNN path is off on the CPU (convolutions then run as ATen's im2col + MKL gemm; measured
  cost in benchmarks/results/determinism.json), and ONEDNN_MAX_CPU_ISA=AVX2 covers any other use.
- ATen's parallel reductions split their work by thread count (a sum over 10^7 floats differs on 1, 2, 3 and
  4 threads): compute runs on one thread (OMP/MKL/OpenBLAS and torch), whatever the scheduler grants; the
  grant is recorded. The workflow's parallelism is jobs, not threads.
- numpy dispatches its own SIMD loops (sin, exp, sums) up to AVX-512: its AVX-512 targets are disabled
  (NPY_DISABLE_CPU_FEATURES, only those this CPU has, so numpy never warns).
- OpenBLAS (numpy, scipy, scikit-learn's k-means in Re-learning) picks a kernel per core type: Haswell (the
  AVX2 one), unless the machine already sets OPENBLAS_CORETYPE (some do, for correctness: then theirs stands,
  and the provenance says so).
- ffmpeg's assembly: its AVX-512 paths are disabled in every command (`FFMPEG_CPU_FLAGS`); its video decode
  and area scaling were identical even without any SIMD, its float AAC decode was not.

`pin()` runs when the package is imported (bml/__init__.py), before numpy or torch load; `configure_torch()`
when a process starts computing; `provenance()` is what a run records (metrics.json, MLflow).
BML_NATIVE_CPU=1 lifts every pin (for measuring what they cost, benchmarks/determinism_cost.py); such a run
says so in its provenance, and its numbers are this machine's only.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import cache

NATIVE = os.environ.get("BML_NATIVE_CPU", "") not in ("", "0")
CAPABILITY = "AVX2"  # the x86-64 level every supported CPU has (Intel Haswell, AMD Zen and later)
THREADS = 1
# numpy 2's dispatch targets above AVX2, and the /proc/cpuinfo flag that says a CPU has each
_NUMPY_ABOVE_AVX2 = {"X86_V4": "avx512f", "AVX512_ICL": "avx512_vbmi2", "AVX512_SPR": "avx512_fp16"}
FFMPEG_CPU_FLAGS = [] if NATIVE else ["-cpuflags", "-avx512-avx512icl"]


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty outside Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def _x86_with_avx2() -> bool:
    return platform.machine() in ("x86_64", "AMD64") and "avx2" in cpu_flags()


def pin() -> None:
    """Set the libraries' CPU choices before they load. Idempotent; a no-op under BML_NATIVE_CPU=1."""
    if NATIVE:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(THREADS)
    if not _x86_with_avx2():
        return  # another architecture, or an x86 CPU below AVX2: nothing to pin to; provenance says which
    os.environ["ATEN_CPU_CAPABILITY"] = CAPABILITY.lower()
    os.environ["MKL_CBWR"] = f"{CAPABILITY},STRICT"
    os.environ["ONEDNN_MAX_CPU_ISA"] = CAPABILITY
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
    present = [target for target, flag in _NUMPY_ABOVE_AVX2.items() if flag in cpu_flags()]
    if present:
        user = os.environ.get("NPY_DISABLE_CPU_FEATURES", "").replace(",", " ").split()
        os.environ["NPY_DISABLE_CPU_FEATURES"] = " ".join(dict.fromkeys(user + present))


def pinned_too_late() -> list[str]:
    """The libraries that loaded before `pin()` could reach them (their choice is then the machine's)."""
    if NATIVE or not _x86_with_avx2():
        return []
    late = []
    if "torch" in sys.modules:
        import torch

        if torch.backends.cpu.get_cpu_capability() != CAPABILITY:
            late.append(f"torch (its kernels are {torch.backends.cpu.get_cpu_capability()})")
    if "numpy" in sys.modules:
        from numpy._core._multiarray_umath import __cpu_features__

        if any(__cpu_features__.get(t) for t in _NUMPY_ABOVE_AVX2):
            late.append("numpy (its AVX-512 loops are enabled)")
    return late


def configure_torch() -> None:
    """One compute thread, no oneDNN on the CPU, deterministic GPU kernels. Raises when torch or numpy loaded
    before the pins (a number computed then would be this machine's only)."""
    import torch

    late = pinned_too_late()
    if late:
        raise RuntimeError(
            "bml: " + " and ".join(late) + " loaded before bml could pin its CPU kernels; import bml first, "
            "or set BML_NATIVE_CPU=1 to accept numbers that depend on this machine"
        )
    if NATIVE:
        return
    torch.set_num_threads(THREADS)
    torch.backends.mkldnn.enabled = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def threads_granted() -> int:
    """The CPUs this process may run on: a scheduler's grant (SLURM, taskset, cgroups' cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def provenance() -> dict:
    """What a run's numbers were computed with: the CPU, the pins as they took effect, threads, versions."""
    import numpy as np
    import scipy
    import torch
    from threadpoolctl import threadpool_info

    from bml.data.ffmpeg import ffmpeg_version

    blas = [
        f"{p['internal_api']} {p.get('version')} {p.get('architecture', '')}".strip()
        for p in threadpool_info()
        if p["user_api"] == "blas"
    ]
    return {
        "pinned": not NATIVE and _x86_with_avx2(),
        "machine": platform.machine(),
        "cpu": _cpuinfo().get("model name", ""),
        "cpu_has": sorted(f for f in ("avx2", "avx512f", "amx_tile") if f in cpu_flags()),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "onednn_conv": bool(torch.backends.mkldnn.enabled),
        "numpy_disabled": os.environ.get("NPY_DISABLE_CPU_FEATURES", ""),
        "blas": blas,
        "threads_used": torch.get_num_threads(),
        "threads_granted": threads_granted(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "ffmpeg": ffmpeg_version(),
        },
    }
