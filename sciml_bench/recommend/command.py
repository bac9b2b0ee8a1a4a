"""``sciml-bench recommend``'s side of the command line: its options as a ``Request``, and an answer as terminal lines
(``cli.cmd_recommend`` runs the search; ``show`` prints the same lines for a recommend run)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sciml_bench.errors import UsageError


def request(args: argparse.Namespace) -> Any:
    """The validated ``Request`` of the command line (UsageError, one line, for bad input)."""
    from sciml_bench.cases import parse_assignment
    from sciml_bench.recommend.space import KNOBS, Request
    from sciml_bench.units import parse_bytes, parse_duration

    try:
        limit = parse_bytes(args.memory_limit) if args.memory_limit is not None else None
        budget = parse_duration(args.budget)
    except ValueError as e:
        flag = "--memory-limit" if "size" in str(e) else "--budget"
        raise UsageError(f"{flag}: {e}") from None
    knobs = tuple(k.strip() for k in args.knobs.split(",") if k.strip()) if args.knobs else KNOBS
    return Request(args.model, args.mode, args.device, dict(parse_assignment(a) for a in args.set), args.batch_size,
                   limit, args.tolerance, budget, knobs, args.max_batch_size, args.fit_steps, args.seeds,
                   tuple(args.plugin))


def answer_text(path: Path) -> list[str]:
    """The answer of a recommend run file as terminal lines (also what ``show`` prints for one)."""
    from sciml_bench.recommend.answer import summary
    from sciml_bench.results import read_run
    from sciml_bench.units import fmt_bytes

    header, records = read_run(path)
    info = header.get("recommend") or {}
    if not info.get("finished"):
        return ["recommend: interrupted before an answer (the records so far are kept)"]
    a = summary(header, records)
    s = a["speedup"]
    if not a["knobs"]:
        lines = [f"recommend {info['request']['model']}: keep the baseline ({info['baseline_id']}): {a['why']}"]
    else:
        ci = f" [95% CI {s['ci_low']:.2f}-{s['ci_high']:.2f}]" if s and s["ci_low"] and s["ci_high"] else " (no CI)"
        if s and s["ci_low"] and s["ci_high"] and s["ci_low"] <= 1 <= s["ci_high"]:
            ci += ": not clearly faster than the baseline (its CI includes 1)"
        lines = [f"recommend {info['request']['model']}: {a['config']}",
                 f"  speed-up over the baseline ({a['objective']}): " + (f"{s['value']:.2f}x{ci}" if s else "-"),
                 f"  peak memory {fmt_bytes(a['memory'])} (limit {fmt_bytes(a['memory_limit'])})",
                 f"  why: {a['why']}"]
    lines.append(f"  as options: {a['set']}")
    fates: dict[str, int] = {}
    for c in (info.get("candidates") or {}).values():
        fates[c["fate"]] = fates.get(c["fate"], 0) + 1
    for x in (info.get("space") or {}).get("excluded", []):
        fates[x["fate"]] = fates.get(x["fate"], 0) + 1
    lines.append("  candidates: " + ", ".join(f"{n} {f}" for f, n in fates.items()))
    lines += [f"  not tried: {x['what']} ({x['why']})" for x in a["not_tried"]]
    lines.append(f"  searched in {info.get('wall_s')} s of a {info.get('budget_s'):.0f} s budget")
    return lines
