"""The methods bml runs, torch-free: what each is, which fusion heads and how many modalities it works with,
which other runs it needs, the parameters it takes (types and bounds; params/methods/<name>.yaml holds their
values and sources) and the quantities it logs. One file per method under bml/methods/ holds its code (the
contract is bml/methods/base.py); `load_method` imports it only when a run needs it, so planning never imports
torch. A new method is that file, its params YAML, its entry here and a row in a matrix.

Uni-modal baselines are named `<modality>_only` (audio_only, visual_only, flow_only, ...) for whatever
modalities a dataset has.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from bml.catalog import FUSIONS, NO_FUSION


@dataclass(frozen=True)
class Param:
    """One parameter a method takes: its JSON-schema type and bounds, or its choices. Epoch numbers are of the
    method's `reference_epochs`-epoch schedule and scale with the protocol's (bml/methods/base.py: scale_epoch)."""

    type: str  # number, integer, boolean, or "choice" (one of `choices`)
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive minimum
    choices: tuple[Any, ...] = ()
    # an epoch count of one phase of the run (of the `reference_epochs` schedule): the plan refuses a value whose
    # scaled length leaves no epoch for the rest of the run (phase_problems)
    phase: bool = False

    def schema(self) -> dict:
        if self.choices:
            return {"const": self.choices[0]} if len(self.choices) == 1 else {"enum": list(self.choices)}
        bounds = {"minimum": self.minimum, "maximum": self.maximum, "exclusiveMinimum": self.above}
        return {"type": self.type} | {k: v for k, v in bounds.items() if v is not None}


def scale_epoch(epoch: int, epochs: int, reference_epochs: int) -> int:
    """An epoch number of a schedule written for `reference_epochs` epochs, moved to a run of `epochs`.

    Papers give warm-ups, modulation windows and re-learning epochs for their own schedule (OGM-GE: 0-50 of
    100 epochs; Re-learning: after epochs 20, 40, 60 of 90). On a protocol of another length every method's
    schedule scales by the same rule, so each keeps its share of the run: epoch * epochs / reference_epochs,
    rounded half up, in exact integer arithmetic (2.5 -> 3, never float noise).
    """
    if reference_epochs < 1 or epochs < 1 or epoch < 0:
        raise ValueError(
            f"scale_epoch needs epoch >= 0 and epochs, reference_epochs >= 1; got {epoch}, {epochs}, {reference_epochs}"
        )
    return (2 * epoch * epochs + reference_epochs) // (2 * reference_epochs)


def phase_problems(spec: MethodSpec, values: dict, epochs: int) -> list[str]:
    """Why a method's phase lengths do not fit a run of `epochs` epochs: each phase parameter (Param.phase), scaled
    from the method's `reference_epochs` (if it has one), must leave at least one epoch of the run to the others."""
    problems = []
    for name, param in spec.params.items():
        if not param.phase or name not in values:
            continue
        reference = values.get("reference_epochs", epochs)
        length = scale_epoch(values[name], epochs, reference)
        if length >= epochs:
            problems.append(
                f"key '{name}': {values[name]} epochs of its {reference}-epoch schedule are {length} of this "
                f"protocol's {epochs}, leaving none for the rest of the run; choose at most "
                f"{max((v for v in range(values[name]) if scale_epoch(v, epochs, reference) < epochs), default=0)} "
                f"(or a longer protocol)"
            )
    return problems


PROBABILITY = Param("number", minimum=0, maximum=1)
EPOCH = Param("integer", minimum=0)
REFERENCE_EPOCHS = Param("integer", minimum=1)
OGM_PARAMS = {
    "alpha": Param("number", minimum=0),
    "noise": Param("boolean"),
    "form": Param("choice", choices=("standard", "shifted")),
    "modulation_starts": EPOCH,
    "modulation_ends": EPOCH,
    "warmup_epochs": EPOCH,
    "reference_epochs": REFERENCE_EPOCHS,
}


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
    params: dict[str, Param] = field(default_factory=dict, compare=False)  # every key its YAML must set
    logs: dict[str, str] = field(default_factory=dict, compare=False)  # history prefix (<prefix>_<modality>) -> what
    # a head of its own (MLA's shared head, CRMT's orthogonal one): its runs' fusion is this name, in paths and
    # tables, never a catalog head it does not use; its build_model makes the head
    head: str = ""


