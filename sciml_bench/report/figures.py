"""Report figures (matplotlib, Agg): time-ratio and memory bars, scaling fits, Pareto front, roofline."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sciml_bench.stats import loglog_slope  # noqa: E402

SCALING_AXES = ("depth", "width", "batch_size", "seq_len", "resolution")
DPI = 90
WIDTH = 12.5  # inches: ~1100 px at DPI, the report's text width, so figures are shown at their size
DECADES = 30.0  # max/min above this gets a log axis: KiB-sized bars must not vanish beside MiB ones


def save(fig, out_dir: Path, name: str) -> str:
    """Lay out, write ``out_dir/name`` at the report's resolution and close ``fig``; returns ``name``."""
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=DPI)
    plt.close(fig)
    return name


def safe_name(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_=." else "_" for ch in s)[:80]


def spans_decades(values: list[float]) -> bool:
    """Whether positive values span more than ``DECADES`` (max / min), so a linear axis would hide some."""
    v = [x for x in values if x and x > 0]
    return len(v) >= 2 and max(v) / min(v) > DECADES


def _ratio_tick(x: float, _pos=None) -> str:
    """Time-ratio axis ticks in the report's words: "2x faster", "same", "1.5x slower"."""
    if x <= 0:
        return ""
    if abs(x - 1) < 1e-9:
        return "same"
    return f"{x:.3g}x\nslower" if x > 1 else f"{1 / x:.3g}x\nfaster"


def bars_figure(study: str, rows: list[dict[str, Any]]):
    """One figure per study, one bar row per case: time / reference (log axis, left faster, right slower,
    95% CI) beside peak memory (a log axis when the values span decades). None without data."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    from sciml_bench.compare import fmt_value
    from sciml_bench.report.words import ratio_words, significant

    timed = [r for r in rows if r.get("ratio") is not None and not r.get("is_reference")]
    sized = [r for r in rows if r.get("peak_mem") is not None]
    rows = [r for r in rows if r in timed or r in sized]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2 if timed and sized else 1, figsize=(WIDTH, 0.36 * len(rows) + 1.4),
                             sharey=True, squeeze=False)
    axes = list(axes[0])
    y = np.arange(len(rows))
    words: dict[int, str] = {}
    if timed:
        ax = axes.pop(0)
        yi = [i for i, r in enumerate(rows) if r in timed]
        r_ = np.array([r["ratio"] for r in timed])
        lo = np.array([r["ratio_lo"] if r.get("ratio_lo") else r["ratio"] for r in timed])
        hi = np.array([r["ratio_hi"] if r.get("ratio_hi") else r["ratio"] for r in timed])
        ax.barh(yi, r_ - 1, left=1, xerr=[r_ - lo, hi - r_], color=["tab:green" if v < 1 else "tab:red" for v in r_],
                alpha=0.75, capsize=3)
        ax.axvline(1.0, color="k", lw=1)
        ax.set_xscale("log")
        span = max(float(np.max(hi)), 1 / float(np.min(lo)), 1.2) * 1.3
        ax.set_xlim(1 / span, span)
        # at most two labelled ticks each side of "same": powers of 2 (every other one past 4x)
        step = 1 if span < 5 else 2
        ks = [2.0 ** e for e in range(step, int(np.log2(span)) + 1, step)][:2] or [span / 1.3]
        ax.xaxis.set_major_locator(FixedLocator(sorted([1 / k for k in ks] + [1.0] + ks)))
        ax.xaxis.set_major_formatter(FuncFormatter(_ratio_tick))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, p: ""))
        words = {id(r): ratio_words(r["ratio"], ci=False) + ("" if significant(r.get("ratio_lo"), r.get("ratio_hi"))
                                                              or r.get("ratio_lo") is None else ", CI includes same")
                 for r in timed}  # said in the row label
        ax.set_xlabel("case time / reference time (log; 95% CI)")
        ax.set_title("time vs reference", fontsize=10)
    if sized:
        ax = axes.pop(0)
        yi = [i for i, r in enumerate(rows) if r in sized]
        vals = [r["peak_mem"] for r in sized]
        ax.barh(yi, vals, color="tab:blue", alpha=0.75)
        if spans_decades(vals):
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, p: fmt_value(x, "B") if x > 0 else "0"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, p: ""))
        ax.set_xlim(right=max(vals) * (4 if ax.get_xscale() == "log" else 1.25))  # room for the value labels
        for i, v in zip(yi, vals):
            ax.annotate(fmt_value(v, "B"), (v, i), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=8)
        ax.set_xlabel(f"peak memory ({sized[0]['peak_mem_kind']}"
                      + (", log scale)" if ax.get_xscale() == "log" else ")"))
        ax.set_title("memory", fontsize=10)
    first = fig.axes[0]
    words.update({id(r): "reference" for r in rows if r.get("is_reference")})
    first.set_yticks(y, [r["label"] + (f"  ({words[id(r)]})" if id(r) in words else "") for r in rows], fontsize=9)
    first.invert_yaxis()
    fig.suptitle(study, fontsize=11)
    return fig


def bars(study: str, rows: list[dict[str, Any]], out_dir: Path) -> str | None:
    """``bars_figure`` saved as ``<study>-bars.png``."""
    fig = bars_figure(study, rows)
    return save(fig, out_dir, f"{safe_name(study)}-bars.png") if fig is not None else None


def scaling(study: str, axes: dict[str, list[Any]], rows: list[dict[str, Any]], out_dir: Path
            ) -> tuple[str | None, list[dict[str, Any]]]:
    """Log-log time and memory against each numeric size axis, with fitted power-law exponents."""
    fits: list[dict[str, Any]] = []
    axis = next((a for a in SCALING_AXES if a in axes and len(axes[a]) >= 2), None)
    if axis is None:
        return None, fits
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["case"].get(axis) is None:
            continue
        key = ", ".join(f"{k}={r['case'][k]}" for k in axes if k != axis)
        groups.setdefault(key or "all", []).append(r)
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(WIDTH, 4.2))
    for key, g in groups.items():
        g = sorted(g, key=lambda r: r["case"][axis])
        x = [r["case"][axis] for r in g]
        for ax, metric, what in ((ax_t, "time", "time"), (ax_m, "peak_mem", "memory")):
            pts = [(xi, r[metric]) for xi, r in zip(x, g) if r.get(metric)]
            if len(pts) < 2:
                continue
            fit = loglog_slope([p[0] for p in pts], [p[1] for p in pts])
            label = key
            if fit:
                k, lo, hi = fit
                label += f": k={k:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else "")
                fits.append({"group": key, "axis": axis, "metric": what, "exponent": k, "ci_low": lo, "ci_high": hi,
                             "points": len(pts)})
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label[:60])
    values = sorted({r["case"][axis] for g in groups.values() for r in g})
    for ax, ylabel in ((ax_t, "step time (s)"), (ax_m, "peak memory (B)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(values, [str(v) for v in values])  # the measured sizes only: no crowded minor labels
        ax.minorticks_off()
        ax.set_xlabel(axis)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{study}: scaling with {axis} (fit y ∝ {axis}^k)", fontsize=10)
    return save(fig, out_dir, f"{safe_name(study)}-scaling.png"), fits


def pareto(study: str, rows: list[dict[str, Any]], out_dir: Path) -> tuple[str | None, list[str]]:
    """Time vs memory scatter with the Pareto front (no other case both faster and smaller)."""
    pts = [r for r in rows if r.get("time") and r.get("peak_mem")]
    if len(pts) < 3:
        return None, []
    front = [r for r in pts if not any(o is not r and o["time"] <= r["time"] and o["peak_mem"] <= r["peak_mem"]
                                       and (o["time"] < r["time"] or o["peak_mem"] < r["peak_mem"]) for o in pts)]
    f = sorted(front, key=lambda r: r["time"])
    if len(f) < 2:  # one case is both fastest and smallest: the report's sentence says it, a plot adds nothing
        return None, [r["label"] for r in f]
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    ax.scatter([r["time"] for r in pts], [r["peak_mem"] / 2 ** 20 for r in pts], color="tab:gray")
    f = sorted(front, key=lambda r: r["time"])
    ax.plot([r["time"] for r in f], [r["peak_mem"] / 2 ** 20 for r in f], "o-", color="tab:red", label="Pareto front")
    for i, r in enumerate(pts, 1):  # numbers inside the frame; the labels they stand for beside it
        ax.annotate(str(i), (r["time"], r["peak_mem"] / 2 ** 20), xytext=(4, 4), textcoords="offset points",
                    fontsize=9, annotation_clip=True)
        ax.plot([], [], " ", label=f"{i}: {r['label']}"[:70])
    ax.margins(0.12)
    time_memory_axes(ax, "step time (s)", f"{study}: time vs memory")
    return save(fig, out_dir, f"{safe_name(study)}-pareto.png"), [r["label"] for r in f]


def time_memory_axes(ax, xlabel: str, title: str) -> None:
    """The axes of a time-vs-memory plot (log-log, memory in MiB) with its legend outside the frame."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("peak memory (MiB)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=11)


