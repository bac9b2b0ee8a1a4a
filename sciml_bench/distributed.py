"""DDP cases: a case's worker drives ``torchrun`` ranks that train the case under DistributedDataParallel.

A case with ``ddp_ranks = N`` runs in the runner's worker like any other: that worker launches
``torchrun --standalone --nproc_per_node=N`` as its child (its own session) and talks to rank 0
over a local authenticated connection; rank 0 relays each command to the other ranks by
broadcast. Every rank builds the case through the Workload (which wraps the model in DDP), is
set up by the runner's own setup (warmup, FLOPs, memory, probes) and is timed in the same
interleaved rounds as every case: at each round all ranks pass a barrier, then time the same
fixed number of steps (a collective needs every rank to call it). The case's step time is the
slowest rank's, measurement by measurement; each rank's own times are kept in the record.

A rank that raises, dies or runs out of memory ends the case with that status and the rank's
reason. torchrun dies with the worker and the ranks with torchrun (parent-death signals), so
when the runner kills a hung or failed case no rank outlives it.
"""
from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, replace
from datetime import timedelta
from multiprocessing import util
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

from sciml_bench.cases import Case

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
ENV_CONTROL, ENV_KEY = "SCIML_BENCH_DDP_CONTROL", "SCIML_BENCH_DDP_KEY"  # rank 0 -> worker connection
ENV_CASE, ENV_FAILURES = "SCIML_BENCH_DDP_CASE", "SCIML_BENCH_DDP_FAILURES"
MEASUREMENTS = 4  # timed measurements per rank per round
PROFILE_STEPS = 5  # steps profiled once (never in a timed round) for the communication share
STOP_WAIT = 8.0  # seconds for torchrun to exit after "stop" before its session is killed


def local_batch(case: Case) -> int:
    """Samples per rank per step: the case's batch (weak scaling) or its share of it (strong)."""
    return case.batch_size // case.ddp_ranks if case.ddp_scaling == "strong" else case.batch_size


def global_batch(case: Case) -> int:
    """Samples per step over all ranks."""
    return case.batch_size if case.ddp_scaling == "strong" else case.batch_size * case.ddp_ranks


def require_ranks() -> None:
    """Unsupported outside a torchrun rank (e.g. asv or pytest-benchmark timing one process)."""
    import torch.distributed as dist

    from sciml_bench.errors import Unsupported

    if not dist.is_initialized():
        raise Unsupported("ddp_ranks > 0 runs on torchrun ranks (sciml-bench run); this front end times one process")


def wrap_ddp(model, device):
    """``model`` under DistributedDataParallel (its constructor broadcasts rank 0's parameters)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class RankFailure(RuntimeError):
    """A rank (or torchrun) failed; ``status`` is the record status the runner should give the case."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status


def slowest(per_rank: list[list[float]]) -> list[float]:
    """One round's per-call step times: the slowest rank's, measurement by measurement
    (``per_rank[r]`` holds the times rank ``r`` measured itself)."""
    return [max(ts) for ts in zip(*per_rank)]


def _die_with_parent(sig: int, parent: int | None = None) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != parent:  # the parent died before prctl
            os._exit(1)


# ---------------------------------------------------------------- the case's worker

