"""Render a Report as self-contained HTML (no scripts, no network; figures/ beside it) and markdown."""
from __future__ import annotations

import html
from typing import Any

from sciml_bench.report.build import Report, Section, _fmt_bytes, _fmt_time

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e0;border-left:4px solid #f0a020;padding:.5em 1em}.verdict{margin:.2em 0}
.bad{color:#b00020}.good{color:#107020}.muted{color:#777}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
code{background:#f4f4f4;padding:0 .2em}
"""


def e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _ci(v: float | None, lo: float | None, hi: float | None, fmt) -> str:
    if v is None:
        return "-"
    if lo is None or hi is None:
        return fmt(v)
    return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _table_rows(sec: Section, multi_run: bool) -> tuple[list[str], list[list[str]]]:
    head = (["run"] if multi_run else []) + ["case", "status", "median step time [95% CI]",
                                             "time vs reference [95% CI]", "peak memory", "memory vs reference",
                                             "GFLOP/s", "of measured peak"]
    rows = []
    for r in sec.rows:
        lead = [r["run_id"]] if multi_run else []
        if r["status"] != "ok":
            rows.append(lead + [r["case_id"], r["status"], r.get("reason") or "", "", "", "", "", ""])
            continue
        ratio = "reference" if r.get("is_reference") else _ci(r.get("ratio"), r.get("ratio_lo"), r.get("ratio_hi"), _x)
        rows.append(lead + [
            r["case_id"], "ok", _ci(r.get("time"), r.get("time_lo"), r.get("time_hi"), _fmt_time), ratio,
            _fmt_bytes(r.get("peak_mem")), _x(r["mem_ratio"]) if r.get("mem_ratio") is not None else "-",
            f"{r['flop_rate'] / 1e9:.3g}" if r.get("flop_rate") else "-",
            f"{r['peak_frac']:.1%}" if r.get("peak_frac") is not None else "not measured"])
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
                         f"{mp.get('size')}x{mp.get('size')} GEMM, {m.get('n')} measurements, "
                         f"{mp.get('threads')} threads"])
        for dtype, why in mp.get("absent", {}).items():
            rows.append([run_id, mp.get("device", "?"), dtype, "not measured", why])
    return rows


def _claim_class(verdict: str) -> str:
    return {"holds": "good", "does not hold": "bad"}.get(verdict, "muted" if verdict == "not measured" else "")


def _history_regressions(rep: Report) -> list[list[str]]:
    return [[r["study"], r["case_id"], f"{r['ratio']:.2f}x", _fmt_time(r["before"]), _fmt_time(r["after"]),
             str(r["run_id"]), str(r.get("commit") or "-")[:12], str(r.get("torch") or "-"),
             str(r.get("previous_torch") or "-")] for r in rep.history.regressions]


HIST_HEAD = ["study", "case", "step", "before", "after", "first run", "commit", "torch", "torch before"]


def render_html(rep: Report) -> str:
    """index.html: every user-provided string escaped; only relative figures/*.png references."""
    multi = len(rep.runs) > 1
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    '<meta name="viewport" content="width=device-width, initial-scale=1">',
                    f"<title>{e(rep.title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(rep.title)}</h1>"]
    p.append("<p>" + "<br>".join(
        f"run <code>{e(h.get('run_id'))}</code> · suite {e(h.get('suite'))} · {e(h.get('created'))} · "
        f"{e((h.get('environment') or {}).get('cpu_model'))} · torch {e((h.get('environment') or {}).get('torch'))} · "
        f"{e((h.get('options') or {}).get('rounds'))} rounds" for h in rep.runs) + "</p>")
    for w in rep.env_warnings:
        p.append(f'<p class="warn">⚠ {e(w)}</p>')
    p.append('<p>Contents: ' + " · ".join(f'<a href="#study-{i}">{e(s.name)}</a>' for i, s in enumerate(rep.sections))
             + ' · <a href="#claims">claims checked</a> · <a href="#peak">machine peak</a> · '
               '<a href="#failed">failed cases</a> · <a href="#env">environment</a></p>')
    for i, sec in enumerate(rep.sections):
        p.append(f'<h2 id="study-{i}">Study: {e(sec.name)}</h2>')
        if sec.question:
            p.append(f"<p><em>{e(sec.question)}</em></p>")
        ref = ", ".join(f"{k}={v}" for k, v in sec.reference.items()) or "none"
        axes = "; ".join(f"{k} ∈ {v}" for k, v in sec.axes.items())
        p.append(f"<p class='muted'>axes: {e(axes)} · reference: {e(ref)}</p>")
        p.append("<p><strong>Verdict</strong></p><ul>" + "".join(f"<li class='verdict'>{e(v)}</li>" for v in sec.verdicts)
                 + "</ul>")
        head, rows = _table_rows(sec, multi)
        p.append(_html_table(head, rows))
        for f in sec.fits:
            ci = f" [{f['ci_low']:.2f}, {f['ci_high']:.2f}]" if f["ci_low"] is not None else " (2 points, no CI)"
            p.append(f"<p>scaling: {e(f['metric'])} ∝ {e(f['axis'])}<sup>{f['exponent']:.2f}</sup>{e(ci)} "
                     f"for {e(f['group'])}</p>")
        if sec.pareto:
            p.append(f"<p>Pareto front (time vs memory): {e(', '.join(sec.pareto))}</p>")
        for fig in sec.figures:
            p.append(f'<img src="figures/{e(fig)}" alt="{e(sec.name)}: {e(fig)}">')
        from sciml_bench.report.training import html_section

        p.append(html_section(sec) or "<p class='muted'>Convergence (loss curves with seed bands): "
                 "not measured by this study (no mode='fit' cases).</p>")
    p.append('<h2 id="roofline">Roofline</h2>')
    if rep.figures:
        p += [f'<img src="figures/{e(f)}" alt="roofline">' for f in rep.figures]
    else:
        p.append("<p>not measured (no FLOP counts in these runs)</p>")
    p.append('<h2 id="claims">Claims checked</h2><p class="muted">Each claim gets a verdict from these runs only; '
             '"not measured" means no case here tests it.</p>')
    p.append(_html_table(["claim", "verdict", "evidence (this hardware)", "how checked"],
                         [[c.claim, c.verdict, c.summary(), c.test] for c in rep.claims],
                         classes=[_claim_class(c.verdict) for c in rep.claims], col=1))
    p.append('<h2 id="peak">Machine peak (measured GEMM)</h2>')
    peak_rows = _peak_rows(rep)
    p.append(_html_table(["run", "device", "dtype", "GFLOP/s", "how"], peak_rows) if peak_rows else
             "<p>not measured (these runs have no machine-peak calibration)</p>")
    if rep.history is not None:
        p.append('<h2 id="history">History</h2>')
        if isinstance(rep.history, str):
            p.append(f"<p>{e(rep.history)}</p>")
        else:
            p.append(f"<p>{len(rep.history.runs)} runs of machine <code>{e(rep.history.machine)}</code>; "
                     f"{len(rep.history.regressions)} regressions (steps up by more than "
                     f"{rep.history.threshold:.0%}).</p>")
            if rep.history.regressions:
                p.append(_html_table(HIST_HEAD, _history_regressions(rep)))
            p += [f'<img src="figures/{e(f)}" alt="history">' for f in rep.history_figures]
    p.append('<h2 id="failed">Failed and skipped cases</h2>')
    p.append(_html_table(["run", "study", "case", "status", "reason"],
                         [[f["run_id"], f["study"], f["case_id"], f["status"], f["reason"] or ""] for f in rep.failed])
             if rep.failed else "<p>none: every case ran.</p>")
    p.append('<h2 id="env">Environment</h2>')
    keys = _env_keys(rep)
    p.append(_html_table(["field"] + [str(h.get("run_id")) for h in rep.runs],
                         [[k] + [_env_value((h.get("environment") or {}).get(k)) for h in rep.runs] for k in keys]))
    p.append("<p class='muted'>Generated by sciml-bench report. Opens from disk; no scripts, no network.</p>")
    p.append("</body></html>")
    return "\n".join(p) + "\n"


def _html_table(head: list[str], rows: list[list[str]], classes: list[str] | None = None, col: int = -1) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        cells = []
        for j, c in enumerate(r):
            cls = f' class="{classes[i]}"' if classes and j == col and classes[i] else ""
            cells.append(f"<td{cls}>{e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _md_cell(x: Any) -> str:
    return html.escape(str(x), quote=False).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(map(_md_cell, head)) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(rep: Report) -> str:
    """report.md: the same content as index.html, figures linked relatively."""
    multi = len(rep.runs) > 1
    p = [f"# {_md_cell(rep.title)}", ""]
    for h in rep.runs:
        env = h.get("environment") or {}
        p.append(f"- run `{h.get('run_id')}` · suite {_md_cell(h.get('suite'))} · {h.get('created')} · "
                 f"{_md_cell(env.get('cpu_model'))} · torch {env.get('torch')}")
    p += [""] + [f"> ⚠ {_md_cell(w)}" for w in rep.env_warnings]
    for sec in rep.sections:
        p += ["", f"## Study: {_md_cell(sec.name)}", ""]
        if sec.question:
            p += [f"*{_md_cell(sec.question)}*", ""]
        p += [f"- {_md_cell(v)}" for v in sec.verdicts] + [""]
        head, rows = _table_rows(sec, multi)
        p += [_md_table(head, rows), ""]
        from sciml_bench.report.training import markdown_section

        p += markdown_section(sec)
        for f in sec.fits:
            ci = f" [{f['ci_low']:.2f}, {f['ci_high']:.2f}]" if f["ci_low"] is not None else " (2 points, no CI)"
            p.append(f"- scaling: {f['metric']} ∝ {f['axis']}^{f['exponent']:.2f}{ci} for {_md_cell(f['group'])}")
        p += [f"![{_md_cell(sec.name)}](figures/{fig})" for fig in sec.figures]
    p += ["", "## Roofline", ""] + ([f"![roofline](figures/{f})" for f in rep.figures] or ["not measured"])
    p += ["", "## Claims checked", "", _md_table(["claim", "verdict", "evidence (this hardware)"],
                                                 [[c.claim, c.verdict, c.summary()] for c in rep.claims])]
    p += ["", "## Machine peak (measured GEMM)", ""]
    peak_rows = _peak_rows(rep)
    p.append(_md_table(["run", "device", "dtype", "GFLOP/s", "how"], peak_rows) if peak_rows else "not measured")
    if rep.history is not None:
        p += ["", "## History", ""]
        if isinstance(rep.history, str):
            p.append(_md_cell(rep.history))
        else:
            p.append(f"{len(rep.history.runs)} runs; {len(rep.history.regressions)} regressions.")
            if rep.history.regressions:
                p += ["", _md_table(HIST_HEAD, _history_regressions(rep))]
            p += [f"![history](figures/{f})" for f in rep.history_figures]
    p += ["", "## Failed and skipped cases", ""]
    p.append(_md_table(["run", "study", "case", "status", "reason"],
                       [[f["run_id"], f["study"], f["case_id"], f["status"], f["reason"] or ""] for f in rep.failed])
             if rep.failed else "none: every case ran.")
    p += ["", "## Environment", ""]
    p.append(_md_table(["field"] + [str(h.get("run_id")) for h in rep.runs],
                       [[k] + [_env_value((h.get("environment") or {}).get(k)) for h in rep.runs]
                        for k in _env_keys(rep)]))
    return "\n".join(p) + "\n"