def roofline(rows: list[dict[str, Any]], peaks: dict[str, float], out_dir: Path) -> str | None:
    """Achieved FLOP/s of every case against FLOPs per step, under the measured peak per dtype; points
    above their peak are ringed in red."""
    pts = [r for r in rows if r.get("flop_rate")]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH, 4.5))
    for i, prec in enumerate(sorted({r["case"]["precision"] for r in pts})):
        for partial in (False, True):  # a partial FLOP count is a lower bound: hollow marker, own label
            g = [r for r in pts if r["case"]["precision"] == prec and bool(r.get("flops_partial")) == partial]
            if g:
                ax.scatter([r["flops"] for r in g], [r["flop_rate"] for r in g], s=18,
                           label=f"cases ({prec})" + (", partial count: lower bound" if partial else ""),
                           facecolors="none" if partial else f"C{i}", edgecolors=f"C{i}")
    for i, (dtype, peak) in enumerate(sorted(peaks.items())):
        ax.axhline(peak, ls="--", lw=1, color=f"C{i + 3}", label=f"measured peak {dtype}: {peak / 1e9:.3g} GFLOP/s")
    over = [r for r in pts if (r.get("peak_frac") or 0) > 1]
    if over:  # never silently above the ceiling: ring the points that say the peak (or FLOPs) is wrong
        ax.scatter([r["flops"] for r in over], [r["flop_rate"] for r in over], s=90, facecolors="none",
                   edgecolors="tab:red", linewidths=1.5, label=f"⚠ above its measured peak ({len(over)})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per step")
    ax.set_ylabel("achieved FLOP/s")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Roofline-style: achieved FLOP/s vs the machine's measured peak", fontsize=10)
    return save(fig, out_dir, "roofline.png")


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def forest(sections: list[Any], out_dir: Path, tag: Callable[[dict[str, Any]], str] | None = None) -> str | None:
    """``forest_figure`` saved as ``forest.png``."""
    fig = forest_figure(sections, tag)
    return save(fig, out_dir, "forest.png") if fig is not None else None


