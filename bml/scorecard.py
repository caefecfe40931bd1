"""The reproduction scorecard: a verdict per published claim, the papers' test-set selection measured beside
bml's, the methods' ranking against the published one, and each method's cost beside its gain.

A claim (params/claims.yaml) is a paper's statement that a method beats a baseline on one metric of one
dataset under one protocol and fusion; its published numbers are read from params/published.yaml, never
restated. A claim is checked against bml's runs of that setting, paired by seed:

- *reproduced*: same direction, significant after Holm across the claims of the same source and dataset (one
  column of the paper's table), and the published effect inside bml's interval of the effect or below it;
- *smaller*: significant, same direction, the published effect above the interval;
- *not reproduced*: significant the other way, or not significant although the test had the power
  (thresholds.power) to see the published effect;
- *inconclusive*: not significant and without that power; it says how many seeds would have it;
- *not run*: no paired runs of that setting (or bml does not implement the method).
A claim from a published table (tables: in claims.yaml) is the row against the baseline in whichever direction
the paper's numbers go: a method published below the baseline is checked for being below it.

Power is a paired t-test's (statsmodels' TTestPower on the per-seed differences, their observed standard
deviation) at the report's alpha. The interval is the t interval of the mean paired difference at 1 - alpha.

The papers selected their numbers on the test set (the best epoch on test, one seed); each run's metrics.json
keeps its test accuracy per epoch in `test_by_epoch`, which no selection reads, so the scorecard can show what
that selection adds. bml's own numbers here come from `Run.test` only (the checkpoint chosen on validation).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps
from statsmodels.stats.power import TTestPower

from bml.catalog import NO_FUSION
from bml.config import ConfigError, read_yaml
from bml.methods import PUBLISHED_TITLES, fusion_names, method_spec
from bml.results import METRICS, Run, by_seed, cell_label, method_name
from bml.stats import TEST_NAMES, holm, paired_test, summarize
from bml.table_format import Table
from bml.tables import DATASET_NAMES, MISSING, Settings, fusion_of, method_order

VERDICTS = ("reproduced", "smaller", "not reproduced", "inconclusive", "not run")
CLAIM_KEYS = {"statement", "source", "dataset", "protocol", "fusion", "method", "baseline", "metric"}
TABLE_KEYS = {"baseline", "metric", "skip"}


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    source: str  # a source id of params/published.yaml: its numbers, its selection
    dataset: str
    protocol: str
    fusion: str  # the method's fusion head ("none" for a uni-modal method)
    method: str
    baseline: str
    baseline_fusion: str
    metric: str
    published: tuple[float, float]  # (method, baseline) as published
    implemented: bool = True  # False: a published row bml does not run
    caveats: tuple[str, ...] = ()

    @property
    def published_effect(self) -> float:
        return self.published[0] - self.published[1]

    @property
    def family(self) -> tuple[str, str]:
        """Holm's family: the claims of one source on one dataset (a column of the paper's table)."""
        return self.source, self.dataset


@dataclass
class Claims:
    claims: list[Claim]
    power: float = 0.8  # thresholds.power
    unread: list[dict] = field(default_factory=list)  # tables of the seed papers that could not be read, and why


def _fusion_of(method: str, source_fusion: str) -> str:
    return fusion_of(method, source_fusion)  # none, the method's own head, or the source's fusion


def _number(published: dict, where: str, source: str, method: str, dataset: str, metric: str) -> float:
    try:
        return float(published[source]["results"][method][dataset][metric])
    except (KeyError, TypeError):
        raise ConfigError(
            f"{where}: params/published.yaml has no {metric} of {method!r} on {dataset!r} in source {source!r}"
        ) from None


def _check_names(where: str, params_dir: Path, dataset: str, protocol: str, fusions: Sequence[str], methods) -> None:
    for kind, name in (("datasets", dataset), ("protocols", protocol)):
        if not (params_dir / kind / f"{name}.yaml").is_file():
            choices = sorted(p.stem for p in (params_dir / kind).glob("*.yaml"))
            raise ConfigError(f"{where}: unknown {kind[:-1]} {name!r}; choose one of {choices}")
    for fusion in fusions:
        if fusion not in fusion_names():
            raise ConfigError(f"{where}: unknown fusion {fusion!r}; choose one of {fusion_names()}")
    for method in methods:
        try:
            method_spec(method)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None


def _caveats(caveats: dict, source: str, method: str, claim_id: str) -> tuple[str, ...]:
    keys = (source, f"{source}/{method}", claim_id)
    return tuple(text for key in keys for text in ([caveats[key]] if key in caveats else []))


def load_claims(params_dir: str | Path, published: dict | None = None) -> Claims:
    """params/claims.yaml, every name checked against params/ and every number found in published.yaml.

    A claim naming a dataset, protocol, fusion, method or number that does not exist is refused with its key
    (ConfigError), so the workflow refuses it when it parses, before any job.
    """
    params_dir = Path(params_dir)
    path = params_dir / "claims.yaml"
    if not path.is_file():
        return Claims([])
    published = read_yaml(params_dir / "published.yaml") if published is None else published
    raw = read_yaml(path) or {}
    unknown = set(raw) - {"thresholds", "tables", "claims", "caveats", "unread"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
    caveats = raw.get("caveats") or {}
    claims: list[Claim] = []
    for source, spec in (raw.get("tables") or {}).items():
        where = f"{path}: tables.{source}"
        if source not in published:
            raise ConfigError(f"{where}: no such source in params/published.yaml; choose one of {sorted(published)}")
        if set(spec) - TABLE_KEYS:
            raise ConfigError(f"{where}: unknown key(s) {sorted(set(spec) - TABLE_KEYS)}")
        src, baseline, metric = published[source], spec["baseline"], spec.get("metric", "acc")
        rows = {m: per for m, per in src["results"].items() if m != baseline and m not in (spec.get("skip") or [])}
        for method, per in rows.items():
            implemented = method not in PUBLISHED_TITLES
            for dataset in per:
                if implemented:
                    _check_names(
                        f"{where}.{method}", params_dir, dataset, src["protocol"], [src["fusion"]], [method, baseline]
                    )
                if metric not in per[dataset] or metric not in src["results"].get(baseline, {}).get(dataset, {}):
                    continue
                claim_id = f"{source}/{method}/{dataset}"
                claims.append(
                    Claim(
                        claim_id,
                        f"{method_name(method)} against {method_name(baseline)}, {DATASET_NAMES.get(dataset, dataset)}",
                        source,
                        dataset,
                        src["protocol"],
                        _fusion_of(method, src["fusion"]),
                        method,
                        baseline,
                        _fusion_of(baseline, src["fusion"]),
                        metric,
                        (
                            _number(published, where, source, method, dataset, metric),
                            _number(published, where, source, baseline, dataset, metric),
                        ),
                        implemented,
                        _caveats(caveats, source, method, claim_id),
                    )
                )
    for claim_id, spec in (raw.get("claims") or {}).items():
        where = f"{path}: claims.{claim_id}"
        if set(spec) - CLAIM_KEYS:
            raise ConfigError(f"{where}: unknown key(s) {sorted(set(spec) - CLAIM_KEYS)}")
        missing = {"statement", "source", "dataset", "method", "baseline"} - set(spec)
        if missing:
            raise ConfigError(f"{where}: missing key(s) {sorted(missing)}")
        source = spec["source"]
        if source not in published:
            raise ConfigError(f"{where}: source {source!r} is not in params/published.yaml")
        src, method, baseline, dataset = published[source], spec["method"], spec["baseline"], spec["dataset"]
        protocol, fusion, metric = (
            spec.get("protocol", src["protocol"]),
            spec.get("fusion", src["fusion"]),
            spec.get("metric", "acc"),
        )
        _check_names(where, params_dir, dataset, protocol, [fusion], [method, baseline])
        claims.append(
            Claim(
                claim_id,
                spec["statement"],
                source,
                dataset,
                protocol,
                _fusion_of(method, fusion),
                method,
                baseline,
                _fusion_of(baseline, fusion),
                metric,
                (
                    _number(published, where, source, method, dataset, metric),
                    _number(published, where, source, baseline, dataset, metric),
                ),
                True,
                _caveats(caveats, source, method, claim_id),
            )
        )
    power = float((raw.get("thresholds") or {}).get("power", 0.8))
    if not 0 < power < 1:
        raise ConfigError(f"{path}: thresholds.power must lie in (0, 1), got {power}")
    return Claims(claims, power, list(raw.get("unread") or []))


# ---- verdicts ------------------------------------------------------------------------------------------


def power_to_see(effect: float, std: float, n: int, alpha: float) -> float:
    """Power of a two-sided paired t-test with n seeds to see a true mean difference `effect`, given the
    differences' standard deviation."""
    if n < 2:
        return 0.0
    if std == 0:
        return 1.0 if effect != 0 else 0.0
    effect_size = abs(effect) / std
    power = float(TTestPower().power(effect_size=effect_size, nobs=n, alpha=alpha, alternative="two-sided"))
    if math.isnan(power):  # scipy's noncentral t gives NaN far in its tail, where the power is all but 1
        shift, crit = effect_size * math.sqrt(n), float(sps.t.ppf(1 - alpha / 2, n - 1))
        power = float(sps.norm.cdf(shift - crit) + sps.norm.cdf(-shift - crit))
    return power


