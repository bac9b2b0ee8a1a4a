"""Report figures (matplotlib, Agg): speedup and memory bars, scaling fits, Pareto front, roofline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sciml_bench.report.claims import loglog_slope  # noqa: E402

SCALING_AXES = ("depth", "width", "batch_size", "seq_len", "resolution")
DPI = 90


def _save(fig, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=DPI)
    plt.close(fig)
    return name


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_=." else "_" for ch in s)[:80]


def speedup_bars(study: str, rows: list[dict[str, Any]], out_dir: Path) -> str | None:
    """Bars of reference/variant speedup with CI error bars (1 = the reference)."""
    rows = [r for r in rows if r.get("ratio") is not None and not r.get("is_reference")]
    if not rows:
        return None
    labels = [r["label"] for r in rows]
    s = np.array([1 / r["ratio"] for r in rows])
    lo = np.array([1 / r["ratio_hi"] if r.get("ratio_hi") else 1 / r["ratio"] for r in rows])
    hi = np.array([1 / r["ratio_lo"] if r.get("ratio_lo") else 1 / r["ratio"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.4))
    y = np.arange(len(rows))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in s]
    ax.barh(y, s, xerr=[s - lo, hi - s], color=colors, alpha=0.75, capsize=3)
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup vs reference (reference time / case time), 95% CI")
    ax.set_title(f"{study}: speedup", fontsize=10)
    return _save(fig, out_dir, f"{_safe(study)}-speedup.png")


def memory_bars(study: str, rows: list[dict[str, Any]], out_dir: Path) -> str | None:
    """Bars of peak tensor memory per case (MiB)."""
    rows = [r for r in rows if r.get("peak_mem") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.4))
    y = np.arange(len(rows))
    ax.barh(y, [r["peak_mem"] / 2 ** 20 for r in rows], color="tab:blue", alpha=0.75)
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"peak tensor memory per step (MiB, {rows[0]['peak_mem_kind']})")
    ax.set_title(f"{study}: memory", fontsize=10)
    return _save(fig, out_dir, f"{_safe(study)}-memory.png")


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
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.4))
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
    for ax, ylabel in ((ax_t, "step time (s)"), (ax_m, "peak memory (B)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{study}: scaling with {axis} (fit y ∝ {axis}^k)", fontsize=10)
    return _save(fig, out_dir, f"{_safe(study)}-scaling.png"), fits


def pareto(study: str, rows: list[dict[str, Any]], out_dir: Path) -> tuple[str | None, list[str]]:
    """Time vs memory scatter with the Pareto front (no other case both faster and smaller)."""
    pts = [r for r in rows if r.get("time") and r.get("peak_mem")]
    if len(pts) < 3:
        return None, []
    front = [r for r in pts if not any(o is not r and o["time"] <= r["time"] and o["peak_mem"] <= r["peak_mem"]
                                       and (o["time"] < r["time"] or o["peak_mem"] < r["peak_mem"]) for o in pts)]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.scatter([r["time"] for r in pts], [r["peak_mem"] / 2 ** 20 for r in pts], color="tab:gray")
    f = sorted(front, key=lambda r: r["time"])
    ax.plot([r["time"] for r in f], [r["peak_mem"] / 2 ** 20 for r in f], "o-", color="tab:red", label="Pareto front")
    for r in pts:
        ax.annotate(r["label"][:30], (r["time"], r["peak_mem"] / 2 ** 20), fontsize=6, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step time (s)")
    ax.set_ylabel("peak memory (MiB)")
    ax.legend(fontsize=8)
    ax.set_title(f"{study}: time vs memory", fontsize=10)
    return _save(fig, out_dir, f"{_safe(study)}-pareto.png"), [r["label"] for r in f]


def roofline(rows: list[dict[str, Any]], peaks: dict[str, float], out_dir: Path) -> str | None:
    """Achieved FLOP/s of every case against FLOPs per step, under the measured GEMM peak per dtype."""
    pts = [r for r in rows if r.get("flop_rate")]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, prec in enumerate(sorted({r["case"]["precision"] for r in pts})):
        for partial in (False, True):  # a partial FLOP count is a lower bound: hollow marker, own label
            g = [r for r in pts if r["case"]["precision"] == prec and bool(r.get("flops_partial")) == partial]
            if g:
                ax.scatter([r["flops"] for r in g], [r["flop_rate"] for r in g], s=18,
                           label=f"cases ({prec})" + (", partial count: lower bound" if partial else ""),
                           facecolors="none" if partial else f"C{i}", edgecolors=f"C{i}")
    for i, (dtype, peak) in enumerate(sorted(peaks.items())):
        ax.axhline(peak, ls="--", lw=1, color=f"C{i + 3}", label=f"measured GEMM peak {dtype}: {peak / 1e9:.3g} GFLOP/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per step")
    ax.set_ylabel("achieved FLOP/s")
    ax.legend(fontsize=7)
    ax.set_title("Roofline-style: achieved FLOP/s vs the machine's measured peak", fontsize=10)
    return _save(fig, out_dir, "roofline.png")
