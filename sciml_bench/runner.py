"""Runner: executes a suite's cases in worker subprocesses, timed in interleaved rounds and passes.

Each case of a study gets its own worker process, kept alive for one pass of the study: the
parent builds every case (one at a time, so first-step and memory figures are undisturbed), then
times them in short blocks, one per case per round, in a fresh random order every round (RMIT).
With several passes, every study's pass 1 runs before any study's pass 2, each pass in fresh
workers. A case's statistics come from its per-round medians and a variant/reference ratio from
paired rounds within passes, with a CI over passes (``stats.pass_ratio``), so both fast drift and
the machine's slow changes show up in the CIs instead of hiding in one contiguous block. A case
that raises, crashes, hangs or runs out of memory becomes a record with that status; the run goes on.
A ``mode='fit'`` case is timed like a train case, then, after the last pass's rounds, its worker
trains it for its budget (``sciml_bench.training``, worker command ``fit``): one record holds speed,
memory and convergence.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import random
import re
import signal
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sciml_bench.cases import Case, Study, Suite, iter_cases, load_suite, parse_assignment
from sciml_bench.distributed import add_scaling, rank_metrics
from sciml_bench.errors import Unsupported, UsageError
from sciml_bench.results import (RunWriter, done_keys, finite_record, is_locked, new_run_id,  # noqa: F401
                                 pass_pairs, peak_memory, read_run, safe_filename)  # peak_memory: re-exported
from sciml_bench.stats import pass_ratio, summarize

START_TIMEOUT = 180.0  # seconds for a worker to import torch and report ready


@dataclass(frozen=True)
class RunOptions:
    """How cases are timed; recorded in the run header."""

    rounds: int = 5
    round_time: float = 0.2  # seconds of timed steps per case per round
    timeout: float = 300.0  # per case: setup plus all its rounds
    threads: int | None = None  # torch intra-op threads in workers (None: torch's default)
    warmup_steps: int = 3
    warmup_time: float = 0.1
    max_live: int = 16  # most worker processes alive at once (one study chunk)
    phases: bool = False  # after the timed rounds: a phase-breakdown pass per case
    profile: dict[str, Any] | None = None  # after the timed rounds: a trace (profiling.ProfileOptions fields)
    passes: int = 1  # timed passes per study, each in fresh workers; a run times all studies' pass 1, then pass 2, ...
    seed: int = 0  # seeds the random case order of every round (RMIT), per study and pass
    anchor: bool = True  # time the fixed numpy anchor (measure.anchor) once per round, in the round's random order
    duet: bool = False  # A/B: a case's two arms time their blocks at the same time, on disjoint cores (sciml_bench.ab)


_OPTION_FIELDS = set(RunOptions.__dataclass_fields__)

# ---------------------------------------------------------------- worker side

def _classify(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for an exception raised by a case."""
    import torch

    msg = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
    if getattr(exc, "status", None):  # a DDP rank's own classification (distributed.RankFailure)
        return exc.status, str(exc)[:500]
    if isinstance(exc, Unsupported):
        return "skipped", str(exc)
    text = str(exc).lower()
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (isinstance(exc, RuntimeError) and any(
            s in text for s in ("out of memory", "not enough memory", "can't allocate memory"))):
        return "oom", msg
    return "error", msg


def _setup(case: Case, opts: RunOptions, full: bool = True) -> dict[str, Any]:
    """Build the case, warm it up, and measure what needs measuring once: memory, FLOPs and the
    timing harness's own overhead. Later passes (``full`` False) only build and warm up."""
    import torch

    from sciml_bench.measure.flops import flop_metrics
    from sciml_bench.measure.overhead import OpCounter
    from sciml_bench.measure.memory import peak_rss_bytes, rss_bytes, step_memory
    from sciml_bench.measure.timing import warmup
    from sciml_bench.models import param_count
    from sciml_bench.workloads import build_workload, probe

    metrics: dict[str, dict[str, Any]] = {}
    absent: dict[str, str] = {}
    rss_before = rss_bytes()
    wl = build_workload(case)
    warm = warmup(wl.step, opts.warmup_steps, opts.warmup_time)
    _WORKER["workload"] = wl
    done = {"threads": torch.get_num_threads(), "warmup_steps": warm["warmup_steps"], "pid": os.getpid()}
    if not full:
        return dict(done, metrics={}, absent={})
    metrics["first_step_time"] = {"value": warm["first_step_s"], "unit": "s"}
    if wl.model is None:
        absent["flops"] = "mode='data' runs no model"
    else:
        ops = OpCounter()
        with ops if wl.case.compile == "none" else contextlib.nullcontext():  # one step counts both
            fm, fa = flop_metrics(wl.step)  # absent (not 0) when the counter has no formula for the step's ops
        metrics.update(fm)
        absent.update(fa)
    mem = step_memory(wl.step, wl.device, wl.state_tensors())
    dev, other = ("cuda", "cpu_tensor") if wl.device.type == "cuda" else ("cpu_tensor", "cuda")
    for part in ("peak", "step", "state"):
        metrics[f"{part}_{dev}_bytes"] = {"value": mem[part], "unit": "B"}
    absent[f"peak_{other}_bytes"] = f"case ran on {wl.device.type.upper()}; see peak_{dev}_bytes"
    metrics["rss_before_build_bytes"] = {"value": rss_before, "unit": "B"}
    metrics["peak_rss_bytes"] = {"value": peak_rss_bytes(), "unit": "B"}
    if wl.model is not None:
        metrics["params"] = {"value": param_count(wl.model), "unit": "count"}
    if wl.last_loss is not None:  # a loss gone NaN/inf is flagged at any precision, not only where numerics run
        metrics["loss_after_warmup"] = {"value": float(wl.last_loss.float()), "unit": "loss",
                                        "steps": warm["warmup_steps"]}
    extra, extra_absent = probe(wl, warm["first_step_s"])  # compile, shape sweep, numerics, loader
    metrics.update(extra)
    absent.update(extra_absent)
    overhead = _overhead_costs(wl, ops.n if "flops" in metrics and wl.case.compile == "none" else None)
    if isinstance(overhead, str):
        absent["overhead"] = overhead
    backend = {"float32_matmul_precision": torch.get_float32_matmul_precision(),
               "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
               "cudnn_benchmark": torch.backends.cudnn.benchmark}  # as this case ran, not as the parent has them
    return dict(done, metrics=metrics, absent=absent, backend=backend,
                overhead=None if isinstance(overhead, str) else overhead)


