"""The baselines every table compares against: uni-modal training, joint training, and the uni-modal
ensemble (UME in Du et al., "Uni-modal Ensemble": the two separately trained uni-modal models' logits
summed at test time, as BalanceBenchmark's UME; ../shared/METHODS.md).

Joint training is `Method` itself (bml/methods/base.py): multimodal cross-entropy through one fusion head.
"""

from __future__ import annotations

from bml.methods.base import Method


class Joint(Method):
    """Both encoders and the fusion head trained together on the fused logits' cross-entropy."""

    name = "joint"


class AudioOnly(Method):
    """The audio encoder with a linear head, trained alone: the audio reference for probes and tables."""

    name = "audio_only"
    modalities = ("audio",)
    fusions = ("none",)


class VisualOnly(Method):
    """The visual encoder with a linear head, trained alone: the visual reference for probes and tables."""

    name = "visual_only"
    modalities = ("visual",)
    fusions = ("none",)


class UnimodalEnsemble(Method):
    """Late fusion of the trained audio_only and visual_only runs of the same seed: logits summed.

    Trains nothing; `bml train --method ensemble` evaluates the two runs' best-on-val checkpoints.
    """

    name = "ensemble"
    fusions = ("none",)
    trains = False
    members = ("audio_only", "visual_only")
