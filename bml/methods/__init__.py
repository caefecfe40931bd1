"""Balancing methods, one file each, over the one training loop (bml/train.py); see base.py."""

from __future__ import annotations

from bml.methods.base import Method
from bml.methods.baselines import AudioOnly, Joint, UnimodalEnsemble, VisualOnly
from bml.methods.mmpareto import MMPareto
from bml.methods.ogm import OGM, OGMGE
from bml.methods.opm import OPM
from bml.methods.relearning import Relearning

METHODS: dict[str, type[Method]] = {
    "joint": Joint,
    "audio_only": AudioOnly,
    "visual_only": VisualOnly,
    "ensemble": UnimodalEnsemble,
    "ogm": OGM,
    "ogm_ge": OGMGE,
    "opm": OPM,
    "mmpareto": MMPareto,
    "relearning": Relearning,
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]
