"""Setting a run up: its data (checked), method, model, folder, tags and clocks (`start_job`), as every part of
the training loop (bml/train.py) reads them (`Job`), and writing its result once it is done."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bml.checkpoint import Checkpoint, TrainingError, seed_everything
from bml.data.loader import CROP_SCALE, PackedSplit, prepare_inputs
from bml.evaluate import collect, evaluate_model
from bml.methods import load_method, method_spec
from bml.methods.base import Method, RunContext
from bml.models.init import initialise
from bml.models.model import ModelSpec
from bml.plan import digest, hashed_config
from bml.results import code_version, write_history, write_metrics
from bml.runtime import configure_torch, provenance
from bml.settings import TrainSettings

AT_CHANCE_MARGIN = 0.5  # a final validation accuracy below chance * (1 + this) flags the run "at_chance"


class Phases:
    """Wall time per phase of a run (data, steps, validation, probes, final evaluation, tracking, checkpoints):
    `with phases("tracking"): ...` adds the block's time to its phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def open_run(config: dict, device: torch.device) -> RunContext:
    """The run's data (checked: size, hash, disjoint splits) and what every hook may read."""
    packed, ts, seed = config["paths"]["packed_dir"], TrainSettings.from_config(config["train"]), config["run"]["seed"]
    modalities = config["data"]["modalities"]
    only = method_spec(config["run"]["method"]).modality  # a uni-modal baseline reads its own modality only
    read = {only: modalities[only]} if only else modalities
    splits = {
        "train": PackedSplit(
            packed, "train", read, ts.train_frames, True, seed, ts.frame_augment, ts.frame_crop_scale or CROP_SCALE
        ),
        **{name: PackedSplit(packed, split, read, ts.eval_frames, False, seed) for name, split in EVAL_SPLITS.items()},
    }
    train_ids = set(splits["train"].records["clip_id"].tolist())
    for other in ("val", "test"):
        shared = train_ids & set(splits[other].records["clip_id"].tolist())
        if shared:
            raise TrainingError(f"{splits[other].path}: {len(shared)} clips also in train, e.g. {sorted(shared)[0]}")
    required = {m: Path(d) for m, d in config["requires"].items()}
    return RunContext(config, modalities, splits["train"].n_classes, device, splits, required)


EVAL_SPLITS = {"train_eval": "train", "val": "val", "test": "test"}  # evaluation's names -> packed splits


def data_hash(splits: dict[str, PackedSplit]) -> str:
    return digest([splits[s].meta["sha256"] for s in ("train", "val", "test")])


def pick_device(name: str | None) -> torch.device:
    """auto: the GPU this process was given (bml/gpu.py sets CUDA_VISIBLE_DEVICES first) if any, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Job:
    """One run: its settings, data, method, model, folder and timings, as every part of the loop reads them."""

    config: dict
    settings: TrainSettings
    run: RunContext
    method: Method
    model: torch.nn.Module
    out_dir: Path
    data_hash: str
    tags: dict[str, str]
    phases: Phases
    started: float  # perf_counter() at the start, for the total

    def prepare(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return prepare_inputs(inputs, self.run.modalities, self.config["train"])

    def collect(self, model: torch.nn.Module, split: str) -> dict:
        return collect(model, self.method.predict, self.run.splits[split], self.run.device, self.prepare)

    def final_metrics(self, model: torch.nn.Module, collected: dict | None = None) -> dict[str, float]:
        """Every test metric of `model` (bml/evaluate.py); `collected`: splits already collected from it."""
        splits = {
            "train": self.run.splits["train_eval"],
            "val": self.run.splits["val"],
            "test": self.run.splits["test"],
        }
        with self.phases("final_evaluation"):
            return evaluate_model(
                model,
                self.method.predict,
                splits,
                self.run.device,
                self.prepare,
                self.config["eval"],
                self.run.seed,
                self.run.n_classes,
                extra=self.method.evaluations,
                collected=collected,
            )

    def write_result(self, record: Checkpoint, tracker, final: dict) -> dict[str, Any]:
        """metrics.json (with its flags), after the history; the test numbers to MLflow as its summary."""
        write_history(self.out_dir, record.history)
        flags = at_chance_flags(final["last"]["val_acc"], self.run.n_classes)
        self.phases.seconds["total"] = time.perf_counter() - self.started
        result = write_metrics(
            self.out_dir,
            self.config,
            self.data_hash,
            self.tags["git_commit"],
            tracker.run_id,
            record.best["epoch"] if record.best else None,
            final,
            self.phases.seconds,
            flags=flags,
            test_by_epoch=record.test_by_epoch,
            runtime=provenance(),
        )
        with self.phases("tracking"):
            tracker.log_summary({"test": final})
        return result


def start_job(config: dict, device: str | None) -> Job:
    """Settings, data, method and model of a run, its configuration's hash checked."""
    started = time.perf_counter()
    phases, settings = Phases(), TrainSettings.from_config(config["train"])
    out_dir = Path(config["paths"]["run_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    if config["hash"] != digest(hashed_config(config)):
        raise TrainingError(
            f"{out_dir}: the configuration's hash {config['hash']} does not match its values; resolve it "
            f"again (bml plan) instead of editing it"
        )
    configure_torch()  # the pinned kernels and one thread (bml/runtime.py), whoever called train()
    dev = pick_device(device)
    seed_everything(config["run"]["seed"])
    with phases("data"):
        run = open_run(config, dev)
    spec = method_spec(config["run"]["method"])
    method: Method = load_method(spec.name)(spec, config["method"], run)
    seen = {spec.modality: run.modalities[spec.modality]} if spec.modality else dict(run.modalities)
    model = method.build_model(ModelSpec(settings.encoder, config["run"]["fusion"], run.n_classes, seen))
    if not spec.requires:  # built from scratch, as the authors apply their init; a model of trained runs keeps theirs
        initialise(model, settings.init)
    model = model.to(dev)
    dhash = data_hash(run.splits)
    tags = {**{k: str(v) for k, v in config["run"].items()}, "git_commit": code_version(), "data_hash": dhash}
    tags["config_hash"] = config["hash"]
    tags |= {f"runtime.{k}": str(v) for k, v in provenance().items()}  # what the numbers were computed with
    job = Job(config, settings, run, method, model, out_dir, dhash, tags, phases, started)
    run.collect, run.prepare = job.collect, job.prepare
    return job


def at_chance_flags(val_acc: float, n_classes: int) -> list[str]:
    """["at_chance"] when the final validation accuracy is within AT_CHANCE_MARGIN of chance (100 / n_classes)."""
    return ["at_chance"] if val_acc < 100.0 / n_classes * (1.0 + AT_CHANCE_MARGIN) else []
