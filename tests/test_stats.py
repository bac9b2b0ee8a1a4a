"""Statistics: median CIs, IQR and paired-round ratios (seeded data, no timers)."""
import numpy as np
import pytest

from sciml_bench.stats import median_ci, paired_ratio, summarize


def test_median_ci_covers_true_median_at_nominal_rate():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        lo, hi = median_ci(rng.lognormal(0.0, 0.3, size=15))  # true median exp(0) = 1
        hits += lo <= 1.0 <= hi
    assert 0.93 <= hits / 400 <= 0.995, f"order-statistic CI coverage {hits / 400:.3f} should be ~95%"


def test_too_few_samples_give_no_ci_rather_than_a_fake_one():
    assert median_ci([1.0, 2.0, 3.0]) == (None, None)
    s = summarize([1.0, 2.0, 3.0])
    assert s["median"] == 2.0 and s["ci_low"] is None and s["n"] == 3


def test_summarize_iqr():
    s = summarize(np.arange(1, 101, dtype=float))
    assert s["iqr"] == 49.5 and s["min"] == 1 and s["max"] == 100


def test_paired_ratio_cancels_common_drift():
    rng = np.random.default_rng(1)
    drift = np.exp(rng.normal(0, 0.3, size=12))  # machine speed changes 0.5-2x from round to round
    ref = 1.0 * drift * np.exp(rng.normal(0, 0.01, 12))
    var = 1.2 * drift * np.exp(rng.normal(0, 0.01, 12))
    pr = paired_ratio(var, ref)
    assert abs(pr["ratio"] - 1.2) < 0.02, pr
    assert pr["ci_low"] <= 1.2 <= pr["ci_high"] and pr["ci_high"] - pr["ci_low"] < 0.05, \
        f"paired CI should be tight despite 0.3 log-sd drift: {pr}"
    # unpaired, the same rounds' drift lands in the interval: pairing is what makes it tight
    from sciml_bench.stats import ratio_of_medians

    unpaired = ratio_of_medians(var, ref)
    log_width = lambda d: np.log(d["ci_high"] / d["ci_low"])  # noqa: E731
    assert pr["n"] == 12 and log_width(unpaired) > 5 * log_width(pr), (unpaired, pr)


def test_paired_ratio_needs_three_rounds_for_ci():
    pr = paired_ratio([1.0, 1.1], [1.0, 1.0])
    assert pr["ci_low"] is None and pr["n"] == 2


# ---------------------------------------------------------------- compare / history statistics

from sciml_bench.stats import cliffs_delta, detect_steps, mann_whitney, noise_scale, ratio_of_medians  # noqa: E402


