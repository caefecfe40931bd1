"""bml.figures on small hand-made runs: every figure writes a PNG and a PDF, and plots the right numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from scipy import stats

from bml import figures, plotting
from bml.results import Run

EPOCHS = 3
FULL_TEST = {
    "acc": 90.0,
    "macro_f1": 89.0,
    "probe_audio": 95.0,
    "probe_visual": 60.0,
    "acc_zero_audio": 20.0,
    "acc_zero_visual": 80.0,
    "shapley_audio": 1.2,
    "shapley_visual": 0.6,
    "acc_noise_audio": 15.0,
    "acc_noise_visual": 85.0,
    "val_acc": 91.0,
}


def val_acc(method_offset: float, seed: int, epoch: int) -> float:
    return method_offset + 10.0 * epoch + seed**2  # skewed over seeds: mean != median


def make_run(
    tmp_path: Path,
    method: str,
    seed: int,
    fusion: str = "concat",
    test: dict | None = None,
    extra=lambda seed, epoch: {},
    dataset: str = "toy",
) -> Run:
    offset = {"joint": 0.0, "ogm": 5.0, "relearning": 2.0}.get(method, 1.0)
    history = [
        {"epoch": float(e), "train_loss": 1.0 / e, "lr": 0.05, "val_acc": val_acc(offset, seed, e), **extra(seed, e)}
        for e in range(1, EPOCHS + 1)
    ]
    values = dict(test or FULL_TEST)
    values["acc"] += seed  # some spread between seeds, so that intervals exist
    path = tmp_path / "results" / dataset / "embedded" / fusion / method / f"seed{seed}"
    return Run(dataset, "embedded", fusion, method, seed, path, {"best": values, "last": values}, history)


def ogm_columns(seed: int, epoch: int) -> dict:
    return {"coef_audio": 1.0 - 0.2 * epoch - 0.01 * seed, "coef_visual": 1.0, "modulated_steps": 4.0}


def relearning_columns(seed: int, epoch: int) -> dict:
    # Re-learning logs its weights only on the epochs it re-learned.
    return {"relearn_weight_audio": 0.1 + 0.01 * seed, "relearn_weight_visual": 0.05} if epoch == 2 else {}


@pytest.fixture
def runs(tmp_path) -> list[Run]:
    uni_test = {
        k: v
        for k, v in FULL_TEST.items()
        if k not in ("probe_audio", "acc_noise_audio") and not k.startswith(("acc_zero", "shapley"))
    }
    return (
        [make_run(tmp_path, "joint", s) for s in range(3)]
        + [make_run(tmp_path, "ogm", s, extra=ogm_columns) for s in range(3)]
        + [make_run(tmp_path, "relearning", s, extra=relearning_columns) for s in range(3)]
        # one seed only, and lacking the audio probe and the audio-noise accuracy
        + [make_run(tmp_path, "visual_only", 0, fusion="none", test=uni_test)]
    )


def assert_png_and_pdf(paths: list[Path]) -> None:
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path
        assert len(data) > 1000, path


ALL_DRAWS = [
    figures.validation_curves,
    figures.modulation_curves,
    figures.probe_accuracy,
    figures.robustness,
    figures.shapley_shares,
]


@pytest.mark.parametrize("draw", ALL_DRAWS)
def test_each_figure_writes_png_and_pdf(runs, tmp_path, draw):
    paths = draw(runs, tmp_path / "figs" / "toy_embedded_figure")
    assert_png_and_pdf(paths)
    assert all(p.parent == tmp_path / "figs" for p in paths)


def capture(monkeypatch) -> list:
    """Keep the figures a drawing function would save, to read what it plotted."""
    saved = []
    monkeypatch.setattr(figures, "save", lambda fig, stem: saved.append(fig) or [])
    return saved


def test_modulation_curves_without_modulation_columns_still_writes_the_file_with_a_note(runs, tmp_path, monkeypatch):
    plain = [r for r in runs if r.method in ("joint", "visual_only")]
    assert_png_and_pdf(figures.modulation_curves(plain, tmp_path / "mod"))
    saved = capture(monkeypatch)
    figures.modulation_curves(plain, tmp_path / "mod2")
    ax = saved[0].axes[0]
    assert ax.get_lines() == [] and "No run here logged" in ax.texts[0].get_text()
    figures.plt.close(saved[0])


@pytest.mark.slow
def test_single_seed_cell_still_plots(runs, tmp_path):
    one_seed = [r for r in runs if r.seed == 0]
    for draw in ALL_DRAWS:
        assert_png_and_pdf(draw(one_seed, tmp_path / draw.__name__))


def test_robustness_skips_keys_a_cell_lacks(runs, tmp_path):
    visual_only = [r for r in runs if r.method == "visual_only"]
    assert "acc_noise_audio" not in visual_only[0].test["best"]
    assert_png_and_pdf(figures.robustness(runs, tmp_path / "rob"))
    assert_png_and_pdf(figures.robustness(visual_only, tmp_path / "rob_visual_only", which="last"))


def test_all_figures_returns_every_named_figure(runs, tmp_path):
    written = figures.all_figures(runs, tmp_path / "out", "toy_embedded_concat")
    assert list(written) == list(figures.FIGURES) == list(figures.captions(["audio", "visual"]))
    for name, paths in written.items():
        assert_png_and_pdf(paths)
        assert all(p.name.startswith(f"toy_embedded_concat_{name}.") for p in paths)


def test_mean_band_is_mean_and_t_interval():
    mean, lo, hi = plotting.mean_band([[1.0, 2.0, 6.0], [5.0], []])
    half = stats.t.ppf(0.975, df=2) * np.std([1.0, 2.0, 6.0], ddof=1) / math.sqrt(3)
    assert mean[0] == pytest.approx(3.0)
    assert (lo[0], hi[0]) == pytest.approx((3.0 - half, 3.0 + half))
    assert mean[1] == 5.0 and math.isnan(lo[1]) and math.isnan(hi[1])  # one seed: no interval
    assert math.isnan(mean[2])


def test_epoch_series_keeps_only_epochs_that_logged_the_column(runs):
    epochs, values = plotting.epoch_series([r for r in runs if r.method == "relearning"], "relearn_weight_audio")
    assert epochs.tolist() == [2.0]
    assert values == [[pytest.approx(0.10), pytest.approx(0.11), pytest.approx(0.12)]]


def test_validation_curves_plot_the_mean_over_seeds(runs, tmp_path, monkeypatch):
    saved = capture(monkeypatch)
    figures.validation_curves(runs, tmp_path / "val")
    ax = saved[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    joint = lines["Joint (baseline, concat)"]
    assert joint.get_xdata().tolist() == [1.0, 2.0, 3.0]
    # seeds 0, 1, 2 add 0, 1, 4 to the joint run's accuracy: the mean adds 5/3
    assert joint.get_ydata().tolist() == pytest.approx([10.0 * e + 5 / 3 for e in (1, 2, 3)])
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["Visual only", "Joint (baseline, concat)"]
    figures.plt.close(saved[0])


def test_cells_are_ordered_and_labelled(runs):
    assert plotting.cells_in_order(runs) == [
        ("visual_only", "none"),
        ("joint", "concat"),
        ("ogm", "concat"),
        ("relearning", "concat"),
    ]
    assert figures.cell_label("ogm_ge", "concat") == "OGM-GE (concat)"
    assert figures.cell_label("audio_only", "none") == "Audio only"
    assert figures.cell_label("new_method", "sum") == "new_method (sum)"


# ---- three modalities -------------------------------------------------------------------------------------

TRIO = ("audio", "visual", "flow")
TRIO_TEST = {
    "acc": 80.0,
    "macro_f1": 79.0,
    **{f"probe_{m}": 70.0 - 10 * i for i, m in enumerate(TRIO)},
    **{f"acc_zero_{m}": 60.0 + i for i, m in enumerate(TRIO)},
    **{f"shapley_{m}": 1.0 - 0.2 * i for i, m in enumerate(TRIO)},
    **{f"acc_noise_{m}": 65.0 + i for i, m in enumerate(TRIO)},
}
TRIO_COLORS = ["tab:red", "tab:blue", "tab:green"]


def trio_conflicts(seed: int, epoch: int) -> dict:
    return {f"conflict_{m}": 0.1 * i + 0.01 * seed for i, m in enumerate(TRIO)}


def trio_relearning(seed: int, epoch: int) -> dict:
    return {f"relearn_weight_{m}": 0.1 * (i + 1) for i, m in enumerate(TRIO)} if epoch == 2 else {}


@pytest.fixture
def trio_runs(tmp_path) -> list[Run]:
    runs = [make_run(tmp_path, "joint", s, test=TRIO_TEST) for s in range(3)]
    runs += [make_run(tmp_path, "mmpareto", s, test=TRIO_TEST, extra=trio_conflicts) for s in range(3)]
    runs += [make_run(tmp_path, "relearning", s, test=TRIO_TEST, extra=trio_relearning) for s in range(3)]
    for i, m in enumerate(TRIO):  # each modality's uni-modal model probes 5 points above the joint one's
        uni = {"acc": 50.0, "macro_f1": 49.0, f"probe_{m}": 75.0 - 10 * i, f"acc_noise_{m}": 40.0}
        runs += [make_run(tmp_path, f"{m}_only", s, fusion="none", test=uni) for s in range(2)]
    return runs


def test_three_modalities_get_three_colours_in_the_modulation_curves(trio_runs, tmp_path, monkeypatch):
    saved = capture(monkeypatch)
    figures.modulation_curves(trio_runs, tmp_path / "mod")
    fig = saved[0]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert list(panels) == ["MMPareto (concat)", "Re-learning (concat)"]
    lines = panels["MMPareto (concat)"].get_lines()
    assert [line.get_label() for line in lines] == list(TRIO)
    assert [line.get_color() for line in lines] == TRIO_COLORS
    assert lines[2].get_ydata().tolist() == pytest.approx([0.21] * 3)  # flow: 0.2 + mean seed offset 0.01
    legend = panels["Re-learning (concat)"].get_legend()  # sparse: one marker series per modality
    assert [t.get_text() for t in legend.get_texts()] == list(TRIO)
    assert figures.marker_shifts(3) == pytest.approx([-0.24, 0.0, 0.24])
    figures.plt.close(fig)


def test_three_modalities_probe_bars_and_each_uni_modal_ceiling(trio_runs, tmp_path, monkeypatch):
    saved = capture(monkeypatch)
    figures.probe_accuracy(trio_runs, tmp_path / "probes")
    ax = saved[0].axes[0]
    colors = {tuple(p.get_facecolor()) for p in ax.patches}
    assert colors == {to_rgba(c) for c in TRIO_COLORS}
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [(line.get_label(), line.get_color(), line.get_ydata()[0]) for line in dashed] == [
        ("audio-only audio probe", "tab:red", 75.0),
        ("visual-only visual probe", "tab:blue", 65.0),
        ("flow-only flow probe", "tab:green", 55.0),
    ]
    figures.plt.close(saved[0])


def test_three_modalities_robustness_and_shapley(trio_runs, tmp_path, monkeypatch):
    saved = capture(monkeypatch)
    figures.robustness(trio_runs, tmp_path / "rob")
    figures.shapley_shares(trio_runs, tmp_path / "shap")
    rob, shap = (fig.axes[0] for fig in saved)
    labels = [t.get_text() for t in rob.get_legend().get_texts()]
    assert labels == ["clean"] + [f"{m} zeroed" for m in TRIO] + [f"{m} noise" for m in TRIO]
    # the joint cell's Shapley bars: one per modality, its colour, its mean
    bars = [(p.get_height(), p.get_facecolor()) for p in shap.patches]
    assert bars[:3] == [(pytest.approx(1.0 - 0.2 * i), to_rgba(c)) for i, c in enumerate(TRIO_COLORS)]
    for fig in saved:
        figures.plt.close(fig)


def test_captions_name_the_modalities_and_their_colours():
    two = figures.captions(["audio", "visual"])
    three = figures.captions(list(TRIO))
    assert "audio (red), visual (blue)" in two["modulation"] and "flow" not in two["probes"]
    assert "audio (red), visual (blue), flow (green)" in three["probes"]
    ucf = figures.captions(["visual", "flow"])
    assert "visual (blue), flow (green)" in ucf["robustness"] and "audio" not in ucf["robustness"]
    assert plotting.modality_colors(["visual", "flow", "depth"]) == {
        "visual": "tab:blue",
        "flow": "tab:green",
        "depth": "tab:orange",
    }


def test_all_figures_of_three_modalities_write_every_file(trio_runs, tmp_path):
    written = figures.all_figures(trio_runs, tmp_path / "out", "toy_embedded_concat")
    for paths in written.values():
        assert_png_and_pdf(paths)
