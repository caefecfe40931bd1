"""The names the plan checks a configuration against, torch-free: modality kinds, fusion heads, encoders.

The torch modules (bml/models/) key their classes by the same names; tests/test_plan.py checks that the two
agree, so the plan can refuse a bad name in milliseconds, before Snakemake or DVC schedules anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from bml.kinds import KINDS

# A modality's kind says how it is extracted, stored and encoded (bml/kinds/); its name (audio, visual, flow,
# ...) is the key of batches, features, logits and metrics.
MODALITY_KINDS = {name: kind.description for name, kind in KINDS.items()}


@dataclass(frozen=True)
class FusionSpec:
    name: str
    splits_logits: bool  # its logits are a sum of per-modality logits (OGM, OPM and evaluation read those)
    two_only: bool  # defined for exactly two modalities


FUSIONS = {
    "concat": FusionSpec("concat", splits_logits=True, two_only=False),
    "sum": FusionSpec("sum", splits_logits=True, two_only=False),
    "film": FusionSpec("film", splits_logits=False, two_only=True),
    "gated": FusionSpec("gated", splits_logits=False, two_only=True),
}
NO_FUSION = "none"  # uni-modal models and the ensemble have no fusion head

# A model with more than one encoder of a modality (I2M2: the uni-modal experts' and the inter-modal model's) keys
# the extra ones' features "<modality>.<part>" (audio.unimodal), so the probes measure each as probe_audio.unimodal;
# a '.' (never in a modality's name, and allowed in MLflow's metric names, where '@' is not) marks such a key.
ENCODER_PART = "."


def encoder_key(modality: str, part: str) -> str:
    """The features key of `modality`'s encoder in the model's `part` (its first encoder is keyed `modality`)."""
    return f"{modality}{ENCODER_PART}{part}"


ENCODERS = ("small_cnn", "resnet18")  # encoder families; each kind (bml/kinds/) builds one encoder per family
