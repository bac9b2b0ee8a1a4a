"""Do ratio CIs cover the next run? Repeated runs of real studies, scored pair by pair.

One command records and scores (from the repository root, on a quiet machine)::

    python evidence/rerun_coverage.py --runs 3 \
        --studies activations,inference-modes,inference-modes-mlp,precision,zoo-parity-attention,recurrent \
        --out results/coverage/quick-passes

It runs the chosen studies of a suite (default ``quick``) ``--runs`` times back to back, plus an
A/A study (the activations MLP against three identical twins of itself, ``seed`` differing only; and
an LSTM, the noisiest workload, against one twin),
keeps every run file (raw samples included) under ``--out``, and prints:

* coverage: for every ordered pair of runs (i, j) and every variant case, does run i's 95 % ratio
  CI contain run j's ratio? Scored for the CI the record carries (``ci_low``/``ci_high``: the
  rerun interval over passes, "after") and for the within-run paired-round bootstrap over the
  same rounds (``ci_within``, the CI before this change), overall and per study;
* the between-run spread per study (max/min of a case's ratio over runs, median over cases): the
  floor no honest interval can go below on this machine; and the median CI width (hi/lo) of both
  definitions, per study and overall;
* resolution: the fraction of variant cases whose record CI excludes 1, of all of them and of
  those whose effect is at least 10 % (the mean ratio over the runs beyond 1.1x either way);
* how often a run's A/A twin ratios' CIs contain 1 (they should, about 95 %);
* verdict stability: per variant case, whether "faster / slower / not significant" agrees in
  all runs;
* wall time per run (as recorded; ``span_s``, from each run file's header to its last record, is
  there for scored-only directories too).

Runs may also be recorded one at a time (``--runs 1``), alternating protocols between two
``--out`` directories so that the machine's slow drift falls on both alike; each recording adds
its wall time to the directory's ``coverage.json``.

``--score DIR --recompute`` makes the ratios again from the raw samples with this checkout's
``records.add_ratios`` before scoring (to score a change to the interval on runs recorded before
it), into ``coverage-recomputed.json``. ``--score DIR`` only scores existing run files (e.g. to compare protocols: record once with the
suite's defaults and once with ``--passes 1 --rounds 8`` into another directory). This is a
measurement script, not a test: it takes minutes per run.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from datetime import datetime

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sciml_bench.cases import builtin_suites, load_suite  # noqa: E402
from sciml_bench.results import read_run, run_files  # noqa: E402

TWINS = "aa-twins"  # the A/A studies' names start with this
TWIN_STUDIES = (TWINS, f"{TWINS}-lstm")
TWIN_STUDY = f'''
[[study]]
name = "{TWINS}"
question = "A/A: the same MLP against three identical twins of itself (only the seed differs); ratios must be 1"
base = {{ model = "mlp", mode = "train", batch_size = 256, width = 256, depth = 4 }}
axes = {{ seed = [0, 1, 2, 3] }}
reference = {{ seed = 0 }}

[[study]]
# a noisy workload's A/A: an LSTM's ratios move the most between passes, where a prior borrowed from
# quieter ratios would make its interval too narrow
name = "{TWINS}-lstm"
question = "A/A: the same LSTM against an identical twin (only the seed differs); its ratio must be 1"
base = {{ model = "lstm", mode = "train", batch_size = 32 }}
axes = {{ seed = [0, 1] }}
reference = {{ seed = 0 }}
'''


def write_suite(suite: str, out: Path) -> Path:
    """The suite's TOML with the A/A twin study appended, written to ``out/suite.toml``."""
    load_suite(suite)  # a bad name or file fails here, before any run
    text = (resources.files("sciml_bench.suites").joinpath(f"{suite}.toml").read_text(encoding="utf-8")
            if suite in builtin_suites() else Path(suite).read_text(encoding="utf-8"))
    path = out / "suite.toml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text + TWIN_STUDY, encoding="utf-8")
    return path


