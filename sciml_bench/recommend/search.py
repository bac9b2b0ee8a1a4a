"""Recommend's search: stages of in-memory studies timed by the runner, into one run file.

1. ``screen``: the baseline and every one-knob change of it (each batch size at the baseline's knobs),
   one short pass: which values are faster at all.
2. ``halving-N``: the combinations of the values that beat the baseline, by successive halving: all
   briefly, the faster half again with twice the rounds, until a few remain (knobs interact, so
   combinations are timed, never multiplied).
3. ``accuracy``: fixed-budget training runs (mode='fit', over seeds) of the baseline and of the
   fastest candidates' numerics (precision, compile, batch size; the same number of training samples);
   a candidate is accepted when its final validation loss's CI is within the tolerance. A rejection
   sends the check on to the next fastest numerics (``accuracy-rN``) while the budget allows.
4. ``final``: the baseline, the fastest accepted candidate and its runners-up, several passes: a
   normal measurement whose ratios carry the runner's rerun intervals; the fastest is chosen.

Every stage is a Study whose reference is the baseline (timed in the same rounds, so every ratio is
paired); stages are sized from a cost model recalibrated after each one, so the search ends within
its budget and logs what it did not try. The run file's header says it is a recommend run and, once
the search ends, carries the space, the log and the answer (``answer.py`` reads them back).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sciml_bench.cases import Case, Study, Suite
from sciml_bench.recommend.answer import accuracy_verdict, describe, fate_of, speedup
from sciml_bench.recommend.space import NUMERIC_KNOBS, Request, Space, build_space, default_memory_limit, \
    find_batch_sizes
from sciml_bench.results import FORMAT, SCHEMA_VERSION, RunLocked, is_locked, read_run
from sciml_bench.units import fmt_bytes

SCREEN_PRIORITY = ("batch_size", "precision", "channels_last", "grad_mode", "checkpoint", "num_workers", "compile")


@dataclass(frozen=True)
class SearchOptions:
    """How hard each stage measures. ``rounds``/``round_time``: a screen case's rounds (a halving rung
    doubles them per rung); ``final_passes``/``final_rounds``: the final comparison's; ``finalists``:
    candidates in the final besides the baseline; ``combinations``: most combinations halving starts with."""

    rounds: int = 3
    round_time: float = 0.1
    final_passes: int = 3
    final_rounds: int = 6
    finalists: int = 3
    combinations: int = 12
    max_live: int = 8
    threads: int | None = None
    timeout: float = 300.0
    hide_hostname: bool = False


def split(cases: list[Case], max_live: int, study: Callable[[str], Study], name: str) -> list[tuple[Study, list[Case]]]:
    """``cases`` (the reference first) as studies of at most ``max_live`` cases, each with the reference, so
    every ratio is paired with a baseline timed in the same rounds: ``name``, or ``name-1``, ``name-2``, ..."""
    ref, others = cases[0], cases[1:]
    per = max(max_live - 1, 1)
    parts = [others[i:i + per] for i in range(0, len(others), per)] or [[]]
    return [(study(name if len(parts) == 1 else f"{name}-{i + 1}"), [ref] + p) for i, p in enumerate(parts)]


def fit_case(req: Request, base: Case, c: Case) -> Case:
    """The accuracy check of ``c``: a fixed-budget training run of its numerics over seeds, with as many
    training samples as ``base``'s (a larger batch takes fewer steps)."""
    numerics = {k: getattr(c, k) for k in ("precision", "compile", "batch_size")}
    steps = max(1, round(req.fit_steps * base.batch_size / c.batch_size)) if req.mode == "train" else req.fit_steps
    fields = dict(base.to_dict(), mode="fit", dataset=None, num_workers=0, pin_memory=False, grad_mode="no_grad",
                  persistent_workers=False, prefetch_factor=None, steps=steps, seeds=req.seeds, **numerics)
    if req.mode == "infer":
        fields.update(batch_size=base.batch_size)
    return Case(**fields)