def seeds_needed(effect: float, std: float, alpha: float, power: float) -> int | None:
    """The fewest seeds whose paired t-test has `power` to see `effect`; None when the effect is 0."""
    if effect == 0:
        return None
    if std == 0:
        return 2
    try:
        n = math.ceil(
            TTestPower().solve_power(effect_size=abs(effect) / std, alpha=alpha, power=power, alternative="two-sided")
        )
    except (ValueError, RuntimeError):
        n = 2
    n = max(int(n), 2)
    while power_to_see(effect, std, n, alpha) < power:  # the solver's root may round below the target
        n += 1
    return n


def verdict(
    diffs: Sequence[float],
    p_holm: float | None,
    published_effect: float,
    alpha: float,
    power: float,
    family_size: int = 1,
) -> dict:
    """The verdict on one claim from the per-seed differences (method - baseline), Holm's p for it and the
    published difference; with the numbers it rests on. Power and the seeds needed are at the level the claim
    must clear within its Holm family, alpha / family_size (Holm's first step: the bound every member can rely
    on), so "not reproduced" never rests on power the corrected test does not have."""
    x = np.asarray(diffs, dtype=float)
    n = len(x)
    out: dict = {"n": n, "published_effect": published_effect, "effect": None, "ci": None, "std": None}
    out |= {"p_holm": p_holm, "power": None, "seeds_needed": None}
    if n == 0:
        return out | {"verdict": "not run", "why": "no paired runs of this setting"}
    out["effect"] = float(x.mean())
    if n < 2:
        return out | {"verdict": "inconclusive", "why": "1 seed: no test"}
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * std / math.sqrt(n)
    out |= {"std": std, "ci": (out["effect"] - half, out["effect"] + half)}
    level = out["level"] = alpha / max(family_size, 1)
    out["power"] = power_to_see(published_effect, std, n, level)
    significant = p_holm is not None and p_holm < alpha
    same_way = np.sign(out["effect"]) == np.sign(published_effect) and published_effect != 0
    if significant and same_way:
        inside = published_effect <= out["ci"][1] if published_effect > 0 else published_effect >= out["ci"][0]
        if inside:
            return out | {"verdict": "reproduced", "why": "the published effect is inside bml's interval or below it"}
        return out | {"verdict": "smaller", "why": "the published effect is above bml's interval"}
    if significant:
        return out | {"verdict": "not reproduced", "why": "significant in the other direction"}
    if out["power"] >= power:
        return out | {"verdict": "not reproduced", "why": f"power {out['power']:.2f} to see the published effect"}
    out["seeds_needed"] = seeds_needed(published_effect, std, level, power)
    need = f"{out['seeds_needed']} seeds" if out["seeds_needed"] else "no seed count (published effect 0)"
    return out | {"verdict": "inconclusive", "why": f"power {out['power']:.2f}; {need} for power {power:g}"}


