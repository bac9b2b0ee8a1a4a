"""Statistics over timing samples, built on scipy.stats: medians with CIs, IQR, paired ratios."""
from __future__ import annotations

import math
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