def _overhead_costs(wl, ops: int | None) -> dict[str, Any] | str:
    """Harness and per-op dispatch cost and the step's op count (``ops``, counted during the FLOP
    count's step, else now); a reason string where not measurable."""
    import torch

    from sciml_bench.measure.overhead import count_ops, harness_costs

    if wl.case.mode == "data":
        return "mode='data' times a DataLoader epoch, not dispatched ops"
    if wl.case.compile != "none":
        return "compiled step: counting ops under a dispatch mode would disturb the compiled graph"
    try:
        return dict(harness_costs(torch.get_num_threads()), ops=count_ops(wl.step) if ops is None else ops)
    except Exception as e:  # an op a dispatch mode cannot see through must not lose the case
        return f"op count failed: {type(e).__name__}: {e}"


_WORKER: dict[str, Any] = {}


def _setup_ranks(case: Case, opts: RunOptions) -> dict[str, Any]:
    """A DDP case: torchrun ranks build and set it up (see distributed.py); this worker drives them."""
    from sciml_bench.distributed import RankGroup

    group = RankGroup(case, opts)
    _WORKER["workload"] = group
    return group.info


def _worker_main(conn, log_path: str, threads: int | None) -> None:
    """Worker loop: answer ('setup', case_dict, opts) / ('round', seconds) / ('stop',) commands."""
    import faulthandler

    from sciml_bench.lifetime import die_with_parent

    die_with_parent()  # a hung worker must not outlive a kill -9 of the run
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how Ctrl-C ends the run
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)  # the umask decides
    os.dup2(fd, 1)  # torch / kineto chatter goes to the case log, not over the progress bar
    os.dup2(fd, 2)
    faulthandler.enable(all_threads=False)  # a segfault or abort leaves the Python stack in the log, for the crash reason
    import torch
    import torch._dynamo  # noqa: F401  (imported by the first optimizer; seconds, so not on a case's clock)

    from sciml_bench.measure.timing import time_block
    from sciml_bench.models import list_models

    list_models()  # import the zoo and plugins up front too
    if threads:
        torch.set_num_threads(threads)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        try:
            if msg[0] == "setup":
                case = Case(**msg[1])
                # a newer run may send options this (A/B arm's older) worker does not know: they are the parent's
                opts = RunOptions(**{k: v for k, v in msg[2].items() if k in _OPTION_FIELDS})
                reply = ("ok", _setup_ranks(case, opts) if case.ddp_ranks else _setup(case, opts, *msg[3:]))
            elif msg[0] == "fit":
                from sciml_bench.training import fit

                _WORKER.pop("workload", None)  # the timed workload is done; each seed builds its own
                reply = ("ok", fit(Case(**msg[1])))
            elif msg[0] == "round":
                wl = _WORKER["workload"]
                reply = ("ok", wl.time_round(msg[1]) if wl.case.ddp_ranks else
                         time_block(wl.step, msg[1], torch.get_num_threads(), wl.case.case_id))
            elif msg[0] == "profile":  # after the last round: (trace_dir or None, ProfileOptions fields)
                from sciml_bench.profiling import profile_pass

                reply = ("ok", profile_pass(_WORKER["workload"], *msg[1:]))
            else:
                return
            if torch.cuda.is_initialized():
                # Idle between its turns, a case must not hold cached blocks its siblings need;
                # the next round's block-size estimation re-warms the cache before timing.
                torch.cuda.empty_cache()
        except BaseException as e:  # noqa: BLE001  (report every failure as a record, then stay alive)
            traceback.print_exc()
            reply = _classify(e)
            _WORKER.pop("workload", None)
        conn.send(reply)


# ---------------------------------------------------------------- parent side

LOG_LIMIT = 2 * 2 ** 20  # bytes of a case log kept: its first and last half, so a chatty case cannot fill a disk
POLL_SLICE = 0.5  # seconds between the parent's looks at a busy worker (log size, RSS)
# Lines that are never the reason a worker died: torch's import-time chatter and warning boilerplate.
LOG_NOISE = ("CUDA_HOME", "USDT:", "warnings.warn(", "Warning: ", "warn(", "gpuGetDeviceCount failed",
             "allocated before the profiling started")
_FRAME = re.compile(r'File "(.+)", line (\d+) in (\S+)')  # a faulthandler stack frame


class _Worker:
    """Parent-side handle of one case's worker process, with its remaining time budget."""

    def __init__(self, ctx, case: Case, log_path: Path, opts: RunOptions):
        self.case, self.log_path, self.budget = case, log_path, opts.timeout
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, str(log_path), opts.threads), daemon=True)
        self.oom_kills = _oom_kill_count()  # the cgroup's counter before this worker could be killed
        self.rss = 0  # largest resident set seen, for OOM evidence
        self.proc.start()
        child.close()
        self.failure: tuple[str, str] | None = None

    def call(self, msg: tuple | None, timeout: float, charge: bool = True) -> tuple[str, Any]:
        """Send ``msg`` (None: just wait) and return the reply, or a failure (status, reason).

        Time spent waiting comes off the case's budget when ``charge`` (not for start-up). While
        waiting, the log is kept under LOG_LIMIT and the worker's RSS is sampled."""
        t0 = time.perf_counter()
        reply = None
        try:
            if msg is not None:
                self.conn.send(msg)
            while (left := timeout - (time.perf_counter() - t0)) > 0:
                if self.conn.poll(min(left, POLL_SLICE)):
                    reply = self.conn.recv()
                    break
                self._watch()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            reply = self._crash_reason()
        finally:
            if charge:
                self.budget -= time.perf_counter() - t0
            cap_log(self.log_path)
        if reply is None:
            self.kill()
            reply = ("timeout", f"no answer within {timeout:.0f} s" + (" (the rest of its --timeout)" if charge
                                                                       else " of starting") + self.log_tail())
        return reply

    def post(self, msg: tuple) -> None:
        """Send ``msg`` without waiting; the next ``call(None, ...)`` collects the reply (or the crash)."""
        try:
            self.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass

    def _watch(self) -> None:
        cap_log(self.log_path)
        try:
            import psutil

            self.rss = max(self.rss, psutil.Process(self.proc.pid).memory_info().rss)
        except Exception:  # noqa: BLE001  (the worker may be gone; that shows up on the pipe)
            pass

    def _crash_reason(self) -> tuple[str, str]:
        self.proc.join(5)
        code = self.proc.exitcode
        tail = self.log_tail()
        if code is not None and code < 0:
            sig = signal.Signals(-code).name
            if sig == "SIGKILL":
                evidence = _oom_evidence(self.proc.pid, self.oom_kills, self.rss)
                if evidence:
                    return "oom", f"worker killed by SIGKILL: out of memory ({evidence}){tail}"
                return "crashed", (f"killed (SIGKILL), with no sign of the OOM killer (cgroup oom_kill count "
                                   f"unchanged or unreadable, RSS below 80% of the limit, no kernel log line){tail}")
            return "crashed", f"worker died from {sig}{tail}"
        return "crashed", f"worker exited with code {code}{tail}"

    def log_tail(self, n: int = 400) -> str:
        """'; last output: ...': the traceback's last lines or the last real lines, noise left out."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 64 * 1024))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not any(s in ln for s in LOG_NOISE)]
        fatal = max((i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")), default=None)
        if fatal is not None:  # faulthandler: its headline and the innermost frames, not its module list
            frames = [m.groups() for ln in lines[fatal + 1:] if (m := _FRAME.match(ln))][:3]
            last = [lines[fatal]] + [" < ".join(f"{fn} ({Path(f).name}:{no})" for f, no, fn in frames)]
        else:
            last = lines[-3:]
        return f"; last output: {' | '.join(ln for ln in last if ln)[-n:]}" if last else ""

    def kill(self) -> None:
        cap_log(self.log_path)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(10)
        self.kill()
        self.conn.close()


def cap_log(path: Path, limit: int = LOG_LIMIT) -> None:
    """Keep a log under ``limit`` bytes: its first and last halves around a marker.

    The worker appends (O_APPEND), so it keeps writing at the new end."""
    try:
        size = path.stat().st_size
        if size <= limit:
            return
        with open(path, "r+b") as fh:
            fh.seek(size - limit // 2)
            tail = fh.read()
            fh.seek(limit // 2)
            fh.write(f"\n[... sciml-bench dropped {size - limit} bytes of output here ...]\n".encode() + tail)
            fh.truncate()
    except OSError:
        pass


def _cgroup_dir() -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):  # cgroup v2
                return Path("/sys/fs/cgroup") / line[3:].strip().lstrip("/")
    except OSError:
        pass
    return None


def _oom_kill_count() -> int | None:
    """The cgroup's ``oom_kill`` counter (memory.events), or None where it is not readable."""
    d = _cgroup_dir()
    try:
        for line in (d / "memory.events").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, TypeError, ValueError):
        pass
    return None


