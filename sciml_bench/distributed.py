"""DDP cases: a case's worker drives ``torchrun`` ranks that train the case under DistributedDataParallel.

A case with ``ddp_ranks = N`` runs in the runner's worker like any other: that worker launches
``torchrun --standalone --nproc_per_node=N`` as its child (its own session) and talks to rank 0
over a local authenticated connection; rank 0 relays each command to the other ranks by
broadcast. Every rank (``sciml_bench.ranks``) builds the case through the Workload (which wraps the
model in DDP), is set up as every worker sets a case up (``worker.setup``: warmup, FLOPs, memory,
probes) and is timed in the same
interleaved rounds as every case: at each round all ranks pass a barrier, then time the same
fixed number of steps (a collective needs every rank to call it). The case's step time is the
slowest rank's, measurement by measurement; each rank's own times are kept in the record.

A rank that raises, dies or runs out of memory ends the case with that status and the rank's
reason; a rank killed by a signal is named from torchrun's own account (``ranks._launch_main``), and a
SIGKILL is ``oom`` where the kernel shows the OOM killer's hand (``oomkill``), else ``crashed``.
A rank that hangs leaves its peers waiting in a collective, which has no end of its own: the
worker keeps the case's budget (``--timeout``) itself and, just before it runs out, asks every rank
for its Python stack (``STACK_SIGNAL``), names the rank that is not waiting in a collective, and
ends the case ``timeout``. torchrun dies with the worker and the ranks with torchrun (parent-death
signals), so when the runner kills a hung or failed case no rank outlives it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from multiprocessing import util
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

from sciml_bench import oomkill
from sciml_bench.cases import Case

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
ENV_CONTROL, ENV_KEY = "SCIML_BENCH_DDP_CONTROL", "SCIML_BENCH_DDP_KEY"  # rank 0 -> worker connection
ENV_CASE, ENV_FAILURES = "SCIML_BENCH_DDP_CASE", "SCIML_BENCH_DDP_FAILURES"
MEASUREMENTS = 4  # timed measurements per rank per round
PROFILE_STEPS = 5  # steps profiled once (never in a timed round) for the communication share
STOP_WAIT = 8.0  # seconds for torchrun to exit after "stop" before its session is killed
HANG_MARGIN = 3.0  # seconds before the case's budget ends that the worker stops waiting for hung ranks
STACK_SIGNAL = signal.SIGUSR1  # makes a rank write its Python stacks (faulthandler) to rank<N>.stack
STACK_SUFFIX = ".stack"
LAUNCHER_REPORT = "launcher.json"  # torchrun's account of the ranks that failed: exit code or signal
# Where a rank's main thread waits for its peers: a torch.distributed call, or (DDP) the backward
# pass, whose gradient all-reduce needs every rank
_WAITING = (f"torch{os.sep}distributed{os.sep}", f"torch{os.sep}autograd{os.sep}")


def local_batch(case: Case) -> int:
    """Samples per rank per step: the case's batch (weak scaling) or its share of it (strong)."""
    return case.batch_size // case.ddp_ranks if case.ddp_scaling == "strong" else case.batch_size


def global_batch(case: Case) -> int:
    """Samples per step over all ranks."""
    return case.batch_size if case.ddp_scaling == "strong" else case.batch_size * case.ddp_ranks


