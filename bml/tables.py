"""Result tables shaped like the papers': methods as rows, datasets as columns, beside the published numbers.

Built from finished runs (bml/results.py) with the statistics of bml/stats.py. Every table says in its
footnotes which test it used, the multiple-comparison correction (Holm, across the balancing methods of
one dataset x protocol x fusion), the number of seeds, how the checkpoint was chosen, and every cell it
could not fill: a missing or partial run shows "—" or its seed count and the build goes on.

Columns per modality come from bml/modalities.py, rows and their comparison with the baseline from
bml/table_rows.py, which the scorecard's tables share.

Markers: ↑ / ↓ a difference from the baseline (joint training with the same fusion head) that is
significant after Holm's correction; the best mean accuracy of a column is bold.
Each table renders as Markdown, LaTeX (booktabs) and CSV (bml/table_format.py).
"""

from __future__ import annotations

import numpy as np

from bml.methods import UNIMODAL_SUFFIX
from bml.modalities import modalities_of
from bml.results import Run, by_seed, cell_label, method_name
from bml.stats import TEST_NAMES, summarize
from bml.table_format import Table
from bml.table_rows import (
    DATASET_NAMES,
    MISSING,
    Settings,
    comparison,
    fusion_of,
    is_unimodal,
    method_order,
    table_cells,
    table_runs,
)


def _mean_std(values: dict[int, float]) -> str:
    if not values:
        return MISSING
    v = np.array(list(values.values()), dtype=float)
    return f"{v.mean():.1f}" + (f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else " (1 seed)")


def _groups(runs: list[Run]) -> list[tuple[str, str]]:
    """(protocol, fusion) pairs of the trained multimodal cells, sorted."""
    return sorted({(r.protocol, r.fusion) for r in runs if r.fusion != "none"})


def _marker(entry: dict | None) -> str:
    if not entry or entry.get("baseline") or not entry.get("significant"):
        return ""
    return "↑" if entry["paired"]["mean_diff"] > 0 else "↓"


def _common_notes(settings: Settings, seeds_seen: set[int], warnings: set[str]) -> list[str]:
    n = len(seeds_seen)
    chosen = (
        ("checkpoint of the best validation accuracy (validation carved from train; test never used for selection)")
        if settings.which == "best"
        else "last epoch"
    )
    notes = [
        f"Mean ± std over seeds ({n} seed{'s' if n != 1 else ''}: {sorted(seeds_seen)}), test split, {chosen}.",
        f"↑ / ↓: differs from {method_name(settings.baseline)} with the same fusion, "
        f"{TEST_NAMES[settings.test]} over seeds, Holm-corrected across the balancing methods of the "
        f"column, p < {settings.alpha}.",
    ]
    return notes + sorted(warnings)


def main_table(runs: list[Run], protocol: str, fusion: str, settings: Settings, problems: list[str] = ()) -> Table:
    """Accuracy / macro-F1, methods as rows, datasets as columns (the papers' main table)."""
    datasets = sorted({r.dataset for r in runs if r.protocol == protocol and r.fusion == fusion})
    shown = [r for r in runs if r.protocol == protocol and r.fusion in ("none", fusion) and r.dataset in datasets]
    rows_keys = method_order({r.method for r in shown}, modalities_of(shown))
    header = ["Method"] + [f"{DATASET_NAMES.get(d, d)} {k}" for d in datasets for k in ("acc", "macro-F1")]
    table = Table(
        f"main_{protocol}_{fusion}", f"Accuracy and macro-F1 (%), protocol {protocol}, fusion {fusion}", header, []
    )
    seeds_seen, warnings, notes = set(), set(), []
    comps = {(d, k): comparison(runs, d, protocol, fusion, k, settings) for d in datasets for k in ("acc", "macro_f1")}
    for method in rows_keys:
        f = "none" if is_unimodal(method) else fusion
        row = [cell_label(method, f)]
        for d in datasets:
            for k in ("acc", "macro_f1"):
                values = by_seed(runs, (d, protocol, f, method), k, settings.which)
                seeds_seen |= set(values)
                entry = comps[(d, k)].get(method)
                row.append(_mean_std(values) + _marker(entry))
                if entry and not entry.get("baseline") and entry.get("warning"):
                    warnings.add(f"{DATASET_NAMES.get(d, d)}: {entry['warning']}")
                notes += _coverage_note(method, d, values, settings, k)
        table.rows.append(row)
    _bold_best(table, [j for j, h in enumerate(header) if h.endswith(" acc")])
    table.notes = _common_notes(settings, seeds_seen, warnings) + sorted(set(notes)) + list(problems)
    return table