class RankGroup:
    """The worker's handle on a case's torchrun ranks. Construction launches them and waits for
    their setup; ``info`` is rank 0's setup result, as the runner's ``_setup`` returns it."""

    def __init__(self, case: Case, opts: Any):
        import torch

        from sciml_bench.errors import Unsupported
        from sciml_bench.workloads import check_device

        check_device(case)
        if case.device == "cuda" and case.ddp_ranks > torch.cuda.device_count():
            raise Unsupported(f"ddp_ranks={case.ddp_ranks} needs {case.ddp_ranks} GPUs; this machine has "
                              f"{torch.cuda.device_count()}")
        self.case, self.conn = case, None
        key = secrets.token_bytes(16)
        self._listener = Listener(("127.0.0.1", 0), authkey=key)
        self._failures = tempfile.mkdtemp(prefix="sciml-bench-ddp-")
        host, port = self._listener.address
        env = dict(os.environ, **{ENV_CONTROL: f"{host}:{port}", ENV_KEY: key.hex(), ENV_FAILURES: self._failures,
                                  ENV_CASE: json.dumps({"case": case.to_dict(), "options": asdict(opts)})})
        if case.device == "cpu":
            env["OMP_NUM_THREADS"] = "1"  # one thread per rank: N ranks share the cores
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sciml_bench.distributed", "launch", str(os.getpid()), "--standalone",
             f"--nproc_per_node={case.ddp_ranks}", "--max-restarts=0", "-m", "sciml_bench.distributed", "rank"],
            env=env, start_new_session=True)  # its own session: killable as a group
        util.Finalize(self, RankGroup.close, args=(self,), exitpriority=10)  # the worker's exit stops the ranks
        self.conn = self._accept()
        self.info = self._receive()

    def _alive_or_fail(self) -> None:
        if self.proc.poll() is not None:
            raise self._failure()

    def _accept(self):
        box: list[Any] = []
        t = threading.Thread(target=lambda: box.append(self._listener.accept()), daemon=True)
        t.start()
        while t.is_alive():  # no timeout of its own: the runner's per-case budget kills a stuck start
            self._alive_or_fail()
            t.join(0.2)
        if not box:
            raise self._failure()
        return box[0]

    def _receive(self) -> Any:
        try:
            while not self.conn.poll(0.2):
                self._alive_or_fail()
            status, payload = self.conn.recv()
        except (EOFError, OSError):
            raise self._failure() from None
        return payload

    def time_round(self, seconds: float) -> dict[str, Any]:
        """One round: every rank times the same number of steps, started together. The block's
        ``times`` are the slowest rank's; ``per_rank`` keeps each rank's own."""
        try:
            self.conn.send(("round", seconds))
        except OSError:
            raise self._failure() from None
        per_rank = self._receive()
        return {"times": slowest(per_rank), "per_rank": per_rank}

    def _failure(self) -> RankFailure:
        """Stop everything, then the status and reason of the rank that failed first."""
        try:
            self.proc.wait(30)  # torchrun stops the other ranks once one has failed
        except subprocess.TimeoutExpired:
            pass
        code = self.proc.poll()
        self.close()
        reports = []
        for f in Path(self._failures).glob("rank*.json"):
            try:
                reports.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                pass
        shutil.rmtree(self._failures, ignore_errors=True)
        if reports:
            first = min(reports, key=lambda r: r["time"])  # later ones are peers losing their connection
            return RankFailure(first["status"], f"rank {first['rank']} of {self.case.ddp_ranks}: {first['reason']}")
        how = f"died from {signal.Signals(-code).name}" if code and code < 0 else f"exited with code {code}"
        return RankFailure("crashed", f"torchrun {how} and no rank reported an exception (a rank killed by a "
                                      f"signal, e.g. the kernel OOM killer's SIGKILL?); see the case log")

    def close(self) -> None:
        """Stop the ranks (gracefully if they answer), and kill torchrun's session if need be."""
        if self.proc.poll() is None:
            try:
                if self.conn is not None:
                    self.conn.send(("stop", None))
                self.proc.wait(STOP_WAIT)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # torchrun; its ranks (own sessions) die with it (pdeathsig)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.poll()
        for c in (self.conn, self._listener):
            try:
                c is not None and c.close()
            except OSError:
                pass
        self.conn = None


# ---------------------------------------------------------------- record figures (parent side)

