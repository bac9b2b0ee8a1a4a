"""Build reports/<name>/ (index.html, report.md, figures/*.png) from one or more run files."""
from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from sciml_bench.errors import UsageError
from sciml_bench.measure.environment import differences
from sciml_bench.report import figures
from sciml_bench.report.claims import check_claims
from sciml_bench.report.content import (METRIC_LABELS, PEAK_FLAG, Report, Section, fmt_metric, present_metrics,
                                        status_counts, study_metrics)
from sciml_bench.report.render import render_html, render_markdown
from sciml_bench.report.words import ratio_words, resolvable, significant
from sciml_bench.results import peak_memory, read_run, starved_unreliable

__all__ = ["Report", "Section", "build_report", "collect"]

FAILED = ("error", "crashed", "timeout", "oom", "skipped")


def _label(case: dict[str, Any], axes: dict[str, list[Any]], reference: dict[str, Any]) -> str:
    """A case named by its axis values: the varied (reference) fields first, then the context."""
    varied = [f"{k}={case.get(k)}" for k in axes if k in reference]
    ctx = [f"{k}={case.get(k)}" for k in axes if k not in reference]
    if varied and ctx:
        return f"{', '.join(varied)} on {', '.join(ctx)}"
    return ", ".join(varied or ctx) or "baseline"


def _row(rec: dict[str, Any], sec: Section, run_id: str, peaks: dict[str, float]) -> dict[str, Any]:
    from sciml_bench.measure.peak import peak_for

    m = rec.get("metrics", {})
    row: dict[str, Any] = {"run_id": run_id, "case_id": rec["case_id"], "case": rec["case"], "status": rec["status"],
                           "reason": rec.get("reason"), "label": _label(rec["case"], sec.axes, sec.reference),
                           "absent": rec.get("absent") or {}, "metrics": m,
                           "machine": (rec.get("machine") or {}).get("hostname") or (rec.get("machine") or {}).get("run_id")}
    if rec["status"] != "ok":
        return row
    st = m.get("step_time", {})
    row.update(time=st.get("value"), time_lo=st.get("ci_low"), time_hi=st.get("ci_high"), rounds=st.get("n"),
               time_ci_level=st.get("ci_level", 0.95))  # asv imports: 99%
    tr = m.get("time_ratio")
    if tr:
        row.update(ratio=tr["value"], ratio_lo=tr.get("ci_low"), ratio_hi=tr.get("ci_high"),
                   is_reference=tr.get("reference") == rec["case_id"], ratio_passes=tr.get("pass_ratios"),
                   ratio_within=tr.get("ci_within"), ratio_method=tr.get("ci_method"))
    row["trust"] = [w for w in ("starved" if starved_unreliable(rec) else None,
                                "overhead-dominated" if (rec.get("overhead") or {}).get("dominated") else None) if w]
    pm = peak_memory(rec)
    if pm:
        row.update(peak_mem=pm[1], peak_mem_kind="CUDA allocator" if pm[0] == "peak_cuda_bytes" else "CPU tensors")
    if "memory_ratio" in m:
        row["mem_ratio"] = m["memory_ratio"]["value"]
    if "flop_rate" in m:
        row.update(flop_rate=m["flop_rate"]["value"], flops=m["flops"]["value"],
                   flops_partial=m["flops"].get("coverage") == "partial")  # a lower bound: some ops uncounted
        peak = peak_for({"metrics": {k: {"value": v} for k, v in peaks.items()}}, rec["case"].get("precision", "fp32"))
        if peak:
            row["peak_frac"] = m["flop_rate"]["value"] / peak
    for q in ("final_loss", "val_loss", "accuracy"):
        if q in m:
            row.setdefault("quality", []).append((q, m[q]))
    return row


def _extras(sec: Section, r: dict[str, Any]) -> str:
    """The study's promised extra metrics of one row, in words ("compile time 1.3 s, ...")."""
    parts = []
    for name in sec.metrics:
        if name in r["metrics"] or name in r["absent"]:
            parts.append(f"{METRIC_LABELS.get(name, (name,))[0]} "
                         f"{fmt_metric(name, r['metrics'].get(name), r['absent'].get(name))}")
    return "; ".join(parts)


def _why_no_ratio(r: dict[str, Any]) -> str:
    """The real reason a non-reference row has no ratio against its reference."""
    if r["status"] != "ok":
        return f"{r['status']}: {r.get('reason') or 'no reason recorded'}"
    return r["absent"].get("time_ratio") or "no ratio recorded (the study sets no reference)"