class Budget:
    """Wall-clock budget and a cost model of a stage, recalibrated by what each stage really took."""

    def __init__(self, seconds: float, device: str):
        self.start, self.seconds = time.monotonic(), seconds
        self.setup, self.server, self.scale = 2.0, 4.0, 1.0
        self.compile = 30.0 if device == "cpu" else 60.0  # until a record says what compiling costs here

    @property
    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def case(self, c: Case, rounds: int, round_time: float, passes: int) -> float:
        compile_s = self.compile if c.compile != "none" else 0.0
        return passes * (self.setup + compile_s + rounds * (round_time + 0.05))

    def stage(self, cases: list[Case], rounds: int, round_time: float, passes: int, fit_s: float = 0.0) -> float:
        return self.scale * (passes * self.server + sum(self.case(c, rounds, round_time, passes) for c in cases) + fit_s)

    def learn(self, estimate: float, wall: float, records: list[dict[str, Any]]) -> None:
        compiled = [r["metrics"]["compile_time"]["value"] for r in records if "compile_time" in r.get("metrics", {})]
        if compiled:
            self.compile = max(compiled) + self.setup
        if estimate > 0:
            self.scale = min(max(0.5 * self.scale + 0.5 * wall / (estimate / self.scale), 0.3), 5.0)