def record(n: int, suite: str, studies: list[str], out: Path, extra: list[str]) -> list[float]:
    """Run the studies (and the twins) ``n`` times into ``out``; wall seconds per run."""
    suite_file = write_suite(suite, out)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    walls = []
    for i in range(n):
        cmd = [sys.executable, "-m", "sciml_bench", "run", "--suite", str(suite_file), "--out", str(out),
               "--no-report", "--device", "cpu", *[a for s in [*studies, *TWIN_STUDIES] for a in ("--study", s)], *extra]
        print(f"run {i + 1}/{n}: sciml-bench {' '.join(cmd[3:])}", flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
        print(f"  {walls[-1]:.0f} s", flush=True)
    return walls


def _recompute(path: Path, recs: list[dict]) -> list[dict]:
    """The run's records with their ratios made again from the raw samples by this checkout's
    ``records.add_ratios`` (each study as one chunk, the run's pool carried study to study), so that
    a change to the interval can be scored on run files recorded before it."""
    import copy

    from sciml_bench.records import add_ratios

    studies = {s.name: s for s in load_suite(str(path.parent / "suite.toml")).studies}
    pool: list[float] = []
    out = []
    for name in dict.fromkeys(r["study"] for r in recs):
        group = [copy.deepcopy(r) for r in recs if r["study"] == name]
        for r in group:
            (r.get("metrics") or {}).pop("time_ratio", None)
        add_ratios(studies[name], group, pool)
        out += group
    return out


def ratios(path: Path, recompute: bool = False) -> tuple[dict, dict[tuple[str, str], dict]]:
    """(header, {(study, case id): time_ratio metric}) of a run's variant cases (not references)."""
    h, recs = read_run(path)
    if recompute:
        recs = _recompute(path, recs)
    out = {}
    for r in recs:
        tr = r.get("metrics", {}).get("time_ratio")
        if r["status"] == "ok" and tr and tr.get("reference") != r["case_id"]:
            out[(r["study"], r["case_id"])] = dict(tr, starved=bool(r.get("starved")),
                                                   overhead=bool((r.get("overhead") or {}).get("dominated")))
    return h, out


def _span(path: Path) -> float | None:
    return run_span(*read_run(path))


def run_span(h: dict, recs: list[dict]) -> float | None:
    """Seconds from a run's header to its last record (the run's own time, without start-up)."""
    ends = [r["finished"] for r in recs if r.get("finished")]
    if not ends or not h.get("created"):
        return None
    return max(ends) - datetime.strptime(h["created"], "%Y-%m-%dT%H:%M:%S%z").timestamp()


def _covers(ci, x: float) -> bool | None:
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return ci[0] <= x <= ci[1]


def _sign(ci) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "no CI"
    return "slower" if ci[0] > 1 else "faster" if ci[1] < 1 else "not significant"


def score(run_dir: Path, recompute: bool = False) -> dict:
    runs, spans = [], []
    for f in run_files(run_dir):
        h, found = ratios(f, recompute)
        if found:
            runs.append((h, found))
            spans.append(_span(f))
    if len(runs) < 2:
        raise SystemExit(f"need at least 2 runs with ratios in {run_dir}, found {len(runs)}")
    defs = {"after (record's CI)": lambda tr: (tr.get("ci_low"), tr.get("ci_high")),
            "before (within-run)": lambda tr: tuple(tr.get("ci_within") or (tr.get("ci_low"), tr.get("ci_high")))}
    cover: dict[str, dict[str, list[bool]]] = {d: {} for d in defs}
    widths: dict[str, dict[str, list[float]]] = {d: {} for d in defs}
    for (_, a), (_, b) in itertools.permutations(runs, 2):
        for key in a.keys() & b.keys():
            if key[0].startswith(TWINS):
                continue
            for d, ci in defs.items():
                hit = _covers(ci(a[key]), b[key]["value"])
                if hit is not None:
                    cover[d].setdefault(key[0], []).append(hit)
                    widths[d].setdefault(key[0], []).append(ci(a[key])[1] / ci(a[key])[0])
    spread: dict[str, list[float]] = {}
    stable: dict[str, list[bool]] = {}
    for key in sorted(set.intersection(*(set(r) for _, r in runs))):
        if key[0].startswith(TWINS):
            continue
        vals = [r[key]["value"] for _, r in runs]
        spread.setdefault(key[0], []).append(max(vals) / min(vals))
        stable.setdefault(key[0], []).append(len({_sign(defs["after (record's CI)"](r[key])) for _, r in runs}) == 1)
    # resolution: a CI that excludes 1 decides the question; "large" effects are those of at least 10 %
    # by the mean log ratio over the runs, so that one run's noise does not choose the cases it is scored on
    resolved: dict[str, list[bool]] = {}
    resolved_large: dict[str, list[bool]] = {}
    for key in sorted(set.union(*(set(r) for _, r in runs))):
        if key[0].startswith(TWINS):
            continue
        per_run = [r[key] for _, r in runs if key in r]
        large = abs(np.mean([np.log(tr["value"]) for tr in per_run])) >= np.log(1.1)
        for tr in per_run:
            hit = _covers(defs["after (record's CI)"](tr), 1.0)
            if hit is not None:
                resolved.setdefault(key[0], []).append(not hit)
                if large:
                    resolved_large.setdefault(key[0], []).append(not hit)
    twins = [_covers(defs[d](r[k]), 1.0) for _, r in runs for k in r if k[0].startswith(TWINS) for d in defs]
    twins_after = [_covers((r[k].get("ci_low"), r[k].get("ci_high")), 1.0) for _, r in runs for k in r
                   if k[0].startswith(TWINS)]

    def rate(xs: list[bool]) -> dict:
        return {"rate": float(np.mean(xs)) if xs else None, "n": len(xs)}

    studies = sorted({s for d in cover.values() for s in d})
    return {
        "runs": [h.get("run_id") for h, _ in runs],
        "protocol": sorted({f"{(h.get('options') or {}).get('passes', 1)} pass(es) x "
                            f"{(h.get('options') or {}).get('rounds')} rounds x "
                            f"{(h.get('options') or {}).get('round_time')} s" for h, _ in runs}),
        "coverage": {d: dict(all=rate([x for s in c.values() for x in s]), **{s: rate(c.get(s, [])) for s in studies})
                     for d, c in cover.items()},
        "median_width": {d: dict(all=float(np.median([x for v in w.values() for x in v])),
                                 **{s: float(np.median(w[s])) for s in studies if w.get(s)}) for d, w in widths.items()},
        "between_run_spread": dict(all=float(np.median([x for v in spread.values() for x in v])),
                                   **{s: float(np.median(v)) for s, v in spread.items()}),
        "resolved": dict(all=rate([x for v in resolved.values() for x in v]), **{s: rate(v) for s, v in resolved.items()}),
        "resolved_10pct": dict(all=rate([x for v in resolved_large.values() for x in v]),
                               **{s: rate(resolved_large.get(s, [])) for s in studies}),
        "span_s": spans,
        "verdict_stable": {s: rate(v) for s, v in stable.items()},
        "aa_twins_cover_1": rate([x for x in twins_after if x is not None]),
        "aa_twins_cover_1_both_defs": rate([x for x in twins if x is not None]),
        "flagged": {"starved": sum(tr["starved"] for _, r in runs for tr in r.values()),
                    "overhead_dominated": sum(tr["overhead"] for _, r in runs for tr in r.values())},
    }


def to_markdown(res: dict, walls: list[float] | None = None) -> str:
    defs = list(res["coverage"])
    studies = [s for s in res["coverage"][defs[0]] if s != "all"]
    pct = lambda r: "-" if r["rate"] is None else f"{r['rate']:.0%} ({r['n']})"  # noqa: E731
    lines = [f"{len(res['runs'])} runs ({', '.join(res['protocol'])}): {', '.join(res['runs'])}", "",
             "| study | " + " | ".join(f"covers next run: {d}" for d in defs) + " | median CI width hi/lo "
             + " / ".join(d.split(' ')[0] for d in defs) + " | between-run spread max/min | verdict same in all runs |"
             " resolved (CI excludes 1) | resolved, effect >= 10 % |",
             "|---|" + "---:|" * (len(defs) + 5)]
    none = {"rate": None, "n": 0}
    for s in [*studies, "all"]:
        # hi/lo, and as the x/÷ half-width the README quotes (its square root)
        w = " / ".join(f"{x:.3g} (x/÷{x ** 0.5:.3g})" for d in defs
                       for x in [res["median_width"][d].get(s, float("nan"))])
        name, b = ("**all**", "**") if s == "all" else (s, "")
        lines.append(f"| {name} | " + " | ".join(f"{b}{pct(res['coverage'][d][s])}{b}" for d in defs) + f" | {w} | "
                     f"{res['between_run_spread'].get(s, float('nan')):.3f} | "
                     f"{pct(res['verdict_stable'].get(s, none)) if s != 'all' else ''} | "
                     f"{pct(res['resolved'].get(s, none))} | {pct(res['resolved_10pct'].get(s, none))} |")
    lines += ["", f"A/A twins: the record's CI contains 1 in {pct(res['aa_twins_cover_1'])} "
                  f"(both definitions: {pct(res['aa_twins_cover_1_both_defs'])}).",
              f"Flagged ratios over all runs: {res['flagged']['starved']} starved, "
              f"{res['flagged']['overhead_dominated']} overhead-dominated."]
    if walls:
        lines.append(f"Wall time per run: {', '.join(f'{w:.0f} s' for w in walls)}.")
    if any(res.get("span_s") or []):
        lines.append(f"Run file spans (header to last record): {', '.join(f'{w:.0f} s' for w in res['span_s'] if w)}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs to record (default: 3)")
    p.add_argument("--suite", default="quick", help="suite the studies come from (default: quick)")
    p.add_argument("--studies", default="activations,inference-modes,inference-modes-mlp,precision,zoo-parity-attention,recurrent",
                   help="comma-separated study names")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "coverage", help="directory for the run files")
    p.add_argument("--score", type=Path, metavar="DIR", help="only score the run files in DIR")
    p.add_argument("--passes", type=int, help="override the suite's passes")
    p.add_argument("--rounds", type=int, help="override the suite's rounds per pass")
    p.add_argument("--round-time", type=float, help="override the suite's round time (s)")
    p.add_argument("--recompute", action="store_true",
                   help="with --score: make the ratios again from the raw samples with this checkout's code and write "
                        "coverage-recomputed.json (the recorded coverage.json stays)")
    args = p.parse_args(argv)
    if args.recompute:
        if args.score is None:
            p.error("--recompute needs --score DIR")
        res = score(args.score, recompute=True)
        res["wall_s"] = None  # the interval changed, not the runs: their walls are in coverage.json
        (args.score / "coverage-recomputed.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
        print(to_markdown(res))
        return 0
    walls = None
    run_dir = args.score or args.out
    if args.score is None:
        extra = [a for k in ("passes", "rounds", "round_time") if getattr(args, k) is not None
                 for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
        walls = record(args.runs, args.suite, [s for s in args.studies.split(",") if s], args.out, extra)
    old = Path(run_dir) / "coverage.json"
    # scoring again keeps the wall times the recordings measured; a new recording adds its own
    # (so runs recorded one at a time, alternating protocols between directories, keep every wall)
    before = json.loads(old.read_text(encoding="utf-8")).get("wall_s") or [] if old.exists() else []
    walls = before + (walls or []) or None
    try:
        res = score(run_dir)
    except SystemExit as too_few:  # the first of runs recorded one at a time: keep its wall for later
        if args.score is not None:
            raise
        old.write_text(json.dumps({"wall_s": walls}, indent=1), encoding="utf-8")
        print(too_few)
        return 0
    res["wall_s"] = walls
    (Path(run_dir) / "coverage.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    print(to_markdown(res, walls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
