"""GPU cost of each real dataset's reproduction, estimated from a CPU step-time and FLOP measurement (no GPU was
lent to measure it on one).

    python benchmarks/gpu_estimate.py [--batch 8] [--steps 3] [--threads <all cores>] [--gpu-tflops 40]
                                      [--only cremad/ogm_cvpr22 ...] [--out benchmarks/results/gpu_estimate.json]

Per (dataset, protocol) pair of PAIRS that the shipped params/protocols/*.yaml cover (their `datasets:` keys;
a pair they do not cover is skipped and said so), the joint/concat cell is resolved as bml/plan.py resolves it
(`resolve_cell`; a release root is not needed to resolve a cell, only to plan a matrix), and its model, optimizer
and step are the training loop's own: `method.build_model(ModelSpec(...))` as bml/train.py builds it,
`build_optimizer` with the protocol's optimizer (SGD or AdamW), `Method.training_step` (forward, cross-entropy,
`loss.item()`, backward, optimizer step). The inputs are random tensors of the shapes the packed records give the
model after `prepare_inputs`: `train.train_frames` frames of the recipe's size (uint8, normalised as the loader
does), the audio preset's spectrogram (`bml.data.audio.output_shape`: what bml/data/pack.py stores).

Measured, on this machine's CPU:
- the step time: 1 warm-up step, then the median of --steps timed steps, at --batch clips (a full protocol batch
  of 224-pixel ResNet-18s takes tens of seconds a step on 2 cores); `cpu_step_s_full_batch` scales it linearly
  to `train.batch_size` (said as such in the JSON). The CPU is shared with other jobs, and torch's threads wait
  on each other when one core is busy elsewhere (single steps ranged 0.3-2.2 s for the same work): read
  `cpu_step_s_all`. The CPU's FLOP/s only says how far it is from a GPU; no GPU time is derived from it;
- the FLOPs (`torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products, 2 FLOPs per
  multiply-add; BatchNorm, ReLU, pooling and the optimizer are not counted) of one training step's forward,
  cross-entropy and backward at the full batch, and of one evaluation forward (eval mode, `train.eval_frames`,
  no gradients), counted on PyTorch's meta device (shapes only); the warm-up step's count on real tensors,
  scaled from --batch, is reported beside it (`flops_per_step_cpu_counted_scaled`) and agrees;
- the matrix's multipliers, as FLOP ratios to joint's step: each uni-modal run (`<modality>_only`, on the meta
  device) and MMPareto (its own `training_step` on real tensors at 1 clip, three backward passes); the other
  methods of params.yaml's `default` block add no counted operation to joint's step (SAME_AS_JOINT says why);
- the bytes autograd saves for backward in the warm-up step (`torch.autograd.graph.saved_tensors_hooks`,
  parameters left out, each storage once), scaled to the full batch: the activations a training step holds;
- the loader's frame augmentation (`random_resized_crop_flip`, the CPU work of a training batch), per clip.

Assumed, not measured (named constants below, each with its reasoning): the GPU's sustained training throughput
(GPU_SUSTAINED_FLOPS, overridable with --gpu-tflops), the clip counts of each split (docs/datasets.md), the
evaluation passes of a run (counted from bml/train.py and bml/evaluate.py), the memory besides the model and the
activations (CUDA_OVERHEAD_BYTES). One joint run on one H100-class GPU is then (training FLOPs + evaluation
FLOPs) / GPU_SUSTAINED_FLOPS, with each training step taking the loader's time instead where the augmentation,
spread over the protocol's `num_workers` processes, is slower than the GPU (`loader_bound`; never the case at
40 TFLOP/s). Disk reads of the packed memmaps and host-device copies are not counted. The matrix of one seed is
the default block's runs (both uni-modal runs, joint, OGM, OGM-GE, OPM, MMPareto, Re-learning) each costed from
its FLOP ratio, plus Re-learning's diagnosis passes and the ensemble's evaluation. GPU memory is the parameters,
gradients and optimizer state (fp32, measured from the model), the saved activations (measured) and
CUDA_OVERHEAD_BYTES (assumed); the doc's earlier rule, 35 MB per 224 x 224 image-equivalent, is reported beside
(`rule_activations_gb`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bml.config import read_yaml  # noqa: E402
from bml.data.audio import output_shape  # noqa: E402
from bml.data.loader import FRAME_KINDS, prepare_inputs, random_resized_crop_flip  # noqa: E402
from bml.datasets import load_dataset  # noqa: E402
from bml.layout import Layout  # noqa: E402
from bml.methods import load_method, method_spec  # noqa: E402
from bml.methods.base import Batch, RunContext, StepContext  # noqa: E402
from bml.methods.relearning import relearn_epochs  # noqa: E402
from bml.models.model import ModelSpec  # noqa: E402
from bml.optim import build_optimizer  # noqa: E402
from bml.plan import load_pipeline, resolve_cell  # noqa: E402

PARAMS = REPO / "params"

PAIRS = [
    ("cremad", "ogm_cvpr22"),
    ("cremad", "balancebench"),
    ("kinetics_sounds", "tpami24_ks"),
    ("kinetics_sounds", "balancebench"),
    ("vggsound", "ogm_cvpr22"),
    ("vggsound", "balancebench"),
    ("ave", "ogm_cvpr22"),
    ("ucf101", "balancebench"),
]

# Clips per split. train: the "Time and GPU memory" table of docs/datasets.md (the papers' lists less the 10 %
# validation carve-out; VGGSound at full coverage, which no download has). val and test: docs/datasets.md
# "Split" and params/datasets/<name>.yaml: CREMA-D 10 % of 6,694 usable train clips / 744; Kinetics-Sounds 10 % of
# 14,799 / 2,597; VGGSound 10 % of 183,971 / 15,496; AVE its own 402 / 402; UCF-101 2 of split 1's 18 train
# groups of 9,537 clips / 3,783.
CLIPS = {
    "cremad": {"train": 6_000, "val": 670, "test": 744},
    "kinetics_sounds": {"train": 13_000, "val": 1_480, "test": 2_597},
    "vggsound": {"train": 165_000, "val": 18_400, "test": 15_496},
    "ave": {"train": 3_300, "val": 402, "test": 402},
    "ucf101": {"train": 8_500, "val": 1_060, "test": 3_783},
}
# Classes (the size of the heads; the cost does not depend on it): params/datasets/<name>.yaml descriptions.
N_CLASSES = {"cremad": 6, "kinetics_sounds": 31, "vggsound": 309, "ave": 28, "ucf101": 101}

# ASSUMPTION (not measured: no GPU was lent): sustained FLOP/s of bml's training step on one H100-class GPU.
# bml trains in fp32 without autocast, so its convolutions run in TF32 (cuDNN's default) and BatchNorm, ReLU and
# pooling (uncounted, memory-bound) take a large share of the time at batches of 32-64 clips. 40 TFLOP/s is
# about 8 % of an H100 SXM's dense TF32 tensor-core peak (~495 TFLOP/s), a usual share for ResNet training in
# fp32/TF32 at these batch sizes; bf16 autocast (which bml does not use) would give roughly 2-3x more. Two things
# argue against assuming more: bml/checkpoint.py seed_everything sets cudnn.deterministic = True and
# cudnn.benchmark = False (cuDNN's fastest, non-deterministic algorithms are excluded), and bml/train.py checks
# every parameter for NaN after every step (`_nonfinite_parameters`: one host-device sync per parameter tensor).
# Every GPU time below scales as 1 / this value: --gpu-tflops changes it.
GPU_SUSTAINED_FLOPS = 40e12
# ASSUMPTION: what the GPU holds besides the model, its optimizer state and the activations (the CUDA context,
# cuDNN's workspaces, the caching allocator's slack).
CUDA_OVERHEAD_BYTES = 1.5e9
# The doc's earlier rule of thumb, kept for comparison with the measured saved activations: about 35 MB of
# activations per 224 x 224 image-equivalent of a training batch (an estimate, never measured here).
RULE_BYTES_PER_IMAGE = 35e6
# Evaluation passes of a run, counted from the code (forward only, eval mode, eval_frames):
# - bml/train.py `_validate`: the val split after every epoch (never test during training); every `probe_every`
#   epochs and at the last one, the training split too (train_eval, for the linear probes);
# - bml/evaluate.py `evaluate_model` at the end: test once, plus, for 2 modalities, test with each modality zeroed
#   (2 passes) and with each modality noised (2 passes): TEST_PASSES; the last model reuses the last epoch's val
#   and train; the best-on-validation model, when it is not the last, collects train, val and the test passes
#   again: FINAL_MODELS = 2 (the best epoch is rarely the last one).
TEST_PASSES = 5
FINAL_MODELS = 2
# Training-FLOP multipliers of the default block's runs, relative to joint's step. Measured per pair: the
# uni-modal runs (`<modality>_only`: one encoder and a linear head, counted like joint) and MMPareto (its own
# `training_step` at MMPARETO_COUNT_BATCH clips: the multimodal loss backpropagated through both encoders, then
# each uni-modal loss through its encoder, about 1.6-1.7 joint steps). Assumed, SAME_AS_JOINT: OGM and OGM-GE
# (after backward they scale the encoders' convolution gradients and add Gaussian noise: elementwise work, +5 to
# +9 % of a step on the CPU with small CNNs, benchmarks/results/method_cost.json, less where ResNet-18
# convolutions dominate; on a GPU the per-tensor `.item()` of the noise's std also synchronises ~40 times a step,
# not estimated), OPM (masks features and reruns the fusion head: a linear layer) and Re-learning (joint's step;
# its diagnosis, a forward pass over train and val at each re-learning epoch of its resolved schedule, is added
# separately). The ensemble trains nothing: its cost is one final evaluation (estimate_pair, `matrix_s`).
SAME_AS_JOINT = {"joint": 1.0, "ogm": 1.0, "ogm_ge": 1.0, "opm": 1.0, "relearning": 1.0}
MMPARETO_COUNT_BATCH = 1  # clips of the counted MMPareto step (every counted operation is linear in the batch)


def covered_pairs() -> tuple[list[tuple[str, str]], list[str]]:
    """The PAIRS whose protocol lists the dataset under `datasets:`, and a note for each one that does not."""
    kept, skipped = [], []
    for dataset, protocol in PAIRS:
        if dataset in (read_yaml(PARAMS / "protocols" / f"{protocol}.yaml").get("datasets") or {}):
            kept.append((dataset, protocol))
        else:
            skipped.append(f"{dataset}/{protocol}: params/protocols/{protocol}.yaml does not cover {dataset}")
    return kept, skipped


def resolve(dataset: str, protocol: str, method: str, fusion: str, pipeline: dict) -> dict:
    """A resolved cell's configuration, as tests/test_protocols.py `cell` resolves one from the shipped params."""
    ds = load_dataset(dataset, PARAMS, pipeline)
    return resolve_cell(ds, protocol, method, fusion, 0, PARAMS, pipeline, Layout(), ()).config


