"""Runner: executes a suite's cases in worker subprocesses, timed in interleaved rounds.

Each case of a study gets its own worker process, kept alive for the whole study: the parent
builds every case (one at a time, so first-step and memory figures are undisturbed), then
times them round-robin in short blocks (A B C, B C A, ...). A case's statistics come from its
per-round medians and a variant/reference ratio from paired rounds, so drift of a shared
machine shows up in the CIs instead of hiding in one contiguous block. A case that raises,
crashes, hangs or runs out of memory becomes a record with that status; the run goes on.
A ``mode='fit'`` case is timed like a train case, then its worker trains it for its budget
(``sciml_bench.training``, worker command ``fit``): one record holds speed, memory and convergence.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from sciml_bench.cases import Case, Study, Suite, iter_cases, load_suite, parse_assignment
from sciml_bench.errors import Unsupported, UsageError
from sciml_bench.results import RunWriter, done_keys, new_run_id, read_run
from sciml_bench.stats import paired_ratio, summarize

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


# ---------------------------------------------------------------- worker side

def _classify(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for an exception raised by a case."""
    import torch

    msg = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
    if isinstance(exc, Unsupported):
        return "skipped", str(exc)
    text = str(exc).lower()
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (isinstance(exc, RuntimeError) and any(
            s in text for s in ("out of memory", "not enough memory", "can't allocate memory"))):
        return "oom", msg
    return "error", msg


def _setup(case: Case, opts: RunOptions) -> dict[str, Any]:
    """Build the case, warm it up, and measure what needs measuring once: memory and FLOPs."""
    import torch

    from sciml_bench.measure.flops import count_flops
    from sciml_bench.measure.memory import peak_rss_bytes, rss_bytes, step_memory
    from sciml_bench.measure.timing import warmup
    from sciml_bench.models import param_count
    from sciml_bench.workloads import build_workload, probe

    metrics: dict[str, dict[str, Any]] = {}
    absent: dict[str, str] = {}
    rss_before = rss_bytes()
    wl = build_workload(case)
    warm = warmup(wl.step, opts.warmup_steps, opts.warmup_time)
    metrics["first_step_time"] = {"value": warm["first_step_s"], "unit": "s"}
    if wl.model is None:
        absent["flops"] = "mode='data' runs no model"
    else:
        try:
            metrics["flops"] = {"value": count_flops(wl.step), "unit": "FLOP"}
        except Exception as e:  # an op without FLOP support must not lose the case's timing
            absent["flops"] = f"FlopCounterMode failed: {type(e).__name__}: {e}"
    mem = step_memory(wl.step, wl.device, wl.state_tensors())
    dev, other = ("cuda", "cpu_tensor") if wl.device.type == "cuda" else ("cpu_tensor", "cuda")
    for part in ("peak", "step", "state"):
        metrics[f"{part}_{dev}_bytes"] = {"value": mem[part], "unit": "B"}
    absent[f"peak_{other}_bytes"] = f"case ran on {wl.device.type.upper()}; see peak_{dev}_bytes"
    metrics["rss_before_build_bytes"] = {"value": rss_before, "unit": "B"}
    metrics["peak_rss_bytes"] = {"value": peak_rss_bytes(), "unit": "B"}
    if wl.model is not None:
        metrics["params"] = {"value": param_count(wl.model), "unit": "count"}
    extra, extra_absent = probe(wl, warm["first_step_s"])  # compile, shape sweep, numerics, loader
    metrics.update(extra)
    absent.update(extra_absent)
    _WORKER["workload"] = wl
    backend = {"float32_matmul_precision": torch.get_float32_matmul_precision(),
               "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
               "cudnn_benchmark": torch.backends.cudnn.benchmark}  # as this case ran, not as the parent has them
    return {"metrics": metrics, "absent": absent, "threads": torch.get_num_threads(), "backend": backend,
            "warmup_steps": warm["warmup_steps"], "pid": os.getpid()}


_WORKER: dict[str, Any] = {}


