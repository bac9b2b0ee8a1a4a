"""Regenerate every findings table and quoted figure in the docs from the committed evidence files.

A page marks each generated part with a pair of comments::

    <!-- findings:NAME -->
    ... written by this script, never by hand ...
    <!-- /findings -->

and ``BLOCKS[NAME]`` writes it from the files it names (each table says which). This script also rewrites
``docs/statistics.md`` (``statistics_page.py``), so one command regenerates everything the docs publish.
From the repository root::

    python evidence/findings.py            # rewrite README.md and docs/*.md in place
    python evidence/findings.py --check    # exit 1 naming the stale pages (the tests run this)
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence import statistics_page  # noqa: E402
from evidence.rerun_coverage import run_span  # noqa: E402
from sciml_bench.report import collect  # noqa: E402
from sciml_bench.report.words import at_least, ratio_words  # noqa: E402
from sciml_bench.results import read_run  # noqa: E402

REFERENCE = ROOT / "results" / "reference"
QUICK = REFERENCE / "cpu-2core-quick-4x2.jsonl.gz"  # evidence/quick_budget.py --suite quick
TRAIN = REFERENCE / "cpu-2core-train-quiet.jsonl.gz"
DDP = REFERENCE / "cpu-2core-ddp.jsonl.gz"
DETECTION = ROOT / "results" / "detection"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- findings:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /findings -->)", re.S)


def rel(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _ci(lo: float | None, hi: float | None, fmt: str = ".2f") -> str:
    return f" [{lo:{fmt}}, {hi:{fmt}}]" if lo is not None and hi is not None else ""


@functools.lru_cache(maxsize=4)
def report_of(run: Path):
    """The report's content for one run (read once per process: several blocks draw on the same run)."""
    return collect([run])[0]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def terminal_summary(run: Path = QUICK) -> str:
    """What ``sciml-bench run`` prints at its end, for the committed quick run."""
    from sciml_bench.display import verdict_summary

    return ("```\n" + "\n".join(verdict_summary(run)) + "\n```\n"
            f"*(the committed quick run, `{rel(run)}`)*\n")


def claims(run: Path) -> str:
    """The report's claims table for one committed run: every claim its cases test, with verdict and evidence."""
    rep = report_of(run)
    rows = [c for c in rep.claims if c.evidence]
    out = [f"*From `{rel(run)}` (run `{rep.runs[0].get('run_id')}`), checked by `sciml_bench/report/claims.py`.*",
           "", "| claim | verdict | evidence (95 % CIs) |", "|---|---|---|"]
    out += [f"| {_cell(c.claim)} | {c.verdict} | {_cell(c.summary())} |" for c in rows]
    return "\n".join(out) + "\n"


def studies(run: Path = QUICK, only: Callable[[str], bool] = lambda name: True) -> str:
    """Every variant's time ratio (rerun interval) and memory ratio against its study's reference."""
    rep = report_of(run)
    h = rep.runs[0]
    opts = h.get("options") or {}
    out = [f"*From `{rel(run)}` (run `{h.get('run_id')}`, {opts.get('passes', 1)} passes x {opts.get('rounds')} "
           f"rounds x {opts.get('round_time')} s, {h['environment'].get('cpu_model')}, "
           f"{h['environment'].get('cpu_cores_logical')} cores, torch {h['environment'].get('torch')}).*", "",
           "| study | resolves | case (vs reference) | time | memory |", "|---|---|---|---|---|"]
    for sec in rep.sections:
        if not only(sec.name):
            continue
        ref = ", ".join(f"{k}={v}" for k, v in sec.reference.items())
        for r in sec.rows:
            if r.get("ratio") is None or r.get("is_reference"):
                continue
            mem = ratio_words(r["mem_ratio"], kind="memory", ci=False) if r.get("mem_ratio") else "-"
            out.append(f"| {sec.name} | {at_least(sec.resolves)} | {_cell(r['label'])} (vs {_cell(ref)}) | "
                       f"{_cell(ratio_words(r['ratio'], r.get('ratio_lo'), r.get('ratio_hi')))} | {mem} |")
    return "\n".join(out) + "\n"


