"""Figures of one dataset x protocol, built from finished runs (bml/results.py), as PNG and PDF.

Four figures show what the result tables cannot: how validation accuracy evolves during training
(validation_curves), what each balancing method did to the two modalities epoch by epoch
(modulation_curves: OGM's coefficients, OPM's drop probabilities, MMPareto's conflict share, Re-learning's
weights), how much each modality's encoder learned on its own (probe_accuracy: linear probes on frozen
features, against the visual-only model as the uni-modal ceiling), and how the model degrades when one
modality is zeroed or replaced by noise (robustness).

Every figure aggregates seeds the same way: the mean, with a 95% t confidence interval of the mean
(bml.stats.summarize "ci_t") as a band or error bars; with fewer than 2 seeds only the mean is drawn.
Test metrics are read from the checkpoint chosen on validation ("best") unless asked otherwise.
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
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bml.results import Run, cell_label  # noqa: E402
from bml.stats import summarize  # noqa: E402

HEAD_METHODS = ("audio_only", "visual_only", "ensemble", "joint")  # drawn first, in this order

# The history columns each method logs about what it did to the audio and the visual branch, and their name.
MODULATION_COLUMNS = {
    "ogm": ("coef_audio", "coef_visual", "modulation coefficient"),
    "ogm_ge": ("coef_audio", "coef_visual", "modulation coefficient"),
    "opm": ("drop_prob_audio", "drop_prob_visual", "drop probability"),
    "mmpareto": ("conflict_audio", "conflict_visual", "conflict share"),
    "relearning": ("relearn_weight_audio", "relearn_weight_visual", "re-learning weight"),
}
SPARSE_METHODS = ("relearning",)  # columns present only on some epochs: markers, not lines
AUDIO_COLOR, VISUAL_COLOR = "tab:red", "tab:blue"
DPI = 150

CAPTIONS = {
    "validation_curves": "Validation accuracy (%) over training epochs for each trained method and fusion; "
    "mean over seeds, band: 95% t confidence interval.",
    "modulation": "What each balancing method did to the audio (red) and visual (blue) branch per epoch: OGM/OGM-GE "
    "gradient coefficients, OPM drop probabilities, MMPareto share of steps with conflicting "
    "gradients, Re-learning weights (markers: only the epochs it re-learned); mean over seeds, "
    "band/bars: 95% t confidence interval.",
    "probes": "Linear-probe accuracy (%) of the frozen audio and visual encoders on the test split, at the "
    "checkpoint chosen on validation; bars: mean over seeds (dots: single seeds), error bars: 95% t "
    "confidence interval; dashed line: the visual-only model's visual probe (uni-modal ceiling).",
    "robustness": "Test accuracy (%) with both modalities (clean) and with the audio or visual input zeroed or "
    "replaced by noise, at the checkpoint chosen on validation; bars: mean over seeds (dots: single "
    "seeds), error bars: 95% t confidence interval.",
}
PROBE_KEYS = {"probe_audio": "audio probe", "probe_visual": "visual probe"}
ROBUSTNESS_KEYS = {
    "acc": "clean",
    "acc_zero_audio": "audio zeroed",
    "acc_zero_visual": "visual zeroed",
    "acc_noise_audio": "audio noise",
    "acc_noise_visual": "visual noise",
}
ROBUSTNESS_COLORS = {
    "acc": "0.35",
    "acc_zero_audio": "tab:red",
    "acc_zero_visual": "tab:blue",
    "acc_noise_audio": "lightsalmon",
    "acc_noise_visual": "lightskyblue",
}


# ---- grouping and statistics ------------------------------------------------------------------------


def cells_in_order(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """(method, fusion) pairs: uni-modal runs, then the baseline, then the balancing methods alphabetically."""
    pairs = {(r.method, r.fusion) for r in runs}

    def rank(pair: tuple[str, str]) -> tuple:
        method, fusion = pair
        head = HEAD_METHODS.index(method) if method in HEAD_METHODS else len(HEAD_METHODS)
        return head, method, fusion

    return sorted(pairs, key=rank)


def runs_of(runs: Sequence[Run], method: str, fusion: str) -> list[Run]:
    return sorted((r for r in runs if r.method == method and r.fusion == fusion), key=lambda r: r.seed)


def mean_band(values_per_point: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t interval at each point (an epoch, a bar) of the seeds' values there.

    Returns (mean, lo, hi) arrays; lo and hi are NaN where fewer than 2 seeds give a value (no spread to
    estimate), and all three are NaN at a point with no value at all.
    """
    mean, lo, hi = (np.full(len(values_per_point), np.nan) for _ in range(3))
    for i, values in enumerate(values_per_point):
        summary = summarize(values)
        if summary["mean"] is not None:
            mean[i] = summary["mean"]
        if summary["ci_t"] is not None:
            lo[i], hi[i] = summary["ci_t"]
    return mean, lo, hi