def _memory_limit() -> int:
    d = _cgroup_dir()
    try:
        text = (d / "memory.max").read_text().strip()
        if text != "max":
            return int(text)
    except (OSError, TypeError, ValueError):
        pass
    import psutil

    return psutil.virtual_memory().total


def _oom_evidence(pid: int, oom_kills_before: int | None, rss: int) -> str | None:
    """Why a SIGKILL looks like the OOM killer's, or None: the cgroup's oom_kill counter went up,
    the kernel log names the pid, or the worker's RSS was near the memory limit."""
    after = _oom_kill_count()
    if oom_kills_before is not None and after is not None and after > oom_kills_before:
        return f"cgroup memory.events oom_kill {oom_kills_before} -> {after}"
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        try:
            chunks_ = []
            while True:
                try:
                    chunks_.append(os.read(fd, 8192).decode(errors="replace"))
                except BlockingIOError:
                    break
        finally:
            os.close(fd)
        if any(f"Killed process {pid} " in c or f"Killed process {pid}," in c for c in chunks_):
            return f"kernel log: Killed process {pid}"
    except OSError:
        pass  # /dev/kmsg is root-only on most systems
    limit = _memory_limit()
    if rss and rss >= 0.8 * limit:
        return f"worker RSS {rss / 2 ** 30:.1f} GiB of a {limit / 2 ** 30:.1f} GiB limit"
    return None


def chunks(study: Study, cases: list[Case], max_live: int) -> list[list[Case]]:
    """Split a study's cases into chunks of at most ``max_live``, keeping each case with its
    reference (cases that share a reference go together while they fit)."""
    groups: dict[Any, list[Case]] = {}
    for c in cases:
        groups.setdefault(study.reference_of(c) or c, []).append(c)
    out: list[list[Case]] = []
    for g in groups.values():
        if out and len(out[-1]) + len(g) <= max_live:
            out[-1].extend(g)
        else:
            out.extend(g[i:i + max_live] for i in range(0, len(g), max_live))
    return out


ProgressFn = Callable[[str, int], None]  # (description, units done now)


# What a fork server imports before forking workers (this run's, and each A/B arm's: sciml_bench.ab).
FORKSERVER_PRELOAD = ["sciml_bench.lifetime", "torch", "torch._dynamo", "sciml_bench.runner", "sciml_bench.workloads"]


def _context():
    """Start workers from a fork server that has imported torch once (a worker then starts in
    a fraction of a second instead of ~3 s); spawn where fork servers do not exist. Plain fork
    is unsafe once the parent has initialised CUDA or thread pools; the server never does."""
    from sciml_bench.lifetime import mark_run

    mark_run()  # the fork server (via the lifetime preload) and the workers die with this process
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx


def round_orders(seed: str, n: int, rounds: int) -> list[list[int]]:
    """A fresh random order of ``n`` cases for every round, reproducible from ``seed``.

    Randomised multiple interleaved trials (RMIT; Abedi & Brecht, ICPE 2017): a fixed or
    rotating order lets a periodic disturbance or a case's after-effects (caches, frequency,
    allocator) land on the same neighbour every round; a random order per round turns that
    bias into noise the CI sees."""
    rng = random.Random(seed)
    out = []
    for _ in range(rounds):
        order = list(range(n))
        rng.shuffle(order)
        out.append(order)
    return out


def round_plan(seed: str, units: list[list[int]], rounds: int, anchor: bool, together: bool) -> list[list[tuple[int, ...]]]:
    """Every round's steps in run order: a step is the workers timed at once (one, or a duet's
    two), or ``()`` for the anchor. Units take turns in ``round_orders``; a unit of several workers
    runs them at once (``together``, --duet) or back to back in a fresh random order per round.

    A/B pairs a case's two arms this way because the machine's speed wanders within a round: in
    the fully shuffled A/B runs of ``results/detection/`` (2 cores), the robust sd of a round's log
    ratio was 0.064-0.106 where the two arms happened to run back to back, 0.079-0.180 where they
    ran 8 or more turns apart (``benchmarks/detection_quality.py score-ab``)."""
    rng = random.Random(f"{seed}:turns")
    plan = []
    for order in round_orders(seed, len(units) + anchor, rounds):
        steps: list[tuple[int, ...]] = []
        for u in order:
            if u == len(units):
                steps.append(())
            elif together:
                steps.append(tuple(units[u]))
            else:
                members = list(units[u])
                rng.shuffle(members)
                steps.extend((i,) for i in members)
        plan.append(steps)
    return plan


