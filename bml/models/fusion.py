"""Fusion heads, (f_a (B, Da), f_v (B, Dv)) -> logits (B, C), and the audio-visual model around them.

The four heads follow OGM-GE (Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient
Modulation", CVPR 2022) and its public code (concat, sum, FiLM, gated). The uni-modal logits that OGM,
OPM and the evaluation need are defined in ../shared/METHODS.md:
- concat, W = [W_a | W_v]: z_a = f_a W_a^T + b/2, z_v = f_v W_v^T + b/2, so z_a + z_v = z exactly;
- sum, z = fc_a(f_a) + fc_v(f_v): z_a = fc_a(f_a), z_v = fc_v(f_v), each with its full bias;
- FiLM and gated fusion have no such split: their `unimodal_logits` refuses loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bml.models.encoders import build_encoders


def _no_unimodal_logits(name: str) -> NotImplementedError:
    able = sorted(k for k, cls in FUSIONS.items() if cls.has_unimodal_logits)
    return NotImplementedError(
        f"{name} fusion has no uni-modal logits; methods that need them (OGM-GE, OPM, ...) "
        f"work only with the fusions {able}"
    )


class ConcatFusion(nn.Module):
    """One Linear on cat(f_a, f_v), audio first."""

    has_unimodal_logits = True

    def __init__(self, dim_a: int, dim_v: int, n_classes: int) -> None:
        super().__init__()
        self.dim_a = dim_a
        self.fc = nn.Linear(dim_a + dim_v, n_classes)

    def forward(self, f_a: torch.Tensor, f_v: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([f_a, f_v], dim=1))  # (B, Da + Dv) -> (B, C)

    def unimodal_logits(self, f_a: torch.Tensor, f_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_a, w_v = self.fc.weight[:, : self.dim_a], self.fc.weight[:, self.dim_a :]  # (C, Da), (C, Dv)
        half_b = self.fc.bias / 2
        return f_a @ w_a.T + half_b, f_v @ w_v.T + half_b  # (B, C) each


class SumFusion(nn.Module):
    """z = fc_a(f_a) + fc_v(f_v)."""

    has_unimodal_logits = True

    def __init__(self, dim_a: int, dim_v: int, n_classes: int) -> None:
        super().__init__()
        self.fc_a = nn.Linear(dim_a, n_classes)
        self.fc_v = nn.Linear(dim_v, n_classes)

    def forward(self, f_a: torch.Tensor, f_v: torch.Tensor) -> torch.Tensor:
        return self.fc_a(f_a) + self.fc_v(f_v)  # (B, C)

    def unimodal_logits(self, f_a: torch.Tensor, f_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc_a(f_a), self.fc_v(f_v)  # (B, C) each


class FiLMFusion(nn.Module):
    """One modality's features give (gamma, beta) that modulate the other's, then a Linear.

    x_film=True: audio (the first input, as in OGM-GE's flag) modulates visual; the default, False, has
    visual modulate audio.
    """

    has_unimodal_logits = False

    def __init__(self, dim_a: int, dim_v: int, n_classes: int, x_film: bool = False) -> None:
        super().__init__()
        self.x_film = x_film
        dim_film, dim_target = (dim_a, dim_v) if x_film else (dim_v, dim_a)
        self.dim_target = dim_target
        self.fc = nn.Linear(dim_film, 2 * dim_target)
        self.fc_out = nn.Linear(dim_target, n_classes)

    def forward(self, f_a: torch.Tensor, f_v: torch.Tensor) -> torch.Tensor:
        film, target = (f_a, f_v) if self.x_film else (f_v, f_a)
        gamma, beta = self.fc(film).split(self.dim_target, dim=1)  # (B, D_target) each
        return self.fc_out(gamma * target + beta)  # (B, C)

    def unimodal_logits(self, f_a: torch.Tensor, f_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise _no_unimodal_logits("film")


class GatedFusion(nn.Module):
    """sigmoid(proj of one modality) gates the other's projection, then a Linear.

    x_gate=True (the default, as in OGM-GE's code): audio gives the gate; False: visual does.
    """

    has_unimodal_logits = False

    def __init__(self, dim_a: int, dim_v: int, n_classes: int, hidden: int = 512, x_gate: bool = True) -> None:
        super().__init__()
        self.x_gate = x_gate
        self.fc_a = nn.Linear(dim_a, hidden)
        self.fc_v = nn.Linear(dim_v, hidden)
        self.fc_out = nn.Linear(hidden, n_classes)

    def forward(self, f_a: torch.Tensor, f_v: torch.Tensor) -> torch.Tensor:
        h_a, h_v = self.fc_a(f_a), self.fc_v(f_v)  # (B, hidden) each
        gated = torch.sigmoid(h_a) * h_v if self.x_gate else h_a * torch.sigmoid(h_v)
        return self.fc_out(gated)  # (B, C)

    def unimodal_logits(self, f_a: torch.Tensor, f_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise _no_unimodal_logits("gated")


FUSIONS: dict[str, type[nn.Module]] = {
    "concat": ConcatFusion,
    "sum": SumFusion,
    "film": FiLMFusion,
    "gated": GatedFusion,
}


def build_fusion(name: str, dim_a: int, dim_v: int, n_classes: int, **kw) -> nn.Module:
    """The fusion head called `name`; extra keyword arguments (x_film, hidden, x_gate) go to its constructor."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose one of {sorted(FUSIONS)}")
    return FUSIONS[name](dim_a, dim_v, n_classes, **kw)


class MultimodalModel(nn.Module):
    """Audio encoder + visual encoder + fusion head; forward returns logits and both features."""

    def __init__(self, audio_encoder: nn.Module, visual_encoder: nn.Module, fusion: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.audio_encoder = audio_encoder
        self.visual_encoder = visual_encoder
        self.fusion = fusion

    def forward(self, audio: torch.Tensor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        f_a = self.audio_encoder(audio)  # (B, Da)
        f_v = self.visual_encoder(frames)  # (B, Dv)
        return {"logits": self.fusion(f_a, f_v), "f_a": f_a, "f_v": f_v}  # logits (B, C)

    def unimodal_logits(self, f_a: torch.Tensor, f_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fusion.unimodal_logits(f_a, f_v)


class UnimodalModel(nn.Module):
    """One encoder with a linear head: the audio-only or visual-only baseline.

    Same call and outputs as MultimodalModel (it ignores the other input), so the loop treats both alike.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, modality: str) -> None:
        super().__init__()
        if modality not in ("audio", "visual"):
            raise ValueError(f"modality must be 'audio' or 'visual', got {modality!r}")
        self.modality = modality
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, n_classes)

    @property
    def audio_encoder(self) -> nn.Module | None:
        return self.encoder if self.modality == "audio" else None

    @property
    def visual_encoder(self) -> nn.Module | None:
        return self.encoder if self.modality == "visual" else None

    def forward(self, audio: torch.Tensor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.encoder(audio if self.modality == "audio" else frames)  # (B, D)
        return {"logits": self.head(f), "f_a" if self.modality == "audio" else "f_v": f}  # logits (B, C)


class LateEnsemble(nn.Module):
    """Two trained uni-modal models, their logits summed (late fusion; UME in ../shared/METHODS.md).

    Its uni-modal logits are the members' own, so per-modality accuracy means the same as for a fusion head.
    """

    def __init__(self, audio_model: UnimodalModel, visual_model: UnimodalModel) -> None:
        super().__init__()
        self.audio_model, self.visual_model = audio_model, visual_model

    def forward(self, audio: torch.Tensor, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        out_a, out_v = self.audio_model(audio, frames), self.visual_model(audio, frames)
        z_a, z_v = out_a["logits"], out_v["logits"]  # (B, C) each
        return {"logits": z_a + z_v, "f_a": out_a["f_a"], "f_v": out_v["f_v"], "z_a": z_a, "z_v": z_v}


@dataclass
class ModelConfig:
    encoder: str = "small_cnn"  # one of encoders.ENCODERS
    fusion: str = "concat"  # one of FUSIONS, or "none" for a uni-modal model
    n_classes: int = 10
    modalities: tuple[str, ...] = ("audio", "visual")


def build_model(cfg: ModelConfig) -> nn.Module:
    """A MultimodalModel, or a UnimodalModel when cfg.modalities names one modality."""
    audio, visual = build_encoders(cfg.encoder)
    if len(cfg.modalities) == 1:
        modality = cfg.modalities[0]
        return UnimodalModel(audio if modality == "audio" else visual, cfg.n_classes, modality)
    return MultimodalModel(audio, visual, build_fusion(cfg.fusion, audio.out_dim, visual.out_dim, cfg.n_classes),
                           cfg.n_classes)