def forest_figure(sections: list[Any], tag: Callable[[dict[str, Any]], str] | None = None):
    """Every variant's time ratio with its 95% CI on one log axis, grouped by study (a forest plot):
    the line at "same", each study's resolvable band shaded (inside it a ratio cannot be told from 1
    at that study's median interval width), the memory ratio beside it where measured. ``tag``: what goes
    before a row's (shortened) label, whole (a multi-run report's run). None when no study has a ratio."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    from sciml_bench.report.words import significant

    groups = []
    for sec in sections:
        rows = [r for r in sec.rows if r["status"] == "ok" and r.get("ratio") is not None and not r.get("is_reference")]
        if rows:
            groups.append((sec.name, rows, sec.resolves))
    if not groups:
        return None
    n = sum(len(rows) + 1 for _, rows, _ in groups)
    mem = any(r.get("mem_ratio") for _, rows, _ in groups for r in rows)
    fig, axes = plt.subplots(1, 2 if mem else 1, figsize=(WIDTH, 0.17 * n + 1.2), sharey=True, squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1] if mem else [1]})
    ax, ax_m = axes[0][0], axes[0][1] if mem else None
    labels, y, lo_all, hi_all = [], 0, [], []
    for name, rows, effect in groups:
        labels.append((y, _short(name), True))
        top, y = y, y + 1
        for r in rows:
            lo, hi, v = r.get("ratio_lo") or r["ratio"], r.get("ratio_hi") or r["ratio"], r["ratio"]
            color = ("tab:green" if v < 1 else "tab:red") if significant(r.get("ratio_lo"), r.get("ratio_hi")) \
                else "tab:gray"
            ax.errorbar([v], [y], xerr=[[max(v - lo, 0)], [max(hi - v, 0)]], fmt="o", ms=3.5, color=color, capsize=2,
                        lw=1.2)
            if ax_m is not None and r.get("mem_ratio"):
                ax_m.plot([r["mem_ratio"]], [y], "s", ms=3.5, color="tab:blue")
            labels.append((y, (tag(r) if tag else "") + _short(r["label"]), False))
            lo_all.append(lo)
            hi_all.append(hi)
            y += 1
        if effect is not None:  # the band a ratio of this study must leave to be told from "same"
            ax.fill_betweenx([top + 0.5, y - 0.5], 1 / (1 + effect), 1 + effect, color="0.85", lw=0, zorder=0)
    for a, tick in zip(axes[0], (_ratio_tick, lambda x, p: f"{x:.3g}x")):
        a.axvline(1.0, color="k", lw=0.8)
        a.set_xscale("log")
        a.xaxis.set_major_locator(LogLocator(base=2))
        a.xaxis.set_major_formatter(FuncFormatter(tick))
        a.xaxis.set_minor_formatter(FuncFormatter(lambda x, p: ""))
        a.grid(axis="x", color="0.9", lw=0.6)
    span = max(max(hi_all), 1 / min(lo_all), 1.25) * 1.15
    ax.set_xlim(1 / span, span)
    ax.set_yticks([p for p, _, _ in labels], [t for _, t, _ in labels], fontsize=7.5)
    for tick, (_, _, head) in zip(ax.get_yticklabels(), labels):
        tick.set_fontweight("bold" if head else "normal")
    ax.set_ylim(y - 0.5, -0.5)
    ax.set_xlabel("time / reference (log; 95% rerun interval; grey band: what the study's run cannot resolve)")
    ax.set_title("Every variant against its study's reference", fontsize=10)
    if ax_m is not None:
        ax_m.set_xlabel("peak memory / reference (log)")
        ax_m.set_title("memory", fontsize=10)
    return fig
