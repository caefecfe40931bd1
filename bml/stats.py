"""Statistics over seeds for the result tables: summaries, paired tests, Holm correction, seed-count warnings.

Each method is trained with several seeds; a table compares each method with a baseline on the seeds both
have. The tables name the test, correct for multiple comparisons (Holm), give confidence intervals, and
warn when the number of seeds cannot reach alpha (docs/methods.md, "Statistics"):
with n paired seeds an exact sign-based test can never give a two-sided p below 2 / 2**n, so five seeds
cannot give p < 0.05 (0.0625), six can (0.03125).

Significance means p < alpha, strictly, everywhere in this module (can_reach, holm, compare_to_baseline).

All tests and corrections come from scipy.stats and statsmodels; this module only chooses, pairs and
reports. References: Holm, Scand. J. Statist. 6 (1979); Lakens, Front. Psychol. 4:863 (2013) for d_z.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

TESTS = ("t", "wilcoxon", "permutation")

# How each test is named in a table footnote.
TEST_NAMES = {
    "t": "paired t-test",
    "wilcoxon": "exact Wilcoxon signed-rank test",
    "permutation": "exact sign-flip permutation test",
}


def _check_test(test: str) -> None:
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}: choose one of {', '.join(TESTS)}")


def _as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
    """A 1-D float array; NaN or inf would silently poison every mean and p-value, so refuse them."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf: {array.tolist()}; drop the failed runs first")
    return array


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def summarize(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean, spread and two confidence intervals of one method's per-seed values.

    `ci_t` is mean ± t_{(1+confidence)/2, n-1} · s / sqrt(n). `ci_boot` is scipy's BCa bootstrap
    interval of the mean (it corrects the percentile interval for bias and skew); when all values are
    equal the bootstrap distribution is a single point and BCa is undefined, so it is (mean, mean), and
    should BCa still come back NaN the percentile interval is used. With fewer than 2 values there is no
    spread: std and both intervals are None (and mean is None with no values at all).
    """
    x = _as_finite_array(values, "values")
    n = len(x)
    summary: dict = {"n": n, "mean": float(np.mean(x)) if n else None, "std": None, "ci_t": None, "ci_boot": None}
    if n < 2:
        return summary
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1))
    half_width = float(stats.t.ppf((1 + confidence) / 2, df=n - 1)) * std / math.sqrt(n)
    summary["std"] = std
    summary["ci_t"] = (mean - half_width, mean + half_width)
    summary["ci_boot"] = _bootstrap_ci(x, confidence, n_resamples, seed)
    return summary


def _bootstrap_ci(x: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    """BCa interval of the mean, with the degenerate cases handled (see summarize)."""
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    for method in ("BCa", "percentile"):
        result = stats.bootstrap(
            (x,),
            _mean,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            break
    return (low, high)


def paired_test(
    values: Sequence[float], baseline: Sequence[float], test: str = "t", n_resamples: int = 10_000, seed: int = 0
) -> dict:
    """Two-sided paired test of `values` against `baseline`, paired by position (one pair per seed).

    - "t": scipy.stats.ttest_rel. Constant non-zero differences give p = 0.0 (t is infinite).
    - "wilcoxon": scipy.stats.wilcoxon with its defaults: zero differences are dropped (Wilcoxon's own
      treatment), the exact null distribution is used for n <= 50 without ties or zeros, scipy's exact
      permutation version with ties or zeros up to n = 13, the normal approximation beyond.
    - "permutation": scipy.stats.permutation_test with permutation_type="samples" (swapping the two
      values of a pair flips the sign of its difference), statistic the mean difference; exact when
      2**n <= n_resamples, otherwise `n_resamples` random sign flips seeded with `seed`.

    All differences exactly zero give p = 1.0 for every test: there is no evidence of any difference,
    where scipy would give NaN (t) or warn. `d_z` is Cohen's d for paired data, mean_diff / std_diff.
    """
    _check_test(test)
    x = _as_finite_array(values, "values")
    y = _as_finite_array(baseline, "baseline")
    if len(x) != len(y):
        raise ValueError(f"values and baseline must pair up one to one: {len(x)} values, {len(y)} baseline values")
    n = len(x)
    diff = x - y
    result: dict = {
        "n": n,
        "mean_diff": float(np.mean(diff)) if n else None,
        "std_diff": None,
        "p": None,
        "d_z": None,
        "test": test,
    }
    if n < 2:
        result["reason"] = f"{n} paired seed(s): a paired test needs at least 2"
        return result
    std_diff = float(np.std(diff, ddof=1))
    result["std_diff"] = std_diff
    if std_diff > 0:
        result["d_z"] = result["mean_diff"] / std_diff
    if np.all(diff == 0):
        result["p"] = 1.0
        return result
    if test == "t":
        p = stats.ttest_rel(x, y).pvalue
    elif test == "wilcoxon":
        p = stats.wilcoxon(x, y).pvalue
    else:
        p = stats.permutation_test(
            (x, y),
            _mean_difference,
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        ).pvalue
    result["p"] = float(p)
    return result


def min_p(n: int, test: str) -> float:
    """The smallest two-sided p-value `test` can give with n pairs: the floor no effect size can beat.

    For the exact Wilcoxon and sign-flip tests it is the two most extreme of the 2**n sign patterns,
    2 / 2**n (n = 5: 0.0625, n = 6: 0.03125). The t-test has no floor (0.0). Fewer than 2 pairs give no
    test at all (1.0). A randomized permutation test (2**n > n_resamples) has the floor
    2 / (n_resamples + 1) instead, below 0.0002 at the default 10_000, so it is ignored here.
    """
    _check_test(test)
    if n < 2:
        return 1.0
    if test == "t":
        return 0.0
    return min(1.0, 2.0 / 2.0**n)


def can_reach(n: int, test: str, alpha: float) -> bool:
    """Whether `test` with n pairs can give p < alpha at all.

    Strict, like significance: a floor exactly at alpha (n = 5 with alpha = 0.0625) cannot be significant.
    """
    return min_p(n, test) < alpha


def seed_warning(n: int, test: str, alpha: float) -> str | None:
    """A one-sentence table footnote when n seeds cannot reach alpha with `test`; None when they can."""
    _check_test(test)
    if n < 2:
        return f"fewer than 2 seeds ({n}): no test"
    if can_reach(n, test, alpha):
        return None
    return f"with {n} seeds the {TEST_NAMES[test]} cannot give p < {alpha:g} (smallest p {min_p(n, test):.4g})"


def holm(pvalues: Sequence[float | None], alpha: float = 0.05) -> tuple[list[float | None], list[bool]]:
    """Holm step-down adjusted p-values and reject flags, in input order.

    None marks a comparison with no test; it stays None / False and is not counted in the family size.
    The adjusted values come from statsmodels (method="holm"); a comparison is rejected when its adjusted
    p < alpha, strictly. statsmodels' own reject flags use <= (they reject p = alpha), which would
    disagree with can_reach and with "p < alpha" in the tables.
    """
    tested = [i for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    reject = [False] * len(pvalues)
    if not tested:
        return adjusted, reject
    raw = np.array([pvalues[i] for i in tested], dtype=float)
    if np.any(np.isnan(raw)) or np.any((raw < 0) | (raw > 1)):
        raise ValueError(f"p-values must lie in [0, 1] (None for no test), got {list(pvalues)}")
    _, corrected, _, _ = multipletests(raw, alpha=alpha, method="holm")
    for i, p_adj in zip(tested, corrected, strict=True):
        adjusted[i] = float(p_adj)
        reject[i] = bool(p_adj < alpha)
    return adjusted, reject


def compare_to_baseline(
    runs: dict[str, dict[int, float]], baseline: str, test: str = "t", alpha: float = 0.05
) -> dict[str, dict]:
    """Every method against the baseline on the seeds both have, Holm-corrected across the methods.

    `runs` maps a method name to {seed: value}. Each method's entry holds `summary` (summarize over all
    its seeds), `seeds` (the sorted paired seeds), `paired` (paired_test on those), `p_holm`,
    `significant` (p_holm < alpha), `warning` (seed_warning for the paired n, or None) and
    `baseline: False`. The baseline's entry holds its `summary` and `baseline: True`. A method with no
    seeds in common (or none at all) gets n 0, p None and no Holm share rather than an exception.
    """
    _check_test(test)
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not among the methods in runs: {sorted(runs)}")
    base = runs[baseline]
    results: dict[str, dict] = {baseline: {"baseline": True, "summary": summarize([base[s] for s in sorted(base)])}}
    methods = [name for name in runs if name != baseline]
    for name in methods:
        method_runs = runs[name] or {}
        seeds = sorted(set(method_runs) & set(base))
        results[name] = {
            "baseline": False,
            "summary": summarize([method_runs[s] for s in sorted(method_runs)]),
            "seeds": seeds,
            "paired": paired_test([method_runs[s] for s in seeds], [base[s] for s in seeds], test=test),
            "warning": seed_warning(len(seeds), test, alpha),
        }
    p_holm, significant = holm([results[name]["paired"]["p"] for name in methods], alpha=alpha)
    for name, p_adj, rejected in zip(methods, p_holm, significant, strict=True):
        results[name]["p_holm"] = p_adj
        results[name]["significant"] = rejected
    return results


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
        shift, crit = effect_size * math.sqrt(n), float(stats.t.ppf(1 - alpha / 2, n - 1))
        power = float(stats.norm.cdf(shift - crit) + stats.norm.cdf(-shift - crit))
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
