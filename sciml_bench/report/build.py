"""Build reports/<name>/ (index.html, report.md, figures/*.png) from one or more run files."""
from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sciml_bench.errors import UsageError
from sciml_bench.measure.environment import differences
from sciml_bench.report import figures
from sciml_bench.report.claims import Claim, check_claims
from sciml_bench.results import read_run

FAILED = ("error", "crashed", "timeout", "oom", "skipped")


@dataclass
class Section:
    """One study in the report: its question, table rows, verdicts, figures and scaling fits."""

    name: str
    question: str
    reference: dict[str, Any]
    axes: dict[str, list[Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    fits: list[dict[str, Any]] = field(default_factory=list)
    pareto: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)  # fit studies: see report/training.py


def _fmt_time(s: float | None) -> str:
    from sciml_bench.compare import fmt_value

    return fmt_value(s, "s")


def _fmt_bytes(b: float | None) -> str:
    from sciml_bench.compare import fmt_value

    return fmt_value(b, "B")


def _label(case: dict[str, Any], axes: dict[str, list[Any]], reference: dict[str, Any]) -> str:
    """A case named by its axis values: the varied (reference) fields first, then the context."""
    varied = [f"{k}={case.get(k)}" for k in axes if k in reference]
    ctx = [f"{k}={case.get(k)}" for k in axes if k not in reference]
    if varied and ctx:
        return f"{', '.join(varied)} on {', '.join(ctx)}"
    return ", ".join(varied or ctx) or "baseline"


def _row(rec: dict[str, Any], sec: Section, run_id: str, peaks: dict[str, float]) -> dict[str, Any]:
    from sciml_bench.measure.peak import peak_for
    from sciml_bench.runner import peak_memory

    m = rec.get("metrics", {})
    row: dict[str, Any] = {"run_id": run_id, "case_id": rec["case_id"], "case": rec["case"], "status": rec["status"],
                           "reason": rec.get("reason"), "label": _label(rec["case"], sec.axes, sec.reference)}
    if rec["status"] != "ok":
        return row
    st = m.get("step_time", {})
    row.update(time=st.get("value"), time_lo=st.get("ci_low"), time_hi=st.get("ci_high"), rounds=st.get("n"))
    tr = m.get("time_ratio")
    if tr:
        row.update(ratio=tr["value"], ratio_lo=tr.get("ci_low"), ratio_hi=tr.get("ci_high"),
                   is_reference=tr.get("reference") == rec["case_id"])
    pm = peak_memory(rec)
    if pm:
        row.update(peak_mem=pm[1], peak_mem_kind="CUDA allocator" if pm[0] == "peak_cuda_bytes" else "CPU tensors")
    if "memory_ratio" in m:
        row["mem_ratio"] = m["memory_ratio"]["value"]
    if "flop_rate" in m:
        row.update(flop_rate=m["flop_rate"]["value"], flops=m["flops"]["value"])
        peak = peak_for({"metrics": {k: {"value": v} for k, v in peaks.items()}}, rec["case"].get("precision", "fp32"))
        if peak:
            row["peak_frac"] = m["flop_rate"]["value"] / peak
    for q in ("final_loss", "val_loss", "accuracy"):
        if q in m:
            row.setdefault("quality", []).append((q, m[q]))
    return row


def _verdicts(sec: Section) -> list[str]:
    """Plain-words lines: speedup/slowdown with CI and memory ratio, or 'not significant'."""
    out = []
    for r in sec.rows:
        if r.get("ratio") is None or r.get("is_reference"):
            continue
        ratio, lo, hi = r["ratio"], r.get("ratio_lo"), r.get("ratio_hi")
        mem = f" and {r['mem_ratio']:.2f}x memory" if r.get("mem_ratio") is not None else ""
        if lo is None or hi is None:
            out.append(f"{r['label']}: {ratio:.2f}x the reference's time{mem} (no CI: too few rounds)")
        elif lo <= 1 <= hi:
            out.append(f"{r['label']}: not significant ({ratio:.2f}x time, CI [{lo:.2f}-{hi:.2f}] includes 1){mem}")
        elif ratio < 1:
            out.append(f"{r['label']}: {1 / ratio:.2f}x faster [{1 / hi:.2f}-{1 / lo:.2f}]{mem}")
        else:
            out.append(f"{r['label']}: {ratio:.2f}x slower [{lo:.2f}-{hi:.2f}]{mem}")
    if not out:
        out.append("no ratios against a reference (no reference set, or the reference case failed)")
    return out


@dataclass
class Report:
    """Everything a report shows, before rendering."""

    title: str
    runs: list[dict[str, Any]]  # headers, with "path"
    sections: list[Section]
    claims: list[Claim]
    failed: list[dict[str, Any]]
    peaks: dict[str, dict[str, Any]]  # run_id -> machine_peak record
    env_warnings: list[str]
    figures: list[str]
    history: Any = None
    history_figures: list[str] = field(default_factory=list)


def collect(run_paths: list[str | os.PathLike], title: str | None = None) -> tuple[Report, list[dict[str, Any]]]:
    """Read the runs and assemble the report's content (no figures yet). Raises UsageError on bad input."""
    if not run_paths:
        raise UsageError("report needs at least one run file")
    headers, all_records = [], []
    for p in run_paths:
        h, recs = read_run(p)
        h = dict(h, path=str(p))
        headers.append(h)
        for r in recs:
            all_records.append(dict(r, _run=h.get("run_id")))
    env0 = headers[0].get("environment", {})
    warnings = []
    for h in headers[1:]:
        d = differences(env0, h.get("environment", {}))
        if d:
            warnings.append(f"run {h.get('run_id')} differs from {headers[0].get('run_id')} in: " +
                            "; ".join(f"{k}: {a} vs {b}" for k, (a, b) in d.items()) +
                            ". Numbers from different machines or software are not directly comparable.")
    peaks = {h.get("run_id"): h["machine_peak"] for h in headers if h.get("machine_peak")}
    flat_peaks: dict[str, float] = {}
    for mp in peaks.values():  # first run's value per dtype
        for k, v in mp.get("metrics", {}).items():
            flat_peaks.setdefault(k, v["value"])
    sections: dict[str, Section] = {}
    for h in headers:
        for name, st in (h.get("studies") or {}).items():
            sections.setdefault(name, Section(name, st.get("question", ""), st.get("reference") or {},
                                              st.get("axes") or {}))
    for r in all_records:
        sec = sections.setdefault(r["study"], Section(r["study"], "", {}, {}))
        sec.rows.append(_row(r, sec, r["_run"], flat_peaks))
    for sec in sections.values():
        sec.verdicts = _verdicts(sec)
    failed = [dict(study=r["study"], case_id=r["case_id"], status=r["status"], reason=r.get("reason"), run_id=r["_run"])
              for r in all_records if r["status"] in FAILED]
    title = title or ("sciml-bench report: " + ", ".join(str(h.get("run_id")) for h in headers))
    rep = Report(title, headers, list(sections.values()), check_claims(all_records), failed, peaks, warnings, [])
    rep._flat_peaks = flat_peaks  # type: ignore[attr-defined]
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
        from sciml_bench.compare import history

        try:
            rep.history = history([history_dir])
        except UsageError as e:
            rep.history = str(e)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        fig_dir = tmp / "figures"
        fig_dir.mkdir()
        for sec in rep.sections:
            ok = [r for r in sec.rows if r["status"] == "ok"]
            for name in (figures.speedup_bars(sec.name, ok, fig_dir), figures.memory_bars(sec.name, ok, fig_dir)):
                if name:
                    sec.figures.append(name)
            name, sec.fits = figures.scaling(sec.name, sec.axes, ok, fig_dir)
            if name:
                sec.figures.append(name)
            name, sec.pareto = figures.pareto(sec.name, ok, fig_dir)
            if name:
                sec.figures.append(name)
        from sciml_bench.report import training

        training.attach(rep.sections, records, fig_dir)  # loss curves, cost vs benefit, gradient health
        name = figures.roofline([r for s in rep.sections for r in s.rows if r["status"] == "ok"],
                                rep._flat_peaks, fig_dir)  # type: ignore[attr-defined]
        if name:
            rep.figures.append(name)
        if rep.history is not None and not isinstance(rep.history, str):
            from sciml_bench.compare import history_figures

            rep.history_figures = history_figures(rep.history, fig_dir, limit=12)
        from sciml_bench.report.render import render_html, render_markdown

        (tmp / "index.html").write_text(render_html(rep), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(rep), encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(_summary(rep), indent=1, default=str), encoding="utf-8")
        os.chmod(tmp, 0o755)
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
            "failed": rep.failed, "env_warnings": rep.env_warnings}


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)