def judge(claims: Claims, runs: list[Run], settings: Settings) -> list[tuple[Claim, dict]]:
    """Every claim's verdict from bml's runs, Holm-corrected within each claim's family."""
    tested = []
    for claim in claims.claims:
        ours = by_seed(runs, (claim.dataset, claim.protocol, claim.fusion, claim.method), claim.metric, settings.which)
        base = by_seed(
            runs, (claim.dataset, claim.protocol, claim.baseline_fusion, claim.baseline), claim.metric, settings.which
        )
        seeds = sorted(set(ours) & set(base)) if claim.implemented else []
        diffs = [ours[s] - base[s] for s in seeds]
        p = paired_test([ours[s] for s in seeds], [base[s] for s in seeds], settings.test)["p"] if seeds else None
        tested.append((claim, seeds, diffs, p))
    p_holm: dict[str, float | None] = {}
    family_size = {c.family: sum(1 for d, *_ in tested if d.family == c.family) for c, *_ in tested}
    for family in sorted({c.family for c, *_ in tested}):
        members = [(c, p) for c, _, _, p in tested if c.family == family]
        adjusted, _ = holm([p for _, p in members], settings.alpha)
        p_holm |= {c.id: a for (c, _), a in zip(members, adjusted, strict=True)}
    judged = []
    for claim, seeds, diffs, _ in tested:
        size = family_size[claim.family]
        v = verdict(diffs, p_holm[claim.id], claim.published_effect, settings.alpha, claims.power, size)
        if not claim.implemented:
            v["why"] = f"bml does not implement {method_name(claim.method)}"
        v["seeds"] = seeds
        judged.append((claim, v))
    return judged


