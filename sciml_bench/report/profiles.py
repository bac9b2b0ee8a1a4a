"""Report views of profiled cases: phase split per study, top operators, memory timeline, trace links.

Reads only stored results: the phase metrics and the ``profile`` entry of each record, plus the
files of its profile directory, which are copied into the report (``profiles/<study>/<case>/``)
so that the report's links keep working when it is moved.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sciml_bench.report.content import Block, Part
from sciml_bench.report.figures import safe_name, save, plt

COLORS = {"data": "#8c6d31", "h2d": "#e7ba52", "forward": "#3182bd", "loss": "#9ecae1", "backward": "#e6550d",
          "optimizer": "#31a354"}


def phase_order(rec: dict[str, Any]) -> list[str]:
    """The phases a record's step has, in step order (the order the phases pass stored)."""
    m = rec.get("metrics", {})
    order = (m.get("phase_step_time") or {}).get("phases") or list(COLORS)
    return [p for p in order if f"phase_{p}_time" in m]


@dataclass
class CaseProfile:
    """One profiled case as the report shows it; paths are relative to the report directory."""

    study: str
    case_id: str
    run_id: str
    top_ops: list[dict[str, Any]]
    steps: int
    cuda: bool
    memory: dict[str, Any]
    dir: str | None = None  # copied profile directory, or None when the original was not found
    files: dict[str, str] = field(default_factory=dict)
    figure: str | None = None  # top-operator bars
    note: str = ""


@dataclass
class ProfileViews:
    phase_figures: list[tuple[str, str]] = field(default_factory=list)  # (study, figure)
    phase_rows: list[list[str]] = field(default_factory=list)
    cases: list[CaseProfile] = field(default_factory=list)


def collect(records: list[dict[str, Any]], out: Path, fig_dir: Path) -> ProfileViews:
    """Copy profile directories into ``out/profiles`` and draw the figures into ``fig_dir``."""
    views = ProfileViews()
    ok = [r for r in records if r["status"] == "ok"]
    multi = len({r.get("_run") for r in ok}) > 1
    by_study: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        if "phase_step_time" in r.get("metrics", {}):
            by_study.setdefault(r["study"], []).append(r)
    for study, recs in by_study.items():
        name = _phase_bars(study, recs, fig_dir, multi)
        views.phase_figures.append((study, name))
        for r in recs:
            m = r["metrics"]
            views.phase_rows.append([study, (f"{r.get('_run')}: " if multi else "") + r["case_id"]] + [
                f"{m[f'phase_{p}_time']['value'] * 1e3:.3g} ms ({m[f'phase_{p}_time']['share']:.0%})"
                if f"phase_{p}_time" in m else "-" for p in COLORS] + [
                f"{m['phase_step_time']['value'] * 1e3:.3g} ms", f"{m['phase_gap']['value']:+.1%}"])
    for r in ok:
        prof = r.get("profile")
        if not prof:
            continue
        cp = CaseProfile(r["study"], r["case_id"], str(r.get("_run")), prof.get("top_ops", []), prof.get("steps", 0),
                         "CUDA" in prof.get("activities", []), prof.get("memory") or {})
        src = Path(prof["dir"])
        rel = Path("profiles", *([safe_name(str(r.get("_run")))] if multi else []), src.parent.name, src.name)
        if src.is_dir():
            shutil.copytree(src, out / rel, dirs_exist_ok=True)
            cp.dir = rel.as_posix()
            cp.files = {k: (rel / v).as_posix() for k, v in prof.get("files", {}).items()
                        if isinstance(v, str) and (out / rel / v).is_file()}
        else:
            cp.note = f"profile directory not found: {src} (tables below come from the results record)"
        cp.figure = _op_bars(cp, fig_dir)
        views.cases.append(cp)
    return views