def raw_inputs(config: dict, batch: int, n_frames: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random loader output of the packed records' shapes: uint8 frames (B, T, C, S, S), float32 spectrograms."""
    settings, out = config["data"]["settings"], {}
    for m, kind in config["data"]["modalities"].items():
        if kind in FRAME_KINDS:
            size, channels = settings[m]["size"], 3 if kind == "frames" else 2
            out[m] = torch.randint(
                0, 256, (batch, n_frames, channels, size, size), dtype=torch.uint8, generator=generator
            )
        else:
            out[m] = torch.randn((batch, *output_shape(settings[m]["preset"])), generator=generator)
    return out


class Trainer:
    """One method's model, optimizer and step, built as bml/train.py builds them (no data, no device but the CPU)."""

    def __init__(self, config: dict, n_classes: int) -> None:
        self.config, tcfg = config, config["train"]
        modalities = config["data"]["modalities"]
        spec = method_spec(config["run"]["method"])
        self.run = RunContext(config, modalities, n_classes, torch.device("cpu"), {}, {})
        self.method = load_method(spec.name)(spec, config["method"], self.run)
        seen = {spec.modality: modalities[spec.modality]} if spec.modality else dict(modalities)
        self.model = self.method.build_model(ModelSpec(tcfg["encoder"], config["run"]["fusion"], n_classes, seen))
        self.optimizer = build_optimizer(self.method.param_groups(self.model), tcfg["optimizer"])

    def batch(self, batch: int, n_frames: int, generator: torch.Generator) -> Batch:
        inputs = prepare_inputs(
            raw_inputs(self.config, batch, n_frames, generator), self.run.modalities, self.config["train"]
        )
        labels = torch.randint(0, self.run.n_classes, (batch,), generator=generator)
        return Batch(inputs, labels, torch.arange(batch))

    def step(self, batch: Batch) -> None:
        self.model.train()
        self.method.training_step(StepContext(self.run, self.model, self.optimizer, 0, 0, 1), batch)


def counted_step(trainer: Trainer, batch: Batch) -> int:
    """FLOPs of the method's own training step on real tensors."""
    with FlopCounterMode(display=False) as counter:
        trainer.step(batch)
    return counter.get_total_flops()


def saved_activation_bytes(trainer: Trainer, batch: Batch) -> tuple[int, int]:
    """(FLOPs, bytes saved for backward) of one training step; parameters and repeated storages counted once."""
    params = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        flops = counted_step(trainer, batch)
    return flops, sum(seen.values())


def meta_flops(trainer: Trainer, batch: int, n_frames: int, train: bool) -> int:
    """FLOPs of a full batch on the meta device (shapes only, no arithmetic): a training step's forward,
    cross-entropy and backward (Method.training_step's counted operations; its `loss.item()` cannot run on meta),
    or an evaluation forward (`predict` in eval mode without gradients, as bml.evaluate.collect)."""
    gen = torch.Generator().manual_seed(0)
    b = trainer.batch(batch, n_frames, gen)
    model = trainer.model.to("meta")
    inputs = {m: x.to("meta") for m, x in b.inputs.items()}
    with FlopCounterMode(display=False) as counter:
        if train:
            model.train()
            F.cross_entropy(model(inputs).logits, b.labels.to("meta")).backward()
        else:
            model.eval()
            with torch.no_grad():
                trainer.method.predict(model, inputs)
    return counter.get_total_flops()


def augment_s_per_clip(config: dict, reps: int = 4) -> float:
    """CPU seconds of the loader's frame augmentation per training clip (0 where the protocol has none), on one
    thread as in a DataLoader worker (torch sets 1 thread there; with 2 threads on this shared 2-core machine the
    same crop ran 10x slower)."""
    tcfg, settings = config["train"], config["data"]["settings"]
    if tcfg.get("frame_augment", "none") == "none":
        return 0.0
    total, threads = 0.0, torch.get_num_threads()
    torch.set_num_threads(1)
    for m, kind in config["data"]["modalities"].items():
        if kind != "frames":  # the loader crops RGB frames only
            continue
        size = settings[m]["size"]
        frames = np.random.default_rng(0).integers(0, 256, (tcfg["train_frames"], 3, size, size), dtype=np.uint8)
        random_resized_crop_flip(frames, np.random.default_rng(1))  # warm-up (imports)
        t0 = time.perf_counter()
        for r in range(reps):
            random_resized_crop_flip(frames, np.random.default_rng(r))
        total += (time.perf_counter() - t0) / reps
    torch.set_num_threads(threads)
    return total


def run_seconds(
    config: dict, clips: dict, step_flops: float, eval_flops: float, gpu_flops: float, loader_s: float
) -> dict:
    """One joint run's GPU time: training steps (compute, or the loader where it is slower) and evaluation."""
    tcfg = config["train"]
    epochs, batch, every = tcfg["epochs"], tcfg["batch_size"], tcfg["probe_every"]
    steps = math.ceil(clips["train"] / batch) * epochs
    step_s = max(step_flops / gpu_flops, loader_s)
    probe_epochs = sum(1 for e in range(1, epochs + 1) if every > 0 and (e % every == 0 or e == epochs))
    eval_clips = (
        epochs * clips["val"]
        + probe_epochs * clips["train"]
        + FINAL_MODELS * TEST_PASSES * clips["test"]
        + (FINAL_MODELS - 1) * (clips["train"] + clips["val"])
    )
    return {
        "steps": steps,
        "gpu_step_s": step_s,
        "loader_bound": loader_s > step_flops / gpu_flops,
        "train_s": steps * step_s,
        "eval_clips": eval_clips,
        "eval_s": eval_clips * eval_flops / gpu_flops,
        "total_s": steps * step_s + eval_clips * eval_flops / gpu_flops,
    }


def estimate_pair(dataset: str, protocol: str, args: argparse.Namespace, pipeline: dict) -> dict:
    started = time.perf_counter()
    config = resolve(dataset, protocol, "joint", "concat", pipeline)
    tcfg, clips, n_classes = config["train"], CLIPS[dataset], N_CLASSES[dataset]
    full, b = tcfg["batch_size"], min(args.batch, tcfg["batch_size"])
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    joint = Trainer(config, n_classes)

    # warm-up step, counted: FLOPs and the bytes autograd saves; then the timed steps
    flops_b, saved_b = saved_activation_bytes(joint, joint.batch(b, tcfg["train_frames"], gen))
    times = []
    for _ in range(args.steps):
        batch = joint.batch(b, tcfg["train_frames"], gen)
        t0 = time.perf_counter()
        joint.step(batch)
        times.append(time.perf_counter() - t0)
    cpu_step = statistics.median(times)

    # FLOPs at the full batch on the meta device: joint's step, the evaluation forward, the uni-modal runs' steps
    step_flops = meta_flops(Trainer(config, n_classes), full, tcfg["train_frames"], train=True)
    eval_flops = meta_flops(Trainer(config, n_classes), full, tcfg["eval_frames"], train=False) / full
    ratios = {}
    for m in config["data"]["modalities"]:
        uni = Trainer(resolve(dataset, protocol, f"{m}_only", "none", pipeline), n_classes)
        ratios[f"{m}_only"] = meta_flops(uni, full, tcfg["train_frames"], train=True) / step_flops
    # every other trained run of params.yaml's default block: measured (MMPareto) or assumed (SAME_AS_JOINT)
    relearn_passes = 0
    for r in pipeline["matrices"]["default"][0]["runs"]:
        method = r["method"]
        if method.endswith("_only") or not method_spec(method).trains:
            continue
        if method == "mmpareto":
            mmp = Trainer(resolve(dataset, protocol, method, r["fusion"], pipeline), n_classes)
            counted = counted_step(mmp, mmp.batch(MMPARETO_COUNT_BATCH, tcfg["train_frames"], gen))
            ratios[method] = counted / (step_flops * MMPARETO_COUNT_BATCH / full)
        elif method in SAME_AS_JOINT:
            ratios[method] = SAME_AS_JOINT[method]
        else:
            raise SystemExit(f"params.yaml's default block runs {method!r}: add its cost to gpu_estimate.py")
        if method == "relearning":
            p = resolve(dataset, protocol, method, r["fusion"], pipeline)["method"]
            relearn_passes = len(relearn_epochs(p["every"], p["times"], p["reference_epochs"], tcfg["epochs"]))

    # the loader's augmentation per batch, spread over num_workers processes (assumed to have a core each); every
    # run pays it, the uni-modal ones too (bml/job.py open_run loads every modality of the dataset)
    loader_s = augment_s_per_clip(config) * full / max(tcfg["num_workers"], 1)
    gpu = args.gpu_tflops * 1e12

    def run_s(ratio: float, eval_ratio: float, loader: float) -> dict:
        return run_seconds(config, clips, ratio * step_flops, eval_ratio * eval_flops, gpu, loader)

    def matrix_s(loader: float) -> float:
        total = sum(run_s(r, r if m.endswith("_only") else 1.0, loader)["total_s"] for m, r in ratios.items())
        total += relearn_passes * (clips["train"] + clips["val"]) * eval_flops / gpu  # Re-learning's diagnoses
        return total + (clips["train"] + clips["val"] + TEST_PASSES * clips["test"]) * eval_flops / gpu  # ensemble

    one, compute = run_s(1.0, 1.0, loader_s), run_s(1.0, 1.0, 0.0)
    matrix, matrix_compute = matrix_s(loader_s), matrix_s(0.0)

    n_params = sum(p.numel() for p in joint.model.parameters())
    states = 4 if tcfg["optimizer"]["name"] in ("adam", "adamw") else 3  # weights, grads, momentum (+ Adam's 2nd)
    param_bytes = n_params * 4 * states
    saved_full = saved_b * full / b
    settings = config["data"]["settings"]
    image_eq = sum(
        tcfg["train_frames"] * (settings[m]["size"] / 224) ** 2
        if kind in FRAME_KINDS
        else math.prod(output_shape(settings[m]["preset"])) / 224**2
        for m, kind in config["data"]["modalities"].items()
    )
    return {
        "batch_size": full,
        "epochs": tcfg["epochs"],
        "train_frames": tcfg["train_frames"],
        "input_shapes": {m: list(x.shape[1:]) for m, x in raw_inputs(config, 1, tcfg["train_frames"], gen).items()},
        "optimizer": tcfg["optimizer"]["name"],
        "cpu_batch_used": b,
        "cpu_step_s": round(cpu_step, 3),
        "cpu_step_s_all": [round(t, 3) for t in times],
        "cpu_step_s_full_batch": round(cpu_step * full / b, 2),
        "cpu_full_batch_note": f"scaled linearly from {b} clips" if b < full else "measured at the full batch",
        "flops_per_step": step_flops,
        "flops_per_step_cpu_counted_scaled": flops_b * full / b,
        "eval_flops_per_clip": eval_flops,
        "eval_over_train_flops_per_clip": round(eval_flops / (step_flops / full), 3),
        "cpu_gflops_per_s": round(flops_b / cpu_step / 1e9, 1),
        "flop_ratio_to_joint": {k: round(v, 3) for k, v in ratios.items()},
        "relearning_diagnoses": relearn_passes,
        "loader_augment_s_per_batch_per_worker": round(loader_s, 4),
        "gpu_step_s_compute_est": round(step_flops / gpu, 4),
        "gpu_step_s_est": round(one["gpu_step_s"], 4),
        "loader_bound": one["loader_bound"],
        "gpu_joint_run_min_est": round(one["total_s"] / 60, 1),
        "gpu_joint_run_min_compute_only": round(compute["total_s"] / 60, 1),
        "gpu_joint_run_eval_share": round(one["eval_s"] / one["total_s"], 3),
        "gpu_matrix_1_seed_h_est": round(matrix / 3600, 2),
        "gpu_matrix_6_seeds_h_est": round(6 * matrix / 3600, 1),
        "gpu_matrix_1_seed_h_compute_only": round(matrix_compute / 3600, 2),
        "matrix_in_joint_runs": round(matrix / one["total_s"], 2),
        "params": n_params,
        "param_state_gb": round(param_bytes / 1e9, 3),
        "saved_activations_gb_full_batch": round(saved_full / 1e9, 2),
        "gpu_memory_gb_est": round((param_bytes + saved_full + CUDA_OVERHEAD_BYTES) / 1e9, 1),
        "rule_activations_gb": round(RULE_BYTES_PER_IMAGE * image_eq * full / 1e9, 2),
        "image_equivalents_per_clip": round(image_eq, 2),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="clips per timed CPU step (scaled to the full batch)")
    parser.add_argument("--steps", type=int, default=3, help="timed CPU steps per pair (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu-tflops", type=float, default=GPU_SUSTAINED_FLOPS / 1e12, help="ASSUMED GPU TFLOP/s")
    parser.add_argument("--only", nargs="*", default=None, help="dataset/protocol pairs to run (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_estimate.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipeline = load_pipeline(PARAMS)
    pairs, skipped = covered_pairs()
    if args.only:
        pairs = [p for p in pairs if "/".join(p) in args.only]
    for note in skipped:
        print(f"skipped: {note}", flush=True)
    started, results = time.perf_counter(), {}
    for dataset, protocol in pairs:
        r = results[f"{dataset}/{protocol}"] = estimate_pair(dataset, protocol, args, pipeline)
        print(
            f"{dataset}/{protocol}: CPU {r['cpu_step_s']:.2f} s/step at {r['cpu_batch_used']} clips "
            f"({r['cpu_step_s_full_batch']:.1f} s at {r['batch_size']}, scaled), "
            f"{r['flops_per_step'] / 1e12:.2f} TFLOP/step of {r['batch_size']}, "
            f"CPU {r['cpu_gflops_per_s']:.0f} GFLOP/s; "
            f"GPU estimate at an assumed {args.gpu_tflops:g} TFLOP/s: {r['gpu_joint_run_min_est']:.1f} min/joint run"
            f"{' (loader-bound)' if r['loader_bound'] else ''}, matrix {r['gpu_matrix_1_seed_h_est']:.2f} h/seed, "
            f"{r['gpu_matrix_6_seeds_h_est']:.1f} h for 6 seeds; memory ~{r['gpu_memory_gb_est']:.1f} GB "
            f"[{r['wall_s']:.0f} s]",
            flush=True,
        )
    out = {
        "what": "GPU cost estimated from CPU step-time and FLOP measurements plus an ASSUMED GPU throughput; "
        "no GPU was used",
        "assumptions": {
            "gpu_sustained_tflops": args.gpu_tflops,
            "cuda_overhead_gb": CUDA_OVERHEAD_BYTES / 1e9,
            "test_passes_per_final_evaluation": TEST_PASSES,
            "final_models_evaluated": FINAL_MODELS,
            "clips": CLIPS,
            "loader": "augmentation spread over the protocol's num_workers, each with a free core; disk reads "
            "and host-device copies not counted",
        },
        "cpu": {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "skipped": skipped,
        "wall_s": round(time.perf_counter() - started, 1),
        "pairs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} in {out['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
