"""Figures of one dataset x protocol, built from finished runs (bml/results.py), as PNG and PDF.

Five figures show what the result tables cannot: how validation accuracy evolves during training
(validation_curves), what each balancing method did to each modality epoch by epoch (modulation_curves:
OGM's coefficients, OPM's drop probabilities, MMPareto's conflict share, Re-learning's weights), how much each
modality's encoder learned on its own (probe_accuracy: linear probes on frozen features, against each
modality's uni-modal model as its ceiling), how the model degrades when one modality is zeroed or replaced
by noise (robustness), and each modality's Shapley share of the correct predictions (shapley_shares).

Modalities are whatever the runs report (bml.modalities.modalities_of), each with one colour in every figure:
audio red, visual blue (as before the redesign), others from the rest of matplotlib's tab10 palette.
Every figure aggregates seeds the same way: the mean, with a 95% t confidence interval of the mean
(bml.stats.summarize "ci_t") as a band or error bars; with fewer than 2 seeds only the mean is drawn.
Test metrics are read from the checkpoint chosen on validation ("best") unless asked otherwise.
Every figure is always written (a note in an empty panel where the runs logged nothing for it), so a
report's file names depend only on its datasets, protocols and fusions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: figures are built on headless machines and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bml.cost import cost_rows  # noqa: E402
from bml.methods import UNIMODAL_SUFFIX, logged_quantities  # noqa: E402
from bml.modalities import modalities_of  # noqa: E402
from bml.plotting import (  # noqa: E402
    cell_colors,
    cells_in_order,
    draw_curve,
    draw_grouped_bars,
    empty_note,
    epoch_series,
    lighter,
    marker_shifts,
    mean_band,
    metric_values,
    modality_colors,
    runs_of,
    save,
)
from bml.results import Run, cell_label, method_name  # noqa: E402
from bml.table_rows import Settings  # noqa: E402

# The history-column prefixes (<prefix>_<modality>) the balancing methods log about what they did to each
# modality's branch, and what each quantity is: each method's spec declares its own (bml/methods/__init__.py).
MODULATION_QUANTITIES = logged_quantities()
CLEAN_COLOR = "0.35"
FIGURES = (  # file suffixes, in page order
    "validation_curves",
    "modulation",
    "probes",
    "robustness",
    "shapley",
    "imbalance_over_training",
    "cost",
)
# Per-epoch validation columns (<prefix><modality>) of the imbalance-over-training figure, one panel column each.
OVER_TRAINING = {
    "val_probe_": "linear probe (%)",
    "val_acc_": "uni-modal accuracy (%)",
    "val_shapley_": "Shapley share",
}


def _color_words(modalities: Sequence[str]) -> str:
    colors = modality_colors(modalities)
    return ", ".join(f"{m} ({colors[m].removeprefix('tab:')})" for m in modalities)


def captions(modalities: Sequence[str]) -> dict[str, str]:
    """One caption per figure, naming these modalities and their colours."""
    colored = _color_words(modalities)
    return {
        "validation_curves": "Validation accuracy (%) over training epochs for each trained method and fusion; "
        "mean over seeds, band: 95% t confidence interval.",
        "modulation": f"What each balancing method did to each modality's branch per epoch, {colored}: "
        "OGM/OGM-GE gradient coefficients, OPM drop probabilities, MMPareto share of steps with conflicting "
        "gradients, Re-learning weights (markers: a column logged only on some epochs); mean over seeds, "
        "band/bars: 95% t confidence interval.",
        "probes": f"Linear-probe accuracy (%) of each frozen encoder ({colored}) on the test "
        "split, at the checkpoint chosen on validation; bars: mean over seeds (dots: single seeds), error bars: "
        "95% t confidence interval; dashed lines: each modality's probe in its own uni-modal model "
        "(<modality>_only, the uni-modal ceiling).",
        "robustness": f"Test accuracy (%) with every modality (clean, grey) and with one modality zeroed ({colored}) "
        "or replaced by noise (the same colour, lighter), at the checkpoint chosen on validation; bars: mean over "
        "seeds (dots: single seeds), error bars: 95% t confidence interval.",
        "shapley": f"Shapley share of each modality ({colored}) in the correct test predictions "
        "(v(S) = |S| if the model is right with the other modalities zeroed, else 0; Wei et al., CVPR 2024), at "
        "the checkpoint chosen on validation; bars: mean over seeds (dots: single seeds), error bars: 95% t "
        "confidence interval.",
        "imbalance_over_training": f"Each modality ({colored}) over training, on validation: its encoder's linear "
        "probe, the head's uni-modal accuracy and its Shapley share, per balancing method (solid) beside joint "
        "training (dashed); mean over seeds, band: 95% t confidence interval; a panel says so where the runs did "
        "not log that quantity per epoch.",
        "cost": "Cost beside gain: each balancing method's training-step time relative to joint training (paired "
        "by seed) against its test-accuracy gain and each modality's probe gain over joint training; mean over "
        "seeds, error bars: 95% t confidence interval of the time ratio.",
    }


# ---- the figures ----------------------------------------------------------------------------------------


def validation_curves(runs: Sequence[Run], stem: str | Path) -> list[Path]:
    """Validation accuracy per epoch of each trained cell: shows convergence and whether balancing slows it."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = cell_colors(runs)
    for method, fusion in cells_in_order(runs):
        epochs, values = epoch_series(runs_of(runs, method, fusion), "val_acc")
        if len(epochs):
            draw_curve(ax, epochs, values, colors[(method, fusion)], cell_label(method, fusion))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return save(fig, stem)


