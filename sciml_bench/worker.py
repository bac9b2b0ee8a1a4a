"""Worker: the process that builds one case and times it on command, the protocol every A/B arm speaks.

A worker answers commands over a pipe (``supervise.Worker`` sends them), one reply per command:

- ``('setup', case_dict, options_dict[, full])`` -> ``('ok', info)``: build, warm up and, in a
  run's first pass (``full``), measure what is measured once (memory, FLOPs, probes, overhead);
- ``('round', seconds)`` -> ``('ok', block)``: one timed block (``measure.timing.time_block``; on a
  GPU with NVML also the energy counter around it, ``measure.energy``);
- ``('profile', trace_dir, profile_options)`` -> ``('ok', {metrics, absent, profile})``;
- ``('fit', case_dict)`` -> ``('ok', fit result)``: fixed-budget training (``sciml_bench.training``);
- ``('instructions', options, case_dict)`` -> ``('ok', {metrics, absent})``: the step's instructions under Callgrind
  (``measure.instructions``; an arm older than it exits, and the case's count is absent);
- ``('stop',)``: exit.

A failure is the reply ``(status, reason)`` (``errors.classify``) and the worker stays alive. It
first sends ``('ready', pid)``. The tuples are the protocol between revisions: a newer run drives
an older arm's worker and the other way round, so change them only in ways both sides ignore
(an option a worker does not know is dropped).
"""
from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sciml_bench.cases import Case
from sciml_bench.errors import classify

if TYPE_CHECKING:
    from sciml_bench.measure.energy import EnergyMeter


@dataclass(frozen=True)
class RunOptions:
    """How cases are timed; recorded in the run header."""

    rounds: int = 5
    round_time: float = 0.2  # seconds of timed steps per case per round
    timeout: float = 300.0  # per case: setup plus all its rounds
    threads: int | None = None  # torch intra-op threads in workers (None: torch's default)
    warmup_steps: int = 3
    warmup_time: float = 0.1
    max_live: int = 8  # most worker processes alive at once (one study chunk)
    phases: bool = False  # after the timed rounds: a phase-breakdown pass per case
    profile: dict[str, Any] | None = None  # after the timed rounds: a trace (profiling.ProfileOptions fields)
    passes: int = 1  # timed passes per study, each in fresh workers; a run times all studies' pass 1, then pass 2, ...
    seed: int = 0  # seeds the random case order of every round (RMIT), per study and pass
    anchor: bool = True  # time the fixed numpy anchor (measure.anchor) once per round, in the round's random order
    duet: bool = False  # A/B: a case's two arms time their blocks at the same time, on disjoint cores (sciml_bench.ab)
    # after the timed rounds: count the step's instructions under Callgrind (measure.instructions):
    # {"calls", "repeats", "max_seconds"}; None: not counted
    instructions: dict[str, Any] | None = None

    @classmethod
    def known(cls, fields: dict[str, Any]) -> RunOptions:
        """Options from a dict that may hold fields this revision does not know (a newer run's): dropped."""
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


def setup(case: Case, opts: RunOptions, full: bool = True) -> tuple[dict[str, Any], Any]:
    """(info, workload): build the case, warm it up, and measure what needs measuring once: memory,
    FLOPs and the timing harness's own overhead. Later passes (``full`` False) only build and warm up."""
    import torch

    from sciml_bench.measure.flops import flop_metrics
    from sciml_bench.measure.memory import peak_rss_bytes, rss_bytes, step_memory
    from sciml_bench.measure.overhead import OpCounter
    from sciml_bench.measure.probes import probe
    from sciml_bench.measure.timing import warmup
    from sciml_bench.models import param_count
    from sciml_bench.workloads import build_workload

    metrics: dict[str, dict[str, Any]] = {}
    absent: dict[str, str] = {}
    rss_before = rss_bytes()
    wl = build_workload(case)
    warm = warmup(wl.step, opts.warmup_steps, opts.warmup_time, case.device)
    # parent_pid: the fork server that forked this worker (one per pass; the run itself where workers are spawned)
    done = {"threads": torch.get_num_threads(), "warmup_steps": warm["warmup_steps"], "pid": os.getpid(),
            "parent_pid": os.getppid()}
    if not full:
        return dict(done, metrics={}, absent={}), wl
    metrics["first_step_time"] = {"value": warm["first_step_s"], "unit": "s"}
    if wl.model is None:
        absent["flops"] = "mode='data' runs no model"
    else:
        ops = OpCounter()
        if wl.case.compile == "none":
            with ops:  # one step counts both; flops absent (not 0) when the counter has no formula for its ops
                fm, fa = flop_metrics(wl.step)
        else:
            fm, fa = _eager_flops(case)
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
                overhead=None if isinstance(overhead, str) else overhead), wl