def _coverage_note(method: str, dataset: str, values: dict[int, float], settings: Settings, key: str) -> list[str]:
    if key != "acc":
        return []
    name = f"{method_name(method)} on {DATASET_NAMES.get(dataset, dataset)}"
    if not values:
        return [f"{MISSING}: {name} has no finished run."]
    missing = sorted(set(settings.seeds) - set(values))
    if missing:
        return [f"{name}: {len(values)} of {len(settings.seeds)} seeds finished (missing {missing})."]
    if len(values) < 2:
        return [f"{name}: fewer than 2 seeds, no test."]
    return []


def _bold_best(table: Table, columns: list[int]) -> None:
    for j in columns:
        means = [(float(row[j].split(" ")[0].rstrip("↑↓")), i) for i, row in enumerate(table.rows) if row[j] != MISSING]
        if means:
            best = max(m for m, _ in means)
            table.bold |= {(i, j) for m, i in means if m == best}


def stats_keys(runs: list[Run]) -> list[str]:
    """The metrics that get a significance table: accuracy and every modality's probe."""
    return ["acc"] + [f"probe_{m}" for m in modalities_of(runs)]


def _diff_cells(entry: dict | None) -> tuple[list[str], str | None]:
    """Δ, Holm p and d_z of one comparison with the baseline, or dashes where there is no test; and its warning."""
    if not entry or entry.get("baseline") or entry["paired"]["p"] is None:
        return [MISSING] * 3, None
    d = entry["paired"]
    cells = [
        f"{d['mean_diff']:+.1f}",
        f"{entry['p_holm']:.2g}",
        f"{d['d_z']:+.2f}" if d["d_z"] is not None else MISSING,
    ]
    return cells, entry.get("warning")


def imbalance_table(runs: list[Run], dataset: str, protocol: str, fusion: str, settings: Settings) -> Table:
    """The imbalance diagnostic: each encoder's linear-probe accuracy and the head's per-modality accuracy, and
    for every modality how far each method moved its probe from the baseline's."""
    modalities = modalities_of(table_runs(runs, dataset, protocol, fusion))
    keys = [("acc", "acc")] + [(f"acc_{m}", f"head {m}") for m in modalities]
    keys += [(f"probe_{m}", f"probe {m}") for m in modalities]
    header = ["Method"] + [label for _, label in keys]
    header += [h for m in modalities for h in (f"Δ probe {m}", f"p (Holm) {m}", f"d_z {m}")]
    table = Table(
        f"imbalance_{dataset}_{protocol}_{fusion}",
        f"Uni-modal accuracy (%) on {DATASET_NAMES.get(dataset, dataset)}, protocol {protocol}, "
        f"fusion {fusion}: linear probes of the frozen encoders and the head's uni-modal logits",
        header,
        [],
    )
    comps = {f"probe_{m}": comparison(runs, dataset, protocol, fusion, f"probe_{m}", settings) for m in modalities}
    seeds_seen, warnings = set(), set()
    for method, f in table_cells(runs, dataset, protocol, fusion):
        row = [cell_label(method, f)]
        for key, _ in keys:
            values = by_seed(runs, (dataset, protocol, f, method), key, settings.which)
            seeds_seen |= set(values)
            marked = key in comps and f != "none"
            row.append(_mean_std(values) + (_marker(comps[key].get(method)) if marked else ""))
        for m in modalities:
            cells, warning = _diff_cells(comps[f"probe_{m}"].get(method) if f != "none" else None)
            row += cells
            if warning:
                warnings.add(warning)
        table.rows.append(row)
    references = ", ".join(f"{method_name(m + UNIMODAL_SUFFIX)}" for m in modalities)
    table.notes = _common_notes(settings, seeds_seen, warnings) + [
        "Probe: logistic regression on the frozen encoder's train-split features, C chosen on validation, "
        "scored on test. Head: accuracy of the fusion head's uni-modal logits (heads whose logits split per "
        "modality only). A joint encoder probing below the uni-modal one "
        f"({references}) was held back by the other modalit{'y' if len(modalities) == 2 else 'ies'}.",
        f"Δ probe <modality>: mean paired difference of that modality's probe from {method_name(settings.baseline)}; "
        "p (Holm): Holm-corrected p across the balancing methods, per modality; d_z: Cohen's d_z of that "
        "difference; — where there is no test (the baseline, uni-modal rows, fewer than 2 paired seeds).",
    ]
    return table


