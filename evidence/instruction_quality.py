"""Detection quality of ``sciml-bench ab --count instructions``: A/A false alarms and real extra work of
~1 / 2 / 5 %, counted on the machine as found and next to a busy loop.

Usage (from the repository root; one count at a time, ~1 min each on 2 cores)::

    python evidence/instruction_quality.py record --out results/detection/instructions-asfound
    python evidence/instruction_quality.py record --busy --out results/detection/instructions-busy
    python evidence/instruction_quality.py score results/detection/instructions-asfound \\
        results/detection/instructions-busy --json results/detection/instructions/score.json

``record`` is ``detection_quality.record_ab`` (a throw-away plugin repository whose second commit adds one
layer to ``dq_ic_plus1`` / ``plus2`` / ``plus5``: 100 -> 101, 50 -> 51, 20 -> 21 layers of width 64, and
leaves ``dq_ic_same`` alone) over ``evidence/ab_instructions_suite.toml``, with ``--busy`` a
``while True: pass`` process beside it for the whole run. ``score`` reads only the recorded files:

* ab's own verdicts (``compare.compare_ab``, the gate ``ab`` exits with) per case and run;
* pooled pairs with the same rule (``measure.instructions.verdict``): every two counts of the same case
  (model, seed) run with the same code (layer count), whichever arm, run or condition, are an A/A
  comparison; every count of a case's base code against every count of its new code a detection. Only
  the same seed: the count depends on the data (MKL's sqrt in Adam takes a slow path for rare values,
  ~0.5 % between seeds here). Pairs share counts, so they are not independent: the number of distinct
  counts is given beside each rate, and the independent A/A comparisons (each count in one pair only,
  consecutive counts of a case and code) are scored apart.

A measurement script, not a test.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence.detection_quality import AB_BASE, AB_NEW, record_ab  # noqa: E402
from sciml_bench.compare import compare_ab  # noqa: E402
from sciml_bench.measure import instructions  # noqa: E402
from sciml_bench.results import read_run, run_files  # noqa: E402

SUITE = ROOT / "evidence" / "ab_instructions_suite.toml"
EXTRA = {"dq_ic_plus1": "~1 % (100 -> 101 layers)", "dq_ic_plus2": "~2 % (50 -> 51 layers)",
         "dq_ic_plus5": "~5 % (20 -> 21 layers)"}


def record(out: Path, busy: bool, runs: int = 1, aa: bool = False, suite: Path = SUITE) -> None:
    """``runs`` ab runs of ``suite`` with instruction counts; ``busy``: a spinning neighbour throughout;
    ``aa``: both arms the base revision (every case an A/A comparison)."""
    from sciml_bench.lifetime import die_with_parent

    out.mkdir(parents=True, exist_ok=True)
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=die_with_parent) \
        if busy else None
    t0 = time.time()
    try:
        record_ab(runs, out, suite=suite, extra_args=("--count", "instructions"),
                  arms=("HEAD~1", "HEAD~1") if aa else ("HEAD~1", "HEAD"))
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    (out / "neighbour.json").write_text(json.dumps({"busy_loop": busy, "aa": aa, "started": t0,
                                                    "finished": time.time()}))


def _counts(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(counts, ab rows): every recorded instruction count with its code identity, and ab's verdicts."""
    counts, rows = [], []
    for f in run_files(run_dir):
        header, recs = read_run(f)
        if not header.get("ab") or not recs:
            continue
        arms = header["ab"]["arms"]
        aa = arms["base"].get("revision") == arms["new"].get("revision")  # both arms the base code
        starts = [p["started"] for r in recs for p in r["timing"]["passes"]]
        wall = max(r["finished"] for r in recs) - min(starts)
        for r in recs:
            m = r["metrics"].get(instructions.METRIC)
            model = r["case"]["model"]
            layers = (AB_BASE if r["arm"] == "base" or aa else AB_NEW)[model]
            counts.append({"run": f.name, "model": model, "layers": layers, "arm": r["arm"], "case": r["case_id"],
                           "metric": m, "absent": r["absent"].get(instructions.METRIC), "wall_s": wall})
        for row in compare_ab(f).rows:
            if row.metric == "step_time":  # the same run's wall-time verdict, for contrast
                rows.append({"run": f.name, "model": "step_time", "ratio": row.ratio, "verdict": row.verdict})
            elif row.metric == instructions.METRIC:
                rows.append({"run": f.name, "model": row.case_id.split(",")[0] + (" (A/A run)" if aa else ""),
                             "ratio": row.ratio,
                             "verdict": row.verdict})
    return counts, rows