def _worker_main(conn, log_path: str, threads: int | None) -> None:
    """Worker loop: answer ('setup', case_dict, opts) / ('round', seconds) / ('stop',) commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how Ctrl-C ends the run
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)  # torch / kineto chatter goes to the case log, not over the progress bar
    os.dup2(fd, 2)
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
                reply = ("ok", _setup(Case(**msg[1]), RunOptions(**msg[2])))
            elif msg[0] == "fit":
                from sciml_bench.training import fit

                _WORKER.pop("workload", None)  # the timed workload is done; each seed builds its own
                reply = ("ok", fit(Case(**msg[1])))
            elif msg[0] == "round":
                wl = _WORKER["workload"]
                reply = ("ok", time_block(wl.step, msg[1], torch.get_num_threads(), wl.case.case_id))
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

class _Worker:
    """Parent-side handle of one case's worker process, with its remaining time budget."""

    def __init__(self, ctx, case: Case, log_path: Path, opts: RunOptions):
        self.case, self.log_path, self.budget = case, log_path, opts.timeout
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, str(log_path), opts.threads), daemon=True)
        self.proc.start()
        child.close()
        self.failure: tuple[str, str] | None = None

    def call(self, msg: tuple | None, timeout: float, charge: bool = True) -> tuple[str, Any]:
        """Send ``msg`` (None: just wait) and return the reply, or a failure (status, reason).

        Time spent waiting comes off the case's budget when ``charge`` (not for start-up)."""
        t0 = time.perf_counter()
        try:
            if msg is not None:
                self.conn.send(msg)
            ready = self.conn.poll(max(timeout, 0.0))
            reply = self.conn.recv() if ready else None
        except (EOFError, BrokenPipeError, ConnectionResetError):
            reply = self._crash_reason()
        finally:
            if charge:
                self.budget -= time.perf_counter() - t0
        if reply is None:
            self.kill()
            reply = ("timeout", f"no answer within {timeout:.0f} s" + (" (the rest of its --timeout)" if charge
                                                                       else " of starting"))
        return reply

    def _crash_reason(self) -> tuple[str, str]:
        self.proc.join(5)
        code = self.proc.exitcode
        tail = self.log_tail()
        if code is not None and code < 0:
            sig = signal.Signals(-code).name
            if sig == "SIGKILL":
                return "oom", f"worker killed by SIGKILL (the kernel OOM killer's signal){tail}"
            return "crashed", f"worker died from {sig}{tail}"
        return "crashed", f"worker exited with code {code}{tail}"

    def log_tail(self, n: int = 300) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines() if ln.strip() and "USDT:" not in ln]
        return f"; last output: {' | '.join(lines[-3:])[-n:]}" if lines else ""

    def kill(self) -> None:
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


