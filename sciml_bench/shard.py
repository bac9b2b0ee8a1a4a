"""Shards: a run's studies split over N machines (``run --shard K/N``) and merged back into one run.

Whole studies stay on one shard, because a study's ratios need its reference case timed in the
same interleaved rounds on the same machine. Studies are dealt to shards by estimated cost
(longest first, to the least loaded shard), which depends only on the plan, so every machine
computes the same split without talking to the others.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sciml_bench.cases import Case, Study
from sciml_bench.errors import UsageError
from sciml_bench.results import RunWriter, new_run_id, read_run

SETUP_S = 5.0  # estimated seconds to build, warm up and measure one case once
TORCHRUN_S = 10.0  # estimated extra seconds to start a DDP case's torchrun ranks
FIT_SEED_S = 0.5  # estimated seconds to start one seed of a mode='fit' case (model, generated task)
FIT_STEP_S = 0.005  # estimated seconds per training step of a fit case, evaluations included (small MLP, 2 CPU cores)
# Timing options that must agree between merged shards, with the value a header without the key meant.
MERGE_OPTIONS = {"rounds": None, "round_time": None, "threads": None, "passes": 1, "anchor": None}
# Fields that must agree between the runs merged into one: (where in the header, name).
SOFTWARE = ("torch", "cuda", "cudnn", "python")
HARDWARE = ("cpu_model", "cpu_cores_logical", "gpu_name", "gpu_count")


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; UsageError otherwise."""
    k, sep, n = text.partition("/")
    if not (sep and k.strip().isdigit() and n.strip().isdigit()) or not 1 <= int(k) <= int(n):
        raise UsageError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 1/4")
    return int(k), int(n)


def fit_cost(case: Case) -> float:
    """Estimated seconds of a mode='fit' case's training after its timed rounds: seeds x steps (each
    seed capped by ``time_budget``); 0 for other modes."""
    if case.mode != "fit":
        return 0.0
    per_seed = case.steps * FIT_STEP_S
    if case.time_budget:
        per_seed = min(per_seed, case.time_budget)
    return case.seeds * (FIT_SEED_S + per_seed) * max(1, case.ddp_ranks)


def study_cost(cases: list[Case], rounds: int, round_time: float, passes: int = 1) -> float:
    """Estimated seconds a study's cases take: per pass (each in fresh workers) setup, torchrun start and
    the rounds, then once the fixed-budget training of its fit cases."""
    return sum(max(1, passes) * (SETUP_S + (TORCHRUN_S if c.ddp_ranks else 0.0)
                                 + rounds * round_time * max(1, c.ddp_ranks)) + fit_cost(c)
               for c in cases)