def _verdicts(sec: Section, multi_run: bool = False) -> list[str]:
    """Plain-words lines: "1.36x slower [CI]" next to its own number, memory, the study's metrics."""
    out = []
    for r in sec.rows:
        if r.get("is_reference"):
            extra = _extras(sec, r)
            if extra:
                out.append(f"{_run_tag(r, multi_run)}{r['label']} (reference): {extra}")
            continue
        if r.get("ratio") is None:
            if sec.reference:
                out.append(f"{_run_tag(r, multi_run)}{r['label']}: no ratio; {_why_no_ratio(r)}")
            continue
        ratio, lo, hi = r["ratio"], r.get("ratio_lo"), r.get("ratio_hi")
        line = ratio_words(ratio, lo, hi) + _how_sure(r)
        if lo is None or hi is None:
            line += " (no CI: too few rounds)"
        if r.get("mem_ratio") is not None:
            line += f"; {ratio_words(r['mem_ratio'], kind='memory')}"
        extra = _extras(sec, r)
        out.append(f"{_run_tag(r, multi_run)}{r['label']}: {line}" + (f"; {extra}" if extra else ""))
    if not out:
        out.append("no ratios: the study sets no reference" if not sec.reference else
                   "no ratios: no case of this study has a reference in these runs")
    return out


def _run_tag(r: dict[str, Any], multi_run: bool) -> str:
    return f"[{r['run_id']}] " if multi_run else ""


def _how_sure(r: dict[str, Any]) -> str:
    """Where a verdict's CI comes from: the passes' own ratios (and how many agree), the within-run CI, flags."""
    parts = []
    passes = r.get("ratio_passes") or []
    if len(passes) > 1:
        side = [p > 1 for p in passes]
        agree = max(sum(side), len(side) - sum(side))
        parts.append(f"passes {', '.join(f'{p:.2f}x' for p in passes)}: {agree} of {len(passes)} on the same side "
                     f"of 1")
        within = r.get("ratio_within") or [None, None]
        if None not in within:
            parts.append(f"within-run CI [{within[0]:.2f}-{within[1]:.2f}]")
    parts += [f"{t}: do not rely on it" for t in r.get("trust", [])]
    return f" ({'; '.join(parts)})" if parts else ""



def _answer(sec: Section, multi_run: bool, short: bool = False) -> str:
    """One line for the summary: per varied value, how it did in each context ("bf16: 1.6x faster for
    small_cnn, ..."). ``short`` gives the range over contexts instead ("bf16: 1.6x faster to 1.6x slower")."""
    groups: dict[str, list[tuple[float | None, str]]] = {}
    for r in sec.rows:
        if r.get("ratio") is None or r.get("is_reference"):
            continue
        varied = ", ".join(_value(k, r["case"].get(k)) for k in sec.axes if k in sec.reference) or r["label"]
        ctx = ", ".join(str(r["case"].get(k)) for k in sec.axes if k not in sec.reference)
        lo, hi = r.get("ratio_lo"), r.get("ratio_hi")
        clear = significant(lo, hi) or lo is None
        words = ratio_words(r["ratio"], ci=False) if clear else "no clear difference"
        groups.setdefault(_run_tag(r, multi_run) + varied, []).append(
            (r["ratio"] if clear else None, words + (f" for {ctx}" if ctx else "")))
    if not groups:
        skipped = sum(r["status"] == "skipped" for r in sec.rows)
        failed = sum(r["status"] in FAILED and r["status"] != "skipped" for r in sec.rows)
        ok = sum(r["status"] == "ok" for r in sec.rows)
        return (f"no ratio against {_fmt_ref(sec)}: {ok} ok, {skipped} skipped, {failed} failed"
                if sec.reference else f"{ok} cases measured (no reference: see its table)")
    if not short:
        return "; ".join(f"{k}: {', '.join(w for _, w in v)}" for k, v in groups.items()) + f" (vs {_fmt_ref(sec)})"
    out = []
    for k, v in groups.items():
        clear = sorted(x for x, _ in v if x is not None)
        if not clear:
            out.append(f"{k}: no clear difference")
            continue
        lo_w, hi_w = ratio_words(clear[0], ci=False), ratio_words(clear[-1], ci=False)
        if lo_w == hi_w:
            span = lo_w
        elif (clear[0] < 1) == (clear[-1] < 1):  # one direction: "1.41x-1.43x slower"
            a, b = sorted(max(x, 1 / x) for x in (clear[0], clear[-1]))
            span = f"{a:.2f}x-{b:.2f}x {'faster' if clear[0] < 1 else 'slower'}"
        else:
            span = f"{lo_w} to {hi_w}"
        out.append(f"{k}: {span}" + (f" ({len(v) - len(clear)} unclear)" if len(clear) < len(v) else ""))
    return "; ".join(out)