def _context():
    """Start workers from a fork server that has imported torch once (a worker then starts in
    a fraction of a second instead of ~3 s); spawn where fork servers do not exist. Plain fork
    is unsafe once the parent has initialised CUDA or thread pools; the server never does."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "sciml_bench.runner", "sciml_bench.workloads"])
    return ctx


def run_chunk(study: Study, cases: list[Case], opts: RunOptions, log_dir: Path,
              progress: ProgressFn = lambda d, n: None) -> list[dict[str, Any]]:
    """Run one chunk of a study's cases; return one record per case, in ``cases`` order.

    Progress units: one per case setup, one per case round, and one per fit (mode='fit' cases).
    """
    ctx = _context()
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = [_Worker(ctx, c, log_dir / f"{study.name}--{_safe(c.case_id)}.log", opts) for c in cases]
    started = time.time()
    info: dict[int, dict[str, Any]] = {}
    samples: dict[int, list[list[float]]] = {i: [] for i in range(len(cases))}
    fits: dict[int, dict[str, Any]] = {}
    try:
        for i, w in enumerate(workers):
            progress(f"{study.name}: starting {w.case.case_id}", 0)
            status, payload = w.call(None, START_TIMEOUT, charge=False)
            if status != "ready":
                w.failure = (status, payload)
        for i, w in enumerate(workers):  # setups one at a time: first-step and memory undisturbed
            progress(f"{study.name}: setup {w.case.case_id}", 0)
            if w.failure is None:
                status, payload = w.call(("setup", w.case.to_dict(), asdict(opts)), w.budget)
                if status == "ok":
                    info[i] = payload
                else:
                    w.failure = (status, payload)
                    w.kill()
            progress(f"{study.name}: setup {w.case.case_id}", 1)
        for r in range(opts.rounds):
            order = list(range(len(workers)))
            order = order[r % len(order):] + order[:r % len(order)]  # rotate: no fixed position bias
            for i in order:
                w = workers[i]
                progress(f"{study.name}: round {r + 1}/{opts.rounds} {w.case.case_id}", 0)
                if w.failure is None:
                    status, payload = w.call(("round", opts.round_time), w.budget)
                    if status == "ok":
                        samples[i].append(payload)
                    else:
                        w.failure = (status, payload)
                        w.kill()
                progress(f"{study.name}: round {r + 1}/{opts.rounds} {w.case.case_id}", 1)
        for i, w in enumerate(workers):  # fixed-budget training after timing: its load cannot skew the rounds
            if w.case.mode != "fit":
                continue
            progress(f"{study.name}: fit {w.case.case_id} ({w.case.steps} steps x {w.case.seeds} seeds)", 0)
            if w.failure is None:
                status, payload = w.call(("fit", w.case.to_dict()), w.budget)
                if status == "ok":
                    fits[i] = payload
                else:
                    w.failure = (status, payload)
                    w.kill()
            progress(f"{study.name}: fit {w.case.case_id}", 1)
    finally:
        for w in workers:
            w.stop()
    records = [_record(study, w.case, w.failure, info.get(i), samples[i], opts, started, fits.get(i))
               for i, w in enumerate(workers)]
    _add_ratios(study, records)
    return records


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_=." else "_" for ch in s)[:150]


def _record(study: Study, case: Case, failure: tuple[str, str] | None, info: dict[str, Any] | None,
            rounds: list[list[float]], opts: RunOptions, started: float,
            fit: dict[str, Any] | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"study": study.name, "case_id": case.case_id, "case": case.to_dict(),
                           "started": started, "finished": time.time()}
    if failure is not None:
        return dict(rec, status=failure[0], reason=failure[1], metrics={}, absent={})
    metrics, absent = dict(info["metrics"]), dict(info["absent"])
    if fit is not None:  # convergence beside speed and memory: metrics, curves, gradient health
        metrics.update(fit["metrics"])
        absent.update(fit["absent"])
        rec.update(fit=fit["fit"], curves=fit["curves"], gradients=fit["gradients"])
    for name, m in list(metrics.items()):  # e.g. a diverged loss: JSON has no NaN, and 0 would be a lie
        if isinstance(m.get("value"), float) and not math.isfinite(m["value"]):
            absent[name] = f"measured value was {m['value']} (non-finite)"
            del metrics[name]
    medians = [statistics.median(t) for t in rounds]
    s = summarize(medians)
    metrics["step_time"] = {"value": s["median"], "unit": "s", "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                            "iqr": s["iqr"], "n": s["n"], "samples": medians, "raw": rounds}
    if s["ci_low"] is None:
        absent["step_time_ci"] = f"{s['n']} rounds are too few for a 95% CI of the median (need >= 6)"
    bs = case.batch_size
    metrics["throughput"] = {"value": bs / s["median"], "unit": "samples/s",
                             "ci_low": bs / s["ci_high"] if s["ci_high"] else None,
                             "ci_high": bs / s["ci_low"] if s["ci_low"] else None, "n": s["n"]}
    if "flops" in metrics:
        metrics["flop_rate"] = {"value": metrics["flops"]["value"] / s["median"], "unit": "FLOP/s"}
    return dict(rec, status="ok", reason=None, metrics=metrics, absent=absent,
                worker={"pid": info["pid"], "threads": info["threads"], "warmup_steps": info["warmup_steps"],
                        "backend": info.get("backend", {})})


def peak_memory(rec: dict[str, Any]) -> tuple[str, float] | None:
    """(metric name, bytes) of a record's peak tensor memory on its device."""
    for name in ("peak_cuda_bytes", "peak_cpu_tensor_bytes"):
        if name in rec.get("metrics", {}):
            return name, rec["metrics"][name]["value"]
    return None


