"""The one training loop: every baseline and balancing method runs through `train`, changing only what its
Method overrides (bml/methods/base.py).

A run is one cell of the plan (bml/plan.py): its resolved configuration says what to train, on which
packed data, and where its folder is. The folder holds checkpoint.pt (every epoch: bml/checkpoint.py),
best.pt (best validation accuracy), history.csv and, last, metrics.json (bml/results.py).

`train` resumes by itself from checkpoint.pt. The data order depends only on (seed, epoch)
(bml/data/loader.py) and the RNG states are restored, so on the CPU a run killed and resumed ends
bit-identical to one that never stopped. A NaN or infinite loss, weights, BatchNorm statistics or features stop
the run with bml's message, naming the epoch and step, and keep the last good checkpoint. Test accuracy is
recorded every epoch (metrics.json: test_by_epoch) under its own RNG state, where no selection reads it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bml.checkpoint import (
    Checkpoint,
    DamagedFile,
    Parts,
    TrainingError,
    kept_rng,
    load,
    save_atomic,
)
from bml.data.loader import make_loader
from bml.evaluate import NonFiniteError, classification_metrics, modality_accuracies, probes
from bml.job import Job, start_job
from bml.methods.base import (
    Batch,
    EpochContext,
    LossNotFinite,
    Phase,
    Samples,
    StepContext,
    StepServices,
    phase_of,
)
from bml.optim import build_optimizer, build_scheduler
from bml.results import BEST, CHECKPOINT, FINISHED, METRICS
from bml.tracking import open_tracker

log = logging.getLogger(__name__)


def _progress(iterable, **kw):
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True, **kw)


def train(config: dict, device: str | None = None, restart: bool = False, replace_stale: bool = False) -> dict:
    """Train (or resume) one run and evaluate it; returns what metrics.json holds.

    A checkpoint of another configuration or data is refused, unless `replace_stale`: the workflow's jobs pass
    it, since the engine reruns a cell exactly when its values changed, so its old checkpoint is of no use.
    """
    job = start_job(config, device)
    if not job.method.spec.trains:
        return evaluate_only(job)
    ts = job.settings
    services = StepServices(job.run.device, ts.precision, job.method.grad_clip(ts.grad_clip), ts.accumulate)
    phases = run_phases(job)
    parts = Parts(job.model, None, None, services, job.method)
    record = resume(job, parts, phases, restart, replace_stale)
    current = phase_of(phases, max(record.epoch - 1, 0))  # the phase whose optimizer `parts` holds
    with job.phases("tracking"):
        tracker = open_tracker(config["tracking"], config["run"], job.tags, record.mlflow_run_id)
        tracker.log_params(config)
    record.mlflow_run_id, start_epoch, collected, status = tracker.run_id, record.epoch, None, "FAILED"
    try:
        for epoch in _progress(range(start_epoch, ts.epochs), desc="epochs", initial=start_epoch, total=ts.epochs):
            if phase_of(phases, epoch) != current:
                current = phase_of(phases, epoch)
                enter_phase(job, parts, phases, current)
                log.info(f"epoch {epoch + 1}: phase {current.name!r} ({current.epochs} epochs)")
            row, collected = train_epoch(job, parts, epoch, record, current)
            record.history.append(row)
            record.epoch = epoch + 1
            save_checkpoint(job, parts, record)
            with job.phases("tracking"):
                tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, epoch + 1)
            log.info(
                f"epoch {epoch + 1}/{ts.epochs}: loss {row['train_loss']:.4f}  val acc {row['val_acc']:.2f}"
                + "".join(f"  {k} {v:.2f}" for k, v in row.items() if k.startswith(("val_acc_", "val_probe_")))
            )
        # the last epoch's validation collected val, test (and train, probes being due) from this very model
        final = {"last": job.final_metrics(job.model, collected)}
        if record.best["epoch"] == record.epoch:  # the best checkpoint is the model in hand: one evaluation serves both
            final["best"] = final["last"]
        else:
            job.model.load_state_dict(best_weights(job, record))
            final["best"] = job.final_metrics(job.model)
        result = job.write_result(record, tracker, final)
        (job.out_dir / FINISHED).touch()
        with job.phases("tracking"):
            tracker.log_run_files(job.out_dir)
        status = "FINISHED"
        warn_if_at_chance(result, job)
        return result
    finally:
        tracker.end(
            status if status == "FINISHED" else ("KILLED" if sys.exc_info()[0] is KeyboardInterrupt else "FAILED")
        )


def evaluate_only(job: Job) -> dict[str, Any]:
    """A method that trains nothing (the ensemble): its model evaluated once, as both best and last."""
    with job.phases("tracking"):
        tracker = open_tracker(job.config["tracking"], job.config["run"], job.tags)
        tracker.log_params(job.config)
    final = job.final_metrics(job.model)
    record = Checkpoint.empty(job.config, job.data_hash)
    result = job.write_result(record, tracker, {"best": final, "last": final})
    tracker.end()
    log.info(f"{job.method.spec.title}: test acc {final['acc']:.2f}")
    warn_if_at_chance(result, job)
    return result


def warn_if_at_chance(result: dict, job: Job) -> None:
    if "at_chance" in result["flags"]:
        log.warning(
            f"{job.out_dir}: final validation accuracy {result['test']['last']['val_acc']:.2f} is at chance "
            f"({100.0 / job.run.n_classes:.2f} for {job.run.n_classes} classes): the run learned nothing"
        )


def run_phases(job: Job) -> list[Phase]:
    """The method's phases, checked to cover the run's epochs one after the other."""
    epochs, phases = job.settings.epochs, job.method.phases(job.settings.epochs)
    bounds = [(p.start, p.end) for p in phases]
    if not phases or phases[0].start != 0 or phases[-1].end != epochs or any(p.epochs < 1 for p in phases):
        raise TrainingError(f"{job.method.spec.name}: phases {bounds} do not cover the run's {epochs} epochs")
    if any(a.end != b.start for a, b in zip(phases, phases[1:], strict=False)):
        raise TrainingError(f"{job.method.spec.name}: phases {bounds} are not consecutive")
    return phases


def enter_phase(job: Job, parts: Parts, phases: list[Phase], phase: Phase) -> None:
    """`phase`'s optimizer over the method's parameter groups, and its scheduler over the phase's epochs; a
    one-phase method's param_groups is called as before, with the model alone."""
    ts, method = job.settings, job.method
    groups = method.param_groups(job.model) if len(phases) == 1 else method.param_groups(job.model, phase)
    parts.optimizer = build_optimizer(groups, phase.optimizer or ts.optimizer)
    parts.scheduler = build_scheduler(parts.optimizer, phase.scheduler or ts.scheduler, phase.epochs)


