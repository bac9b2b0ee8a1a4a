"""Reliability: bad input is one line and exit 2 with nothing on disk; runs are locked while written;
no process outlives a kill -9 of the run; any --set string or small TOML is a Case/Suite or a UsageError."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sciml_bench.cases import CASE_FIELDS, Case, Suite, load_suite, make_case, parse_assignment
from sciml_bench.cli import main, plain
from sciml_bench.errors import UsageError
from sciml_bench.results import RunWriter, is_locked, read_run, resolve_run, safe_filename
from tests._runs import study_run
from tests.conftest import ROOT

GOOD_STUDY = '[[study]]\nname = "s"\nbase = { model = "mlp" }\naxes = { batch_size = [2] }\n'
HEADER = json.dumps({"type": "header", "format": "sciml_bench.run", "schema": 1, "run_id": "r"})
CASE = {"study": "s", "case_id": "mlp", "case": {"model": "mlp"}, "status": "ok", "metrics": {}, "type": "case"}

# (what, argv, files to create in tmp_path {name: text or bytes}, needle in the error line).
# "{t}" in argv is tmp_path; the plugin module "badplug" is written to tmp_path, which is on sys.path.
BAD = [
    # CLI flags
    ("rounds 0", ["run", "--rounds", "0"], {}, "--rounds must be a finite positive number"),
    ("rounds negative", ["run", "--rounds", "-3"], {}, "--rounds must be"),
    ("rounds text", ["run", "--rounds", "many"], {}, "invalid int value"),
    ("round-time nan", ["run", "--round-time", "nan"], {}, "--round-time must be a finite positive number"),
    ("round-time inf", ["run", "--round-time", "inf"], {}, "--round-time must be"),
    ("round-time 0", ["run", "--round-time", "0"], {}, "--round-time must be"),
    ("timeout inf", ["run", "--timeout", "inf"], {}, "--timeout must be"),
    ("timeout negative", ["run", "--timeout", "-1"], {}, "--timeout must be"),
    ("threads 0", ["run", "--threads", "0"], {}, "--threads must be"),
    ("max-live 0", ["run", "--max-live", "0"], {}, "--max-live must be"),
    ("device tpu", ["run", "--device", "tpu"], {}, "invalid choice: 'tpu'"),
    ("unknown suite", ["run", "--suite", "smok"], {}, "unknown suite 'smok'"),
    ("unknown study", ["run", "--study", "modles"], {}, "unknown study"),
    ("unknown model", ["run", "--model", "resnet81"], {}, "unknown model 'resnet81'"),
    ("no match", ["run", "--study", "models", "--model", "fno*"], {}, "no cases match"),
    ("unknown flag", ["run", "--frobnicate"], {}, "unrecognized arguments"),
    ("out is a file", ["run", "--out", "{t}/afile"], {"afile": "x"}, "exists and is not a directory"),
    ("out below a file", ["run", "--out", "{t}/afile/sub"], {"afile": "x"}, "is a file, not a directory"),
    ("out read-only", ["run", "--out", "{t}/ro/sub"], {"ro/": None}, "not writable"),
    ("out read-only fs", ["run", "--out", "/proc/sys/sciml_bench_out"], {}, "not writable"),
    # root may "write" /proc by access(), but no directory can be made there
    ("out under /proc", ["run", "--out", "/proc/sciml_bench_out/sub"], {}, "--out /proc/sciml_bench_out/sub: "),
    ("resume missing", ["run", "--resume", "{t}/nope.jsonl"], {}, "no such run"),
    ("resume foreign", ["run", "--resume", "{t}/f.jsonl"], {"f.jsonl": '{"a": 1}\n'}, "not a sciml_bench results"),
    ("list what", ["list", "gadgets"], {}, "invalid choice"),
    ("report out is a file", ["report", "{t}/r.jsonl", "--out", "{t}/afile"], {"afile": "x", "r.jsonl": "RUN"},
     "exists and is not a directory"),
    ("history dir missing", ["history", "--dir", "{t}/nope"], {}, "not a directory"),
    ("profile rounds 0", ["profile", "--rounds", "0"], {}, "--rounds must be a finite positive number"),
    ("ab outside a repository", ["ab", "--base", "no-such-rev", "--new", "HEAD"], {}, "not a git repository"),
    ("merge missing run", ["merge", "{t}/nope.jsonl"], {}, "no such run"),
    ("submit shards 0", ["submit", "--shards", "0"], {}, "--shards must be a finite positive number"),
    ("import-asv not asv results", ["import-asv", "{t}/nope"], {}, "is not an asv results directory"),
    ("import-pytest-benchmark missing", ["import-pytest-benchmark", "{t}/nope.json"], {},
     "cannot read pytest-benchmark JSON"),
    ("compare missing", ["compare", "{t}/a.jsonl", "{t}/b.jsonl"], {}, "no such run"),
    # --set
    ("set lr nan", ["run", "--set", "lr=nan"], {}, "expected a finite number"),
    ("set lr inf", ["run", "--set", "lr=inf"], {}, "expected a finite number"),
    ("set lr -inf", ["run", "--set", "lr=-inf"], {}, "expected a finite number"),
    ("set lr 1e400", ["run", "--set", "lr=1e400"], {}, "expected a finite number"),
    ("set lr negative", ["run", "--set", "lr=-0.1"], {}, "lr must be positive"),
    ("set lr text", ["run", "--set", "lr=fast"], {}, "expected float"),
    ("set batch 0", ["run", "--set", "batch_size=0"], {}, "batch_size must be a positive integer"),
    ("set batch float", ["run", "--set", "batch_size=1.5"], {}, "expected int"),
    ("set width beyond int64", ["run", "--set", "width=99999999999999999999999"], {},
     "width must be a positive integer, from 1 to 3037000499 (the side of a square tensor"),
    ("set width side overflows", ["run", "--set", "width=3037000500"], {}, "from 1 to 3037000499"),
    ("set batch beyond int64", ["run", "--set", "batch_size=9223372036854775808"], {},
     "batch_size must be a positive integer, from 1 to 9223372036854775807"),
    ("set seed beyond int64", ["run", "--set", "seed=-9223372036854775809"], {}, "(int64), got"),
    ("set precision", ["run", "--set", "precision=fp8"], {}, "expected one of: fp32"),
    ("set typo", ["run", "--set", "batchsize=4"], {}, "did you mean 'batch_size'"),
    ("set no =", ["run", "--set", "batch_size"], {}, "malformed --set"),
    ("set no key", ["run", "--set", "=4"], {}, "malformed --set"),
    ("set bool", ["run", "--set", "channels_last=maybe"], {}, "expected true or false"),
    ("set device conflict", ["run", "--set", "device=cuda", "--device", "cpu"], {}, "conflicts with --device cpu"),
    ("set unknown model", ["run", "--set", "model=nosuch"], {}, "unknown model 'nosuch'"),
    ("set grad_mode on train", ["run", "--study", "models", "--set", "grad_mode=grad"], {}, "applies to mode='infer'"),
    ("set width on cnn", ["run", "--study", "models", "--model", "small_cnn", "--set", "width=1024"], {},
     "does not accept knob(s) width"),
    # suite TOML
    ("toml lr nan", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace("}\naxes", ", lr = nan }\naxes")},
     "lr must be a finite number"),
    ("toml lr inf axis", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace("batch_size = [2]", "lr = [inf]")},
     "lr must be a finite number"),
    ("toml not utf-8", ["run", "--suite", "{t}/s.toml"], {"s.toml": b'[[study]]\nname = "\xff\xfe"\n'}, "not UTF-8"),
    ("toml syntax", ["run", "--suite", "{t}/s.toml"], {"s.toml": "[suite]\nrounds = = 3\n"}, "line 2"),
    ("toml empty name", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace('"s"', '""')}, "non-empty"),
    ("toml blank name", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace('"s"', '"   "')}, "non-empty"),
    ("toml escape in name", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace('"s"', '"\\u001b[31m"')},
     "printable"),
    ("toml empty suite name", ["run", "--suite", "{t}/s.toml"], {"s.toml": '[suite]\nname = ""\n' + GOOD_STUDY},
     "[suite] name"),
    ("toml no name", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace('name = "s"\n', "")}, "has no name"),
    ("toml unknown metric", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY + 'metrics = ["speed"]\n'},
     "unknown metric 'speed'"),
    ("toml metrics not list", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY + 'metrics = "time"\n'},
     "must be a array"),
    ("toml reference not axis", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY + 'reference = { lr = 0.1 }\n'},
     "is not one of its axes"),
    ("toml empty axis", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace("[2]", "[]")}, "has no values"),
    ("toml rounds 0", ["run", "--suite", "{t}/s.toml"], {"s.toml": "[suite]\nrounds = 0\n" + GOOD_STUDY}, "rounds"),
    ("toml rounds float", ["run", "--suite", "{t}/s.toml"], {"s.toml": "[suite]\nrounds = 1.5\n" + GOOD_STUDY},
     "must be an integer"),
    ("toml round_time nan", ["run", "--suite", "{t}/s.toml"], {"s.toml": "[suite]\nround_time = nan\n" + GOOD_STUDY},
     "finite positive"),
    ("toml top-level key", ["run", "--suite", "{t}/s.toml"], {"s.toml": "[extra]\n" + GOOD_STUDY}, "top-level table"),
    ("toml study key", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY + "colour = 1\n"}, "unknown key"),
    ("toml duplicate", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY + GOOD_STUDY}, "study name twice"),
    ("toml no studies", ["run", "--suite", "{t}/s.toml"], {"s.toml": "[suite]\nrounds = 2\n"}, "no [[study]]"),
    ("toml base not table", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace('{ model = "mlp" }', "3")},
     "must be a table"),
    ("toml fail_on_nonfinite str", ["run", "--suite", "{t}/s.toml"],
     {"s.toml": GOOD_STUDY + 'fail_on_nonfinite = "yes"\n'}, "must be a bool"),
    ("toml unknown field", ["run", "--suite", "{t}/s.toml"], {"s.toml": GOOD_STUDY.replace("batch_size", "bs")},
     "unknown case field 'bs'"),
    ("toml missing file", ["run", "--suite", "{t}/none.toml"], {}, "cannot read suite file"),
    # results files
    ("results empty", ["show", "{t}/r.jsonl"], {"r.jsonl": ""}, "not a sciml_bench results file"),
    ("results not json", ["show", "{t}/r.jsonl"], {"r.jsonl": "hello\n"}, "not a sciml_bench results file"),
    ("results schema", ["show", "{t}/r.jsonl"], {"r.jsonl": HEADER.replace('"schema": 1', '"schema": 9') + "\n"},
     "schema 9"),
    ("results not utf-8", ["show", "{t}/r.jsonl"], {"r.jsonl": b"\xff\xfe\n"}, "cannot read results file"),
    ("record without study", ["show", "{t}/r.jsonl"], {"r.jsonl": "REC:" + json.dumps({k: v for k, v in CASE.items()
                                                                                    if k != "study"})},
     "needs 'study'"),
    ("metrics wrong type", ["show", "{t}/r.jsonl"], {"r.jsonl": "REC:" + json.dumps(dict(CASE, metrics=[1, 2]))},
     "'metrics' must be a JSON object"),
    ("metric value text", ["show", "{t}/r.jsonl"],
     {"r.jsonl": "REC:" + json.dumps(dict(CASE, metrics={"step_time": {"value": "fast"}}))}, "numeric 'value'"),
    ("record is array", ["show", "{t}/r.jsonl"], {"r.jsonl": "REC:[1, 2]"}, "must be a JSON object"),
    ("status unknown", ["show", "{t}/r.jsonl"], {"r.jsonl": "REC:" + json.dumps(dict(CASE, status="great"))},
     "unknown status 'great'"),
    ("corrupt middle line", ["show", "{t}/r.jsonl"], {"r.jsonl": "REC:{oops\n" + json.dumps(CASE)}, "corrupt record"),
    ("report bad record", ["report", "{t}/r.jsonl", "--out", "{t}/rep"],
     {"r.jsonl": "REC:" + json.dumps(dict(CASE, case="mlp"))}, "needs 'case'"),
    ("compare bad record", ["compare", "{t}/r.jsonl", "{t}/r.jsonl"],
     {"r.jsonl": "REC:" + json.dumps(dict(CASE, reason=3))}, "'reason' must be"),
    ("latest none", ["show", "latest", "--dir", "{t}"], {}, "no run files"),
    # recommend (tests/test_recommend.py has the rest)
    ("recommend unknown model", ["recommend", "no_such_model", "--out", "{t}/out"], {}, "unknown model"),
    ("recommend tolerance 0", ["recommend", "mlp", "--tolerance", "0", "--out", "{t}/out"], {}, "--tolerance"),
    ("recommend budget -1m", ["recommend", "mlp", "--budget", "-1m", "--out", "{t}/out"], {}, "--budget"),
    # plugins
    ("plugin missing", ["run", "--plugin", "no_such_plugin_mod"], {}, "cannot import plugin module"),
    ("plugin RuntimeError", ["run", "--plugin", "badplug"], {"badplug.py": "raise RuntimeError('boom')"},
     "RuntimeError: boom"),
    ("plugin SyntaxError", ["run", "--plugin", "badplug"], {"badplug.py": "def f(:\n"}, "SyntaxError"),
    ("plugin sys.exit", ["run", "--plugin", "badplug"], {"badplug.py": "import sys\nsys.exit(4)"}, "SystemExit"),
    ("plugin ZeroDivision", ["run", "--plugin", "badplug"], {"badplug.py": "1 / 0"}, "ZeroDivisionError"),
    ("plugin escape in error", ["run", "--plugin", "badplug"], {"badplug.py": "raise ValueError('\\x1b]0;pwn\\x07x')"},
     "ValueError: x"),
]


def _materialize(tmp_path: Path, files: dict) -> None:
    for name, content in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:  # a directory this user cannot write
            p.mkdir(exist_ok=True)
            p.chmod(0o500)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        elif content == "RUN":
            study_run(p)
        elif content.startswith("REC:"):
            p.write_text(HEADER + "\n" + content[4:] + "\n")
        else:
            p.write_text(content)


@pytest.mark.parametrize("what, argv, files, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_nothing_on_disk(tmp_path, capsys, monkeypatch, what, argv, files, needle):
    if what == "out read-only" and os.geteuid() == 0:
        pytest.skip("root can write a read-only directory (the read-only filesystem case covers root)")
    if what == "out read-only fs" and (not Path("/proc/sys").is_dir() or os.access("/proc/sys", os.W_OK)):
        pytest.skip("no read-only filesystem at /proc/sys here")
    monkeypatch.chdir(tmp_path)  # default results/ and reports/ would land here
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SCIML_BENCH_PLUGINS", "")  # restored after: run sets it for the zoo
    sys.modules.pop("badplug", None)
    _materialize(tmp_path, files)
    before = sorted(tmp_path.rglob("*"))
    argv = [a.replace("{t}", str(tmp_path)) for a in argv]
    if argv[0] == "run" and "--out" not in argv and "--resume" not in argv:
        argv += ["--out", str(tmp_path / "out"), "--no-report"]
    try:
        code = main(argv)
    finally:
        for p in tmp_path.rglob("*"):
            if p.is_dir():
                p.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2, f"{what}: exit {code}, stderr {err!r}"
    assert err.startswith("sciml-bench: error: ") and err.count("\n") == 1, f"{what}: not one line: {err!r}"
    assert "Traceback" not in err and "\x1b" not in err and "\x07" not in err
    assert needle in err, f"{what}: {needle!r} not in {err!r}"
    assert sorted(tmp_path.rglob("*")) == before, f"{what}: bad input left files behind"


def test_every_subcommand_meets_bad_input():
    """Each subcommand the CLI has is given bad input above (a new one must be added to ``BAD``)."""
    from sciml_bench.cli import COMMANDS

    tried = {argv[0] for _, argv, _, _ in BAD if argv}
    assert set(COMMANDS) <= tried, f"subcommands never given bad input: {sorted(set(COMMANDS) - tried)}"


# ---------------------------------------------------------------- properties

KEYS = st.one_of(st.sampled_from(CASE_FIELDS), st.text(max_size=12))
VALUES = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "0", "1", "2.5", "true", "none", "fp16",
                                    "cuda", "mlp", "resnet18", "sdpa", "", " ", "[/]", "\x1b[31m"]),
                   st.text(max_size=12), st.integers(-5, 10 ** 6).map(str), st.floats().map(repr))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, value=VALUES, sep=st.sampled_from(["=", " = ", "", "=="]))
def test_any_set_string_is_a_case_or_a_usage_error(key, value, sep):
    try:
        k, v = parse_assignment(f"{key}{sep}{value}")
        case = make_case({k: v})
    except UsageError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(case, Case)
    json.dumps(case.to_dict(), allow_nan=False)  # a valid case can always be recorded


def _toml(v) -> str:
    """A TOML literal for a JSON-like value (floats include nan and inf)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == -float("inf") else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + " }"


