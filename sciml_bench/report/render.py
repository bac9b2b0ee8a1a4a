"""Render a Report as self-contained HTML (no scripts, no network; figures/ beside it) and markdown.

The page is a list of section builders (``SECTIONS``): each takes the Report and returns Parts made
of neutral blocks, which ``render_html`` and ``render_markdown`` both turn into text. A new view
(profiles, training curves) plugs in by adding a builder to the list, and appears in both outputs.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from sciml_bench.report.claims import NOT_MEASURED
from sciml_bench.report.content import (METRIC_LABELS, Block, Part, Report, Section, fmt_metric, fmt_peak_frac,
                                        fmt_time, skip_reason_kind)
from sciml_bench.report.profiles import profiles_part
from sciml_bench.report.recommend import part as recommend_part
from sciml_bench.report.words import ratio_words, resolvable_words
from sciml_bench.units import fmt_bytes

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e0;border-left:4px solid #f0a020;padding:.5em 1em}.verdict{margin:.2em 0}
.bad{color:#b00020}.good{color:#107020}.muted{color:#777}img{width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
code{background:#f4f4f4;padding:0 .2em}section.summary h2{margin-top:.5em}section.summary{background:#f7f9fc;border:1px solid #dde4ee;padding:0 1em .6em}
"""

# ---------------------------------------------------------------- shared pieces

def _ci(v: float | None, lo: float | None, hi: float | None, fmt) -> str:
    if v is None:
        return "-"
    if lo is None or hi is None:
        return fmt(v)
    return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"


def _table_rows(sec: Section, multi_run: bool) -> tuple[list[str], list[list[str]]]:
    extra = [METRIC_LABELS.get(m, (m,))[0] for m in sec.metrics]
    head = (["run"] if multi_run else []) + ["case", "status", "median step time [95% CI]",
                                             "time vs reference [95% CI]", "peak memory", "memory vs reference",
                                             "GFLOP/s", "of measured peak"] + extra
    rows = []
    machines = any(r.get("machine") for r in sec.rows)  # a merged run: which machine ran each case
    head = (["machine"] if machines else []) + head
    for r in sec.rows:
        lead = ([str(r.get("machine"))] if machines else []) + ([r["run_id"]] if multi_run else [])
        if r["status"] != "ok":
            rows.append(lead + [r["case_id"], r["status"], r.get("reason") or ""] + [""] * (5 + len(extra)))
            continue
        if r.get("is_reference"):
            ratio = "reference"
        elif r.get("ratio") is not None:
            ratio = ratio_words(r["ratio"], r.get("ratio_lo"), r.get("ratio_hi"))
        else:
            ratio = "-"
        rows.append(lead + [
            r["case_id"], "ok", _ci(r.get("time"), r.get("time_lo"), r.get("time_hi"), fmt_time)
            + ("" if r.get("time_ci_level", 0.95) == 0.95 or r.get("time_lo") is None
               else f" ({r['time_ci_level']:.0%} CI)"), ratio,
            fmt_bytes(r.get("peak_mem")),
            ratio_words(r["mem_ratio"], kind="memory") if r.get("mem_ratio") is not None else "-",
            (">= " if r.get("flops_partial") else "") + f"{r['flop_rate'] / 1e9:.3g}" if r.get("flop_rate") else "-",
            (">= " if r.get("flops_partial") and r.get("peak_frac") is not None else "") + fmt_peak_frac(r)]
            + [fmt_metric(m, r["metrics"].get(m), r["absent"].get(m), why=False) for m in sec.metrics])
    return head, rows


def _env_keys(rep: Report) -> list[str]:
    keys: list[str] = []
    for h in rep.runs:
        for k in (h.get("environment") or {}):
            if k not in keys:
                keys.append(k)
    return keys


def _env_value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return "-" if v is None else str(v)


