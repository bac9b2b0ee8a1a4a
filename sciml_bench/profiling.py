"""Profiling: why a case is slow. A phase breakdown of its step and a torch.profiler trace.

Both run in the case's worker after its timed rounds (never inside them), on the same built
Workload:

- ``measure_phases``: time per phase of a step (data, h2d, forward, loss, backward, optimizer)
  from the marks the Workload puts around each phase; ``perf_counter`` on CPU (where every op is
  synchronous), CUDA events on GPU. The phases must sum to the step within 10 %; the gap is kept.
- ``profile_trace``: ``torch.profiler.profile`` with a schedule, shapes, memory and FLOPs; the
  trace is written by ``tensorboard_trace_handler`` (the ``logdir/run/*.pt.trace.json`` layout
  that torch-tb-profiler reads) with the ``distributedInfo`` HTA looks for; beside it an operator
  table (CSV + Markdown) and a memory timeline (CSV + PNG) with the peak attributed to a phase.
"""
from __future__ import annotations

import csv
import gzip
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from sciml_bench.units import fmt_bytes
from sciml_bench.workloads import PHASES, Workload, absent_phases

PHASE_MIN_STEPS = 5
PHASE_MIN_TIME = 0.5  # seconds of marked steps in the phases pass (at least PHASE_MIN_STEPS steps)
GAP_TOLERANCE = 0.10  # phases must sum to the step within this fraction
TOP_IN_RECORD = 10


@dataclass(frozen=True)
class ProfileOptions:
    """How a case is profiled (kept in the run header as ``options.profile``)."""

    out: str | None = None  # root directory: <out>/<study>/<case_id>/ (default reports/<run>/profiles)
    wait: int = 1  # torch.profiler.schedule: steps skipped, warmed up and recorded, per cycle
    warmup: int = 1
    active: int = 3
    repeat: int = 1
    with_stack: bool = False  # Python stacks (bigger traces; enables export_memory_timeline)
    gzip: bool = False  # write *.pt.trace.json.gz
    top: int = 30  # operators in operators.md

    def __post_init__(self) -> None:
        from sciml_bench.errors import UsageError

        for name in ("wait", "warmup", "active", "repeat", "top"):
            v = getattr(self, name)
            low = 1 if name in ("active", "repeat", "top") else 0
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise UsageError(f"profile {name} must be an integer >= {low}, got {v!r}")


# ---------------------------------------------------------------- phase breakdown

class _PhaseClock:
    """A Workload mark that records (phase, start, end) for each phase a step enters."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.spans: list[tuple[str, Any, Any]] = []

    def __call__(self, name: str) -> _PhaseClock._Span:
        return _PhaseClock._Span(self, name)

    def now(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def elapsed(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a

    class _Span:
        __slots__ = ("clock", "name", "t0")

        def __init__(self, clock: _PhaseClock, name: str):
            self.clock, self.name = clock, name

        def __enter__(self) -> None:
            self.t0 = self.clock.now()

        def __exit__(self, *exc: object) -> None:
            self.clock.spans.append((self.name, self.t0, self.clock.now()))


def measure_phases(wl: Workload, min_steps: int = PHASE_MIN_STEPS, min_time: float = PHASE_MIN_TIME
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Time each phase of ``wl.step`` over at least ``min_steps`` steps and ``min_time`` seconds.

    Returns (metrics, absent): ``phase_<name>_time`` (mean seconds per step, with its ``share``
    of the step and per-step samples) for the phases the step has, ``phase_step_time`` (the
    marked step, measured in this pass) and ``phase_gap`` (the fraction of the step outside any
    phase; the phases must cover the step within 10 %). Phases the case lacks are absent with
    the reason. On CUDA each phase is bracketed by CUDA events (no sync inside the step), the
    step is synchronized once at its end; on CPU every op is synchronous and perf_counter is exact.
    """
    cuda = wl.device.type == "cuda"
    clock = _PhaseClock(cuda)
    per_step: list[dict[str, float]] = []
    steps: list[float] = []
    saved, wl.mark = wl.mark, clock
    try:
        t_start = time.perf_counter()
        while len(steps) < min_steps or time.perf_counter() - t_start < min_time:
            clock.spans.clear()
            a = clock.now()
            wl.step()
            b = clock.now()
            if cuda:
                torch.cuda.synchronize()
            steps.append(clock.elapsed(a, b))
            acc: dict[str, float] = {}
            for name, s, e in clock.spans:
                acc[name] = acc.get(name, 0.0) + clock.elapsed(s, e)
            per_step.append(acc)
    finally:
        wl.mark = saved
    step = sum(steps) / len(steps)
    how = "CUDA events" if cuda else "perf_counter (CPU ops are synchronous)"
    metrics: dict[str, dict[str, Any]] = {}
    absent = {f"phase_{k}_time": v for k, v in absent_phases(wl.case).items()}
    seen = [p for p in PHASES if any(p in d for d in per_step)]
    for p in seen:
        xs = [d.get(p, 0.0) for d in per_step]
        mean = sum(xs) / len(xs)
        metrics[f"phase_{p}_time"] = {"value": mean, "unit": "s", "share": mean / step, "samples": xs,
                                      "clock": how}
        absent.pop(f"phase_{p}_time", None)
    for p in PHASES:
        if p not in seen and f"phase_{p}_time" not in absent:
            absent[f"phase_{p}_time"] = "the step never entered this phase"
    covered = sum(metrics[f"phase_{p}_time"]["value"] for p in seen)
    gap = (step - covered) / step
    metrics["phase_step_time"] = {"value": step, "unit": "s", "samples": steps, "steps": len(steps), "clock": how,
                                  "phases": list(PHASES),
                                  "note": "step time in the phases pass (marks active), after the timed rounds"}
    metrics["phase_gap"] = {"value": gap, "unit": "fraction", "within_tolerance": abs(gap) <= GAP_TOLERANCE,
                            "tolerance": GAP_TOLERANCE,
                            "note": "(step - sum of phases) / step: time outside every phase"}
    return metrics, absent


