"""The baselines every table compares against: uni-modal training, joint training, and the uni-modal
ensemble (UME in Du et al., "On Uni-Modal Feature Learning in Supervised Multi-Modal Learning", ICML 2023:
separately trained uni-modal models whose logits are summed at test time, as BalanceBenchmark's UME).

Joint training is `Method` itself (bml/methods/base.py): multimodal cross-entropy through one fusion head.
"""

from __future__ import annotations

from torch import nn

from bml.checkpoint import load_required
from bml.methods.base import Method
from bml.models.model import LateEnsemble, ModelSpec, build_model


class Joint(Method):
    """Every encoder and the fusion head trained together on the fused logits' cross-entropy."""


class Unimodal(Method):
    """One encoder with a linear head, trained alone (<modality>_only): the reference for probes and tables."""


class UnimodalEnsemble(Method):
    """Late fusion of the trained <modality>_only runs of the same seed: their logits summed.

    Trains nothing: its model is the members' best-on-validation checkpoints (the plan makes their runs
    finish first).
    """

    def build_model(self, spec: ModelSpec) -> nn.Module:
        members = []
        for name, folder in self.run.required.items():
            saved = load_required(folder, name, "the ensemble", self.run.seed)
            modality = name.removesuffix("_only")
            member = build_model(
                ModelSpec(
                    saved["config"]["train"]["encoder"], "none", spec.n_classes, {modality: spec.modalities[modality]}
                )
            )
            member.load_state_dict(saved["model"])
            members.append(member)
        return LateEnsemble(members)