def _add_ratios(study: Study, records: list[dict[str, Any]]) -> None:
    """Attach time and memory ratios against each case's reference case, from paired rounds."""
    by_id = {r["case_id"]: r for r in records}
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
        pr = paired_ratio(rec["metrics"]["step_time"]["samples"], ref["metrics"]["step_time"]["samples"])
        rec["metrics"]["time_ratio"] = {"value": pr["ratio"], "unit": "x", "ci_low": pr["ci_low"],
                                        "ci_high": pr["ci_high"], "n": pr["n"], "reference": ref_case.case_id}
        mine, theirs = peak_memory(rec), peak_memory(ref)
        if mine and theirs and mine[0] == theirs[0] and theirs[1]:
            rec["metrics"]["memory_ratio"] = {"value": mine[1] / theirs[1], "unit": "x",
                                              "reference": ref_case.case_id}
        if "compile_time" in rec["metrics"] and "compile_time" not in ref["metrics"]:
            _add_break_even(rec, ref)


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
        """Progress units of the remaining work: one per case setup, one per case round, one per fit."""
        return sum(len(ch) * (1 + self.opts.rounds) + sum(c.mode == "fit" for c in ch) for _, ch in self.work)


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
    overrides["device"] = resolve_device(spec.device)
    for pat in spec.models:
        if not any(ch in pat for ch in "*?["):
            get_model_spec(pat)  # an unknown model name is an error, not an empty match
    plan = []
    for study, cases in iter_cases(suite, spec.studies, overrides):
        if spec.models:
            cases = [c for c in cases if any(fnmatch(c.model, p) for p in spec.models)]
        if spec.seeds is not None:
            cases = [c.replace(seeds=spec.seeds) if c.mode == "fit" else c for c in cases]
        if cases:
            plan.append((study, cases))
    if not plan:
        raise UsageError(f"no cases match --study {spec.studies or '*'} --model {spec.models or '*'} "
                         f"in suite {suite.name}")
    return suite, plan


def start_run(spec: RunSpec, out: str | os.PathLike = "results", *, rounds: int | None = None,
              round_time: float | None = None, timeout: float | None = None, threads: int | None = None,
              max_live: int = 8, hide_hostname: bool = False) -> Run:
    """Validate everything, then create ``out/<run_id>.jsonl`` with its header (environment
    fingerprint and machine peak). Timing options default to the suite's. Bad input raises
    UsageError before any file exists."""
    suite, plan = plan_cases(spec)  # validate before importing the measurement stack (and its warnings)
    from sciml_bench.measure.environment import collect
    from sciml_bench.measure.peak import calibrate

    spec = RunSpec(**dict(asdict(spec), device=resolve_device(spec.device)))
    threads = threads or suite.threads
    opts = RunOptions(rounds=rounds or suite.rounds, round_time=round_time or suite.round_time,
                      timeout=timeout or suite.timeout, threads=threads, max_live=max_live)
    run_id = new_run_id(suite.name)
    header = {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "suite": suite.name,
              "suite_file": suite.path, "spec": asdict(spec), "options": asdict(opts),
              "studies": {s.name: {"question": s.question, "axes": s.axes, "reference": s.reference,
                                   "metrics": list(s.metrics)} for s, _ in plan},
              "environment": collect(hide_hostname=hide_hostname, threads=threads),
              "machine_peak": calibrate(spec.device, threads=threads)}  # roofline ceiling, ~1-2 s
    path = Path(out) / f"{run_id}.jsonl"
    RunWriter(path, header).close()
    return Run(path, header, spec, opts, plan, set())


def resume_run(path: str | os.PathLike) -> Run:
    """Reopen an interrupted run: same spec and options, finished cases skipped."""
    header, records = read_run(path)
    spec = RunSpec(**header["spec"])
    _, plan = plan_cases(spec)
    return Run(Path(path), header, spec, RunOptions(**header["options"]), plan, done_keys(records))


def execute(run: Run, progress: ProgressFn = lambda d, n: None,
            on_record: Callable[[dict[str, Any]], None] = lambda r: None) -> None:
    """Run the remaining chunks, appending each chunk's records (flushed) as it finishes.

    Ctrl-C propagates as KeyboardInterrupt after the workers are stopped; records of finished
    chunks are already on disk, the chunk in progress is discarded (``--resume`` reruns it).
    """
    log_dir = run.path.parent / "logs" / run.run_id
    with RunWriter(run.path) as writer:
        for study, chunk in run.work:
            for rec in run_chunk(study, chunk, run.opts, log_dir, progress):
                writer.append(rec)
                run.done.add((rec["study"], rec["case_id"]))
                on_record(rec)
