"""The reproduction scorecard on synthetic finished runs whose true effects are known exactly: verdicts, the
papers' test-set selection beside bml's, Kendall's tau, refused claims, the page's scorecard section."""

from __future__ import annotations

import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run
from scipy import stats

from bml.config import ConfigError
from bml.methods import PUBLISHED_TITLES
from bml.ranking import kendall
from bml.report import build_report, drop_non_finite, summary, write_page
from bml.results import load_runs
from bml.scorecard import (
    judge,
    load_claims,
    scorecard_tables,
    verdict,
    verdict_summary,
    verdict_table,
)
from bml.selection import selection_rows, selection_table
from bml.stats import power_to_see, seeds_needed
from bml.table_format import to_markdown
from bml.table_rows import Settings
from bml.tables import build_tables

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_EFFECT = 5.0
# method: (true effect on accuracy over joint, std of the per-seed differences, seeds)
TRUTH = {
    "mmpareto": (PUBLISHED_EFFECT, 1.0, 6),  # the published effect itself: reproduced
    "opm": (PUBLISHED_EFFECT / 2, 0.5, 12),  # half of it, enough seeds: smaller
    "ogm": (0.0, 1.0, 12),  # none, high power: not reproduced
    "relearning": (0.0, 8.0, 2),  # none, 2 seeds: inconclusive
}
SEEDS = tuple(range(12))


def exact_noise(n: int, std: float, seed: int) -> np.ndarray:
    """n values with mean exactly 0 and sample std exactly `std`: the runs' differences are known exactly."""
    w = np.random.default_rng(seed).normal(size=n)
    return (w - w.mean()) / w.std(ddof=1) * std if n > 1 else np.zeros(n)


def write_run(root: Path, method: str, fusion: str, seed: int, acc: float, test_by_epoch=None, step_ms=10.0):
    d = root / "avdigits" / "embedded" / fusion / method / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    run = {"dataset": "avdigits", "protocol": "embedded", "method": method, "fusion": fusion, "seed": seed}
    test = {"acc": acc, "probe_audio": 90.0, "probe_visual": 60.0}
    record = {"run": run, "test": {"best": test, "last": test}, "timings_s": {"total": 2.0 * step_ms}}
    if test_by_epoch is not None:
        record["test_by_epoch"] = {"epoch": list(range(1, len(test_by_epoch) + 1)), "acc": test_by_epoch}
    (d / "metrics.json").write_text(json.dumps(record))
    rows = "".join(f"{e},{50 + e},{step_ms},{55 + e},{40 + e}\n" for e in (1, 2, 3))
    (d / "history.csv").write_text("epoch,val_acc,step_time_ms,val_probe_audio,val_probe_visual\n" + rows)


def synthetic_runs(root: Path, with_test_record: bool = True) -> Path:
    base = 80.0 + exact_noise(len(SEEDS), 1.0, 99)
    for seed in SEEDS:
        record = [base[seed] - 3, base[seed] + 2.0, base[seed] - 1] if with_test_record else None
        write_run(root, "joint", "concat", seed, float(base[seed]), record)
    for k, (method, (effect, std, n)) in enumerate(TRUTH.items()):
        for seed, w in zip(SEEDS[:n], exact_noise(n, std, k), strict=False):
            acc = float(base[seed] + effect + w)
            write_run(root, method, "concat", seed, acc, [acc + 1.0, acc - 2.0] if with_test_record else None, 15.0)
    return root


def params_with(tmp_path: Path, claims: dict, published: dict) -> Path:
    params = tmp_path / "params"
    shutil.copytree(REPO / "params", params)
    (params / "claims.yaml").write_text(yaml.safe_dump(claims))
    (params / "published.yaml").write_text(yaml.safe_dump(published))
    return params


PAPER = {
    "paper": {
        "title": "A paper",
        "protocol": "embedded",
        "fusion": "concat",
        "results": {
            "joint": {"avdigits": {"acc": 80.0}},
            **{m: {"avdigits": {"acc": 80.0 + PUBLISHED_EFFECT}} for m in TRUTH},
        },
    }
}


def settings() -> Settings:
    return Settings(seeds=SEEDS)


def test_verdicts_on_runs_with_a_known_true_effect(tmp_path):
    runs, _ = load_runs(synthetic_runs(tmp_path / "results"))
    params = params_with(tmp_path, {"tables": {"paper": {"baseline": "joint"}}}, PAPER)
    judged = {c.method: v for c, v in judge(load_claims(params), runs, settings())}
    assert judged["mmpareto"]["verdict"] == "reproduced"
    assert judged["mmpareto"]["effect"] == pytest.approx(PUBLISHED_EFFECT)
    assert judged["opm"]["verdict"] == "smaller" and judged["opm"]["ci"][1] < PUBLISHED_EFFECT
    assert judged["ogm"]["verdict"] == "not reproduced" and judged["ogm"]["power"] >= 0.8
    assert judged["relearning"]["verdict"] == "inconclusive" and judged["relearning"]["n"] == 2


