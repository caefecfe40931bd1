"""bml.figures on small hand-made runs: every figure writes a PNG and a PDF, and plots the right numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bml import figures
from bml.results import Run

EPOCHS = 3
FULL_TEST = {"acc": 90.0, "macro_f1": 89.0, "probe_audio": 95.0, "probe_visual": 60.0, "acc_zero_audio": 20.0,
             "acc_zero_visual": 80.0, "acc_noise_audio": 15.0, "acc_noise_visual": 85.0, "val_acc": 91.0}


def val_acc(method_offset: float, seed: int, epoch: int) -> float:
    return method_offset + 10.0 * epoch + seed**2  # skewed over seeds: mean != median


def make_run(tmp_path: Path, method: str, seed: int, fusion: str = "concat", test: dict | None = None,
             extra=lambda seed, epoch: {}) -> Run:
    offset = {"joint": 0.0, "ogm": 5.0, "relearning": 2.0}.get(method, 1.0)
    history = [{"epoch": float(e), "train_loss": 1.0 / e, "lr": 0.05, "val_acc": val_acc(offset, seed, e),
                **extra(seed, e)} for e in range(1, EPOCHS + 1)]
    values = dict(test or FULL_TEST)
    values["acc"] += seed  # some spread between seeds, so that intervals exist
    path = tmp_path / "results" / "toy" / "embedded" / fusion / method / f"seed{seed}"
    return Run("toy", "embedded", fusion, method, seed, path, {"best": values, "last": values}, history)


def ogm_columns(seed: int, epoch: int) -> dict:
    return {"coef_audio": 1.0 - 0.2 * epoch - 0.01 * seed, "coef_visual": 1.0, "modulated_steps": 4.0}


def relearning_columns(seed: int, epoch: int) -> dict:
    # Re-learning logs its weights only on the epochs it re-learned.
    return {"relearn_weight_audio": 0.1 + 0.01 * seed, "relearn_weight_visual": 0.05} if epoch == 2 else {}


@pytest.fixture
def runs(tmp_path) -> list[Run]:
    uni_test = {k: v for k, v in FULL_TEST.items() if k not in ("probe_audio", "acc_noise_audio")}
    return ([make_run(tmp_path, "joint", s) for s in range(3)]
            + [make_run(tmp_path, "ogm", s, extra=ogm_columns) for s in range(3)]
            + [make_run(tmp_path, "relearning", s, extra=relearning_columns) for s in range(3)]
            # one seed only, and lacking the audio probe and the audio-noise accuracy
            + [make_run(tmp_path, "visual_only", 0, fusion="none", test=uni_test)])


def assert_png_and_pdf(paths: list[Path]) -> None:
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), path
        assert len(data) > 1000, path


@pytest.mark.parametrize("draw", [figures.validation_curves, figures.modulation_curves, figures.probe_accuracy,
                                  figures.robustness])
def test_each_figure_writes_png_and_pdf(runs, tmp_path, draw):
    paths = draw(runs, tmp_path / "figs" / "toy_embedded_figure")
    assert_png_and_pdf(paths)
    assert all(p.parent == tmp_path / "figs" for p in paths)


def test_modulation_curves_writes_nothing_without_modulation_columns(runs, tmp_path):
    plain = [r for r in runs if r.method in ("joint", "visual_only")]
    assert figures.modulation_curves(plain, tmp_path / "mod") == []
    assert list(tmp_path.glob("mod*")) == []


def test_single_seed_cell_still_plots(runs, tmp_path):
    one_seed = [r for r in runs if r.seed == 0]
    for draw in (figures.validation_curves, figures.modulation_curves, figures.probe_accuracy, figures.robustness):
        assert_png_and_pdf(draw(one_seed, tmp_path / draw.__name__))


def test_robustness_skips_keys_a_cell_lacks(runs, tmp_path):
    visual_only = [r for r in runs if r.method == "visual_only"]
    assert "acc_noise_audio" not in visual_only[0].test["best"]
    assert_png_and_pdf(figures.robustness(runs, tmp_path / "rob"))
    assert_png_and_pdf(figures.robustness(visual_only, tmp_path / "rob_visual_only", which="last"))


def test_all_figures_returns_every_named_figure(runs, tmp_path):
    written = figures.all_figures(runs, tmp_path / "out", "toy_embedded_concat")
    assert set(written) == {"validation_curves", "modulation", "probes", "robustness"} == set(figures.CAPTIONS)
    for name, paths in written.items():
        assert_png_and_pdf(paths)
        assert all(p.name.startswith(f"toy_embedded_concat_{name}.") for p in paths)


def test_mean_band_is_mean_and_t_interval():
    mean, lo, hi = figures.mean_band([[1.0, 2.0, 6.0], [5.0], []])
    half = stats.t.ppf(0.975, df=2) * np.std([1.0, 2.0, 6.0], ddof=1) / math.sqrt(3)
    assert mean[0] == pytest.approx(3.0)
    assert (lo[0], hi[0]) == pytest.approx((3.0 - half, 3.0 + half))
    assert mean[1] == 5.0 and math.isnan(lo[1]) and math.isnan(hi[1])  # one seed: no interval
    assert math.isnan(mean[2])


def test_epoch_series_keeps_only_epochs_that_logged_the_column(runs):
    epochs, values = figures.epoch_series([r for r in runs if r.method == "relearning"], "relearn_weight_audio")
    assert epochs.tolist() == [2.0]
    assert values == [[pytest.approx(0.10), pytest.approx(0.11), pytest.approx(0.12)]]


def test_validation_curves_plot_the_mean_over_seeds(runs, tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(figures, "save", lambda fig, stem: saved.append(fig) or [])
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
    assert figures.cells_in_order(runs) == [("visual_only", "none"), ("joint", "concat"), ("ogm", "concat"),
                                            ("relearning", "concat")]
    assert figures.cell_label("ogm_ge", "concat") == "OGM-GE (concat)"
    assert figures.cell_label("audio_only", "none") == "Audio only"
    assert figures.cell_label("new_method", "sum") == "new_method (sum)"
