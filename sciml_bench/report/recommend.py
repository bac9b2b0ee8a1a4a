"""The report's view of a recommend run: the answer, every candidate's fate, a time-vs-memory figure, the code."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sciml_bench.recommend.answer import Row, memory_of, summary, table
from sciml_bench.report.content import Block, Part
from sciml_bench.units import fmt_bytes

FATE_COLORS = {"chosen": "tab:green", "baseline": "black", "slower": "tab:blue", "over memory": "tab:red",
               "outside tolerance": "tab:orange", "failed": "tab:purple", "not tried": "tab:gray"}


@dataclass
class View:
    """One recommend run in a report: its answer, its ranked rows and its figure."""

    run_id: str
    model: str
    answer: dict[str, Any]
    rows: list[Row]
    info: dict[str, Any]
    figure: str | None = None


def views(runs: list[dict[str, Any]], records: list[dict[str, Any]], fig_dir: Path) -> list[View]:
    """A View of every finished recommend run among ``runs`` (headers; ``records`` carry ``_run``)."""
    out = []
    for h in runs:
        info = h.get("recommend")
        if not info or not info.get("finished"):
            continue
        recs = [r for r in records if r.get("_run") == h.get("run_id")]
        v = View(str(h.get("run_id")), info["request"]["model"], summary(h, recs), table(h, recs), info)
        v.figure = pareto(v, recs, fig_dir)
        out.append(v)
    return out


def pareto(v: View, records: list[dict[str, Any]], fig_dir: Path) -> str | None:
    """Time per sample against peak memory of every timed candidate (latest stage), coloured by fate,
    with the memory limit; the chosen one and the baseline labelled. None with fewer than two points."""
    from sciml_bench.report.figures import WIDTH, plt, save, time_memory_axes

    by_id = {}
    for r in records:  # latest stage per case, as the table
        if r["status"] == "ok" and r["case"].get("mode") != "fit" and "step_time" in r.get("metrics", {}):
            by_id[r["case_id"]] = r
    fates = {row.case_id: row.fate for row in v.rows if row.case_id}
    fates[v.info["baseline_id"]] = "baseline"
    pts = [(r["metrics"]["step_time"]["value"] / r["case"]["batch_size"], row_mem, fates.get(cid, "slower"), cid)
           for cid, r in by_id.items() if (row_mem := _mem(r)) is not None]
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH, 4.0))
    for fate, color in FATE_COLORS.items():
        xs = [(p[0], p[1] / 2 ** 20) for p in pts if p[2] == fate]
        if xs:
            ax.scatter(*zip(*xs), color=color, label=fate, s=60 if fate in ("chosen", "baseline") else 25, zorder=3)
    for t, m, fate, cid in pts:
        if fate in ("chosen", "baseline"):
            ax.annotate(fate, (t, m / 2 ** 20), xytext=(5, 5), textcoords="offset points", fontsize=9)
    limit = v.answer.get("memory_limit")
    if limit and limit <= 4 * max(p[1] for p in pts):
        ax.axhline(limit / 2 ** 20, color="tab:red", linestyle="--", label=f"memory limit {fmt_bytes(limit)}")
    time_memory_axes(ax, "step time per sample (s)  (left: faster)",
                     f"recommend {v.model}: time vs memory of every timed candidate")
    return save(fig, fig_dir, f"recommend-{v.run_id[-40:]}-pareto.png")


def _mem(r: dict[str, Any]) -> float | None:
    return memory_of(r)


def _x(row: Row) -> str:
    if row.speedup is None:
        return "-"
    ci = f" [{row.ci_low:.2f}-{row.ci_high:.2f}]" if row.ci_low is not None and row.ci_high is not None else ""
    return f"{row.speedup:.2f}x{ci}"


def answer_lines(v: View) -> list[str]:
    """The answer in words: what to use, how much faster (with CI), its memory, and why."""
    a = v.answer
    s = a["speedup"]
    if not a["knobs"]:
        head = f"keep the baseline ({v.info['baseline_id']}): {a['why']}"
    else:
        ci = f" [95% CI {s['ci_low']:.2f}-{s['ci_high']:.2f}]" if s and s["ci_low"] and s["ci_high"] else ""
        head = (f"use {a['config']}: {s['value']:.2f}x the baseline's {a['objective']}{ci}" if s else
                f"use {a['config']}") + f"; peak memory {fmt_bytes(a['memory'])} (limit {fmt_bytes(a['memory_limit'])})"
    lines = [head, f"as run options: {a['set']}"]
    lines += [f"not tried: {x['what']} ({x['why']})" for x in a["not_tried"]]
    lines.append(f"searched {len(v.info.get('stages') or [])} stages in {v.info.get('wall_s')} s of a "
                 f"{v.info.get('budget_s'):.0f} s budget")
    return lines


def part(rep: Any) -> list[Part]:
    """One part per recommend run: the answer, the ranked fates table, the figure and the code to apply it."""
    parts = []
    for i, v in enumerate(getattr(rep, "recommend", None) or []):
        b: list[Block] = [("strong", "Answer"), ("ul", answer_lines(v))]
        b.append(("muted", "Speed-ups are against the baseline timed in the same rounds (throughput at the candidate's "
                           "batch size); the chosen one's CI is the final comparison's rerun interval. The accuracy "
                           f"check: final validation loss over seeds within {v.info['request']['tolerance']:.0%} "
                           "of the baseline's after the same number of training samples."))
        rows = [[r.config, r.fate, _x(r), fmt_bytes(r.memory), r.stage or "-", r.reason] for r in v.rows]
        b.append(("table", ["configuration", "fate", "speed-up [95% CI]", "peak memory", "measured in", "why"], rows,
                  ["good" if r.fate == "chosen" else "bad" if r.fate in ("over memory", "outside tolerance", "failed")
                   else "" for r in v.rows], 1))
        if v.figure:
            b.append(("img", v.figure, f"recommend {v.model}: time per sample vs peak memory"))
        b.append(("strong", "Apply it to your own training loop"))
        b.append(("code", v.answer["snippet"]))
        parts.append(Part(f"recommend-{i}", f"Recommendation: {v.model} ({v.info['request']['mode']})", b))
    return parts