def test_the_seed_count_of_an_inconclusive_verdict_gives_about_the_asked_power_in_simulation(tmp_path):
    runs, _ = load_runs(synthetic_runs(tmp_path / "results"))
    params = params_with(tmp_path, {"tables": {"paper": {"baseline": "joint"}}}, PAPER)
    v = next(v for c, v in judge(load_claims(params), runs, settings()) if c.method == "relearning")
    n = v["seeds_needed"]
    assert v["std"] == pytest.approx(8.0) and n > 10
    diffs = np.random.default_rng(0).normal(PUBLISHED_EFFECT, v["std"], size=(20_000, n))
    simulated = np.mean(stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < v["level"])  # its Holm family's level
    assert 0.78 < simulated < 0.86
    assert power_to_see(PUBLISHED_EFFECT, v["std"], n - 1, v["level"]) < 0.8  # the fewest seeds that reach it


def test_verdict_edge_cases():
    assert verdict([], None, 5.0, 0.05, 0.8)["verdict"] == "not run"
    assert verdict([4.0], None, 5.0, 0.05, 0.8)["verdict"] == "inconclusive"
    opposite = verdict([-5.0, -5.5, -4.5, -5.2, -4.8, -5.0], 0.001, 5.0, 0.05, 0.8)
    assert opposite["verdict"] == "not reproduced" and "other direction" in opposite["why"]
    assert seeds_needed(5.0, 0.0, 0.05, 0.8) == 2 and seeds_needed(0.0, 1.0, 0.05, 0.8) is None


def test_a_partial_claim_says_how_many_seeds_it_rests_on_and_links_its_numbers(tmp_path):
    runs, _ = load_runs(synthetic_runs(tmp_path / "results"))
    claims = load_claims(params_with(tmp_path, {"tables": {"paper": {"baseline": "joint"}}}, PAPER))
    card = to_markdown(verdict_table(judge(claims, runs, settings()), claims, settings()), folder="tables/")
    row = next(line for line in card.splitlines() if line.startswith("| Re-learning"))
    assert "inconclusive:" in row and "seeds needed (2 of 12 seeds)" in row
    assert "](tables/stats_acc_avdigits_embedded_concat.md)" in row


def test_the_papers_selection_is_measured_and_never_reaches_bmls_numbers(tmp_path):
    with_record, _ = load_runs(synthetic_runs(tmp_path / "with"))
    without, _ = load_runs(synthetic_runs(tmp_path / "without", with_test_record=False))
    rows = {r["method"]: r for r in selection_rows(with_record, "avdigits", "embedded", "concat", settings())}
    assert rows["joint"]["inflation"]["mean"] == pytest.approx(2.0)  # best epoch on test: +2 over the chosen one
    assert rows["mmpareto"]["inflation"]["mean"] == pytest.approx(1.0)
    assert summary(with_record, settings()) == summary(without, settings())  # bml's numbers: test.best only
    tables = [selection_table(r, "avdigits", "embedded", "concat", settings()).rows for r in (with_record, without)]
    assert [row[1] for row in tables[0]] == [row[1] for row in tables[1]]  # bml's column: the same
    assert tables[1][0][2] == "not recorded" and tables[0][0][2].endswith("(seed 0)")


def test_kendall_tau_matches_a_hand_count_and_scipy():
    published, ours = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]  # one of the 6 pairs swapped: (5 - 1) / 6
    tau, p = kendall(published, ours)
    assert tau == pytest.approx(4 / 6) and p == pytest.approx(stats.kendalltau(published, ours).pvalue)
    assert kendall([1.0], [2.0]) == (None, None)


@pytest.mark.parametrize(
    "claim, key",
    [
        ({"method": "nope"}, "claims.bad"),
        ({"dataset": "nowhere"}, "claims.bad"),
        ({"protocol": "nothing"}, "claims.bad"),
        ({"fusion": "tensor"}, "claims.bad"),
        ({"metric": "probe_smell"}, "claims.bad"),
    ],
)
def test_a_claim_naming_what_does_not_exist_is_refused_with_its_key(tmp_path, claim, key):
    spec = {"statement": "s", "source": "paper", "dataset": "avdigits", "method": "opm", "baseline": "joint"}
    params = params_with(tmp_path, {"claims": {"bad": spec | claim}}, PAPER)
    with pytest.raises(ConfigError, match=key):
        load_claims(params)


def test_the_shipped_claims_load_and_name_only_what_exists():
    claims = load_claims(REPO / "params")
    ids = {c.id for c in claims.claims}
    assert {"avdigits_probe_gap", "balancebench/mmpareto/cremad", "ogm_ge_cvpr22/ogm_ge/cremad"} <= ids
    mmpareto = next(c for c in claims.claims if c.id == "balancebench/mmpareto/cremad")
    assert mmpareto.published == (79.97, 65.5) and any("same tensor" in t for t in mmpareto.caveats)
    # a published row bml does not run is not implemented; PMR and AGM are (bml/methods/pmr.py, agm.py)
    for c in claims.claims:
        assert c.implemented == (c.method not in PUBLISHED_TITLES), c.id
    assert next(c for c in claims.claims if c.id == "balancebench/pmr/cremad").implemented


