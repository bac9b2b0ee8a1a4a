"""Faults in the phases after set-up and timed rounds, and the last edges of interruption.

The fault matrix of ``test_runner`` plants faults in a case's set-up and timed rounds; here they
are planted (``tests.fault_models``) in the profile pass, the fit, a DataLoader worker process,
one DDP rank and an A/B arm. For each: the record's status and reason, the timed figures measured
before the fault kept, the other cases untouched, and no process of the run left alive.
"""
import os
import signal
import time

import pytest

from sciml_bench.results import read_run
from tests.conftest import marked, run_cli


def _fake_pass(study, cases, opts, log_dir, progress=None, index=0, arms=None, context=None):
    """One pass result per case, no worker: bookkeeping only."""
    info = {"metrics": {}, "absent": {}, "pid": 1, "threads": 1, "warmup_steps": 3}
    return [{"study": study.name, "case_id": c.case_id, "pass": index, "failure": None, "info": info,
             "blocks": [{"times": [0.01] * 3, "starved": False} for _ in range(opts.rounds)],
             "order_seed": "x", "position": [0] * opts.rounds, "load": {}, "started": 0.0, "finished": 0.0}
            for c in cases]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception, on purpose
def test_a_ctrl_c_after_the_last_progress_tick_still_stops_the_run(tmp_path, monkeypatch):
    """A Ctrl-C whose KeyboardInterrupt a finalizer swallowed after the last progress tick (the workers
    are reaped after it) must not let the run end as if finished: execute raises at its end."""
    from dataclasses import asdict

    from sciml_bench import runner
    from sciml_bench.results import RunWriter

    class Reaped:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler raises right here, inside __del__: dropped

    def pass_then_swallowed_ctrl_c(*args, **kw):
        out = _fake_pass(*args, **kw)
        Reaped()
        time.sleep(0.01)
        return out

    class NoServer:
        def __init__(self, log_path):
            pass

        alive = staticmethod(lambda: True)
        close = staticmethod(lambda: None)

    monkeypatch.setattr(runner, "run_pass", pass_then_swallowed_ctrl_c)
    monkeypatch.setattr(runner, "pass_context", NoServer)
    suite = tmp_path / "one.toml"
    suite.write_text('[suite]\nrounds = 2\n[[study]]\nname = "s"\nbase = { model = "mlp" }\naxes = { batch_size = [8] }\n')
    spec = runner.RunSpec(suite=str(suite), device="cpu")
    _, plan = runner.plan_cases(spec)
    opts = runner.RunOptions(rounds=2)
    path = tmp_path / "run.jsonl"
    RunWriter(path, {"run_id": "r", "spec": asdict(spec), "options": asdict(opts)}).close()
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even under `ci &`
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.execute(runner.Run(path, {"run_id": "r"}, spec, opts, plan, set()))
    finally:
        signal.signal(signal.SIGINT, before)
    assert [r["case_id"] for r in read_run(path)[1]] == ["mlp,batch_size=8"], "the finished record is kept"


def test_a_ctrl_c_outside_the_rounds_is_one_line_and_exit_130(monkeypatch, capsys):
    """After the rounds (the summary, the report), Ctrl-C is a line and 130, not a traceback."""
    from sciml_bench import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "list", interrupted)
    assert cli.main(["list", "models"]) == 130
    assert capsys.readouterr().err == "sciml-bench: interrupted\n"


# ---------------------------------------------------------------- the phase matrix