def robustness_table(runs: list[Run], dataset: str, protocol: str, fusion: str, settings: Settings) -> Table:
    """Test accuracy under perturbation (bml/evaluate.py): CRMT's l2 attacks on every modality and on each one,
    a modality's input zeroed (missing) and Gaussian noise on it; mean ± std over seeds."""
    modalities = modalities_of(table_runs(runs, dataset, protocol, fusion))
    keys = [("acc", "clean"), ("acc_fgm", "l2 1-step all"), ("acc_pgd", "PGD-l2 all")]
    for m in modalities:
        keys += [(f"acc_fgm_{m}", f"l2 1-step {m}"), (f"acc_pgd_{m}", f"PGD-l2 {m}")]
        keys += [(f"acc_zero_{m}", f"missing {m}"), (f"acc_noise_{m}", f"noise {m}")]
    table = Table(
        f"robustness_{dataset}_{protocol}_{fusion}",
        f"Robustness: test accuracy (%) under perturbation on {DATASET_NAMES.get(dataset, dataset)}, protocol "
        f"{protocol}, fusion {fusion}",
        ["Method"] + [label for _, label in keys],
        [],
    )
    seeds_seen = set()
    for method, f in table_cells(runs, dataset, protocol, fusion):
        row = [cell_label(method, f)]
        for key, _ in keys:
            values = by_seed(runs, (dataset, protocol, f, method), key, settings.which)
            seeds_seen |= set(values)
            row.append(_mean_std(values))
        table.rows.append(row)
    table.notes = _common_notes(settings, seeds_seen, set()) + [
        "l2 1-step: the input moved by eps along its l2-normalised CE gradient; PGD-l2: steps of eps / divisor, "
        "projected on the l2 ball of radius eps (CRMT, Yang et al., ICLR 2024, rob_test.py; params/params.yaml "
        "evaluation: attack_*), on every modality at once (all) or on one; on a fixed subset of test "
        "(attack_samples). Missing: that modality's input zeroed. Noise: Gaussian noise of noise_std times the "
        "input's std. — where a run has no such number (a uni-modal run attacks its one modality: 'all')."
    ]
    return table


def stats_table(runs: list[Run], dataset: str, protocol: str, fusion: str, key: str, settings: Settings) -> Table:
    """The significance detail of one metric: confidence intervals, paired differences, raw and Holm p."""
    header = ["Method", "n", "mean ± std", "95% CI (t)", "95% CI (bootstrap)", "Δ vs baseline", "p", "p (Holm)", "d_z"]
    table = Table(
        f"stats_{key}_{dataset}_{protocol}_{fusion}",
        f"{key} on {DATASET_NAMES.get(dataset, dataset)}, protocol {protocol}, fusion {fusion}: "
        f"each method against {method_name(settings.baseline)}",
        header,
        [],
    )
    comp = comparison(runs, dataset, protocol, fusion, key, settings)
    warnings = set()
    for method, f in table_cells(runs, dataset, protocol, fusion):
        if f == "none":
            continue
        values = by_seed(runs, (dataset, protocol, f, method), key, settings.which)
        s = summarize(list(values.values())) if values else {"n": 0}
        ci = lambda c: f"[{c[0]:.1f}, {c[1]:.1f}]" if c else MISSING  # noqa: E731
        row = [
            method_name(method),
            str(s["n"]),
            _mean_std(values),
            ci(s.get("ci_t")),
            ci(s.get("ci_boot")),
        ]
        entry = comp.get(method, {})
        if entry.get("baseline") or not entry or entry["paired"]["p"] is None:
            row += [MISSING] * 4
        else:
            d = entry["paired"]
            row += [
                f"{d['mean_diff']:+.1f}" + _marker(entry),
                f"{d['p']:.2g}",
                f"{entry['p_holm']:.2g}",
                f"{d['d_z']:+.2f}" if d["d_z"] is not None else MISSING,
            ]
            if entry.get("warning"):
                warnings.add(entry["warning"])
        table.rows.append(row)
    table.notes = [
        f"{TEST_NAMES[settings.test]} on the seeds both runs have; Holm's correction "
        f"across the {len(table.rows) - 1} methods compared; significance at p < {settings.alpha}.",
        "Bootstrap: BCa over seeds (scipy.stats.bootstrap); t interval: mean ± t(0.975, n-1) · s/√n.",
    ] + sorted(warnings)
    return table