def _peak_rows(rep: Report) -> list[list[str]]:
    rows = []
    for run_id, mp in rep.peaks.items():
        for dtype, m in mp.get("metrics", {}).items():
            rows.append([run_id, mp.get("device", "?"), dtype, f"{m['value'] / 1e9:.4g}",
                         (f"best of {', '.join(f'{k} {v / 1e9:.4g}' for k, v in m['kernels'].items())} GFLOP/s"
                          if m.get("kernels") else f"{mp.get('size')}x{mp.get('size')} GEMM")
                         + f", {m.get('n')} measurements, {mp.get('threads')} threads"])
        for dtype, why in mp.get("absent", {}).items():
            rows.append([run_id, mp.get("device", "?"), dtype, "not measured", why])
    return rows


def _claim_class(verdict: str) -> str:
    if verdict == "holds":
        return "good"
    if verdict == "does not hold":
        return "bad"
    return "muted" if verdict == NOT_MEASURED else ""


def _brief(text: str, width: int = 36) -> str:
    """``text`` cut at a word boundary to about ``width`` characters, with an ellipsis when cut."""
    if len(text) <= width:
        return text
    return text[:width].rsplit(" ", 1)[0].rstrip(" ,;:/(") + "…"


def _unmeasured_line(unmeasured: list[Any], total: int, shown: int = 6) -> str:
    """One line: how many claims these runs did not measure, which (briefly), and where all of them are."""
    names = "; ".join(_brief(c.claim) for c in unmeasured[:shown])
    more = f"; and {len(unmeasured) - shown} more" if len(unmeasured) > shown else ""
    return (f"{len(unmeasured)} of {total} claims not measured in these runs ({names}{more}). Every claim with its "
            f"verdict: see \"How claims are checked\" near the end.")


def _history_regressions(rep: Report) -> list[list[str]]:
    def level(r: dict, v: float) -> str:  # anchor-normalised levels are in anchor times, not seconds
        return f"{v:.3g}× anchor" if r.get("normalised") else fmt_time(v)

    return [[r["study"], r["case_id"], ratio_words(r["ratio"], ci=False), level(r, r["before"]), level(r, r["after"]),
             str(r["run_id"]), str(r.get("commit") or "-")[:12], str(r.get("torch") or "-"),
             str(r.get("previous_torch") or "-")] for r in rep.history.regressions]


HIST_HEAD = ["study", "case", "step", "before", "after", "first run", "commit", "torch", "torch before"]


# ---------------------------------------------------------------- section builders

def summary(rep: Report) -> list[Part]:
    """"On this machine": one answer per study, the claims table, and how far to trust the numbers."""
    b: list[Block] = []
    for h in rep.runs:
        env = h.get("environment") or {}
        b.append(("muted", f"run {h.get('run_id')} · suite {h.get('suite')} · {h.get('created')} · "
                           f"{env.get('cpu_model')} · {env.get('gpu_name') or 'no GPU'} · torch {env.get('torch')} · "
                           f"{(h.get('options') or {}).get('passes') or 1} passes x {(h.get('options') or {}).get('rounds')} "
                           "rounds"))
    if rep.forest:  # one picture first: every answer at a glance
        b.append(("img", rep.forest, "every variant's time ratio with its 95% CI, grouped by study"))
        b.append(("muted", "Each point is a case's time against its study's reference, with its 95% interval (log "
                           "axis; green: faster, red: slower, grey point: the interval includes \"same\"). The shaded "
                           "band around \"same\" is the smallest effect the study's run can resolve (its median "
                           "interval half-width); a smaller effect needs a longer run (more passes)."))
    b.append(("strong", "Answers, one line per study (ratios are case time / reference time)"))
    b.append(("ul", [f"{s.name}: {s.answer}" + (f" ({resolvable_words(s.resolves)})" if s.resolves is not None else "")
                     for s in rep.sections]))
    b.append(("strong", "Claims checked on this hardware"))
    measured = [c for c in rep.claims if c.verdict != NOT_MEASURED]  # the answer; the rest would bury it
    unmeasured = [c for c in rep.claims if c.verdict == NOT_MEASURED]
    if measured:
        b.append(("table", ["claim", "verdict", "evidence (this hardware)"],
                  [[c.claim, c.verdict, c.summary()] for c in measured],
                  [_claim_class(c.verdict) for c in measured], 1))
    else:
        b.append(("p", "No claim was measured by these runs."))
    b.append(("muted", _unmeasured_line(unmeasured, len(rep.claims)) if unmeasured else
              "How each claim is checked: see \"How claims are checked\" near the end."))
    b.append(("strong", "How far to trust these numbers"))
    b.append(("ul", rep.trust))
    if not any(s.training for s in rep.sections):
        b.append(("muted", "Convergence metrics (loss curves with seed bands): not measured by these runs."))
    return [Part("summary", "On this machine", b, "summary")]