def ddp(run: Path = DDP) -> str:
    h, recs = read_run(run)
    opts = h.get("options") or {}
    out = [f"*From `{rel(run)}` (run `{h.get('run_id')}`, {opts.get('rounds')} rounds x {opts.get('round_time')} s, "
           "gloo, 1 thread per rank).*", "",
           "| study | ranks | step time, median [95 % CI] | throughput (global) | efficiency vs 1 rank [95 % CI] "
           "| all-reduce share | rank spread |", "|---|---:|---|---:|---|---:|---:|"]
    for r in recs:
        m, c = r["metrics"], r["case"]
        if r["status"] != "ok":
            out.append(f"| {r['study']} | {c.get('ddp_ranks')} | {r['status']}: {_cell(r.get('reason') or '')} "
                       "| | | | |")
            continue
        st, eff = m["step_time"], m.get("scaling_efficiency", {})
        ranks = c.get("ddp_ranks", 1)
        vs1 = "reference" if ranks == 1 else f"{eff['value']:.2f}" + _ci(eff.get("ci_low"), eff.get("ci_high"))
        out.append(f"| {r['study']} | {ranks} | {st['value'] * 1e3:.2f} ms{_ci(st['ci_low'] * 1e3, st['ci_high'] * 1e3)} "
                   f"| {m['throughput']['value']:,.0f}/s | {vs1} "
                   f"| {m['comm_share']['value']:.2f} | {m['rank_spread']['value']:.1%} |")
    return "\n".join(out) + "\n"


def _timing(stem: str) -> dict:
    return json.loads((REFERENCE / f"{stem}.json").read_text(encoding="utf-8"))


def _mmss(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s} s"


def suites() -> str:
    """Each suite's size and wall time on the reference machine, from its committed run and timing file."""
    out = ["| suite | protocol | cases | wall time (2-core CPU, quiet) | file |", "|---|---|---|---|---|"]
    for suite, stem in (("smoke", "cpu-2core-smoke"), ("quick", "cpu-2core-quick-4x2"), ("ddp", "cpu-2core-ddp")):
        t = _timing(stem)
        counts = ", ".join(f"{n} {s}" for s, n in t["cases"].items())
        out.append(f"| `{suite}` | {t['protocol']} | {sum(t['cases'].values())} ({counts}) | "
                   f"{_mmss(t['wall_s'])} end to end with the report | `{rel(REFERENCE / (stem + '.json'))}` |")
    h, recs = read_run(TRAIN)
    opts = h.get("options") or {}
    counts = Counter(r["status"] for r in recs)
    out.append(f"| `train` | {opts.get('passes', 1)} passes x {opts.get('rounds')} rounds x {opts.get('round_time')} s, "
               f"then {opts.get('seeds') or 3} seeds of fixed-budget training | {len(recs)} "
               f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}) | {_mmss(run_span(h, recs))} "
               f"first case to last record (no report) | `{rel(TRAIN)}` |")
    return "\n".join(out) + "\n"


def _score(name: str) -> dict:
    return json.loads((DETECTION / name).read_text(encoding="utf-8"))


def _rate(r: dict | None) -> str:
    return f"{r['rate']:.0%} (n={r['n']})" if r else ""