def resume(job: Job, parts: Parts, phases: list[Phase], restart: bool, replace_stale: bool) -> Checkpoint:
    """The checkpoint to continue from, restored into `parts` (built for the phase of its last epoch); a fresh
    record when there is none (or a damaged one, moved aside, or, for the workflow, one of another
    configuration), `parts` built for the first phase.

    A finished run whose metrics.json is gone starts over too: the engines delete a job's outputs before they
    rerun it (`snakemake --forcerun`, a changed code file, `dvc repro --force`), and a rerun must retrain. The
    `finished` file, written after metrics.json and no engine's output, tells it from a job killed before
    metrics.json (mid-way, or in its final evaluation), which resumes. It is removed here, so that a rerun
    killed in turn resumes, and written again when this run finishes."""
    path, fresh = job.out_dir / CHECKPOINT, Checkpoint.empty(job.config, job.data_hash)
    enter_phase(job, parts, phases, phases[0])
    finished = job.out_dir / FINISHED
    rerun = finished.exists() and not (job.out_dir / METRICS).exists()
    finished.unlink(missing_ok=True)
    if rerun and path.exists():
        log.info(f"{job.out_dir}: a finished run whose {METRICS} is gone (the engine reruns it): starting over")
    if restart or rerun or not path.exists():
        return fresh
    try:
        record = Checkpoint.load(path, job.run.device)
    except DamagedFile as err:
        log.warning(f"{err}: starting over")
        return fresh
    if (record.config_hash, record.data_hash) != (fresh.config_hash, fresh.data_hash):
        what = "configuration" if record.config_hash != fresh.config_hash else "data"
        if not replace_stale:
            raise TrainingError(
                f"{path}: checkpoint of another {what} (hash {record.config_hash}/{record.data_hash}, this run "
                f"{fresh.config_hash}/{fresh.data_hash}); delete {job.out_dir} or pass --restart to start over"
            )
        log.info(
            f"{path}: checkpoint of another {what}; the workflow reran this cell for its new values: starting over"
        )
        return fresh
    enter_phase(job, parts, phases, phase_of(phases, max(record.epoch - 1, 0)))
    record.restore(parts)
    log.info(f"resuming {job.out_dir} after epoch {record.epoch}")
    return record


