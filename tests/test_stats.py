"""bml.stats: known answers for the summaries, paired tests, seed floors and Holm correction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bml.stats import TESTS, can_reach, compare_to_baseline, holm, min_p, paired_test, seed_warning, summarize

# --- paired tests: power and calibration ---------------------------------------------------------------


@pytest.mark.parametrize("test", TESTS)
def test_true_shift_is_detected_by_every_test(test):
    rng = np.random.default_rng(1)
    baseline = rng.normal(70.0, 2.0, size=10)
    values = baseline + 1.0 + rng.normal(0.0, 0.5, size=10)
    result = paired_test(values, baseline, test=test)
    assert result["n"] == 10
    assert result["test"] == test
    assert result["mean_diff"] == pytest.approx(np.mean(values - baseline))
    assert 0.5 < result["mean_diff"] < 1.5
    assert result["p"] < 0.05


def _null_pvalues(test: str, repetitions: int, n: int, n_resamples: int = 10_000) -> np.ndarray:
    """p-values of `test` over repetitions where values and baseline come from the same distribution."""
    rng = np.random.default_rng(2024)
    pvalues = []
    for i in range(repetitions):
        baseline = rng.normal(0.0, 1.0, size=n)
        values = rng.normal(0.0, 1.0, size=n)
        pvalues.append(paired_test(values, baseline, test=test, n_resamples=n_resamples, seed=i)["p"])
    return np.array(pvalues)


@pytest.mark.parametrize(
    ("test", "repetitions", "n", "n_resamples", "fine_grained"),
    [
        ("t", 400, 10, 10_000, True),
        # Exact, but the rank sum takes few values: the two central ones (about 8% under the null for
        # n = 10) both give p = 1.0, so its p-values sit below the uniform CDF near the top (conservative).
        ("wilcoxon", 300, 10, 10_000, False),
        ("permutation", 200, 8, 10_000, True),  # exact: all 256 sign patterns
        ("permutation", 200, 10, 199, True),  # randomized: 1024 patterns > 199 resamples
    ],
)
def test_no_shift_gives_uniform_pvalues(test, repetitions, n, n_resamples, fine_grained):
    pvalues = _null_pvalues(test, repetitions, n, n_resamples)
    assert np.all((pvalues > 0) & (pvalues <= 1))
    assert 0.01 <= np.mean(pvalues < 0.05) <= 0.10
    # Empirical CDF at the deciles: never clearly above u (that would be too many false positives), and
    # not far below it either (a test that always said p = 1 would fail here).
    for u in np.arange(1, 10) / 10:
        assert -0.12 <= np.mean(pvalues <= u) - u <= 0.06, u
    if fine_grained:
        assert stats.kstest(pvalues, "uniform").pvalue > 0.01


# --- summarize --------------------------------------------------------------------------------------------


def test_summarize_t_interval_by_hand():
    summary = summarize([1.0, 2.0, 3.0])
    # t quantile with 2 degrees of freedom in closed form: t_q = (2q - 1) * sqrt(2 / (4 q (1 - q))).
    q = 0.975
    t_q = (2 * q - 1) * math.sqrt(2 / (4 * q * (1 - q)))
    assert t_q == pytest.approx(4.303, abs=1e-3)  # the printed table value
    half_width = t_q * 1.0 / math.sqrt(3)  # s = 1 for [1, 2, 3]
    assert summary["n"] == 3
    assert summary["mean"] == 2.0
    assert summary["std"] == pytest.approx(1.0)
    assert summary["ci_t"] == pytest.approx((2.0 - half_width, 2.0 + half_width))
    low, high = summary["ci_boot"]
    assert 1.0 <= low <= 2.0 <= high <= 3.0  # a bootstrap mean can't leave the data's range


def test_summarize_bootstrap_is_seeded_and_close_to_t_for_normal_data():
    values = np.random.default_rng(3).normal(10.0, 2.0, size=40)
    summary = summarize(values, seed=7)
    assert summary["ci_boot"] == summarize(values, seed=7)["ci_boot"]
    assert summary["ci_boot"] != summarize(values, seed=8)["ci_boot"]
    low, high = summary["ci_boot"]
    t_low, t_high = summary["ci_t"]
    assert low < summary["mean"] < high
    # For 40 normal values the two intervals should nearly agree (BCa is a bit narrower than t).
    assert abs(low - t_low) < 0.2 * (t_high - t_low)
    assert abs(high - t_high) < 0.2 * (t_high - t_low)


def test_summarize_confidence_level_widens_interval():
    values = [1.0, 2.5, 2.0, 4.0, 3.0]
    narrow, wide = summarize(values, confidence=0.8), summarize(values, confidence=0.99)
    assert wide["ci_t"][0] < narrow["ci_t"][0] and narrow["ci_t"][1] < wide["ci_t"][1]


def test_summarize_degenerate_cases():
    one = summarize([0.7])
    assert one == {"n": 1, "mean": 0.7, "std": None, "ci_t": None, "ci_boot": None}
    none = summarize([])
    assert none["n"] == 0 and none["mean"] is None and none["ci_boot"] is None
    # All equal: BCa is undefined, the interval collapses onto the value without NaN.
    equal = summarize([0.5, 0.5, 0.5, 0.5])
    assert equal["std"] == 0.0
    assert equal["ci_t"] == (0.5, 0.5)
    assert equal["ci_boot"] == (0.5, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        summarize([1.0, float("nan")])


# --- paired_test: by hand and edge cases ------------------------------------------------------------------


def test_d_z_by_hand():
    # Differences [2, 3, 2, 3]: mean 2.5, sample sd sqrt(4 * 0.25 / 3) = sqrt(1/3).
    result = paired_test([3.0, 5.0, 4.0, 6.0], [1.0, 2.0, 2.0, 3.0])
    assert result["mean_diff"] == pytest.approx(2.5)
    assert result["std_diff"] == pytest.approx(math.sqrt(1 / 3))
    assert result["d_z"] == pytest.approx(2.5 * math.sqrt(3))
    # Negative when the method is worse than the baseline.
    assert paired_test([1.0, 2.0, 2.0, 3.0], [3.0, 5.0, 4.0, 6.0])["d_z"] == pytest.approx(-2.5 * math.sqrt(3))


@pytest.mark.parametrize("test", TESTS)
def test_all_zero_differences_give_p_one(test):
    values = [0.8, 0.7, 0.9, 0.75, 0.85]
    result = paired_test(values, list(values), test=test)
    assert result["p"] == 1.0
    assert result["mean_diff"] == 0.0 and result["std_diff"] == 0.0
    assert result["d_z"] is None


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy warns that the sd is 0
def test_constant_nonzero_differences():
    baseline = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    values = [b + 0.25 for b in baseline]  # binary fractions: every difference is exactly 0.25
    assert paired_test(values, baseline, test="t")["p"] == 0.0  # t is infinite
    tied = paired_test(values, baseline, test="wilcoxon")  # all ranks tied: scipy's permutation version
    assert tied["p"] == pytest.approx(2 / 2**6)
    assert tied["d_z"] is None


@pytest.mark.parametrize("test", TESTS)
def test_fewer_than_two_pairs_give_no_test(test):
    one = paired_test([1.0], [0.0], test=test)
    assert one["p"] is None and one["d_z"] is None and one["std_diff"] is None
    assert one["mean_diff"] == 1.0
    assert "at least 2" in one["reason"]
    assert paired_test([], [], test=test)["n"] == 0


def test_paired_test_refuses_bad_input():
    with pytest.raises(ValueError, match="t, wilcoxon, permutation"):
        paired_test([1.0, 2.0], [0.0, 1.0], test="mann-whitney")
    with pytest.raises(ValueError, match="pair up"):
        paired_test([1.0, 2.0, 3.0], [0.0, 1.0])


# --- seed floors ----------------------------------------------------------------------------------------


def test_min_p_matches_methods_md():
    for test in ("wilcoxon", "permutation"):
        assert min_p(5, test) == 0.0625
        assert min_p(6, test) == 0.03125
        assert min_p(2, test) == 0.5
        assert not can_reach(5, test, 0.05)
        assert can_reach(6, test, 0.05)
        assert not can_reach(5, test, 0.0625)  # a p of exactly alpha is not p < alpha
    for n in (2, 3, 5, 6, 30):
        assert min_p(n, "t") == 0.0
        assert can_reach(n, "t", 0.05)
    assert min_p(1, "t") == 1.0 and not can_reach(1, "t", 0.05)
    with pytest.raises(ValueError, match="wilcoxon"):
        min_p(5, "sign")


@pytest.mark.parametrize("n", [4, 5, 6, 8])
@pytest.mark.parametrize("test", ["wilcoxon", "permutation"])
def test_scipy_reaches_min_p_with_all_positive_differences(test, n):
    baseline = np.zeros(n)
    values = np.arange(1.0, n + 1.0)  # distinct positive differences: the most extreme sign pattern
    assert paired_test(values, baseline, test=test)["p"] == pytest.approx(min_p(n, test), rel=1e-12)
    assert paired_test(-values, baseline, test=test)["p"] == pytest.approx(min_p(n, test), rel=1e-12)


def test_seed_warning():
    warning = seed_warning(5, "wilcoxon", 0.05)
    assert warning == "with 5 seeds the exact Wilcoxon signed-rank test cannot give p < 0.05 (smallest p 0.0625)"
    assert "sign-flip" in seed_warning(4, "permutation", 0.05)
    assert seed_warning(6, "wilcoxon", 0.05) is None
    assert seed_warning(6, "wilcoxon", 0.01) is not None
    assert seed_warning(3, "t", 0.05) is None
    assert seed_warning(1, "t", 0.05).startswith("fewer than 2 seeds")
    assert seed_warning(0, "wilcoxon", 0.05).startswith("fewer than 2 seeds")


# --- Holm -----------------------------------------------------------------------------------------------


def test_holm_by_hand():
    # Sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> raised to 0.06 (monotone).
    adjusted, reject = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert reject == [True, False, False, True]


def test_holm_keeps_none_in_place_and_out_of_the_family():
    adjusted, reject = holm([None, 0.01, None, 0.04, 0.03, 0.005], alpha=0.05)
    assert adjusted[0] is None and adjusted[2] is None
    assert adjusted[1::2] == pytest.approx([0.03, 0.06, 0.02])
    assert adjusted[3] == pytest.approx(0.06)
    assert reject == [False, True, False, False, False, True]
    assert holm([None, None]) == ([None, None], [False, False])
    assert holm([]) == ([], [])


def test_holm_caps_at_one_and_is_strict_at_alpha():
    adjusted, _ = holm([0.6, 0.7])
    assert adjusted == [1.0, 1.0]
    # Both adjust to exactly 0.05: not p < 0.05. statsmodels' own flags use <= and reject both.
    adjusted, reject = holm([0.025, 0.04], alpha=0.05)
    assert adjusted == [0.05, 0.05]
    assert reject == [False, False]
    assert list(multipletests([0.025, 0.04], alpha=0.05, method="holm")[0]) == [True, True]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.01, float("nan")])


# --- compare_to_baseline ----------------------------------------------------------------------------------


def _runs() -> dict[str, dict[int, float]]:
    base = {0: 1.0, 1: 2.0, 2: 1.5, 3: 2.5}
    diffs = {0: 1.0, 1: 1.2, 2: 0.8, 3: 1.1}
    better = {s: base[s] + diffs[s] for s in base} | {4: 100.0, 5: 100.0}  # seeds 4, 5 have no baseline
    same = {0: 1.1, 1: 1.9, 2: 1.5, 3: 2.6}
    return {"base": base, "better": better, "missing": {}, "same": same}


def test_compare_to_baseline_pairs_on_shared_seeds():
    results = compare_to_baseline(_runs(), "base", test="t", alpha=0.05)
    assert set(results) == {"base", "better", "missing", "same"}
    assert results["base"]["baseline"] is True
    assert results["base"]["summary"]["n"] == 4 and results["base"]["summary"]["mean"] == pytest.approx(1.75)

    better = results["better"]
    assert better["baseline"] is False
    assert better["seeds"] == [0, 1, 2, 3]
    assert better["paired"]["n"] == 4
    assert better["paired"]["mean_diff"] == pytest.approx(1.025)
    assert better["summary"]["n"] == 6  # the summary covers all its seeds
    assert better["summary"]["mean"] == pytest.approx((2.0 + 3.2 + 2.3 + 3.6 + 200.0) / 6)
    assert better["warning"] is None  # the t-test has no floor

    # Holm family: "better" and "same" (the method with no seeds has no test).
    p_better, p_same = better["paired"]["p"], results["same"]["paired"]["p"]
    expected, _ = holm([p_better, p_same])
    assert [better["p_holm"], results["same"]["p_holm"]] == pytest.approx(expected)
    assert better["p_holm"] == pytest.approx(min(1.0, 2 * min(p_better, p_same)))
    assert better["significant"] is True
    assert results["same"]["significant"] is False


def test_compare_to_baseline_method_without_seeds():
    missing = compare_to_baseline(_runs(), "base", test="wilcoxon")["missing"]
    assert missing["summary"]["n"] == 0
    assert missing["seeds"] == []
    assert missing["paired"]["n"] == 0 and missing["paired"]["p"] is None
    assert missing["p_holm"] is None and missing["significant"] is False
    assert missing["warning"].startswith("fewer than 2 seeds")


def test_compare_to_baseline_warns_about_the_seed_floor():
    results = compare_to_baseline(_runs(), "base", test="wilcoxon", alpha=0.05)
    assert "with 4 seeds" in results["better"]["warning"]
    assert results["better"]["paired"]["p"] == pytest.approx(0.125)  # 4 positive differences: 2 / 2**4
    assert results["better"]["significant"] is False


def test_compare_to_baseline_refuses_unknown_names():
    with pytest.raises(ValueError, match="'ogm'.*base"):
        compare_to_baseline(_runs(), "ogm")
    with pytest.raises(ValueError, match="choose one of"):
        compare_to_baseline(_runs(), "base", test="z")
