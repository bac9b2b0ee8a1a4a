"""Runner: the life of a run. Plan the cases, write the header, resume, execute.

A suite's selected cases run in worker subprocesses (``sciml_bench.worker``, supervised by
``sciml_bench.supervise``), a study chunk at a time, timed in interleaved rounds
(``sciml_bench.rounds``); each case's passes become its record (``sciml_bench.records``). With
several passes, every study's pass 1 runs before any study's pass 2, each pass in fresh workers,
so the ratio CIs see the machine's slow changes. A case that raises, crashes, hangs or runs out of
memory becomes a record with that status; the run goes on. Records and passes are appended to the
run file as they finish, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sciml_bench.cases import Case, Study, Suite, iter_cases, load_suite, parse_assignment
from sciml_bench.errors import UsageError
from sciml_bench.measure.instructions import count_options
from sciml_bench.records import combine
from sciml_bench.results import RunWriter, done_keys, is_locked, new_run_id, read_run, safe_filename
from sciml_bench.rounds import AFTER_ROUNDS, ProgressFn, chunks, run_pass
from sciml_bench.supervise import ProcessContext, pass_context
from sciml_bench.worker import RunOptions
from sciml_bench.worker import main as _worker_main  # noqa: F401  (its old name: an older checkout's A/B arm server starts it)


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
        per ``AFTER_ROUNDS`` command a case gets (profile pass, fit)."""
        units = 0
        for s, ch in self.work:
            have = self.passes_of(s, ch)
            units += sum((self.opts.passes - len(have.get(c.case_id, []))) * (1 + self.opts.rounds)
                         + sum(extra.wanted(c, self.opts) for extra in AFTER_ROUNDS) for c in ch)
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
              max_live: int | None = None, hide_hostname: bool = False, phases: bool = False,
              profile: dict[str, Any] | None = None, passes: int | None = None, seed: int | None = None,
              arms: list[Any] | None = None, ab_gate: dict[str, Any] | None = None,
              least: tuple[int, int] = (1, 1), duet: bool = False, count: str | None = None,
              instruction_calls: int | None = None) -> Run:
    """Validate everything, then create ``out/<run_id>.jsonl`` with its header (environment
    fingerprint and machine peak). Timing options default to the suite's (``max_live`` to
    ``RunOptions.max_live``). Bad input raises UsageError before any file exists.

    ``phases`` adds a phase-breakdown pass per case after its timed rounds; ``profile``
    (ProfileOptions fields) also a torch.profiler trace, under ``profile["out"]`` (default
    ``reports/<run_id>/profiles`` beside ``out``, where the run's report picks it up). ``arms``
    (``sciml_bench.ab``): an A/B run, every case timed once per arm in the same rounds; ``least``:
    the (rounds, passes) that the suite's defaults are raised to at least (A/B needs more); ``duet``:
    a case's two arms time each block at the same time, on disjoint cores (``supervise.pin_duet``);
    ``count``: "instructions" also counts each case's instructions per step under Callgrind after its
    timed rounds, ``instruction_calls`` calls per measurement (``measure.instructions``; default: the suite's)."""
    suite, plan = plan_cases(spec)  # validate before importing the measurement stack (and its warnings)
    return open_run(suite, plan, spec, out, rounds=rounds, round_time=round_time, timeout=timeout, threads=threads,
                    max_live=max_live, hide_hostname=hide_hostname, phases=phases, profile=profile, passes=passes,
                    seed=seed, arms=arms, ab_gate=ab_gate, least=least, duet=duet, count=count,
                    instruction_calls=instruction_calls)


def open_run(suite: Suite, plan: list[tuple[Study, list[Case]]], spec: RunSpec, out: str | os.PathLike = "results", *,
             rounds: int | None = None, round_time: float | None = None, timeout: float | None = None,
             threads: int | None = None, max_live: int | None = None, hide_hostname: bool = False,
             phases: bool = False, profile: dict[str, Any] | None = None, passes: int | None = None,
             seed: int | None = None, arms: list[Any] | None = None, ab_gate: dict[str, Any] | None = None,
             least: tuple[int, int] = (1, 1), duet: bool = False, label: str | None = None,
             extra: dict[str, Any] | None = None, count: str | None = None,
             instruction_calls: int | None = None) -> Run:
    """``start_run`` for a plan already made: the run file with its header, the options, the Run.

    A capability that builds its studies in memory (``sciml_bench.recommend``) opens its run here:
    ``label`` names the run id (default ``run_label``), ``extra`` adds fields to the header."""
    from sciml_bench.measure.environment import collect
    from sciml_bench.measure.peak import calibrate

    spec = RunSpec(**dict(asdict(spec), device=plan[0][1][0].device))  # as resolved, --set device included
    if duet and not arms:
        raise ValueError("duet pairs the two arms of each case: it needs arms (sciml-bench ab)")
    if duet and any(c.device == "cuda" for _, cases in plan for c in cases):
        raise UsageError("--duet gives each arm its own half of the CPU cores, but the two arms of a CUDA case "
                         "would share one GPU: drop --duet, or run ab with --device cpu")
    threads = threads or suite.threads
    opts = RunOptions(rounds=rounds or max(suite.rounds, least[0]), round_time=round_time or suite.round_time,
                      timeout=timeout or suite.timeout, threads=threads,
                      max_live=RunOptions.max_live if max_live is None else max_live,
                      passes=passes or max(suite.passes, least[1]), seed=random.randrange(2**31) if seed is None else seed,
                      duet=duet,
                      instructions=count_options(count or suite.count, instruction_calls or suite.instruction_calls))
    run_id = new_run_id(("ab-" if arms else "") + (label or run_label(suite, plan, spec)))
    if profile is not None:
        from sciml_bench.profiling import ProfileOptions

        ProfileOptions(**profile)  # UsageError now, not in every worker
        profile = dict(profile, out=str(Path(profile.get("out") or
                                             Path(out).resolve().parent / "reports" / run_id / "profiles")))
    opts = replace(opts, phases=phases or profile is not None, profile=profile)
    header = {"run_id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "suite": suite.name,
              "suite_file": suite.path, "spec": asdict(spec), "options": asdict(opts),
              "studies": {s.name: study_entry(s) for s, _ in plan},
              "environment": collect(hide_hostname=hide_hostname, threads=threads),
              "machine_peak": calibrate(spec.device, threads=threads), **(extra or {})}  # peak: ~4 s on 2 cores
    if opts.anchor:
        from sciml_bench.measure import anchor

        header["anchor"] = anchor.header()
    if arms:  # each arm's interpreter, code and environment; the round orders' seed is in options
        header["ab"] = {"arms": {a.name: a.header() for a in arms}, "gate": ab_gate or {}}
    path = Path(out) / f"{run_id}.jsonl"
    RunWriter(path, header).close()
    return Run(path, header, spec, opts, plan, set(), arms=arms)


