"""Adversarial robustness, measured for every run: CRMT's l2 attacks.

Yang et al., "Quantifying and Enhancing Multi-modal Robustness with Modality Preference", ICLR 2024; the
authors' GeWu-Lab/Certifiable-Robust-Multi-modal-Training rob_test.py: l2_grad (the gradient of the mean CE of
the fused logits with respect to each input), l2_attack_one_step (every modality, one l2 norm over all of
them), modality_specific_l2_attack_one_step (one modality: the others' budget 0), multimodal_attack /
unimodal_attack (PGD: 4 steps of eps / 3 from the clean input, restrict_adv projecting the whole perturbation
on the l2 ball of radius eps). The code also clamps frames to their valid pixel range; bml does not (its
kinds prepare other value ranges, docs/methods.md says so).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from bml.data.loader import PackedSplit, make_loader

Inputs = dict[str, torch.Tensor]

ATTACK_TINY = 1e-13  # rob_test.py: eps = 1e-13, added to the gradient's norm


def input_gradients(model: nn.Module, predict: Callable, inputs: Inputs, labels: torch.Tensor) -> Inputs:
    """d mean CE(fused logits, labels) / d input, per modality; the parameters' .grad left untouched."""
    leaves = {m: x.detach().requires_grad_() for m, x in inputs.items()}
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(predict(model, leaves).logits.float(), labels)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {m: torch.zeros_like(x) if g is None else g for (m, x), g in zip(leaves.items(), grads, strict=True)}


def l2_direction(grads: Inputs, attacked: tuple[str, ...]) -> Inputs:
    """Each sample's gradient over the `attacked` modalities divided by its l2 norm over all of them (plus
    ATTACK_TINY: a zero gradient gives a zero step); zero for the modalities not attacked."""
    first = next(iter(grads.values()))
    sq = torch.zeros(first.shape[0], dtype=torch.float64, device=first.device)
    for m in attacked:
        sq = sq + grads[m].double().flatten(1).pow(2).sum(1)
    norm = sq.sqrt() + ATTACK_TINY  # (B,)
    out = {}
    for m, g in grads.items():
        scale = (1.0 / norm).to(g.dtype).view(-1, *[1] * (g.dim() - 1)) if m in attacked else 0.0
        out[m] = g * scale
    return out


def project_l2(adv: Inputs, clean: Inputs, eps: float) -> Inputs:
    """The perturbation adv - clean of each sample, over every modality at once, shrunk onto the l2 ball of
    radius eps (left as it is inside)."""
    delta = {m: adv[m] - clean[m] for m in clean}
    first = next(iter(delta.values()))
    sq = torch.zeros(first.shape[0], dtype=torch.float64, device=first.device)
    for d in delta.values():
        sq = sq + d.double().flatten(1).pow(2).sum(1)
    factor = torch.clamp(eps / (sq.sqrt() + ATTACK_TINY), max=1.0)
    return {m: clean[m] + delta[m] * factor.to(d.dtype).view(-1, *[1] * (d.dim() - 1)) for m, d in delta.items()}


def l2_attack(
    model: nn.Module,
    predict: Callable,
    inputs: Inputs,
    labels: torch.Tensor,
    attacked: tuple[str, ...],
    eps: float,
    steps: int,
    step_divisor: float,
) -> Inputs:
    """steps 1: x + eps * the l2-normalised gradient (over `attacked`); more: PGD-l2, `steps` steps of
    eps / step_divisor from x, each projected back on the ball of radius eps around x."""
    if steps == 1:
        step = l2_direction(input_gradients(model, predict, inputs, labels), attacked)
        return {m: inputs[m] + eps * step[m] for m in inputs}
    adv = {m: x.clone() for m, x in inputs.items()}
    for _ in range(steps):
        step = l2_direction(input_gradients(model, predict, adv, labels), attacked)
        adv = project_l2({m: adv[m] + (eps / step_divisor) * step[m] for m in adv}, inputs, eps)
    return adv


def attack_subset(n: int, samples: int) -> np.ndarray:
    """`samples` evenly spaced positions of a split of n (every one when samples is 0 or at least n)."""
    if samples <= 0 or samples >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, samples).round().astype(np.int64))


def robustness(
    model: nn.Module,
    predict: Callable,
    dataset: PackedSplit,
    device: torch.device,
    prepare: Callable[[Inputs], Inputs],
    eval_cfg: dict,
    modalities: tuple[str, ...],
    batch_size: int = 256,
) -> dict[str, float]:
    """acc_fgm / acc_pgd (every modality attacked) and, with several modalities, acc_fgm_<m> / acc_pgd_<m> (one),
    in percent, on eval_cfg's attack_samples test samples (params/params.yaml evaluation); {} when
    attack_eps is 0."""
    eps = eval_cfg.get("attack_eps", 0.0)
    if eps <= 0 or not modalities:
        return {}
    steps, divisor = eval_cfg["attack_pgd_steps"], eval_cfg["attack_pgd_step_divisor"]
    targets = {"": modalities} | ({f"_{m}": (m,) for m in modalities} if len(modalities) > 1 else {})
    correct: dict[str, list[np.ndarray]] = {}
    model.eval()
    subset = attack_subset(len(dataset), eval_cfg.get("attack_samples", 0))
    for batch in make_loader(dataset, batch_size, indices=subset):
        inputs = prepare({m: x.to(device) for m, x in batch["inputs"].items()})
        labels = batch["label"].to(device)
        for suffix, attacked in targets.items():
            for kind, n_steps in (("fgm", 1), ("pgd", steps)):
                adv = l2_attack(model, predict, inputs, labels, attacked, eps, n_steps, divisor)
                with torch.no_grad():
                    pred = predict(model, adv).logits.argmax(1)
                correct.setdefault(f"acc_{kind}{suffix}", []).append((pred == labels).cpu().numpy())
    return {k: 100.0 * float(np.concatenate(v).mean()) for k, v in correct.items()}