PHASE_FAULTS = """
[suite]
name = "phase-faults"
rounds = 2
round_time = 0.02
timeout = 4  # what each hang costs; a healthy case here (a 4 -> 1 linear) uses ~1-2 s of it

[[study]]
name = "profile"
base = { batch_size = 4 }
axes = { model = ["fault_none", "fault_raise_in_profile", "fault_hang_in_profile", "fault_oom_in_profile",
                  "fault_sigkill_in_profile"] }

[[study]]
name = "fit"
base = { mode = "fit", batch_size = 4, steps = 4, seeds = 1 }
axes = { model = ["fault_none", "fault_raise_in_fit", "fault_hang_in_fit", "fault_oom_in_fit", "fault_sigkill_in_fit",
                  "fault_sigkill_in_profile"] }

[[study]]
name = "loader"
base = { batch_size = 4, dataset = "memmap", num_workers = 1 }
axes = { model = ["fault_loader_raise", "fault_loader_hang", "fault_loader_oom", "fault_loader_sigkill"] }
"""


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory):
    """(CLI result, {(study, model): record}, mark) of one run of PHASE_FAULTS with a profile pass."""
    tmp = tmp_path_factory.mktemp("phase-faults")
    (tmp / "faults.toml").write_text(PHASE_FAULTS)
    proc = run_cli("run", "--suite", str(tmp / "faults.toml"), "--device", "cpu", "--out", str(tmp / "out"), "--phases",
                   "--plugin", "tests.fault_models", "--no-report", timeout=300, env={"SCIML_TEST_MARK": str(tmp)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp / "out").glob("*.jsonl")
    return proc, {(r["study"], r["case"]["model"]): r for r in read_run(path)[1]}, str(tmp)


def _timed_kept(rec: dict) -> None:
    """The case's timed rounds and set-up figures, measured before the fault, are in its record."""
    m = rec["metrics"]
    assert len(m["step_time"]["samples"]) == 2 and m["step_time"]["value"] > 0, f"{rec['case_id']}: {m.keys()}"
    assert m["peak_cpu_tensor_bytes"]["value"] > 0 and m["throughput"]["value"] > 0, rec["case_id"]


@pytest.mark.parametrize("fault, status, reason", [
    ("raise", "ok", "profile pass error: RuntimeError: planted fault"),
    ("hang", "ok", "profile pass timeout: no answer within "),
    ("oom", "ok", "profile pass oom: RuntimeError: [enforce fail"),
    ("sigkill", "ok", "profile pass crashed: killed (SIGKILL), with no sign of the OOM killer"),
])
def test_a_fault_in_the_profile_pass_costs_only_the_profile(phase_run, fault, status, reason):
    """The profile pass runs after the timed rounds and measures nothing the timing needs: the case
    stays ok with its timed figures, and the profile is absent with the fault's status and reason."""
    _, recs, _ = phase_run
    rec = recs["profile", f"fault_{fault}_in_profile"]
    assert rec["status"] == status and rec["absent"]["profile"].startswith(reason), (rec["status"], rec["absent"])
    _timed_kept(rec)
    assert "phase_step_time" not in rec["metrics"], "no phase figures from a failed pass"


@pytest.mark.parametrize("fault, status, reason", [
    ("raise", "error", "fit: RuntimeError: planted fault"),
    ("hang", "timeout", "fit: no answer within "),
    ("oom", "oom", "fit: RuntimeError: [enforce fail"),
    ("sigkill", "crashed", "fit: killed (SIGKILL), with no sign of the OOM killer"),
])
def test_a_fault_in_the_fit_is_the_cases_status_and_keeps_its_timing(phase_run, fault, status, reason):
    """The fit is what a mode='fit' case answers with, so its fault is the case's status; the timed
    rounds and set-up before it were measured and stay in the record (they were thrown away before)."""
    _, recs, _ = phase_run
    rec = recs["fit", f"fault_{fault}_in_fit"]
    assert rec["status"] == status and rec["reason"].startswith(reason), (rec["status"], rec["reason"])
    _timed_kept(rec)
    assert "fit" not in rec and "final_train_loss" not in rec["metrics"], "no fit figures from a failed fit"
    assert "phase_step_time" in rec["metrics"], "its profile pass (before the fit) is kept too"


@pytest.mark.parametrize("fault, status, reason", [
    ("raise", "error", r"RuntimeError: planted fault \(in DataLoader worker process 0\)"),
    ("hang", "timeout", r"no answer within 4 s \(the rest of its --timeout\); last output: fault_hang: hanging now"),
    ("oom", "oom", r"RuntimeError: \[enforce fail .*(can't allocate|not enough) memory.*\(in DataLoader worker process 0\)"),
    ("sigkill", "crashed", r"RuntimeError: DataLoader worker \(pid\(?s?\)? \d+\) (exited unexpectedly|is killed by "
                           r"signal: Killed); with no sign of the OOM killer \(cgroup oom_kill count"),  # a plain SIGKILL
])
def test_a_fault_in_a_dataloader_worker_process_is_the_cases_status(phase_run, fault, status, reason):
    """Planted in the worker process that loads the batches (so at the first batch, in set-up: no
    timed figure exists yet): the loading process names the worker and its own error."""
    import re

    _, recs, _ = phase_run
    rec = recs["loader", f"fault_loader_{fault}"]
    assert rec["status"] == status and re.match(reason, rec["reason"]), (rec["status"], rec["reason"])


def test_the_other_cases_are_untouched_and_no_process_is_left(phase_run):
    proc, recs, mark = phase_run
    none, fit = recs["profile", "fault_none"], recs["fit", "fault_none"]
    assert none["status"] == "ok" and "profile" not in none["absent"] and "phase_step_time" in none["metrics"]
    assert fit["status"] == "ok" and fit["fit"] and "final_train_loss" in fit["metrics"], fit.get("reason")
    assert marked(mark) == [], "a process of the run (worker, DataLoader worker, fork server) outlived it"
    first = proc.stderr.splitlines()[0]
    assert first.startswith("sciml-bench run "), f"the run's first line is not sciml-bench's own: {first!r}"
    assert proc.stdout.splitlines()[0] == "15 cases: 6 ok, 0 skipped, 9 failed", proc.stdout[:300]


def test_a_fit_case_whose_worker_died_in_the_profile_pass_is_not_sent_its_fit(phase_run):
    """The profile pass comes first: a fit case's worker SIGKILLed there cannot train, and the case
    says why (not a second crash of a dead worker), its timed rounds kept."""
    _, recs, _ = phase_run
    rec = recs["fit", "fault_sigkill_in_profile"]
    assert rec["status"] == "crashed", rec
    assert rec["reason"] == "fit: not run: the worker was lost in the profile pass (crashed)", rec["reason"]
    assert rec["absent"]["profile"].startswith("profile pass crashed: killed (SIGKILL)"), rec["absent"]
    _timed_kept(rec)
