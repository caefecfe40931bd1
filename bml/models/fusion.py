"""Fusion heads: features keyed by modality, {m: (B, D_m)}, in the dataset's modality order -> logits (B, C).

The four heads follow OGM-GE (Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient
Modulation", CVPR 2022) and its public code (models/fusion_modules.py: concat, sum, FiLM, gated). The
per-modality logits that OGM, OPM and the evaluation read split the head as OGM-GE's main.py splits its
concat head (docs/methods.md):
- concat, W = [W_1 | ... | W_M] in modality order: z_m = f_m W_m^T + b/M, so sum_m z_m = z exactly
  (b/2 for the papers' two modalities);
- sum, z = sum_m fc_m(f_m): z_m = fc_m(f_m), each with its full bias;
- FiLM and gated fusion have no such split, and are defined for two modalities: both refuse otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from bml.catalog import FUSIONS as FUSION_SPECS


def _no_split(name: str) -> NotImplementedError:
    able = sorted(k for k, spec in FUSION_SPECS.items() if spec.splits_logits)
    return NotImplementedError(
        f"{name} fusion has no per-modality logits; methods that need them (OGM, OPM, ...) "
        f"work only with the fusions {able}"
    )


def _two(name: str, dims: dict[str, int]) -> tuple[str, str]:
    if len(dims) != 2:
        raise ValueError(f"{name} fusion is defined for two modalities (OGM-GE's code), got {list(dims)}")
    first, second = dims
    return first, second


class ConcatFusion(nn.Module):
    """One Linear on the features concatenated in modality order."""

    def __init__(self, dims: dict[str, int], n_classes: int) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.fc = nn.Linear(sum(dims.values()), n_classes)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.cat([features[m] for m in self.dims], dim=1))  # (B, sum D) -> (B, C)

    def unimodal_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out, start, share = {}, 0, self.fc.bias / len(self.dims)
        for m, d in self.dims.items():
            out[m] = features[m] @ self.fc.weight[:, start : start + d].T + share  # (B, C)
            start += d
        return out


class SumFusion(nn.Module):
    """z = sum over modalities of fc_m(f_m)."""

    def __init__(self, dims: dict[str, int], n_classes: int) -> None:
        super().__init__()
        self.fc = nn.ModuleDict({m: nn.Linear(d, n_classes) for m, d in dims.items()})

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(fc(features[m]) for m, fc in self.fc.items())  # (B, C)

    def unimodal_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: fc(features[m]) for m, fc in self.fc.items()}  # (B, C) each


class FiLMFusion(nn.Module):
    """One modality's features give (gamma, beta) that modulate the other's, then a Linear.

    x_film=True (OGM-GE's default): the first modality (audio, in the papers' order) modulates the second.
    """

    def __init__(self, dims: dict[str, int], n_classes: int, x_film: bool = True) -> None:
        super().__init__()
        first, second = _two("film", dims)
        self.film, self.target = (first, second) if x_film else (second, first)
        self.dim_target = dims[self.target]
        self.fc = nn.Linear(dims[self.film], 2 * self.dim_target)
        self.fc_out = nn.Linear(self.dim_target, n_classes)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        gamma, beta = self.fc(features[self.film]).split(self.dim_target, dim=1)  # (B, D_target) each
        return self.fc_out(gamma * features[self.target] + beta)  # (B, C)

    def unimodal_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise _no_split("film")


class GatedFusion(nn.Module):
    """sigmoid(projection of one modality) gates the other's projection, then a Linear.

    x_gate=True (OGM-GE's default): the first modality gives the gate.
    """

    def __init__(self, dims: dict[str, int], n_classes: int, hidden: int = 512, x_gate: bool = True) -> None:
        super().__init__()
        first, second = _two("gated", dims)
        self.gate, self.gated = (first, second) if x_gate else (second, first)
        self.fc = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in dims.items()})
        self.fc_out = nn.Linear(hidden, n_classes)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        h = {m: fc(features[m]) for m, fc in self.fc.items()}  # (B, hidden) each
        return self.fc_out(torch.sigmoid(h[self.gate]) * h[self.gated])  # (B, C)

    def unimodal_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise _no_split("gated")


HEADS: dict[str, type[nn.Module]] = {"concat": ConcatFusion, "sum": SumFusion, "film": FiLMFusion, "gated": GatedFusion}


def build_fusion(name: str, dims: dict[str, int], n_classes: int, **kw) -> nn.Module:
    """The fusion head called `name` over modalities `dims` ({name: feature width}, in order)."""
    if name not in HEADS:
        raise ValueError(f"unknown fusion {name!r}; choose one of {sorted(HEADS)}")
    return HEADS[name](dims, n_classes, **kw)
