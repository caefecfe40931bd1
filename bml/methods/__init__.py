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
from collections.abc import Callable
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
    rounded half up, in exact integer arithmetic (2.5 -> 3, never float noise). Torch-free, so that the plan
    can check a schedule before any job (window_problems, schedule_problems); bml/methods/base.py re-exports it.
    """
    if reference_epochs < 1 or epochs < 1 or epoch < 0:
        raise ValueError(
            f"scale_epoch needs epoch >= 0 and epochs, reference_epochs >= 1; got {epoch}, {epochs}, {reference_epochs}"
        )
    return (2 * epoch * epochs + reference_epochs) // (2 * reference_epochs)


def window_problems(params: dict, epochs: int) -> list[str]:
    """What is wrong with a method's modulation window (`modulation_starts`..`modulation_ends`, of its
    `reference_epochs`-epoch schedule) on a run of `epochs` epochs: a window that ends before it starts, or one
    that starts after the run's last epoch once scaled (the method would never act). [] for other methods."""
    keys = ("modulation_starts", "modulation_ends", "reference_epochs")
    if not all(isinstance(params.get(k), int) for k in keys) or params["reference_epochs"] < 1 or epochs < 1:
        return []  # the schema check names missing or mistyped keys
    starts, ends, reference = (params[k] for k in keys)
    if starts > ends:
        return [f"key 'modulation_starts': {starts} is after 'modulation_ends' {ends}; choose at most {ends}"]
    first = scale_epoch(starts, epochs, reference)
    if first >= epochs:
        latest = max(s for s in range(reference + 1) if scale_epoch(s, epochs, reference) < epochs)
        return [
            f"key 'modulation_starts': {starts} of a {reference}-epoch schedule is epoch {first} of this "
            f"{epochs}-epoch run, after its last (0-based {epochs - 1}): the method would never act; "
            f"choose at most {latest}"
        ]
    return []


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