def epoch_series(runs: Sequence[Run], key: str) -> tuple[np.ndarray, list[list[float]]]:
    """The epochs at which any run logged `key`, and at each the values of the runs that did.

    Runs may differ in length (a resumed or shorter run) or log a column only on some epochs (Re-learning),
    so values are gathered per epoch rather than stacked into a seeds x epochs array.
    """
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.history:
            if key in row and "epoch" in row:
                by_epoch.setdefault(int(row["epoch"]), []).append(row[key])
    epochs = sorted(by_epoch)
    return np.array(epochs, dtype=float), [by_epoch[e] for e in epochs]


def metric_values(runs: Sequence[Run], key: str, which: str) -> list[float]:
    """One test metric of each run (seed) that has it."""
    return [r.test[which][key] for r in runs if key in r.test.get(which, {})]


# ---- drawing helpers ----------------------------------------------------------------------------------


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write <stem>.png and <stem>.pdf and close the figure (pyplot keeps every open figure alive)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    try:
        for path in paths:
            fig.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return paths


def draw_curve(
    ax: Axes, x: np.ndarray, values: list[list[float]], color, label: str, markers: bool = False, shift: float = 0.0
) -> None:
    """Mean line and CI band; or, for columns logged only on some epochs, markers with CI error bars.

    `shift` moves markers sideways so that two series at the same epoch do not hide each other.
    """
    mean, lo, hi = mean_band(values)
    if markers:
        has_ci = ~np.isnan(lo)
        yerr = np.vstack([np.where(has_ci, mean - lo, 0.0), np.where(has_ci, hi - mean, 0.0)])
        ax.errorbar(x + shift, mean, yerr=yerr, fmt="o", color=color, label=label, capsize=3, markersize=5)
        return
    ax.plot(x, mean, color=color, label=label, linewidth=1.5)
    if not np.all(np.isnan(lo)):
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)


def draw_grouped_bars(
    ax: Axes, groups: list[tuple[str, dict[str, list[float]]]], keys: dict[str, str], colors: dict[str, str]
) -> None:
    """Bars of each group's keys side by side: mean, seed dots, CI error bars; a key a group lacks is left out."""
    width = 0.8 / len(keys)
    labelled = set()
    for g, (_, values_by_key) in enumerate(groups):
        for k, key in enumerate(keys):
            values = values_by_key.get(key, [])
            if not values:
                continue
            x = g - 0.4 + width * (k + 0.5)
            mean, lo, hi = (float(a[0]) for a in mean_band([values]))
            ax.bar(
                x,
                mean,
                width,
                color=colors[key],
                label=None if key in labelled else keys[key],
                edgecolor="white",
                linewidth=0.5,
            )
            labelled.add(key)
            ax.plot(np.full(len(values), x), values, "o", color="black", markersize=2, alpha=0.6)
            if not math.isnan(lo):
                ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=2, linewidth=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([label for label, _ in groups], rotation=30, ha="right")
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.grid(axis="y", alpha=0.3)


