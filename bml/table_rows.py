"""The rows every report table shares and how a row is compared with the baseline: which runs a table reads,
its (method, fusion) rows in display order, the comparison settings (params/params.yaml: report), and the
names (dataset titles, the mark of an empty cell) that every table writes the same way. Shared by the result
tables (bml/tables.py) and the scorecard's (bml/scorecard.py, selection.py, cost.py, ranking.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from bml.datasets import dataset_titles
from bml.methods import UNIMODAL_SUFFIX, method_spec
from bml.modalities import modalities_of
from bml.results import Run, by_seed
from bml.stats import compare_to_baseline

DATASET_NAMES = dataset_titles()  # params/datasets/<name>.yaml: title
MISSING = "—"


def is_unimodal(method: str) -> bool:
    """A run without a fusion head: the <m>_only baselines and the ensemble of them."""
    try:
        return method_spec(method).fusions == "none"
    except ValueError:  # a published row bml does not run
        return False


def fusion_of(method: str, fusion: str) -> str:
    """The fusion `method`'s runs carry where a paper's table names `fusion`: none for the uni-modal ones, its own
    head for a method that has one (MLA's `mla`, Greedy's `mmtm`), else `fusion`."""
    if is_unimodal(method):
        return "none"
    try:
        return method_spec(method).head or fusion
    except ValueError:  # a published row bml does not run
        return fusion


def method_order(methods, modalities=()) -> list[str]:
    """Uni-modal rows (<m>_only in modality order, then the others), the baseline, then the balancing methods
    alphabetically."""
    singles = [f"{m}{UNIMODAL_SUFFIX}" for m in modalities if f"{m}{UNIMODAL_SUFFIX}" in methods]
    head = singles + sorted(m for m in methods if is_unimodal(m) and m not in singles)
    head += [m for m in ("joint",) if m in methods]
    return head + sorted(m for m in methods if m not in head)


@dataclass
class Settings:
    """How tables compare (params/params.yaml: report)."""

    baseline: str = "joint"
    test: str = "t"
    alpha: float = 0.05
    which: str = "best"  # best-on-validation checkpoint, or "last" epoch
    seeds: tuple[int, ...] = ()  # the seeds every cell should have (the training matrix's); () = no expectation


def table_runs(runs: list[Run], dataset: str, protocol: str, fusion: str) -> list[Run]:
    """The runs one per-dataset table reads: the uni-modal runs (fusion none) and those of `fusion`."""
    return [r for r in runs if r.dataset == dataset and r.protocol == protocol and r.fusion in ("none", fusion)]


def table_cells(runs: list[Run], dataset: str, protocol: str, fusion: str) -> list[tuple[str, str]]:
    """(method, fusion) rows for one table, in display order."""
    mine = table_runs(runs, dataset, protocol, fusion)
    found = {(r.method, r.fusion) for r in mine}
    order = method_order({m for m, _ in found}, modalities_of(mine))
    return [(m, f) for m in order for f in ("none", fusion) if (m, f) in found]


def comparison(
    runs: list[Run], dataset: str, protocol: str, fusion: str, key: str, settings: Settings
) -> dict[str, dict]:
    """compare_to_baseline over the balancing methods of one dataset x protocol x fusion."""
    methods = [m for m, f in table_cells(runs, dataset, protocol, fusion) if f == fusion]
    values = {m: by_seed(runs, (dataset, protocol, fusion, m), key, settings.which) for m in methods}
    if settings.baseline not in values:
        return {}
    return compare_to_baseline(values, settings.baseline, settings.test, settings.alpha)
