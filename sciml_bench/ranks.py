"""Ranks: what runs under ``torchrun`` for a DDP case (``python -m sciml_bench.ranks``).

The case's worker (``distributed.RankGroup``) starts ``python -m sciml_bench.ranks launch``, which is
torchrun bound to that worker's life; torchrun starts N ranks (``rank``). Each rank sets the case up
as any worker does (``worker.setup``, on its share of the batch), measures the communication share
once under the profiler, and then, on rank 0's broadcast commands, times the same fixed number of
steps per round as every other rank. A rank that fails reports its status and reason to a file
the worker reads (``RankGroup``), then exits at once.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import statistics
import sys
import time
import traceback
from dataclasses import replace
from datetime import timedelta
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

from sciml_bench.cases import Case
from sciml_bench.distributed import (BACKENDS, ENV_CASE, ENV_CONTROL, ENV_FAILURES, ENV_KEY, LAUNCHER_REPORT,
                                     MEASUREMENTS, PROFILE_STEPS, STACK_SIGNAL, STACK_SUFFIX, global_batch,
                                     local_batch, slowest)
from sciml_bench.errors import classify


def _die_with_parent(sig: int, parent: int | None = None) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != parent:  # the parent died before prctl
            os._exit(1)



def allreduce_events(averages: Any, cuda: bool) -> list[tuple[str, float]]:
    """(name, microseconds) of the all-reduce work in a profile's ``key_averages``. On CUDA, the NCCL kernels
    on the GPU only: the CPU-side ``nccl:all_reduce`` op is a launch, and its device time is those same
    kernels', so counting it too would count the exchange twice. On CPU, gloo's ``gloo:all_reduce``, which
    runs on its own thread and spans the whole exchange."""
    from torch.autograd import DeviceType

    if cuda:
        return [(e.key, e.self_device_time_total) for e in averages if e.device_type == DeviceType.CUDA
                and "nccl" in e.key.lower() and "allreduce" in e.key.lower().replace("_", "")]
    return [(e.key, e.cpu_time_total) for e in averages if e.key == "gloo:all_reduce"]


def _comm_share(wl: Any, steps: int = PROFILE_STEPS) -> tuple[dict[str, Any] | None, str | None]:
    """Fraction of the step with an all-reduce in flight, from the profiler's all-reduce events."""
    from torch.profiler import ProfilerActivity, profile

    from sciml_bench.measure.timing import device_sync

    cuda = wl.device.type == "cuda"
    sync = device_sync(wl.device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            wl.step()
        sync()
        wall = time.perf_counter() - t0
    events = allreduce_events(prof.key_averages(), cuda)
    if not events:
        return None, f"the profiler recorded no all-reduce events for {BACKENDS[wl.device.type]} over {steps} steps"
    comm = sum(t for _, t in events) / 1e6
    return {"share": comm / wall, "comm_s": comm / steps, "step_s": wall / steps, "events": sorted({k for k, _ in events})}, None


def _report_failure(rank: int, exc: BaseException) -> None:
    status, reason = getattr(exc, "status", None), str(exc)
    if status is None:
        status, reason = classify(exc)
    path = Path(os.environ[ENV_FAILURES]) / f"rank{rank}.json"
    path.write_text(json.dumps({"rank": rank, "status": status, "reason": reason, "time": time.time()}))


def _rank_main() -> None:
    """One torchrun rank: set up the case, then answer rank 0's broadcast commands until 'stop'."""
    import faulthandler

    _die_with_parent(signal.SIGKILL)
    rank = int(os.environ["RANK"])
    # The worker asks for every rank's Python stack when the case hangs, to name the rank that hung
    # (``distributed.RankGroup``); a C-level handler, so a rank blocked in a collective answers too.
    stacks = open(Path(os.environ[ENV_FAILURES]) / f"rank{rank}{STACK_SUFFIX}", "w")  # noqa: SIM115  (the rank's life)
    faulthandler.register(STACK_SIGNAL, file=stacks, all_threads=True)
    try:
        _serve(rank)
    except BaseException as e:  # noqa: BLE001  (every failure is reported to the worker, then the rank exits)
        traceback.print_exc()
        try:
            _report_failure(rank, e)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)  # never block in a collective's teardown


