"""Instruction counts per step under Callgrind: a measurement that a busy neighbour cannot move.

A case's step (train or infer, after warm-up, on one thread) runs in a fresh ``python`` under
``valgrind --tool=callgrind`` through ``torch.utils.benchmark.Timer.collect_callgrind``, for a fixed
number of calls and ``REPEATS`` times in that one process; the record keeps the instructions per step
of every repeat (``counts(denoise=True)`` / calls), their spread, the top functions by inclusive count,
and the exclusive count of the busiest functions (``FUNCTIONS``), from which ``function_changes``
takes the difference of two records as ``CallgrindStats.delta`` does.

The child rebuilds the workload from the case's fields with the project's own functions (the set-up
is a string: ``setup_code``), with the worker's ``sys.path`` and plugins, ``PYTHONHASHSEED=0``, and
the worker's interpreter first on ``PATH`` (torch's script runs ``python`` and checks it is the same
interpreter). It imports torch and builds the case with valgrind's instrumentation off (``-i on``
just before the measured calls; torch's wrapper would instrument the import too, ~2.4x the time of a
small case here), and it dies with its worker (``PR_SET_PDEATHSIG``).

What it cannot see: GPU kernels (a CUDA case is not counted), memory bandwidth and cache misses (an
instruction costs the same here whether it waits on DRAM or not), other processes (DataLoader workers,
DDP ranks) and thread scaling (one thread). A change in time with no change in instructions therefore
points at the machine or the memory system, not at more work (``time_note``).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

METRIC = "instructions_per_step"
CHILD_ENV = "SCIML_BENCH_CALLGRIND"  # set in the valgrind child only: its set-up builds the case there
REPEATS = 3  # measurements of ``calls`` steps each, in one valgrind process: the spread the gate reads
DEFAULT_CALLS = 20
MAX_SECONDS = 300.0  # a case whose estimated count takes longer is skipped, with the estimate as reason
# uninstrumented, in the child's set-up, before torch's own instrumented warm-up calls. The count moves with
# a process's history (mlp train step here: 30 warm-up steps 2.918 M, 200 steps 2.911 M per step): both
# sides of a comparison must have the same number, so it is fixed, not timed
WARMUP_STEPS = 10
TOP = 10  # functions by inclusive count kept in the record
FUNCTIONS = 200  # functions by exclusive count kept for deltas between records
# CPython's own frames (and unnamed addresses) lead every inclusive list, as they run every Python call:
# the top inclusive functions are the first below them
INTERPRETER = re.compile(r"Python-3|^(Python|Objects|Include|Modules|Parser)/|^(\?\?\?:)?0x[0-9a-f]+")
NAME_LIMIT = 240  # characters of a function name kept (C++ signatures run long)
# The estimate that skips a slow case: a fixed cost (importing torch and sciml_bench and building the
# case under valgrind, uninstrumented: whole counts of small cases took 44-64 s on the loaded 2-core
# machine this was built on) plus SLOWDOWN x the native step time per instrumented call (an assumed
# upper figure for Callgrind's slowdown, not measured here; too high only skips a case too soon).
FIXED_SECONDS = 45.0
SLOWDOWN = 100.0
# The gate (``verdict``): a relative change in instructions per step counts when it exceeds
# max(FLOOR, SPREAD_FACTOR x the spread of the two records' paired repeat ratios). Chosen from A/A counts
# of the same case in separate processes (evidence/instruction_quality.py).
FLOOR = 0.005
SPREAD_FACTOR = 2.0

CountFn = Callable[[dict[str, Any], int, int], list[Any]]


def count_options(count: str, calls: int | None = None) -> dict[str, Any] | None:
    """``RunOptions.instructions`` for a run that counts ``count`` ("time" | "instructions")."""
    if count == "time":
        return None
    if count != "instructions":
        raise ValueError(f"count must be time or instructions, got {count!r}")
    return {"calls": calls or DEFAULT_CALLS, "repeats": REPEATS, "max_seconds": MAX_SECONDS}


def unsupported(case: Any) -> str | None:
    """Why ``case`` cannot be counted (absent with this reason), or None."""
    if case.ddp_ranks:
        return "DDP case: its steps run on torchrun ranks, other processes that Callgrind does not follow"
    if case.device != "cpu":
        return (f"{case.device.upper()} case: its step's work runs in GPU kernels, which Callgrind cannot see "
                f"(it counts host instructions only)")
    if case.num_workers:
        return (f"{case.num_workers} DataLoader worker(s): their work runs in other processes, which Callgrind "
                f"does not follow")
    if case.compile != "none":
        return ("compiled case: torch.compile would compile the step again inside valgrind (code generation "
                "and its compile workers, tens of times slower there); not counted")
    if case.mode == "fit":
        return "mode='fit' trains for a budget; its train step is counted in a mode='train' case"
    return None


def python_dir() -> str | None:
    """The directory to put first on the child's PATH: where ``python`` is this interpreter."""
    here = os.path.dirname(sys.executable)
    cand = os.path.join(here, "python")
    return here if os.path.exists(cand) and os.path.realpath(cand) == os.path.realpath(sys.executable) else None


