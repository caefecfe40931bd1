"""Drawing parts every figure shares (bml/figures.py): the runs grouped per (method, fusion) and their series per
epoch, one colour per modality and per cell, seeds' mean with a 95% t interval as a band, error bars or grouped
bars, an empty panel that says why, and saving as PNG and PDF."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: figures are built on headless machines and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bml.modalities import modalities_of  # noqa: E402
from bml.results import Run  # noqa: E402
from bml.stats import summarize  # noqa: E402
from bml.table_rows import method_order  # noqa: E402

DPI = 150
FIXED_COLORS = {"audio": "tab:red", "visual": "tab:blue"}  # the colours the two-modality figures always had
PALETTE = ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def modality_colors(modalities: Sequence[str]) -> dict[str, str]:
    """One colour per modality: audio red, visual blue, the others the rest of tab10 in order."""
    others = [m for m in modalities if m not in FIXED_COLORS]
    colors = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(others)}
    return {m: FIXED_COLORS.get(m) or colors[m] for m in modalities}


def cells_in_order(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """(method, fusion) pairs in the tables' row order: uni-modal runs, the baseline, the balancing methods."""
    pairs = {(r.method, r.fusion) for r in runs}
    order = method_order({m for m, _ in pairs}, modalities_of(list(runs)))
    return sorted(pairs, key=lambda pair: (order.index(pair[0]), pair[1]))


def runs_of(runs: Sequence[Run], method: str, fusion: str) -> list[Run]:
    return sorted((r for r in runs if r.method == method and r.fusion == fusion), key=lambda r: r.seed)


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


def cell_colors(runs: Sequence[Run]) -> dict[tuple[str, str], tuple]:
    """One colour per (method, fusion), the same in every figure of these runs."""
    cmap = plt.get_cmap("tab10")
    return {cell: cmap(i % 10) for i, cell in enumerate(cells_in_order(runs))}


def lighter(color: str, amount: float = 0.5) -> tuple[float, float, float]:
    """`color` mixed with white: the noised bar beside the zeroed one of the same modality."""
    return tuple(c + (1.0 - c) * amount for c in to_rgb(color))


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


def empty_note(ax: Axes, text: str) -> None:
    """An empty panel that says why, so that the figure's file exists for every dataset x protocol x fusion."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10, transform=ax.transAxes)
    ax.set_axis_off()


def marker_shifts(n: int, spread: float = 0.24) -> list[float]:
    """Sideways offsets (epochs) of n marker series at one epoch, so that they do not hide each other."""
    return [(i - (n - 1) / 2) * spread for i in range(n)]
