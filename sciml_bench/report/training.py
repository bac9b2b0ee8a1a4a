"""Report view of fixed-budget training (mode='fit'): loss curves with seed bands, cost vs benefit, gradient health.

Reads stored records only. ``attach`` adds a study's figures and tables to its report Section;
``html`` / ``markdown`` render the tables inside that section.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_CURVES = 12  # cases per loss-curve figure (more become unreadable)


def fit_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ok records that carry a training run."""
    return [r for r in records if r.get("status") == "ok" and r.get("fit")]


def _ci(m: dict[str, Any] | None, fmt: str = "{:.3g}") -> str:
    if not m:
        return "-"
    s = fmt.format(m["value"])
    if m.get("ci_low") is not None and m.get("ci_high") is not None:
        s += f" [{fmt.format(m['ci_low'])}, {fmt.format(m['ci_high'])}]"
    return s


def _label(rec: dict[str, Any], axes: dict[str, list[Any]]) -> str:
    return ", ".join(f"{k}={rec['case'].get(k)}" for k in axes) or rec["case_id"]


def table(recs: list[dict[str, Any]], axes: dict[str, list[Any]]) -> tuple[list[str], list[list[str]]]:
    """Convergence beside cost, and gradient health, one row per case (mean [95% CI] across seeds)."""
    head = ["case", "task metric", "final val loss", "steps to target", "step time", "diverged",
            "grad ratio first/last: init → end", "dead ReLU: init → end", "saturated: init → end", "clipped"]
    rows = []
    for r in recs:
        m, f = r["metrics"], r["fit"]
        metric = f"{f['metric']} {_ci(m.get(f['metric']))}" if f["metric"] in m else \
            f"{f['metric']}: {r['absent'].get(f['metric'], 'absent')}"
        stt = m.get("steps_to_target")
        target = (f"{_ci(stt, '{:.0f}')} ({stt.get('reached')}/{stt.get('n_seeds')} seeds)" if stt else
                  "not reached" if f.get("target") is not None else "no target")
        st = m.get("step_time", {}).get("value")
        div = m.get("diverged_seeds", {})

        def pair(name: str, fmt: str) -> str:
            a, b = m.get(f"{name}_init"), m.get(f"{name}_end")
            return f"{fmt.format(a['value']) if a else '-'} → {fmt.format(b['value']) if b else '-'}"

        rows.append([_label(r, axes), metric, _ci(m.get("final_val_loss")), target,
                     f"{st * 1e3:.3g} ms" if st else "-", f"{div.get('value', 0)}/{div.get('n', '?')}",
                     pair("grad_ratio", "{:.2g}"), pair("dead_fraction", "{:.0%}"),
                     pair("saturation_fraction", "{:.0%}"),
                     f"{m['clipped_fraction']['value']:.0%}" if "clipped_fraction" in m else "off"])
    return head, rows


def loss_curves(study: str, recs: list[dict[str, Any]], axes: dict[str, list[Any]], out_dir: Path) -> str | None:
    """Validation loss against step per case: the mean over seeds, with the seeds' min-max band."""
    import matplotlib.pyplot as plt

    from sciml_bench.report.figures import safe_name, save

    recs = [r for r in recs if r.get("curves")][:MAX_CURVES]
    if not recs:
        return None
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    starts = []
    for r in recs:
        label = _label(r, axes)
        for ax, key in zip(axs, ("train", "val")):
            per_seed = [{int(p[0]): p[1] for p in c[key] if p[1] is not None} for c in r["curves"]]
            steps = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
            if not steps:
                continue
            y = np.array([[s[k] for k in steps] for s in per_seed])
            if key == "val":
                starts.append(float(y[:, 0].mean()))
            line, = ax.plot(steps, y.mean(0), lw=1.3, label=label)
            ax.fill_between(steps, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
    top = 10 * float(np.median(starts)) if starts else None  # a diverged case must not flatten the others
    for ax, name in zip(axs, ("training loss", "validation loss")):
        ax.set_yscale("log")
        if top and ax.get_ylim()[1] > top:
            ax.set_ylim(top=top)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(f"{study}: {name} (mean, band = seed min-max)", fontsize=9)
    axs[1].legend(fontsize=6, loc="best")
    return save(fig, out_dir, f"{safe_name(study)}-loss-curves.png")


def cost_benefit(study: str, recs: list[dict[str, Any]], axes: dict[str, list[Any]], out_dir: Path) -> str | None:
    """Cost (step time, or time to target when every case has one) against benefit (the task metric)."""
    import matplotlib.pyplot as plt

    from sciml_bench.report.figures import safe_name, save

    pts = [r for r in recs if r["fit"]["metric"] in r["metrics"] and "step_time" in r["metrics"]]
    if len(pts) < 2:
        return None
    use_ttt = all("time_to_target" in r["metrics"] for r in pts)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in pts:
        cost = r["metrics"]["time_to_target" if use_ttt else "step_time"]["value"]
        q = r["metrics"][r["fit"]["metric"]]
        lo = q["value"] - max(q["ci_low"], 0.05 * q["value"]) if q.get("ci_low") is not None else 0  # log axis
        hi = q["ci_high"] - q["value"] if q.get("ci_high") is not None else 0
        ax.errorbar([cost], [q["value"]], yerr=[[max(lo, 0)], [max(hi, 0)]], fmt="o", capsize=3, ms=4)
        ax.annotate(_label(r, axes), (cost, q["value"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    metric = pts[0]["fit"]["metric"]
    ax.set_xscale("log")
    if metric in ("rel_l2", "rollout_rel_l2"):
        ax.set_yscale("log")
    ax.set_xlabel("time to target loss (s)" if use_ttt else "step time (s), timed rounds")
    ax.set_ylabel(f"{metric} after the budget (95% CI)")
    better = "higher" if pts[0]["fit"]["higher_is_better"] else "lower"
    ax.set_title(f"{study}: cost vs benefit ({metric}: {better} is better)", fontsize=9)
    return save(fig, out_dir, f"{safe_name(study)}-cost-benefit.png")


def attach(sections: list[Any], records: list[dict[str, Any]], fig_dir: Path) -> None:
    """Give every Section with training runs its figures and its convergence / gradient-health table."""
    fits = fit_records(records)
    for sec in sections:
        recs = [r for r in fits if r["study"] == sec.name]
        if not recs:
            continue
        for name in (loss_curves(sec.name, recs, sec.axes, fig_dir), cost_benefit(sec.name, recs, sec.axes, fig_dir)):
            if name:
                sec.figures.append(name)
        f = recs[0]["fit"]
        sec.training = {"table": table(recs, sec.axes), "task": f["task"], "description": f.get("description", ""),
                        "steps": sorted({r["fit"]["steps"] for r in recs}),
                        "seeds": max(len(r["fit"]["seeds"]) for r in recs)}


def _note(t: dict[str, Any]) -> str:
    return (f"Training: task {t['task']} ({t['description']}); {', '.join(map(str, t['steps']))} steps x "
            f"{t['seeds']} seeds; mean [95% t-CI across seeds]. Gradient health on a fixed validation batch at "
            "init and after the budget.")


def blocks(sec: Any) -> list[tuple]:
    """The study's convergence and gradient-health table as report blocks ([] for studies without training)."""
    t = getattr(sec, "training", None)
    if not t:
        return []
    head, rows = t["table"]
    return [("strong", "Convergence and gradient health"), ("muted", _note(t)), ("table", head, rows, None, -1)]
