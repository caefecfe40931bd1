"""The reproduction scorecard: a verdict per published claim, with the papers' test-set selection measured beside
bml's (bml/selection.py), the methods' ranking against the published one (bml/ranking.py), and each method's
cost beside its gain (bml/cost.py).

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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

from bml.catalog import NO_FUSION
from bml.config import ConfigError, read_yaml
from bml.cost import cost_table
from bml.methods import PUBLISHED_TITLES, fusion_names, method_spec
from bml.ranking import ranking_table
from bml.results import Run, by_seed, method_name
from bml.selection import selection_table
from bml.stats import TEST_NAMES, holm, paired_test, power_to_see, seeds_needed
from bml.table_format import Table
from bml.table_rows import DATASET_NAMES, MISSING, Settings, fusion_of

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
                        fusion_of(method, src["fusion"]),
                        method,
                        baseline,
                        fusion_of(baseline, src["fusion"]),
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
                fusion_of(method, fusion),
                method,
                baseline,
                fusion_of(baseline, fusion),
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
