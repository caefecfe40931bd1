"""Tables and the report page from synthetic finished runs written to disk (known numbers, known answers)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from bml.cli import main as bml_main
from bml.modalities import modalities_of
from bml.report import build_report, output_names
from bml.results import load_runs
from bml.table_format import to_csv, to_latex, to_markdown
from bml.table_rows import Settings
from bml.tables import build_tables, imbalance_table, main_table, robustness_table

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
SEEDS = range(6)
# per method: (acc offset, probe_visual offset) from joint, per seed a small fixed wobble
SHIFTS = {"joint": (0.0, 0.0), "ogm_ge": (-3.0, 5.0), "opm": (0.1, 0.0)}
WOBBLE = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0]
WOBBLE2 = [-0.1, 0.4, -0.3, 0.2, 0.0, -0.2]


def write_run(root: Path, dataset: str, method: str, fusion: str, seed: int, test: dict, history: list[dict]):
    d = root / dataset / "embedded" / fusion / method / f"seed{seed}"
    d.mkdir(parents=True)
    run = {"dataset": dataset, "protocol": "embedded", "method": method, "fusion": fusion, "seed": seed}
    (d / "metrics.json").write_text(json.dumps({"run": run, "test": {"best": test, "last": test}}))
    if history:
        keys = list(history[0])
        (d / "history.csv").write_text(
            ",".join(keys) + "\n" + "".join(",".join(str(row[k]) for k in keys) + "\n" for row in history)
        )


def synthetic_results(root: Path, skip: tuple = ()) -> Path:
    for seed in SEEDS:
        for method, (da, dp) in SHIFTS.items():
            if (method, seed) in skip:
                continue
            w, w2 = WOBBLE[seed] if method != "joint" else 0.0, WOBBLE2[seed]
            acc = 90.0 + da + w + w2
            test = {
                "acc": acc,
                "macro_f1": acc - 1.0,
                "acc_audio": 80.0,
                "acc_visual": 30.0,
                "probe_audio": 95.0,
                "probe_visual": 60.0 + dp + w,
                "acc_zero_audio": 40.0,
                "acc_zero_visual": 85.0,
                "acc_noise_audio": 50.0,
                "acc_noise_visual": 88.0,
                "acc_fgm": 70.0,
                "acc_pgd": 60.0,
                "acc_fgm_audio": 75.0,
                "acc_fgm_visual": 85.0,
                "acc_pgd_audio": 65.0,
                "acc_pgd_visual": 80.0,
            }
            history = [
                {
                    "epoch": e,
                    "val_acc": 50.0 + 10 * e + w2,
                    **({"coef_audio": 0.5, "coef_visual": 1.0} if method == "ogm_ge" else {}),
                }
                for e in (1, 2, 3)
            ]
            write_run(root, "avdigits", method, "concat", seed, test, history)
        for method, modality, acc in (("audio_only", "audio", 95.0), ("visual_only", "visual", 70.0)):
            write_run(
                root,
                "avdigits",
                method,
                "none",
                seed,
                {"acc": acc + WOBBLE[seed], "macro_f1": acc, f"probe_{modality}": acc + 1.0},
                [{"epoch": 1, "val_acc": acc}],
            )
    return root


TOY_MODALITIES = ("audio", "visual", "flow")  # three modalities, in the order the toy dataset declares them
# per method: the shift of the flow probe from joint (every seed), the other probes only wobble
TOY_FLOW_SHIFTS = {"joint": 0.0, "mmpareto": 4.0, "relearning": 0.0}


def three_modality_results(root: Path) -> Path:
    """A toy dataset with audio, visual and flow: MMPareto lifts the flow probe by 4 points on every seed."""
    for seed in SEEDS:
        for method, shift in TOY_FLOW_SHIFTS.items():
            w = WOBBLE[seed] if method != "joint" else 0.0
            test = {"acc": 80.0 + w + WOBBLE2[seed], "macro_f1": 79.0}
            test |= {f"acc_{m}": 40.0 + 10 * i for i, m in enumerate(TOY_MODALITIES)}
            test |= {"probe_audio": 70.0 + WOBBLE2[seed], "probe_visual": 50.0 + w, "probe_flow": 40.0 + shift + w}
            test |= {f"acc_zero_{m}": 60.0 + i for i, m in enumerate(TOY_MODALITIES)}
            test |= {f"shapley_{m}": 0.5 + 0.1 * i for i, m in enumerate(TOY_MODALITIES)}
            test |= {f"acc_noise_{m}": 70.0 + i for i, m in enumerate(TOY_MODALITIES)}
            history = [
                {
                    "epoch": e,
                    "val_acc": 40.0 + 10 * e,
                    **({f"conflict_{m}": 0.1 * e for m in TOY_MODALITIES} if method == "mmpareto" else {}),
                }
                for e in (1, 2, 3)
            ]
            write_run(root, "toy", method, "concat", seed, test, history)
        for modality, acc in zip(TOY_MODALITIES, (75.0, 55.0, 45.0), strict=True):
            write_run(
                root,
                "toy",
                f"{modality}_only",
                "none",
                seed,
                {"acc": acc + WOBBLE[seed], "macro_f1": acc, f"probe_{modality}": acc + 1.0},
                [{"epoch": 1, "val_acc": acc}],
            )
    return root


def settings():
    return Settings(seeds=tuple(SEEDS))


def test_main_table_matches_the_golden_markdown_latex_and_csv(tmp_path):
    runs, problems = load_runs(synthetic_results(tmp_path / "results"))
    assert problems == []
    table = main_table(runs, "embedded", "concat", settings())
    for ext, render in (("md", to_markdown), ("tex", to_latex), ("csv", to_csv)):
        golden = GOLDEN / f"main_table.{ext}"
        assert render(table) == golden.read_text(), f"{golden} differs; if intended, regenerate it"


def test_the_true_shift_is_marked_and_the_null_one_is_not(tmp_path):
    runs, _ = load_runs(synthetic_results(tmp_path / "results"))
    table = main_table(runs, "embedded", "concat", settings())
    rows = {row[0]: row for row in table.rows}
    assert rows["OGM-GE (concat)"][1].endswith("↓")  # -3 points on every seed
    assert not rows["OPM (concat)"][1].endswith(("↑", "↓"))  # +0.1 with a wobble of 0.3
    assert (list(rows).index("Audio only"), 1) in table.bold  # best accuracy column
    assert any("paired t-test" in n and "Holm" in n for n in table.notes)


def test_missing_and_partial_runs_show_a_dash_or_a_note_and_the_build_goes_on(tmp_path):
    skip = tuple(("opm", s) for s in SEEDS) + (("ogm_ge", 5), ("ogm_ge", 4))
    root = synthetic_results(tmp_path / "results", skip=skip)
    broken = root / "avdigits" / "embedded" / "concat" / "joint" / "seed9"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    runs, problems = load_runs(root)
    assert len(problems) == 1 and str(broken / "metrics.json") in problems[0]
    tables = build_tables(runs, {}, settings(), problems)
    main = tables[0]
    assert "OPM (concat)" not in [r[0] for r in main.rows]  # no run at all: not a row of this table
    assert any("OGM-GE on avdigits: 4 of 6 seeds finished (missing [4, 5])" in n for n in main.notes)
    assert any("unreadable metrics file" in n for n in main.notes)


def test_one_seed_gives_no_test_and_says_so(tmp_path):
    root = synthetic_results(tmp_path / "results", skip=tuple(("ogm_ge", s) for s in range(1, 6)))
    runs, _ = load_runs(root)
    table = main_table(runs, "embedded", "concat", settings())
    row = next(r for r in table.rows if r[0] == "OGM-GE (concat)")
    assert "(1 seed)" in row[1] and not row[1].endswith(("↑", "↓"))
    assert any("fewer than 2 seeds" in n.lower() for n in table.notes)


def test_published_numbers_sit_beside_ours_with_the_difference(tmp_path):
    root = synthetic_results(tmp_path / "results")
    runs, _ = load_runs(root)
    published = {
        "paper": {
            "title": "A paper",
            "protocol": "embedded",
            "fusion": "concat",
            "results": {"joint": {"avdigits": {"acc": 85.0}, "cremad": {"acc": 60.0}}},
        }
    }
    table = build_tables(runs, published, settings())[-1]
    assert table.header[:4] == ["Method", "avdigits published", "avdigits ours", "avdigits Δ"]
    joint = table.rows[0]
    mean = sum(90.0 + w for w in WOBBLE2) / 6
    assert joint[1] == "85.00" and joint[3] == f"{mean - 85.0:+.1f}"
    assert joint[5] == "—" and any("no bml run" in n for n in table.notes)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.images, self.captions, self._in_caption = [], [], 0, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("class") == "table":
            self.tables.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "figcaption":
            self.captions += 1


@pytest.mark.slow
def test_report_page_has_every_table_and_figure_and_summary_is_a_metrics_file(tmp_path):
    root = synthetic_results(tmp_path / "results")
    published = yaml.safe_load((REPO / "params" / "published.yaml").read_text())
    out = tmp_path / "reports"
    summary = build_report(root, out, published, settings(), log=lambda _m: None)
    page = _Page()
    page.feed((out / "index.html").read_text())
    written = sorted(p.stem for p in (out / "tables").glob("*.md"))
    # main, imbalance, robustness, stats of acc, probe_audio and probe_visual; one per published source; the
    # scorecard's verdicts, ranking, selection and cost
    assert sorted(page.tables) == written and len(written) == 6 + len(published) + 4
    for name in written:
        assert (out / "tables" / f"{name}.tex").read_text().startswith("\\begin{table}")
    assert len(page.images) == page.captions == 7  # validation curves, modulation, probes, robustness, Shapley,
    # imbalance over training, cost
    for src in page.images:
        assert (out / src).read_bytes().startswith(b"\x89PNG") and (out / src).with_suffix(".pdf").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk["avdigits/embedded/concat/ogm_ge"]["acc_p_holm_vs_joint"] < 0.05
    assert on_disk["avdigits/embedded/concat/joint"]["n_seeds"] == 6
    assert on_disk["avdigits/embedded/concat/ogm_ge"]["probe_visual_diff_vs_joint"] == pytest.approx(5.0)
    assert "audio (red), visual (blue)" in (out / "index.html").read_text()


@pytest.mark.slow
def test_bml_report_command_reads_params(tmp_path):
    """`bml report` reports the plan's cells: a run of another matrix left on disk (ogm_noise_free is in
    matrices.all, not default) stays out of the tables and of the Holm families."""
    root = synthetic_results(tmp_path / "results")
    write_run(root, "avdigits", "ogm_noise_free", "concat", 0, {"acc": 50.0}, [{"epoch": 1, "val_acc": 40.0}])
    assert any(r.method == "ogm_noise_free" for r in load_runs(root)[0])
    overrides = {"results_root": str(root), "report": {"out_dir": str(tmp_path / "r")}}
    bml_main(["report", "--overrides", json.dumps(overrides)])
    assert (tmp_path / "r" / "index.html").is_file()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "avdigits/embedded/concat/ogm_ge" in summary and not any("ogm_noise_free" in k for k in summary)
    with pytest.raises(SystemExit):
        bml_main(["report", "--params-dir", str(tmp_path / "nowhere")])


def test_a_table_warns_when_its_seeds_cannot_reach_alpha_with_the_chosen_test(tmp_path):
    root = synthetic_results(tmp_path / "results", skip=tuple((m, 5) for m in SHIFTS))  # 5 paired seeds
    runs, _ = load_runs(root)
    table = main_table(runs, "embedded", "concat", Settings(test="wilcoxon", seeds=tuple(SEEDS)))
    assert any("5 seeds" in n and "0.0625" in n for n in table.notes), table.notes
    assert not any(row[1].endswith(("↑", "↓")) for row in table.rows)  # the true shift cannot be shown
    t_table = main_table(runs, "embedded", "concat", Settings(test="t", seeds=tuple(SEEDS)))
    assert not any("cannot" in n for n in t_table.notes)


def test_modalities_come_from_the_metric_keys_in_the_datasets_order(tmp_path):
    runs, _ = load_runs(three_modality_results(synthetic_results(tmp_path / "results")))
    assert modalities_of([r for r in runs if r.dataset == "avdigits"]) == ["audio", "visual"]
    assert modalities_of([r for r in runs if r.dataset == "toy"]) == list(TOY_MODALITIES)  # not alphabetical
    only_flow = [r for r in runs if r.method == "flow_only"]
    assert modalities_of(only_flow) == ["flow"]


def test_avdigits_imbalance_table_compares_both_probes_with_the_baseline(tmp_path):
    runs, _ = load_runs(synthetic_results(tmp_path / "results"))
    table = imbalance_table(runs, "avdigits", "embedded", "concat", settings())
    assert table.header == [
        "Method",
        "acc",
        "head audio",
        "head visual",
        "probe audio",
        "probe visual",
        "Δ probe audio",
        "p (Holm) audio",
        "d_z audio",
        "Δ probe visual",
        "p (Holm) visual",
        "d_z visual",
    ]
    rows = {row[0]: dict(zip(table.header, row, strict=True)) for row in table.rows}
    assert list(rows)[:3] == ["Audio only", "Visual only", "Joint (baseline, concat)"]
    ogm = rows["OGM-GE (concat)"]
    assert ogm["Δ probe visual"] == "+5.0" and ogm["probe visual"].endswith("↑")  # +5 on every seed, mean wobble 0
    assert ogm["Δ probe audio"] == "+0.0" and ogm["p (Holm) audio"] == "1"  # equal audio probes: p = 1
    assert rows["Joint (baseline, concat)"]["Δ probe visual"] == "—"
    assert rows["Visual only"]["probe visual"] == "71.0 ± 0.0" and rows["Visual only"]["probe audio"] == "—"


@pytest.mark.slow
def test_three_modalities_give_three_difference_columns_and_stats_tables(tmp_path):
    runs, _ = load_runs(three_modality_results(tmp_path / "results"))
    tables = {t.name: t for t in build_tables(runs, {}, settings())}
    assert sorted(tables) == [
        "imbalance_toy_embedded_concat",
        "main_embedded_concat",
        "robustness_toy_embedded_concat",
    ] + [f"stats_{k}_toy_embedded_concat" for k in ("acc", "probe_audio", "probe_flow", "probe_visual")]
    table = tables["imbalance_toy_embedded_concat"]
    assert [h for h in table.header if h.startswith("Δ")] == ["Δ probe audio", "Δ probe visual", "Δ probe flow"]
    assert table.header[1:8] == [
        "acc",
        "head audio",
        "head visual",
        "head flow",
        "probe audio",
        "probe visual",
        "probe flow",
    ]
    rows = {row[0]: dict(zip(table.header, row, strict=True)) for row in table.rows}
    assert list(rows) == [
        "Audio only",
        "Visual only",
        "Flow only",
        "Joint (baseline, concat)",
        "MMPareto (concat)",
        "Re-learning (concat)",
    ]
    mmpareto = rows["MMPareto (concat)"]
    assert mmpareto["Δ probe flow"] == "+4.0" and float(mmpareto["p (Holm) flow"]) < 0.05
    assert mmpareto["probe flow"].endswith("↑") and not mmpareto["probe visual"].endswith(("↑", "↓"))
    assert float(mmpareto["p (Holm) visual"]) > 0.05
    assert rows["Flow only"]["probe flow"] == "46.0 ± 0.0" and rows["Flow only"]["Δ probe flow"] == "—"
    assert any("Audio only, Visual only, Flow only" in n for n in table.notes)
    flow_stats = tables["stats_probe_flow_toy_embedded_concat"]
    assert next(r for r in flow_stats.rows if r[0] == "MMPareto")[5] == "+4.0↑"


@pytest.mark.slow
def test_report_writes_exactly_the_listed_outputs_and_a_summary_for_every_modality(tmp_path):
    root = three_modality_results(synthetic_results(tmp_path / "results"))
    out = tmp_path / "reports"
    published = {
        "paper": {
            "title": "A paper",
            "protocol": "embedded",
            "fusion": "concat",
            "results": {"joint": {"avdigits": {"acc": 85.0}}},
        }
    }
    summary = build_report(root, out, published, settings(), log=lambda _m: None)
    groups = [
        ("avdigits", "embedded", "concat", ["audio", "visual"]),
        ("toy", "embedded", "concat", list(TOY_MODALITIES)),
    ]
    # `bml report` writes the data fingerprints after build_report (tests/test_fingerprint.py)
    expected = [n for n in output_names(groups, ["paper"]) if n != "fingerprints.json"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(expected)
    assert "figures/toy_embedded_concat_shapley.png" in expected
    toy = summary["toy/embedded/concat/mmpareto"]
    assert toy["probe_flow_diff_vs_joint"] == pytest.approx(4.0) and toy["probe_flow_p_holm_vs_joint"] < 0.05
    assert {f"probe_{m}_mean" for m in TOY_MODALITIES} <= set(toy)
    assert summary["toy/embedded/none/flow_only"]["probe_flow_mean"] == pytest.approx(46.0)
    ogm = summary["avdigits/embedded/concat/ogm_ge"]
    for key in (
        "acc_mean",
        "acc_std",
        "macro_f1_mean",
        "probe_audio_mean",
        "probe_visual_mean",
        "acc_diff_vs_joint",
        "acc_p_vs_joint",
        "acc_p_holm_vs_joint",
        "probe_visual_diff_vs_joint",
        "probe_visual_p_vs_joint",
        "probe_visual_p_holm_vs_joint",
        "probe_audio_diff_vs_joint",
        "n_seeds",
    ):
        assert key in ogm, key
    assert not any("flow" in k for k in ogm)


def test_the_robustness_table_has_the_attacks_missing_and_noise_per_modality(tmp_path):
    runs, _ = load_runs(synthetic_results(tmp_path / "results"))
    table = robustness_table(runs, "avdigits", "embedded", "concat", settings())
    assert table.header[:4] == ["Method", "clean", "l2 1-step all", "PGD-l2 all"]
    assert table.header[4:8] == ["l2 1-step audio", "PGD-l2 audio", "missing audio", "noise audio"]
    rows = {r[0]: dict(zip(table.header, r, strict=True)) for r in table.rows}
    assert rows["Joint (baseline, concat)"]["PGD-l2 visual"] == "80.0 ± 0.0"
    assert rows["Joint (baseline, concat)"]["missing audio"] == "40.0 ± 0.0"