def _phase_bars(study: str, recs: list[dict[str, Any]], fig_dir: Path, multi: bool) -> str:
    """Stacked horizontal bars: ms per phase of each case's step, so a study shows which phase moved."""
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(recs) + 1.5))
    labels, labeled = [], set()
    for y, r in enumerate(recs):
        m, left = r["metrics"], 0.0
        for p in phase_order(r):
            w = m[f"phase_{p}_time"]["value"] * 1e3
            ax.barh(y, w, left=left, color=COLORS.get(p, "#ccc"), label=None if p in labeled else p)
            labeled.add(p)
            left += w
        gap = m["phase_step_time"]["value"] * 1e3 - left
        if gap > 0:
            ax.barh(y, gap, left=left, color="#dddddd")
        labels.append((f"{r.get('_run')}: " if multi else "") + r["case_id"])
    ax.set_yticks(range(len(recs)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per step (phases pass; grey: outside every phase)")
    ax.set_title(f"{study}: phase split of a step", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, fig_dir, f"profile-phases-{safe_name(study)}.png")


def _op_bars(cp: CaseProfile, fig_dir: Path) -> str | None:
    """Top operators by self time per step (CPU, and device on CUDA)."""
    ops = cp.top_ops[:10]
    if not ops:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(ops) + 1.4))
    y = range(len(ops))
    ax.barh([v - 0.2 for v in y] if cp.cuda else list(y), [o["self_cpu_us"] / 1e3 for o in ops],
            height=0.4 if cp.cuda else 0.7, color="#3182bd", label="self CPU")
    if cp.cuda:
        ax.barh([v + 0.2 for v in y], [o["self_device_us"] / 1e3 for o in ops], height=0.4, color="#e6550d",
                label="self device")
    ax.set_yticks(list(y), [f"{o['name']} {o['input_shapes'][:40]}" for o in ops], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel(f"ms per step (mean of {cp.steps} profiled steps)")
    ax.set_title(f"{cp.study} / {cp.case_id}: top operators", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, fig_dir, f"profile-ops-{safe_name(cp.study)}-{safe_name(cp.case_id)}.png")


PHASE_HEAD = ["study", "case", *COLORS, "step", "gap"]


def how_to_open(cp: CaseProfile) -> list[str]:
    """One line each on opening the trace in Perfetto, TensorBoard and HTA."""
    trace = cp.files.get("trace", "<trace>")
    run_dir = cp.dir or "<profile dir>"
    logdir = run_dir.rsplit("/", 1)[0]
    return [f"Perfetto: open ui.perfetto.dev, choose \"Open trace file\" and pick {trace} "
            f"(read in the browser, not uploaded).",
            f"TensorBoard: pip install torch-tb-profiler, then tensorboard --logdir {logdir} "
            f"(PyTorch Profiler tab, run {run_dir.rsplit('/', 1)[-1]}).",
            f"HTA: TraceAnalysis(trace_dir=\"{run_dir}\").get_gpu_kernel_breakdown() "
            + ("(GPU kernels and temporal breakdown)." if cp.cuda else
               "(a CPU-only trace has no GPU kernels: the kernel breakdown is empty and the temporal "
               "breakdown fails; see the README).")]


def _memory_line(cp: CaseProfile) -> str:
    mem = cp.memory
    if mem.get("peak_bytes") is None:
        return f"memory timeline: {mem.get('reason', 'not recorded')}"
    return (f"memory peak {mem['peak_bytes'] / 2**20:.2f} MiB ({mem.get('device')}) in phase "
            f"{mem.get('peak_phase')}, {mem.get('peak_ms', 0):.1f} ms into the profiled steps")


def profiles_part(rep) -> list[Part]:
    """The report's "Profiles" part (a builder of render.SECTIONS): phase split, then each profiled case."""
    views: ProfileViews | None = rep.profiles
    if views is None or (not views.phase_rows and not views.cases):
        return []
    b: list[Block] = []
    if views.phase_rows:
        b.append(("p", "Phase split of a step, timed in its own pass after the timed rounds (the rounds in the "
                       "study tables are unaffected)."))
        b.append(("table", PHASE_HEAD, views.phase_rows, None, -1))
        b += [("img", f, f"{s}: phase split") for s, f in views.phase_figures]
    for cp in views.cases:
        b.append(("strong", f"{cp.study} / {cp.case_id}"))
        if cp.note:
            b.append(("warn", cp.note))
        if cp.files:
            b.append(("links", "Files", sorted(cp.files.items())))
        b.append(("ul", how_to_open(cp)))
        if cp.figure:
            b.append(("img", cp.figure, "top operators"))
        b.append(("p", _memory_line(cp)))
        if "memory_png" in cp.files:
            b.append(("file_img", cp.files["memory_png"], "memory timeline"))
    return [Part("profiles", "Profiles", b)]