VALUATION_PARAMS = {
    "warmup_epochs": EPOCH,
    "reference_epochs": REFERENCE_EPOCHS,
    "mask_level": Param("choice", choices=("feature", "input")),  # where a copy's other modality is zeroed
}
VALUATION_LOGS = {
    "valuation": "mean Shapley value on train",
    "resampled": "copies keeping this modality only",
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
    # the runs it reads, same dataset, protocol and seed: (method, fusion) patterns that `required_runs`
    # resolves; "<modality>" in a method stands for each of the dataset's modalities, "<fusion>" for the cell's own
    requires: tuple[tuple[str, str], ...] = ()
    modality: str | None = None  # uni-modal baselines: the one modality they see
    params: dict[str, Param] = field(default_factory=dict, compare=False)  # every key its YAML must set
    logs: dict[str, str] = field(default_factory=dict, compare=False)  # history prefix (<prefix>_<modality>) -> what
    # a head of its own (MLA's shared head, CRMT's orthogonal one): its runs' fusion is this name, in paths and
    # tables, never a catalog head it does not use; its build_model makes the head
    head: str = ""
    # problems(method params, train section, modalities) -> what is wrong with this combination, each naming the
    # key and its choices (a setting its dataset cannot use, a phase longer than the protocol); the plan refuses
    # the cell with them (bml/plan.py: resolve_cell), before any job
    problems: Callable[[dict, dict, list[str]], list[str]] | None = field(default=None, compare=False)


UNIMODAL_SUFFIX = "_only"
MODALITY, FUSION = "<modality>", "<fusion>"  # the placeholders of a `requires` pattern
UNIMODAL_RUNS = ((f"{MODALITY}{UNIMODAL_SUFFIX}", NO_FUSION),)  # each modality's uni-modal baseline


def _ogm(name: str, title: str, paper: str, **params: Param) -> MethodSpec:
    """One of the OGM family (bml/methods/ogm.py): its parameters, with `params` replacing some."""
    logs = {"coef": "modulation coefficient"}
    return MethodSpec(name, title, "bml.methods.ogm", "OGM", paper, "split", 2, params=OGM_PARAMS | params, logs=logs)


# ---- helper B: the checks of MLA and Greedy (torch-free: the plan runs them) ----
MLA_PROJECTIONS = ("replace", "add", "none")


def _mla_problems(params: dict, train: dict, modalities: list[str]) -> list[str]:
    found = []
    if params.get("test_fusion") == "fixed" and len(modalities) != 2:
        found.append(
            f"key 'test_fusion': 'fixed' has weights for two modalities (fixed_weight, 1 - fixed_weight); this "
            f"dataset has {len(modalities)} ({modalities}): choose one of ['entropy']"
        )
    if train.get("accumulate", 1) != 1:
        found.append(
            f"key 'train.accumulate': MLA takes one optimizer step per modality and batch; {train['accumulate']} "
            f"would merge them: choose 1"
        )
    return found


def _greedy_problems(params: dict, train: dict, modalities: list[str]) -> list[str]:
    found = []
    if params.get("warmup_epochs", 0) >= train.get("epochs", 1):
        found.append(
            f"key 'warmup_epochs': {params['warmup_epochs']} is not shorter than the protocol's "
            f"{train['epochs']} epochs, so no re-balancing step would run: choose 0 to {train['epochs'] - 1}"
        )
    if train.get("encoder") == "small_cnn" and params.get("blocks", 1) > 5:
        found.append(f"key 'blocks': small_cnn has 5 stages; {params['blocks']} is not one of 1 to 5")
    if train.get("encoder") == "resnet18" and params.get("blocks", 1) > 4:
        found.append(f"key 'blocks': resnet18 has 4 residual stages; {params['blocks']} is not one of 1 to 4")
    return found


def _bogc_problems(params: dict, train: dict, modalities: list[str]) -> list[str]:
    if params.get("chunks", 0) > train.get("batch_size", 0):
        return [
            f"key 'chunks': {params['chunks']} is more than the protocol's train.batch_size; choose at most "
            f"{train['batch_size']} (each chunk is a part of the batch)"
        ]
    return []


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
            requires=UNIMODAL_RUNS,
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
        # helper F: multi-objective balancing (MIMO) and BOGC-MML, both "bml's reading" (docs/methods.md)
        MethodSpec(
            "mimo",
            "MIMO (bml's reading)",
            "bml.methods.mimo",
            "MIMO",
            "Fernando et al., arXiv 2511.06686, 2025",
            params={"gamma": Param("number", minimum=0), "mu": Param("number", above=0)},
            logs={"worst_weight": "weight in the smooth max"},
        ),
        MethodSpec(
            "bogc",
            "BOGC-MML (bml's reading)",
            "bml.methods.bogc",
            "BOGC",
            "Guo et al., arXiv 2505.23071, 2025",
            params={
                "chunks": Param("integer", minimum=2),
                "evidence": Param("choice", choices=("snr", "precision")),
                "evidence_scale": Param("number", above=0),
                "prior_weight": Param("number", above=0),
            },
            logs={"fusion_weight": "fused loss's gradient share"},
            problems=_bogc_problems,
        ),
        # ---- helper B: MLA and Greedy ----
        MethodSpec(
            "mla",
            "MLA",
            "bml.methods.mla",
            "MLA",
            "Zhang et al., CVPR 2024",
            params={
                "projection": Param("choice", choices=MLA_PROJECTIONS),
                "test_fusion": Param("choice", choices=("fixed", "entropy")),
                "fixed_weight": PROBABILITY,
            },
            logs={"proj_ratio": "head-gradient norm after / before the projection"},
            head="mla",
            problems=_mla_problems,
        ),
        MethodSpec(
            "greedy",
            "Greedy",
            "bml.methods.greedy",
            "Greedy",
            "Wu, Jastrzębski, Cho & Geras, ICML 2022",
            n_modalities=2,
            params={
                "epsilon": Param("number", minimum=0),
                "window": Param("integer", minimum=1),
                "warmup_epochs": EPOCH,
                "ratio": Param("number", above=0),
                "blocks": Param("integer", minimum=1),
                "utilisation": Param("boolean"),
            },
            logs={
                "bdr": "conditional learning speed, log10 of bypass over main",
                "rebalance": "share of re-balancing steps",
                "util": "conditional utilisation rate (val)",
            },
            head="mmtm",
            problems=_greedy_problems,
        ),
        # helper D: sample-level modality valuation (Wei, Feng, Wang & Hu, CVPR 2024), both re-sampling variants
        MethodSpec(
            "sample_valuation",
            "Valuation (sample-level)",
            "bml.methods.valuation",
            "SampleValuation",
            "Wei, Feng, Wang & Hu, CVPR 2024 (sample-level re-sampling)",
            n_modalities=2,
            params=VALUATION_PARAMS,
            logs=VALUATION_LOGS,
        ),
        MethodSpec(
            "modality_valuation",
            "Modality valuation (modality-level)",  # BalanceBenchmark's "Modality valuation" row is this variant
            "bml.methods.valuation",
            "ModalityValuation",
            "Wei, Feng, Wang & Hu, CVPR 2024 (modality-level re-sampling)",
            n_modalities=2,
            params=VALUATION_PARAMS
            | {"alpha": Param("number", minimum=0), "part_ratio": Param("number", above=0, maximum=1)},
            logs=VALUATION_LOGS | {"part_valuation": "mean Shapley value on the random part"},
        ),
        # helper E: I2M2, whose experts and inter-modal model are runs of their own (requires)
        MethodSpec(
            "i2m2",
            "I2M2",
            "bml.methods.i2m2",
            "I2M2",
            "Madaan et al., NeurIPS 2024",
            requires=UNIMODAL_RUNS + (("joint", FUSION),),
            params={"lr": Param("number", above=0), "grad_clip": Param("number", above=0)},
            logs={"expert_ce": "expert's cross-entropy"},
        ),
        # helper A: PMR and AGM (bml/methods/pmr.py, bml/methods/agm.py)
        MethodSpec(
            "pmr",
            "PMR",
            "bml.methods.pmr",
            "PMR",
            "Fan et al., CVPR 2023",
            fusions="any",  # its prototype CE reads the encoders' features only, never the head's split
            n_modalities=2,  # its rule compares the two modalities' prototype scores
            params={
                "alpha": Param("number", minimum=0),
                "momentum": PROBABILITY,
                "proto_share": Param("number", above=0, maximum=1),
                "modulation_starts": EPOCH,
                "modulation_ends": EPOCH,
                "reference_epochs": REFERENCE_EPOCHS,
            },
            logs={"pce_weight": "prototype CE weight"},
        ),
        MethodSpec(
            "agm",
            "AGM",
            "bml.methods.agm",
            "AGM",
            "Li et al., ICCV 2023",
            fusions="any",  # its per-modality outputs come from zeroed-input passes through any head
            n_modalities=2,  # the two-player Shapley split o_a = (o - o_{a zeroed} + o_{v zeroed}) / 2
            params={
                "alpha": Param("number", minimum=0),
                "clamp": Param("number", above=0),
                "clip_norm": Param("number", above=0),
                "modulation_starts": EPOCH,
                "modulation_ends": EPOCH,
                "reference_epochs": REFERENCE_EPOCHS,
            },
            logs={"agm_coef": "AGM gradient coefficient"},
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
# Rows of published tables that bml does not run (yet): their display names only.
PUBLISHED_TITLES = {
    "unimodal_1": "Uni-modal 1",
    "unimodal_2": "Uni-modal 2",
}


def schedule_problems(spec: MethodSpec, params: dict, epochs: int) -> list[str]:
    """What is wrong with a method's schedule on a run of `epochs` epochs: a warm-up that, scaled to the run
    (scale_epoch), covers every epoch leaves the method nothing to do, so the plan refuses it."""
    if "warmup_epochs" not in spec.params or not isinstance(params.get("warmup_epochs"), int):
        return []
    warmup, reference = params["warmup_epochs"], params.get("reference_epochs", epochs)
    if not isinstance(reference, int) or reference < 1 or warmup < 0 or epochs < 1:
        return []  # the schema names those
    scaled = scale_epoch(warmup, epochs, reference)
    if scaled < epochs:
        return []
    return [
        f"key 'warmup_epochs': {warmup} of {reference} reference epochs is {scaled} of this protocol's {epochs}, "
        f"the whole run: {spec.title} would never act; lower warmup_epochs or raise train.epochs"
    ]


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


def required_runs(spec: MethodSpec, modalities: list[str], fusion: str | None = None) -> list[tuple[str, str]]:
    """(method, fusion) of the runs a cell of `spec` with this `fusion` needs (same dataset, protocol and seed):
    its `requires` patterns resolved, "<modality>" once per modality (in the dataset's order), "<fusion>" as the
    cell's own. Each run once, in the patterns' order."""
    runs: list[tuple[str, str]] = []
    for method, head in spec.requires:
        if FUSION in (method, head) and fusion is None:
            raise ValueError(f"{spec.name} needs a run with the cell's own fusion ({method}, {head}): pass its fusion")
        head = head.replace(FUSION, fusion or "")
        method = method.replace(FUSION, fusion or "")
        names = [method.replace(MODALITY, m) for m in modalities] if MODALITY in method else [method]
        runs += [(name, head) for name in names if (name, head) not in runs]
    return runs


def fusion_names() -> list[str]:
    """Every fusion a run can carry: the catalog's heads, the methods' own heads and none."""
    return sorted(set(FUSIONS) | {s.head for s in METHODS.values() if s.head} | {NO_FUSION})


def load_method(name: str) -> type:
    """The Method class of `name` (imports its module, and so torch)."""
    spec = method_spec(name)
    return getattr(importlib.import_module(spec.module), spec.cls)
