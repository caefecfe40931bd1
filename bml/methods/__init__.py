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

from bml.catalog import FUSIONS, NO_FUSION
from bml.methods.checks import bogc_problems, greedy_problems, mla_problems
from bml.methods.spec import EPOCH, PROBABILITY, REFERENCE_EPOCHS, MethodSpec, Param

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

UNIMODAL_SUFFIX = "_only"
MODALITY, FUSION = "<modality>", "<fusion>"  # the placeholders of a `requires` pattern
UNIMODAL_RUNS = ((f"{MODALITY}{UNIMODAL_SUFFIX}", NO_FUSION),)  # each modality's uni-modal baseline


MLA_PROJECTIONS = ("replace", "add", "none")


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
            problems=bogc_problems,
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
            problems=mla_problems,
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
            problems=greedy_problems,
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
                "zeroed_pass_gradients": Param("boolean"),
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