class RankFailure(RuntimeError):
    """A rank (or torchrun) failed; ``status`` is the record status the runner should give the case."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status


def slowest(per_rank: list[list[float]]) -> list[float]:
    """One round's per-call step times: the slowest rank's, measurement by measurement
    (``per_rank[r]`` holds the times rank ``r`` measured itself)."""
    return [max(ts) for ts in zip(*per_rank)]


# ---------------------------------------------------------------- the case's worker

class RankGroup:
    """The worker's handle on a case's torchrun ranks (``sciml_bench.ranks``). Construction launches
    them and waits for their setup; ``info`` is rank 0's setup result, as ``worker.setup`` returns it."""

    def __init__(self, case: Case, opts: Any):
        import torch

        from sciml_bench.errors import Unsupported
        from sciml_bench.workloads import check_device

        check_device(case)
        if case.device == "cuda" and case.ddp_ranks > torch.cuda.device_count():
            raise Unsupported(f"ddp_ranks={case.ddp_ranks} needs {case.ddp_ranks} GPUs; this machine has "
                              f"{torch.cuda.device_count()}")
        self.case, self.conn, self.timeout = case, None, opts.timeout
        self.left = opts.timeout  # the case's budget, as the runner charges it: the time its commands take
        self._deadline = self._start()
        key = secrets.token_bytes(16)
        self._listener = Listener(("127.0.0.1", 0), authkey=key)
        self._failures = tempfile.mkdtemp(prefix="sciml-bench-ddp-")
        host, port = self._listener.address
        env = dict(os.environ, **{ENV_CONTROL: f"{host}:{port}", ENV_KEY: key.hex(), ENV_FAILURES: self._failures,
                                  ENV_CASE: json.dumps({"case": case.to_dict(), "options": asdict(opts)})})
        if case.device == "cpu":
            env["OMP_NUM_THREADS"] = "1"  # one thread per rank: N ranks share the cores
        self.oom_mark = oomkill.mark()  # the cgroup's OOM-kill count before a rank could be killed
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sciml_bench.ranks", "launch", str(os.getpid()), "--standalone",
             f"--nproc_per_node={case.ddp_ranks}", "--max-restarts=0", "-m", "sciml_bench.ranks", "rank"],
            env=env, start_new_session=True)  # its own session: killable as a group
        util.Finalize(self, RankGroup.close, args=(self,), exitpriority=10)  # the worker's exit stops the ranks
        try:
            self.conn = self._accept()
            self.info = self._receive()
        finally:
            self._charge()

    def _start(self) -> float:
        """The deadline of the command starting now: the case's remaining budget, less the margin the
        hang's diagnosis and the reply need before the runner's own timeout would kill this worker."""
        self._began = time.monotonic()
        return self._began + max(self.left - HANG_MARGIN, self.left / 2)

    def _charge(self) -> None:
        self.left -= time.monotonic() - self._began

    def _alive_or_fail(self) -> None:
        if self.proc.poll() is not None:
            raise self._failure()
        if time.monotonic() > self._deadline:
            raise self._hang()

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
        self._deadline = self._start()
        try:
            try:
                self.conn.send(("round", seconds))
            except OSError:
                raise self._failure() from None
            per_rank = self._receive()
        finally:
            self._charge()
        return {"times": slowest(per_rank), "per_rank": per_rank}

    def _hang(self) -> RankFailure:
        """The case's budget is all but spent and the ranks have not answered: read every rank's
        stack, stop them all, and name the rank(s) not waiting in a collective (``hung_ranks``)."""
        import psutil

        stacks = Path(self._failures)
        try:
            ranks = psutil.Process(self.proc.pid).children()  # torchrun's children: the ranks
        except psutil.Error:
            ranks = []
        for p in ranks:
            try:
                p.send_signal(STACK_SIGNAL)
            except psutil.Error:
                pass
        deadline = time.monotonic() + 1.0  # each rank's C-level handler writes at once
        while time.monotonic() < deadline and sum(
                f.stat().st_size > 0 for f in stacks.glob(f"rank*{STACK_SUFFIX}")) < len(ranks):
            time.sleep(0.05)
        time.sleep(0.1)  # the last rank's dump may still be going out
        dumps = {}
        for f in stacks.glob(f"rank*{STACK_SUFFIX}"):
            try:
                dumps[int(f.name[4:-len(STACK_SUFFIX)])] = f.read_text(errors="replace")
            except (OSError, ValueError):
                pass
        try:  # torchrun's session; its ranks (own sessions) die with it (pdeathsig)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            pass
        self.close()
        shutil.rmtree(self._failures, ignore_errors=True)
        return RankFailure("timeout", hung_ranks(dumps, self.case.ddp_ranks, self.timeout))

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
        try:  # torchrun's account: which ranks failed, by exit code or signal
            launcher = json.loads((Path(self._failures) / LAUNCHER_REPORT).read_text())
        except (OSError, ValueError):
            launcher = []
        shutil.rmtree(self._failures, ignore_errors=True)
        reported = {r["rank"] for r in reports}
        # a rank killed by a signal reports nothing itself; its peers then fail on the lost connection
        killed = [f for f in launcher if f["signal"] and f["rank"] not in reported and f["signal"] != "SIGTERM"]
        if killed:
            f = killed[0]
            who = f"rank {f['rank']} of {self.case.ddp_ranks} (pid {f['pid']})"
            if f["signal"] != "SIGKILL":
                return RankFailure("crashed", f"{who} died from {f['signal']} and reported no exception; its peers "
                                              f"then stopped")
            evidence = oomkill.evidence(f["pid"], self.oom_mark)
            if evidence:
                return RankFailure("oom", f"{who} killed by SIGKILL: out of memory ({evidence}); its peers then "
                                          f"stopped")
            return RankFailure("crashed", f"{who} died from SIGKILL and reported no exception, {oomkill.no_sign()}; "
                                          f"its peers then stopped")
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


def hung_ranks(dumps: dict[int, str], ranks: int, timeout: float) -> str:
    """The reason for a DDP case whose ranks stopped answering, from each rank's stack dump
    (faulthandler's text, all threads, by rank): the ranks whose main thread is not waiting for its
    peers hung, the others waited for them in a collective. Every rank waiting: a collective that
    never completed (e.g. the ranks called different ones)."""
    where: dict[int, tuple[str, bool]] = {}
    for rank, text in dumps.items():
        for block in text.split("\n\n"):  # one block per thread, innermost frame first
            frames = [m.groups() for m in _FRAME.finditer(block)]
            if any(fn == "_rank_main" for _, _, fn in frames):  # the rank's main thread
                path, line, fn = frames[0]
                where[rank] = (f"{fn} ({Path(path).name}:{line})", any(w in path for w in _WAITING))
    hung = [r for r in sorted(where) if not where[r][1]]
    waiting = [r for r in sorted(where) if where[r][1]]
    silent = [r for r in range(ranks) if r not in where]
    parts = []
    if hung:
        parts.append("; ".join(f"rank {r} of {ranks} hung in {where[r][0]}" for r in hung))
        if waiting:
            parts.append(f"rank{'s' if len(waiting) > 1 else ''} {', '.join(map(str, waiting))} waited for it in a "
                         f"collective: {'; '.join(f'rank {r} in {where[r][0]}' for r in waiting)}")
    elif waiting:
        parts.append(f"all answering ranks ({', '.join(map(str, waiting))} of {ranks}) waited in a collective that "
                     f"never completed ({'; '.join(f'rank {r}: {where[r][0]}' for r in waiting)})")
    if silent:
        parts.append(f"no stack from rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} "
                     f"(not started, or gone)")
    return f"no answer from the ranks within the case's --timeout of {timeout:.0f} s: {'; '.join(parts)}"


_FRAME = re.compile(r'File "(.+)", line (\d+) in (\S+)')  # a faulthandler stack frame


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