def unavailable() -> str | None:
    """Why this machine cannot count instructions (the metric is then absent with it), or None."""
    if not sys.platform.startswith("linux"):
        return f"Callgrind instruction counts need Linux (this is {sys.platform})"
    missing = [c for c in ("valgrind", "callgrind_control", "callgrind_annotate") if shutil.which(c) is None]
    if missing:
        return f"valgrind is not installed ({', '.join(missing)} not on PATH); install valgrind to count instructions"
    if python_dir() is None:
        return (f"torch's Callgrind script runs `python` from PATH, and {os.path.dirname(sys.executable)} has no "
                f"`python` that is {sys.executable}")
    return None


def estimate_seconds(step_s: float, calls: int, repeats: int) -> float:
    """Wall seconds a count is expected to take: the child's fixed cost and the instrumented calls."""
    return FIXED_SECONDS + SLOWDOWN * step_s * (min(calls, 10) + calls * repeats)


def setup_code(case: dict[str, Any], warmup: int = WARMUP_STEPS) -> str:
    """The Timer's set-up: in the valgrind child (``CHILD_ENV``) build and warm up the case, then switch
    instrumentation on; in the worker (torch runs the set-up once there as a check) a no-op step."""
    fields = json.dumps(json.dumps(case))
    return (f"import os\n"
            f"if os.environ.get({CHILD_ENV!r}) == '1':\n"
            f"    import json, subprocess\n"
            f"    from sciml_bench.cases import Case\n"
            f"    from sciml_bench.workloads import build_workload\n"
            f"    wl = build_workload(Case(**json.loads({fields})))\n"
            f"    for _ in range({int(warmup)}):\n"
            f"        wl.step()\n"
            f"    step = wl.step\n"
            f"    subprocess.run(['callgrind_control', '-i', 'on', str(os.getpid())], check=True,\n"
            f"                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            f"else:\n"
            f"    step = lambda: None\n")