def plan_positions(plan: list[list[tuple[int, ...]]], slot: int) -> list[int]:
    """The step of every round of ``plan`` at which worker ``slot`` was timed (its recorded ``position``)."""
    return [next(k for k, step in enumerate(steps) if slot in step) for steps in plan]


def run_pass(study: Study, cases: list[Case], opts: RunOptions, log_dir: Path,
             progress: ProgressFn = lambda d, n: None, index: int = 0,
             arms: list[Any] | None = None) -> list[dict[str, Any]]:
    """Time one pass of a chunk in fresh workers; return one pass result per case, in ``cases`` order.

    ``arms`` (A/B, ``sciml_bench.ab``): every case once per arm, each worker started by its arm's
    interpreter; a case's two arms take one turn of the round (``round_plan``); results are per
    case x arm, arm-major.

    Pass 0 measures everything (setup: memory, FLOPs, overhead); later passes only build, warm
    up and time. After the last pass's rounds come the phases/profile pass and fixed-budget training
    (mode='fit'). Progress units: one per case setup and case round, one per profile and per fit.
    """
    from sciml_bench.measure import anchor
    from sciml_bench.measure.timing import machine_load

    log_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"--pass{index + 1}" if index else ""
    contexts: list[Any] = []  # the arms' fork servers of this pass (closed in the finally below)
    workers: list[_Worker] = []
    # one slot per worker: (case, arm name or None), arm-major
    slots = [(c, a.name) for a in arms for c in cases] if arms else [(c, None) for c in cases]
    cases = [c for c, _ in slots]
    seed = f"{opts.seed}:{study.name}:{index}"
    # What takes a turn in a round: a worker, or in A/B a case's two arms (slots are arm-major), at once
    # with --duet; the anchor takes a turn of its own in every round's random order
    half = len(slots) // 2
    units = [[i, i + half] for i in range(half)] if arms else [[i] for i in range(len(slots))]
    plan = round_plan(seed, units, opts.rounds, opts.anchor, opts.duet)
    anchor_timer = anchor.Anchor() if opts.anchor else None
    anchors: list[float | None] = []
    load = {"start": machine_load()}
    started = time.time()
    info: dict[int, dict[str, Any]] = {}
    cores: dict[int, list[int]] = {}  # --duet: the cores each worker was pinned to
    blocks: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(cases))}
    try:
        if arms:  # both servers import torch side by side while the workers are set up
            from sciml_bench.ab import ArmContext

            contexts = [ArmContext(a, log_dir / safe_filename(f"{study.name}--server-{a.name}{suffix}", ".log"))
                        for a in arms]
        by_arm = {a.name: c for a, c in zip(arms, contexts)} if arms else {None: _context()}
        for c, name in slots:
            log = log_dir / safe_filename(f"{study.name}--{c.case_id}{f'--{name}' if name else ''}{suffix}", ".log")
            workers.append(_Worker(by_arm[name], c, log, opts))
        for i, w in enumerate(workers):
            progress(f"{study.name}: starting {w.case.case_id}", 0)
            status, payload = w.call(None, START_TIMEOUT, charge=False)
            if status != "ready":
                w.failure = (status, payload)
        if opts.duet:  # before setup, so every thread the worker starts inherits its cores
            from sciml_bench.ab import pin_duet

            cores = pin_duet(units, workers, index)
        for i, w in enumerate(workers):  # setups one at a time: first-step and memory undisturbed
            progress(f"{study.name}: setup {w.case.case_id}", 0)
            if w.failure is None:
                status, payload = w.call(("setup", w.case.to_dict(), asdict(opts), index == 0), w.budget)
                if status == "ok":
                    info[i] = payload
                else:
                    w.failure = (status, payload)
                    w.kill()
            progress(f"{study.name}: setup {w.case.case_id}", 1)
        for r, steps in enumerate(plan):
            anchors.append(None)
            for step in steps:
                if not step:  # timed here, in the parent: it shares the round's machine, not a worker's code
                    anchors[r] = anchor_timer.time_block()
                    continue
                live = [i for i in step if workers[i].failure is None]
                desc = f"{study.name}: {f'pass {index + 1}/{opts.passes} ' if opts.passes > 1 else ''}" \
                       f"round {r + 1}/{opts.rounds} {workers[step[0]].case.case_id}"
                progress(desc, 0)
                posted = time.perf_counter()
                for i in live[1:]:  # a duet: the other arm starts its block now too, then both are awaited
                    workers[i].post(("round", opts.round_time))
                for k, i in enumerate(live):
                    w = workers[i]
                    if k:  # its block ran while the first arm was awaited: that time is its too
                        w.budget -= time.perf_counter() - posted
                    status, payload = w.call(None if k else ("round", opts.round_time), w.budget)
                    if status == "ok":
                        blocks[i].append(payload)
                    else:
                        w.failure = (status, payload)
                        w.kill()
                progress(desc, len(step))
        if index == opts.passes - 1 and (opts.phases or opts.profile):  # after the last timed round
            _profile_pass(study, workers, info, opts, progress)
        if index == opts.passes - 1:
            _fit_pass(study, workers, info, progress)
    finally:
        for w in workers:
            w.stop()
        for c in contexts:  # the arms' fork servers of this pass
            c.close()
    load["end"] = machine_load()
    finished = time.time()
    return [{"study": study.name, "case_id": w.case.case_id, "arm": slots[i][1], "pass": index, "failure": w.failure,
             "info": info.get(i), "blocks": blocks[i], "order_seed": seed, "anchor": anchors[:len(blocks[i])],
             "position": plan_positions(plan[:len(blocks[i])], i),
             "load": load, "started": started,
             "finished": finished, **({"cores": cores.get(i)} if opts.duet else {})} for i, w in enumerate(workers)]


def combine(study: Study, cases: list[Case], passes: dict[str, list[dict[str, Any]]], opts: RunOptions,
            pool: list[float] | None = None) -> list[dict[str, Any]]:
    """One record per case (in ``cases`` order) from its pass results, then the chunk's ratios.

    A failure in any pass makes the case's record that failure (a case that crashes sometimes is
    not ok). ``pool``: between-pass variances of this run's earlier ratios (see ``_add_ratios``)."""
    records = []
    for c in cases:
        ps = sorted(passes.get(c.case_id, []), key=lambda p: p["pass"])
        failed = next((p for p in ps if p["failure"]), None)
        failure = None
        if failed is not None:
            later = f" (in pass {failed['pass'] + 1} of {opts.passes}; earlier passes were ok)" if failed["pass"] else ""
            failure = (failed["failure"][0], failed["failure"][1] + later)
        elif not ps:
            failure = ("error", "no timed pass recorded")
        blocks = [dict(b, **{"pass": p["pass"], "anchor": (p.get("anchor") or [None] * len(p["blocks"]))[k]})
                  for p in ps for k, b in enumerate(p["blocks"])]
        rec = _record(study, c, failure, _pass_info(ps), [b["times"] for b in blocks], opts,
                      ps[0]["started"] if ps else time.time(), blocks)
        rec["timing"] = {"passes": [{k: p[k] for k in ("pass", "order_seed", "position", "load", "started",
                                                        "finished", "cores") if k in p} for p in ps]}
        records.append(rec)
    _add_ratios(study, records, pool)
    add_scaling(records)
    return records


