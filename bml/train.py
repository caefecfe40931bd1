"""The one training loop: every baseline and balancing method runs through `train`, changing only what its
Method overrides (bml/methods/base.py).

A run is one cell of the plan (bml/plan.py): its resolved configuration says what to train, on which
packed data, and where its folder is. The folder holds checkpoint.pt (every epoch: model, optimizer,
scheduler, method state, every RNG state; written to a temporary file and renamed), best.pt (best
validation accuracy), history.csv and, last, metrics.json (bml/results.py).

`train` resumes by itself from checkpoint.pt. The data order depends only on (seed, epoch)
(bml/data/loader.py) and the RNG states are restored, so on the CPU a run killed and resumed ends
bit-identical to one that never stopped. A NaN or infinite loss, weights or features stop the run with
bml's message, naming the epoch and step, and keep the last good checkpoint.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bml.checkpoint import load, rng_state, save_atomic, seed_everything, set_rng_state
from bml.data.loader import CROP_SCALE, PackedSplit, make_loader, prepare_inputs
from bml.evaluate import NonFiniteError, classification_metrics, collect, evaluate_model, modality_accuracies, probes
from bml.methods import load_method, method_spec
from bml.methods.base import Batch, EpochContext, LossNotFinite, Method, RunContext, Samples, StepContext
from bml.models.model import ModelSpec
from bml.optim import build_optimizer, build_scheduler
from bml.plan import digest, hashed_config
from bml.results import BEST, CHECKPOINT, code_version, write_history, write_metrics
from bml.tracking import open_tracker


class TrainingError(RuntimeError):
    """A run that cannot go on (a NaN, a checkpoint of another configuration); names the file."""


class Phases:
    """Wall time per phase of a run (data, steps, validation, probes, final evaluation, tracking, checkpoints)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def timed(self, phase: str, fn: Callable, *args, **kw):
        start = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            self.add(phase, time.perf_counter() - start)


def open_run(config: dict, device: torch.device) -> RunContext:
    """The run's data (checked: size, hash, disjoint splits) and what every hook may read."""
    packed, tcfg, seed = config["paths"]["packed_dir"], config["train"], config["run"]["seed"]
    modalities = config["data"]["modalities"]
    only = method_spec(config["run"]["method"]).modality  # a uni-modal baseline reads its own modality only
    read = {only: modalities[only]} if only else modalities
    splits = {
        "train": PackedSplit(
            packed,
            "train",
            read,
            tcfg["train_frames"],
            train=True,
            seed=seed,
            augment=tcfg.get("frame_augment", "none"),
            crop_scale=tcfg.get("frame_crop_scale", CROP_SCALE),
        ),
        "train_eval": PackedSplit(packed, "train", read, tcfg["eval_frames"], train=False, seed=seed),
        "val": PackedSplit(packed, "val", read, tcfg["eval_frames"], train=False, seed=seed),
        "test": PackedSplit(packed, "test", read, tcfg["eval_frames"], train=False, seed=seed),
    }
    train_ids = set(splits["train"].records["clip_id"].tolist())
    for other in ("val", "test"):
        shared = train_ids & set(splits[other].records["clip_id"].tolist())
        if shared:
            raise TrainingError(f"{splits[other].path}: {len(shared)} clips also in train, e.g. {sorted(shared)[0]}")
    required = {m: Path(d) for m, d in config["requires"].items()}
    return RunContext(config, modalities, splits["train"].n_classes, device, splits, required)


def data_hash(splits: dict[str, PackedSplit]) -> str:
    return digest([splits[s].meta["sha256"] for s in ("train", "val", "test")])


