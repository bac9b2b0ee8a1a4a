"""Results store: round trip, interrupted writes, foreign files, tidy DataFrame."""
import json
from pathlib import Path

import pandas as pd
import pytest

from sciml_bench import load_results
from sciml_bench.errors import UsageError
from sciml_bench.results import RunWriter, done_keys, read_run, resolve_run

HEADER = {"run_id": "r1", "created": "2026-11-21T00:00:00", "suite": "t", "environment": {"fingerprint": "abc"}}


def _record(case_id, status="ok", value=0.5):
    metrics = {"step_time": {"value": value, "unit": "s", "ci_low": 0.4, "ci_high": 0.6, "n": 6,
                             "samples": [value] * 6}} if status == "ok" else {}
    return {"study": "s", "case_id": case_id, "case": {"model": "mlp", "batch_size": 8}, "status": status,
            "reason": None if status == "ok" else "boom", "metrics": metrics, "absent": {}}


def test_round_trip_and_tidy_frame(tmp_path):
    path = tmp_path / "r1.jsonl"
    with RunWriter(path, HEADER) as w:
        w.append(_record("a", value=0.25))
        w.append(_record("b", status="error"))
    header, records = read_run(path)
    assert header["schema"] == 1 and header["run_id"] == "r1"
    assert [r["case_id"] for r in records] == ["a", "b"]
    df = load_results(tmp_path)
    ok = df[df.case_id == "a"].iloc[0]
    assert ok.metric == "step_time" and ok.value == 0.25 and ok.ci_low == 0.4 and ok.model == "mlp"
    failed = df[df.case_id == "b"].iloc[0]
    assert failed.status == "error" and failed.reason == "boom" and pd.isna(failed.metric)


def test_partial_last_line_is_ignored_and_resume_appends_cleanly(tmp_path):
    path = tmp_path / "r.jsonl"
    with RunWriter(path, HEADER) as w:
        w.append(_record("a"))
    with open(path, "a") as fh:
        fh.write('{"type": "case", "study": "s", "case_')  # killed mid-write
    assert [r["case_id"] for r in read_run(path)[1]] == ["a"]
    with RunWriter(path) as w:  # resume
        w.append(_record("b"))
    header, records = read_run(path)
    assert done_keys(records) == {("s", "a"), ("s", "b")}
    assert all(json.loads(line) for line in path.read_text().splitlines()), "every line is valid JSON"


def test_new_run_never_overwrites(tmp_path):
    path = tmp_path / "r.jsonl"
    RunWriter(path, HEADER).close()
    with pytest.raises(UsageError, match="cannot create results file"):
        RunWriter(path, HEADER)


@pytest.mark.parametrize("content, needle", [
    ("", "not a sciml_bench results file"),
    ("hello\n", "not a sciml_bench results file"),
    ('{"format": "other"}\n', "not a sciml_bench results file"),
    ('{"format": "sciml_bench.run", "schema": 99}\n', "schema 99"),
])
def test_foreign_files_are_refused(tmp_path, content, needle):
    f = tmp_path / "x.jsonl"
    f.write_text(content)
    with pytest.raises(UsageError, match=needle):
        read_run(f)


def test_resolve_run(tmp_path):
    with pytest.raises(UsageError, match="no run files"):
        resolve_run("latest", tmp_path)
    RunWriter(tmp_path / "r1.jsonl", HEADER).close()
    assert resolve_run("latest", tmp_path).name == "r1.jsonl"
    assert resolve_run("r1", tmp_path).name == "r1.jsonl"
    with pytest.raises(UsageError, match="no such run"):
        resolve_run("r2", tmp_path)


def test_header_that_cannot_be_written_leaves_no_file(tmp_path):
    path = tmp_path / "r.jsonl"
    with pytest.raises(TypeError):
        RunWriter(path, dict(HEADER, options={(1, 2): "a tuple key JSON cannot encode"}))
    assert not path.exists(), "nothing half-written"


def test_frame_has_run_identity_and_proper_dtypes(tmp_path):
    from tests._runs import ENV, study_run

    path = study_run(tmp_path / "a.jsonl")
    df = load_results(path)
    row = df[(df.metric == "step_time")].iloc[0]
    assert row.commit == ENV["git"]["commit"] and row.torch == ENV["torch"] and row.hostname == "testhost"
    assert row.machine and df.machine.nunique() == 1, "machine identity: one hash per machine"
    assert str(df["created"].dtype).startswith("datetime64") and df["created"].dt.year.iloc[0] == 2026
    for c in ("batch_size", "n", "width", "depth", "resolution", "seq_len", "seed"):
        assert str(df[c].dtype) == "Int64", f"{c} is {df[c].dtype}"
    assert df.value.dtype == "float64" and df.ci_level.dropna().eq(0.95).all()
    failed = df[df.status == "oom"]
    assert len(failed) == 1 and pd.isna(failed.metric.iloc[0])


def test_samples_long_form_matches_the_stored_samples(tmp_path):
    from tests._runs import study_run

    path = study_run(tmp_path / "a.jsonl")
    _, records = read_run(path)
    long = load_results(path, samples=True)
    for r in records:
        if r["status"] != "ok":
            assert r["case_id"] not in set(long.case_id), "a failed case has no samples"
            continue
        got = long[(long.case_id == r["case_id"]) & (long.metric == "step_time")].sort_values("sample_index")
        assert got["sample"].tolist() == r["metrics"]["step_time"]["samples"], r["case_id"]
        assert got.sample_index.tolist() == list(range(len(got))) and str(got.sample_index.dtype) == "Int64"


def test_gzipped_run_files_read_as_plain_ones_and_are_never_appended_to(tmp_path):
    """Committed evidence is kept gzipped: read_run, run_files, run ids and `show` read it as they read the
    plain file; `run --resume` refuses it (appending text would corrupt it) with one line and exit 2."""
    import gzip
    import shutil

    from sciml_bench.cli import main
    from sciml_bench.results import read_run, resolve_run, run_files

    plain = Path(__file__).parent / "data" / "smoke_run.jsonl"
    packed = tmp_path / (plain.name + ".gz")
    with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert read_run(packed) == read_run(plain) and read_run(packed, "pass") == read_run(plain, "pass")
    assert run_files(tmp_path) == [packed]
    assert resolve_run(plain.name.removesuffix(".jsonl"), tmp_path) == packed
    assert main(["show", str(packed)]) == 0
    before = packed.read_bytes()
    assert main(["run", "--resume", str(packed)]) == 2
    assert packed.read_bytes() == before, "a refused resume leaves the file as it was"
