"""The methods bml runs, torch-free: what each is, which fusion heads and how many modalities it works with,
and which other runs it needs. One file per method under bml/methods/ holds its code (the contract is
bml/methods/base.py); `load_method` imports it only when a run needs it, so planning never imports torch.

Uni-modal baselines are named `<modality>_only` (audio_only, visual_only, flow_only, ...) for whatever
modalities a dataset has.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from bml.catalog import FUSIONS, NO_FUSION


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str  # how tables and figures name it
    module: str  # the file that holds its code
    cls: str
    paper: str
    fusions: str = "any"  # any: every fusion head; split: heads whose logits split per modality; none: no head
    n_modalities: int | None = None  # 2: its formulas are defined for two modalities; None: any number >= 2
    trains: bool = True  # False: it evaluates runs trained by others (the ensemble)
    requires: str = ""  # "unimodal": the <modality>_only run of each modality, same dataset, protocol and seed
    modality: str | None = None  # uni-modal baselines: the one modality they see


METHODS = {
    spec.name: spec
    for spec in (
        MethodSpec("joint", "Joint (baseline)", "bml.methods.baselines", "Joint", "joint training, multimodal CE"),
        MethodSpec(
            "ensemble",
            "Uni-modal ensemble",
            "bml.methods.baselines",
            "UnimodalEnsemble",
            "UME (Du et al., ICML 2023)",
            fusions="none",
            trains=False,
            requires="unimodal",
        ),
        # OGM as its authors run it, with the Gaussian noise (BML_TPAMI2024 main.py: --modulation OGM_GE)
        MethodSpec("ogm", "OGM", "bml.methods.ogm", "OGM", "Wei et al., TPAMI 2024", fusions="split", n_modalities=2),
        MethodSpec(
            "ogm_ge", "OGM-GE", "bml.methods.ogm", "OGM", "Peng et al., CVPR 2022", fusions="split", n_modalities=2
        ),
        MethodSpec(
            "ogm_noise_free",
            "OGM (no noise, ablation)",
            "bml.methods.ogm",
            "OGM",
            "Wei et al., TPAMI 2024, without the Gaussian noise (the code's --modulation OGM)",
            fusions="split",
            n_modalities=2,
        ),
        MethodSpec("opm", "OPM", "bml.methods.opm", "OPM", "Wei et al., TPAMI 2024", fusions="split", n_modalities=2),
        MethodSpec("mmpareto", "MMPareto", "bml.methods.mmpareto", "MMPareto", "Wei & Hu, ICML 2024"),
        MethodSpec("relearning", "Re-learning", "bml.methods.relearning", "Relearning", "Wei, Li & Hu, ECCV 2024"),
    )
}
UNIMODAL_SUFFIX = "_only"
# Rows of published tables that bml does not run (yet): their display names only.
PUBLISHED_TITLES = {
    "unimodal_1": "Uni-modal 1",
    "unimodal_2": "Uni-modal 2",
    "pmr": "PMR",
    "agm": "AGM",
    "mla": "MLA",
    "greedy": "Greedy",
    "modality_valuation": "Modality valuation",
}


def method_spec(name: str) -> MethodSpec:
    """The spec of `name`; `<modality>_only` for any modality name. ValueError lists the choices."""
    if name in METHODS:
        return METHODS[name]
    if name.endswith(UNIMODAL_SUFFIX) and len(name) > len(UNIMODAL_SUFFIX):
        modality = name[: -len(UNIMODAL_SUFFIX)]
        return MethodSpec(
            name,
            f"{modality.capitalize()} only",
            "bml.methods.baselines",
            "Unimodal",
            f"the {modality} encoder trained alone",
            fusions="none",
            n_modalities=1,
            modality=modality,
        )
    raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)} or <modality>{UNIMODAL_SUFFIX}")


def method_title(name: str) -> str:
    if name in PUBLISHED_TITLES:
        return PUBLISHED_TITLES[name]
    try:
        return method_spec(name).title
    except ValueError:
        return name


def allowed_fusions(spec: MethodSpec, n_modalities: int) -> list[str]:
    """The fusion heads `spec` can train with on a dataset of `n_modalities` modalities."""
    if spec.fusions == "none":
        return [NO_FUSION]
    heads = [f for f in FUSIONS.values() if not (f.two_only and n_modalities != 2)]
    return [f.name for f in heads if spec.fusions == "any" or f.splits_logits]


def required_runs(spec: MethodSpec, modalities: list[str]) -> list[tuple[str, str]]:
    """(method, fusion) of the runs `spec` needs, with the same dataset, protocol and seed."""
    if spec.requires == "unimodal":
        return [(f"{m}{UNIMODAL_SUFFIX}", NO_FUSION) for m in modalities]
    return []


def load_method(name: str) -> type:
    """The Method class of `name` (imports its module, and so torch)."""
    spec = method_spec(name)
    return getattr(importlib.import_module(spec.module), spec.cls)
