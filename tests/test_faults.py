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
