"""Is recommend's pick as good as the exhaustive grid's best, and how much cheaper is the search?

For one model, from the repository root, on a quiet machine::

    python evidence/recommend_grid.py --model unet_small --budget 10m

1. ``sciml-bench recommend MODEL --budget ...`` (the real command, timed as a whole);
2. the exhaustive grid over the same space (the values recommend searched, batch sizes included, read
   from its run file) as one run through the runner: studies of at most ``--max-live`` cases, each with
   the baseline, ``--passes`` passes, so every candidate's throughput against the baseline has the
   runner's rerun interval;
3. ``results/recommend/<model>/``: both run files gzipped (``gzip -9n``: ``show``, ``report``,
   ``compare`` and ``load_results`` read them as they are) and ``comparison.json``: the grid's best
   candidate among those under the memory limit and not rejected by recommend's accuracy check, the
   pick's throughput in the grid, whether it lies within the best one's CI, and both wall times.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sciml_bench.cases import Case, Study, Suite  # noqa: E402
from sciml_bench.recommend.answer import memory_of, speedup  # noqa: E402
from sciml_bench.recommend.search import split  # noqa: E402
from sciml_bench.results import read_run  # noqa: E402


def grid(rec_path: Path, out: Path, passes: int, rounds: int, round_time: float, max_live: int) -> Path:
    """Every combination of the values recommend searched, timed as one run; returns its run file."""
    from sciml_bench.runner import RunSpec, execute, open_run

    header, _ = read_run(rec_path)
    info = header["recommend"]
    base = Case(**info["baseline"])
    values = info["space"]["values"]
    cases = [base] + [c for c in (base.replace(**dict(zip(values, vs))) for vs in itertools.product(*values.values()))
                      if c != base]
    ref = {k: getattr(base, k) for k in values}
    plan = split(cases, max_live, lambda n: Study(n, "Every configuration of the space against the baseline",
                                                 {}, values, ref, ("time", "memory")), "grid")
    spec = RunSpec(suite="recommend-grid", models=[base.model], device=base.device)
    run = open_run(Suite("recommend-grid", "exhaustive grid of a recommend space", (), rounds, round_time, 600.0),
                   plan, spec, out, passes=passes, max_live=max_live, label=f"recommend-grid-{base.model}",
                   extra={"recommend_grid": {"of": header["run_id"], "values": values, "cases": len(cases)}})
    print(f"grid: {len(cases)} configurations in {len(plan)} studies, {passes} passes x {rounds} rounds", flush=True)
    execute(run, lambda desc, n: None)
    return run.path


def compare(rec_path: Path, grid_path: Path) -> dict:
    """The pick against the grid's best eligible configuration (throughput over the baseline, with CI)."""
    header, _ = read_run(rec_path)
    info = header["recommend"]
    base_bs, limit = info["baseline"]["batch_size"], info["space"]["memory_limit"]
    rejected = {k for k, v in info["accuracy"].items() if not v["accepted"] and not v.get("unchecked")}
    accepted = {k for k, v in info["accuracy"].items() if v["accepted"]}
    numerics = ("precision", "compile", "batch_size") if info["request"]["mode"] == "train" else ("precision", "compile")
    base_sig = str(tuple(info["baseline"][k] for k in numerics))
    rows = {}
    for r in read_run(grid_path)[1]:
        s = speedup(r, base_bs)
        if s is None or r["case_id"] in rows and rows[r["case_id"]]["speedup"] is not None:
            continue
        sig = str(tuple(r["case"][k] for k in numerics))
        mem = memory_of(r)
        rows[r["case_id"]] = dict(speedup=s["value"], ci_low=s["ci_low"], ci_high=s["ci_high"], memory=mem,
                                  eligible=(mem is None or mem <= limit) and sig not in rejected, signature=sig,
                                  accuracy="baseline's numerics" if sig == base_sig else "accepted" if sig in accepted
                                  else "rejected" if sig in rejected else "not checked by recommend")
    eligible = {k: v for k, v in rows.items() if v["eligible"]}
    best_id = max(eligible, key=lambda k: eligible[k]["speedup"]) if eligible else None
    pick_id = info["chosen"] or info["baseline_id"]
    best, pick = eligible.get(best_id), rows.get(pick_id) or ({"speedup": 1.0} if pick_id == info["baseline_id"] else None)
    within = None if best is None or pick is None or best["ci_low"] is None else pick["speedup"] >= best["ci_low"]
    return {"model": info["request"]["model"], "recommend_run": rec_path.name, "grid_run": grid_path.name,
            "pick": pick_id, "pick_in_grid": pick, "grid_best": best_id, "grid_best_row": best,
            "pick_within_best_ci": within, "grid_configurations": len(rows), "grid_eligible": len(eligible),
            "rule": "eligible: measured peak <= the memory limit and numerics not rejected by recommend's accuracy "
                    "check (a row's 'accuracy' says whether it was checked at all); within: the pick's grid "
                    "throughput >= the best one's CI low bound",
            "recommend_wall_s": info["wall_s"], "recommend_budget_s": info["budget_s"]}


def keep(path: Path, dest: Path) -> Path:
    """``path`` gzipped into ``dest`` as ``gzip -9n`` would (no name, mtime 0)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / (path.name + ".gz")
    with open(path, "rb") as src, open(out, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as gz:
        shutil.copyfileobj(src, gz)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--budget", default="10m", help="recommend's --budget (default: 10m)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="baseline fields, as recommend's")
    p.add_argument("--recommend-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed to recommend (repeatable), e.g. --recommend-arg=--seeds=2")
    p.add_argument("--passes", type=int, default=3, help="grid passes (default: 3)")
    p.add_argument("--rounds", type=int, default=6, help="grid rounds per pass (default: 6)")
    p.add_argument("--round-time", type=float, default=0.2, help="grid seconds per round (default: 0.2)")
    p.add_argument("--max-live", type=int, default=8, help="grid cases per study, the baseline included (default: 8)")
    p.add_argument("--dest", type=Path, help="where to keep the evidence (default: results/recommend/<model>)")
    args = p.parse_args(argv)
    dest = args.dest or ROOT / "results" / "recommend" / args.model
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "results"
        cmd = [sys.executable, "-m", "sciml_bench", "recommend", args.model, "--budget", args.budget, "--out", str(res),
               "--no-report", *[f"--set={s}" for s in args.set], *args.recommend_arg]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT)
        rec_wall = time.monotonic() - t0
        if proc.returncode != 0:
            return proc.returncode
        rec_path = next(res.glob("*recommend-*.jsonl"))
        t0 = time.monotonic()
        grid_path = grid(rec_path, res, args.passes, args.rounds, args.round_time, args.max_live)
        grid_wall = time.monotonic() - t0
        result = dict(compare(rec_path, grid_path), recommend_command_wall_s=round(rec_wall, 1),
                      grid_wall_s=round(grid_wall, 1), command=" ".join(cmd[1:]),
                      grid_protocol={"passes": args.passes, "rounds": args.rounds, "round_time": args.round_time})
        kept = [keep(rec_path, dest), keep(grid_path, dest)]
    (dest / "comparison.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("pick", "grid_best", "pick_within_best_ci", "recommend_command_wall_s",
                                              "grid_wall_s")}, indent=1))
    print("kept:", *[str(k.relative_to(ROOT)) if k.is_relative_to(ROOT) else str(k) for k in kept],
          str(dest / "comparison.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
