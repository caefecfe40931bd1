"""Ranking agreement: Kendall's tau between the published order of the methods and bml's, per source and
dataset, over the methods both have. Part of the scorecard (bml/scorecard.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from bml.methods import PUBLISHED_TITLES
from bml.results import Run, by_seed, method_name
from bml.table_format import Table
from bml.table_rows import DATASET_NAMES, MISSING, Settings, fusion_of


def kendall(published: Sequence[float], ours: Sequence[float]) -> tuple[float | None, float | None]:
    """Kendall's tau (tau-b, scipy) between two orders of the same methods, and its p; None with fewer than 2
    methods or a constant order."""
    if len(published) < 2:
        return None, None
    result = sps.kendalltau(published, ours)
    if not math.isfinite(result.statistic):
        return None, None
    return float(result.statistic), float(result.pvalue)


def ranking_rows(runs: list[Run], published: dict, settings: Settings) -> list[dict]:
    rows = []
    for source_id, source in published.items():
        datasets = sorted({d for per in source["results"].values() for d in per})
        for dataset in datasets:
            pairs = []
            for method, per in source["results"].items():
                if method in PUBLISHED_TITLES or "acc" not in per.get(dataset, {}):
                    continue
                cell = (dataset, source["protocol"], fusion_of(method, source["fusion"]), method)
                ours = by_seed(runs, cell, "acc", settings.which)
                if ours:
                    pairs.append((method, per[dataset]["acc"], float(np.mean(list(ours.values())))))
            tau, p = kendall([p for _, p, _ in pairs], [o for _, _, o in pairs])
            rows.append(
                {"source": source_id, "dataset": dataset, "methods": [m for m, *_ in pairs], "tau": tau, "p": p}
            )
    return rows


def ranking_table(runs: list[Run], published: dict, settings: Settings) -> Table:
    table = Table(
        "ranking",
        "Ranking agreement: Kendall's tau between the published order of the methods and bml's",
        ["Source", "Dataset", "Methods in both", "Kendall's tau", "p"],
        [],
    )
    for row in ranking_rows(runs, published, settings):
        table.rows.append(
            [
                row["source"],
                DATASET_NAMES.get(row["dataset"], row["dataset"]),
                ", ".join(method_name(m) for m in row["methods"]) or MISSING,
                f"{row['tau']:+.2f}" if row["tau"] is not None else MISSING,
                f"{row['p']:.2g}" if row["p"] is not None else MISSING,
            ]
        )
    table.notes = [
        "Kendall's tau-b (scipy.stats.kendalltau) between each method's published accuracy and bml's mean over "
        "seeds under the source's protocol and fusion, over the methods both have; p: scipy's two-sided p.",
        f"{MISSING}: fewer than 2 methods of that table ran in bml (or all tied).",
    ]
    return table