def studies(rep: Report) -> list[Part]:
    """One part per study: question, verdict lines, table, fits and figures."""
    parts = []
    for i, sec in enumerate(rep.sections):
        b: list[Block] = []
        if sec.question:
            b.append(("p", sec.question))
        ref = ", ".join(f"{k}={v}" for k, v in sec.reference.items()) or "none"
        b.append(("muted", "axes: " + "; ".join(f"{k} ∈ {v}" for k, v in sec.axes.items()) + f" · reference: {ref}"))
        b.append(("strong", "Verdict"))
        b.append(("ul", sec.verdicts))
        head, rows = _table_rows(sec, rep.multi_run)
        b.append(("table", head, rows, None, -1))
        for f in sec.fits:
            ci = f" [{f['ci_low']:.2f}, {f['ci_high']:.2f}]" if f["ci_low"] is not None else " (2 points, no CI)"
            b.append(("p", f"scaling: {f['metric']} ∝ {f['axis']}^{f['exponent']:.2f}{ci} for {f['group']}"))
        if sec.pareto:
            b.append(("p", f"Pareto front (time vs memory): {', '.join(sec.pareto)}"))
        b += [("img", fig, f"{sec.name}: {fig}") for fig in sec.figures]
        from sciml_bench.report.training import blocks as training_blocks

        b += training_blocks(sec)  # convergence and gradient health of mode='fit' cases
        parts.append(Part(f"study-{i}", f"Study: {sec.name}", b))
    return parts


def roofline(rep: Report) -> list[Part]:
    b = [("img", f, "roofline") for f in rep.figures] or [("p", "not measured (no FLOP counts in these runs)")]
    return [Part("roofline", "Roofline", b)]


def machine_peak(rep: Report) -> list[Part]:
    rows = _peak_rows(rep)
    b = [("table", ["run", "device", "dtype", "GFLOP/s", "how"], rows, None, -1)] if rows else \
        [("p", "not measured (these runs have no machine-peak calibration)")]
    return [Part("peak", "Machine peak (measured GEMM / convolution)", b)]


def history_part(rep: Report) -> list[Part]:
    if rep.history is None:
        return []
    if isinstance(rep.history, str):
        return [Part("history", "History", [("p", rep.history)])]
    h = rep.history
    b: list[Block] = [("p", f"{len(h.runs)} runs of machine {h.machine}; {len(h.regressions)} regressions (steps up "
                            f"by more than {h.threshold:.0%}).")]
    normalised = sum(s.normalised for s in h.series)
    change = h.anchor_change
    b.append(("p", f"{normalised} of {len(h.series)} series are anchor-normalised (case time in anchor times, a fixed "
                   "numpy workload timed in the same rounds, so machine-wide speed changes cancel); the rest are raw."
                   + (f" The anchor itself (machine speed) moved {change[2]:.2f}× from the first to the last run "
                      "that timed it." if change else "")))
    if h.regressions:
        b.append(("table", HIST_HEAD, _history_regressions(rep), None, -1))
    b += [("img", f, "history") for f in rep.history_figures]
    return [Part("history", "History", b)]