def _value(axis: str, v: Any) -> str:
    """An axis value that names itself ("bf16", "gru"), or "axis=value" for bare numbers and booleans."""
    return str(v) if isinstance(v, str) else f"{axis}={v}"


def _fmt_ref(sec: Section) -> str:
    return ", ".join(f"{k}={v}" for k, v in sec.reference.items()) or "no reference"


def _trust(headers: list[dict[str, Any]], records: list[dict[str, Any]], warnings: list[str],
           rows: list[dict[str, Any]]) -> list[str]:
    """Lines saying how far to trust the numbers: cases counted, CI method, load warnings, flagged points."""
    out = [f"{len(records)} cases: {status_counts(records)}."]
    methods = {r["metrics"]["time_ratio"].get("ci_method", "percentile bootstrap of the median per-round ratio, "
                                                             "resampling paired rounds")
               for r in records if r["status"] == "ok" and "time_ratio" in r.get("metrics", {})}
    rounds = sorted({(h.get("options") or {}).get("rounds") for h in headers} - {None})
    if methods:
        out.append(f"95% CIs of ratios: {'; '.join(sorted(methods))}"
                   + (f" ({'/'.join(map(str, rounds))} rounds per case)." if rounds else "."))
    busy = [h.get("run_id") for h in headers for w in (h.get("warnings") or [])] + \
        [r["case_id"] for r in records if starved_unreliable(r) or (r.get("warnings"))]
    if busy:
        out.append(f"⚠ busy machine: {len(busy)} run(s)/case(s) flagged while measuring "
                   f"({', '.join(map(str, busy[:5]))}{', ...' if len(busy) > 5 else ''}); their numbers are noisier.")
    over = [r for r in rows if (r.get("peak_frac") or 0) > PEAK_FLAG]
    if over:
        out.append(f"⚠ {len(over)} case(s) ran above the measured GEMM peak (up to {max(r['peak_frac'] for r in over):.0%}):"
                   " either the calibration under-measured this machine (it times a GEMM and a 3x3 convolution "
                   "and keeps the faster; other kernels can beat both) or the FLOP count is too high. Those "
                   "points are flagged with ⚠; the fractions of this run are not trustworthy.")
    out += [f"⚠ {w}" for w in warnings]
    return out


def collect(run_paths: list[str | os.PathLike], title: str | None = None) -> tuple[Report, list[dict[str, Any]]]:
    """Read the runs and assemble the report's content (no figures yet). Raises UsageError on bad input."""
    if not run_paths:
        raise UsageError("report needs at least one run file")
    headers, all_records = [], []
    for p in run_paths:
        h, recs = read_run(p)
        h = dict(h, path=str(p))
        headers.append(h)
        for r in recs:  # an A/B run's arms are told apart like runs: "<run id> [base]"
            all_records.append(dict(r, _run=h.get("run_id") + (f" [{r['arm']}]" if r.get("arm") else "")))
    multi = len(headers) > 1 or any(r.get("arm") for r in all_records)
    env0 = headers[0].get("environment", {})
    warnings = []
    for h in headers[1:]:
        d = differences(env0, h.get("environment", {}))
        if d:
            warnings.append(f"run {h.get('run_id')} differs from {headers[0].get('run_id')} in: " +
                            "; ".join(f"{k}: {a} vs {b}" for k, (a, b) in d.items()) +
                            ". Numbers from different machines or software are not directly comparable.")
    from sciml_bench.shard import machine_warnings

    warnings += [w for h in headers for w in h.get("merge_warnings", [])] + machine_warnings(all_records)
    peaks = {h.get("run_id"): h["machine_peak"] for h in headers if h.get("machine_peak")}
    flat_peaks: dict[str, float] = {}
    for mp in peaks.values():  # first run's value per dtype
        for k, v in mp.get("metrics", {}).items():
            flat_peaks.setdefault(k, v["value"])
    sections: dict[str, Section] = {}
    for h in headers:
        for name, st in (h.get("studies") or {}).items():
            axes = st.get("axes") or {}
            sections.setdefault(name, Section(name, st.get("question", ""), st.get("reference") or {}, axes,
                                              metrics=study_metrics(axes, st.get("metrics"))))
    for r in all_records:
        sec = sections.setdefault(r["study"], Section(r["study"], "", {}, {}))
        sec.rows.append(_row(r, sec, r["_run"], flat_peaks))
    for sec in sections.values():
        sec.metrics += present_metrics(sec.rows, sec.metrics)
        sec.verdicts = _verdicts(sec, multi)
        sec.answer = _answer(sec, multi)
        sec.short_answer = _answer(sec, multi, short=True)
        # rerun intervals only: a one-pass run's within-run CI does not say what a rerun would show
        sec.resolves = resolvable([(r.get("ratio_lo"), r.get("ratio_hi")) for r in sec.rows
                                   if r.get("ratio") is not None and not r.get("is_reference")
                                   and (r.get("ratio_method") or "").startswith("rerun interval")])
    from sciml_bench.results import trust_warnings

    warnings += trust_warnings(all_records)  # shown at the top, like environment differences
    failed = [dict(study=r["study"], case_id=r["case_id"], status=r["status"], reason=r.get("reason"), run_id=r["_run"])
              for r in all_records if r["status"] in FAILED]
    title = title or ("sciml-bench report: " + ", ".join(str(h.get("run_id")) for h in headers))
    rows = [r for s in sections.values() for r in s.rows]
    ab = None
    if len(headers) == 1 and headers[0].get("ab"):
        from sciml_bench.compare import compare_ab

        ab = compare_ab(run_paths[0])
    rep = Report(title, headers, list(sections.values()), check_claims(all_records), failed, peaks, warnings, [],
                 flat_peaks=flat_peaks, trust=_trust(headers, all_records, warnings, rows), ab=ab)
    return rep, all_records