def pick_device(name: str | None) -> torch.device:
    """auto: the GPU this process was given (bml/gpu.py sets CUDA_VISIBLE_DEVICES first) if any, else the CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _progress(iterable, **kw):
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True, **kw)


def _nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """The parameters holding a NaN or an infinity. One fused check first: one device sync per step on a GPU,
    not one per parameter; the names only when something is wrong."""
    params = list(model.named_parameters())
    if torch.stack([torch.isfinite(p).all() for _, p in params]).all():
        return []
    return [name for name, p in params if not torch.isfinite(p).all()]


def train(
    config: dict,
    device: str | None = None,
    restart: bool = False,
    replace_stale: bool = False,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Train (or resume) one run and evaluate it; returns what metrics.json holds.

    A checkpoint of another configuration or data is refused, unless `replace_stale`: the workflow's jobs pass
    it, since the engine reruns a cell exactly when its values changed, so its old checkpoint is of no use.
    """
    phases, started = Phases(), time.perf_counter()
    run_cfg, tcfg = config["run"], config["train"]
    out_dir = Path(config["paths"]["run_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    seed_everything(run_cfg["seed"])
    run = phases.timed("data", open_run, config, dev)
    spec = method_spec(run_cfg["method"])
    method: Method = load_method(run_cfg["method"])(spec, config["method"], run)

    def prepare(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return prepare_inputs(inputs, run.modalities, tcfg)

    def collect_split(model: torch.nn.Module, split: str) -> dict:
        return collect(model, method.predict, run.splits[split], dev, prepare)

    run.collect = collect_split
    seen = {spec.modality: run.modalities[spec.modality]} if spec.modality else dict(run.modalities)
    model = method.build_model(ModelSpec(tcfg["encoder"], run_cfg["fusion"], run.n_classes, seen)).to(dev)
    eval_splits = {"train": run.splits["train_eval"], "val": run.splits["val"], "test": run.splits["test"]}
    chash, dhash = config["hash"], data_hash(run.splits)
    if chash != digest(hashed_config(config)):
        raise TrainingError(
            f"{out_dir}: the configuration's hash {chash} does not match its values; resolve it "
            f"again (bml plan) instead of editing it"
        )
    tags = {
        **{k: str(v) for k, v in run_cfg.items()},
        "git_commit": code_version(),
        "data_hash": dhash,
        "config_hash": chash,
    }

    def final_metrics(m: torch.nn.Module, collected: dict | None = None) -> dict[str, float]:
        return evaluate_model(
            m,
            method.predict,
            eval_splits,
            dev,
            prepare,
            config["eval"],
            run_cfg["seed"],
            run.n_classes,
            extra=method.evaluations,
            collected=collected,
        )

    if not spec.trains:  # the ensemble: evaluate the runs it combines
        tracker = open_tracker(config["tracking"], run_cfg, tags)
        final = phases.timed("final_evaluation", final_metrics, model)
        phases.add("total", time.perf_counter() - started)
        result = write_metrics(
            out_dir,
            config,
            dhash,
            tags["git_commit"],
            tracker.run_id,
            None,
            {"best": final, "last": final},
            phases.seconds,
        )
        tracker.log_params(config)
        tracker.log_metrics({"test": result["test"]}, step=0)
        tracker.end()
        log(f"{spec.title}: test acc {final['acc']:.2f}")
        return result

    optimizer = build_optimizer(method.param_groups(model), tcfg["optimizer"])
    scheduler = build_scheduler(optimizer, tcfg["scheduler"], tcfg["epochs"])
    start_epoch, history, best, run_id = 0, [], None, None
    ckpt_path, best_path = out_dir / CHECKPOINT, out_dir / BEST
    ckpt = load(ckpt_path, dev) if ckpt_path.exists() and not restart else None
    if ckpt is not None and (ckpt["config_hash"] != chash or ckpt["data_hash"] != dhash):
        what = "configuration" if ckpt["config_hash"] != chash else "data"
        if not replace_stale:
            raise TrainingError(
                f"{ckpt_path}: checkpoint of another {what} (hash {ckpt['config_hash']}/"
                f"{ckpt['data_hash']}, this run {chash}/{dhash}); delete {out_dir} or pass "
                f"--restart to start over"
            )
        log(
            f"{ckpt_path}: checkpoint of another {what}; the workflow reran this cell for its new values: starting over"
        )
        ckpt = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        method.load_state_dict(ckpt["method"])
        start_epoch, history, best, run_id = ckpt["epoch"], ckpt["history"], ckpt["best"], ckpt["mlflow_run_id"]
        set_rng_state(ckpt["rng"])
        log(f"resuming {out_dir} after epoch {start_epoch}")

    tracker = phases.timed("tracking", open_tracker, config["tracking"], run_cfg, tags, run_id)
    phases.timed("tracking", tracker.log_params, config)
    status = "FAILED"

    def stop(what: str, epoch: int, step: int | None) -> TrainingError:
        at = f"epoch {epoch + 1}" + (f", step {step + 1}" if step is not None else "")
        kept = (
            f"the last good checkpoint (epoch {history[-1]['epoch']}) is kept in {ckpt_path}"
            if history
            else "no checkpoint was written yet"
        )
        return TrainingError(f"{out_dir}: {what} at {at}; {kept}. Lower train.optimizer.lr or check the inputs.")

    try:
        for epoch in _progress(
            range(start_epoch, tcfg["epochs"]), desc="epochs", initial=start_epoch, total=tcfg["epochs"]
        ):
            epoch_started = time.perf_counter()
            model.train()
            method.on_epoch_start(EpochContext(run, model, epoch))
            samples = method.epoch_samples(EpochContext(run, model, epoch))
            loader = make_loader(
                run.splits["train"],
                tcfg["batch_size"],
                epoch,
                tcfg["num_workers"],
                pin_memory=dev.type == "cuda",
                indices=None if samples is None else samples.indices,
            )
            n_steps = len(loader)
            sums, seen_n = {}, 0
            for step, raw in enumerate(_progress(loader, desc=f"epoch {epoch + 1}", total=n_steps)):
                batch = _to_batch(raw, dev, prepare, samples)
                ctx = StepContext(run, model, optimizer, epoch, step, n_steps)
                try:
                    values = method.training_step(ctx, batch)
                except LossNotFinite as err:
                    raise stop(f"loss is not finite ({err})", epoch, step) from None
                bad = _nonfinite_parameters(model)
                if bad:
                    raise stop(
                        f"weights are not finite after the optimizer step ({bad[0]}"
                        + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                        + ")",
                        epoch,
                        step,
                    )
                n = batch.labels.shape[0]
                seen_n += n
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value * n
            train_time = time.perf_counter() - epoch_started
            phases.add("training_steps", train_time)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            method.on_epoch_end(EpochContext(run, model, epoch))
            epoch_end_time = time.perf_counter() - epoch_started - train_time
            phases.add("method_epoch_end", epoch_end_time)

            due = tcfg["probe_every"] > 0 and ((epoch + 1) % tcfg["probe_every"] == 0 or epoch + 1 == tcfg["epochs"])
            try:
                val, last_collected = _validate(model, collect_split, config, run.n_classes, due, phases)
            except NonFiniteError as err:
                raise stop(str(err), epoch, None) from None
            row = {
                "epoch": epoch + 1,
                "train_loss": sum(sums.values()) / max(seen_n, 1),
                "lr": lr,
                **({f"loss_{k}": v / seen_n for k, v in sums.items()} if len(sums) > 1 else {}),
                **val,
                **method.epoch_log(),
            }
            # wall times, never compared between runs: the whole epoch, its training steps per step, and the
            # method's end-of-epoch work (Re-learning's diagnosis)
            row["epoch_time_s"] = time.perf_counter() - epoch_started
            row["step_time_ms"] = 1e3 * train_time / max(n_steps, 1)
            row["epoch_end_time_s"] = epoch_end_time
            history.append(row)
            t0 = time.perf_counter()
            if best is None or row["val_acc"] > best["val_acc"]:
                best = {"epoch": epoch + 1, "val_acc": row["val_acc"]}
                save_atomic(
                    {"model": model.state_dict(), "epoch": epoch + 1, "config": config, "config_hash": chash}, best_path
                )
            save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "method": method.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "rng": rng_state(),
                    "config": config,
                    "config_hash": chash,
                    "data_hash": dhash,
                    "mlflow_run_id": tracker.run_id,
                },
                ckpt_path,
            )
            phases.add("checkpoints", time.perf_counter() - t0)
            phases.timed("tracking", tracker.log_metrics, {k: v for k, v in row.items() if k != "epoch"}, epoch + 1)
            log(
                f"epoch {epoch + 1}/{tcfg['epochs']}: loss {row['train_loss']:.4f}  val acc {row['val_acc']:.2f}"
                + "".join(f"  {k} {v:.2f}" for k, v in row.items() if k.startswith(("val_acc_", "val_probe_")))
            )

        last_epoch = history[-1]["epoch"] if history else tcfg["epochs"]
        # the last epoch's validation already collected val (and train, probes being due) from this model
        reuse = (
            last_collected
            if history and history[-1]["epoch"] == tcfg["epochs"] and start_epoch < tcfg["epochs"]
            else None
        )
        final = {"last": phases.timed("final_evaluation", final_metrics, model, reuse)}
        if best["epoch"] == last_epoch:  # the best checkpoint is the model in hand: one evaluation serves both
            final["best"] = final["last"]
        else:
            model.load_state_dict(load(best_path, dev)["model"])
            final["best"] = phases.timed("final_evaluation", final_metrics, model)
        write_history(out_dir, history)
        phases.add("total", time.perf_counter() - started)
        result = write_metrics(
            out_dir, config, dhash, tags["git_commit"], tracker.run_id, best["epoch"], final, phases.seconds
        )
        tracker.log_metrics({"test": final}, step=tcfg["epochs"])
        tracker.log_run_files(out_dir)
        status = "FINISHED"
        return result
    finally:
        tracker.end(
            status if status == "FINISHED" else ("KILLED" if sys.exc_info()[0] is KeyboardInterrupt else "FAILED")
        )


def _to_batch(raw: dict, device: torch.device, prepare: Callable, samples: Samples | None) -> Batch:
    """A loader batch on the device; a method's per-sample masks zero the masked inputs."""
    inputs = prepare({m: x.to(device, non_blocking=True) for m, x in raw["inputs"].items()})
    masks = {}
    if samples is not None and samples.masks:
        for m, mask in samples.masks.items():
            masks[m] = torch.as_tensor(np.asarray(mask, dtype=bool)[raw["position"].numpy()], device=device)
            inputs[m] = inputs[m] * masks[m].view(-1, *[1] * (inputs[m].dim() - 1)).to(inputs[m].dtype)
    return Batch(inputs, raw["label"].to(device, non_blocking=True), raw["index"].to(device), masks)


def _validate(
    model: torch.nn.Module, collect_split: Callable, config: dict, n_classes: int, with_probes: bool, phases: Phases
) -> tuple[dict[str, float], dict[str, dict]]:
    """Validation metrics of one epoch (never test): accuracy, per-modality accuracy, probes when due; and what
    was collected ({"val": ..., "train": ...}), which the final evaluation of this same model reuses."""
    found = phases.timed("validation", collect_split, model, "val")
    metrics = {f"val_{k}": v for k, v in classification_metrics(found["logits"], found["label"]).items()}
    metrics.update({f"val_{k}": v for k, v in modality_accuracies(found).items()})
    collected = {"val": found}
    if with_probes:
        collected["train"] = train = phases.timed("probes", collect_split, model, "train_eval")
        ev = config["eval"]
        metrics.update(
            {
                f"val_{k}": v
                for k, v in phases.timed(
                    "probes", probes, train, found, None, tuple(ev["probe_cs"]), ev["probe_max_iter"], n_classes
                ).items()
            }
        )
    return metrics, collected
