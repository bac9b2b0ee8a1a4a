"""Statistics over timing samples, built on scipy.stats: medians with CIs, IQR, paired ratios, ratios over passes,
ratios of geometric means over seeds, power-law exponents."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def median_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """Distribution-free (order-statistic) CI of the median, via ``scipy.stats.quantile_test``.

    With too few samples for the requested confidence (n < 6 at 95%) the bounds are None:
    an honest "not enough rounds" rather than a falsely tight interval.
    """
    x = np.asarray(samples, dtype=float)
    if x.size < 2:
        return None, None
    ci = stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(confidence)
    return _finite(ci.low), _finite(ci.high)


def summarize(samples: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float | int | None]:
    """Median, IQR, min, max, n and the median's CI of ``samples``."""
    x = np.asarray(samples, dtype=float)
    lo, hi = median_ci(x, confidence)
    return {"median": float(np.median(x)), "iqr": float(stats.iqr(x)), "min": float(x.min()),
            "max": float(x.max()), "n": int(x.size), "ci_low": lo, "ci_high": hi}


def paired_ratio(variant: Sequence[float], reference: Sequence[float], confidence: float = CONFIDENCE,
                 n_resamples: int = 2000, seed: int = 0) -> dict[str, float | int | None]:
    """Ratio variant/reference from paired rounds, with a bootstrap CI over rounds.

    Round ``i`` of both cases ran back to back, so the per-round ratio cancels the machine's
    slow drift; the estimate is the median of per-round ratios, and the CI a percentile
    bootstrap of that median (resampling rounds). Needs at least 3 rounds for a CI.
    """
    v, r = np.asarray(variant, dtype=float), np.asarray(reference, dtype=float)
    n = min(v.size, r.size)
    ratios = v[:n] / r[:n]
    out: dict[str, float | int | None] = {"ratio": float(np.median(ratios)), "n": int(n),
                                          "ci_low": None, "ci_high": None}
    if n >= 3 and np.ptp(ratios) > 0:
        res = stats.bootstrap((ratios,), np.median, confidence_level=confidence, n_resamples=n_resamples,
                              method="percentile", random_state=np.random.default_rng(seed))
        out["ci_low"], out["ci_high"] = _finite(res.confidence_interval.low), _finite(res.confidence_interval.high)
    elif n >= 3:
        out["ci_low"] = out["ci_high"] = out["ratio"]
    return out


PRIOR_DF_MAX = 4  # most weight (in degrees of freedom) the run's pooled between-pass variance gets


def typical_variance(variances: Sequence[float], df: float) -> float | None:
    """The typical variance behind sample variances of ``df`` degrees of freedom each: Smyth's prior
    ``s0^2`` (Smyth 2004, limma), the exponential of their mean log, corrected for the log's bias
    under a scaled chi-square (``E log s^2 = log sigma^2 + digamma(df/2) - log(df/2)``).

    Used to pool the between-pass variances of a run's ratios: they differ by orders of magnitude
    (a loader ratio against an MLP's), and an arithmetic mean is set by the noisiest few, which
    widened every quiet ratio's interval (docs/statistics.md). Zero variances carry no scale and are
    left out; None when none is left."""
    from scipy.special import digamma

    v = np.asarray([x for x in variances if x is not None and x > 0], dtype=float)
    if v.size == 0 or df <= 0:
        return None
    return float(np.exp(np.log(v).mean() + math.log(df / 2) - digamma(df / 2)))


def _pass_log_ratio(v: np.ndarray, r: np.ndarray, rng: np.random.Generator, n_boot: int = 400) -> tuple[float, float]:
    """(log of the median paired ratio, its bootstrap sampling variance) of one pass's rounds."""
    lr = np.log(v / r)
    if lr.size < 2:
        return float(np.median(lr)), 0.0
    boot = np.median(lr[rng.integers(0, lr.size, size=(n_boot, lr.size))], axis=1)
    return float(np.median(lr)), float(boot.var(ddof=1))