def phase_split(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{phase: seconds per step} of a record's phase metrics, in step order."""
    return {p: metrics[f"phase_{p}_time"]["value"] for p in PHASES if f"phase_{p}_time" in metrics}


# ---------------------------------------------------------------- trace, operators, memory

def profile_trace(wl: Workload, out_dir: str | Path, opts: ProfileOptions = ProfileOptions()
                  ) -> dict[str, Any]:
    """Profile ``opts.repeat`` cycles of ``wl.step`` into ``out_dir``; return the record's ``profile``.

    Activities: CPU always, CUDA when the case runs there. ``record_shapes``, ``profile_memory``
    and ``with_flops`` are on; ``with_stack`` only on request (it makes traces several times
    bigger). Writes the trace (``*.pt.trace.json[.gz]``), ``operators.csv``/``.md`` (top
    ``opts.top`` operators by self CPU time, and by self device time on CUDA), and the memory
    timeline ``memory_timeline.csv``/``.png``. The returned dict holds the paths (relative to
    ``out_dir``), the top-10 operators and the memory peak with the phase it falls in.
    """
    from torch.profiler import ProfilerAction, ProfilerActivity, profile, schedule, tensorboard_trace_handler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.pt.trace.json*"):  # a rerun replaces the case's trace, never adds a second
        old.unlink()
    cuda = wl.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    steps = (opts.wait + opts.warmup + opts.active) * opts.repeat
    meta = json.dumps({"backend": "nccl" if cuda else "gloo", "rank": 0, "world_size": 1})
    t0 = time.perf_counter()
    with profile(activities=activities, record_shapes=True, profile_memory=True, with_flops=True,
                 with_stack=opts.with_stack,
                 schedule=schedule(wait=opts.wait, warmup=opts.warmup, active=opts.active, repeat=opts.repeat),
                 on_trace_ready=tensorboard_trace_handler(str(out), worker_name="rank0", use_gzip=opts.gzip)) as prof:
        tagged = False
        for _ in range(steps):
            if not tagged and prof.current_action != ProfilerAction.NONE:
                # HTA reads the rank from distributedInfo; kineto accepts metadata only once it is prepared
                prof.add_metadata_json("distributedInfo", meta)
                tagged = True
            wl.step()
            prof.step()
    seconds = time.perf_counter() - t0
    traces = sorted(out.glob("*.pt.trace.json*"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise RuntimeError(f"torch.profiler wrote no trace into {out}")
    recorded = opts.active  # key_averages and the last trace cover the last cycle's active steps
    ops = operator_rows(prof, recorded)
    files = {"trace": traces[-1].name, "traces": [p.name for p in traces]}
    files.update(write_operator_tables(ops, out, opts.top, cuda, recorded))
    memory = memory_timeline(traces[-1], out, "cuda" if cuda else "cpu")
    files.update(memory.pop("files"))
    absent: dict[str, str] = {}
    if opts.with_stack:
        try:
            prof.export_memory_timeline(str(out / "memory_categories.json"), device="cuda:0" if cuda else "cpu")
            files["memory_categories"] = "memory_categories.json"
        except Exception as e:  # noqa: BLE001  (an optional view; the event timeline above stands)
            absent["memory_categories"] = f"export_memory_timeline failed: {type(e).__name__}: {e}"[:300]
    else:
        absent["memory_categories"] = ("export_memory_timeline needs with_stack (--profile-stack); "
                                       "the timeline comes from the profiler's memory events")
    rec = {"dir": str(out.resolve()), "files": files, "steps": recorded, "options": asdict(opts),
           "activities": [a.name for a in activities], "top_ops": ops[:TOP_IN_RECORD], "memory": memory,
           "absent": absent, "seconds": seconds}
    if cuda:
        rec["top_device_ops"] = sorted(ops, key=lambda r: r["self_device_us"], reverse=True)[:TOP_IN_RECORD]
    return rec


def operator_rows(prof: Any, steps: int) -> list[dict[str, Any]]:
    """Operators (grouped by name and input shapes) by self CPU time, per recorded step.

    User annotations (the phase ranges, ProfilerStep#N) are left out: they are not operators.
    """
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        if e.is_user_annotation or e.key.startswith("ProfilerStep"):
            continue
        rows.append({"name": e.key, "input_shapes": _shapes(e.input_shapes), "calls": e.count / steps,
                     "self_cpu_us": e.self_cpu_time_total / steps, "cpu_total_us": e.cpu_time_total / steps,
                     "self_device_us": e.self_device_time_total / steps,
                     "device_total_us": e.device_time_total / steps,
                     "flops": (e.flops or 0) / steps if e.flops else None,
                     "self_cpu_mem_bytes": e.self_cpu_memory_usage / steps,
                     "self_device_mem_bytes": e.self_device_memory_usage / steps})
    rows.sort(key=lambda r: r["self_cpu_us"], reverse=True)
    return rows


def _shapes(shapes: Any) -> str:
    text = str([s for s in (shapes or []) if s != []]) if shapes else ""
    return text if len(text) <= 120 else text[:117] + "..."


OP_COLUMNS = ("name", "input_shapes", "calls", "self_cpu_us", "cpu_total_us", "self_device_us", "device_total_us",
              "flops", "self_cpu_mem_bytes", "self_device_mem_bytes")


def write_operator_tables(ops: list[dict[str, Any]], out: Path, top: int, cuda: bool, steps: int) -> dict[str, str]:
    """operators.csv (every operator) and operators.md (top ``top`` by self CPU, and by device time)."""
    with open(out / "operators.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=OP_COLUMNS)
        w.writeheader()
        w.writerows(ops)
    md = [f"# Top operators (per step, mean of {steps} profiled steps)", ""]
    keys = [("self_cpu_us", "self CPU")] + ([("self_device_us", "self device")] if cuda else [])
    for key, title in keys:
        md += [f"## By {title} time", "", "| operator | input shapes | calls | self CPU us | self device us | "
               "MFLOP | self CPU alloc |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in sorted(ops, key=lambda r: r[key], reverse=True)[:top]:
            md.append(f"| `{r['name']}` | {r['input_shapes'].replace('|', '/') or '-'} | {r['calls']:.3g} | "
                      f"{r['self_cpu_us']:.1f} | {r['self_device_us']:.1f} | "
                      f"{(r['flops'] or 0) / 1e6:.3g} | {fmt_bytes(r['self_cpu_mem_bytes'])} |")
        md.append("")
    if not cuda:
        md.append("Device time: not measured (the case ran on CPU; no CUDA activity was recorded).")
    (out / "operators.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return {"operators_csv": "operators.csv", "operators_md": "operators.md"}


def read_trace(path: str | Path) -> dict[str, Any]:
    """A Chrome trace (``.json`` or ``.json.gz``) as a dict."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def phase_ranges(trace: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(phase, start us, end us) of the phase ranges the Workload marked, from a trace."""
    names = set(PHASES) | {"compile"}
    return sorted((ev["name"], ev["ts"], ev["ts"] + ev.get("dur", 0)) for ev in trace.get("traceEvents", [])
                  if ev.get("ph") == "X" and ev.get("cat") == "user_annotation" and ev.get("name") in names)


def memory_timeline(trace_path: Path, out: Path, device: str) -> dict[str, Any]:
    """Allocated bytes over the recorded steps from the trace's ``[memory]`` events; the peak's phase.

    Writes memory_timeline.csv (time in ms, allocated bytes, phase) and memory_timeline.png
    (phases shaded, peak marked). Returns {peak_bytes, peak_phase, device, events, files}.
    """
    trace = read_trace(trace_path)
    dev_type = 1 if device == "cuda" else 0  # kineto's Device Type: 0 CPU, 1 CUDA
    events = sorted((ev["ts"], ev["args"]["Total Allocated"]) for ev in trace.get("traceEvents", [])
                    if ev.get("name") == "[memory]" and ev.get("args", {}).get("Device Type") == dev_type)
    ranges = phase_ranges(trace)
    if not events:
        return {"peak_bytes": None, "peak_phase": None, "device": device, "events": 0, "files": {},
                "reason": f"the trace holds no {device} memory events"}
    t0 = min([events[0][0]] + [r[1] for r in ranges])

    def phase_at(ts: float) -> str:
        inside = [name for name, a, b in ranges if a <= ts <= b and name != "compile"]
        return inside[-1] if inside else "outside phases"

    with open(out / "memory_timeline.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time_ms", "allocated_bytes", "phase"])
        for ts, b in events:
            w.writerow([f"{(ts - t0) / 1e3:.4f}", b, phase_at(ts)])
    ts_peak, peak = max(events, key=lambda e: e[1])
    _plot_memory(events, ranges, t0, (ts_peak, peak), device, out / "memory_timeline.png")
    return {"peak_bytes": peak, "peak_phase": phase_at(ts_peak), "peak_ms": (ts_peak - t0) / 1e3, "device": device,
            "events": len(events), "files": {"memory_csv": "memory_timeline.csv", "memory_png": "memory_timeline.png"},
            "note": "bytes allocated by the profiled steps (relative to the profiler's start; live tensors from "
                    "before it are not counted)" if device == "cpu" else
                    "the CUDA caching allocator's allocated total (tensors live before the profiler included)"}


PHASE_COLORS = {"data": "#8c6d31", "h2d": "#e7ba52", "forward": "#3182bd", "loss": "#9ecae1",
                "backward": "#e6550d", "optimizer": "#31a354", "compile": "#999999"}


def _plot_memory(events, ranges, t0, peak, device: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    xs = [(ts - t0) / 1e3 for ts, _ in events]
    ys = [b / 2**20 for _, b in events]
    ax.step(xs, ys, where="post", color="black", lw=1)
    used = set()
    for name, a, b in ranges:
        ax.axvspan((a - t0) / 1e3, (b - t0) / 1e3, color=PHASE_COLORS.get(name, "#ccc"), alpha=0.3,
                   label=None if name in used else name)
        used.add(name)
    ax.plot([(peak[0] - t0) / 1e3], [peak[1] / 2**20], "rv", label=f"peak {peak[1] / 2**20:.2f} MiB")
    ax.set_xlabel("time since the first profiled step (ms)")
    ax.set_ylabel(f"{device} allocated (MiB)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- the worker's pass

def profile_pass(wl: Workload, trace_dir: str | None = None, options: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The worker command after a case's timed rounds: phases, then (with ``trace_dir``) a trace.

    Returns {"metrics", "absent", "profile"} for the case's record; ``profile`` is None without
    a trace. Each part's wall time is kept so the README can say what profiling costs per case.
    """
    t0 = time.perf_counter()
    metrics, absent = measure_phases(wl)
    metrics["phase_step_time"]["pass_s"] = time.perf_counter() - t0
    prof = None
    if trace_dir is not None:
        prof = profile_trace(wl, trace_dir, ProfileOptions(**(options or {})))
        mem = prof["memory"]
        if mem.get("peak_bytes") is not None:
            metrics["profile_memory_peak_bytes"] = {"value": mem["peak_bytes"], "unit": "B",
                                                    "phase": mem["peak_phase"], "device": mem["device"],
                                                    "note": mem["note"]}
        else:
            absent["profile_memory_peak_bytes"] = mem["reason"]
        prof["pass_s"] = time.perf_counter() - t0  # phases + trace + tables + memory view: the cost per case
    return {"metrics": metrics, "absent": absent, "profile": prof}
