"""Detection quality of ``sciml-bench compare`` and ``sciml-bench ab``: false alarms, detection rates and
CI honesty, measured.

Usage (from the repository root)::

    python evidence/detection_quality.py record --runs 6 --out results/detection/runs   # ~2-10 min
    python evidence/detection_quality.py score results/detection/runs [--json out.json]
    python evidence/detection_quality.py record-ab --runs 2 --passes 4 --out results/detection/ab-4x12  # ~31 min a run
    python evidence/detection_quality.py score-ab results/detection/ab [--json out.json]
    python evidence/detection_quality.py pooling results/detection/{ab-4x12,ab-rounds-36x0.1,ab-rounds-72x0.1,\
        ab-shuffled-36x0.1,ab-pairs-36x0.1,ab-pairs-72x0.1,ab-pairs-6x24,ab-aa-mixed} --json results/detection/pooling.json

``record`` runs ``evidence/detection_suite.toml`` (a base MLP and the same MLP with 1/2/4 extra
layers, i.e. a *real* extra op of ~5/10/20%) several times, minutes apart, on this machine.
``score`` then uses only those recorded samples:

* A/A false alarms: every ordered pair of different runs, every case (same code run twice).
* Injected slowdowns: run i's samples scaled by 1.05/1.10/1.20 against run j (i != j).
* Real extra op: ``dq_plusN`` in run j against ``dq_base`` in run i (i != j).
* CI honesty: does run i's paired-round ratio CI (variant vs base) cover run j's ratio?

Each is scored under several rules on the same data:

* ``sciml-bench``: compare's own verdict "slower" (Mann-Whitney p < alpha and ratio > 1 + threshold),
  on raw per-call samples and on per-round medians;
* ``sciml-bench (anchored)``: the same, computed by ``compare.time_row`` itself on the per-round
  times divided by the anchor timed in the same round (runs recorded since the anchor exists; an
  injected slowdown scales the case, not the anchor, as a code change would);
* ``asv``: Mann-Whitney p < 0.002 and ratio >= 1.1 (asv's defaults);
* ``median 5%``: ratio of medians > 1.05, no test (how pytest-benchmark's --benchmark-compare-fail
  applies a fixed threshold).

``record-ab`` makes a throw-away git repository whose two commits differ only in a plugin model's
layer count: ``dq_ab_same`` is identical in both (A/A: the same code in both arms), ``dq_ab_plus5`` /
``plus10`` / ``plus20`` get 1 / 2 / 4 more of their 20 layers in the new commit (a real extra op of
~5 / 10 / 20 %). Each run is one ``sciml-bench ab --base <old> --new <new>`` over many seeds of each
model; ``score-ab`` reads only the recorded files and scores ``compare_ab``'s verdicts: false alarms
on ``dq_ab_same``, detection per extra op, and the realised ratios.

This is a measurement script, not a test: it is kept out of the test suite because it takes minutes.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AB_SUITE = ROOT / "evidence" / "ab_detection_suite.toml"
sys.path.insert(0, str(ROOT))

from sciml_bench.compare import (DEFAULT_AB_THRESHOLD, DEFAULT_ALPHA, DEFAULT_THRESHOLD, Comparison,  # noqa: E402
                                 compare_ab, time_row, time_samples)
from sciml_bench.results import pass_pairs, pass_rounds, read_run, run_files  # noqa: E402
from sciml_bench.stats import pass_ratio  # noqa: E402

SLOWDOWNS = (1.05, 1.10, 1.20)
EXTRA = {"dq_plus5": 1.05, "dq_plus10": 1.10, "dq_plus20": 1.20}


def record(n: int, out: Path) -> None:
    """Run the detection suite ``n`` times into ``out`` (no reports)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for i in range(n):
        cmd = [sys.executable, "-m", "sciml_bench", "run", "--suite", str(ROOT / "evidence/detection_suite.toml"),
               "--plugin", "evidence.detect_plugin", "--out", str(out), "--no-report", "--device", "cpu"]
        print(f"run {i + 1}/{n}: {' '.join(cmd[3:])}", flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def _rules(new: dict, base: dict, scale: float = 1.0) -> dict[str, bool]:
    """Did each rule flag ``new`` (times multiplied by ``scale``) as slower than ``base``? Every
    sciml-bench figure is ``compare.time_row`` itself; asv's rule reads the same row's p and ratio."""
    scaled = dict(new, value=new["value"] * scale, samples=[t * scale for t in new["samples"]],
                  raw=[[t * scale for t in block] for block in new.get("raw") or []])
    b, n = ({"study": "", "case_id": "", "metrics": {"step_time": m}} for m in (base, scaled))

    def row(samples: str, anchor: bool):
        cmp = Comparison("", "", "", "", DEFAULT_THRESHOLD, DEFAULT_ALPHA, samples, ("time",), use_anchor=anchor)
        return time_row(b, n, cmp, []), cmp

    out = {}
    for kind in ("raw", "rounds"):
        r, _ = row(kind, anchor=False)
        out[f"sciml-bench ({kind})"] = r.verdict == "slower"
        out[f"asv ({kind})"] = r.p_value is not None and r.p_value < 0.002 and r.ratio >= 1.1
    out["median 5%"] = scaled["value"] / base["value"] > 1.05
    r, cmp = row("rounds", anchor=True)
    if cmp.anchored:  # both runs timed the anchor: compare's anchor-normalised path
        out["sciml-bench (anchored)"] = r.verdict == "slower"
    return out


def score(run_dirs: list[Path]) -> dict:
    runs = []
    for f in [f for d in run_dirs for f in run_files(d)]:
        h, recs = read_run(f)
        ok = [r for r in recs if r["status"] == "ok"]
        if not ok:
            continue  # an interrupted or still-running run
        # keyed by case id; the detection suite's cases are also reachable by model name
        runs.append({**{r["case_id"]: r for r in ok},
                     **{r["case"]["model"]: r for r in ok if r["case"]["model"] in (*EXTRA, "dq_base")}})
    if len(runs) < 2:
        raise SystemExit(f"need at least 2 runs in {', '.join(map(str, run_dirs))}, found {len(runs)}")
    tally: dict[str, dict[str, list[bool]]] = {}

    def add(scenario: str, flags: dict[str, bool]) -> None:
        for rule, hit in flags.items():
            tally.setdefault(scenario, {}).setdefault(rule, []).append(hit)

    for i, j in itertools.permutations(range(len(runs)), 2):
        a, b = runs[i], runs[j]
        for case in {k for k in a.keys() & b.keys() if "," in k or k not in (*EXTRA, "dq_base")}:
            base, new = a[case]["metrics"]["step_time"], b[case]["metrics"]["step_time"]
            add("A/A (same code, two runs)", _rules(new, base))
            for s in SLOWDOWNS:
                add(f"injected {s - 1:.0%} (scaled samples)", _rules(new, base, s))
        if "dq_base" in a:
            for case, s in EXTRA.items():
                if case in b:
                    add(f"real extra op ~{s - 1:.0%} ({case})",
                        _rules(b[case]["metrics"]["step_time"], a["dq_base"]["metrics"]["step_time"]))
    # CI honesty: run i's paired-round ratio CI must cover run j's ratio
    cover, widths, realised = [], [], {c: [] for c in EXTRA}
    for i, j in itertools.permutations(range(len(runs)), 2):
        for case in EXTRA:
            ri, rj = runs[i].get(case, {}).get("metrics", {}).get("time_ratio"), \
                runs[j].get(case, {}).get("metrics", {}).get("time_ratio")
            if ri and rj and ri.get("ci_low") is not None:
                cover.append(ri["ci_low"] <= rj["value"] <= ri["ci_high"])
                widths.append(ri["ci_high"] / ri["ci_low"])
    for r in runs:
        for case in EXTRA:
            tr = r.get(case, {}).get("metrics", {}).get("time_ratio")
            if tr:
                realised[case].append(tr["value"])
    rates = {sc: {rule: {"rate": float(np.mean(h)), "n": len(h)} for rule, h in rules.items()}
             for sc, rules in tally.items()}
    return {"runs": len(runs), "rounds": [len(next(iter(r.values()))["metrics"]["step_time"]["samples"]) for r in runs],
            "raw_per_run_case": float(np.mean([len(time_samples(c["metrics"]["step_time"], "raw"))
                                               for r in runs for k, c in r.items() if "," in k])),
            "rates": rates,
            "ci_honesty": {"coverage": float(np.mean(cover)) if cover else None, "n": len(cover),
                           "median_width_ratio": float(np.median(widths)) if widths else None},
            "realised_extra_op_ratio": {c: {"median": float(np.median(v)), "min": float(np.min(v)),
                                            "max": float(np.max(v))} for c, v in realised.items() if v}}


def to_markdown(res: dict) -> str:
    rules = list(next(iter(res["rates"].values())))
    lines = [f"{res['runs']} runs, rounds per case {sorted(set(res['rounds']))}, "
             f"~{res['raw_per_run_case']:.0f} per-call samples per case per run", "",
             "| scenario | " + " | ".join(rules) + " |", "|---|" + "---:|" * len(rules)]
    for sc, r in res["rates"].items():
        lines.append(f"| {sc} (n={next(iter(r.values()))['n']}) | " +
                     " | ".join(f"{r[k]['rate']:.0%}" for k in rules) + " |")
    ci = res["ci_honesty"]
    if ci["coverage"] is not None:
        lines += ["", f"CI honesty: run i's ratio CI covers run j's ratio in {ci['coverage']:.0%} of {ci['n']} "
                      f"pairs (median CI width hi/lo {ci['median_width_ratio']:.2f}x)."]
    for c, v in res["realised_extra_op_ratio"].items():
        lines.append(f"- realised {c}/dq_base within-run ratio: median {v['median']:.3f} "
                     f"(range {v['min']:.3f}-{v['max']:.3f})")
    return "\n".join(lines) + "\n"


AB_PLUGIN = '''\
"""A/B detection-quality models: {what}."""
import torch
from torch import nn

from sciml_bench.models import mse, register_model

WIDTH = 256
LAYERS = {layers!r}
WIDTHS = {widths!r}  # models narrower than WIDTH


def _batch_of(width):
    def _batch(batch_size, g, **_):
        return torch.randn(batch_size, width, generator=g), torch.randn(batch_size, width, generator=g)
    return _batch


def _mlp(layers, width=WIDTH):
    return nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())])


for _name, _n in LAYERS.items():
    _w = WIDTHS.get(_name, WIDTH)
    register_model(_name, family="test", task="regression", batch=_batch_of(_w), loss=mse, hidden=True,
                   description=f"A/B detection-quality MLP, {{_n}} layers of {{_w}}")(lambda n=_n, w=_w: _mlp(n, w))
'''
AB_BASE = {"dq_ab_same": 20, "dq_ab_plus5": 20, "dq_ab_plus10": 20, "dq_ab_plus20": 20,
           # instruction counts (evidence/instruction_quality.py): one more layer of 20 / 50 / 100, width 64
           "dq_ic_same": 20, "dq_ic_plus5": 20, "dq_ic_plus2": 50, "dq_ic_plus1": 100}
AB_NEW = {"dq_ab_same": 20, "dq_ab_plus5": 21, "dq_ab_plus10": 22, "dq_ab_plus20": 24,
          "dq_ic_same": 20, "dq_ic_plus5": 21, "dq_ic_plus2": 51, "dq_ic_plus1": 101}
AB_WIDTHS = {"dq_ic_same": 64, "dq_ic_plus5": 64, "dq_ic_plus2": 64, "dq_ic_plus1": 64}
AB_EXTRA = {"dq_ab_plus5": 1.05, "dq_ab_plus10": 1.10, "dq_ab_plus20": 1.20}


def _plugin_repo(where: Path) -> Path:
    """A git repository with two commits of ``dq_ab.py``: 20 layers everywhere, then the extra layers."""
    repo = where / "dq_ab_repo"
    repo.mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.name=dq", "-c", "user.email=dq@localhost"]
    subprocess.run(git + ["init", "-q"], check=True)
    for layers, what in ((AB_BASE, "all 20 layers"), (AB_NEW, "extra layers in plus5/10/20")):
        (repo / "dq_ab.py").write_text(AB_PLUGIN.format(layers=layers, what=what, widths=AB_WIDTHS))
        subprocess.run(git + ["add", "dq_ab.py"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", what], check=True)
    return repo


def record_ab(n: int, out: Path, rounds: int | None = None, passes: int | None = None, threads: int | None = None,
              duet: bool = False, round_time: float | None = None, suite: Path = AB_SUITE,
              extra_args: tuple[str, ...] = (), arms: tuple[str, str] = ("HEAD~1", "HEAD")) -> None:
    """``n`` A/B runs of ``suite`` between the plugin repository's commits (``rounds`` per pass,
    ``passes`` and ``round_time``: instead of the suite's, rounds and passes raised to ab's minimum;
    ``threads`` per worker; ``duet``: ab --duet; ``extra_args``: more ``ab`` options, e.g. --count; ``arms``:
    the base and new revisions, ("HEAD~1", "HEAD~1") for an A/A run of every case)."""
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        repo = _plugin_repo(Path(tmp))
        for i in range(n):
            cmd = [sys.executable, "-m", "sciml_bench", "ab", "--base", arms[0], "--new", arms[1], "--repo", str(repo),
                   "--suite", str(Path(suite).resolve()), "--plugin", "dq_ab",
                   "--out", str(out), "--no-report", "--device", "cpu", "--json"] + (
                      ["--rounds", str(rounds)] if rounds else []) + (["--passes", str(passes)] if passes else []) + (
                      ["--threads", str(threads)] if threads else []) + (["--duet"] if duet else []) + (
                      ["--round-time", str(round_time)] if round_time else []) + list(extra_args)
            print(f"ab run {i + 1}/{n}", flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
            print(f"  {time.perf_counter() - t0:.0f} s", flush=True)  # exit 1: the extra ops are slower


def _round_deviations(new: dict, base: dict) -> list[tuple[float, int]]:
    """(|log ratio - its pass's median|, turns between the two arms) for the rounds of two A/B records
    that compare uses (``pass_rounds``); a round's time is the runner's per-round median."""
    a, b = new["metrics"]["step_time"]["samples"], base["metrics"]["step_time"]["samples"]
    pos = [{p["pass"]: p["position"] for p in r["timing"]["passes"]} for r in (new, base)]
    first = {p: new["metrics"]["step_time"]["pass"].index(p) for p in pos[0]}  # a pass's rounds are contiguous
    out = []
    for p, idx in pass_rounds(new, base).items():
        lr = np.log([a[i] / b[i] for i in idx])
        gaps = [abs(pos[0][p][i - first[p]] - pos[1][p][i - first[p]]) for i in idx]
        out += list(zip(np.abs(lr - np.median(lr)).tolist(), gaps))
    return out


def score_ab(run_dir: Path) -> dict:
    """compare_ab's verdicts over the recorded A/B runs: A/A false alarms and detection per extra op."""
    flags: dict[str, list[str]] = {}
    ratios: dict[str, list[float]] = {}
    widths: dict[str, list[float]] = {}
    noise: dict[str, list[tuple[float, float]]] = {}
    spread: dict[str, list[float]] = {}
    runs, protocols, seconds = 0, set(), []
    for f in run_files(run_dir):
        header, recs = read_run(f)
        if not header.get("ab") or not recs:
            continue
        runs += 1
        o = header["options"]
        protocols.add(f"{o['passes']} passes x {o['rounds']} rounds x {o['round_time']} s, "
                      f"{o.get('threads') or 'default'} thread(s){', duet' if o.get('duet') else ''}")
        starts = [p["started"] for r in recs for p in r["timing"]["passes"]]
        seconds.append(max(r["finished"] for r in recs) - min(starts))
        base = {r["case_id"]: r for r in recs if r["arm"] == "base" and r["status"] == "ok"}
        for r in recs:
            if r["arm"] == "new" and r["status"] == "ok" and r["case_id"] in base:
                pr = pass_ratio(*pass_pairs(r, base[r["case_id"]]))
                noise.setdefault(r["case_id"].split(",")[0], []).append((pr["pass_var"], pr["ci_within"]))
                for dev, gap in _round_deviations(r, base[r["case_id"]]):
                    spread.setdefault("all", []).append(dev)
                    spread.setdefault("back to back" if gap == 1 else "8+ turns apart" if gap >= 8 else "2-7 turns apart",
                                      []).append(dev)
        for row in compare_ab(f).rows:
            if row.metric != "step_time":
                continue
            model = row.case_id.split(",")[0]
            flags.setdefault(model, []).append(row.verdict)
            ratios.setdefault(model, []).append(row.ratio)
            if row.ci_low and row.ci_high:
                widths.setdefault(model, []).append(row.ci_high / row.ci_low)
    out = {"runs": runs, "protocol": sorted(protocols), "threshold": DEFAULT_AB_THRESHOLD, "alpha": DEFAULT_ALPHA,
           "timed_seconds_per_run": [round(x, 1) for x in seconds], "models": {},
           # robust sd (1.4826 x median absolute deviation) of a round's log ratio new/base about its pass's
           # median, over all cases, by how many turns apart the case's two arms ran in that round
           "round_log_ratio_sd": {k: {"sd": float(1.4826 * np.median(v)), "rounds": len(v)}
                                  for k, v in sorted(spread.items())}}
    for model, v in flags.items():
        out["models"][model] = {
            "n": len(v), "slower": float(np.mean([x == "slower" for x in v])),
            "faster": float(np.mean([x == "faster" for x in v])),
            "verdicts": {k: v.count(k) for k in sorted(set(v))},
            "ratio_median": float(np.median(ratios[model])), "ratio_min": float(np.min(ratios[model])),
            "ratio_max": float(np.max(ratios[model])),
            "ci_width_median": float(np.median(widths[model])) if widths.get(model) else None,
            # the noise the CI is made of: sd of a pass's log ratio (between passes), and the within-run
            # CI's half width in log terms (rounds of all passes as one window)
            "pass_sd_median": float(np.sqrt(np.median([v for v, _ in noise.get(model, []) if v is not None]))),
            "within_half_width_median": float(np.median([np.log(hi / lo) / 2 for _, (lo, hi) in noise.get(model, [])]))}
    return out


def ab_markdown(res: dict) -> str:
    spread = ", ".join(f"{k} {v['sd']:.3f} ({v['rounds']} rounds)" for k, v in res["round_log_ratio_sd"].items())
    lines = [f"{res['runs']} A/B runs ({', '.join(res['protocol'])}), threshold {res['threshold']:.0%}, "
             f"alpha {res['alpha']}", f"Robust sd of a round's log ratio: {spread}", "",
             "| model (new vs base) | comparisons | flagged slower | flagged faster | ratio median (range) | "
             "CI width hi/lo | sd between passes | within-run half width |", "|---|---:|---:|---:|---|---:|---:|---:|"]
    for model, m in res["models"].items():
        what = "A/A (same code)" if model == "dq_ab_same" else f"extra op ~{AB_EXTRA[model] - 1:.0%}"
        width = f"{m['ci_width_median']:.3f}" if m["ci_width_median"] else "-"
        lines.append(f"| {model}: {what} | {m['n']} | {m['slower']:.0%} | {m['faster']:.0%} | "
                     f"{m['ratio_median']:.3f} ({m['ratio_min']:.3f}-{m['ratio_max']:.3f}) | {width} | "
                     f"{m['pass_sd_median']:.3f} | {m['within_half_width_median']:.3f} |")
    return "\n".join(lines) + "\n"


POOLING_CAPS = (4, 8, 16, float("inf"))


def _identical_arms(header: dict) -> bool:
    """Both arms run the same code: the same interpreter, and no revision or the same one."""
    base, new = (header["ab"]["arms"][k] for k in ("base", "new"))
    return base.get("python") == new.get("python") and base.get("revision") == new.get("revision")


def score_pooling(run_dirs: list[Path]) -> dict:
    """What-if for A/B's pooled pass variance: the same recorded runs scored by ``compare_ab`` with
    ``stats.PRIOR_DF_MAX`` (the most degrees of freedom the run's pooled variance lends a case) at
    each of ``POOLING_CAPS``. A/A comparisons are ``dq_ab_same`` cases, or every case of a run whose
    arms are identical; per directory: how many of their p-values fall below 0.01 / 0.05, their
    verdicts, and how many ``dq_ab_plus5`` comparisons were flagged slower."""
    from unittest import mock

    from sciml_bench import stats

    out: dict = {}
    for d in run_dirs:
        for cap in POOLING_CAPS:
            with mock.patch.object(stats, "PRIOR_DF_MAX", cap):
                aa, plus5 = [], []
                for f in run_files(d):
                    header, recs = read_run(f)
                    if not header.get("ab") or not recs:  # an unfinished run has passes, no records
                        continue
                    for row in compare_ab(f).rows:
                        if row.metric != "step_time":
                            continue
                        if _identical_arms(header) or row.case_id.startswith("dq_ab_same"):
                            aa.append(row)
                        elif row.case_id.startswith("dq_ab_plus5"):
                            plus5.append(row.verdict)
            ps = [r.p_value for r in aa if r.p_value is not None]
            out.setdefault(d.name, {})[str(cap)] = {
                "aa_n": len(aa), "aa_p_below_0.01": sum(p < 0.01 for p in ps), "aa_p_below_0.05": sum(p < 0.05 for p in ps),
                "aa_verdicts": {v: [r.verdict for r in aa].count(v) for v in sorted({r.verdict for r in aa})},
                "aa_flagged": [f"{r.case_id}: {r.ratio:.3f} ({r.verdict})" for r in aa if r.verdict in ("slower", "faster")],
                "plus5_n": len(plus5), "plus5_slower": plus5.count("slower")}
    return out


def pooling_markdown(res: dict) -> str:
    lines = ["| runs | pooled df cap | A/A n | A/A p<0.01 | A/A p<0.05 | A/A flagged | 5 % op flagged slower |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for d, caps in res.items():
        for cap, m in caps.items():
            five = f"{m['plus5_slower']}/{m['plus5_n']}" if m["plus5_n"] else "-"
            lines.append(f"| {d} | {cap} | {m['aa_n']} | {m['aa_p_below_0.01']} | {m['aa_p_below_0.05']} | "
                         f"{'; '.join(m['aa_flagged']) or 'none'} | {five} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--runs", type=int, default=6)
    r.add_argument("--out", type=Path, default=ROOT / "results" / "detection")
    s = sub.add_parser("score")
    s.add_argument("dir", type=Path, nargs="+", help="run directories or files (scored together)")
    s.add_argument("--json", type=Path)
    ra = sub.add_parser("record-ab")
    ra.add_argument("--runs", type=int, default=4)
    ra.add_argument("--out", type=Path, default=ROOT / "results" / "detection" / "ab")
    ra.add_argument("--rounds", type=int, help="rounds per pass (default: the suite's, 4, raised to ab's 12)")
    ra.add_argument("--passes", type=int, help="passes (default: the suite's, 2)")
    ra.add_argument("--threads", type=int, help="torch threads per worker (default: torch's)")
    ra.add_argument("--duet", action="store_true", help="ab --duet: the arms' blocks at the same time")
    ra.add_argument("--round-time", type=float, help="seconds per timed block (default: the suite's, 0.1)")
    ra.add_argument("--suite", type=Path, default=AB_SUITE,
                    help="the A/B suite (default evidence/ab_detection_suite.toml; "
                         "evidence/ab_rounds_suite.toml: 10 A/A and 10 5 %% cases, for protocol comparisons)")
    sa = sub.add_parser("score-ab")
    sa.add_argument("dir", type=Path)
    sa.add_argument("--json", type=Path)
    sp = sub.add_parser("pooling", help="A/B runs rescored with more or less weight on the pooled pass variance")
    sp.add_argument("dir", type=Path, nargs="+")
    sp.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pooling":
        res = score_pooling(args.dir)
        if args.json:
            args.json.write_text(json.dumps(res, indent=1))
        print(pooling_markdown(res))
        return 0
    if args.cmd == "record":
        record(args.runs, args.out)
        return 0
    if args.cmd == "record-ab":
        record_ab(args.runs, args.out, args.rounds, args.passes, args.threads, args.duet, args.round_time,
                  args.suite)
        return 0
    res = score(args.dir) if args.cmd == "score" else score_ab(args.dir)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    print(to_markdown(res) if args.cmd == "score" else ab_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