def score(run_dirs: list[Path]) -> dict:
    counts, rows, conditions = [], [], {}
    for d in run_dirs:
        c, r = _counts(d)
        label = d.name
        meta = json.loads((d / "neighbour.json").read_text()) if (d / "neighbour.json").exists() else {}
        conditions[label] = {"busy_loop": meta.get("busy_loop"), "counts": len(c),
                             "absent": sorted({x["absent"] for x in c if x["metric"] is None}),
                             "run_wall_s": sorted({round(x["wall_s"]) for x in c}),
                             "count_s": _stats([x["metric"]["seconds"] for x in c if x["metric"]]),
                             "spread": _stats([x["metric"]["spread"] for x in c if x["metric"]])}
        times = [x["verdict"] for x in r if x["model"] == "step_time"]
        conditions[label]["time_verdicts"] = {v: times.count(v) for v in sorted(set(times))}
        counts += [dict(x, condition=label) for x in c if x["metric"]]
        rows += [dict(x, condition=label) for x in r if x["model"] != "step_time"]
    first = next(iter(conditions), None)  # each condition's counts against the first's, same case and code
    ref: dict[tuple[str, int], list[float]] = {}
    for c in counts:
        if c["condition"] == first:
            ref.setdefault((c["case"], c["layers"]), []).append(c["metric"]["value"])
    for label, cond in conditions.items():
        r = [c["metric"]["value"] / v for c in counts if c["condition"] == label
             for v in ref.get((c["case"], c["layers"]), [])]
        cond["vs_first"] = float(np.median(r)) if r and label != first else None
    out: dict = {"conditions": conditions, "rule": {"floor": instructions.FLOOR,
                                                    "spread_factor": instructions.SPREAD_FACTOR}}
    # ab's own verdicts, per model
    out["ab"] = {m: {"n": len(v), "verdicts": {k: [x["verdict"] for x in v].count(k) for k in
                                               sorted({x["verdict"] for x in v})},
                     "ratios": [round(x["ratio"], 5) for x in v]}
                 for m in sorted({x["model"] for x in rows}) for v in [[x for x in rows if x["model"] == m]]}
    # pooled A/A: every two counts of the same case and code
    by_code: dict[tuple[str, int], list[dict]] = {}
    for c in counts:
        by_code.setdefault((c["case"], c["layers"]), []).append(c)
    aa, cross, used, used_cross = [], [], set(), set()
    for group in by_code.values():
        for a, b in itertools.combinations(group, 2):
            ratio, v, t = instructions.verdict(a["metric"], b["metric"])
            aa.append((ratio, v, t))
            used |= {id(a), id(b)}
            if a["condition"] != b["condition"]:
                cross.append((ratio, v, t))
                used_cross |= {id(a), id(b)}
    out["aa"] = _pairs(aa, len(used))
    # independent A/A: each count in at most one pair (consecutive counts of a group, in recording order)
    disjoint = [instructions.verdict(a["metric"], b["metric"]) for group in by_code.values()
                for a, b in zip(group[0::2], group[1::2])]
    out["aa_independent"] = _pairs(disjoint, 2 * len(disjoint))
    for busy in (False, True):  # the same, each condition on its own: both counts quiet, or both beside the loop
        same = [[c for c in group if conditions[c["condition"]]["busy_loop"] is busy] for group in by_code.values()]
        pairs = [instructions.verdict(a["metric"], b["metric"]) for g in same for a, b in zip(g[0::2], g[1::2])]
        out[f"aa_independent_{'busy' if busy else 'quiet'}"] = _pairs(pairs, 2 * len(pairs))
    out["aa_across_conditions"] = _pairs(cross, len(used_cross))
    # pooled detection: base code against new code of each extra-work model
    out["extra"] = {}
    for model, what in EXTRA.items():
        cases = sorted({c["case"] for c in counts if c["model"] == model})
        base = [by_code.get((case, AB_BASE[model]), []) for case in cases]
        new = [by_code.get((case, AB_NEW[model]), []) for case in cases]
        judged = [(b, n, instructions.verdict(b["metric"], n["metric"])) for bs, ns in zip(base, new)
                  for b in bs for n in ns]
        pairs = [v for _, _, v in judged]
        busy = {label: cond["busy_loop"] for label, cond in conditions.items()}
        by = {name: [v == "more" for b, n, (_, v, _) in judged
                     if busy[b["condition"]] is flag and busy[n["condition"]] is flag]
              for name, flag in (("quiet", False), ("busy", True))}
        base, new = sum(base, []), sum(new, [])
        if pairs:
            out["extra"][model] = dict(_pairs(pairs, len(base) + len(new)), what=what,
                                       detected=float(np.mean([v == "more" for _, v, _ in pairs])),
                                       detected_by_condition={k: {"n": len(v), "detected": sum(v)} for k, v in by.items()})
    return out


