"""Compact the committed run files: drop what no published figure reads, and gzip them deterministically.

From the repository root::

    python evidence/compact.py            # compact every results/**/*.jsonl.gz in place
    python evidence/compact.py --check    # say what would go, change nothing (exit 1 if anything would)
    python evidence/compact.py results/coverage/untuned10-after   # only these files or directories

Only gzipped run files are touched (a plain ``.jsonl`` may be a run in progress, or one to ``--resume``).
What goes:

* every file: the ``pass`` records of cases that have their final record. The runner keeps them so
  that ``run --resume`` can finish an interrupted case; a gzipped file is never resumed, and every
  reader (``show``, ``report``, ``compare``, ``load_results``, the evidence scripts) reads the case
  records only. A pass record whose case never finished is kept: it is that case's only data.
* ``metrics.*.raw`` (every timed block's per-call times) under ``RAW_UNUSED``: the figures made from
  those files (coverage and its rescoring, ``compare_ab``'s verdicts, ``score-ab``, ``pooling``) use
  the per-round medians (``samples``), which stay, with ``pass``, ``starved`` and ``anchor``.
  Elsewhere raw stays: ``detection_quality.py score`` tests per-call times (``results/detection/runs*``),
  and a user may compare a run of theirs against ``results/reference/*`` with ``--samples raw``.

A file is read with ``results.read_run`` and rewritten only if something went, as gzip level 9 with
mtime 0 and no file name (the bytes depend on the content only), so running this twice changes
nothing the second time. A file holding records of another kind, or a partial last line, is left as
it is and named.
"""
from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
sys.path.insert(0, str(ROOT))

from sciml_bench.results import read_run, run_files

# run files (paths relative to results/, fnmatch: * spans directories) whose per-call times no figure reads
RAW_UNUSED = ("coverage/*", "detection/ab*")


def _gz_files(paths: list[Path]) -> list[Path]:
    """The gzipped run files in ``paths`` (files, or directories searched recursively), sorted."""
    out = set()
    for p in paths:
        dirs = [p, *(d for d in p.rglob("*") if d.is_dir())] if p.is_dir() else [p]
        out |= {f for d in dirs for f in run_files(d) if f.name.endswith(".jsonl.gz") and f.is_file()}
    return sorted(out)


def _strips_raw(path: Path) -> bool:
    try:
        rel = path.resolve().relative_to(RESULTS).as_posix()
    except ValueError:  # outside results/: no rule says its raw is unused
        return False
    return any(fnmatch.fnmatch(rel, pattern) for pattern in RAW_UNUSED)


def compact(path: Path, write: bool = True) -> dict | None:
    """Compact one gzipped run file; what went (``passes``, ``raw`` metric count, ``bytes`` before and
    after), or None when nothing would go or the file holds lines ``read_run`` does not return."""
    header, cases = read_run(path)
    _, passes = read_run(path, "pass")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = sum(1 for _ in fh)
    if lines != 1 + len(cases) + len(passes):
        print(f"{path}: left as it is ({lines - 1 - len(cases) - len(passes)} lines of another kind, or a partial "
              f"last line)", file=sys.stderr)
        return None
    finished = {(r["study"], r["case_id"], r.get("arm")) for r in cases}
    kept = [p for p in passes if (p["study"], p["case_id"], p.get("arm")) not in finished]
    raw = 0
    if _strips_raw(path):
        for r in cases:
            for m in (r.get("metrics") or {}).values():
                if isinstance(m, dict) and "raw" in m:
                    del m["raw"]
                    raw += 1
    if len(kept) == len(passes) and not raw:
        return None
    # the runner's own encoding (json.dumps, strict), so a record that stays keeps its exact line
    text = "".join(json.dumps(x, allow_nan=False) + "\n" for x in [header, *kept, *cases])
    data = gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)
    done = {"passes": len(passes) - len(kept), "raw": raw, "bytes": (path.stat().st_size, len(data))}
    if write:
        tmp = path.with_name(path.name.removesuffix(".jsonl.gz") + ".tmp.gz")  # not a run file name meanwhile
        tmp.write_bytes(data)
        if read_run(tmp) != (header, cases) or read_run(tmp, "pass")[1] != kept:
            tmp.unlink()
            raise RuntimeError(f"{path}: the compacted file does not read back as written; left as it was")
        os.replace(tmp, path)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="Drops finished cases' pass records everywhere, and metrics.*.raw under "
                                       f"results/{{{','.join(RAW_UNUSED)}}}; see the module docstring for why.")
    p.add_argument("paths", type=Path, nargs="*", default=[RESULTS], help="run files or directories (default: results/)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if any file would be compacted")
    args = p.parse_args(argv)
    before = after = changed = 0
    for f in _gz_files(args.paths):
        done = compact(f, write=not args.check)
        if done:
            changed += 1
            before, after = before + done["bytes"][0], after + done["bytes"][1]
            print(f"{f}: {done['passes']} pass records, raw of {done['raw']} metrics; "
                  f"{done['bytes'][0]} -> {done['bytes'][1]} bytes")
    verb = "would compact" if args.check else "compacted"
    print(f"{verb} {changed} file(s)" + (f": {before} -> {after} bytes" if changed else ""))
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
