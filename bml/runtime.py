"""The numerical environment every bml number is computed in, pinned so that it does not depend on the machine.

Why: on the CPU, a run's numbers depend on the kernels each library picks for the processor at hand and on the
thread count. The same cell (joint concat, 3 epochs) ended at 48.3% test accuracy with this machine's AVX-512
kernels, 68.8% with ATen's AVX2 ones and 56.3% on 2 threads instead of 1: training amplifies a last-bit
difference in one reduction into a different model. Measured here (tests/test_runtime.py checks each):

- ATen's vectorised kernels are chosen by CPU capability: pinned to AVX2 (ATEN_CPU_CAPABILITY).
- MKL (torch's BLAS: every linear layer, and the convolutions below) picks its code path per CPU: pinned by
  Intel's conditional numerical reproducibility to its COMPATIBLE branch (SSE2 without the approximate
  reciprocals), MKL_CBWR=COMPATIBLE,STRICT (STRICT: also independent of alignment). Not the AVX2 branch: oneMKL's
  guide says MKL_CBWR=AVX2 fixes results across *Intel* CPUs only, and that a non-Intel CPU runs its AUTO branch
  instead (oneMKL Developer Guide, "Getting Started with Conditional Numerical Reproducibility"). Measured on an
  AMD EPYC: at the AVX2 setting a 2-epoch run at lr 40 took another path than on the Intel machine that wrote
  tests/test_loop_faults.py (BatchNorm's variances stayed finite), at COMPATIBLE it took the Intel one.
- oneDNN's JIT convolutions differ by ISA and by thread count, and nothing documented pins their blocking
  choices: torch's oneDNN path is off on the CPU (convolutions then run as ATen's im2col + MKL gemm; measured
  cost in benchmarks/results/determinism.json), and ONEDNN_MAX_CPU_ISA=AVX2 covers any other use.
- NNPACK (torch's forward convolutions once oneDNN is off) sizes its blocks, and so the order of its sums over
  input channels, by the cache sizes it detects: off too (torch.backends.nnpack), convolutions then run as
  ATen's im2col + MKL gemm in both directions; measured on 2 cores, a training step was no slower without it.
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

import hashlib
import os
import platform
import sys
from functools import cache

NATIVE = os.environ.get("BML_NATIVE_CPU", "") not in ("", "0")
CAPABILITY = "AVX2"  # the x86-64 level every supported CPU has (Intel Haswell, AMD Zen and later)
# MKL's branch: the one Intel documents as the same on Intel and non-Intel CPUs (above); BML_MKL_CBWR replaces it
# only to measure what it costs (benchmarks/determinism_cost.py), and the provenance records the one in effect
MKL_BRANCH = os.environ.get("BML_MKL_CBWR", "COMPATIBLE,STRICT")
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
    os.environ["MKL_CBWR"] = MKL_BRANCH
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
    torch.backends.nnpack.set_flags(False)  # its convolutions block their channel sums by the detected caches
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def threads_granted() -> int:
    """The CPUs this process may run on: a scheduler's grant (SLURM, taskset, cgroups' cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def canary() -> str:
    """The sha256 of a fixed little computation through every library a run uses: 4 SGD steps of a convolution,
    BatchNorm and a linear layer (ATen, MKL), an FFT, a matrix product and exp/log/sin in numpy (OpenBLAS, its
    SIMD loops). Two machines whose canaries differ compute different numbers; equal canaries are the evidence
    that they do not (for these kernels). About 10 ms."""
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 12, 12, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    with torch.random.fork_rng(devices=[]):  # a run's own random stream is left as it was
        torch.manual_seed(0)  # the layers' initialisation
        nn = torch.nn
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(800, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 64))
    parts = [p.detach().numpy().tobytes() for p in model.state_dict().values()]
    parts += [np.fft.rfft(a).tobytes(), (a @ a.T).tobytes(), (np.exp(a) + np.log1p(a * a) + np.sin(a)).tobytes()]
    return hashlib.sha256(b"".join(parts)).hexdigest()


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
        "nnpack_conv": bool(torch._C._get_nnpack_enabled()),
        "numpy_disabled": os.environ.get("NPY_DISABLE_CPU_FEATURES", ""),
        "blas": blas,
        "threads_used": torch.get_num_threads(),
        "threads_granted": threads_granted(),
        "canary": canary(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "ffmpeg": ffmpeg_version(),
        },
    }
