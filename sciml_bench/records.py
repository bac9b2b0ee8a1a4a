"""Records: a case's pass results turned into its one record, and the chunk's ratios.

A record holds the case, its status, and its metrics with raw samples: step time from the per-round
medians (starved rounds left out where enough remain), throughput, FLOP rate, a GPU's energy per
step and power over the same rounds (``measure.energy``), the setup's memory, FLOPs and probes, a
fit's convergence, DDP per-rank figures; then, across the chunk, time and memory ratios against each
case's reference (``stats.pass_ratio``, paired by round within passes), compile break-even and DDP
scaling efficiency.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any

from sciml_bench.cases import Case, Study
from sciml_bench.distributed import add_scaling, rank_metrics
from sciml_bench.measure.energy import energy_metrics
from sciml_bench.results import finite_record, memory_ratio, pass_pairs
from sciml_bench.stats import pass_ratio, summarize, typical_variance
from sciml_bench.worker import RunOptions


def combine(study: Study, cases: list[Case], passes: dict[str, list[dict[str, Any]]], opts: RunOptions,
            pool: list[float] | None = None) -> list[dict[str, Any]]:
    """One record per case (in ``cases`` order) from its pass results, then the chunk's ratios.

    A failure in any pass makes the case's record that failure (a case that crashes sometimes is
    not ok). A failure after the last pass's timed rounds (a fit, ``rounds.AFTER_ROUNDS``) gives the
    record its status and reason but keeps the figures measured before it (step time, memory, ...).
    ``pool``: between-pass variances of this run's earlier ratios (see ``add_ratios``)."""
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
        rec = record(study, c, failure, _pass_info(ps), [b["times"] for b in blocks], opts,
                      ps[0]["started"] if ps else time.time(), blocks)
        after = next((p["after_failure"] for p in ps if p.get("after_failure")), None)
        if failure is None and after:  # failed after its timed rounds: their figures stay, with its status
            rec.update(status=after[0], reason=after[1])
        rec["timing"] = {"passes": [dict({k: p[k] for k in ("pass", "order_seed", "position", "load", "started",
                                                             "finished", "cores") if k in p}, **_pass_worker(p))
                                    for p in ps]}
        records.append(rec)
    add_ratios(study, records, pool)
    add_scaling(records)
    return records


def _pass_worker(p: dict[str, Any]) -> dict[str, Any]:
    """``{"worker": {pid, parent_pid}}`` of a pass (its parent: that pass's fork server), as far as its setup said."""
    info = p.get("info") or {}
    return {"worker": {k: info[k] for k in ("pid", "parent_pid") if k in info}} if "pid" in info else {}


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


def record(study: Study, case: Case, failure: tuple[str, str] | None, info: dict[str, Any] | None,
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
    metrics, absent = dict(info["metrics"]), dict(info["absent"])
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
    if any("energy" in b for b in blocks):  # a GPU's energy counter around each block: the same blocks as step time
        device = info.get("energy") or {}  # the meter's uuid and power limit (worker.energy_meter)
        em, ea = energy_metrics([b.get("energy") for b, st in zip(blocks, starved) if not (excluded and st)],
                                device.get("power_limit_W"), device.get("uuid"))
        metrics.update(em)
        absent.update(ea)
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
    # (flagged first, from the measured value)
    return finite_record(_flag_nonfinite(study, info["metrics"], rec))


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


def add_ratios(study: Study, records: list[dict[str, Any]], pool: list[float] | None = None) -> None:
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
            df = max(len(pp[0]) - 1, 1)  # each pooled variance: P-1 df
            pr = pass_ratio(*pp, prior_var=typical_variance(prior, df), prior_df=len(prior) * df)
            rec["metrics"]["time_ratio"] = {
                "value": pr["ratio"], "unit": "x", "ci_low": pr["ci_low"], "ci_high": pr["ci_high"], "n": pr["n"],
                "reference": ref["case_id"], "passes": pr["passes"], "pass_ratios": pr["pass_ratios"],
                "spread_passes": [min(pr["pass_ratios"]), max(pr["pass_ratios"])], "ci_within": pr["ci_within"],
                "sd_between": pr["sd_between"], "pass_var": pr["pass_var"], "df": pr["df"],
                "ci_method": pr["ci_method"]}
        mem = memory_ratio(rec, ref)
        if mem is not None:
            rec["metrics"]["memory_ratio"] = {"value": mem, "unit": "x", "reference": ref["case_id"]}
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
