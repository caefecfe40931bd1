"""Numbers that do not depend on the machine (bml/runtime.py): a cell trained, and features packed, under
environments that claim other CPU kernels and thread counts give identical bytes; with the pins lifted, the
same change of kernels moves them (so these tests can see a difference when there is one)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, bml_env, make_data

from bml import runtime

# What another machine or a scheduler would change: other kernels claimed, more threads granted.
HOSTILE = {
    "ATEN_CPU_CAPABILITY": "avx512",
    "MKL_CBWR": "AUTO",
    "ONEDNN_MAX_CPU_ISA": "ALL",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}
AVX512 = "avx512f" in runtime.cpu_flags()
needs_avx2 = pytest.mark.skipif("avx2" not in runtime.cpu_flags(), reason="the pins are for x86-64 with AVX2")

TRAIN = """
import hashlib, json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from bml import runtime
import torch
from conftest import cell_config
from bml.train import train
runtime.configure_torch()
cfg = cell_config(Path({data!r}), Path({out!r}), epochs=2)
result = train(cfg, device="cpu")
state = torch.load(Path(cfg["paths"]["run_dir"]) / "checkpoint.pt", weights_only=False)["model"]
weights = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()
print(json.dumps({{"test": result["test"], "weights": weights, "provenance": runtime.provenance()}}))
"""


def _train(data: Path, out: Path, env: dict) -> dict:
    code = TRAIN.format(tests=str(REPO / "tests"), data=str(data), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env(**extra) -> dict:
    env = bml_env()
    for var in (*HOSTILE, "BML_NATIVE_CPU", "NPY_DISABLE_CPU_FEATURES"):
        env.pop(var, None)
    return {**env, **extra}


@pytest.mark.slow
@needs_avx2
def test_a_cell_is_identical_under_other_kernels_and_thread_counts(packed_avdigits, tmp_path):
    plain = _train(packed_avdigits, tmp_path / "plain", _env())
    hostile = _train(packed_avdigits, tmp_path / "hostile", _env(**HOSTILE))
    assert plain["provenance"]["torch_cpu_capability"] == "AVX2"
    assert plain["provenance"]["threads_used"] == hostile["provenance"]["threads_used"] == 1
    assert plain["provenance"]["onednn_conv"] is False
    assert hostile["weights"] == plain["weights"]
    assert hostile["test"] == plain["test"]


@pytest.mark.slow
@pytest.mark.skipif(not AVX512, reason="needs a CPU with AVX-512 to show that its kernels change the numbers")
def test_without_the_pins_the_kernels_change_the_weights(packed_avdigits, tmp_path):
    """The control: lifted pins, AVX-512 against AVX2 kernels, same everything else: other weights."""
    native = _train(packed_avdigits, tmp_path / "native", _env(BML_NATIVE_CPU="1"))
    avx2 = _train(packed_avdigits, tmp_path / "avx2", _env(BML_NATIVE_CPU="1", ATEN_CPU_CAPABILITY="avx2"))
    assert native["provenance"]["pinned"] is False
    assert native["provenance"]["torch_cpu_capability"] != avx2["provenance"]["torch_cpu_capability"]
    assert native["weights"] != avx2["weights"]


def _packed_hashes(root: Path) -> dict[str, str]:
    packed = root / "data" / "avdigits" / "embedded" / "packed"
    return {s: json.loads((packed / f"{s}.json").read_text())["sha256"] for s in ("train", "val", "test")}


def _clip_hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.mp4"))}


@pytest.mark.slow
@needs_avx2
def test_generated_clips_and_packed_features_are_identical_under_other_kernels(tmp_path, monkeypatch):
    """The generator's MP4s and the packed features, made in an environment claiming other kernels and threads."""
    made = {}
    for name, env in (("plain", _env()), ("hostile", _env(**HOSTILE))):
        root = tmp_path / name
        root.mkdir()
        monkeypatch.setattr("conftest.bml_env", lambda env=env: env)
        make_data(root, 16, seed=5)
        made[name] = (_clip_hashes(root), _packed_hashes(root))
    assert made["plain"][0] and made["plain"] == made["hostile"]


@pytest.mark.skipif(not AVX512, reason="needs a CPU with AVX-512")
def test_the_pins_reach_each_library_in_a_fresh_process():
    code = (
        "import bml, numpy, torch, os\n"
        "from numpy._core._multiarray_umath import __cpu_features__ as f\n"
        "print(torch.backends.cpu.get_cpu_capability(), f['X86_V4'], f['AVX512_SPR'], os.environ['MKL_CBWR'],"
        " torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(**HOSTILE), capture_output=True, text=True)
    assert out.stdout.split() == ["AVX2", "False", "False", "COMPATIBLE,STRICT", "1"], out.stderr


def test_a_library_loaded_before_the_pins_is_refused():
    """numpy imported before bml keeps its AVX-512 loops: training then refuses rather than record such numbers."""
    code = "import numpy, torch\nimport bml.runtime as r\nr.configure_torch()"
    env = _env()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    if AVX512:
        assert out.returncode != 0 and "loaded before bml could pin" in out.stderr
    else:
        assert out.returncode == 0, out.stderr


def _canary(env: dict) -> str:
    proc = subprocess.run([sys.executable, "-m", "bml.cli", "runtime"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)["canary"]


@needs_avx2
def test_the_canary_ignores_a_hostile_environment_and_sees_another_mkl_branch():
    """The canary (bml/runtime.py) is what machines compare: the same under claims of other kernels and threads,
    another under MKL's AVX2 branch, which Intel documents as Intel-only (a non-Intel CPU runs its AUTO one)."""
    pinned = _canary(_env())
    assert _canary(_env(**HOSTILE)) == pinned
    assert _canary(_env(BML_MKL_CBWR="AVX2,STRICT")) != pinned
