"""Ratios in words: the one way tables, bullets, charts, claims and the CLI say "faster" or "slower"."""
from __future__ import annotations

import math
import statistics

# kind -> (word when the ratio is above 1, word when below 1); ratios are always variant / reference
WORDS = {"time": ("slower", "faster"), "memory": ("more memory", "less memory"),
         "throughput": ("more throughput", "less throughput")}


def _factor(r: float) -> float:
    """The ratio as a factor >= 1, so that a number is never below 1 next to its word."""
    return r if r >= 1 else 1 / r


def ratio_words(ratio: float | None, lo: float | None = None, hi: float | None = None, kind: str = "time",
                ci: bool = True) -> str:
    """``1.36x slower [1.20-1.50]`` / ``1.60x faster [1.40-1.80]``: never ``0.59x faster``.

    ``ratio`` (and its CI ``lo``-``hi``) is variant / reference (time, memory or throughput).
    Below 1 it is inverted and named by the other word, its CI with it. A CI that includes 1
    says so in words instead of mixing directions ("no clear difference: ...").
    """
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return "-"
    up, down = WORDS[kind]
    word = up if ratio >= 1 else down
    head = f"{_factor(ratio):.2f}x {word}" if round(ratio, 2) != 1 else f"same {kind} (1.00x)"
    if not ci or lo is None or hi is None or lo <= 0:
        return head
    if lo <= 1 <= hi:
        return (f"no clear difference: {head}, CI {_factor(lo):.2f}x {up if lo >= 1 else down} "
                f"to {_factor(hi):.2f}x {up if hi >= 1 else down}")
    a, b = sorted((_factor(lo), _factor(hi)))
    return f"{head} [{a:.2f}-{b:.2f}]"


def significant(lo: float | None, hi: float | None) -> bool:
    """Whether a ratio's CI excludes 1."""
    return lo is not None and hi is not None and not lo <= 1 <= hi


def resolvable(cis: list[tuple[float | None, float | None]]) -> float | None:
    """The smallest effect a study's run could resolve, as a fraction (0.08: "resolves ≥ 8 %").

    A ratio r with the CI r ×/÷ f (symmetric on the log axis, as the rerun interval is) excludes 1
    exactly when r > f or r < 1/f, so a case's interval resolves effects beyond f - 1; the study's
    is the median over its variant cases' intervals. None without any CI."""
    logs = [math.log(hi / lo) / 2 for lo, hi in cis if lo and hi and lo > 0 and hi >= lo]
    return math.exp(statistics.median(logs)) - 1 if logs else None


def at_least(effect: float | None) -> str:
    """``≥ 8 %`` for a resolvable effect of 0.08 (never below 1 %), "-" without one."""
    return "-" if effect is None else f"≥ {max(effect, 0.01) * 100:.0f} %"


def resolvable_words(effect: float | None) -> str:
    """``resolves ≥ 8 %``: what an "unclear" verdict of the study means (run longer to see less); "" without a CI."""
    return "" if effect is None else f"resolves {at_least(effect)}"
