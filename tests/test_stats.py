"""Statistics: median CIs, IQR and paired-round ratios (seeded data, no timers)."""
import numpy as np

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
    unpaired = np.median(var) / np.median(ref)
    assert pr["n"] == 12 and abs(unpaired - 1.2) >= 0 and np.isfinite(unpaired)


def test_paired_ratio_needs_three_rounds_for_ci():
    pr = paired_ratio([1.0, 1.1], [1.0, 1.0])
    assert pr["ci_low"] is None and pr["n"] == 2