def test_mann_whitney_separates_shifted_samples_and_not_identical_ones():
    rng = np.random.default_rng(2)
    a = rng.lognormal(0, 0.05, 40)
    assert mann_whitney(a * 1.2, a) < 1e-6, "a 20% shift on 40 samples must be significant"
    assert mann_whitney(a, a) > 0.5
    assert mann_whitney([1.0], [2.0, 3.0]) is None, "no test with one sample"
    assert mann_whitney([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_cliffs_delta_bounds():
    assert cliffs_delta([3, 4], [1, 2]) == 1.0 and cliffs_delta([1, 2], [3, 4]) == -1.0
    assert cliffs_delta([1, 2], [1, 2]) == 0.0


def test_ratio_of_medians_ci_covers_truth():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(100):
        r = ratio_of_medians(rng.lognormal(np.log(1.1), 0.05, 12), rng.lognormal(0, 0.05, 12))
        hits += r["ci_low"] <= 1.1 <= r["ci_high"]
    assert hits >= 85, f"bootstrap ratio CI covered the true 1.1 only {hits}/100 times"
    assert ratio_of_medians([2.0, 2.0], [1.0, 1.0])["ci_low"] is None, "no CI from 2 samples"


def test_detect_steps_finds_planted_step_and_ignores_noise_and_outliers():
    rng = np.random.default_rng(4)
    y = np.r_[rng.lognormal(0, 0.02, 15), rng.lognormal(np.log(1.15), 0.02, 10)]
    steps = detect_steps(y, min_step=0.02)
    assert len(steps) == 1 and steps[0]["index"] == 15 and 1.1 < steps[0]["ratio"] < 1.2, steps
    false = sum(bool(detect_steps(rng.lognormal(0, 0.03, 30), min_step=0.02)) for _ in range(100))
    assert false <= 2, f"{false}/100 flat noisy series got a step"
    spike = np.r_[np.ones(10), 5.0, np.ones(10)]
    assert detect_steps(spike) == [], "one wild run in the middle is an outlier, not two steps"
    assert detect_steps(np.r_[np.ones(10), 1.3])[0]["index"] == 10, "the newest run may start a level"
    assert noise_scale(np.r_[np.zeros(10), np.ones(10)]) == 0.0, "a clean step is not noise"


def _simulated_run(rng, k, passes, rounds, log_ratio, tau, sigma):
    """k (variant, reference) ratios of one run: per pass a shared between-pass shift ~ N(0, tau) per ratio,
    per round a drift common to both cases (paired rounds cancel it) and independent noise ~ N(0, sigma)."""
    out = []
    for _ in range(k):
        v, r = [], []
        for _ in range(passes):
            b, drift = rng.normal(0, tau), rng.normal(0, 0.1, rounds)
            r.append(np.exp(drift + rng.normal(0, sigma, rounds)))
            v.append(np.exp(log_ratio + b + drift + rng.normal(0, sigma, rounds)))
        out.append((v, r))
    return out


def _first_ratio_ci(run):
    """pass_ratio of the run's first ratio, moderated by the others' pass variances (as records.add_ratios does)."""
    from sciml_bench.stats import pass_ratio, typical_variance

    others = [pass_ratio(v, r)["pass_var"] for v, r in run[1:]]
    return pass_ratio(*run[0], prior_var=typical_variance(others, 1), prior_df=len(others))


def test_pass_ratio_covers_truth_and_rerun_at_nominal_rate_with_known_between_pass_variance():
    """Seeded simulation: 2 passes x 4 rounds, between-pass sd 5 % (larger than the within-pass noise).
    The rerun interval must cover the true ratio and an independent rerun's ratio in >= 90 % of 500
    draws; the within-run paired CI, blind to the pass effect, must not (that was the bug)."""
    rng = np.random.default_rng(7)
    truth, n = 1.3, 500
    cover_truth = cover_rerun = within_rerun = 0
    for _ in range(n):
        a = _first_ratio_ci(_simulated_run(rng, 3, 2, 4, np.log(truth), 0.05, 0.02))
        b = _first_ratio_ci(_simulated_run(rng, 3, 2, 4, np.log(truth), 0.05, 0.02))
        cover_truth += a["ci_low"] <= truth <= a["ci_high"]
        cover_rerun += a["ci_low"] <= b["ratio"] <= a["ci_high"]
        within_rerun += a["ci_within"][0] <= b["ratio"] <= a["ci_within"][1]
    assert cover_truth / n >= 0.90, f"rerun interval covers the true ratio in {cover_truth / n:.1%} (< 90%)"
    assert 0.90 <= cover_rerun / n <= 0.995, f"rerun interval covers a rerun in {cover_rerun / n:.1%}"
    assert within_rerun / n < 0.75, f"within-run CI covers a rerun in {within_rerun / n:.1%}: the test is too easy"


def test_pass_ratio_with_one_pass_is_the_within_run_ci_and_says_so():
    from sciml_bench.stats import pass_ratio

    pr = pass_ratio([[1.2, 1.25, 1.22, 1.21]], [[1.0, 1.01, 0.99, 1.0]])
    assert pr["passes"] == 1 and pr["pass_var"] is None and "within-run" in pr["ci_method"]
    assert [pr["ci_low"], pr["ci_high"]] == pr["ci_within"] and 1.15 < pr["ratio"] < 1.3


# ---------------------------------------------------------------- training seeds and scaling fits

def test_ratio_of_geomeans_pairs_seeds_else_welch():
    from sciml_bench.stats import mean_ci, ratio_of_geomeans

    rng = np.random.default_rng(8)
    seed_effect = np.exp(rng.normal(0, 0.5, 5))  # a seed moves both cases' loss alike
    base = 1.0 * seed_effect * np.exp(rng.normal(0, 0.02, 5))
    new = 2.0 * seed_effect * np.exp(rng.normal(0, 0.02, 5))
    paired, welch = ratio_of_geomeans(new, base, paired=True), ratio_of_geomeans(new, base)
    assert paired["paired"] and not welch["paired"]
    assert paired["ratio"] == welch["ratio"] and abs(paired["ratio"] - 2.0) < 0.1, paired
    assert paired["ci_low"] <= 2.0 <= paired["ci_high"] and welch["ci_low"] <= 2.0 <= welch["ci_high"]
    assert paired["ci_high"] / paired["ci_low"] < 1.2 < welch["ci_high"] / welch["ci_low"], \
        f"the seed effect widens the unpaired interval only: {paired} {welch}"
    d = mean_ci(np.log(new) - np.log(base))
    assert np.allclose([paired["ci_low"], paired["ci_high"]], np.exp([d["ci_low"], d["ci_high"]])), \
        "paired: the t-interval of the mean per-seed log ratio"
    assert ratio_of_geomeans([2.0], [1.0, 1.1])["ci_low"] is None, "no CI from one seed"
    same = ratio_of_geomeans([2.0, 2.0], [1.0, 1.0], paired=True)
    assert same["ratio"] == 2.0 and same["ci_low"] is None


def test_loglog_slope_recovers_a_power_law():
    from sciml_bench.stats import loglog_slope

    x = np.array([16.0, 32.0, 64.0, 128.0, 256.0])
    rng = np.random.default_rng(9)
    k, lo, hi = loglog_slope(x, 3.0 * x ** 2 * np.exp(rng.normal(0, 0.05, x.size)))
    assert lo < 2.0 < hi and abs(k - 2.0) < 0.1, (k, lo, hi)
    assert loglog_slope([1.0, 2.0], [1.0, 4.0]) == (2.0, None, None), "two points: the line, no CI"
    assert loglog_slope([2.0, 2.0], [1.0, 4.0]) is None and loglog_slope([1.0], [1.0]) is None


def test_typical_variance_recovers_the_scale_of_chi_square_variances_and_ignores_a_loud_few():
    """Smyth's s0^2: sample variances of 3 df drawn around sigma^2 = 0.01 give back 0.01; a few
    variances 1000x larger move it far less than they move the mean."""
    from sciml_bench.stats import typical_variance

    rng = np.random.default_rng(3)
    s2 = 0.01 * rng.chisquare(3, 4000) / 3
    assert typical_variance(s2, 3) == pytest.approx(0.01, rel=0.05)
    loud = np.concatenate([s2[:60], [10.0] * 3])
    assert typical_variance(loud, 3) < 0.05 < float(np.mean(loud)), "three loud ratios set the mean, not s0^2"
    assert typical_variance([0.0, None], 3) is None and typical_variance([0.01], 0) is None