def _interval(v: dict) -> str:
    if v["effect"] is None:
        return MISSING
    if v["ci"] is None:
        return f"{v['effect']:+.1f}"
    return f"{v['effect']:+.1f} ({v['ci'][0]:+.1f} to {v['ci'][1]:+.1f})"  # no brackets: it is a link's text


def verdict_text(v: dict, expected_seeds: Sequence[int]) -> str:
    """'reproduced', 'inconclusive: 12 seeds needed', with '(4 of 6 seeds)' when the claim's runs are partial."""
    text = v["verdict"]
    if v["verdict"] == "inconclusive" and v["seeds_needed"]:
        text += f": {v['seeds_needed']} seeds needed"
    if v["n"] and expected_seeds and v["n"] < len(expected_seeds):
        text += f" ({v['n']} of {len(expected_seeds)} seeds)"
    return text


def stats_table_name(claim: Claim) -> str:
    """The significance table of the method's fusion group that holds this claim's numbers (bml/tables.py)."""
    fusion = claim.fusion if claim.fusion != NO_FUSION else claim.baseline_fusion
    return f"stats_{claim.metric}_{claim.dataset}_{claim.protocol}_{fusion}"


def verdict_table(judged: list[tuple[Claim, dict]], claims: Claims, settings: Settings) -> Table:
    header = ["Claim", "Setting", "Published Δ", "bml Δ (interval)", "n", "p (Holm)", "Power", "Verdict", "Caveat"]
    table = Table("scorecard", "Reproduction scorecard: a verdict per published claim", header, [])
    for i, (claim, v) in enumerate(judged):
        setting = f"{DATASET_NAMES.get(claim.dataset, claim.dataset)}, {claim.protocol}, {claim.fusion}, {claim.metric}"
        table.rows.append(
            [
                f"{claim.statement} ({claim.source})",
                setting,
                f"{claim.published_effect:+.2f} ({claim.published[0]:.2f} vs {claim.published[1]:.2f})",
                _interval(v),
                str(v["n"]),
                f"{v['p_holm']:.2g}" if v["p_holm"] is not None else MISSING,
                f"{v['power']:.2f}" if v["power"] is not None else MISSING,
                verdict_text(v, settings.seeds),
                " ".join(claim.caveats) or "",
            ]
        )
        if v["n"] and (claim.metric == "acc" or claim.metric.startswith("probe_")):
            table.links[(i, 3)] = stats_table_name(claim)
    confidence = 100 * (1 - settings.alpha)
    table.notes = [
        f"Δ: method − baseline, paired by seed; bml's interval: the {confidence:g}% t interval of the mean paired "
        f"difference; p (Holm): {TEST_NAMES[settings.test]} over seeds, Holm-corrected across the claims of one "
        f"source on one dataset; alpha {settings.alpha} (params/params.yaml report.alpha).",
        "reproduced: same direction, significant after Holm, the published Δ inside bml's interval or below it; "
        "smaller: significant, same direction, the published Δ above the interval; not reproduced: significant "
        f"the other way, or not significant although the power to see the published Δ was at least {claims.power:g} "
        "(params/claims.yaml thresholds.power); inconclusive: not significant and less power, with the seeds a "
        "paired t-test would need (statsmodels TTestPower at alpha divided by the size of the claim's Holm family, "
        "the observed std of the differences); not run: "
        "no paired runs of that setting.",
        f"bml's numbers: the checkpoint of the best validation accuracy ({settings.which}); the published ones were "
        "selected as their source says (params/published.yaml), most of them on the test set.",
    ]
    for entry in claims.unread:
        table.notes.append(f"Not read: {entry.get('paper')}: {entry.get('why')}.")
    return table


# ---- the papers' selection, measured ---------------------------------------------------------------------


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


