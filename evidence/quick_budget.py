"""Time the README's first command end to end: ``sciml-bench run`` (the quick suite, its report included).

From the repository root, on a quiet machine::

    python evidence/quick_budget.py --out results/reference/cpu-2core-quick-4x2

It runs ``python -m sciml_bench run --suite quick`` into a temporary results directory, measuring the
wall time from the command's start to its exit (torch import, every pass, the report), then keeps the
run file gzipped as ``<out>.jsonl.gz`` (``load_results``, ``show`` and ``report`` read it as it is) and the timing as ``<out>.json`` (wall seconds, the run file's own span,
the suite's protocol, the case counts). ``docs/statistics.md`` quotes that file.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence.compact import compact  # noqa: E402
from evidence.rerun_coverage import run_span  # noqa: E402
from sciml_bench.results import read_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="path stem for the kept run file (.jsonl.gz) and timing (.json)")
    p.add_argument("--suite", default="quick", help="suite to time (default: quick)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sciml_bench", "run", "--suite", args.suite, "--out", str(Path(tmp) / "results")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            return proc.returncode
        run_file = next((Path(tmp) / "results").glob("*.jsonl"))
        reports = list((Path(tmp) / "reports").glob("*/index.html"))
        header, records = read_run(run_file)
        span = run_span(header, records)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        kept = args.out.with_suffix(".jsonl.gz")
        with open(run_file, "rb") as src, gzip.open(kept, "wb") as dst:
            shutil.copyfileobj(src, dst)
        compact(kept)  # as every committed run file is kept: deterministic gzip, finished cases' pass records dropped
    opts = header.get("options") or {}
    timing = {"command": f"sciml-bench run --suite {args.suite}", "wall_s": wall, "run_span_s": span,
              "report_written": bool(reports), "run_id": header.get("run_id"),
              "protocol": f"{opts.get('passes', 1)} passes x {opts.get('rounds')} rounds x {opts.get('round_time')} s",
              "cases": dict(sorted(Counter(r["status"] for r in records).items())),
              "run_file": str(kept.resolve().relative_to(ROOT))}
    args.out.with_suffix(".json").write_text(json.dumps(timing, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(timing, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