class Search:
    """One recommend run: its space, its run file, the candidates' fates and the log."""

    def __init__(self, req: Request, space: Space, out: str | os.PathLike, opts: SearchOptions, budget: Budget,
                 execute: Callable[[Any], bool], say: Callable[[str], None]):
        from sciml_bench.runner import RunSpec, open_run

        self.req, self.space, self.opts, self.budget, self.execute, self.say = req, space, opts, budget, execute, say
        self.base = space.baseline
        self.log: list[dict[str, Any]] = []
        self.cand: dict[str, dict[str, Any]] = {}
        self.accuracy: dict[str, dict[str, Any]] = {}
        self.not_tried: list[dict[str, str]] = []
        self.studies: list[Study] = []
        self.latest: dict[str, dict[str, Any]] = {}  # case id -> its latest timed record
        suite = Suite("recommend", f"recommend {req.model} ({req.mode})", (), opts.rounds, opts.round_time,
                      opts.timeout)
        spec = RunSpec(suite="recommend", models=[req.model], set=[f"{k}={v}" for k, v in req.base.items()],
                       device=self.base.device, plugins=list(req.plugins))
        self.info = {"request": req.to_dict(), "baseline": self.base.to_dict(), "baseline_id": self.base.case_id,
                     "space": space.to_dict(), "objective": "step time at the pinned batch size"
                     if "batch_size" not in space.values else "throughput (samples/s)"}
        self.run = open_run(suite, [(self._study("screen", ""), [self.base])], spec, out, rounds=opts.rounds,
                            round_time=opts.round_time, timeout=opts.timeout, threads=opts.threads,
                            max_live=opts.max_live, hide_hostname=opts.hide_hostname, passes=1,
                            label=f"recommend-{req.model}", extra={"recommend": dict(self.info, finished=False)})
        self.run_opts = self.run.opts

    # ---------------------------------------------------------------- running a stage

    def _study(self, name: str, question: str, fit: bool = False) -> Study:
        axes = {k: list(v) for k, v in self.space.values.items()}
        ref = dict(self.space.reference)
        if fit:
            axes["steps"], ref["steps"] = sorted({self.fit_case(self.base).steps}), self.fit_case(self.base).steps
        return Study(name, question, {}, axes, ref, ("time", "memory"))

    def stage(self, name: str, question: str, cases: list[Case], rounds: int, passes: int = 1,
              round_time: float | None = None, fit_s: float = 0.0) -> list[dict[str, Any]]:
        """Time ``cases`` (the reference first) as one or more studies of ``name`` with the baseline in each."""
        round_time = round_time or self.opts.round_time
        plan = split(cases, self.opts.max_live, lambda n: self._study(n, question, cases[0].mode == "fit"), name)
        estimate = self.budget.stage([c for _, ch in plan for c in ch], rounds, round_time, passes, fit_s)
        self.say(f"{name}: {len(cases)} cases, {passes} pass(es) x {rounds} rounds (about {estimate:.0f} s; "
                 f"{max(self.budget.left, 0):.0f} s of the budget left)")
        self.run.plan = plan
        self.run.opts = replace(self.run_opts, rounds=rounds, passes=passes, round_time=round_time,
                                timeout=max(min(self.opts.timeout, self.budget.left), 10.0))
        started = time.monotonic()
        if not self.execute(self.run):
            raise KeyboardInterrupt
        wall = time.monotonic() - started
        names = {s.name for s, _ in plan}
        records = [r for r in read_run(self.run.path)[1] if r["study"] in names]
        self.budget.learn(estimate, wall, records)
        self.studies += [s for s, _ in plan]
        self.log.append({"stage": name, "studies": sorted(names), "cases": len(cases), "rounds": rounds,
                         "passes": passes, "round_time": round_time, "estimate_s": round(estimate, 1),
                         "wall_s": round(wall, 1)})
        for r in records:
            if r["case"]["mode"] != "fit":
                self.latest[r["case_id"]] = r
                self._judge(r, name)
        return records

    def _judge(self, r: dict[str, Any], stage: str) -> None:
        """A timed record's fate so far: failed, not available, over memory, or (for now) slower."""
        if r["case_id"] == self.base.case_id:
            return
        entry = self.cand.setdefault(r["case_id"], {"knobs": self.space.knobs_of(Case(**r["case"]))})
        fate, reason = fate_of(r, self.space.memory_limit, self.base.batch_size, stage)
        entry.update(fate=fate, reason=reason)

    def speed(self, cid: str) -> float:
        """The latest measured speed-up of a candidate that is ok and under the limit (else -inf)."""
        r = self.latest.get(cid)
        if r is None or self.cand.get(cid, {}).get("fate") != "slower":
            return -math.inf
        s = speedup(r, self.base.batch_size)
        return s["value"] if s else -math.inf

    def skip(self, cases: list[Case], why: str) -> None:
        for c in cases:
            self.cand.setdefault(c.case_id, {"knobs": self.space.knobs_of(c)}).update(fate="not tried", reason=why)
        if cases:
            self.not_tried.append({"what": "; ".join(describe(self.space.knobs_of(c)) for c in cases), "why": why})

    def fits_budget(self, cases: list[Case], rounds: int, passes: int, reserve: float) -> list[Case]:
        """The longest prefix of ``cases`` (the reference first) whose stage fits the budget left minus ``reserve``."""
        keep = list(cases)
        while len(keep) > 1 and self.budget.stage(keep, rounds, self.opts.round_time, passes) > self.budget.left - reserve:
            keep.pop()
        return keep

    # ---------------------------------------------------------------- the stages

    def reserve(self, n: int) -> float:
        """Budget kept back for the accuracy fits and the final comparison of ``n`` finalists."""
        final = self.budget.stage([self.base] * (n + 1), self.opts.final_rounds, self.opts.round_time,
                                  self.opts.final_passes)
        return final + self.fit_cost(self.base) * (n + 1)

    def screen(self) -> None:
        one = [self.space.candidate(**{k: v}) for k in SCREEN_PRIORITY for v in self.space.values.get(k, [])[1:]]
        cases = self.fits_budget([self.base] + one, self.opts.rounds, 1, self.reserve(self.opts.finalists))
        self.skip(one[len(cases) - 1:], "budget: the screen had no time left for it")
        self.stage("screen", "Which single knob changes beat the baseline?", cases, self.opts.rounds)

    def combinations(self) -> list[Case]:
        """Combinations of every value that beat the baseline in the screen, the most promising first."""
        kept: dict[str, list[Any]] = {}
        gain: dict[tuple[str, Any], float] = {}
        for k, values in self.space.values.items():
            wins = []
            for v in values[1:]:
                s = self.speed(self.space.candidate(**{k: v}).case_id)
                if s > 1:
                    wins.append((s, v))
                    gain[(k, v)] = s
            wins.sort(reverse=True)
            kept[k] = [values[0]] + [v for _, v in wins[:2 if k == "batch_size" else len(wins)]]
        combos = [dict(zip(kept, vs)) for vs in itertools.product(*kept.values())]
        cases = [self.space.candidate(**{k: v for k, v in c.items() if v != getattr(self.base, k)}) for c in combos]
        cases = [c for c in cases if c != self.base]
        cases.sort(key=lambda c: -math.prod(gain.get((k, v), 1.0) for k, v in self.space.knobs_of(c).items()))
        # a single-knob change left out here keeps its screen measurement and fate: it can still be checked and win
        self.skip([c for c in cases[self.opts.combinations:] if c.case_id not in self.latest],
                  f"ranked below the {self.opts.combinations} most promising combinations (product of their knobs' "
                  "screen speed-ups)")
        return cases[:self.opts.combinations]

    def halving(self, pool: list[Case]) -> list[Case]:
        """Successive halving: time the pool, keep the faster half, double the rounds, down to the finalists."""
        rung, rounds = 1, self.opts.rounds
        if len(pool) <= self.opts.finalists and all(c.case_id in self.latest for c in pool):
            return pool  # single-knob winners only, already timed by the screen: the final times them again
        while pool:
            reserve = self.reserve(min(self.opts.finalists, len(pool)))
            cases = self.fits_budget([self.base] + pool, rounds, 1, reserve)
            if len(cases) == 1:
                self.not_tried.append({"what": f"halving rung {rung} ({len(pool)} candidates)",
                                       "why": "budget: kept for the accuracy check and the final comparison"})
                break
            self.skip(pool[len(cases) - 1:], f"budget: halving rung {rung} had no time left for it")
            self.stage(f"halving-{rung}", f"Successive halving, rung {rung}: which combinations are fastest?",
                       cases, rounds)
            ranked = sorted((c for c in cases[1:] if self.speed(c.case_id) > -math.inf),
                            key=lambda c: -self.speed(c.case_id))
            pool = ranked[:max(self.opts.finalists, math.ceil(len(ranked) / 2))]
            for c in ranked[len(pool):]:
                self.cand[c.case_id]["reason"] += f"; dropped at halving rung {rung} (slower half)"
            if len(pool) <= self.opts.finalists:
                return pool
            rung, rounds = rung + 1, rounds * 2
        return pool

    def fit_case(self, c: Case) -> Case:
        return fit_case(self.req, self.base, c)

    def fit_cost(self, c: Case) -> float:
        r = self.latest.get(c.case_id) or self.latest.get(self.base.case_id)
        step = r["metrics"]["step_time"]["value"] * c.batch_size / r["case"]["batch_size"] \
            if r and r["status"] == "ok" else 0.05
        f = self.fit_case(c)
        return f.seeds * (1.5 * f.steps * step + 1.0 + (self.budget.compile if c.compile != "none" else 0.0))

    def signature(self, c: Case) -> tuple:
        return tuple(getattr(c, k) for k in NUMERIC_KNOBS[self.req.mode])

    def check_accuracy(self) -> None:
        """Judge the numerics of the fastest candidates: rounds of up to ``max_live - 1`` distinct numerics, the
        fastest unchecked first, each round with the baseline's fit, until the ``finalists`` fastest candidates
        not rejected all have a verdict or the budget is spent. A rejection sends the check on to the next
        fastest numerics (a first round of larger batches that all fail must not hide a batch-32 winner)."""
        from sciml_bench.training import TRAIN_SIZE

        floor = -math.inf if self.baseline_over_limit() else 1.0
        order = sorted((c for c in self._measured() if self.speed(c.case_id) > floor), key=lambda c: -self.speed(c.case_id))
        per = max(self.opts.max_live - 1, 1)

        def fit_seconds(cs: list[Case]) -> float:
            return sum(map(self.fit_cost, [self.base] + cs))

        def cost(cs: list[Case]) -> float:  # what ``stage`` will estimate for the round
            return self.budget.stage([self.fit_case(c) for c in [self.base] + cs], 1, 0.02, 1, fit_seconds(cs))

        for rnd in itertools.count(1):
            alive = [c for c in order if self.accepted(c) is not False]
            if all(self.accepted(c) for c in alive[:self.opts.finalists]):
                return
            todo: dict[tuple, Case] = {}
            for c in alive:
                if self.accepted(c) is None and self.signature(c) not in todo and len(todo) < per:
                    if self.fit_case(c).batch_size > TRAIN_SIZE:
                        self.accuracy[str(self.signature(c))] = {"accepted": False, "unchecked": True, "reason": (
                            f"cannot be checked: batch {c.batch_size} is above the training task's {TRAIN_SIZE}-sample "
                            "pool")}
                    else:
                        todo[self.signature(c)] = c
            final = self.budget.stage([self.base] * (self.opts.finalists + 1), self.opts.final_rounds,
                                      self.opts.round_time, self.opts.final_passes)  # the scale learnt so far
            chosen = list(todo.values())
            while chosen and cost(chosen) > self.budget.left - final:
                chosen.pop()
            short = list(todo.values())[len(chosen):]  # the budget's: no later round may check slower ones instead
            for c in short:
                self.accuracy[str(self.signature(c))] = {"accepted": False, "unchecked": True,
                                                         "reason": "budget: its accuracy check had no time left"}
            if not chosen:
                return
            fits = [self.fit_case(c) for c in [self.base] + chosen]
            records = self.stage("accuracy" if rnd == 1 else f"accuracy-r{rnd}",
                                 "Does each faster configuration reach the baseline's final validation loss?",
                                 fits, 1, round_time=0.02, fit_s=fit_seconds(chosen))
            by_id = {r["case_id"]: r for r in records}
            base = by_id[fits[0].case_id]
            for c, f in zip(chosen, fits[1:]):
                self.accuracy[str(self.signature(c))] = dict(accuracy_verdict(by_id[f.case_id], base, self.req.tolerance),
                                                             fit_case=f.case_id)
            if short or base.get("status") != "ok" or not (base.get("metrics") or {}).get("final_val_loss"):
                return  # the budget is spent, or the baseline's fit failed: another round could judge nothing

    def accepted(self, c: Case) -> bool | None:
        if self.signature(c) == self.signature(self.base):
            return True
        v = self.accuracy.get(str(self.signature(c)))
        return None if v is None else v["accepted"]

    def final(self) -> str | None:
        for c in self._measured():  # the accuracy verdicts become fates
            if self.cand[c.case_id].get("fate") != "slower":
                continue
            v = self.accuracy.get(str(self.signature(c)))
            if v is not None and not v["accepted"] and (not v.get("unchecked") or self.speed(c.case_id) > 1):
                self.cand[c.case_id].update(fate="not tried" if v.get("unchecked") else "outside tolerance",
                                            reason=v["reason"])
            elif v is None and self.accepted(c) is None and self.speed(c.case_id) > 1:
                self.cand[c.case_id].update(fate="not tried", reason=(
                    f"{self.speed(c.case_id):.2f}x the baseline, but its accuracy was not checked (ranked below "
                    "the candidates checked)"))
        # a baseline over the limit cannot be the answer: then the fastest accepted candidate under it wins,
        # faster than the baseline or not
        floor = -math.inf if self.baseline_over_limit() else 1.0
        eligible = sorted((c for c in self._measured() if self.accepted(c) and self.speed(c.case_id) > floor),
                          key=lambda c: -self.speed(c.case_id))
        finalists = eligible[:self.opts.finalists]
        if not finalists:
            self.info["chosen_reason"] = (
                f"the baseline is over the memory limit ({fmt_bytes(self.space.memory_limit)}) and no candidate under "
                "it passed the checks: nothing searched fits" if floor < 1 else
                "no candidate that passed the checks was faster than the baseline")
            return None
        passes = self.opts.final_passes
        while passes > 2 and self.budget.stage([self.base] + finalists, self.opts.final_rounds, self.opts.round_time,
                                               passes) > self.budget.left:
            passes -= 1
        cases = self.fits_budget([self.base] + finalists, self.opts.final_rounds, passes, 0.0)
        if len(cases) == 1:
            best = finalists[0]
            self.not_tried.append({"what": "the final comparison", "why": "budget: none left"})
            self.info["chosen_reason"] = (f"the fastest accepted candidate of {self.latest[best.case_id]['study']} "
                                          "(no final comparison: budget; its CI is from one pass)")
            self.info["final_study"] = self.latest[best.case_id]["study"]
            self.cand[best.case_id].update(fate="chosen", reason=self.info["chosen_reason"])
            return best.case_id
        self.stage("final", "The winner against the baseline and the runners-up, over passes", cases,
                   self.opts.final_rounds, passes)
        self.info["final_study"] = "final"
        ranked = sorted((c for c in cases[1:] if self.speed(c.case_id) > -math.inf), key=lambda c: -self.speed(c.case_id))
        if not ranked or (self.speed(ranked[0].case_id) <= 1 and not self.baseline_over_limit()):
            self.info["chosen_reason"] = "no finalist was faster than the baseline in the final comparison"
            return None
        best = ranked[0]
        over = "; the baseline itself is over the memory limit" if self.baseline_over_limit() else ""
        self.cand[best.case_id].update(fate="chosen", reason=f"fastest of the final comparison ({passes} passes){over}")
        for c in ranked[1:]:
            self.cand[c.case_id].update(reason=f"final: {self.speed(c.case_id):.2f}x, below the chosen "
                                               f"{self.speed(best.case_id):.2f}x")
        self.info["chosen_reason"] = self.cand[best.case_id]["reason"]
        return best.case_id

    def baseline_over_limit(self) -> bool:
        """Whether the baseline's latest timed record is over the memory limit (then it is not an answer)."""
        r = self.latest.get(self.base.case_id)
        over = r is not None and fate_of(r, self.space.memory_limit, self.base.batch_size, "")[0] == "over memory"
        self.info["baseline_over_limit"] = over
        return over

    def _measured(self) -> list[Case]:
        return [Case(**self.latest[cid]["case"]) for cid in self.cand if cid in self.latest]

    def finish(self, chosen: str | None, interrupted: bool = False) -> Path:
        """Write the search log and the answer into the run header (``answer.py`` reads them)."""
        from sciml_bench.runner import study_entry

        header = read_run(self.run.path)[0]
        header = {k: v for k, v in header.items() if k not in ("type", "format", "schema")}
        header["studies"] = {s.name: study_entry(s) for s in self.studies} or header["studies"]
        header["recommend"] = dict(self.info, finished=not interrupted, interrupted=interrupted, chosen=chosen,
                                   candidates=self.cand, accuracy=self.accuracy, not_tried=self.not_tried,
                                   stages=self.log, wall_s=round(time.monotonic() - self.budget.start, 1),
                                   budget_s=self.budget.seconds, final_study=self.info.get("final_study"))
        replace_header(self.run.path, header)
        return self.run.path