def claim_tests(rep: Report) -> list[Part]:
    """Every claim, measured or not, with its verdict, its evidence (or why it has none) and how it is checked."""
    return [Part("claim-tests", "How claims are checked",
                 [("muted", "Every claim, with its verdict in these runs; the summary shows the measured ones."),
                  ("table", ["claim", "verdict", "evidence (this hardware)", "how checked"],
                   [[c.claim, c.verdict, c.summary(), c.test] for c in rep.claims],
                   [_claim_class(c.verdict) for c in rep.claims], 1)])]


def failed(rep: Report) -> list[Part]:
    rows = [[f["run_id"], f["study"], f["case_id"],
             f["status"] + (f" ({skip_reason_kind(f['reason'])})" if f["status"] == "skipped" else ""),
             f["reason"] or ""] for f in rep.failed]
    b = [("table", ["run", "study", "case", "status", "reason"], rows, None, -1)] if rows else \
        [("p", "none: every case ran.")]
    return [Part("failed", "Skipped and failed cases", b)]


def environment(rep: Report) -> list[Part]:
    head = ["field"] + [str(h.get("run_id")) for h in rep.runs]
    rows = [[k] + [_env_value((h.get("environment") or {}).get(k)) for h in rep.runs] for k in _env_keys(rep)]
    return [Part("env", "Environment", [("table", head, rows, None, -1)])]


# The page, top to bottom. Other views plug in here (e.g. insert a builder before `roofline`).
def ab_part(rep: Report) -> list[Part]:
    """An A/B run: each arm, then new/base per case in the words and columns of ``compare``."""
    if rep.ab is None:
        return []
    from sciml_bench.compare import fmt_p, fmt_ratio, fmt_value
    from sciml_bench.measure.instructions import fmt_delta

    cmp = rep.ab
    b: list[Block] = []
    for h in rep.runs:
        for name, arm in ((h.get("ab") or {}).get("arms") or {}).items():
            what = f"{arm.get('spec')} = {str(arm.get('revision'))[:12]} of {arm.get('repo')}" if arm.get("revision") \
                else f"interpreter {arm.get('python')}"
            b.append(("p", f"{name}: {what} (torch {arm.get('torch')}, Python {arm.get('python_version')})"))
    b.append(("muted", f"Both arms timed in the same rounds, in a random order per round; time compared: {cmp.method}; "
                       f"threshold {cmp.threshold:.0%}, alpha {cmp.alpha}."))
    n = len(cmp.failures)
    b.append(("strong", f"{n} case(s) significantly worse beyond {cmp.threshold:.0%}" if n else
              f"no significant {'/'.join(cmp.fail_on)} regression beyond {cmp.threshold:.0%}"))
    b.append(("muted", f"gate: {cmp.basis}."))
    b += [("warn", w) for w in cmp.warnings]
    rows = [[r.study, r.case_id, r.metric, fmt_value(r.base, r.unit), fmt_value(r.new, r.unit), fmt_ratio(r),
             fmt_p(r.p_value), r.verdict + ("" if r.gates else " (not gating)")] for r in cmp.rows]
    classes = ["bad" if r.fails and r.gates else "good" if r.verdict in ("faster", "smaller", "better", "fewer") else ""
               for r in cmp.rows]
    b.append(("table", ["study", "case", "metric", "base", "new", "new/base [95% CI]", "p", "verdict"], rows,
              classes, 7))
    b += [("p", f"functions whose instructions changed most, {key}: " + "; ".join(
        f"{f['function']} {fmt_delta(f)}" for f in fns)) for key, fns in cmp.functions.items() if fns]
    return [Part("ab", "A/B: new vs base", b)]


SECTIONS: list[Callable[[Report], list[Part]]] = [summary, recommend_part, ab_part, studies, profiles_part, roofline,
                                                  machine_peak, history_part, failed, claim_tests, environment]


def parts(rep: Report) -> list[Part]:
    return [p for builder in SECTIONS for p in builder(rep)]