def build_report(run_paths: list[str | os.PathLike], out: str | os.PathLike, title: str | None = None,
                 history_dir: str | os.PathLike | None = None) -> Path:
    """Write ``out/index.html``, ``out/report.md`` and ``out/figures/*.png`` from the given runs.

    Everything is written into a temporary directory beside ``out`` and renamed into place at the
    end, so bad input or a crash never leaves a half-written report (an existing report at
    ``out`` is replaced only once the new one is complete). ``history_dir`` adds a history
    section (trends and regressions on this machine) built from the run files in that directory.

    Raises UsageError for unreadable runs or an ``out`` that is an existing file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    rep, records = collect(run_paths, title)
    if history_dir is not None:
        from sciml_bench.history import history

        try:
            rep.history = history([history_dir])
        except UsageError as e:
            rep.history = str(e)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fig_dir = tmp / "figures"
        fig_dir.mkdir()

        def tag(r: dict[str, Any]) -> str:  # before a row's name in a figure: in a multi-run report, its run
            return _run_tag(r, rep.multi_run)

        for sec in rep.sections:
            ok = [dict(r, label=tag(r) + r["label"]) for r in sec.rows if r["status"] == "ok"]
            name = figures.bars(sec.name, ok, fig_dir)
            if name:
                sec.figures.append(name)
            name, sec.fits = figures.scaling(sec.name, sec.axes, ok, fig_dir)
            if name:
                sec.figures.append(name)
            name, sec.pareto = figures.pareto(sec.name, ok, fig_dir)
            if name:
                sec.figures.append(name)
        rep.forest = figures.forest(rep.sections, fig_dir, tag)
        from sciml_bench.report import recommend

        rep.recommend = recommend.views(rep.runs, records, fig_dir)  # recommend runs: the answer and its fates
        from sciml_bench.report import training

        training.attach(rep.sections, records, fig_dir)  # loss curves, cost vs benefit, gradient health
        name = figures.roofline([r for s in rep.sections for r in s.rows if r["status"] == "ok"],
                                rep.flat_peaks, fig_dir)
        if name:
            rep.figures.append(name)
        from sciml_bench.report import profiles

        rep.profiles = profiles.collect(records, tmp, fig_dir)  # copies profile dirs into the report
        if rep.history is not None and not isinstance(rep.history, str):
            from sciml_bench.history import history_figures

            rep.history_figures = history_figures(rep.history, fig_dir, limit=12)
        (tmp / "index.html").write_text(render_html(rep), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(rep), encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(_summary(rep), indent=1, default=str), encoding="utf-8")
        umask = os.umask(0)  # mkdtemp made it 0700; give it what a plain mkdir would under the user's umask
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{time.time_ns()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _summary(rep: Report) -> dict[str, Any]:
    """Machine-readable digest of the report: verdicts, claims and failures."""
    return {"title": rep.title, "runs": [h.get("run_id") for h in rep.runs],
            "studies": {s.name: {"verdicts": s.verdicts, "fits": s.fits, "pareto_front": s.pareto} for s in rep.sections},
            "claims": [{"claim": c.claim, "verdict": c.verdict, "evidence": c.summary()} for c in rep.claims],
            "answers": {s.name: s.answer for s in rep.sections}, "trust": rep.trust,
            "resolves": {s.name: s.resolves for s in rep.sections},
            "failed": rep.failed, "env_warnings": rep.env_warnings}


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)