def _eager_flops(case: Case) -> tuple[dict[str, Any], dict[str, str]]:
    """FLOPs of a compiled case, counted on its eager twin: compiled code can run kernels FlopCounterMode does
    not see (Inductor's own; on a GPU, CUDA-graph replays); the arithmetic, and so its count, is the same. The
    twin steps one process on a generated batch (no DataLoader, no DDP collectives: the same FLOPs per step),
    and is freed before the case's memory is measured."""
    import dataclasses

    from sciml_bench.cases import LOADER_FIELDS
    from sciml_bench.measure.flops import flop_metrics
    from sciml_bench.workloads import build_workload, release

    plain = ("compile", "dynamic", "shape_sweep", "dataset", "ddp_ranks", "ddp_scaling", *LOADER_FIELDS)
    twin = None
    try:
        twin = build_workload(case.replace(**{f.name: f.default for f in dataclasses.fields(Case) if f.name in plain}))
        metrics, absent = flop_metrics(twin.step)
    except Exception as e:  # noqa: BLE001  (only out of memory is an answer: the twin must not fail the case)
        if classify(e)[0] != "oom":
            raise
        return {}, {"flops": f"counted on an eager twin of the compiled model, which did not fit beside it: "
                             f"{classify(e)[1]}"}
    finally:
        twin = None
        release()
    if "flops" in metrics:
        metrics["flops"]["counted_on"] = "the eager model (compiled code can run kernels the FLOP counter misses)"
    return metrics, absent


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


def energy_meter(case: Case, opts: RunOptions, device: Any, info: dict[str, Any]) -> EnergyMeter | None:
    """The energy meter of the case's device (``measure.energy``), or None with the reason in
    ``info['absent']``; ``info['energy']`` names the device and its power limit."""
    from sciml_bench.measure.energy import open_meter

    if device.type == "cuda" and case.ddp_ranks:
        meter = "DDP case: its ranks time their own GPUs; energy is measured for single-device cases only"
    elif device.type == "cuda" and opts.duet:
        meter = "--duet times both arms at once on one GPU, and its energy counter is per device"
    else:
        try:
            meter = open_meter(device)
        except Exception as e:  # noqa: BLE001  (an NVML binding that misbehaves must not lose the case)
            meter = f"energy counter failed to open: {type(e).__name__}: {e}"
    if isinstance(meter, str):
        info["absent"]["energy_per_step"] = meter
        return None
    info["energy"] = meter.describe()
    return meter


def _setup_ranks(case: Case, opts: RunOptions) -> tuple[dict[str, Any], Any]:
    """A DDP case: torchrun ranks build and set it up (``sciml_bench.ranks``); this worker drives them."""
    from sciml_bench.distributed import RankGroup

    group = RankGroup(case, opts)
    return group.info, group


def main(conn, log_path: str, threads: int | None) -> None:
    """The worker loop over the pipe end ``conn``: answer commands (module docstring) until 'stop'."""
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
    workload = None  # the case set up last: a Workload, or a DDP case's RankGroup
    meter = None  # its device's energy counter (measure.energy), where NVML has one
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        try:
            if msg[0] == "setup":
                case, opts = Case(**msg[1]), RunOptions.known(msg[2])
                info, workload = _setup_ranks(case, opts) if case.ddp_ranks else setup(case, opts, *msg[3:])
                meter = energy_meter(case, opts, torch.device(case.device) if case.ddp_ranks else workload.device,
                                     info)
                reply = ("ok", info)
            elif msg[0] == "fit":
                from sciml_bench.training import fit

                workload = None  # the timed workload is done; each seed builds its own
                reply = ("ok", fit(Case(**msg[1]), meter=meter))
            elif msg[0] == "round":
                reply = ("ok", workload.time_round(msg[1]) if workload.case.ddp_ranks else
                         time_block(workload.step, msg[1], torch.get_num_threads(), workload.case.case_id,
                                    meter=meter, device=workload.case.device))
            elif msg[0] == "instructions":  # after the last round: (options, case_dict)
                from sciml_bench.measure.instructions import measure

                # the step (for the cost estimate): a DDP case's RankGroup or a fit case's (None) has none
                reply = ("ok", measure(Case(**msg[2]), getattr(workload, "step", None), msg[1]))
            elif msg[0] == "profile":  # after the last round: (trace_dir or None, ProfileOptions fields)
                from sciml_bench.profiling import profile_pass

                reply = ("ok", profile_pass(workload, *msg[1:]))
            else:
                return
            if torch.cuda.is_initialized():
                # Idle between its turns, a case must not hold cached blocks its siblings need;
                # the next round's block-size estimation re-warms the cache before timing.
                torch.cuda.empty_cache()
        except BaseException as e:  # noqa: BLE001  (report every failure as a record, then stay alive)
            traceback.print_exc()
            reply = classify(e)
            workload = None
        conn.send(reply)
