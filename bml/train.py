"""The one training loop: every baseline and balancing method runs through `train`, changing only the
hooks of its Method (bml/methods/base.py).

A run is one (dataset, protocol, method, fusion, seed) cell; `resolve_config` merges the protocol
(params/protocols/), the method's defaults (params/methods/), the evaluation and tracking settings
(params/params.yaml) and any `--set key=value` overrides into one configuration, refused before anything
runs if a name or value is wrong. The run directory results/<dataset>/<protocol>/<fusion>/<method>/seed<k>/
holds checkpoint.pt (every epoch: model, optimizer, scheduler, method state, every RNG state; written to
a temporary file and renamed), best.pt (best validation accuracy), history.csv and, last, metrics.json.

`train` resumes by itself from checkpoint.pt. The data order depends only on (seed, epoch)
(bml/data/loader.py) and the RNG states are restored, so on the CPU a run killed and resumed ends
bit-identical to one that never stopped.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from bml.config import PARAMS_DIR, PROJECT_ROOT, ConfigError, load_config, read_yaml
from bml.data.audio import output_shape
from bml.data.loader import PackedSplit, make_loader, prepare_frames
from bml.evaluate import classification_metrics, collect, evaluate_model, modality_accuracies, probes
from bml.gpu import pick_cuda_device
from bml.methods import METHODS, Method, method_class
from bml.methods.base import StepState
from bml.models.fusion import FUSIONS, LateEnsemble, ModelConfig, build_model
from bml.tracking import open_tracker

PROTOCOL_SCHEMA = PROJECT_ROOT / "workflow" / "schemas" / "protocol.schema.yaml"
METHODS_SCHEMA = PROJECT_ROOT / "workflow" / "schemas" / "methods.schema.yaml"
CHECKPOINT, BEST, METRICS, HISTORY = "checkpoint.pt", "best.pt", "metrics.json", "history.csv"
# settings that change how fast a run goes or where it reports, not what it computes: not in the hash
NOT_HASHED = (("train", "num_workers"), ("train", "probe_every"), ("train", "description"))
WALL_TIMES = ("epoch_time_s", "step_time_ms", "epoch_end_time_s")  # history columns that differ run to run


class TrainingError(RuntimeError):
    """A run that cannot go on (a NaN loss, a checkpoint of another configuration); names the file."""


# --------------------------------------------------------------------------------------------------
# configuration


def protocols(params_dir: Path = PARAMS_DIR) -> list[str]:
    return sorted(p.stem for p in (params_dir / "protocols").glob("*.yaml"))


def _set_key(config: dict, dotted: str, raw: str) -> None:
    section, _, rest = dotted.partition(".")
    if section not in ("train", "method", "eval") or not rest:
        raise ConfigError(f"--set {dotted}={raw}: keys start with train., method. or eval. "
                          f"(e.g. train.epochs=2, method.alpha=0.5)")
    node, parts = config[section], rest.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"--set {dotted}: no section {part!r} under {section}; it has {sorted(node)}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"--set {dotted}: unknown key {parts[-1]!r}; choose one of {sorted(node)}")
    node[parts[-1]] = yaml.safe_load(raw)


def resolve_config(dataset: str, protocol: str, method: str, fusion: str, seed: int,
                   overrides: list[str] | tuple[str, ...] = (), params_dir: Path = PARAMS_DIR,
                   pipeline: dict | None = None) -> dict[str, Any]:
    """The full configuration of one run, checked: unknown names and bad values are refused here.

    `pipeline` is params/params.yaml already loaded (Snakemake passes its config, --config overrides included).
    """
    pipeline = load_config(params_dir / "params.yaml") if pipeline is None else pipeline
    if protocol not in protocols(params_dir):
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {protocols(params_dir)} "
                          f"(files in {params_dir / 'protocols'})")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    cls = method_class(method)
    if fusion not in (*FUSIONS, "none"):
        raise ConfigError(f"unknown fusion {fusion!r}; choose one of {sorted(FUSIONS) + ['none']}")
    if fusion not in cls.fusions:
        why = " (it has no fusion head)" if cls.fusions == ("none",) else ""
        raise ConfigError(f"method {method!r} works with fusion {list(cls.fusions)}{why}, not {fusion!r}")
    if not re.fullmatch(r"[a-z0-9_\-]+", dataset):
        raise ConfigError(f"dataset name {dataset!r}: use lower-case letters, digits, '_' or '-'")
    method_file = params_dir / "methods" / f"{method}.yaml"
    config = {
        "run": {"dataset": dataset, "protocol": protocol, "method": method, "fusion": fusion, "seed": int(seed)},
        "train": read_yaml(params_dir / "protocols" / f"{protocol}.yaml"),
        "method": read_yaml(method_file) if method_file.is_file() else {},
        "eval": dict(pipeline["evaluation"]),
        "data": {"packed_dir": f"{pipeline['data_root']}/{dataset}/packed"},
        "paths": {"results_root": pipeline["results_root"]},
        "tracking": dict(pipeline["tracking"]),
    }
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        _set_key(config, key.strip(), value.strip())
    _check_protocol(config["train"], f"params/protocols/{protocol}.yaml (with any --set overrides)")
    _check_method(method, config["method"], f"{method_file} (with any --set overrides)")
    return config


def check_matrix(pipeline: dict, params_dir: Path = PARAMS_DIR) -> None:
    """Resolve every cell of the training matrix (params.yaml: train), so a bad one is refused before any job."""
    t = pipeline["train"]
    for cell in t["runs"]:
        resolve_config(t["dataset"], t["protocol"], cell["method"], cell["fusion"], t["seeds"][0],
                       params_dir=params_dir, pipeline=pipeline)
    if t["ensemble"]:
        members = {(c["method"], c["fusion"]) for c in t["runs"]}
        missing = [m for m in ("audio_only", "visual_only") if (m, "none") not in members]
        if missing:
            raise ConfigError(f"train.ensemble is true but train.runs lacks {missing} (fusion none), which it combines")


def _schema_problems(schema: dict, data: dict) -> list[str]:
    """One line per violation, naming the key: "key 'optimizer.lr': -1 is less than ..."."""
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"key '{'.'.join(map(str, e.absolute_path)) or '(top level)'}': {e.message}" for e in errors]


def _refuse(source: str, what: str, problems: list[str]) -> None:
    if problems:
        raise ConfigError(f"{source}: invalid {what}:\n" + "\n".join(f"  - {p}" for p in problems))


def _check_protocol(train: dict, source: str) -> None:
    problems = _schema_problems(read_yaml(PROTOCOL_SCHEMA), train)
    if train.get("scheduler", {}).get("name") == "step" and not {"step_size", "gamma"} <= set(train["scheduler"]):
        problems.append("key 'scheduler': a step scheduler needs step_size and gamma")
    _refuse(source, "protocol", problems)


def _check_method(method: str, params: dict, source: str) -> None:
    schema = read_yaml(METHODS_SCHEMA)
    if method in schema["properties"]:
        problems = _schema_problems(schema["properties"][method] | {"$defs": schema["$defs"]}, params)
        _refuse(source, f"parameters of method {method!r}", problems)


def config_hash(config: dict) -> str:
    """Hash of everything that decides a run's numbers (not paths, tracking, or loader workers)."""
    hashed = {k: copy.deepcopy(v) for k, v in config.items() if k in ("run", "train", "method", "eval")}
    for section, key in NOT_HASHED:
        hashed[section].pop(key, None)
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]