def replace_header(path: Path, header: dict[str, Any]) -> None:
    """Rewrite a finished run file's header, its records untouched (a new file renamed into place): the
    search can only say what it found (its studies, log and answer) once it is over."""
    if is_locked(path):
        raise RunLocked(f"{path} is being written by another sciml-bench process")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    line = json.dumps(dict(header, type="header", format=FORMAT, schema=SCHEMA_VERSION), allow_nan=False,
                      default=str) + "\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(line + "".join(lines[1:]), encoding="utf-8")
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def search(req: Request, out: str | os.PathLike = "results", opts: SearchOptions = SearchOptions(),
           execute: Callable[[Any], bool] | None = None, say: Callable[[str], None] = lambda s: None) -> Path:
    """Run the whole search for ``req``; return the run file. Bad input raises UsageError before any
    file is written (unknown model, bad limits, a memory limit below the smallest configuration)."""
    from sciml_bench.runner import resolve_device

    os.environ["SCIML_BENCH_PLUGINS"] = ",".join(req.plugins)  # the zoo here and in every worker reads it
    req = replace(req, device=resolve_device(req.device))
    req.validate()
    budget = Budget(req.budget, req.device)
    space = build_space(req)
    if req.memory_limit is not None:
        space.memory_limit, space.memory_limit_source = req.memory_limit, "--memory-limit"
    else:
        space.memory_limit, space.memory_limit_source = default_memory_limit(req.device)
    pinned = req.batch_size is not None or "batch_size" not in req.knobs
    sizes = find_batch_sizes(space, space.memory_limit, req.max_batch_size, pinned)  # bad limit: UsageError
    say(f"batch sizes under {fmt_bytes(space.memory_limit)} ({space.memory_limit_source}): "
        f"{', '.join(map(str, sizes))}" + (" (pinned)" if pinned else ""))
    if not pinned:
        space.values["batch_size"] = [space.baseline.batch_size] + [b for b in sizes if b != space.baseline.batch_size]
        if len(space.values["batch_size"]) == 1:
            del space.values["batch_size"]
    if execute is None:
        from sciml_bench.runner import execute as run_execute

        def execute(run) -> bool:
            run_execute(run)
            return True

    s = Search(req, space, out, opts, budget, execute, say)
    chosen = None
    try:
        s.screen()
        s.halving(s.combinations())
        s.check_accuracy()
        chosen = s.final()
    except KeyboardInterrupt:
        s.finish(None, interrupted=True)
        raise
    return s.finish(chosen)