class _Sections(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.ids.append(dict(attrs).get("id"))


@pytest.mark.slow
def test_the_report_opens_with_the_scorecard_and_survives_a_nan_in_one_finished_run(tmp_path):
    """Issue 21: a NaN in one finished run's metrics.json used to crash the whole report."""
    root = synthetic_runs(tmp_path / "results")
    path = root / "avdigits" / "embedded" / "concat" / "ogm" / "seed3" / "metrics.json"
    record = json.loads(path.read_text())
    record["test"]["best"]["acc"] = math.nan
    path.write_text(json.dumps(record))  # json writes NaN, as a diverged evaluation would leave it
    claims = load_claims(params_with(tmp_path, {"tables": {"paper": {"baseline": "joint"}}}, PAPER))
    out = tmp_path / "reports"
    result = build_report(root, out, PAPER, settings(), log=lambda _m: None, claims=claims)
    page = _Sections()
    page.feed((out / "index.html").read_text())
    assert page.ids[:2] == ["scorecard", "scorecard"]  # the section, then its verdict table
    assert page.ids.index("ranking") < page.ids.index("main_embedded_concat")
    assert result["scorecard/paper/mmpareto/avdigits"]["verdict"] == "reproduced"
    assert result["scorecard/paper/relearning/avdigits"]["seeds_needed"] > 2
    assert result["selection/avdigits/embedded/concat/joint"]["inflation_mean"] == pytest.approx(2.0)
    assert json.loads((out / "summary.json").read_text()) == result
    assert (out / "scorecard.md").read_text().startswith("# Reproduction scorecard")
    ogm = result["avdigits/embedded/concat/ogm"]
    assert ogm["n_seeds"] == 12 and math.isfinite(ogm["acc_mean"]) and ogm["probe_visual_mean"] == pytest.approx(60.0)
    assert f"{path}: test.best.acc is nan" in (out / "index.html").read_text()


def test_a_nan_metric_is_left_out_of_its_cell_and_named(tmp_path):
    root = synthetic_runs(tmp_path / "results")
    path = root / "avdigits" / "embedded" / "concat" / "ogm" / "seed3" / "metrics.json"
    record = json.loads(path.read_text())
    record["test"]["best"]["acc"] = math.inf
    path.write_text(json.dumps(record))
    runs, _ = load_runs(root)
    problems = drop_non_finite(runs)
    assert problems == [f"{path}: test.best.acc is inf; left out of the report"]
    ogm = summary(runs, settings())["avdigits/embedded/concat/ogm"]
    assert math.isfinite(ogm["acc_mean"]) and ogm["probe_visual_mean"] == pytest.approx(60.0)
    tables = build_tables(runs, PAPER, settings(), problems)
    assert problems[0] in tables[0].notes


def test_the_page_parsed_has_the_scorecard_section_first(tmp_path):
    runs, _ = load_runs(synthetic_runs(tmp_path / "results"))
    claims = load_claims(params_with(tmp_path, {"tables": {"paper": {"baseline": "joint"}}}, PAPER))
    groups = [("avdigits", "embedded", "concat")]
    card, judged = scorecard_tables(runs, PAPER, claims, settings(), groups, {"avdigits": ["audio", "visual"]})
    write_page(tmp_path / "index.html", build_tables(runs, PAPER, settings()), {}, [], len(runs), card)
    page = _Sections()
    page.feed((tmp_path / "index.html").read_text())
    assert page.ids[:2] == ["scorecard", "scorecard"]
    assert {"selection_avdigits_embedded_concat", "cost_avdigits_embedded_concat", "ranking"} <= set(page.ids)
    assert page.ids.index("ranking") < page.ids.index("main_embedded_concat")
    verdicts = verdict_summary(judged)
    assert verdicts["scorecard/paper/ogm/avdigits"]["verdict"] == "not reproduced"


@pytest.mark.slow
def test_the_workflow_refuses_a_bad_claim_when_it_parses_before_any_job(project_copy):
    claims = yaml.safe_load((project_copy / "params" / "claims.yaml").read_text())
    claims["claims"]["avdigits_probe_gap"]["method"] = "telepathy_only_ever"
    claims["claims"]["avdigits_probe_gap"]["dataset"] = "nowhere"
    (project_copy / "params" / "claims.yaml").write_text(yaml.safe_dump(claims))
    cmd = ["snakemake", "-s", str(project_copy / "Snakefile"), "--directory", str(project_copy), "-n"]
    proc = run(cmd, check=False)
    assert proc.returncode != 0
    assert "claims.avdigits_probe_gap: unknown dataset 'nowhere'" in proc.stdout + proc.stderr
    assert not (project_copy / "data").exists() and not (project_copy / "results").exists()  # no job ran