def _pass_info(ps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The setup info of a case: pass 1 measured everything; the last pass adds its phases/profile."""
    if not ps or ps[0]["info"] is None:
        return None
    info = dict(ps[0]["info"], metrics=dict(ps[0]["info"]["metrics"]), absent=dict(ps[0]["info"]["absent"]))
    last = ps[-1]["info"] if len(ps) > 1 else None
    if last:
        info["metrics"].update(last["metrics"])
        info["absent"].update(last["absent"])
        for key in ("profile", "fit"):
            if last.get(key):
                info[key] = last[key]
    return info


def run_chunk(study: Study, cases: list[Case], opts: RunOptions, log_dir: Path,
              progress: ProgressFn = lambda d, n: None) -> list[dict[str, Any]]:
    """Run every pass of one chunk back to back; return one record per case, in ``cases`` order.

    ``execute`` interleaves the passes of different studies instead (more time between passes);
    this is the one-chunk form. Progress units: one per case setup and one per case round, per pass.
    """
    passes: dict[str, list[dict[str, Any]]] = {}
    for index in range(opts.passes):
        todo = [c for c in cases if not any(p["failure"] for p in passes.get(c.case_id, []))]
        for p in run_pass(study, todo, opts, log_dir, progress, index) if todo else []:
            passes.setdefault(p["case_id"], []).append(p)
    return combine(study, cases, passes, opts)



def _fit_pass(study: Study, workers: list[_Worker], info: dict[int, dict[str, Any]], progress: ProgressFn) -> None:
    """Fixed-budget training of every mode='fit' case after its timed rounds: its load cannot skew them."""
    for i, w in enumerate(workers):
        if w.case.mode != "fit":
            continue
        progress(f"{study.name}: fit {w.case.case_id} ({w.case.steps} steps x {w.case.seeds} seeds)", 0)
        if w.failure is None and i in info:
            status, payload = w.call(("fit", w.case.to_dict()), w.budget)
            if status == "ok":
                info[i]["fit"] = payload
            else:
                w.failure = (status, payload)
                w.kill()
        progress(f"{study.name}: fit {w.case.case_id}", 1)


def _profile_pass(study: Study, workers: list[_Worker], info: dict[int, dict[str, Any]], opts: RunOptions,
                  progress: ProgressFn) -> None:
    """Phases (and a trace) of every timed case, after all its rounds: profiling never touches the
    recorded timings. A pass that fails or times out costs the case its profile, never its timings."""
    for i, w in enumerate(workers):
        progress(f"{study.name}: profile {w.case.case_id}", 0)
        if w.failure is None and i in info:
            trace_dir = (str(Path(opts.profile["out"]) / safe_filename(study.name) / safe_filename(w.case.case_id))
                         if opts.profile else None)
            status, payload = w.call(("profile", trace_dir, opts.profile), w.budget)
            if status == "ok":
                info[i]["metrics"].update(payload["metrics"])
                info[i]["absent"].update(payload["absent"])
                if payload["profile"] is not None:
                    info[i]["profile"] = payload["profile"]
            else:
                info[i]["absent"]["profile"] = f"profile pass {status}: {payload}"
        progress(f"{study.name}: profile {w.case.case_id}", 1)




def _record(study: Study, case: Case, failure: tuple[str, str] | None, info: dict[str, Any] | None,
            rounds: list[list[float]], opts: RunOptions, started: float,
            blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A case's record from its setup ``info`` and timed ``rounds`` (per-call times per block).

    ``blocks`` (one per round: pass, CPU share, starved) come from ``time_block``. Starved blocks
    are left out of the statistics when at least half of the rounds remain (a CI must not mix in
    rounds the machine did not run); otherwise all are kept and the case is marked starved."""
    rec: dict[str, Any] = {"study": study.name, "case_id": case.case_id, "case": case.to_dict(),
                           "started": started, "finished": time.time()}
    if failure is not None:
        return dict(rec, status=failure[0], reason=failure[1], metrics={}, absent={})
    fit = info.get("fit")
    if fit is not None:  # convergence beside speed and memory: metrics, curves, gradient health
        info = dict(info, metrics=dict(info["metrics"], **fit["metrics"]), absent=dict(info["absent"], **fit["absent"]))
        rec.update(fit=fit["fit"], curves=fit["curves"], gradients=fit["gradients"])
    metrics, absent = _finite_metrics(info)
    blocks = blocks or [{} for _ in rounds]
    medians = [statistics.median(t) for t in rounds]
    # A case's own DataLoader workers compete with it for the cores: waiting for a CPU is then part of
    # the workload being measured, not a sign of a busy machine.
    starved = [bool(b.get("starved")) and not case.num_workers for b in blocks]
    kept = [m for m, st in zip(medians, starved) if not st]
    excluded = any(starved) and len(kept) >= max(2, len(medians) / 2)
    s = summarize(kept if excluded else medians)
    metrics["step_time"] = {"value": s["median"], "unit": "s", "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                            "iqr": s["iqr"], "n": s["n"], "samples": medians, "raw": rounds,
                            "pass": [b.get("pass", 0) for b in blocks], "starved": starved}
    anchor = [b.get("anchor") for b in blocks]
    if anchor and all(anchor):  # the anchor's time in each of the case's rounds (results.anchored_samples)
        metrics["step_time"]["anchor"] = anchor
    if s["ci_low"] is None:
        absent["step_time_ci"] = f"{s['n']} rounds are too few for a 95% CI of the median (need >= 6)"
    bs = case.batch_size
    metrics["throughput"] = {"value": bs / s["median"], "unit": "samples/s",
                             "ci_low": bs / s["ci_high"] if s["ci_high"] else None,
                             "ci_high": bs / s["ci_low"] if s["ci_low"] else None, "n": s["n"]}
    if case.ddp_ranks:
        metrics.update(rank_metrics(case, blocks))  # per-rank figures; throughput over the global batch
    if "flops" in metrics:
        from sciml_bench.measure.flops import flop_rate

        metrics["flop_rate"] = flop_rate(metrics["flops"], s["median"])
    if info.get("profile"):
        rec["profile"] = info["profile"]
    rec = dict(rec, status="ok", reason=None, metrics=metrics, absent=absent,
               worker={"pid": info["pid"], "threads": info["threads"], "warmup_steps": info["warmup_steps"],
                       "backend": info.get("backend", {})},
               cpu={k: [b.get(k) for b in blocks] for k in ("cpu_share", "run_queue_wait")})
    if any(starved):
        rec["starved"] = _starved_summary(blocks, starved, excluded)
    if info.get("overhead"):
        from sciml_bench.measure.overhead import overhead_verdict

        rec["overhead"] = overhead_verdict(s["median"], info["overhead"])
    # e.g. a diverged loss: JSON has no NaN and 0 would be a lie, so finite_record moves it to absent
    return finite_record(_flag_nonfinite(study, info["metrics"], rec))


def _finite_metrics(info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(metrics, absent) of a setup payload, non-finite values moved to ``absent`` with the reason."""
    metrics, absent = dict(info["metrics"]), dict(info["absent"])
    for name, m in list(metrics.items()):  # e.g. a diverged loss: JSON has no NaN, and 0 would be a lie
        if isinstance(m.get("value"), float) and not math.isfinite(m["value"]):
            absent[name] = f"measured value was {m['value']} (non-finite)"
            del metrics[name]
    return metrics, absent


def _starved_summary(blocks: list[dict[str, Any]], starved: list[bool], excluded: bool) -> dict[str, Any]:
    """Which blocks the machine starved, how much CPU they got, and what the statistics did about it."""
    shares = [b["cpu_share"] for b, st in zip(blocks, starved) if st and b.get("cpu_share") is not None]
    waits = [b["run_queue_wait"] for b, st in zip(blocks, starved) if st and b.get("run_queue_wait") is not None]
    threads = next((b["threads"] for b in blocks if b.get("threads")), None)
    got = f"it got {min(shares):.0%} of {threads} core{'s' if threads != 1 else ''}" if shares else "it was starved"
    waited = f", waiting for a CPU up to {max(waits):.0%} of a block" if waits else ""
    what = "left out of its statistics" if excluded else "all kept, too few others: its numbers are unreliable"
    return {"blocks": sum(starved), "of": len(starved), "min_cpu_share": min(shares) if shares else None,
            "max_run_queue_wait": max(waits) if waits else None, "excluded": excluded,
            "message": f"{got}{waited} in {sum(starved)} of {len(starved)} timed blocks ({what})"}


def _flag_nonfinite(study: Study, measured: dict[str, dict[str, Any]], rec: dict[str, Any]) -> dict[str, Any]:
    """Mark a case whose training loss went NaN/inf (``nonfinite_loss``); with the study's
    ``fail_on_nonfinite`` it becomes an ``error``, its measurements kept."""
    why = []
    warm = measured.get("loss_after_warmup", {}).get("value")
    if isinstance(warm, float) and not math.isfinite(warm):
        why.append(f"loss {warm} after {measured['loss_after_warmup'].get('steps', '?')} warmup steps")
    bad = measured.get("nonfinite_loss_steps", {})
    if bad.get("value"):
        why.append(f"{bad['value']} of {bad.get('steps', '?')} numerics steps non-finite")
    if why:
        rec["nonfinite_loss"] = "; ".join(why)
        if study.fail_on_nonfinite:
            rec.update(status="error", reason=f"diverged: {rec['nonfinite_loss']} (study sets fail_on_nonfinite)")
    return rec


def _add_ratios(study: Study, records: list[dict[str, Any]], pool: list[float] | None = None) -> None:
    """Attach time and memory ratios against each case's reference case, from paired rounds.

    The time ratio's CI (``stats.pass_ratio``) is a rerun interval over passes; its between-pass
    variance is moderated by the pooled variance of the other ratios of this run (``pool``, from
    earlier chunks, plus this chunk's other ratios). This chunk's variances are appended to ``pool``.
    """
    pool = [] if pool is None else pool
    by_id = {r["case_id"]: r for r in records}
    pairs = []
    for rec in records:
        ref_case = study.reference_of(Case(**rec["case"]))
        if rec["status"] != "ok" or ref_case is None:
            continue
        ref = by_id.get(ref_case.case_id)
        if ref is None or ref["status"] != "ok":
            why = ("not timed in the same rounds (absent from the run, or in another chunk or an earlier "
                   "session of a resumed run)") if ref is None else f"reference case {ref['status']}"
            rec["absent"]["time_ratio"] = f"reference {ref_case.case_id}: {why}"
            continue
        pairs.append((rec, ref, pass_pairs(rec, ref)))
    # a ratio whose blocks were starved measures the neighbours: it does not teach the pool anything
    own = {id(rec): pass_ratio(*pp)["pass_var"] for rec, ref, pp in pairs
           if ref is not rec and not rec.get("starved") and not ref.get("starved")}
    for rec, ref, pp in pairs:
        if ref is rec:  # the reference against itself: exactly 1, and no evidence about the machine
            rec["metrics"]["time_ratio"] = {"value": 1.0, "unit": "x", "ci_low": 1.0, "ci_high": 1.0,
                                            "n": sum(len(x) for x in pp[0]), "reference": ref["case_id"]}
        else:
            prior = pool + [v for k, v in own.items() if k != id(rec) and v is not None]
            pr = pass_ratio(*pp, prior_var=sum(prior) / len(prior) if prior else None,
                            prior_df=len(prior) * max(len(pp[0]) - 1, 1))  # each pooled variance: P-1 df
            rec["metrics"]["time_ratio"] = {
                "value": pr["ratio"], "unit": "x", "ci_low": pr["ci_low"], "ci_high": pr["ci_high"], "n": pr["n"],
                "reference": ref["case_id"], "passes": pr["passes"], "pass_ratios": pr["pass_ratios"],
                "spread_passes": [min(pr["pass_ratios"]), max(pr["pass_ratios"])], "ci_within": pr["ci_within"],
                "sd_between": pr["sd_between"], "pass_var": pr["pass_var"], "df": pr["df"],
                "ci_method": pr["ci_method"]}
        mine, theirs = peak_memory(rec), peak_memory(ref)
        if mine and theirs and mine[0] == theirs[0] and theirs[1]:
            rec["metrics"]["memory_ratio"] = {"value": mine[1] / theirs[1], "unit": "x",
                                              "reference": ref["case_id"]}
        if "compile_time" in rec["metrics"] and "compile_time" not in ref["metrics"]:
            _add_break_even(rec, ref)
    pool.extend(v for v in own.values() if v is not None)


def _add_break_even(rec: dict[str, Any], ref: dict[str, Any]) -> None:
    """Steps after which a compiled case's compile time is paid back by its per-step saving."""
    saving = ref["metrics"]["step_time"]["value"] - rec["metrics"]["step_time"]["value"]
    compile_time = rec["metrics"]["compile_time"]["value"]
    if saving > 0:
        rec["metrics"]["break_even_steps"] = {"value": compile_time / saving, "unit": "steps",
                                              "saving_per_step_s": saving, "reference": ref["case_id"]}
    else:
        rec["absent"]["break_even_steps"] = (f"compiled step is not faster than {ref['case_id']} "
                                             f"({rec['metrics']['step_time']['value']:.3g} s vs "
                                             f"{ref['metrics']['step_time']['value']:.3g} s): never breaks even")


# ---------------------------------------------------------------- a whole run

@dataclass(frozen=True)
class RunSpec:
    """What to run, as the user asked for it; kept in the run header so --resume can rebuild the plan."""

    suite: str = "quick"
    studies: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # globs on model names
    set: list[str] = field(default_factory=list)  # "field=value" overrides
    device: str = "auto"
    plugins: list[str] = field(default_factory=list)
    shard: str = ""  # "K/N": this machine's whole studies of the selection (sciml_bench.shard)
    seeds: int | None = None  # training seeds of every mode='fit' case (--seeds); None: the suite's


@dataclass
class Run:
    """A run file being written: its header, the plan and what is already done."""

    path: Path
    header: dict[str, Any]
    spec: RunSpec
    opts: RunOptions
    plan: list[tuple[Study, list[Case]]]
    done: set[tuple[str, str]]
    partial: list[dict[str, Any]] = field(default_factory=list)  # pass results of unfinished cases
    pool: list[float] = field(default_factory=list)  # between-pass variances of the run's ratios so far
    arms: list[Any] | None = None  # A/B (sciml_bench.ab): every case timed once per arm

    def passes_of(self, study: Study, chunk: list[Case], arm: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """{case id: its recorded pass results, the latest per pass} for a chunk (of one A/B arm)."""
        ids = {c.case_id for c in chunk}
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        for p in self.partial:
            if p["study"] == study.name and p["case_id"] in ids and p.get("arm") == arm:
                latest[(p["case_id"], p["pass"])] = p
        out: dict[str, list[dict[str, Any]]] = {}
        for (cid, _), p in sorted(latest.items()):
            out.setdefault(cid, []).append(p)
        return out

    @property
    def run_id(self) -> str:
        return self.header["run_id"]

    @property
    def work(self) -> list[tuple[Study, list[Case]]]:
        """The chunks still to run: unfinished cases, split by ``chunks``."""
        todo = [(s, [c for c in cases if (s.name, c.case_id) not in self.done]) for s, cases in self.plan]
        return [(s, ch) for s, cases in todo for ch in chunks(s, cases, self.opts.max_live) if ch]

    @property
    def todo(self) -> int:
        return sum(len(ch) for _, ch in self.work)

    @property
    def units(self) -> int:
        """Progress units of the remaining work: one per case setup and case round per pass, and one
        per case profile pass and per fit."""
        units = 0
        profiled = 1 if self.opts.phases or self.opts.profile else 0
        for s, ch in self.work:
            have = self.passes_of(s, ch)
            units += sum((self.opts.passes - len(have.get(c.case_id, []))) * (1 + self.opts.rounds) + profiled
                         + (c.mode == "fit") for c in ch)
        return units * (len(self.arms) if self.arms else 1)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; UsageError for cuda without CUDA."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine; allowed here: auto, cpu")
    return device


def plan_cases(spec: RunSpec) -> tuple[Suite, list[tuple[Study, list[Case]]]]:
    """(suite, [(study, cases)]) selected by ``spec``; UsageError when nothing matches."""
    from sciml_bench.models import get_model_spec

    os.environ["SCIML_BENCH_PLUGINS"] = ",".join(spec.plugins)  # read by the zoo here and in every worker
    suite = load_suite(spec.suite)
    overrides = dict(parse_assignment(a) for a in spec.set)
    if "device" in overrides and spec.device != "auto" and overrides["device"] != spec.device:
        raise UsageError(f"--set device={overrides['device']} conflicts with --device {spec.device}; "
                         f"give one of them")
    overrides["device"] = resolve_device(overrides.get("device", spec.device))
    for pat in spec.models:
        if not any(ch in pat for ch in "*?["):
            get_model_spec(pat)  # an unknown model name is an error, not an empty match
    plan = []
    for study, cases in iter_cases(suite, spec.studies, overrides, spec.models):  # select, then override
        if spec.seeds is not None:
            cases = [c.replace(seeds=spec.seeds) if c.mode == "fit" else c for c in cases]
        if cases:
            plan.append((study, cases))
    if not plan:
        raise UsageError(f"no cases match --study {spec.studies or '*'} --model {spec.models or '*'} "
                         f"in suite {suite.name}")
    if spec.shard:
        from sciml_bench.shard import select_shard

        plan = select_shard(plan, spec.shard, suite.rounds, suite.round_time, passes=suite.passes)
    return suite, plan


def run_label(suite: Suite, plan: list[tuple[Study, list[Case]]], spec: RunSpec) -> str:
    """The run id's name part: the suite when all of it ran, else what did ("batch-size",
    "quick-3-studies", "quick-models-mlp"), so a one-study run is not mistaken for the whole suite."""
    if len(plan) == 1 and len(suite.studies) > 1:
        label = plan[0][0].name
    elif len(plan) < len(suite.studies):
        label = f"{suite.name}-{len(plan)}-studies"
    else:
        label = suite.name
    if spec.models:
        label += "-" + "-".join(spec.models)
    return label


def start_run(spec: RunSpec, out: str | os.PathLike = "results", *, rounds: int | None = None,
              round_time: float | None = None, timeout: float | None = None, threads: int | None = None,
              max_live: int = 8, hide_hostname: bool = False, phases: bool = False,
              profile: dict[str, Any] | None = None, passes: int | None = None, seed: int | None = None,
              arms: list[Any] | None = None, ab_gate: dict[str, Any] | None = None,
              least: tuple[int, int] = (1, 1), duet: bool = False) -> Run:
    """Validate everything, then create ``out/<run_id>.jsonl`` with its header (environment
    fingerprint and machine peak). Timing options default to the suite's. Bad input raises
    UsageError before any file exists.

    ``phases`` adds a phase-breakdown pass per case after its timed rounds; ``profile``
    (ProfileOptions fields) also a torch.profiler trace, under ``profile["out"]`` (default
    ``reports/<run_id>/profiles`` beside ``out``, where the run's report picks it up). ``arms``
    (``sciml_bench.ab``): an A/B run, every case timed once per arm in the same rounds; ``least``:
    the (rounds, passes) that the suite's defaults are raised to at least (A/B needs more); ``duet``:
    a case's two arms time each block at the same time, on disjoint cores (``ab.pin_duet``)."""
    suite, plan = plan_cases(spec)  # validate before importing the measurement stack (and its warnings)
    from sciml_bench.measure.environment import collect
    from sciml_bench.measure.peak import calibrate

    spec = RunSpec(**dict(asdict(spec), device=plan[0][1][0].device))  # as resolved, --set device included
    if duet and not arms:
        raise ValueError("duet pairs the two arms of each case: it needs arms (sciml-bench ab)")
    threads = threads or suite.threads
    opts = RunOptions(rounds=rounds or max(suite.rounds, least[0]), round_time=round_time or suite.round_time,
                      timeout=timeout or suite.timeout, threads=threads, max_live=max_live,
                      passes=passes or max(suite.passes, least[1]), seed=random.randrange(2**31) if seed is None else seed,
                      duet=duet)
    run_id = new_run_id(("ab-" if arms else "") + run_label(suite, plan, spec))
    if profile is not None:
        from sciml_bench.profiling import ProfileOptions

        ProfileOptions(**profile)  # UsageError now, not in every worker
        profile = dict(profile, out=str(Path(profile.get("out") or
                                             Path(out).resolve().parent / "reports" / run_id / "profiles")))
    opts = replace(opts, phases=phases or profile is not None, profile=profile)
    header = {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "suite": suite.name,
              "suite_file": suite.path, "spec": asdict(spec), "options": asdict(opts),
              "studies": {s.name: {"question": s.question, "axes": s.axes, "reference": s.reference,
                                   "metrics": list(s.metrics), "fail_on_nonfinite": s.fail_on_nonfinite}
                          for s, _ in plan},
              "environment": collect(hide_hostname=hide_hostname, threads=threads),
              "machine_peak": calibrate(spec.device, threads=threads)}  # roofline ceiling, ~4 s on 2 cores
    if opts.anchor:
        from sciml_bench.measure import anchor

        header["anchor"] = anchor.header()
    if arms:  # each arm's interpreter, code and environment; the round orders' seed is in options
        header["ab"] = {"arms": {a.name: a.header() for a in arms}, "gate": ab_gate or {}}
    path = Path(out) / f"{run_id}.jsonl"
    RunWriter(path, header).close()
    return Run(path, header, spec, opts, plan, set(), arms=arms)


def resume_run(path: str | os.PathLike) -> Run:
    """Reopen an interrupted run: same spec and options, finished cases skipped."""
    header, records = read_run(path)
    if header.get("ab"):
        raise UsageError(f"{path} is an A/B run: its arms' worktrees are gone, so it cannot be resumed; "
                         f"run sciml-bench ab again")
    if is_locked(path):
        raise UsageError(f"{path} is being written by another sciml-bench process; wait for it to finish "
                         f"(or stop it) before resuming")
    try:
        spec, opts = RunSpec(**header["spec"]), RunOptions(**header["options"])
    except (KeyError, TypeError) as e:
        raise UsageError(f"{path}: header has no usable run spec/options to resume from ({e})") from None
    _, plan = plan_cases(spec)
    done = done_keys(records)
    partial = [p for p in read_run(path, "pass")[1] if (p["study"], p["case_id"]) not in done]
    pool = [r["metrics"]["time_ratio"]["pass_var"] for r in records
            if r.get("metrics", {}).get("time_ratio", {}).get("pass_var") is not None]
    return Run(Path(path), header, spec, opts, plan, done, partial, pool)


@contextlib.contextmanager
def _sticky_interrupt():
    """Yield a list that a Ctrl-C appends to, besides raising KeyboardInterrupt as usual.

    Python drops (prints) an exception raised inside a finalizer, a ``__del__`` or a weakref
    callback such as multiprocessing's, and the run starts and reaps workers all the time: a
    Ctrl-C landing there would be lost and the run would go on to the end. The flag keeps it.
    Only where Ctrl-C raises anyway: a run started with SIGINT ignored (``nohup ... &``) stays so.
    """
    import threading

    hit: list[int] = []
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield hit
        return

    def on_sigint(signum, frame):
        hit.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield hit
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def execute(run: Run, progress: ProgressFn = lambda d, n: None,
            on_record: Callable[[dict[str, Any]], None] = lambda r: None) -> None:
    """Run the remaining work, appending each chunk's records (flushed) as it finishes.

    With several passes, every chunk's pass 1 runs before any chunk's pass 2, so the passes of a
    study are minutes apart, in fresh workers, with other studies in between: the ratio CIs then
    see the machine's slow changes that one time window hides. A pass is written as it finishes
    (``type: pass`` lines) and the case's record after its last pass.

    Ctrl-C propagates as KeyboardInterrupt after the workers are stopped; records and passes of
    finished chunks are already on disk, the chunk pass in progress is discarded (``--resume``
    reruns it).
    """
    log_dir = run.path.parent / "logs" / safe_filename(run.run_id)
    with _sticky_interrupt() as hit, RunWriter(run.path) as writer:  # locked: a second --resume is refused
        def progress(desc: str, n: int, _show=progress) -> None:
            if hit:  # a Ctrl-C whose KeyboardInterrupt a finalizer swallowed
                raise KeyboardInterrupt
            _show(desc, n)

        run.done |= done_keys(read_run(run.path)[1])  # whatever a run before the lock finished
        work = run.work  # fixed for this session: records written below must not reshape the chunks
        for index in range(run.opts.passes):
            last = index == run.opts.passes - 1
            for study, chunk in work:
                names = [a.name for a in run.arms] if run.arms else [None]
                haves = [run.passes_of(study, chunk, arm) for arm in names]
                # a case that failed in any arm is dropped from later passes in all of them
                alive = [c for c in chunk if not any(p["failure"] for have in haves for p in have.get(c.case_id, []))]
                # a pass is paired across the chunk: rerun it whole unless every live case has it
                todo = [] if all(any(p["pass"] == index for p in have.get(c.case_id, []))
                                 for have in haves for c in alive) else alive
                for p in run_pass(study, todo, run.opts, log_dir, progress, index, run.arms) if todo else []:
                    if not last:
                        writer.append(p, kind="pass")
                    run.partial.append(p)
                if last:
                    for arm in names:
                        for rec in combine(study, chunk, run.passes_of(study, chunk, arm), run.opts, run.pool):
                            if arm is not None:
                                rec = {"arm": arm, **rec}
                            writer.append(rec)
                            run.done.add((rec["study"], rec["case_id"]))
                            on_record(rec)