def cell_colors(runs: Sequence[Run]) -> dict[tuple[str, str], tuple]:
    """One colour per (method, fusion), the same in every figure of these runs."""
    cmap = plt.get_cmap("tab10")
    return {cell: cmap(i % 10) for i, cell in enumerate(cells_in_order(runs))}


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


def modulation_curves(runs: Sequence[Run], stem: str | Path) -> list[Path]:
    """One panel per balancing cell: what the method did to each modality over training; [] when none logged it."""
    panels = []
    for method, fusion in cells_in_order(runs):
        if method not in MODULATION_COLUMNS:
            continue
        audio_key, visual_key, quantity = MODULATION_COLUMNS[method]
        cell_runs = runs_of(runs, method, fusion)
        series = [
            (epoch_series(cell_runs, key), color, label)
            for key, color, label in ((audio_key, AUDIO_COLOR, "audio"), (visual_key, VISUAL_COLOR, "visual"))
        ]
        if any(len(epochs) for (epochs, _), _, _ in series):
            last_epoch = max(row.get("epoch", 0.0) for r in cell_runs for row in r.history)
            panels.append((method, fusion, quantity, series, last_epoch))
    if not panels:
        return []
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (method, fusion, quantity, series, last_epoch) in zip(axes.flat, panels, strict=False):
        sparse = method in SPARSE_METHODS
        for ((epochs, values), color, label), shift in zip(series, (-0.12, 0.12), strict=True):
            if len(epochs):
                draw_curve(ax, epochs, values, color, label, markers=sparse, shift=shift if sparse else 0.0)
        ax.set_title(cell_label(method, fusion), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, last_epoch + 0.5)  # the whole training, also where a sparse column has no marker
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(quantity)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.flat[len(panels) :]:
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


def probe_accuracy(runs: Sequence[Run], stem: str | Path, which: str = "best") -> list[Path]:
    """Linear probes of each encoder: a modality the fusion model under-trained probes below its uni-modal model."""
    groups = bar_groups(runs, PROBE_KEYS, which)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(groups) + 2.5), 4.5))
    draw_grouped_bars(ax, groups, PROBE_KEYS, {"probe_audio": AUDIO_COLOR, "probe_visual": VISUAL_COLOR})
    ceiling = metric_values(runs_of(runs, "visual_only", "none"), "probe_visual", which)
    if ceiling:
        ax.axhline(
            float(np.mean(ceiling)), color=VISUAL_COLOR, linestyle="--", linewidth=1, label="visual-only visual probe"
        )
    ax.set_ylabel(f"test probe accuracy (%), {which} checkpoint")
    ax.set_ylim(0, 105)
    if groups:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save(fig, stem)


def robustness(runs: Sequence[Run], stem: str | Path, which: str = "best") -> list[Path]:
    """Accuracy with one modality zeroed or noised: a model leaning on one modality collapses without it."""
    groups = bar_groups(runs, ROBUSTNESS_KEYS, which)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2.5), 4.5))
    draw_grouped_bars(ax, groups, ROBUSTNESS_KEYS, ROBUSTNESS_COLORS)
    ax.set_ylabel(f"test accuracy (%), {which} checkpoint")
    ax.set_ylim(0, 105)
    if groups:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save(fig, stem)


def all_figures(runs: Sequence[Run], out_dir: str | Path, prefix: str) -> dict[str, list[Path]]:
    """Every figure of these runs as <out_dir>/<prefix>_<name>.{png,pdf}; {name: written paths} (CAPTIONS keys)."""
    out_dir = Path(out_dir)
    return {
        "validation_curves": validation_curves(runs, out_dir / f"{prefix}_validation_curves"),
        "modulation": modulation_curves(runs, out_dir / f"{prefix}_modulation"),
        "probes": probe_accuracy(runs, out_dir / f"{prefix}_probes"),
        "robustness": robustness(runs, out_dir / f"{prefix}_robustness"),
    }