def detection_compare() -> str:
    """``compare`` of separate runs: false alarms and detections, quiet and across a load change."""
    quiet, hog = _score("runs/score.json"), _score("runs-hog/score-with-3-quiet-runs.json")
    cols = [(quiet, "sciml-bench (rounds)", "quiet, raw rounds"), (quiet, "sciml-bench (anchored)", "quiet, anchored"),
            (hog, "sciml-bench (rounds)", "load changed, raw rounds"),
            (hog, "sciml-bench (anchored)", "load changed, anchored")]
    out = ["*From `results/detection/runs/score.json` (6 quiet runs) and "
           "`results/detection/runs-hog/score-with-3-quiet-runs.json` (3 of them against 3 beside a busy loop); "
           "written by `evidence/detection_quality.py`. Rate: share of comparisons whose verdict is \"slower\".*", "",
           "| scenario | " + " | ".join(c[2] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for scenario in quiet["rates"]:
        out.append(f"| {scenario} | " + " | ".join(_rate(s["rates"].get(scenario, {}).get(k)) for s, k, _ in cols) + " |")
    return "\n".join(out) + "\n"


AB_RUNS = ["ab", "ab-12rounds", "ab-fork-2x12", "ab-4x12", "ab-t1-plain", "ab-t1-duet", "ab-rounds-12x0.3",
           "ab-rounds-36x0.1", "ab-rounds-72x0.1", "ab-shuffled-36x0.1", "ab-pairs-36x0.1", "ab-pairs-72x0.1",
           "ab-pairs-6x24", "ab-12rounds-hog"]
AB_MODELS = [("dq_ab_same", "A/A"), ("dq_ab_plus5", "~5 %"), ("dq_ab_plus10", "~10 %"), ("dq_ab_plus20", "~20 %")]


def detection_ab() -> str:
    """Every committed ``ab`` protocol run: what it flagged, its interval width, its wall time."""
    out = ["*From `results/detection/<directory>/score.json`, written by `evidence/detection_quality.py score-ab`. "
           "Flagged: share of cases whose verdict is \"slower\" (for A/A a false alarm). Width: the median CI of the "
           "A/A cases as ×/÷. Round sd: robust sd of a round's log ratio, arms back to back / 8+ turns apart.*", "",
           "| directory | protocol | runs, timed s each | " + " | ".join(f"{label} flagged" for _, label in AB_MODELS)
           + " | A/A width | round sd |", "|---|---|---|" + "---:|" * (len(AB_MODELS) + 2)]
    for name in AB_RUNS:
        s = _score(f"{name}/score.json")
        models = s["models"]
        cells = [f"{models[m]['slower']:.0%} (n={models[m]['n']})" if m in models else "" for m, _ in AB_MODELS]
        width = models.get("dq_ab_same", {}).get("ci_width_median")
        sd = s.get("round_log_ratio_sd") or {}
        sds = " / ".join(f"{sd[k]['sd']:.3f}" for k in ("back to back", "8+ turns apart") if k in sd)
        timed = ", ".join(f"{t:.0f}" for t in s.get("timed_seconds_per_run") or [])
        unreliable = sum(m.get("verdicts", {}).get("unreliable", 0) for m in models.values())
        note = f" ({unreliable} of {sum(m['n'] for m in models.values())} cases unreliable)" if unreliable else ""
        out.append(f"| `{name}`{note} | {'; '.join(s['protocol'])} | {s['runs']}{', ' + timed if timed else ''} | "
                   + " | ".join(cells) + f" | {f'×/÷{width:.3f}' if width else ''} | {sds} |")
    return "\n".join(out) + "\n"


def detection_instructions() -> str:
    """``ab --count instructions`` on the detection suite, as ``evidence/instruction_quality.py score`` wrote it."""
    from evidence.instruction_quality import to_markdown

    res = json.loads((DETECTION / "instructions" / "score.json").read_text(encoding="utf-8"))
    dirs = ", ".join(f"`{d}/`" for d in res["conditions"])
    return ("*From `results/detection/instructions/score.json` (scored by `evidence/instruction_quality.py score` from "
            f"the run files in `results/detection/` {dirs}).*\n\n" + to_markdown(res).rstrip() + "\n")


def _options(command: str) -> str:
    """The options a recommend command line was given besides its model, budget, --out and --no-report."""
    words = command.split()
    words = words[words.index("recommend") + 2:]
    keep, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w in ("--out", "--budget"):
            skip = True
        elif w != "--no-report":
            keep.append(f"`{w}`")
    return f" ({' '.join(keep)})" if keep else ""


def recommend_grid() -> str:
    """recommend's pick against the exhaustive grid of its space, per model (``evidence/recommend_grid.py``)."""
    out = ["*From `results/recommend/<model>/comparison.json`, written by `evidence/recommend_grid.py` (its run files "
           "beside it). Speed-up: throughput over the baseline in the grid run, with its rerun interval; eligible: "
           "under the memory limit with numerics that passed the accuracy check.*", "",
           "| model (recommend's options) | recommend's pick | its speed-up in the grid | grid's best eligible | its speed-up | pick within "
           "its CI | grid configurations | recommend wall | grid wall (+ accuracy checks) |",
           "|---|---|---:|---|---:|---|---:|---:|---:|"]
    for path in sorted((ROOT / "results" / "recommend").glob("*/comparison.json")):
        c = json.loads(path.read_text(encoding="utf-8"))
        pick, best = c["pick_in_grid"] or {}, c["grid_best_row"] or {}

        def sp(row: dict) -> str:
            return f"{row['speedup']:.2f}x{_ci(row.get('ci_low'), row.get('ci_high'))}" if row else "not in the grid"

        def cfg(cid: str | None) -> str:
            return f"`{cid}`" if cid else "none"

        within = {True: "yes", False: "no", None: "undecided"}[c["pick_within_best_ci"]]
        rows = c["rows"].values()
        n = Counter("eligible" if r["eligible"] else "rejected" if r["accuracy"].startswith("rejected") else
                    "over the limit" if r["memory"] is not None and r["memory"] > c["memory_limit"] else
                    "slower than the best, not checked" for r in rows)
        kinds = ", ".join(f"{n[k]} {k}" for k in ("eligible", "rejected", "over the limit",
                                                   "slower than the best, not checked") if n[k])
        out.append(f"| {c['model']}{_options(c['command'])} | {cfg(c['pick'])} | {sp(pick)} | {cfg(c['grid_best'])} | {sp(best)} | {within} | "
                   f"{c['grid_configurations']}: {kinds} | {_mmss(c['recommend_command_wall_s'])} "
                   f"(budget {_mmss(c['recommend_budget_s'])}) | {_mmss(c['grid_wall_s'])} "
                   f"(+ {_mmss(c.get('grid_accuracy_wall_s') or 0)}) |")
    return "\n".join(out) + "\n"


def recommend_grid_earlier() -> str:
    """Earlier searches of the same grids, kept as ``comparison-search-before-<commit>.json``: what each fix changed."""
    out = ["*From `results/recommend/<model>/comparison-search-before-<commit>.json`: the comparison of a search made "
           "before that commit with the same grid (its run file beside it).*", "",
           "| model | search before | its pick | its speed-up in the grid | within the grid's best CI | recommend wall |",
           "|---|---|---|---:|---|---:|"]
    earlier = [(json.loads(p.read_text(encoding="utf-8")), p)
               for p in (ROOT / "results" / "recommend").glob("*/comparison-search-before-*.json")]
    for c, path in sorted(earlier, key=lambda x: (x[0]["model"], x[0]["recommend_run"])):  # oldest search first
        pick = c["pick_in_grid"] or {}
        within = {True: "yes", False: "no", None: "undecided"}[c["pick_within_best_ci"]]
        speed = f"{pick['speedup']:.2f}x{_ci(pick.get('ci_low'), pick.get('ci_high'))}" if pick else "not in the grid"
        pick_cfg = f"`{c['pick']}`" if c["pick"] else "none"
        out.append(f"| {c['model']} | {path.stem.removeprefix('comparison-search-before-')} | "
                   f"{pick_cfg} | {speed} | {within} | "
                   f"{_mmss(c['recommend_command_wall_s'])} |")
    return "\n".join(out) + "\n"


BLOCKS: dict[str, Callable[[], str]] = {
    "terminal-summary": terminal_summary,
    "suites": suites,
    "claims-quick": lambda: claims(QUICK),
    "studies-quick": lambda: studies(QUICK, lambda n: not n.startswith("zoo-parity")),
    "zoo-parity": lambda: studies(QUICK, lambda n: n.startswith("zoo-parity")),
    "claims-train": lambda: claims(TRAIN),
    "ddp": ddp,
    "detection-compare": detection_compare,
    "detection-ab": detection_ab,
    "detection-instructions": detection_instructions,
    "recommend-grid": recommend_grid,
    "recommend-grid-earlier": recommend_grid_earlier,
}


def render(text: str, blocks: dict[str, Callable[[], str]] | None = None) -> str:
    """``text`` with every marked block rewritten; an unknown block name is an error, not left as it was."""
    blocks = BLOCKS if blocks is None else blocks
    cache: dict[str, str] = {}

    def fill(m: re.Match) -> str:
        name = m["name"]
        if name not in blocks:
            raise KeyError(f"unknown findings block {name!r}; known: {', '.join(blocks)}")
        if name not in cache:
            cache[name] = blocks[name]()
        return m.group(1) + cache[name] + m.group(4)

    return BLOCK.sub(fill, text)


def stale() -> list[Path]:
    """The pages whose text differs from what the committed files give."""
    out = [p for p in PAGES if p.read_text(encoding="utf-8") != render(p.read_text(encoding="utf-8"))]
    if statistics_page.PAGE.read_text(encoding="utf-8") != statistics_page.render():
        out.append(statistics_page.PAGE)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a page differs from its regenerated text")
    args = p.parse_args(argv)
    if args.check:
        bad = stale()
        for path in bad:
            print(f"stale: {rel(path)} (run python evidence/findings.py)")
        return 1 if bad else 0
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote {rel(page)}")
    statistics_page.PAGE.write_text(statistics_page.render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