def assign(plan: list[tuple[Study, list[Case]]], n: int, rounds: int, round_time: float, passes: int = 1
           ) -> list[list[str]]:
    """Study names of each of ``n`` shards: longest estimated study first, to the least loaded shard."""
    costs = sorted(((study_cost(cases, rounds, round_time, passes), s.name) for s, cases in plan),
                   key=lambda t: (-t[0], t[1]))
    shards: list[list[str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for cost, name in costs:
        i = min(range(n), key=lambda j: (load[j], j))
        shards[i].append(name)
        load[i] += cost
    return shards


def select_shard(plan: list[tuple[Study, list[Case]]], shard: str, rounds: int, round_time: float,
                 passes: int = 1) -> list[tuple[Study, list[Case]]]:
    """The part of ``plan`` that shard ``"K/N"`` runs (whole studies, in plan order).

    The split must come out the same on every machine, so pass the suite's own timing options
    (not command-line overrides that one shard might lack)."""
    k, n = parse_shard(shard)
    if n > len(plan):
        raise UsageError(f"--shard {shard}: the selection has {len(plan)} studies and studies are never split, "
                         f"so use at most {len(plan)} shards")
    mine = set(assign(plan, n, rounds, round_time, passes)[k - 1])
    return [(s, cases) for s, cases in plan if s.name in mine]


# ---------------------------------------------------------------- merge

def _identity(header: dict[str, Any]) -> dict[str, Any]:
    """What must agree between merged runs: suite, selection, timing options, code, software, hardware."""
    env = header.get("environment", {})
    spec = {k: v for k, v in (header.get("spec") or {}).items() if k != "shard"}
    given = header.get("options") or {}
    opts = {k: given.get(k, default) for k, default in MERGE_OPTIONS.items()}
    return {"suite": header.get("suite"), "selection": spec, **{f"option {k}": v for k, v in opts.items()},
            "code commit": (env.get("git") or {}).get("commit"), "code dirty": (env.get("git") or {}).get("dirty"),
            **{k: env.get(k) for k in SOFTWARE + HARDWARE}}


def merge_runs(paths: list[str | os.PathLike], out: str | os.PathLike, allow_mixed: bool = False
               ) -> tuple[Path, list[str]]:
    """Merge shard run files into one run file in ``out``; return (its path, warnings).

    Refuses (UsageError, one line) the same run or shard twice, a case present in two runs, and
    runs whose suite, selection, timing options, code commit, software or hardware differ; with
    ``allow_mixed`` a difference becomes a warning kept in the merged header (and shown in the
    report). Missing shards are listed as warnings. Every record keeps the run and machine that
    measured it under ``machine``.
    """
    if not paths:
        raise UsageError("merge needs at least one run file")
    runs = [(Path(p), *read_run(p)) for p in paths]
    warnings: list[str] = []
    seen_ids: dict[str, Path] = {}
    for p, h, _ in runs:
        if h.get("run_id") in seen_ids:
            raise UsageError(f"run {h.get('run_id')} given twice ({seen_ids[h['run_id']]} and {p})")
        seen_ids[h.get("run_id")] = p
    first = _identity(runs[0][1])
    for p, h, _ in runs[1:]:
        diff = [f"{k}: {first[k]!r} in {runs[0][0].name} vs {v!r} in {p.name}"
                for k, v in _identity(h).items() if v != first[k]]
        if diff and not allow_mixed:
            raise UsageError(f"cannot merge {p.name}: {diff[0]}" + (f" (and {len(diff) - 1} more)" if len(diff) > 1
                                                                    else "") + "; --allow-mixed merges anyway")
        warnings += [f"mixed runs: {d}" for d in diff]
    shards: dict[int, str] = {}
    counts = set()
    for p, h, _ in runs:
        if (h.get("spec") or {}).get("shard"):
            k, n = parse_shard(h["spec"]["shard"])
            counts.add(n)
            if k in shards:
                raise UsageError(f"shard {k}/{n} given twice: runs {shards[k]} and {h.get('run_id')}")
            shards[k] = h.get("run_id")
    if len(counts) > 1:
        raise UsageError(f"cannot merge shards of different splits: {sorted(counts)} shards")
    missing = [f"{k}/{n}" for n in counts for k in range(1, n + 1) if k not in shards]
    if missing:
        warnings.append(f"missing shards: {', '.join(missing)} (their studies are absent from this run)")
    owner: dict[tuple[str, str], str] = {}
    records = []
    for p, h, recs in runs:
        env = h.get("environment", {})
        machine = {"run_id": h.get("run_id"), "hostname": env.get("hostname"), "fingerprint": env.get("fingerprint")}
        for r in recs:
            key = (r["study"], r["case_id"])
            if key in owner:
                raise UsageError(f"case {r['study']}/{r['case_id']} is in two runs ({owner[key]} and "
                                 f"{h.get('run_id')}): merge each shard once")
            owner[key] = h.get("run_id")
            records.append(dict(r, machine=r.get("machine", machine)))
    head = dict(runs[0][1])
    for k in ("type", "format", "schema"):
        head.pop(k, None)
    suite = head.get("suite") or "merged"
    head.update(run_id=new_run_id(f"{suite}-merged"), spec=dict(head.get("spec") or {}, shard=""),
                studies={name: st for _, h, _ in runs for name, st in (h.get("studies") or {}).items()},
                merged_from=[{"run_id": h.get("run_id"), "path": str(p), "shard": (h.get("spec") or {}).get("shard"),
                              "hostname": h.get("environment", {}).get("hostname"),
                              "fingerprint": h.get("environment", {}).get("fingerprint"), "cases": len(recs)}
                             for p, h, recs in runs],
                merge_warnings=warnings)
    path = Path(out) / f"{head['run_id']}.jsonl"
    with RunWriter(path, head) as w:
        for r in records:
            w.append(r)
    return path, warnings


def machine_warnings(records: list[dict[str, Any]]) -> list[str]:
    """One warning per study whose cases were measured on more than one machine (a merged run)."""
    by_study: dict[str, set[str]] = {}
    for r in records:
        m = r.get("machine")
        if m:
            by_study.setdefault(r["study"], set()).add(str(m.get("hostname") or m.get("fingerprint")))
    return [f"study {s} compares numbers measured on different machines ({', '.join(sorted(hosts))}): its ratios "
            f"do not isolate the varied field" for s, hosts in sorted(by_study.items()) if len(hosts) > 1]
