"""Optimizers and learning-rate schedules from a protocol's `optimizer` and `scheduler` sections."""

from __future__ import annotations

import torch


def build_optimizer(param_groups: list[dict], opt: dict) -> torch.optim.Optimizer:
    """SGD (with momentum), Adam or AdamW over the method's parameter groups (params/protocols: optimizer)."""
    wd = opt.get("weight_decay", 0.0)
    if opt["name"] == "sgd":
        return torch.optim.SGD(param_groups, lr=opt["lr"], momentum=opt.get("momentum", 0.0), weight_decay=wd)
    if opt["name"] == "adam":
        return torch.optim.Adam(param_groups, lr=opt["lr"], weight_decay=wd)
    if opt["name"] == "adamw":
        return torch.optim.AdamW(param_groups, lr=opt["lr"], weight_decay=wd)
    raise ValueError(f"unknown optimizer {opt['name']!r}; choose sgd, adam or adamw")


def build_scheduler(optimizer: torch.optim.Optimizer, sched: dict, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: StepLR, cosine over all epochs, or constant."""
    if sched["name"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, sched["step_size"], sched["gamma"])
    if sched["name"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