def pass_ratio(variant: Sequence[Sequence[float]], reference: Sequence[Sequence[float]],
               prior_var: float | None = None, prior_df: float = 0.0, confidence: float = CONFIDENCE,
               seed: int = 0, predict: bool = True) -> dict[str, object]:
    """Ratio variant/reference over passes, with an interval meant to cover a rerun's ratio.

    ``variant[p]`` / ``reference[p]`` are the per-round medians of pass ``p``, paired by round
    (both ran back to back in fresh workers). Rounds only see the noise of one time window; the
    ratio between two different workloads also moves with the machine's state over minutes
    (Kalibera & Jones, ISMM 2013), which only repetitions at the pass level show. So this is a
    random-effects model on log ratios: pass ``p`` gives ``y_p = mu + b_p + e_p``, where ``b_p``
    is the pass (time-window) effect and ``e_p`` the within-pass sampling error.

    * estimate: ``exp(mean(y_p))``;
    * spread of a pass: ``s2 = var(y_p)`` (P-1 degrees of freedom), moderated towards
      ``prior_var`` (the typical between-pass variance of the run's other ratios, ``typical_variance``; weight
      ``min(prior_df, PRIOR_DF_MAX)``; Smyth's moderated t, 2004), and never below the
      within-pass sampling variance (from a bootstrap over rounds);
    * interval: a prediction interval for the ratio a rerun of the same protocol would report,
      ``mean(y) +- t(df) * sqrt(2 * s2 / P)`` (two independent estimates of ``P`` passes each),
      because the user reads a CI as "what I would see if I ran it again". With ``predict=False``
      (A/B: is this ratio itself different from 1?) the CI of the mean, ``t(df) * sqrt(s2 / P)``;
    * ``p_value``: two-sided t-test of ratio = 1 under the same model (None without between-pass
      information).

    With one pass and no prior there is no between-pass information: the interval is the
    within-run paired bootstrap (``paired_ratio``), and ``ci_method`` says so.

    Returns ``ratio``, ``ci_low``, ``ci_high``, ``n`` (rounds), ``passes``, ``pass_ratios``,
    ``pass_var`` (s2 before moderation, for pooling; None with one pass), ``sd_between``
    (estimated between-pass sd of the log ratio, beyond sampling noise), ``df``, ``ci_within``
    (the paired-round bootstrap over all rounds, as one window) and ``ci_method``.
    """
    passes = [(np.asarray(v, float), np.asarray(r, float)) for v, r in zip(variant, reference)]
    passes = [(v[:min(v.size, r.size)], r[:min(v.size, r.size)]) for v, r in passes]
    passes = [(v, r) for v, r in passes if v.size]
    if not passes:
        raise ValueError("pass_ratio needs at least one pass with paired rounds")
    allv = np.concatenate([v for v, _ in passes])
    allr = np.concatenate([r for _, r in passes])
    within = paired_ratio(allv, allr, confidence, seed=seed)
    rng = np.random.default_rng(seed)
    ys, ws = zip(*(_pass_log_ratio(v, r, rng) for v, r in passes))
    y, w = np.asarray(ys), float(np.mean(ws))
    P = y.size
    out: dict[str, object] = {"ratio": float(math.exp(y.mean())), "n": int(allv.size), "passes": P,
                              "pass_ratios": [float(math.exp(x)) for x in y], "pass_var": None,
                              "sd_between": None, "df": None, "ci_within": [within["ci_low"], within["ci_high"]],
                              "p_value": None}
    s2, df = (float(y.var(ddof=1)), float(P - 1)) if P >= 2 else (0.0, 0.0)
    if P >= 2:
        out["pass_var"] = s2
        out["sd_between"] = math.sqrt(max(s2 - w, 0.0))
    k = min(float(prior_df), PRIOR_DF_MAX) if prior_var is not None else 0.0
    if df + k == 0:
        out.update(ci_low=within["ci_low"], ci_high=within["ci_high"], ratio=within["ratio"],
                   ci_method="within-run: paired bootstrap over rounds of one pass (no between-run variance)")
        return out
    var = max((k * prior_var + df * s2) / (k + df) if k else s2, w)  # type: ignore[operator]
    se = math.sqrt(var / P)
    half = float(stats.t.ppf(0.5 + confidence / 2, df + k)) * se * (math.sqrt(2) if predict else 1.0)
    mid = y.mean()
    out["p_value"] = float(2 * stats.t.sf(abs(mid) / se, df + k)) if se > 0 else (1.0 if mid == 0 else 0.0)
    out.update(ci_low=_finite(math.exp(mid - half)), ci_high=_finite(math.exp(mid + half)), df=df + k,
               ci_method=("rerun interval" if predict else "CI of the mean ratio") + f": random effects over {P} pass(es)"
                         + (f", moderated by the run's pooled pass variance ({k:g} df)" if k else "")
                         + f", t with {df + k:g} df")
    return out


# ---------------------------------------------------------------- two-sample comparison (compare)

