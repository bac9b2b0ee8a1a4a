"""Is recommend's pick as good as the exhaustive grid's best, and how much cheaper is the search?

For one model, from the repository root, on a quiet machine::

    python evidence/recommend_grid.py --model unet_small --budget 10m

1. ``sciml-bench recommend MODEL --budget ...`` (the real command, timed as a whole);
2. the exhaustive grid over the same space (the values recommend searched, batch sizes included, read
   from its run file) as one run through the runner: studies of at most ``--max-live`` cases, each with
   the baseline, ``--passes`` passes, so every candidate's throughput against the baseline has the
   runner's rerun interval;
3. the accuracy check for the grid's fastest configurations whose numerics (precision, compile, batch
   size) recommend never checked: recommend's own check (``search.fit_case``, ``answer.accuracy_verdict``),
   a few numerics at a time, until the fastest configuration under the memory limit has a verdict;
4. ``results/recommend/<model>/``: the run files gzipped (``gzip -9n``: ``show``, ``report``, ``compare``
   and ``load_results`` read them as they are) and ``comparison.json``: every grid configuration with its
   throughput, memory and accuracy verdict, the grid's best eligible one (under the memory limit, numerics
   accepted), the pick's throughput in the grid, whether it lies within the best one's CI, and the wall
   times.

``--settle-only`` redoes steps 3-4 from the run files already kept in ``results/recommend/<model>/``;
``--reuse-grid`` runs recommend again (after a change to the search) and compares its pick with the grid
already kept there, which must cover the same space.
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
from sciml_bench.recommend.answer import accuracy_verdict, memory_of, speedup  # noqa: E402
from sciml_bench.recommend.search import fit_case, split  # noqa: E402
from sciml_bench.recommend.space import NUMERIC_KNOBS, Request  # noqa: E402
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


def grid_rows(rec_path: Path, grid_path: Path) -> dict[str, dict]:
    """Every grid configuration's throughput over the baseline (with CI), memory, numerics signature and
    what recommend's accuracy check said of those numerics."""
    header, _ = read_run(rec_path)
    info = header["recommend"]
    base_bs = info["baseline"]["batch_size"]
    numerics = NUMERIC_KNOBS[info["request"]["mode"]]
    base_sig = str(tuple(info["baseline"][k] for k in numerics))
    rows: dict[str, dict] = {}
    for r in read_run(grid_path)[1]:
        s = speedup(r, base_bs)
        if s is None or r["case_id"] in rows and rows[r["case_id"]]["speedup"] is not None:
            continue
        sig = str(tuple(r["case"][k] for k in numerics))
        verdict = info["accuracy"].get(sig)
        rows[r["case_id"]] = dict(speedup=s["value"], ci_low=s["ci_low"], ci_high=s["ci_high"], memory=memory_of(r),
                                  signature=sig, case=r["case"], accuracy="baseline's numerics" if sig == base_sig else
                                  "not checked" if verdict is None or verdict.get("unchecked") else
                                  "accepted by recommend" if verdict["accepted"] else "rejected by recommend")
    return rows


def settle(rec_path: Path, rows: dict[str, dict], out: Path, max_live: int) -> list[Path]:
    """Give the fastest grid configurations whose numerics recommend never checked the same accuracy check
    (``search.fit_case`` judged by ``answer.accuracy_verdict``, the baseline's fit in the same study), a few
    at a time, until the fastest configuration under the memory limit has a verdict. Returns the runs."""
    from sciml_bench.runner import RunSpec, execute, open_run

    header, _ = read_run(rec_path)
    info = header["recommend"]
    req = Request(**dict(info["request"], knobs=tuple(info["request"]["knobs"]),
                         plugins=tuple(info["request"]["plugins"])))
    base = Case(**info["baseline"])
    limit = info["space"]["memory_limit"]
    runs: list[Path] = []
    while True:
        ranked = sorted((v for v in rows.values() if v["memory"] is None or v["memory"] <= limit),
                        key=lambda v: -v["speedup"])
        todo: dict[str, Case] = {}
        for v in ranked:
            if v["accuracy"] in ("baseline's numerics", "accepted by recommend", "accepted by the grid's check"):
                break
            if v["accuracy"] == "not checked" and len(todo) < max(max_live - 1, 1):
                todo.setdefault(v["signature"], fit_case(req, base, Case(**v["case"])))
        if not todo:
            return runs
        fits = [fit_case(req, base, base)] + list(todo.values())
        study = Study(f"grid-accuracy-{len(runs) + 1}", "Does each of the grid's fastest numerics reach the "
                      "baseline's final validation loss?", {}, {"steps": sorted({f.steps for f in fits})},
                      {"steps": fits[0].steps}, ("time",))
        spec = RunSpec(suite="recommend-grid-accuracy", models=[base.model], device=base.device)
        run = open_run(Suite("recommend-grid-accuracy", "accuracy checks of grid configurations", (), 1, 0.02, 600.0),
                       [(study, fits)], spec, out, passes=1, max_live=max_live,
                       label=f"recommend-grid-accuracy-{base.model}", extra={"recommend_grid_accuracy": {
                           "of": header["run_id"], "signatures": list(todo)}})
        print(f"accuracy check of {len(todo)} numerics the grid ranks first: {', '.join(todo)}", flush=True)
        execute(run, lambda desc, n: None)
        runs.append(run.path)
        by_id = {r["case_id"]: r for r in read_run(run.path)[1]}
        base_fit = by_id[fits[0].case_id]
        for sig, f in todo.items():
            v = accuracy_verdict(by_id[f.case_id], base_fit, req.tolerance)
            for row in rows.values():
                if row["signature"] == sig:
                    row.update(accuracy="accepted by the grid's check" if v["accepted"] else "rejected by the grid's check",
                               accuracy_reason=v["reason"])


