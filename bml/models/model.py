"""The models the loop trains, keyed by modality: encoders (one per modality) + a fusion head, or one
encoder + a linear head (the uni-modal baselines), or trained uni-modal models summed (the ensemble).

Every model maps `inputs` ({modality: tensor}) to an `Output`: fused logits, each modality's features, and
the per-modality logits where the model defines them itself (uni-modal models, the ensemble). For a fusion
head, `model.unimodal_logits(features)` splits the fused logits per modality where the head allows it.
`model.head_logits(features)` runs the model's head alone on given features: the fused logits with some
modalities' features zeroed, as sample-level valuation values a modality (bml/evaluate.py: shapley).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bml.models.encoders import build_encoder
from bml.models.fusion import build_fusion


@dataclass
class Output:
    logits: torch.Tensor  # (B, C): what the loss and the predictions read
    features: dict[str, torch.Tensor]  # modality -> (B, D_m)
    unimodal: dict[str, torch.Tensor] = field(default_factory=dict)  # modality -> (B, C), where the model has them
    keep: torch.Tensor | None = None  # (B',) rows of the batch that `logits` covers (a method dropped the others)


@dataclass(frozen=True)
class ModelSpec:
    encoder: str  # encoder family (params/protocols: train.encoder)
    fusion: str  # a head of bml/models/fusion.py, or "none" for a uni-modal model
    n_classes: int
    modalities: dict[str, str]  # the modalities the model sees, name -> kind, in order
    unimodal_heads: bool = False  # also a linear head per encoder (MMPareto, PMR, MLA, ... train them)


class MultimodalModel(nn.Module):
    """An encoder per modality, a fusion head, and (when asked) a linear head per encoder."""

    def __init__(
        self, encoders: dict[str, nn.Module], fusion: nn.Module, n_classes: int, unimodal_heads: bool = False
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.modalities = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.heads = nn.ModuleDict(
            {m: nn.Linear(e.out_dim, n_classes) for m, e in encoders.items()} if unimodal_heads else {}
        )

    def forward(self, inputs: dict[str, torch.Tensor], feature_masks: dict[str, torch.Tensor] | None = None) -> Output:
        """`feature_masks` ({m: (B,) bool}, False: zero that sample's feature of m): the encoders see their real
        inputs, the head the masked features (a method's feature-level masks, bml/methods/base.py: Samples)."""
        features = {m: enc(inputs[m]) for m, enc in self.encoders.items()}  # (B, D_m) each
        for m, keep in (feature_masks or {}).items():
            features[m] = features[m] * keep.view(-1, 1).to(features[m].dtype)
        return Output(self.fusion(features), features)

    def head_logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fusion(features)  # (B, C)

    def unimodal_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.fusion.unimodal_logits(features)


class UnimodalModel(nn.Module):
    """One encoder with a linear head: a uni-modal baseline. It reads only its modality."""

    def __init__(self, modality: str, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.modalities = (modality,)
        self.encoders = nn.ModuleDict({modality: encoder})
        self.head = nn.Linear(encoder.out_dim, n_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> Output:
        ((m, encoder),) = self.encoders.items()
        f = encoder(inputs[m])  # (B, D)
        logits = self.head(f)  # (B, C)
        return Output(logits, {m: f}, {m: logits})

    def head_logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(features[self.modalities[0]])  # (B, C)


class LateEnsemble(nn.Module):
    """Trained uni-modal models, their logits summed (late fusion; UME, Du et al., ICML 2023)."""

    def __init__(self, members: list[UnimodalModel]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.modalities = tuple(m.modalities[0] for m in members)
        self.n_classes = members[0].n_classes

    def forward(self, inputs: dict[str, torch.Tensor]) -> Output:
        outs = [member(inputs) for member in self.members]
        return Output(
            sum(o.logits for o in outs),
            {k: v for o in outs for k, v in o.features.items()},
            {k: v for o in outs for k, v in o.unimodal.items()},
        )

    def head_logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(member.head_logits(features) for member in self.members)  # (B, C)


def build_model(spec: ModelSpec) -> nn.Module:
    """A MultimodalModel, or a UnimodalModel when spec names one modality (fusion "none")."""
    encoders = {m: build_encoder(spec.encoder, kind) for m, kind in spec.modalities.items()}
    if spec.fusion == "none":
        if len(encoders) != 1:
            raise ValueError(f"fusion 'none' is for one modality; got {list(encoders)}")
        ((m, encoder),) = encoders.items()
        return UnimodalModel(m, encoder, spec.n_classes)
    fusion = build_fusion(spec.fusion, {m: e.out_dim for m, e in encoders.items()}, spec.n_classes)
    return MultimodalModel(encoders, fusion, spec.n_classes, spec.unimodal_heads)


def unimodal_logits(model: nn.Module, out: Output) -> dict[str, torch.Tensor]:
    """Per-modality logits of one forward: the model's own, or its fusion head's split; {} where neither."""
    if out.unimodal:
        return out.unimodal
    fusion = getattr(model, "fusion", None)
    if fusion is None or not hasattr(fusion, "unimodal_logits"):
        return {}
    try:
        return model.unimodal_logits(out.features)
    except NotImplementedError:
        return {}