def mann_whitney(new: Sequence[float], base: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value of ``new`` vs ``base`` via ``scipy.stats.mannwhitneyu``.

    Rank-based, so one outlier round cannot fake a significant change. None with fewer than two
    samples on either side (no test possible).
    """
    a, b = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    if a.size < 2 or b.size < 2:
        return None
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    return _finite(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def cliffs_delta(new: Sequence[float], base: Sequence[float]) -> float | None:
    """Cliff's delta in [-1, 1]: P(new > base) - P(new < base); a rank effect size (0 = no shift)."""
    a, b = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    if a.size == 0 or b.size == 0:
        return None
    diff = np.sign(a[:, None] - b[None, :])
    return float(diff.mean())


def ratio_of_medians(new: Sequence[float], base: Sequence[float], confidence: float = CONFIDENCE,
                     n_resamples: int = 2000, seed: int = 0) -> dict[str, float | int | None]:
    """median(new) / median(base) with a percentile-bootstrap CI, resampling each side independently.

    Used across runs, where rounds are not paired. Needs at least 3 samples per side for a CI.
    """
    a, b = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    out: dict[str, float | int | None] = {"ratio": float(np.median(a) / np.median(b)), "n_new": int(a.size),
                                          "n_base": int(b.size), "ci_low": None, "ci_high": None}
    if a.size >= 3 and b.size >= 3:
        rng = np.random.default_rng(seed)
        ia = rng.integers(0, a.size, size=(n_resamples, a.size))
        ib = rng.integers(0, b.size, size=(n_resamples, b.size))
        boot = np.median(a[ia], axis=1) / np.median(b[ib], axis=1)
        alpha = (1 - confidence) / 2
        out["ci_low"], out["ci_high"] = (_finite(np.quantile(boot, alpha)), _finite(np.quantile(boot, 1 - alpha)))
    return out


# ---------------------------------------------------------------- step detection (history)

def noise_scale(y: Sequence[float]) -> float:
    """Robust per-point noise of a series: MAD of successive differences / sqrt(2) (steps barely move it)."""
    x = np.asarray(y, dtype=float)
    if x.size < 3:
        return 0.0
    return float(stats.median_abs_deviation(np.diff(x), scale="normal") / math.sqrt(2))


def _l1_cost_table(x: np.ndarray) -> np.ndarray:
    """cost[i, j] = sum |x[i:j] - median(x[i:j])| for all 0 <= i < j <= n."""
    n = x.size
    cost = np.zeros((n + 1, n + 1))
    for i in range(n):
        for j in range(i + 1, n + 1):
            seg = x[i:j]
            cost[i, j] = np.abs(seg - np.median(seg)).sum()
    return cost


def detect_steps(y: Sequence[float], penalty: float | None = None, min_step: float = 0.0,
                 log: bool = True, min_size: int = 2) -> list[dict[str, float | int]]:
    """Piecewise-constant fit of a series (in the spirit of asv's step detection); its steps.

    Minimises the L1 deviation from per-segment medians plus ``penalty`` per extra segment by
    dynamic programming (exact; O(n^2) segments, fine for a few hundred runs). L1 and medians
    make one wild run a point, not a step. With ``log`` the fit is on log(y), so a step is a ratio
    and the same penalty works for microseconds and seconds. The default penalty,
    ``4 * noise * log(n+1)``, grows with the series' own noise (``noise_scale``) and length, so
    flat noisy histories stay one segment. Steps whose ratio is within ``min_step`` (e.g. 0.02)
    of 1 are merged away. Segments shorter than ``min_size`` are not allowed except the last, so a
    single wild run in the middle is an outlier while the newest run may still start a level.

    Returns one dict per step: ``index`` (first point of the new level), ``before`` and ``after``
    (segment medians, in y units) and ``ratio`` = after / before.
    """
    raw = np.asarray(y, dtype=float)
    if raw.size < 2:
        return []
    if log and np.any(raw <= 0):
        raise ValueError("detect_steps(log=True) needs positive values")
    x = np.log(raw) if log else raw
    n = x.size
    if penalty is None:
        sigma = noise_scale(x)
        floor = 1e-3 if log else 1e-3 * (np.median(np.abs(x)) or 1.0)
        penalty = 4.0 * max(sigma, floor) * math.log(n + 1)
    cost = _l1_cost_table(x)
    best = np.full(n + 1, np.inf)
    best[0] = -penalty
    prev = np.zeros(n + 1, dtype=int)
    for j in range(1, n + 1):
        cand = best[:j] + cost[:j, j] + penalty
        if j < n:
            cand[max(j - min_size + 1, 0):] = np.inf  # segment ending at j too short
        prev[j] = int(np.argmin(cand))
        best[j] = cand[prev[j]]
    bounds, j = [], n
    while j > 0:
        bounds.append((prev[j], j))
        j = prev[j]
    bounds.reverse()
    levels = [float(np.median(raw[a:b])) for a, b in bounds]
    # merge steps smaller than min_step, re-measuring the merged level each time
    merged = True
    while merged and len(bounds) > 1:
        merged = False
        for k in range(1, len(bounds)):
            if abs(levels[k] / levels[k - 1] - 1) < min_step if log else abs(levels[k] - levels[k - 1]) < min_step:
                bounds[k - 1:k + 1] = [(bounds[k - 1][0], bounds[k][1])]
                levels = [float(np.median(raw[a:b])) for a, b in bounds]
                merged = True
                break
    return [{"index": int(bounds[k][0]), "before": levels[k - 1], "after": levels[k],
             "ratio": levels[k] / levels[k - 1] if levels[k - 1] else float("inf")}
            for k in range(1, len(bounds))]


def mean_ci(samples: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float | int | None]:
    """Mean of ``samples`` (e.g. one value per training seed) with a Student-t CI via ``scipy.stats.t``.

    Seeds are few (default 3), so an order-statistic CI of the median would be undefined; the t-interval
    is the usual spread a reader expects across independent seeds. CI is None below 2 samples.
    """
    x = np.asarray([v for v in samples if math.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "std": None, "n": 0}
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "ci_low": None, "ci_high": None, "std": None, "n": n}
    std = float(x.std(ddof=1))
    if std == 0:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "std": 0.0, "n": n}
    lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return {"mean": mean, "ci_low": float(lo), "ci_high": float(hi), "std": std, "n": n}


