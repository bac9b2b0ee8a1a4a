"""Rounds: one pass of a study chunk, its cases timed in interleaved rounds.

The parent builds every case of the chunk in its own worker (forked by the pass's fork server,
``supervise.pass_context``; one at a time, so first-step and memory figures are undisturbed), then
times them in short blocks, one per case per round, in a fresh random order every round (RMIT,
``round_orders``); the anchor takes a turn of its own. In an A/B run a case's two arms take one
turn, back to back (``round_plan``). After the last pass's rounds, each case's worker gets the
extra commands of ``AFTER_ROUNDS`` (the profile pass and fixed-budget training), whose load then
cannot skew a timed round.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sciml_bench.cases import Case, Study
from sciml_bench.cpus import usable_cores
from sciml_bench.results import safe_filename
from sciml_bench.supervise import START_TIMEOUT, ProcessContext, Worker, pass_context, pin_duet
from sciml_bench.worker import RunOptions

ProgressFn = Callable[[str, int], None]  # (description, units done now)


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
    ran 8 or more turns apart (``evidence/detection_quality.py score-ab``)."""
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
             arms: list[Any] | None = None, context: ProcessContext | None = None) -> list[dict[str, Any]]:
    """Time one pass of a chunk in fresh workers; return one pass result per case, in ``cases`` order.

    Workers are forked by ``context``, the pass index's fork server that the caller started and
    closes (``supervise.pass_context``: one per pass index, not per chunk, as a server imports
    torch); None: a server of this call's own. ``arms`` (A/B, ``sciml_bench.ab``): every case once
    per arm, each worker started from its arm's process context, made here for this call
    (``arm.context(log_path)``, a ``supervise.ProcessContext``); a case's two arms take one turn of
    the round (``round_plan``); results are per case x arm, arm-major.

    Pass 0 measures everything (setup: memory, FLOPs, overhead); later passes only build, warm
    up and time. After the last pass's rounds come the ``AFTER_ROUNDS`` commands (the phases/profile
    pass, fixed-budget training). Progress units: one per case setup and case round, one per
    ``AFTER_ROUNDS`` command.
    """
    from sciml_bench.measure import anchor
    from sciml_bench.measure.timing import machine_load

    log_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"--pass{index + 1}" if index else ""
    contexts: list[ProcessContext] = []  # the fork servers this call starts (closed in the finally below)
    workers: list[Worker] = []
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
    after: dict[int, tuple[str, str]] = {}  # a fatal AFTER_ROUNDS command's failure, by slot
    cores: dict[int, list[int]] = {}  # --duet: the cores each worker was pinned to
    blocks: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(cases))}
    try:
        # each arm hands in its own process context; its fork server starts now, so both arms'
        # servers import torch side by side while the workers are set up
        if arms:  # appended one by one: a second arm's failure to start must not leave the first open
            for a in arms:
                contexts.append(a.context(log_dir / safe_filename(f"{study.name}--server-{a.name}{suffix}", ".log")))
        elif context is None:
            contexts = [pass_context(log_dir / safe_filename(f"{study.name}--server{suffix}", ".log"))]
        by_arm = {a.name: c for a, c in zip(arms, contexts)} if arms else {None: context or contexts[0]}
        for c, name in slots:
            log = log_dir / safe_filename(f"{study.name}--{c.case_id}{f'--{name}' if name else ''}{suffix}", ".log")
            workers.append(Worker(by_arm[name], c, log, opts))
        for i, w in enumerate(workers):
            progress(f"{study.name}: starting {w.case.case_id}", 0)
            status, payload = w.call(None, START_TIMEOUT, charge=False)
            if status != "ready":
                w.failure = (status, payload)
        if opts.duet:  # before setup, so every thread the worker starts inherits its cores
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
        if index == opts.passes - 1:  # after the last timed round
            after = _after_rounds(study, workers, info, opts, progress)
    finally:
        for w in workers:
            w.stop()
        for c in contexts:  # the fork servers this call started
            c.close()
    load["end"] = machine_load()
    finished = time.time()
    return [{"study": study.name, "case_id": w.case.case_id, "arm": slots[i][1], "pass": index, "failure": w.failure,
             "info": info.get(i), "blocks": blocks[i], "order_seed": seed, "anchor": anchors[:len(blocks[i])],
             "position": plan_positions(plan[:len(blocks[i])], i),
             "load": load, "started": started, "finished": finished, **({"cores": cores.get(i)} if opts.duet else {}),
             **({"after_failure": after[i]} if i in after else {})} for i, w in enumerate(workers)]


@dataclass(frozen=True)
class AfterRounds:
    """A worker command a case gets once, after its last pass's timed rounds (never among them).

    ``wanted``: which cases get it; ``command``: the message (``worker`` protocol); ``keep``: folds
    the reply into the case's setup info; ``fatal``: a failure fails the case (else it costs only
    what this command measures, named in ``absent``); ``label``: the progress line; ``limit``: its
    own time limit, where it is not part of the case's budget (the instruction count)."""

    name: str
    wanted: Callable[[Case, RunOptions], bool]
    command: Callable[[Study, Case, RunOptions], tuple]
    keep: Callable[[dict[str, Any], Any], None]
    fatal: bool
    label: Callable[[Case], str]
    # seconds the command may take, instead of what is left of the case's budget (which it then leaves alone)
    limit: Callable[[RunOptions], float] | None = None
    # what it measures is not moved by other processes (instruction counts): up to one per core at once
    concurrent: bool = False