def child_env() -> dict[str, str]:
    """The valgrind child's environment: this worker's, with its interpreter first on PATH, its import
    path (the arm's code and plugins), ``CHILD_ENV`` and a fixed string hash seed."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([python_dir() or os.path.dirname(sys.executable), env.get("PATH", "")])
    paths = [os.getcwd() if p == "" else p for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
    env[CHILD_ENV] = "1"
    env.setdefault("PYTHONHASHSEED", "0")  # str hashes, hence dict and set orders, the same in every count
    return env


def _die_with_worker() -> None:
    """``preexec_fn`` of every process the count starts: the kernel kills it when the worker dies."""
    from sciml_bench.lifetime import die_with_parent

    die_with_parent()


@contextmanager
def child_processes(env: dict[str, str]):
    """While counting: every ``subprocess.run`` (torch's valgrind and callgrind_annotate calls) gets
    ``env``, dies with this process, and valgrind starts with its instrumentation off."""
    real = subprocess.run

    def run(args, **kwargs):
        args = list(args)
        if args and args[0] == "valgrind":
            args = ["--instr-atstart=no" if a == "--instr-atstart=yes" else a for a in args]
        kwargs.setdefault("env", env)
        kwargs.setdefault("preexec_fn", _die_with_worker)
        return real(args, **kwargs)

    subprocess.run = run
    try:
        yield
    finally:
        subprocess.run = real


def collect(case: dict[str, Any], calls: int, repeats: int) -> list[Any]:
    """``repeats`` ``CallgrindStats`` of ``calls`` steps each, from one valgrind child (minutes)."""
    from torch.utils import benchmark

    timer = benchmark.Timer("step()", setup=setup_code(case), num_threads=1)
    with child_processes(child_env()):
        stats = timer.collect_callgrind(number=calls, repeats=repeats, collect_baseline=False)
    return [s.as_standardized() for s in (stats if isinstance(stats, tuple) else (stats,))]


def summarize_counts(stats: list[Any], calls: int) -> dict[str, Any]:
    """The ``instructions_per_step`` metric of ``repeats`` CallgrindStats of ``calls`` steps each."""
    per_step = [s.counts(denoise=True) / calls for s in stats]
    value = statistics.median(per_step)
    exclusive = stats[0].stats(inclusive=False)
    inclusive = stats[0].stats(inclusive=True)
    for s in stats[1:]:
        exclusive, inclusive = exclusive + s.stats(inclusive=False), inclusive + s.stats(inclusive=True)
    n = calls * len(stats)
    functions: dict[str, float] = {}
    for c, fn in list(exclusive)[:FUNCTIONS]:
        functions[_name(fn)] = functions.get(_name(fn), 0.0) + c / n
    top = [(c, fn) for c, fn in inclusive if not INTERPRETER.search(fn)][:TOP]
    return {"value": value, "unit": "instructions", "samples": per_step,
            "spread": (max(per_step) - min(per_step)) / value if value else None,
            "calls": calls, "repeats": len(stats), "threads": 1, "denoise": True,
            "top_inclusive": [{"function": _name(fn), "per_step": c / n} for c, fn in top],
            "functions": functions, "functions_cut": min(functions.values()) if functions else None}


def _name(fn: str) -> str:
    """A function as the record keeps it: no unknown-file prefix, at most NAME_LIMIT characters."""
    fn = fn[4:] if fn.startswith("???:") else fn
    return fn if len(fn) <= NAME_LIMIT else fn[:NAME_LIMIT - 3] + "..."


def native_step_seconds(step: Callable[[], object], n: int = 5) -> float:
    """Shortest wall time of ``n`` native calls of an already warmed-up step, on one thread as it is
    counted (for the cost estimate: a busy machine only lengthens calls). On the worker's two threads on
    the loaded 2-core machine, a 21-layer MLP step (width 64) timed 0.47 s where its 20-layer twin took
    2 ms (threads waiting for each other's core), and its estimate skipped a count that would have taken
    about a minute."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return min(times)


def measure(case: Any, step: Callable[[], object] | None, options: dict[str, Any],
            count: CountFn | None = None) -> dict[str, Any]:
    """``{"metrics", "absent"}`` of one case: its instructions per step, or why there are none.

    ``options``: ``calls`` per measurement, ``repeats``, ``max_seconds`` (a case whose estimate
    exceeds it is skipped, the estimate in the reason). ``step``: the worker's warmed-up step, timed
    natively for that estimate. ``count``: ``collect`` (tests inject a fake). Never raises: a failed
    count is absent with its reason."""
    calls = int(options.get("calls") or DEFAULT_CALLS)
    repeats = int(options.get("repeats") or REPEATS)
    limit = float(options.get("max_seconds") or MAX_SECONDS)
    why = unsupported(case) or (unavailable() if count is None else None)
    if why is None and step is not None:
        est = estimate_seconds(native_step_seconds(step), calls, repeats)
        if est > limit:
            why = (f"too slow to count: about {est:.0f} s under Callgrind for {calls} calls x {repeats} repeats "
                   f"(limit {limit:.0f} s; fewer calls with --instruction-calls)")
    if why:
        return {"metrics": {}, "absent": {METRIC: why}}
    t0 = time.perf_counter()
    try:
        stats = (count or collect)(case.to_dict(), calls, repeats)
    except Exception as e:  # noqa: BLE001  (a failed count costs only this metric)
        msg = " ".join(str(e).split())[:300]
        return {"metrics": {}, "absent": {METRIC: f"Callgrind count failed: {type(e).__name__}: {msg}"}}
    metric = summarize_counts(stats, calls)
    metric["seconds"] = time.perf_counter() - t0
    return {"metrics": {METRIC: metric}, "absent": {}}


# ---------------------------------------------------------------- comparing two records' counts

def paired_ratios(base: dict[str, Any], new: dict[str, Any]) -> list[float] | None:
    """new/base of each repeat index, where both sides measured alike (same calls and repeats): None else.

    Repeat k of one side and repeat k of the other follow the same history (warm-up, earlier repeats),
    and the count drifts with it: in a training step, MKL's vectorised sqrt (Adam) takes a slow path
    for rare values whose share moves as training goes on (dq_ic_same, 20 layers of 64: 14.04, 13.93,
    13.77 M per step in repeats 1-3 of one process; the other arm's 14.03, 13.92, 13.77 M). Paired by
    index, that drift cancels and what is left is the noise between processes."""
    b, n = base.get("samples") or [], new.get("samples") or []
    if len(b) < 2 or len(b) != len(n) or base.get("calls") != new.get("calls") or not all(b):
        return None
    return [y / x for x, y in zip(b, n)]


def threshold(base: dict[str, Any], new: dict[str, Any]) -> float:
    """The relative change in instructions per step that counts: max(FLOOR, SPREAD_FACTOR x spread),
    the spread of the repeats' paired ratios (``paired_ratios``), else the larger of the two sides'
    own repeat spreads (drift included: wider)."""
    pr = paired_ratios(base, new)
    if pr is not None:
        spread = (max(pr) - min(pr)) / statistics.median(pr)
    else:
        spread = max(m.get("spread") or 0.0 for m in (base, new))
    return max(FLOOR, SPREAD_FACTOR * spread)


def verdict(base: dict[str, Any], new: dict[str, Any]) -> tuple[float, str, float]:
    """(ratio new/base, "more" | "fewer" | "unchanged", threshold) of two ``instructions_per_step`` metrics:
    the median of the paired repeat ratios where the sides measured alike, else the ratio of the medians."""
    pr = paired_ratios(base, new)
    ratio = statistics.median(pr) if pr is not None else new["value"] / base["value"]
    t = threshold(base, new)
    if ratio > 1 + t:
        return ratio, "more", t
    if ratio < 1 / (1 + t):
        return ratio, "fewer", t
    return ratio, "unchanged", t


def function_changes(base: dict[str, Any], new: dict[str, Any], top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` functions whose exclusive instructions per step changed most, new minus base (as
    ``CallgrindStats.delta``). A function kept on one side only (each keeps its ``FUNCTIONS`` busiest)
    counts 0 on the other, where it was below that side's ``functions_cut``: ``partial`` says so."""
    b, n = base.get("functions") or {}, new.get("functions") or {}
    rows = [{"function": fn, "base": b.get(fn, 0.0), "new": n.get(fn, 0.0), "delta": n.get(fn, 0.0) - b.get(fn, 0.0),
             "partial": (fn in b) != (fn in n)} for fn in set(b) | set(n)]
    rows.sort(key=lambda r: abs(r["delta"]), reverse=True)
    return [r for r in rows[:top] if r["delta"]]


def time_note(time_ratio: float, instr_ratio: float, time_threshold: float, instr_threshold: float) -> str | None:
    """Words for a time change that the instruction count does not share: the machine or memory moved."""
    if abs(math.log(time_ratio)) <= math.log(1 + time_threshold) or \
            abs(math.log(instr_ratio)) > math.log(1 + instr_threshold):
        return None
    return (f"time {time_ratio:.3f}x with instructions {instr_ratio:.4f}x (unchanged): the change in time is not "
            f"more work; it points at the machine (load, frequency) or the memory system (cache, bandwidth)")


def fmt_delta(row: dict[str, Any]) -> str:
    """A ``function_changes`` row in words: "+1.2 M/step (+14 %)"."""
    sign = "+" if row["delta"] > 0 else "-"
    rel = f" ({row['delta'] / row['base']:+.0%})" if row["base"] else " (new)"
    part = ", kept on one side only" if row["partial"] else ""
    return f"{sign}{fmt_count(abs(row['delta']))}/step{rel}{part}"


def fmt_count(v: float) -> str:
    """Instructions in words: 60.15 M, 1.2 G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.4g} {unit}"
    return f"{v:.0f}"