def _trained_methods(runs: list[Run], dataset: str, protocol: str, fusion: str) -> list[tuple[str, str]]:
    mine = [r for r in runs if r.dataset == dataset and r.protocol == protocol and r.fusion in (NO_FUSION, fusion)]
    found = {(r.method, r.fusion) for r in mine}
    return [(m, f) for m in method_order({m for m, _ in found}) for f in (NO_FUSION, fusion) if (m, f) in found]


def selection_rows(runs: list[Run], dataset: str, protocol: str, fusion: str, settings: Settings) -> list[dict]:
    """Per method: bml's number (best on validation) and the papers' (best epoch on test) per seed, and the
    selection's inflation (papers' − bml's) with its t interval."""
    rows = []
    for method, f in _trained_methods(runs, dataset, protocol, fusion):
        cell = [r for r in runs if r.cell == (dataset, protocol, f, method)]
        ours = by_seed(runs, (dataset, protocol, f, method), "acc", settings.which)
        theirs = {r.seed: v for r in cell if (v := best_on_test(r)) is not None}
        paired = sorted(set(ours) & set(theirs))
        gap = summarize([theirs[s] - ours[s] for s in paired], confidence=1 - settings.alpha) if paired else None
        rows.append({"method": method, "fusion": f, "ours": ours, "theirs": theirs, "inflation": gap})
    return rows


def _mean_std(values: Sequence[float]) -> str:
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
            table.rows.append([label, _mean_std(row["ours"].values()), "not recorded", "not recorded", MISSING, "0"])
            continue
        first = min(theirs)
        values = list(theirs.values())
        spread = f"{_mean_std(values)} [{min(values):.1f}, {max(values):.1f}]"
        inflation = MISSING
        if gap and gap["mean"] is not None:
            inflation = f"{gap['mean']:+.1f}" + (
                f" [{gap['ci_t'][0]:+.1f}, {gap['ci_t'][1]:+.1f}]" if gap["ci_t"] else ""
            )
        row_cells = [label, _mean_std(row["ours"].values()), f"{theirs[first]:.1f} (seed {first})", spread]
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


# ---- ranking agreement -----------------------------------------------------------------------------------


def kendall(published: Sequence[float], ours: Sequence[float]) -> tuple[float | None, float | None]:
    """Kendall's tau (tau-b, scipy) between two orders of the same methods, and its p; None with fewer than 2
    methods or a constant order."""
    if len(published) < 2:
        return None, None
    result = sps.kendalltau(published, ours)
    if not math.isfinite(result.statistic):
        return None, None
    return float(result.statistic), float(result.pvalue)


def ranking_rows(runs: list[Run], published: dict, settings: Settings) -> list[dict]:
    rows = []
    for source_id, source in published.items():
        datasets = sorted({d for per in source["results"].values() for d in per})
        for dataset in datasets:
            pairs = []
            for method, per in source["results"].items():
                if method in PUBLISHED_TITLES or "acc" not in per.get(dataset, {}):
                    continue
                cell = (dataset, source["protocol"], _fusion_of(method, source["fusion"]), method)
                ours = by_seed(runs, cell, "acc", settings.which)
                if ours:
                    pairs.append((method, per[dataset]["acc"], float(np.mean(list(ours.values())))))
            tau, p = kendall([p for _, p, _ in pairs], [o for _, _, o in pairs])
            rows.append(
                {"source": source_id, "dataset": dataset, "methods": [m for m, *_ in pairs], "tau": tau, "p": p}
            )
    return rows


def ranking_table(runs: list[Run], published: dict, settings: Settings) -> Table:
    table = Table(
        "ranking",
        "Ranking agreement: Kendall's tau between the published order of the methods and bml's",
        ["Source", "Dataset", "Methods in both", "Kendall's tau", "p"],
        [],
    )
    for row in ranking_rows(runs, published, settings):
        table.rows.append(
            [
                row["source"],
                DATASET_NAMES.get(row["dataset"], row["dataset"]),
                ", ".join(method_name(m) for m in row["methods"]) or MISSING,
                f"{row['tau']:+.2f}" if row["tau"] is not None else MISSING,
                f"{row['p']:.2g}" if row["p"] is not None else MISSING,
            ]
        )
    table.notes = [
        "Kendall's tau-b (scipy.stats.kendalltau) between each method's published accuracy and bml's mean over "
        "seeds under the source's protocol and fusion, over the methods both have; p: scipy's two-sided p.",
        f"{MISSING}: fewer than 2 methods of that table ran in bml (or all tied).",
    ]
    return table


# ---- cost beside gain ------------------------------------------------------------------------------------