def train_epoch(
    job: Job, parts: Parts, epoch: int, record: Checkpoint, phase: Phase | None = None
) -> tuple[dict[str, float], dict[str, dict]]:
    """One epoch's steps, end-of-epoch hook, validation (test recorded aside, best.pt kept) and after-validation
    hook: its history row, and what validation collected from the model."""
    run, method, model, ts, phases = job.run, job.method, job.model, job.settings, job.phases
    epoch_started = time.perf_counter()
    model.train()
    method.on_epoch_start(EpochContext(run, model, epoch, phase))
    samples = method.epoch_samples(EpochContext(run, model, epoch, phase))
    indices = None if samples is None else samples.indices
    loader = make_loader(run.splits["train"], ts.batch_size, epoch, ts.num_workers, run.device.type == "cuda", indices)
    sums, seen_n = {}, 0
    with phases("training_steps"):
        for step, raw in enumerate(_progress(loader, desc=f"epoch {epoch + 1}", total=len(loader))):
            batch = _to_batch(raw, run.device, job.prepare, samples)
            ctx = StepContext(run, model, parts.optimizer, epoch, step, len(loader), parts.services, phase)
            try:
                with parts.services.autocast():
                    values = method.training_step(ctx, batch)
            except LossNotFinite as err:
                raise stop(job, record, f"loss is not finite ({err})", epoch, step) from None
            bad = _nonfinite_state(model)
            if bad:
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                raise stop(
                    job,
                    record,
                    f"weights or running statistics are not finite after the optimizer step ({bad[0]}{more})",
                    epoch,
                    step,
                )
            seen_n += batch.labels.shape[0]
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value * batch.labels.shape[0]
    train_time = time.perf_counter() - epoch_started
    lr = parts.optimizer.param_groups[0]["lr"]
    parts.scheduler.step()
    with phases("method_epoch_end"):
        method.on_epoch_end(EpochContext(run, model, epoch, phase))
    epoch_end_time = time.perf_counter() - epoch_started - train_time
    try:
        val, collected = validate(job, model, ts.probes_due(epoch))
        collected["test"] = record_test(job, model, epoch, record)
    except NonFiniteError as err:
        raise stop(job, record, str(err), epoch, None) from None
    keep_best(job, record, epoch, val["val_acc"])  # the weights just validated, before the method changes them
    if epoch + 1 < ts.epochs:  # never after the last epoch: the final evaluation reuses what validation collected
        hook_started = time.perf_counter()
        with phases("method_epoch_end"):
            method.after_validation(EpochContext(run, model, epoch, phase))
        epoch_end_time += time.perf_counter() - hook_started
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
    row["step_time_ms"] = 1e3 * train_time / max(len(loader), 1)
    row["epoch_end_time_s"] = epoch_end_time
    row.update(gpu_figures(run.device))
    return row, collected