def modulation_series(runs: Sequence[Run], modalities: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(quantity prefix, [modalities with a <prefix>_<m> column]) for each quantity these runs logged."""
    columns = {k for r in runs for row in r.history for k in row}
    found = [(prefix, [m for m in modalities if f"{prefix}_{m}" in columns]) for prefix in MODULATION_QUANTITIES]
    return [(prefix, ms) for prefix, ms in found if ms]


def is_sparse(runs: Sequence[Run], key: str) -> bool:
    """True when a run logged `key` on some epochs only (Re-learning's weights): markers, not a line."""
    return any(any(key in row for row in r.history) and not all(key in row for row in r.history) for r in runs)


def modulation_curves(runs: Sequence[Run], stem: str | Path, modalities: Sequence[str] | None = None) -> list[Path]:
    """One panel per cell and logged quantity: what the method did to each modality over training."""
    modalities = list(modalities or modalities_of(list(runs)))
    colors = modality_colors(modalities)
    panels = []
    for method, fusion in cells_in_order(runs):
        cell_runs = runs_of(runs, method, fusion)
        for prefix, logged in modulation_series(cell_runs, modalities):
            last_epoch = max(row.get("epoch", 0.0) for r in cell_runs for row in r.history)
            panels.append((method, fusion, prefix, logged, cell_runs, last_epoch))
    ncols = max(1, min(3, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    if not panels:
        empty_note(axes[0, 0], "No run here logged a per-modality modulation\n(only balancing methods do).")
    for ax, (method, fusion, prefix, logged, cell_runs, last_epoch) in zip(axes.flat, panels, strict=False):
        keys = [f"{prefix}_{m}" for m in logged]
        sparse = any(is_sparse(cell_runs, k) for k in keys)
        for m, key, shift in zip(logged, keys, marker_shifts(len(keys)), strict=True):
            epochs, values = epoch_series(cell_runs, key)
            if len(epochs):
                draw_curve(ax, epochs, values, colors[m], m, markers=sparse, shift=shift if sparse else 0.0)
        ax.set_title(cell_label(method, fusion), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, last_epoch + 0.5)  # the whole training, also where a sparse column has no marker
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(MODULATION_QUANTITIES[prefix])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.flat[max(1, len(panels)) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return save(fig, stem)


def bar_groups(runs: Sequence[Run], keys, which: str) -> list[tuple[str, dict[str, list[float]]]]:
    """(cell label, {key: per-seed values}) for every cell that has any of `keys`, in display order."""
    groups = []
    for method, fusion in cells_in_order(runs):
        cell_runs = runs_of(runs, method, fusion)
        values = {key: metric_values(cell_runs, key, which) for key in keys}
        if any(values.values()):
            groups.append((cell_label(method, fusion), values))
    return groups


def _bar_figure(groups, keys: dict[str, str], colors: dict, ylabel: str, empty: str, per_group: float):
    fig, ax = plt.subplots(figsize=(max(6.0, per_group * len(groups) + 2.5), 4.5))
    if groups:
        draw_grouped_bars(ax, groups, keys, colors)
        ax.set_ylabel(ylabel)
    else:
        empty_note(ax, empty)
    return fig, ax


def _legend(ax: Axes, order: Sequence[str]) -> None:
    """The legend beside the axes, its bar entries in `order` (the first group drawn may lack some), then lines."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        rank = {label: i for i, label in enumerate(order)}
        pairs = sorted(zip(handles, labels, strict=True), key=lambda hl: rank.get(hl[1], len(rank)))
        ax.legend(*zip(*pairs, strict=True), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def probe_accuracy(
    runs: Sequence[Run], stem: str | Path, which: str = "best", modalities: Sequence[str] | None = None
) -> list[Path]:
    """Linear probes of each encoder: a modality the fusion model under-trained probes below its uni-modal model."""
    modalities = list(modalities or modalities_of(list(runs)))
    colors = modality_colors(modalities)
    keys = {f"probe_{m}": f"{m} probe" for m in modalities}
    groups = bar_groups(runs, keys, which)
    fig, ax = _bar_figure(
        groups,
        keys,
        {f"probe_{m}": colors[m] for m in modalities},
        f"test probe accuracy (%), {which} checkpoint",
        "No run here has a linear-probe accuracy.",
        0.3 * len(keys) + 0.2,
    )
    for m in modalities:
        ceiling = metric_values(runs_of(runs, f"{m}{UNIMODAL_SUFFIX}", "none"), f"probe_{m}", which)
        if ceiling:
            label = f"{m}-only {m} probe"
            ax.axhline(float(np.mean(ceiling)), color=colors[m], linestyle="--", linewidth=1, label=label)
    if groups:
        ax.set_ylim(0, 105)
    _legend(ax, list(keys.values()))
    return save(fig, stem)


def robustness_keys(modalities: Sequence[str]) -> tuple[dict[str, str], dict[str, object]]:
    """{metric: legend label} and {metric: colour}: clean, then each modality zeroed, then each noised."""
    colors = modality_colors(modalities)
    keys, key_colors = {"acc": "clean"}, {"acc": CLEAN_COLOR}
    for kind, label, shade in (("zero", "zeroed", lambda c: c), ("noise", "noise", lighter)):
        for m in modalities:
            keys[f"acc_{kind}_{m}"] = f"{m} {label}"
            key_colors[f"acc_{kind}_{m}"] = shade(colors[m])
    return keys, key_colors


def robustness(
    runs: Sequence[Run], stem: str | Path, which: str = "best", modalities: Sequence[str] | None = None
) -> list[Path]:
    """Accuracy with one modality zeroed or noised: a model leaning on one modality collapses without it."""
    keys, colors = robustness_keys(list(modalities or modalities_of(list(runs))))
    groups = bar_groups(runs, keys, which)
    fig, ax = _bar_figure(
        groups, keys, colors, f"test accuracy (%), {which} checkpoint", "No run here has a test accuracy.", 1.1
    )
    if groups:
        ax.set_ylim(0, 105)
    _legend(ax, list(keys.values()))
    return save(fig, stem)


def shapley_shares(
    runs: Sequence[Run], stem: str | Path, which: str = "best", modalities: Sequence[str] | None = None
) -> list[Path]:
    """Each modality's Shapley share (bml/evaluate.py): which modality the correct predictions rest on."""
    modalities = list(modalities or modalities_of(list(runs)))
    colors = modality_colors(modalities)
    keys = {f"shapley_{m}": m for m in modalities}
    groups = bar_groups(runs, keys, which)
    fig, ax = _bar_figure(
        groups,
        keys,
        {f"shapley_{m}": colors[m] for m in modalities},
        f"mean Shapley value on test, {which} checkpoint",
        "No run here has Shapley shares\n(models with two or more modalities only).",
        0.3 * len(keys) + 0.2,
    )
    if groups:
        ax.axhline(0.0, color="black", linewidth=0.8)
    _legend(ax, list(keys.values()))
    return save(fig, stem)


def imbalance_over_training(
    runs: Sequence[Run], stem: str | Path, baseline: str = "joint", modalities: Sequence[str] | None = None
) -> list[Path]:
    """Per balancing method, each modality's probe, uni-modal accuracy and Shapley share epoch by epoch, beside
    the baseline's: when (not only whether) a method lifted the held-back modality."""
    modalities = list(modalities or modalities_of(list(runs)))
    colors = modality_colors(modalities)
    methods = [(m, f) for m, f in cells_in_order(runs) if f != "none" and m != baseline] or [
        (m, f) for m, f in cells_in_order(runs) if f != "none"
    ]
    nrows = max(1, len(methods))
    fig, axes = plt.subplots(nrows, len(OVER_TRAINING), figsize=(4.2 * len(OVER_TRAINING), 3.0 * nrows), squeeze=False)
    if not methods:
        empty_note(axes[0, 0], "No multimodal run here.")
    for row, (method, fusion) in zip(axes, methods, strict=False):
        base = runs_of(runs, baseline, fusion) if method != baseline else []
        for ax, (prefix, quantity) in zip(row, OVER_TRAINING.items(), strict=True):
            drawn = False
            for m in modalities:
                for cell_runs, style, label in ((runs_of(runs, method, fusion), "-", m), (base, "--", None)):
                    epochs, values = epoch_series(cell_runs, f"{prefix}{m}")
                    if len(epochs):
                        sparse = is_sparse(cell_runs, f"{prefix}{m}")
                        draw_curve(ax, epochs, values, colors[m], label or f"{m}, {baseline}", markers=sparse)
                        if not sparse:
                            ax.lines[-1].set_linestyle(style)
                        drawn = True
            if not drawn:
                empty_note(ax, f"No {quantity.split(' (')[0]} logged per epoch.")
                continue
            ax.set_title(f"{cell_label(method, fusion)}: {quantity.split(' (')[0]}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel(quantity)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, stem)


def cost_scatter(runs: Sequence[Run], stem: str | Path, settings: Settings, modalities: Sequence[str]) -> list[Path]:
    """Step-time ratio against the gains in accuracy and in each probe: what a method's gain costs to train."""
    groups = sorted({r.cell[:3] for r in runs if r.fusion != "none"})
    keys = {"acc": "Δ test accuracy"} | {f"probe_{m}": f"Δ probe {m}" for m in modalities}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    rows = [row for d, p, f in groups for row in cost_rows(list(runs), d, p, f, modalities, settings) if row["ratios"]]
    if not rows:
        empty_note(axes[0, 0], "No run here logged its step time beside a baseline's.")
    cmap = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes[0], keys.items(), strict=True):
        if not rows:
            continue
        for i, row in enumerate(rows):
            if row["gains"][key] is None:
                continue
            mean, lo, hi = (float(a[0]) for a in mean_band([row["ratios"]]))
            xerr = [[mean - lo], [hi - mean]] if not math.isnan(lo) else None
            ax.errorbar(mean, row["gains"][key], xerr=xerr, fmt="o", color=cmap(i % 10), capsize=3)
            ax.annotate(method_name(row["method"]), (mean, row["gains"][key]), fontsize=7)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.axvline(1.0, color="0.5", linewidth=0.8, linestyle=":")
        ax.set_xlabel(f"step time / {settings.baseline}")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, stem)


def all_figures(
    runs: Sequence[Run], out_dir: str | Path, prefix: str, settings: Settings | None = None
) -> dict[str, list[Path]]:
    """Every figure of these runs as <out_dir>/<prefix>_<name>.{png,pdf}; {name: written paths} (FIGURES order)."""
    out_dir = Path(out_dir)
    settings = settings or Settings()
    modalities = modalities_of(list(runs))
    return {
        "validation_curves": validation_curves(runs, out_dir / f"{prefix}_validation_curves"),
        "modulation": modulation_curves(runs, out_dir / f"{prefix}_modulation", modalities=modalities),
        "probes": probe_accuracy(runs, out_dir / f"{prefix}_probes", modalities=modalities),
        "robustness": robustness(runs, out_dir / f"{prefix}_robustness", modalities=modalities),
        "shapley": shapley_shares(runs, out_dir / f"{prefix}_shapley", modalities=modalities),
        "imbalance_over_training": imbalance_over_training(
            runs, out_dir / f"{prefix}_imbalance_over_training", settings.baseline, modalities
        ),
        "cost": cost_scatter(runs, out_dir / f"{prefix}_cost", settings, modalities),
    }