SCALARS = st.one_of(st.sampled_from(["mlp", "small_cnn", "train", "infer", "fp32", "bf16", "cpu", "cuda", "adam", "",
                                     "../x", "[/]"]),
                    st.integers(-3, 64), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=6))
FIELD = st.one_of(st.sampled_from(["model", "mode", "batch_size", "precision", "lr", "width", "device", "seed",
                                   "checkpoint", "dataset", "num_workers"]), st.text(max_size=6))
STUDY = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["a", "a/b", "../../x", "[/]"]), st.text(max_size=6))},
    optional={"question": st.text(max_size=10), "base": st.dictionaries(FIELD, SCALARS, max_size=3),
              "axes": st.dictionaries(FIELD, st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=2),
              "reference": st.dictionaries(FIELD, SCALARS, max_size=1),
              "metrics": st.lists(st.sampled_from(["time", "memory", "flops", "speed"]), max_size=2),
              "fail_on_nonfinite": st.one_of(st.booleans(), st.integers(0, 1)),
              "junk": SCALARS})
SUITE_HEAD = st.fixed_dictionaries({}, optional={"rounds": SCALARS, "round_time": SCALARS, "timeout": SCALARS,
                                                 "name": SCALARS})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(head=SUITE_HEAD, studies=st.lists(STUDY, max_size=3), raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_any_small_toml_is_a_suite_or_a_usage_error(tmp_path, head, studies, raw):
    path = tmp_path / "p.toml"
    if raw is not None:
        path.write_bytes(raw)
    else:
        text = "".join(f"{k} = {_toml(v)}\n" for k, v in head.items())
        text = ("[suite]\n" + text if text else "") + "".join(
            "[[study]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in s.items()) for s in studies)
        path.write_text(text, encoding="utf-8")
    try:
        suite = load_suite(str(path))
    except UsageError as e:
        assert str(e) and "\n" not in plain(str(e)).strip()
        return
    assert isinstance(suite, Suite) and suite.studies
    for s in suite.studies:
        for c in s.cases():
            json.dumps(c.to_dict(), allow_nan=False)


def test_safe_filename_never_leaves_its_directory(tmp_path):
    for name in ("../../escape", "a/b", "..", ".", "", "/abs", "x\x1b]0;t\x07", "ok-name_1=2.3", "é"):
        f = tmp_path / safe_filename(name, ".log")
        assert f.parent == tmp_path and "/" not in f.name and not f.name.startswith("."), (name, f)
    assert safe_filename("a/b") != safe_filename("a_b"), "names differing only in odd characters stay apart"
    assert safe_filename("mlp") == "mlp"


# ---------------------------------------------------------------- writer, locking, resume

def test_writer_keeps_every_record_even_a_non_finite_or_unencodable_one(tmp_path):
    path = tmp_path / "r.jsonl"
    with RunWriter(path, {"run_id": "r"}) as w:
        w.append(dict(CASE, case_id="nan", metrics={"loss": {"value": float("nan")}, "t": {"value": 1.0,
                                                                                          "raw": [float("inf")]}}))
        w.append(dict(CASE, case_id="bad", metrics={"t": {"value": 1.0, "odd": {(1, 2): "tuple key"}}}))
        w.append(dict(CASE, case_id="fine", metrics={"t": {"value": 2.0}}))
    _, recs = read_run(path)
    by = {r["case_id"]: r for r in recs}
    assert set(by) == {"nan", "bad", "fine"}, "one bad record never costs the others"
    assert "loss" not in by["nan"]["metrics"] and "non-finite" in by["nan"]["absent"]["loss"]
    assert by["nan"]["metrics"]["t"]["raw"] == [None] and "inf" in by["nan"]["absent"]["nonfinite:metrics.t.raw.0"]
    assert by["bad"]["status"] == "error" and "could not be stored" in by["bad"]["reason"]
    assert by["fine"]["metrics"]["t"]["value"] == 2.0
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_a_run_being_written_is_locked_latest_skips_it_and_resume_is_refused(tmp_path, capsys):
    old = study_run(tmp_path / "old.jsonl", run_id="old")
    busy = study_run(tmp_path / "busy.jsonl", run_id="busy")
    os.utime(old, (time.time() - 60, time.time() - 60))
    assert resolve_run("latest", tmp_path) == busy
    with RunWriter(busy):  # another process's run in progress holds this lock (flock is per open file)
        assert is_locked(busy) and not is_locked(old)
        assert resolve_run("latest", tmp_path) == old, "latest skips a run still being written"
        with pytest.raises(UsageError, match="being written by another sciml-bench process"):
            RunWriter(busy)
        assert main(["run", "--resume", str(busy), "--out", str(tmp_path)]) == 2
        assert "being written by another sciml-bench process" in capsys.readouterr().err
    assert not is_locked(busy) and resolve_run("latest", tmp_path) == busy


@pytest.mark.parametrize("kept, words", [
    ("detection/ab-aa-mixed/20261202-050259-ab-quick-6-studies-41a1.jsonl.gz", "is an A/B run: its arms' worktrees"),
    ("recommend/mlp/20261206-094057-recommend-mlp-aad8.jsonl.gz", "is a recommend search: each stage was sized"),
    ("recommend/mlp/20261206-094124-recommend-grid-accuracy-mlp-e966.jsonl.gz",  # a script's in-memory suite
     "its plan cannot be rebuilt to resume it: unknown suite 'recommend-grid-accuracy'"),
])
def test_a_run_that_cannot_be_resumed_says_why_and_is_left_as_it_was(tmp_path, capsys, kept, words):
    import gzip

    run = tmp_path / Path(kept).name.removesuffix(".gz")
    run.write_bytes(gzip.decompress((ROOT / "results" / kept).read_bytes()))
    before = run.read_bytes()
    assert main(["run", "--resume", str(run), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, err
    assert run.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [run.name]


def test_concurrent_resume_runs_each_case_once(tmp_path):
    """Two `--resume` of one interrupted run at once: one runs the missing case, the other is refused
    (or, if it starts after the first finished, finds nothing left to do). No duplicates."""
    suite = tmp_path / "s.toml"
    suite.write_text('[suite]\nrounds = 2\nround_time = 0.02\n' + GOOD_STUDY)
    out = tmp_path / "out"
    from sciml_bench.runner import RunSpec, start_run

    run = start_run(RunSpec(suite=str(suite), device="cpu"), out, max_live=1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "sciml_bench", "run", "--resume", str(run.path), "--out", str(out), "--no-report"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    _, records = read_run(run.path)
    keys = [(r["study"], r["case_id"]) for r in records]
    assert keys == [("s", "mlp,batch_size=2")], f"duplicates or gaps: {keys}"
    assert codes[0] == 0, results
    if codes[1] == 2:
        refused = next(e for c, e in results if c == 2)
        assert "being written by another sciml-bench process" in refused and "Traceback" not in refused


# ---------------------------------------------------------------- orphans

HANG = """
[suite]
rounds = 2
round_time = 0.02
timeout = 120

[[study]]
name = "hang"
base = { batch_size = 2 }
axes = { model = ["fault_hang"] }
"""


def _descendants(pid: int) -> set:
    import psutil

    try:
        return set(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.parametrize("phase", ["starting", "hanging"])
def test_no_process_outlives_a_kill_9_of_the_run(tmp_path, phase):
    """kill -9 of `sciml-bench run` while workers start, or while one hangs in its setup: the fork
    server, the resource tracker and every worker are gone within 10 s."""
    import psutil

    suite = tmp_path / "hang.toml"
    suite.write_text(HANG)
    cmd = [sys.executable, "-m", "sciml_bench", "run", "--suite", str(suite), "--device", "cpu", "--out",
           str(tmp_path / "out"), "--plugin", "tests.fault_models", "--no-report"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    seen: set = set()
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            seen |= _descendants(proc.pid)
            logs = list((tmp_path / "out").glob("logs/*/*.log"))
            if phase == "starting" and len(seen) >= 2:
                break  # fork server / resource tracker up, workers on their way
            if phase == "hanging" and any("hanging now" in p.read_text(errors="replace") for p in logs
                                          if "fault_hang" in p.name):
                break  # a worker is stuck in its case: it will not notice the run's death by itself
            time.sleep(0.05)
        seen |= _descendants(proc.pid)
        assert seen, "the run never started a child process"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        gone, alive = psutil.wait_procs(list(seen), timeout=10)
        assert not alive, f"orphans 10 s after kill -9 ({phase}): {[(p.pid, p.cmdline()[:3]) for p in alive]}"
    finally:
        for p in seen:  # never leave them behind, even when the test fails
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- selection, output, permissions

def test_select_then_override(monkeypatch):
    """`--study models --model mlp --set width=1024` works: --set only meets the selected cases."""
    from sciml_bench.runner import RunSpec, plan_cases

    monkeypatch.setenv("SCIML_BENCH_PLUGINS", "")
    _, plan = plan_cases(RunSpec(suite="quick", studies=["models"], models=["mlp"], set=["width=1024"], device="cpu"))
    cases = [c for _, cs in plan for c in cs]
    assert cases and all(c.model == "mlp" and c.width == 1024 for c in cases)
    _, plan = plan_cases(RunSpec(suite="quick", studies=["models"], models=["mlp"], set=["device=cpu"], device="auto"))
    assert all(c.device == "cpu" for _, cs in plan for c in cs), "--set device= is honoured, not overwritten"


EVIL = "\x1b]0;pwned\x07[/]\x1b[2J[bold]x"


def test_names_with_markup_and_escapes_are_printed_as_plain_text(tmp_path, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text(GOOD_STUDY.replace('name = "s"', 'name = "[/]"') + 'question = "why \\u001b[31mred"\n')
    assert main(["list", "studies", "--suite", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "[/]" in out and "\x1b" not in out
    a = study_run(tmp_path / "a.jsonl", study=EVIL, run_id="a\x1b[31m")
    assert main(["show", str(a)]) == 0
    out = capsys.readouterr().out
    assert "[/]" in out and "pwned" not in out and "\x1b" not in out and "\x07" not in out
    b = study_run(tmp_path / "b.jsonl", study=EVIL, run_id="b", scale=1.5)
    assert main(["compare", str(a), str(b)]) == 1, "a 1.5x slowdown in a study named like markup still gates"
    out = capsys.readouterr().out
    assert "[/]" in out and "pwned" not in out and "\x1b" not in out


def test_report_directory_follows_the_umask(tmp_path):
    from sciml_bench.report import build_report

    run = study_run(tmp_path / "a.jsonl")
    old = os.umask(0o077)
    try:
        out = build_report([run], tmp_path / "rep")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o700, oct(out.stat().st_mode)