def _trace_dir(study: Study, case: Case, opts: RunOptions) -> str | None:
    return str(Path(opts.profile["out"]) / safe_filename(study.name) / safe_filename(case.case_id)) \
        if opts.profile else None


def _keep_fit(info: dict[str, Any], payload: dict[str, Any]) -> None:
    info["fit"] = payload


def _keep_profile(info: dict[str, Any], payload: dict[str, Any]) -> None:
    info["metrics"].update(payload["metrics"])
    info["absent"].update(payload["absent"])
    if payload.get("profile") is not None:
        info["profile"] = payload["profile"]


def _count_limit(opts: RunOptions) -> float:
    """The instruction count's own limit: the worker skips a case it expects to take longer than
    ``max_seconds``; this leaves room for an estimate that was short, then kills it (and valgrind)."""
    from sciml_bench.measure.instructions import MAX_SECONDS

    return 2 * float((opts.instructions or {}).get("max_seconds") or MAX_SECONDS) + 60


AFTER_ROUNDS = (
    # Phases (and a trace) of every timed case: profiling never touches the recorded timings.
    AfterRounds("profile", wanted=lambda c, o: bool(o.phases or o.profile),
                command=lambda s, c, o: ("profile", _trace_dir(s, c, o), o.profile),
                keep=_keep_profile, fatal=False, label=lambda c: f"profile {c.case_id}"),
    # Fixed-budget training of a mode='fit' case (sciml_bench.training): one record, speed beside convergence.
    AfterRounds("fit", wanted=lambda c, o: c.mode == "fit", command=lambda s, c, o: ("fit", c.to_dict()),
                keep=_keep_fit, fatal=True,
                label=lambda c: f"fit {c.case_id} ({c.steps} steps x {c.seeds} seeds)"),
    # Instructions per step under Callgrind (measure.instructions): in a child process of its own, after
    # every timed round, so its minutes of valgrind never share a round with a timed block.
    # (named after its metric: a count that fails, hangs or dies is absent under that name)
    AfterRounds("instructions_per_step", wanted=lambda c, o: bool(o.instructions),
                command=lambda s, c, o: ("instructions", o.instructions, c.to_dict()), keep=_keep_profile,
                fatal=False,
                label=lambda c: f"count instructions {c.case_id}", limit=_count_limit, concurrent=True),
)


def _after_rounds(study: Study, workers: list[Worker], info: dict[int, dict[str, Any]], opts: RunOptions,
                  progress: ProgressFn) -> dict[int, tuple[str, str]]:
    """Every case's ``AFTER_ROUNDS`` commands, one command kind at a time over the chunk.

    Returns {slot: (status, reason)} of the cases whose fatal command failed: the case gets that
    status with its timed rounds kept (``records.combine``), as they were measured before the fault.
    A worker lost in a non-fatal command (crashed, hung, killed) gets no later command."""
    failed: dict[int, tuple[str, str]] = {}
    lost: dict[int, tuple[str, str]] = {}  # slot: (status, why) of a worker gone in a non-fatal command
    for extra in AFTER_ROUNDS:
        todo = [i for i, w in enumerate(workers) if extra.wanted(w.case, opts)]
        width = usable_cores() if extra.concurrent else 1
        for wave in (todo[k:k + width] for k in range(0, len(todo), width)):
            # a wave's commands are posted together, then awaited in turn, each within its own limit
            posted: dict[int, tuple[float, float]] = {}  # slot: (posted at, limit)
            runs = [i for i in wave if workers[i].failure is None and i in info and i not in failed]
            for i in wave:
                progress(f"{study.name}: {extra.label(workers[i].case)}", 0)
                if i in runs and i not in lost:
                    posted[i] = (time.perf_counter(), extra.limit(opts) if extra.limit else workers[i].budget)
                    workers[i].post(extra.command(study, workers[i].case, opts))
            for i in wave:
                w = workers[i]
                if i in posted:
                    t0, limit = posted[i]
                    if extra.limit is None:  # the time it ran before this wait comes off the case's budget too
                        w.budget -= time.perf_counter() - t0
                    status, payload = w.call(None, max(limit - (time.perf_counter() - t0), 0.0),
                                             charge=extra.limit is None, limit=f"(the rest of its own {limit:.0f} s limit)")
                else:
                    status, payload = lost.get(i, (None, None)) if i in runs else (None, None)
                if status == "ok":
                    extra.keep(info[i], payload)
                elif status is not None and extra.fatal:
                    failed[i] = (status, f"{extra.name}: {payload}")
                    w.kill()
                elif status is not None:
                    info[i]["absent"][extra.name] = f"{extra.name} pass {status}: {payload}"
                    if i not in lost and not w.proc.is_alive():
                        lost[i] = (status, f"not run: the worker was lost in the {extra.name} pass ({status})")
                progress(f"{study.name}: {extra.label(w.case)}", 1)
    return failed