def rank_metrics(case: Case, blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-rank step times, spread across ranks and global throughput of a DDP case's timed blocks
    (one per round, as ``RankGroup.time_round`` returns them)."""
    from sciml_bench.stats import summarize

    rounds = [b["times"] for b in blocks]
    per_rank = list(zip(*[b["per_rank"] for b in blocks]))  # [rank][round] -> per-call times
    rank_medians = [[statistics.median(ts) for ts in rr] for rr in per_rank]
    ranks = []
    for r, med in enumerate(rank_medians):
        s = summarize(med)
        ranks.append({"rank": r, "median": s["median"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                      "n": s["n"], "samples": med})
    spreads = [(max(col) - min(col)) / min(col) for col in zip(*rank_medians)]
    step = summarize([statistics.median(r) for r in rounds])
    gb = global_batch(case)
    return {
        "rank_step_time": {"value": max(x["median"] for x in ranks), "unit": "s", "per_rank": ranks,
                           "note": "median per-call step time each rank measured itself; value: the slowest rank"},
        "rank_spread": {"value": statistics.median(spreads), "unit": "fraction", "samples": spreads,
                        "note": "(slowest - fastest rank) / fastest, per round; median over rounds"},
        "throughput": {"value": gb / step["median"], "unit": "samples/s",
                       "ci_low": gb / step["ci_high"] if step["ci_high"] else None,
                       "ci_high": gb / step["ci_low"] if step["ci_low"] else None, "n": step["n"],
                       "note": f"global batch {gb} ({case.ddp_ranks} ranks x {local_batch(case)}) per step"},
    }


def add_scaling(records: list[dict[str, Any]]) -> None:
    """Scaling efficiency of DDP records against their N = 1 reference, from the paired time ratio.

    Weak scaling (batch per rank): efficiency = t1 / tN. Strong (global batch fixed): t1 / (N tN).
    The CI is the paired ratio's, inverted; no new statistics.
    """
    by_id = {r["case_id"]: r for r in records}
    for rec in records:
        n = rec["case"].get("ddp_ranks", 0)
        if rec["status"] != "ok" or not n:
            continue
        tr = rec["metrics"].get("time_ratio")
        ref = by_id.get(tr["reference"]) if tr else None
        if ref is None or ref["case"].get("ddp_ranks") != 1:
            rec["absent"]["scaling_efficiency"] = ("no N=1 DDP reference timed in the same rounds (a study with "
                                                   "reference ddp_ranks = 1 gives one)")
            continue
        k = n if rec["case"]["ddp_scaling"] == "strong" else 1
        inv = (lambda x: None if not x else 1 / (k * x))
        rec["metrics"]["scaling_efficiency"] = {
            "value": inv(tr["value"]), "unit": "fraction", "ci_low": inv(tr.get("ci_high")),
            "ci_high": inv(tr.get("ci_low")), "n": tr.get("n"), "reference": ref["case_id"],
            "note": f"{rec['case']['ddp_scaling']} scaling: " + ("t1 / tN (batch per rank)" if k == 1 else
                                                                 "t1 / (N tN) (global batch fixed)")}


# ---------------------------------------------------------------- inside a rank

def _comm_share(wl: Any, steps: int = PROFILE_STEPS) -> tuple[dict[str, Any] | None, str | None]:
    """Fraction of the step with an all-reduce in flight, from the profiler's all-reduce events."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = wl.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            wl.step()
        sync()
        wall = time.perf_counter() - t0
    if cuda:  # NCCL kernels on the GPU; their CPU-side events are only launches
        events = [(e.key, getattr(e, "device_time_total", 0)) for e in prof.key_averages()
                  if "nccl" in e.key.lower() and "allreduce" in e.key.lower().replace("_", "")]
    else:  # gloo runs the all-reduce on its own thread; the event spans the whole exchange
        events = [(e.key, e.cpu_time_total) for e in prof.key_averages() if e.key == "gloo:all_reduce"]
    if not events:
        return None, f"the profiler recorded no all-reduce events for {BACKENDS[wl.device.type]} over {steps} steps"
    comm = sum(t for _, t in events) / 1e6
    return {"share": comm / wall, "comm_s": comm / steps, "step_s": wall / steps, "events": sorted({k for k, _ in events})}, None


def _report_failure(rank: int, exc: BaseException) -> None:
    from sciml_bench.runner import _classify

    status, reason = getattr(exc, "status", None), str(exc)
    if status is None:
        status, reason = _classify(exc)
    path = Path(os.environ[ENV_FAILURES]) / f"rank{rank}.json"
    path.write_text(json.dumps({"rank": rank, "status": status, "reason": reason, "time": time.time()}))


def _rank_main() -> None:
    """One torchrun rank: set up the case, then answer rank 0's broadcast commands until 'stop'."""
    _die_with_parent(signal.SIGKILL)
    rank = int(os.environ["RANK"])
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
    from sciml_bench.runner import _WORKER, RunOptions, _setup

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
    info = _setup(local, opts)
    wl = _WORKER["workload"]
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
    worker dies, e.g. killed by the runner for a timeout."""
    _die_with_parent(signal.SIGTERM, parent=int(argv[0]))
    from torch.distributed.run import main

    main(argv[1:])


if __name__ == "__main__":
    if sys.argv[1:2] == ["launch"]:
        _launch_main(sys.argv[2:])
    elif sys.argv[1:2] == ["rank"]:
        _rank_main()
    else:
        sys.exit("usage: python -m sciml_bench.distributed launch WORKER_PID TORCHRUN_ARGS... | rank")