def step_time_ms(run: Run) -> float | None:
    values = [row["step_time_ms"] for row in run.history if "step_time_ms" in row]
    return float(np.mean(values)) if values else None


def run_time_s(run: Run) -> float | None:
    total = (run_record(run).get("timings_s") or {}).get("total")
    return float(total) if total is not None else None


def cost_rows(runs: list[Run], dataset: str, protocol: str, fusion: str, modalities, settings: Settings) -> list[dict]:
    """Per balancing method: step-time ratio to the baseline (paired by seed), run time, and its gains over the
    baseline in accuracy and in each modality's probe."""
    cell = lambda m: (dataset, protocol, fusion, m)  # noqa: E731
    base_runs = {r.seed: r for r in runs if r.cell == cell(settings.baseline)}
    rows = []
    for method, f in _trained_methods(runs, dataset, protocol, fusion):
        if f == NO_FUSION:
            continue
        mine = {r.seed: r for r in runs if r.cell == cell(method)}
        ratios = [
            a / b
            for s in sorted(set(mine) & set(base_runs))
            if (a := step_time_ms(mine[s])) is not None and (b := step_time_ms(base_runs[s])) and b > 0
        ]
        times = [t for r in mine.values() if (t := run_time_s(r)) is not None]
        gains = {}
        for key in ["acc"] + [f"probe_{m}" for m in modalities]:
            ours, base = (
                by_seed(runs, cell(method), key, settings.which),
                by_seed(runs, cell(settings.baseline), key, settings.which),
            )
            paired = sorted(set(ours) & set(base))
            gains[key] = float(np.mean([ours[s] - base[s] for s in paired])) if paired else None
        rows.append({"method": method, "ratios": ratios, "times": times, "gains": gains})
    return rows


def cost_table(runs: list[Run], dataset: str, protocol: str, fusion: str, modalities, settings: Settings) -> Table:
    header = ["Method", "step time / baseline", "run time (s)", "Δ acc"] + [f"Δ probe {m}" for m in modalities]
    table = Table(
        f"cost_{dataset}_{protocol}_{fusion}",
        f"Cost beside gain, {DATASET_NAMES.get(dataset, dataset)}, protocol {protocol}, fusion {fusion}",
        header,
        [],
    )
    for row in cost_rows(runs, dataset, protocol, fusion, modalities, settings):
        gains = [f"{g:+.1f}" if g is not None else MISSING for g in row["gains"].values()]
        table.rows.append([method_name(row["method"]), _mean_std(row["ratios"]), _mean_std(row["times"])] + gains)
    table.notes = [
        f"Step time: the mean training-step wall time over epochs (history.csv step_time_ms) divided by "
        f"{method_name(settings.baseline)}'s of the same seed, mean ± std over seeds; run time: metrics.json "
        "timings_s.total; wall times depend on the machine and its load, so compare them within one report.",
        f"Δ: mean paired difference from {method_name(settings.baseline)} (test, {settings.which} checkpoint).",
    ]
    return table


# ---- the whole scorecard ---------------------------------------------------------------------------------


def scorecard_tables(
    runs: list[Run], published: dict, claims: Claims, settings: Settings, groups, modalities_by_dataset
) -> tuple[list[Table], list[tuple[Claim, dict]]]:
    """The verdicts, then per (dataset, protocol, fusion) group the selection and cost tables, then the ranking."""
    judged = judge(claims, runs, settings)
    tables = [verdict_table(judged, claims, settings)]
    for dataset, protocol, fusion in groups:
        tables.append(selection_table(runs, dataset, protocol, fusion, settings))
        tables.append(cost_table(runs, dataset, protocol, fusion, modalities_by_dataset[dataset], settings))
    tables.append(ranking_table(runs, published, settings))
    return tables, judged


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


def verdict_summary(judged: list[tuple[Claim, dict]]) -> dict[str, dict]:
    """summary.json entries, one per claim, so that `dvc metrics diff` shows a verdict that changed."""
    out = {}
    for claim, v in judged:
        entry = {"verdict": v["verdict"], "verdict_code": VERDICTS.index(v["verdict"]), "n_seeds": v["n"]}
        for key in ("effect", "p_holm", "power", "seeds_needed"):
            if v[key] is not None:
                entry[key] = round(v[key], 5) if isinstance(v[key], float) else v[key]
        entry["published_effect"] = round(claim.published_effect, 3)
        out[f"scorecard/{claim.id}"] = entry
    return out
