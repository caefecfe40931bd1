"""Each method's cost beside its gain: the training step's wall time against the baseline's of the same seed,
the run's time, and the paired gains in accuracy and in each modality's probe. Part of the scorecard
(bml/scorecard.py); the cost figure (bml/figures.py) reads the same rows.
"""

from __future__ import annotations

import numpy as np

from bml.catalog import NO_FUSION
from bml.results import Run, by_seed, method_name
from bml.selection import mean_std, run_record, trained_methods
from bml.table_format import Table
from bml.table_rows import DATASET_NAMES, MISSING, Settings


def step_time_ms(run: Run) -> float | None:
    values = [row["step_time_ms"] for row in run.history if "step_time_ms" in row]
    return float(np.mean(values)) if values else None


def run_time_s(run: Run) -> float | None:
    total = (run_record(run).get("timings_s") or {}).get("total")
    return float(total) if total is not None else None


def cost_rows(runs: list[Run], dataset: str, protocol: str, fusion: str, modalities, settings: Settings) -> list[dict]:
    """Per balancing method: step-time ratio to the baseline (paired by seed), run time, and its gains over the
    baseline in accuracy and in each modality's probe."""
    cell = lambda m: (dataset, protocol, fusion, m)  # noqa: E731
    base_runs = {r.seed: r for r in runs if r.cell == cell(settings.baseline)}
    rows = []
    for method, f in trained_methods(runs, dataset, protocol, fusion):
        if f == NO_FUSION:
            continue
        mine = {r.seed: r for r in runs if r.cell == cell(method)}
        ratios = [
            a / b
            for s in sorted(set(mine) & set(base_runs))
            if (a := step_time_ms(mine[s])) is not None and (b := step_time_ms(base_runs[s])) and b > 0
        ]
        times = [t for r in mine.values() if (t := run_time_s(r)) is not None]
        gains = {}
        for key in ["acc"] + [f"probe_{m}" for m in modalities]:
            ours, base = (
                by_seed(runs, cell(method), key, settings.which),
                by_seed(runs, cell(settings.baseline), key, settings.which),
            )
            paired = sorted(set(ours) & set(base))
            gains[key] = float(np.mean([ours[s] - base[s] for s in paired])) if paired else None
        rows.append({"method": method, "ratios": ratios, "times": times, "gains": gains})
    return rows


def cost_table(runs: list[Run], dataset: str, protocol: str, fusion: str, modalities, settings: Settings) -> Table:
    header = ["Method", "step time / baseline", "run time (s)", "Δ acc"] + [f"Δ probe {m}" for m in modalities]
    table = Table(
        f"cost_{dataset}_{protocol}_{fusion}",
        f"Cost beside gain, {DATASET_NAMES.get(dataset, dataset)}, protocol {protocol}, fusion {fusion}",
        header,
        [],
    )
    for row in cost_rows(runs, dataset, protocol, fusion, modalities, settings):
        gains = [f"{g:+.1f}" if g is not None else MISSING for g in row["gains"].values()]
        table.rows.append([method_name(row["method"]), mean_std(row["ratios"]), mean_std(row["times"])] + gains)
    table.notes = [
        f"Step time: the mean training-step wall time over epochs (history.csv step_time_ms) divided by "
        f"{method_name(settings.baseline)}'s of the same seed, mean ± std over seeds; run time: metrics.json "
        "timings_s.total; wall times depend on the machine and its load, so compare them within one report.",
        f"Δ: mean paired difference from {method_name(settings.baseline)} (test, {settings.which} checkpoint).",
    ]
    return table