def run_dir(config: dict) -> Path:
    r = config["run"]
    return Path(config["paths"]["results_root"]) / r["dataset"] / r["protocol"] / r["fusion"] / r["method"] / \
        f"seed{r['seed']}"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------------------------------
# pieces of the loop


@dataclass
class LoopContext:
    """What hooks may use besides the batch: the splits (train_eval has fixed frames), device, frame norm."""

    splits: dict[str, PackedSplit]
    device: torch.device
    frame_norm: tuple[list, list]
    probe_cs: tuple[float, ...]
    probe_max_iter: int


def load_splits(config: dict) -> dict[str, PackedSplit]:
    packed, train, seed = config["data"]["packed_dir"], config["train"], config["run"]["seed"]
    splits = {"train": PackedSplit(packed, "train", train["train_frames"], train=True, seed=seed),
              "train_eval": PackedSplit(packed, "train", train["eval_frames"], train=False, seed=seed),
              "val": PackedSplit(packed, "val", train["eval_frames"], train=False, seed=seed),
              "test": PackedSplit(packed, "test", train["eval_frames"], train=False, seed=seed)}
    expected = list(output_shape(train["audio_preset"]))
    found = splits["train"].meta["spec_shape"]
    if found != expected:
        raise ConfigError(f"{splits['train'].path}: spectrograms are {found} but protocol "
                          f"{config['run']['protocol']!r} expects audio preset {train['audio_preset']!r} "
                          f"({expected}); re-extract with features.audio_preset: {train['audio_preset']}")
    train_ids = set(splits["train"].records["clip_id"].tolist())
    for other in ("val", "test"):
        shared = train_ids & set(splits[other].records["clip_id"].tolist())
        if shared:
            raise ConfigError(f"{splits[other].path}: {len(shared)} clips also in train, e.g. {sorted(shared)[0]}")
    return splits


