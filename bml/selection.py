"""The papers' selection, measured: each run's metrics.json keeps its test accuracy per epoch
(`test_by_epoch`), which no selection, early stopping or checkpoint choice reads, so the report can show what
choosing the best epoch on test (as the published sources did, one seed) adds to bml's number (the checkpoint
chosen on validation, over seeds). Part of the scorecard (bml/scorecard.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from bml.catalog import NO_FUSION
from bml.results import METRICS, Run, by_seed, cell_label
from bml.stats import summarize
from bml.table_format import Table
from bml.table_rows import DATASET_NAMES, MISSING, Settings, method_order


def run_record(run: Run) -> dict:
    """The run's whole metrics.json: test accuracy per epoch and timings are read here, never by selection."""
    try:
        return json.loads((run.path / METRICS).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def best_on_test(run: Run) -> float | None:
    """The run's best test accuracy over its epochs (the papers' selection); None when it was not recorded."""
    record = run_record(run).get("test_by_epoch") or {}
    values = [float(a) for a in record.get("acc", []) if a is not None and math.isfinite(float(a))]
    return max(values) if values else None


def trained_methods(runs: list[Run], dataset: str, protocol: str, fusion: str) -> list[tuple[str, str]]:
    mine = [r for r in runs if r.dataset == dataset and r.protocol == protocol and r.fusion in (NO_FUSION, fusion)]
    found = {(r.method, r.fusion) for r in mine}
    return [(m, f) for m in method_order({m for m, _ in found}) for f in (NO_FUSION, fusion) if (m, f) in found]


def selection_rows(runs: list[Run], dataset: str, protocol: str, fusion: str, settings: Settings) -> list[dict]:
    """Per method: bml's number (best on validation) and the papers' (best epoch on test) per seed, and the
    selection's inflation (papers' − bml's) with its t interval."""
    rows = []
    for method, f in trained_methods(runs, dataset, protocol, fusion):
        cell = [r for r in runs if r.cell == (dataset, protocol, f, method)]
        ours = by_seed(runs, (dataset, protocol, f, method), "acc", settings.which)
        theirs = {r.seed: v for r in cell if (v := best_on_test(r)) is not None}
        paired = sorted(set(ours) & set(theirs))
        gap = summarize([theirs[s] - ours[s] for s in paired], confidence=1 - settings.alpha) if paired else None
        rows.append({"method": method, "fusion": f, "ours": ours, "theirs": theirs, "inflation": gap})
    return rows


def mean_std(values: Sequence[float]) -> str:
    s = summarize(list(values))
    if s["mean"] is None:
        return MISSING
    return f"{s['mean']:.1f}" + (f" ± {s['std']:.1f}" if s["std"] is not None else " (1 seed)")


def selection_table(runs: list[Run], dataset: str, protocol: str, fusion: str, settings: Settings) -> Table:
    header = ["Method", "bml: best on validation", "papers': best epoch on test, one seed", "papers': over seeds"]
    header += ["inflation (papers' − bml)", "n"]
    table = Table(
        f"selection_{dataset}_{protocol}_{fusion}",
        f"Test accuracy (%) as bml selects it and as the papers do, {DATASET_NAMES.get(dataset, dataset)}, "
        f"protocol {protocol}, fusion {fusion}",
        header,
        [],
    )
    for row in selection_rows(runs, dataset, protocol, fusion, settings):
        label = cell_label(row["method"], row["fusion"])
        theirs, gap = row["theirs"], row["inflation"]
        if not theirs:
            table.rows.append([label, mean_std(row["ours"].values()), "not recorded", "not recorded", MISSING, "0"])
            continue
        first = min(theirs)
        values = list(theirs.values())
        spread = f"{mean_std(values)} [{min(values):.1f}, {max(values):.1f}]"
        inflation = MISSING
        if gap and gap["mean"] is not None:
            inflation = f"{gap['mean']:+.1f}" + (
                f" [{gap['ci_t'][0]:+.1f}, {gap['ci_t'][1]:+.1f}]" if gap["ci_t"] else ""
            )
        row_cells = [label, mean_std(row["ours"].values()), f"{theirs[first]:.1f} (seed {first})", spread]
        table.rows.append(row_cells + [inflation, str(gap["n"] if gap else 0)])
    table.notes = [
        f"bml: mean ± std over seeds of the test accuracy at the checkpoint chosen on validation ({settings.which}).",
        "Papers': the best test accuracy over the epochs (test_by_epoch in each run's metrics.json, which no "
        "selection, early stopping or checkpoint choice reads), as the published sources selected; one seed (the "
        "first), then mean ± std [min, max] over seeds.",
        f"Inflation: the papers' number minus bml's, paired by seed; mean and {100 * (1 - settings.alpha):g}% t "
        "interval. not recorded: the runs predate the per-epoch test record.",
    ]
    return table


def selection_summary(runs: list[Run], groups, settings: Settings) -> dict[str, dict]:
    """summary.json entries per cell with a test-set record: the papers' selection and its inflation."""
    out = {}
    for dataset, protocol, fusion in groups:
        for row in selection_rows(runs, dataset, protocol, fusion, settings):
            gap = row["inflation"]
            if gap and gap["mean"] is not None:
                entry = {"best_on_test_mean": round(float(np.mean(list(row["theirs"].values()))), 3)}
                entry["inflation_mean"] = round(gap["mean"], 3)
                entry["inflation_n"] = gap["n"]
                out[f"selection/{dataset}/{protocol}/{row['fusion']}/{row['method']}"] = entry
    return out