def gpu_figures(device: torch.device) -> dict[str, float]:
    """Where a GPU ran the epoch: its peak memory (torch's allocator, reset for the next epoch) and its utilisation
    as NVML reports it at the epoch's end (its mean over NVML's last sample period; absent without nvidia-ml-py).
    Empty on the CPU."""
    if device.type != "cuda":
        return {}
    figures = {"gpu_peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9}
    torch.cuda.reset_peak_memory_stats(device)
    try:
        figures["gpu_utilisation_pct"] = float(torch.cuda.utilization(device))
    except (ModuleNotFoundError, RuntimeError):  # no nvidia-ml-py, or NVML cannot read this device
        pass
    return figures


def stop(job: Job, record: Checkpoint, what: str, epoch: int, step: int | None) -> TrainingError:
    at = f"epoch {epoch + 1}" + (f", step {step + 1}" if step is not None else "")
    kept = (
        f"the last good checkpoint (epoch {record.epoch}) is kept in {job.out_dir / CHECKPOINT}"
        if record.history
        else "no checkpoint was written yet"
    )
    return TrainingError(f"{job.out_dir}: {what} at {at}; {kept}. Lower train.optimizer.lr or check the inputs.")


def _nonfinite_state(model: torch.nn.Module) -> list[str]:
    """The parameters and floating-point buffers (BatchNorm's running statistics) holding a NaN or an infinity.
    One fused check first: one device sync per step on a GPU, not one per tensor; the names only when something
    is wrong."""
    tensors = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    if torch.stack([torch.isfinite(t).all() for _, t in tensors]).all():
        return []
    return [name for name, t in tensors if not torch.isfinite(t).all()]


def keep_best(job: Job, record: Checkpoint, epoch: int, val_acc: float) -> None:
    """best.pt when validation accuracy improved after 0-based `epoch` (its weights also kept in the record)."""
    if record.best is None or val_acc > record.best["val_acc"]:
        with job.phases("checkpoints"):
            record.best = {"epoch": epoch + 1, "val_acc": val_acc}
            record.best_model = {k: v.detach().to("cpu", copy=True) for k, v in job.model.state_dict().items()}
            save_best(job, record)


def save_checkpoint(job: Job, parts: Parts, record: Checkpoint) -> None:
    """checkpoint.pt: the model as the next epoch trains it (after the method's after_validation)."""
    with job.phases("checkpoints"):
        record.save(job.out_dir / CHECKPOINT, parts)


def save_best(job: Job, record: Checkpoint) -> None:
    best = {"model": record.best_model, "epoch": record.best["epoch"], "config": job.config}
    save_atomic({**best, "config_hash": job.config["hash"]}, job.out_dir / BEST)


def best_weights(job: Job, record: Checkpoint) -> dict[str, torch.Tensor]:
    """The best epoch's weights; best.pt checked on the way, and written again from the record if damaged."""
    try:
        load(job.out_dir / BEST, job.run.device)
    except (DamagedFile, FileNotFoundError) as err:
        log.warning(f"{err}: writing it again from the checkpoint's copy of epoch {record.best['epoch']}")
        save_best(job, record)
    return record.best_model


def validate(job: Job, model: torch.nn.Module, with_probes: bool) -> tuple[dict[str, float], dict[str, dict]]:
    """Validation metrics of one epoch (never test): accuracy, per-modality accuracy, probes when due; and what
    was collected ({"val": ..., "train": ...}), which the final evaluation of this same model reuses."""
    with job.phases("validation"):
        found = job.collect(model, "val")
    metrics = {f"val_{k}": v for k, v in classification_metrics(found["logits"], found["label"]).items()}
    metrics.update({f"val_{k}": v for k, v in modality_accuracies(found).items()})
    collected = {"val": found}
    if with_probes:
        ev = job.config["eval"]
        with job.phases("probes"):
            collected["train"] = train = job.collect(model, "train_eval")
            found_probes = probes(train, found, None, tuple(ev["probe_cs"]), ev["probe_max_iter"], job.run.n_classes)
        metrics.update({f"val_{k}": v for k, v in found_probes.items()})
    return metrics, collected


def record_test(job: Job, model: torch.nn.Module, epoch: int, record: Checkpoint) -> dict:
    """Test accuracy after this epoch, into the record no selection reads (test_by_epoch); collected under a
    kept RNG state, so recording it leaves the training's random stream as it would be without."""
    with job.phases("test_by_epoch"), kept_rng():
        found = job.collect(model, "test")
    record.test_by_epoch["epoch"].append(epoch + 1)
    record.test_by_epoch["acc"].append(classification_metrics(found["logits"], found["label"])["acc"])
    return found


def _to_batch(raw: dict, device: torch.device, prepare: Callable, samples: Samples | None) -> Batch:
    """A loader batch on the device with a method's per-sample masks: input-level ones zero the masked inputs
    here; feature-level ones travel with the batch, for the forward to zero the features (bml/methods/base.py)."""
    inputs = prepare({m: x.to(device, non_blocking=True) for m, x in raw["inputs"].items()})
    masks, level = {}, "input" if samples is None else samples.mask_level
    if samples is not None and samples.masks:
        for m, mask in samples.masks.items():
            masks[m] = torch.as_tensor(np.asarray(mask, dtype=bool)[raw["position"].numpy()], device=device)
            if level == "input":
                inputs[m] = inputs[m] * masks[m].view(-1, *[1] * (inputs[m].dim() - 1)).to(inputs[m].dtype)
    return Batch(inputs, raw["label"].to(device, non_blocking=True), raw["index"].to(device), masks, level)