def study_entry(study: Study) -> dict[str, Any]:
    """A study as the run header declares it (what the report's sections read)."""
    return {"question": study.question, "axes": study.axes, "reference": study.reference,
            "metrics": list(study.metrics), "fail_on_nonfinite": study.fail_on_nonfinite}


def resume_run(path: str | os.PathLike) -> Run:
    """Reopen an interrupted run: same spec and options, finished cases skipped."""
    header, records = read_run(path)
    if str(path).endswith(".gz"):
        raise UsageError(f"{path} is gzipped (kept for reading): gunzip it to resume the run")
    if header.get("ab"):
        raise UsageError(f"{path} is an A/B run: its arms' worktrees are gone, so it cannot be resumed; "
                         f"run sciml-bench ab again")
    if header.get("recommend"):
        raise UsageError(f"{path} is a recommend search: each stage was sized from the budget left and what the "
                         f"stages before it measured, so it cannot be resumed; run sciml-bench recommend "
                         f"{header['recommend'].get('request', {}).get('model', 'MODEL')} again")
    if is_locked(path):
        raise UsageError(f"{path} is being written by another sciml-bench process; wait for it to finish "
                         f"(or stop it) before resuming")
    try:
        spec, opts = RunSpec(**header["spec"]), RunOptions(**header["options"])
    except (KeyError, TypeError) as e:
        raise UsageError(f"{path}: header has no usable run spec/options to resume from ({e})") from None
    try:
        _, plan = plan_cases(spec)
    except UsageError as e:  # e.g. a suite built in memory by a script: only its name is in the header
        raise UsageError(f"{path}: its plan cannot be rebuilt to resume it: {e}") from None
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
    see the machine's slow changes that one time window hides. Each pass index's workers come from
    a fork server of its own (``supervise.pass_context``, started for the first chunk with work in
    that pass and shared by its chunks; an A/B run's arms start theirs per chunk), so per-process
    effects of a server (library addresses, heap layout) differ between passes, where the CIs see
    them. A pass is written as it finishes (``type: pass`` lines) and the case's record after its
    last pass.

    Ctrl-C propagates as KeyboardInterrupt after the workers are stopped; records and passes of
    finished chunks are already on disk, the chunk pass in progress is discarded (``--resume``
    reruns it). A Ctrl-C that a finalizer swallowed still raises, at the next progress tick or at
    the end, so an interrupted run never looks finished.
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
            with contextlib.ExitStack() as server:  # this pass index's fork server (plain runs), closed at its end
                context: ProcessContext | None = None
                started = 0  # servers of this pass: a second one replaces a server that died
                for study, chunk in work:
                    names = [a.name for a in run.arms] if run.arms else [None]
                    haves = [run.passes_of(study, chunk, arm) for arm in names]
                    # a case that failed in any arm is dropped from later passes in all of them
                    alive = [c for c in chunk
                             if not any(p["failure"] for have in haves for p in have.get(c.case_id, []))]
                    # a pass is paired across the chunk: rerun it whole unless every live case has it
                    todo = [] if all(any(p["pass"] == index for p in have.get(c.case_id, []))
                                     for have in haves for c in alive) else alive
                    # started for the pass's first chunk with work; a server that died (a crash, an import
                    # or fork timeout) is replaced, so that it fails only the chunk it died in
                    if todo and not run.arms and (context is None or not context.alive()):
                        if context is not None:
                            context.close()
                        log_dir.mkdir(parents=True, exist_ok=True)
                        started += 1
                        context = pass_context(log_dir / f"server--pass{index + 1}{f'-{started}' if started > 1 else ''}.log")
                        server.callback(context.close)
                    for p in run_pass(study, todo, run.opts, log_dir, progress, index, run.arms,
                                      context=context) if todo else []:
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
        if hit:  # a Ctrl-C after the last progress tick (a finalizer swallowed its KeyboardInterrupt)
            raise KeyboardInterrupt