def _serve(rank: int) -> None:
    import torch
    import torch.distributed as dist

    from sciml_bench.measure.timing import time_fixed
    from sciml_bench.worker import RunOptions, setup

    payload = json.loads(os.environ[ENV_CASE])
    case = Case(**payload["case"])
    # A fixed warmup count: with a time-based warmup, ranks would step a different number of times.
    opts = replace(RunOptions(**payload["options"]), warmup_time=0.0)
    if case.device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        torch.set_num_threads(1)
    # The per-collective timeout outlasts the case's budget: between rounds ranks wait in a broadcast
    # while the runner times the other cases; a hang is ended by the runner's per-case timeout.
    dist.init_process_group(BACKENDS[case.device], timeout=timedelta(seconds=opts.timeout + 60))
    # Each rank its own data: its own synthetic batch, or (with a dataset) its DistributedSampler share,
    # which needs the same seed on every rank.
    local = case.replace(batch_size=local_batch(case), ddp_scaling="weak",
                         seed=case.seed + (rank if case.dataset is None else 0))
    info, wl = setup(local, opts)
    comm, why = _comm_share(wl)
    threads = torch.get_num_threads()
    est = statistics.median(time_fixed(wl.step, 1, 3, threads))
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"first": info["metrics"]["first_step_time"]["value"], "comm": comm,
                                      "step": est, "pid": os.getpid(), "host": os.uname().nodename})
    conn = None
    if rank == 0:
        info["metrics"]["global_batch"] = {"value": global_batch(case), "unit": "samples",
                                           "local_batch": local_batch(case), "backend": BACKENDS[case.device],
                                           "ranks": case.ddp_ranks, "pids": [g["pid"] for g in gathered],
                                           "hosts": [g["host"] for g in gathered],
                                           "note": "memory, FLOPs and params are rank 0's (per rank); step times "
                                                   "are every rank's"}
        info["metrics"]["first_step_time"]["per_rank"] = [g["first"] for g in gathered]
        if why is None and all(g["comm"] for g in gathered):
            shares = [g["comm"]["share"] for g in gathered]
            info["metrics"]["comm_share"] = {
                "value": statistics.mean(shares), "unit": "fraction", "per_rank": shares, "steps": PROFILE_STEPS,
                "comm_s_per_step": [g["comm"]["comm_s"] for g in gathered], "events": comm["events"],
                "note": "all-reduce time / step time under torch.profiler (after warmup, outside the timed "
                        "rounds); includes waiting for the slowest rank and overlaps the backward pass"}
        else:
            info["absent"]["comm_share"] = why or "a rank recorded no all-reduce events"
        host, port = os.environ[ENV_CONTROL].rsplit(":", 1)
        conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ[ENV_KEY]))
        conn.send(("ready", info))
    step_s = max(g["step"] for g in gathered)
    while True:
        cmd = [conn.recv() if rank == 0 else None]
        if rank == 0 and cmd[0][0] == "round":  # the same number of steps on every rank
            cmd[0] = ("round", max(1, round(cmd[0][1] / MEASUREMENTS / step_s)))
        dist.broadcast_object_list(cmd, src=0)
        kind, number = cmd[0]
        if kind != "round":
            break
        dist.barrier()
        times = time_fixed(wl.step, number, MEASUREMENTS, threads, label=case.case_id)
        all_times: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(all_times, times)
        step_s = statistics.median(slowest(all_times))
        if rank == 0:
            conn.send(("ok", all_times))
    dist.destroy_process_group()
    if conn is not None:
        conn.close()


def _launch_main(argv: list[str]) -> None:
    """torchrun, bound to the worker that started it: it gets SIGTERM (and stops its ranks) if the
    worker dies, e.g. killed by the runner for a timeout. When ranks fail, which ones and how (exit
    code or signal) go to ``launcher.json`` beside the ranks' own reports: a rank killed by a signal
    (the OOM killer's SIGKILL) writes none itself."""
    _die_with_parent(signal.SIGTERM, parent=int(argv[0]))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    try:
        main(argv[1:])
    except ChildFailedError as e:
        failures = [{"rank": rank, "exitcode": f.exitcode, "signal": f.signal_name() if f.exitcode < 0 else None,
                     "pid": f.pid} for rank, f in sorted(e.failures.items())]
        (Path(os.environ[ENV_FAILURES]) / LAUNCHER_REPORT).write_text(json.dumps(failures))
        raise


if __name__ == "__main__":
    if sys.argv[1:2] == ["launch"]:
        _launch_main(sys.argv[2:])
    elif sys.argv[1:2] == ["rank"]:
        _rank_main()
    else:
        sys.exit("usage: python -m sciml_bench.ranks launch WORKER_PID TORCHRUN_ARGS... | rank")