def _ogm(name: str, title: str, paper: str, **params: Param) -> MethodSpec:
    """One of the OGM family (bml/methods/ogm.py): its parameters, with `params` replacing some."""
    logs = {"coef": "modulation coefficient"}
    return MethodSpec(name, title, "bml.methods.ogm", "OGM", paper, "split", 2, params=OGM_PARAMS | params, logs=logs)


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
        _ogm("ogm", "OGM", "Wei et al., TPAMI 2024"),
        _ogm("ogm_ge", "OGM-GE", "Peng et al., CVPR 2022"),
        _ogm(
            "ogm_noise_free",
            "OGM (no noise, ablation)",
            "Wei et al., TPAMI 2024, without the Gaussian noise (the code's --modulation OGM)",
            noise=Param("boolean", choices=(False,)),
        ),
        MethodSpec(
            "opm",
            "OPM",
            "bml.methods.opm",
            "OPM",
            "Wei et al., TPAMI 2024",
            fusions="split",
            n_modalities=2,
            params={
                "q_base": PROBABILITY,
                "lam": Param("number", minimum=0),
                "p_exe": PROBABILITY,
                "warmup_epochs": EPOCH,
                "reference_epochs": REFERENCE_EPOCHS,
            },
            logs={"drop_prob": "drop probability"},
        ),
        MethodSpec(
            "mmpareto",
            "MMPareto",
            "bml.methods.mmpareto",
            "MMPareto",
            "Wei & Hu, ICML 2024",
            params={"gamma": Param("number", above=0)},
            logs={"conflict": "conflict share"},
        ),
        MethodSpec(
            "relearning",
            "Re-learning",
            "bml.methods.relearning",
            "Relearning",
            "Wei, Li & Hu, ECCV 2024",
            params={
                "lam": Param("number", minimum=0),
                "every": Param("integer", minimum=1),
                "times": Param("integer", minimum=0),
                "reference_epochs": REFERENCE_EPOCHS,
                "kmeans_seed": Param("integer", minimum=0),
                "kmeans_n_init": Param("integer", minimum=1),
                "match_heldout_size": Param("boolean"),
            },
            logs={"relearn_weight": "re-learning weight"},
        ),
        # helper C: CRMT (its own head, two phases)
        MethodSpec(
            "crmt",
            "CRMT",
            "bml.methods.crmt",
            "CRMT",
            "Yang et al., ICLR 2024",
            params={
                "rho": Param("number", minimum=0),
                "a_init": Param("number"),
                "second_phase_epochs": Param("integer", minimum=0, phase=True),
                "reference_epochs": REFERENCE_EPOCHS,
                "second_lr_factor": Param("number", above=0),
                "second_momentum": Param("number", minimum=0, maximum=1),
                "second_weight_decay": Param("number", minimum=0),
            },
            logs={"fusion_weight": "mean fusion weight a_m"},
            head="crmt",
        ),
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


def params_schema(spec: MethodSpec) -> dict:
    """The JSON schema of a method's parameters, from its declarations: every one required, no other key."""
    properties = {name: p.schema() for name, p in spec.params.items()}
    return {"type": "object", "additionalProperties": False, "required": list(spec.params), "properties": properties}


def logged_quantities() -> dict[str, str]:
    """{history prefix: what it is} of every quantity a method logs per modality, in registry order."""
    return {prefix: what for spec in METHODS.values() for prefix, what in spec.logs.items()}


def every_run(modalities: list[str]) -> list[tuple[str, str]]:
    """(method, fusion) of every run bml can make on a dataset of these modalities: each modality's uni-modal
    baseline, then every registered method with every fusion head it works with."""
    runs = [(f"{m}{UNIMODAL_SUFFIX}", NO_FUSION) for m in modalities]
    usable = [s for s in METHODS.values() if s.n_modalities in (None, len(modalities)) and s.modality is None]
    return runs + [(s.name, f) for s in usable for f in allowed_fusions(s, len(modalities))]


def allowed_fusions(spec: MethodSpec, n_modalities: int) -> list[str]:
    """The fusion heads `spec` can train with on a dataset of `n_modalities` modalities."""
    if spec.head:
        return [spec.head]
    if spec.fusions == "none":
        return [NO_FUSION]
    heads = [f for f in FUSIONS.values() if not (f.two_only and n_modalities != 2)]
    return [f.name for f in heads if spec.fusions == "any" or f.splits_logits]


def required_runs(spec: MethodSpec, modalities: list[str]) -> list[tuple[str, str]]:
    """(method, fusion) of the runs `spec` needs, with the same dataset, protocol and seed."""
    if spec.requires == "unimodal":
        return [(f"{m}{UNIMODAL_SUFFIX}", NO_FUSION) for m in modalities]
    return []


def fusion_names() -> list[str]:
    """Every fusion a run can carry: the catalog's heads, the methods' own heads and none."""
    return sorted(set(FUSIONS) | {s.head for s in METHODS.values() if s.head} | {NO_FUSION})


def load_method(name: str) -> type:
    """The Method class of `name` (imports its module, and so torch)."""
    spec = method_spec(name)
    return getattr(importlib.import_module(spec.module), spec.cls)