def ratio_of_geomeans(new: Sequence[float], base: Sequence[float], paired: bool = False,
                      confidence: float = CONFIDENCE) -> dict[str, float | int | bool | None]:
    """Ratio of geometric means new/base (e.g. a loss over training seeds) with a Student-t CI on the logs.

    ``paired``: ``new[i]`` and ``base[i]`` share a seed, so per-seed log ratios cancel what the seed
    fixes (``scipy.stats.ttest_rel``); used unless those log ratios are all equal. Otherwise Welch's
    unpaired interval (``scipy.stats.ttest_ind``, unequal variances). Values must be positive. The CI
    is None with fewer than 2 values on a side, or when neither side varies; ``paired`` in the result
    says which interval was used.
    """
    a, b = np.log(np.asarray(new, dtype=float)), np.log(np.asarray(base, dtype=float))
    if a.size == 0 or b.size == 0:
        raise ValueError("ratio_of_geomeans needs at least one value per side")
    out: dict[str, float | int | bool | None] = {"ratio": float(np.exp(a.mean() - b.mean())), "n_new": int(a.size),
                                                 "n_base": int(b.size), "ci_low": None, "ci_high": None,
                                                 "paired": False}
    if a.size < 2 or b.size < 2 or (a.std() == 0 and b.std() == 0):
        return out
    out["paired"] = paired and bool(np.std(a - b) > 0)
    with warnings.catch_warnings():  # near-identical values (e.g. seeds of a zero init) make scipy warn, not fail
        warnings.simplefilter("ignore", RuntimeWarning)
        if out["paired"]:
            ci = stats.ttest_rel(a, b).confidence_interval(confidence)
        else:
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    out["ci_low"], out["ci_high"] = float(np.exp(ci.low)), float(np.exp(ci.high))
    return out


def loglog_slope(x: Sequence[float], y: Sequence[float],
                 confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None] | None:
    """Power-law exponent k of y ~ x^k: least squares on logs (``scipy.stats.linregress``).

    Returns (k, ci_low, ci_high), the CI a Student-t interval on the slope (n - 2 df) from 3 points
    up, None bounds from 2 points (the line through them); None with fewer than 2 points or one x.
    """
    xs, ys = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if xs.size < 2 or np.ptp(xs) == 0:
        return None
    if xs.size == 2:
        k = float((ys[1] - ys[0]) / (xs[1] - xs[0]))
        return k, None, None
    res = stats.linregress(xs, ys)
    t = stats.t.ppf(0.5 + confidence / 2, xs.size - 2)
    return float(res.slope), float(res.slope - t * res.stderr), float(res.slope + t * res.stderr)