def compare(rec_path: Path, rows: dict[str, dict]) -> dict:
    """The pick against the grid's best eligible configuration (throughput over the baseline, with CI)."""
    header, _ = read_run(rec_path)
    info = header["recommend"]
    limit = info["space"]["memory_limit"]
    for v in rows.values():
        v["eligible"] = (v["memory"] is None or v["memory"] <= limit) and v["accuracy"] in (
            "baseline's numerics", "accepted by recommend", "accepted by the grid's check")
    eligible = {k: v for k, v in rows.items() if v["eligible"]}
    best_id = max(eligible, key=lambda k: eligible[k]["speedup"]) if eligible else None
    pick_id = info["chosen"] or info["baseline_id"]
    best, pick = eligible.get(best_id), rows.get(pick_id)
    within = None if best is None or pick is None or best["ci_low"] is None else pick["speedup"] >= best["ci_low"]
    slim = {k: {f: v[f] for f in v if f != "case"} for k, v in rows.items()}
    return {"model": info["request"]["model"], "recommend_run": rec_path.name,
            "pick": pick_id, "pick_in_grid": slim.get(pick_id), "grid_best": best_id, "grid_best_row": slim.get(best_id),
            "pick_within_best_ci": within, "grid_configurations": len(rows), "grid_eligible": len(eligible),
            "rule": "eligible: measured peak <= the memory limit and numerics (precision, compile, batch size) that "
                    "passed the accuracy check: recommend's own, or for numerics recommend never checked the same "
                    "check run here on the grid's fastest configurations until the fastest one has a verdict; "
                    "within: the pick's grid throughput >= the best one's CI low bound",
            "memory_limit": limit, "recommend_wall_s": info["wall_s"], "recommend_budget_s": info["budget_s"],
            "rows": slim}


def settle_only(dest: Path, max_live: int) -> int:
    """Steps 3-4 again from the recommend and grid runs kept in ``dest`` (wall times of the earlier run kept)."""
    before = json.loads((dest / "comparison.json").read_text())
    rec_path, grid_path = dest / (before["recommend_run"] + ".gz"), dest / (before["grid_run"] + ".gz")
    rows = grid_rows(rec_path, grid_path)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        checks = settle(rec_path, rows, Path(tmp), max_live)
        check_wall = time.monotonic() - t0
        kept = [keep(c, dest) for c in checks]
    keys = ("recommend_command_wall_s", "grid_wall_s", "command", "grid_protocol")
    result = dict(compare(rec_path, rows), recommend_run=before["recommend_run"], grid_run=before["grid_run"],
                  grid_accuracy_runs=[c.name for c in checks], grid_accuracy_wall_s=round(check_wall, 1),
                  **{k: before[k] for k in keys})
    (dest / "comparison.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("pick", "grid_best", "pick_within_best_ci")}, indent=1), *kept)
    return 0


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
    p.add_argument("--reuse-grid", action="store_true",
                   help="run recommend, but compare it with the grid already kept in --dest (the same space)")
    p.add_argument("--settle-only", action="store_true",
                   help="only the accuracy checks and comparison.json, from the run files kept in --dest")
    args = p.parse_args(argv)
    dest = args.dest or ROOT / "results" / "recommend" / args.model
    if args.settle_only:
        return settle_only(dest, args.max_live)
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
        if args.reuse_grid:
            before = json.loads((dest / "comparison.json").read_text())
            grid_path = dest / (before["grid_run"] + ".gz")
            searched = read_run(rec_path)[0]["recommend"]["space"]["values"]
            if read_run(grid_path)[0]["recommend_grid"]["values"] != searched:
                print(f"the kept grid {grid_path.name} covers another space than this search: {searched}")
                return 1
            grid_wall, args.passes, args.rounds, args.round_time = (before["grid_wall_s"], *(
                before["grid_protocol"][k] for k in ("passes", "rounds", "round_time")))
        else:
            grid_path = grid(rec_path, res, args.passes, args.rounds, args.round_time, args.max_live)
            grid_wall = time.monotonic() - t0
        rows = grid_rows(rec_path, grid_path)
        t0 = time.monotonic()
        checks = settle(rec_path, rows, res, args.max_live)
        check_wall = time.monotonic() - t0
        result = dict(compare(rec_path, rows), grid_run=grid_path.name.removesuffix(".gz"), grid_accuracy_runs=[c.name for c in checks],
                      recommend_command_wall_s=round(rec_wall, 1), grid_wall_s=round(grid_wall, 1),
                      grid_accuracy_wall_s=round(check_wall, 1), command=" ".join(cmd[1:]),
                      grid_protocol={"passes": args.passes, "rounds": args.rounds, "round_time": args.round_time})
        kept = [keep(p, dest) for p in (rec_path, *([] if args.reuse_grid else [grid_path]), *checks)]
    (dest / "comparison.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("pick", "grid_best", "pick_within_best_ci", "recommend_command_wall_s",
                                              "grid_wall_s")}, indent=1))
    print("kept:", *[str(k.relative_to(ROOT)) if k.is_relative_to(ROOT) else str(k) for k in kept],
          str(dest / "comparison.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