def _stats(v: list[float]) -> dict | None:
    return {"n": len(v), "median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))} if v else None


def _pairs(pairs: list[tuple[float, str, float]], counts: int) -> dict:
    if not pairs:
        return {"n": 0}
    dev = [abs(r - 1) for r, _, _ in pairs]
    return {"n": len(pairs), "distinct_counts": counts, "false_or_flagged": sum(v != "unchanged" for _, v, _ in pairs),
            "rate_flagged": float(np.mean([v != "unchanged" for _, v, _ in pairs])),
            "ratio_median": float(np.median([r for r, _, _ in pairs])), "abs_dev_median": float(np.median(dev)),
            "abs_dev_max": float(np.max(dev)), "threshold_median": float(np.median([t for _, _, t in pairs]))}


def to_markdown(res: dict) -> str:
    lines = ["| condition | busy loop | counts | run wall (s) | seconds per count (median, range) | "
             "repeat spread (median, max) | counts / the first condition's (median) | "
             "wall-time verdicts of the same run |", "|---|---|---:|---|---|---|---:|---|"]
    for name, c in res["conditions"].items():
        cs, sp = c["count_s"] or {}, c["spread"] or {}
        times = ", ".join(f"{n} {v}" for v, n in (c.get("time_verdicts") or {}).items())
        lines.append(f"| {name} | {c['busy_loop']} | {c['counts']} | {c['run_wall_s']} | "
                     f"{cs.get('median', 0):.0f} ({cs.get('min', 0):.0f}-{cs.get('max', 0):.0f}) | "
                     f"{sp.get('median', 0):.3%}, {sp.get('max', 0):.3%} | "
                     f"{'' if c.get('vs_first') is None else format(c['vs_first'], '.4f')} | {times} |")
    rule = res["rule"]
    lines += ["", f"Gate: change beyond max({rule['floor']:.1%}, {rule['spread_factor']:g} x spread).", "",
              "| comparison | pairs (distinct counts) | flagged | median ratio | median / max abs deviation | "
              "median threshold |", "|---|---:|---:|---:|---:|---:|"]
    named = [("A/A, same code, all pairs", res["aa"]), ("A/A, independent (each count in one pair)",
                                                          res.get("aa_independent", {})),
             ("A/A, independent, both counts quiet", res.get("aa_independent_quiet", {})),
             ("A/A, independent, both beside the busy loop", res.get("aa_independent_busy", {})),
             ("A/A across conditions", res["aa_across_conditions"])] + \
        [(f"{m}: {e['what']}", e) for m, e in res["extra"].items()]
    for name, p in named:
        if p.get("n"):
            lines.append(f"| {name} | {p['n']} ({p['distinct_counts']}) | {p['false_or_flagged']} "
                         f"({p['rate_flagged']:.0%}) | {p['ratio_median']:.4f} | {p['abs_dev_median']:.3%} / "
                         f"{p['abs_dev_max']:.3%} | {p['threshold_median']:.2%} |")
    lines += ["", "Extra work detected, both counts of a pair under the same condition: " + "; ".join(
        f"{m}: " + ", ".join(f"{k} {d['detected']}/{d['n']}" for k, d in e.get("detected_by_condition", {}).items())
        for m, e in res["extra"].items())]
    lines += ["", "ab's own verdicts (compare_ab), per model: " + "; ".join(
        f"{m}: {v['verdicts']}" for m, v in res["ab"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--busy", action="store_true", help="a `while True: pass` process beside the run")
    r.add_argument("--runs", type=int, default=1)
    r.add_argument("--aa", action="store_true", help="both arms the base revision: every case A/A")
    r.add_argument("--suite", type=Path, default=SUITE, help=f"the suite (default: {SUITE.relative_to(ROOT)}; "
                   "evidence/ab_instructions_suite20.toml: 20 cases, the size the wall-time protocol is quoted for)")
    s = sub.add_parser("score")
    s.add_argument("dir", type=Path, nargs="+")
    s.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "record":
        record(args.out, args.busy, args.runs, args.aa, args.suite)
        return 0
    res = score(args.dir)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
