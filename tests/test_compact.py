"""evidence/compact.py: committed run files lose only what no reader reads, and compacting is idempotent."""
from __future__ import annotations

import gzip

from evidence import compact
from sciml_bench.results import RunWriter, read_run


def _run(path):
    """A gzipped run: case "a" finished (two pass records, raw per-call times), case "b" interrupted
    after its first pass (a pass record only)."""
    plain = path.with_name("plain.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    step = {"value": 1.0, "unit": "s", "samples": [1.0, 1.1], "pass": [0, 1], "raw": [[0.9, 1.0], [1.1, 1.2]]}
    with RunWriter(plain, {"run_id": "r"}) as w:
        for case, p in (("a", 0), ("b", 0), ("a", 1)):
            w.append({"study": "s", "case_id": case, "pass": p, "blocks": [{"times": [0.9, 1.0]}]}, kind="pass")
        w.append({"study": "s", "case_id": "a", "status": "ok", "case": {"model": "mlp"}, "metrics": {"step_time": step}})
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return path


def test_compact_drops_finished_passes_and_unused_raw_only(tmp_path, monkeypatch):
    monkeypatch.setattr(compact, "RESULTS", tmp_path / "results")
    stripped = _run(tmp_path / "results" / "coverage" / "x" / "r.jsonl.gz")
    kept_raw = _run(tmp_path / "results" / "reference" / "r.jsonl.gz")
    header, cases = read_run(stripped)

    done = compact.compact(stripped)
    assert done["passes"] == 2 and done["raw"] == 1, done
    assert read_run(stripped, "pass")[1][0]["case_id"] == "b", "an unfinished case's pass is its only data: kept"
    h, got = read_run(stripped)
    del cases[0]["metrics"]["step_time"]["raw"]
    assert (h, got) == (header, cases), "only raw may change in the case records"
    assert stripped.read_bytes()[4:8] == bytes(4), "gzip mtime 0: the bytes depend on the content only"

    assert compact.compact(kept_raw)["raw"] == 0, "raw stays outside RAW_UNUSED"
    assert "raw" in read_run(kept_raw)[1][0]["metrics"]["step_time"]

    before = stripped.read_bytes()
    assert compact.compact(stripped) is None and stripped.read_bytes() == before, "compacting twice changes nothing"


def test_a_file_with_a_partial_last_line_is_left_as_it_is(tmp_path):
    path = _run(tmp_path / "r.jsonl.gz")
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b'{"type": "ca'))
    before = path.read_bytes()
    assert compact.compact(path) is None and path.read_bytes() == before


def test_the_committed_run_files_are_compacted():
    assert compact.main(["--check"]) == 0, "run python evidence/compact.py (results/README.md says why)"
