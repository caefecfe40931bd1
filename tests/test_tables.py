"""Tables and the report page from synthetic finished runs written to disk (known numbers, known answers)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from bml.cli import main as bml_main
from bml.report import build_report
from bml.results import load_runs
from bml.tables import Settings, build_tables, main_table, to_csv, to_latex, to_markdown

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
        (d / "history.csv").write_text(",".join(keys) + "\n" + "".join(
            ",".join(str(row[k]) for k in keys) + "\n" for row in history))


def synthetic_results(root: Path, skip: tuple = ()) -> Path:
    for seed in SEEDS:
        for method, (da, dp) in SHIFTS.items():
            if (method, seed) in skip:
                continue
            w, w2 = WOBBLE[seed] if method != "joint" else 0.0, WOBBLE2[seed]
            acc = 90.0 + da + w + w2
            test = {"acc": acc, "macro_f1": acc - 1.0, "acc_audio": 80.0, "acc_visual": 30.0, "probe_audio": 95.0,
                    "probe_visual": 60.0 + dp + w, "acc_zero_audio": 40.0, "acc_zero_visual": 85.0,
                    "acc_noise_audio": 50.0, "acc_noise_visual": 88.0}
            history = [{"epoch": e, "val_acc": 50.0 + 10 * e + w2, **({"coef_audio": 0.5, "coef_visual": 1.0}
                                                                      if method == "ogm_ge" else {})}
                       for e in (1, 2, 3)]
            write_run(root, "avdigits", method, "concat", seed, test, history)
        for method, modality, acc in (("audio_only", "audio", 95.0), ("visual_only", "visual", 70.0)):
            write_run(root, "avdigits", method, "none", seed,
                      {"acc": acc + WOBBLE[seed], "macro_f1": acc, f"probe_{modality}": acc + 1.0},
                      [{"epoch": 1, "val_acc": acc}])
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
    published = {"paper": {"title": "A paper", "protocol": "embedded", "fusion": "concat",
                           "results": {"joint": {"avdigits": {"acc": 85.0}, "cremad": {"acc": 60.0}}}}}
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


def test_report_page_has_every_table_and_figure_and_summary_is_a_metrics_file(tmp_path):
    root = synthetic_results(tmp_path / "results")
    published = yaml.safe_load((REPO / "params" / "published.yaml").read_text())
    out = tmp_path / "reports"
    summary = build_report(root, out, published, settings(), log=lambda _m: None)
    page = _Page()
    page.feed((out / "index.html").read_text())
    written = sorted(p.stem for p in (out / "tables").glob("*.md"))
    assert sorted(page.tables) == written and len(written) == 4 + len(published)
    for name in written:
        assert (out / "tables" / f"{name}.tex").read_text().startswith("\\begin{table}")
    assert len(page.images) == page.captions >= 4  # validation curves, modulation, probes, robustness
    for src in page.images:
        assert (out / src).read_bytes().startswith(b"\x89PNG") and (out / src).with_suffix(".pdf").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk["avdigits/embedded/concat/ogm_ge"]["acc_p_holm_vs_joint"] < 0.05
    assert on_disk["avdigits/embedded/concat/joint"]["n_seeds"] == 6


def test_bml_report_command_reads_params(tmp_path):
    root = synthetic_results(tmp_path / "results")
    bml_main(["report", "--results-root", str(root), "--out", str(tmp_path / "r")])
    assert (tmp_path / "r" / "index.html").is_file()
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
