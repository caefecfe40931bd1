"""What the plan refuses about a method's settings before any job starts (bml/plan.py: resolve_cell), each problem
naming the key and the values that would fit: windows, warm-ups and phases that the protocol's length leaves
nothing to, and the per-method checks a spec declares (MethodSpec.problems). Torch-free."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bml.methods.schedule import scale_epoch

if TYPE_CHECKING:
    from bml.methods import MethodSpec


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


def mla_problems(params: dict, train: dict, modalities: list[str]) -> list[str]:
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


def greedy_problems(params: dict, train: dict, modalities: list[str]) -> list[str]:
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


def bogc_problems(params: dict, train: dict, modalities: list[str]) -> list[str]:
    if params.get("chunks", 0) > train.get("batch_size", 0):
        return [
            f"key 'chunks': {params['chunks']} is more than the protocol's train.batch_size; choose at most "
            f"{train['batch_size']} (each chunk is a part of the batch)"
        ]
    return []