# ---------------------------------------------------------------- HTML

def e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html_table(head: list[str], rows: list[list[str]], classes: list[str] | None = None, col: int = -1) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        cells = []
        for j, c in enumerate(r):
            cls = f' class="{classes[i]}"' if classes and j == col and classes[i] else ""
            cells.append(f"<td{cls}>{e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _html_block(b: Block) -> str:
    kind = b[0]
    if kind == "p":
        return f"<p>{e(b[1])}</p>"
    if kind == "muted":
        return f"<p class='muted'>{e(b[1])}</p>"
    if kind == "warn":
        return f'<p class="warn">⚠ {e(b[1])}</p>'
    if kind == "strong":
        return f"<p><strong>{e(b[1])}</strong></p>"
    if kind == "ul":
        return "<ul>" + "".join(f"<li class='verdict'>{e(x)}</li>" for x in b[1]) + "</ul>"
    if kind == "img":
        return f'<img src="figures/{e(b[1])}" alt="{e(b[2])}">'
    if kind == "file_img":
        return f'<img src="{e(b[1])}" alt="{e(b[2])}">'
    if kind == "links":
        return f"<p>{e(b[1])}: " + " · ".join(f'<a href="{e(href)}">{e(t)}</a>' for t, href in b[2]) + "</p>"
    if kind == "table":
        return _html_table(b[1], b[2], b[3], b[4])
    if kind == "code":
        return f"<pre><code>{e(b[1])}</code></pre>"
    raise ValueError(f"unknown report block {kind!r}")


def render_html(rep: Report) -> str:
    """index.html: every user-provided string escaped; only relative figures/*.png references."""
    ps = parts(rep)
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    '<meta name="viewport" content="width=device-width, initial-scale=1">',
                    f"<title>{e(rep.title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(rep.title)}</h1>"]
    p.append("<nav><p>Contents: " + " · ".join(f'<a href="#{e(x.anchor)}">{e(x.title)}</a>' for x in ps)
             + "</p></nav>")
    for x in ps:
        cls = f' class="{e(x.css_class)}"' if x.css_class else ""
        p.append(f'<section id="{e(x.anchor)}"{cls}><h2>{e(x.title)}</h2>')
        p += [_html_block(b) for b in x.blocks]
        p.append("</section>")
    p.append("<p class='muted'>Generated by sciml-bench report. Opens from disk; no scripts, no network.</p>")
    p.append("</body></html>")
    return "\n".join(p) + "\n"


# ---------------------------------------------------------------- markdown

def _md_cell(x: Any) -> str:
    return html.escape(str(x), quote=False).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(map(_md_cell, head)) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
    return "\n".join(out)


def _md_block(b: Block) -> str:
    kind = b[0]
    if kind in ("p", "muted"):
        return _md_cell(b[1])
    if kind == "warn":
        return f"> ⚠ {_md_cell(b[1])}"
    if kind == "strong":
        return f"**{_md_cell(b[1])}**"
    if kind == "ul":
        return "\n".join(f"- {_md_cell(x)}" for x in b[1])
    if kind == "img":
        return f"![{_md_cell(b[2])}](figures/{b[1]})"
    if kind == "file_img":
        return f"![{_md_cell(b[2])}]({b[1]})"
    if kind == "links":
        return f"{_md_cell(b[1])}: " + " · ".join(f"[{_md_cell(t)}]({href})" for t, href in b[2])
    if kind == "table":
        return _md_table(b[1], b[2])
    if kind == "code":
        return f"```python\n{b[1]}\n```"
    raise ValueError(f"unknown report block {kind!r}")


def render_markdown(rep: Report) -> str:
    """report.md: the same parts as index.html, figures linked relatively."""
    p = [f"# {_md_cell(rep.title)}"]
    for x in parts(rep):
        p += ["", f"## {_md_cell(x.title)}"] + ["\n" + _md_block(b) for b in x.blocks]
    return "\n".join(p) + "\n"