def published_table(runs: list[Run], source_id: str, source: dict, settings: Settings) -> Table:
    """A paper's table: its numbers, ours under the same protocol and fusion where we ran them, the difference."""
    results = source["results"]
    datasets = sorted({d for per in results.values() for d in per})
    header = ["Method"] + [f"{DATASET_NAMES.get(d, d)} {k}" for d in datasets for k in ("published", "ours", "Δ")]
    table = Table(
        f"published_{source_id}",
        f"Accuracy (%): {source['title']} beside bml (protocol {source['protocol']}, fusion {source['fusion']})",
        header,
        [],
    )
    not_run = set()
    for method, per in results.items():
        f = fusion_of(method, source["fusion"])
        row = [method_name(method)]
        for d in datasets:
            pub = per.get(d, {}).get("acc")
            ours = by_seed(runs, (d, source["protocol"], f, method), "acc", settings.which)
            mean = float(np.mean(list(ours.values()))) if ours else None
            if not ours:
                not_run.add(DATASET_NAMES.get(d, d))
            row += [
                f"{pub:.2f}" if pub is not None else MISSING,
                _mean_std(ours),
                f"{mean - pub:+.1f}" if pub is not None and mean is not None else MISSING,
            ]
        table.rows.append(row)
    table.notes = [
        f"Published: {source['title']} (params/published.yaml)"
        + (f"; selected as: {source['selection']}" if source.get("selection") else "")
        + (f"; seeds: {source['seeds']}" if source.get("seeds") is not None else "")
        + ". Ours: mean ± std over seeds, test split, the checkpoint chosen on a validation split carved from "
        "train (test never used for selection), the same protocol and fusion. A number selected on test is "
        "optimistic, so where the paper selected on test Δ = ours − published overstates bml's shortfall against "
        "a fairly selected number (the scorecard's selection tables measure that optimism on bml's own runs)."
    ]
    if source.get("note"):
        table.notes.append(f"Note from the source: {source['note']}.")
    if not_run:
        table.notes.append(
            f"{MISSING} under ours: no bml run of that method on {', '.join(sorted(not_run))} under "
            f"protocol {source['protocol']} in this results folder (the real datasets are not "
            "shipped; see the README to plug them in)."
        )
    return table


def build_tables(runs: list[Run], published: dict, settings: Settings, problems: list[str] = ()) -> list[Table]:
    """Every table of the report: per (protocol, fusion) the main table; per dataset the imbalance, robustness
    and significance tables; one per published source."""
    tables = []
    for protocol, fusion in _groups(runs):
        tables.append(main_table(runs, protocol, fusion, settings, problems))
        for dataset in sorted({r.dataset for r in runs if r.protocol == protocol and r.fusion == fusion}):
            tables.append(imbalance_table(runs, dataset, protocol, fusion, settings))
            tables.append(robustness_table(runs, dataset, protocol, fusion, settings))
            for key in stats_keys(table_runs(runs, dataset, protocol, fusion)):
                tables.append(stats_table(runs, dataset, protocol, fusion, key, settings))
    tables += [published_table(runs, sid, source, settings) for sid, source in published.items()]
    return tables