def data_hash(splits: dict[str, PackedSplit]) -> str:
    return hashlib.sha256("".join(splits[s].meta["sha256"] for s in ("train", "val", "test")).encode()).hexdigest()[:16]


def build_optimizer(model: nn.Module, opt: dict) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    wd = opt.get("weight_decay", 0.0)
    if opt["name"] == "sgd":
        return torch.optim.SGD(params, lr=opt["lr"], momentum=opt.get("momentum", 0.0), weight_decay=wd)
    if opt["name"] == "adam":
        return torch.optim.Adam(params, lr=opt["lr"], weight_decay=wd)
    return torch.optim.AdamW(params, lr=opt["lr"], weight_decay=wd)


def build_scheduler(optimizer: torch.optim.Optimizer, sched: dict, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if sched["name"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, sched["step_size"], sched["gamma"])
    if sched["name"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a kill never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def pick_device(name: str | None) -> torch.device:
    """auto: a free GPU of this machine (bml/gpu.py) if there is one, else the CPU."""
    if name in (None, "auto"):
        return torch.device(pick_cuda_device() if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to_device(batch: dict, device: torch.device, frame_norm: tuple[list, list]) -> dict:
    return {"audio": batch["audio"].to(device, non_blocking=True),
            "frames": prepare_frames(batch["frames"].to(device, non_blocking=True), *frame_norm),
            "label": batch["label"].to(device, non_blocking=True)}


def validate(model: nn.Module, ctx: LoopContext, with_probes: bool) -> dict[str, float]:
    """Validation metrics of one epoch (never test): accuracy, per-modality accuracy, probes when due."""
    found = collect(model, ctx.splits["val"], ctx.device, ctx.frame_norm)
    metrics = {f"val_{k}": v for k, v in classification_metrics(found["logits"], found["label"]).items()}
    metrics.update({f"val_{k}": v for k, v in modality_accuracies(found, model).items()})
    if with_probes:
        train = collect(model, ctx.splits["train_eval"], ctx.device, ctx.frame_norm)
        metrics.update({f"val_{k}": v for k, v in probes(train, found, None, ctx.probe_cs, ctx.probe_max_iter).items()})
    return metrics


def _progress(iterable, **kw):
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True, **kw)


# --------------------------------------------------------------------------------------------------
# the loop


def train(config: dict, device: str | None = None, restart: bool = False,
          log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Train (or resume) one run and evaluate it; returns what metrics.json holds."""
    run, tcfg = config["run"], config["train"]
    out_dir = run_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    seed_everything(run["seed"])
    splits = load_splits(config)
    frame_norm = (tcfg["frame_mean"], tcfg["frame_std"])
    ctx = LoopContext(splits, dev, frame_norm, tuple(config["eval"]["probe_cs"]), config["eval"]["probe_max_iter"])
    method: Method = method_class(run["method"])(config["method"])
    if not method.trains:
        return evaluate_ensemble(config, method, ctx, log)

    n_classes = len(splits["train"].meta["labels"])
    model = build_model(ModelConfig(tcfg["encoder"], run["fusion"], n_classes, method.modalities)).to(dev)
    method.setup(model, config)
    optimizer = build_optimizer(model, tcfg["optimizer"])
    scheduler = build_scheduler(optimizer, tcfg["scheduler"], tcfg["epochs"])
    chash, dhash = config_hash(config), data_hash(splits)
    start_epoch, history, best, run_id = 0, [], None, None

    ckpt_path, best_path = out_dir / CHECKPOINT, out_dir / BEST
    if ckpt_path.exists() and not restart:
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if ckpt["config_hash"] != chash or ckpt["data_hash"] != dhash:
            what = "configuration" if ckpt["config_hash"] != chash else "data"
            raise TrainingError(f"{ckpt_path}: checkpoint of another {what} (hash {ckpt['config_hash']}/"
                                f"{ckpt['data_hash']}, this run {chash}/{dhash}); delete {out_dir} or pass "
                                f"--restart to start over")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        method.load_state_dict(ckpt["method"])
        start_epoch, history, best, run_id = ckpt["epoch"], ckpt["history"], ckpt["best"], ckpt["mlflow_run_id"]
        set_rng_state(ckpt["rng"])
        log(f"resuming {out_dir} after epoch {start_epoch}")

    tags = {**{k: str(v) for k, v in run.items()}, "git_commit": git_commit(), "data_hash": dhash,
            "config_hash": chash}
    tracker = open_tracker(config["tracking"]["uri"], config["tracking"]["artifacts"],
                           f"{run['dataset']}/{run['protocol']}",
                           f"{run['method']}-{run['fusion']}-seed{run['seed']}", tags, run_id)
    tracker.log_params({k: v for k, v in config.items() if k in ("run", "train", "method", "eval", "data")})
    status = "FAILED"
    try:
        n_steps = len(make_loader(splits["train"], tcfg["batch_size"]))
        for epoch in _progress(range(start_epoch, tcfg["epochs"]), desc="epochs", initial=start_epoch,
                               total=tcfg["epochs"]):
            started = time.perf_counter()
            model.train()
            loss_sum, loss_terms, seen = 0.0, {}, 0
            loader = make_loader(splits["train"], tcfg["batch_size"], epoch, tcfg["num_workers"],
                                 pin_memory=dev.type == "cuda")
            for step, raw in enumerate(_progress(loader, desc=f"epoch {epoch + 1}", total=n_steps)):
                state = StepState(epoch, step, n_steps, config, ctx)
                batch = method.before_forward(_to_device(raw, dev, frame_norm), state)
                optimizer.zero_grad(set_to_none=True)
                out = method.on_features(model, model(batch["audio"], batch["frames"]), batch, state)
                losses = method.loss(model, out, batch, state)
                total = sum(losses.values())
                value = total.item()
                if not np.isfinite(value):
                    kept = f"the last good checkpoint (epoch {start_epoch if not history else history[-1]['epoch']}) " \
                           f"is kept in {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written yet"
                    raise TrainingError(f"{out_dir}: loss is {value} at epoch {epoch + 1}, step {step + 1}; "
                                        f"{kept}. Lower train.optimizer.lr or check the inputs.")
                method.backward(model, losses, state)
                method.after_backward(model, out, batch, state)
                optimizer.step()
                n = batch["label"].shape[0]
                loss_sum, seen = loss_sum + value * n, seen + n
                for name, term in losses.items():
                    loss_terms[name] = loss_terms.get(name, 0.0) + term.item() * n
            train_time = time.perf_counter() - started
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            method.on_epoch_end(model, StepState(epoch, n_steps - 1, n_steps, config, ctx))
            epoch_end_time = time.perf_counter() - started - train_time

            due = tcfg["probe_every"] > 0 and ((epoch + 1) % tcfg["probe_every"] == 0 or epoch + 1 == tcfg["epochs"])
            row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "lr": lr,
                   **({f"loss_{k}": v / seen for k, v in loss_terms.items()} if len(loss_terms) > 1 else {}),
                   **validate(model, ctx, with_probes=due), **method.epoch_log()}
            # wall times, never compared between runs: the whole epoch, its training steps (data, hooks,
            # optimizer) per step, and the method's end-of-epoch work (Re-learning's diagnosis)
            row["epoch_time_s"] = time.perf_counter() - started
            row["step_time_ms"] = 1e3 * train_time / n_steps
            row["epoch_end_time_s"] = epoch_end_time
            history.append(row)
            if best is None or row["val_acc"] > best["val_acc"]:
                best = {"epoch": epoch + 1, "val_acc": row["val_acc"]}
                save_atomic({"model": model.state_dict(), "epoch": epoch + 1, "config": config,
                             "config_hash": chash}, best_path)
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "method": method.state_dict(), "epoch": epoch + 1,
                         "history": history, "best": best, "rng": rng_state(), "config": config,
                         "config_hash": chash, "data_hash": dhash, "mlflow_run_id": tracker.run_id}, ckpt_path)
            log(f"epoch {epoch + 1}/{tcfg['epochs']}: loss {row['train_loss']:.4f}  val acc {row['val_acc']:.2f}"
                + "".join(f"  {k} {row[k]:.2f}" for k in ("val_acc_audio", "val_acc_visual", "val_probe_audio",
                                                           "val_probe_visual") if k in row))

        final = {"last": evaluate_model(model, _eval_splits(splits), dev, frame_norm, ctx.probe_cs,
                                        ctx.probe_max_iter, config["eval"]["noise_std"], run["seed"])}
        model.load_state_dict(torch.load(best_path, map_location=dev, weights_only=False)["model"])
        final["best"] = evaluate_model(model, _eval_splits(splits), dev, frame_norm, ctx.probe_cs,
                                       ctx.probe_max_iter, config["eval"]["noise_std"], run["seed"])
        result = _write_results(out_dir, config, chash, dhash, best, history, final, tracker.run_id)
        tracker.log_metrics({"test": final}, step=tcfg["epochs"])
        for name in (METRICS, HISTORY, BEST):
            tracker.log_artifact(out_dir / name)
        status = "FINISHED"
        return result
    finally:
        tracker.end(status if status == "FINISHED" else ("KILLED" if sys.exc_info()[0] is KeyboardInterrupt
                                                          else "FAILED"))


def _eval_splits(splits: dict[str, PackedSplit]) -> dict[str, PackedSplit]:
    return {"train": splits["train_eval"], "val": splits["val"], "test": splits["test"]}


def _write_results(out_dir: Path, config: dict, chash: str, dhash: str, best: dict, history: list[dict],
                   final: dict, run_id: str | None) -> dict[str, Any]:
    if history:
        fields = list(dict.fromkeys(k for row in history for k in row))
        with (out_dir / f".{HISTORY}.tmp").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(history)
        os.replace(out_dir / f".{HISTORY}.tmp", out_dir / HISTORY)
    result = {"run": config["run"], "config_hash": chash, "data_hash": dhash, "git_commit": git_commit(),
              "mlflow_run_id": run_id, "epochs": config["train"]["epochs"], "best_epoch": best and best["epoch"],
              "selection": "best validation accuracy (val split carved from train; test never used for selection)",
              "test": final, "config": config}
    write_text_atomic(out_dir / METRICS, json.dumps(result, indent=2) + "\n")
    return result


def evaluate_ensemble(config: dict, method: Method, ctx: LoopContext, log: Callable[[str], None]) -> dict[str, Any]:
    """The uni-modal ensemble: load the member runs' best checkpoints (same dataset, protocol, seed)."""
    members = []
    for name in method.members:
        member_cfg = copy.deepcopy(config)
        member_cfg["run"].update(method=name, fusion="none")
        path = run_dir(member_cfg) / BEST
        if not path.is_file():
            raise TrainingError(f"{path}: the ensemble needs the trained {name} run of seed "
                                f"{config['run']['seed']}; train it first (bml train --method {name} --fusion none)")
        saved = torch.load(path, map_location=ctx.device, weights_only=False)
        train_cfg, cls = saved["config"]["train"], method_class(name)
        n_classes = len(ctx.splits["train"].meta["labels"])
        model = build_model(ModelConfig(train_cfg["encoder"], "none", n_classes, cls.modalities)).to(ctx.device)
        model.load_state_dict(saved["model"])
        members.append(model)
    ensemble = LateEnsemble(*members).to(ctx.device)
    final = evaluate_model(ensemble, _eval_splits(ctx.splits), ctx.device, ctx.frame_norm, ctx.probe_cs,
                           ctx.probe_max_iter, config["eval"]["noise_std"], config["run"]["seed"])
    run = config["run"]
    chash, dhash = config_hash(config), data_hash(ctx.splits)
    tracker = open_tracker(config["tracking"]["uri"], config["tracking"]["artifacts"],
                           f"{run['dataset']}/{run['protocol']}", f"{run['method']}-{run['fusion']}-seed{run['seed']}",
                           {**{k: str(v) for k, v in run.items()}, "git_commit": git_commit(), "data_hash": dhash,
                            "config_hash": chash})
    tracker.log_params({k: v for k, v in config.items() if k in ("run", "train", "method", "eval", "data")})
    out_dir = run_dir(config)
    result = _write_results(out_dir, config, chash, dhash, None, [], {"best": final, "last": final}, tracker.run_id)
    tracker.log_metrics({"test": result["test"]}, step=0)
    tracker.log_artifact(out_dir / METRICS)
    tracker.end()
    log(f"ensemble of {list(method.members)}: test acc {final['acc']:.2f}")
    return result
