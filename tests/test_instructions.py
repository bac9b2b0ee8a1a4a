"""Instruction counts (measure.instructions): absent with a reason where they cannot be counted, the
record's figures, the gate compare and ab put on them, the functions that moved, and the valgrind
child's lifetime. Every count here is a fake of ``instructions.collect`` (real CallgrindStats
containers, made-up numbers); a real Callgrind count imports torch under valgrind (30-60 s here), so
no test runs one (evidence/detection_quality.py record-ab --count instructions does)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sciml_bench.cases import Case, load_suite
from sciml_bench.errors import UsageError
from sciml_bench.measure import instructions
from tests.conftest import run_cli

FAKE = '''\
class FakeStats:
    """What measure() reads of a CallgrindStats, over torch's own FunctionCounts containers."""

    def __init__(self, per_call, calls, jitter):
        from torch.utils.benchmark.utils.valgrind_wrapper.timer_interface import FunctionCount, FunctionCounts

        excl = {fn: int(c * calls) + (jitter if fn.startswith("Python/") else 0) for fn, c in per_call.items()}
        self._excl = FunctionCounts(tuple(sorted(FunctionCount(c, fn) for fn, c in excl.items())[::-1]), False)
        incl = dict(excl, **{"Python/ceval.c:_PyEval_EvalFrameDefault": sum(excl.values()),
                             "THPEngine_run_backward": sum(excl.values()) // 2})
        self._incl = FunctionCounts(tuple(sorted(FunctionCount(c, fn) for fn, c in incl.items())[::-1]), True)

    def counts(self, denoise=False):
        return self._excl.sum()

    def stats(self, inclusive=False):
        return self._incl if inclusive else self._excl


def fake_collect(layers):
    """A count that grows with ``layers``: addmm's share, the rest fixed; a little jitter per repeat."""
    def collect(case, calls, repeats):
        per_call = {"at::native::addmm": 40_000 * layers(case), "at::native::relu": 10_000 * layers(case),
                    "Python/ceval.c:_PyEval_EvalFrameDefault": 1_000_000}
        return [FakeStats(per_call, calls, 7 * r) for r in range(repeats)]
    return collect
'''
_fake: dict = {}
exec(FAKE, _fake)  # the same fake as the plugin's below (the plugin's runs in the workers)
fake_collect = _fake["fake_collect"]

PLUGIN = '''\
import torch
from torch import nn

from sciml_bench.measure import instructions
from sciml_bench.models import mse, register_model

LAYERS = {{"ic_same": 4, "ic_grows": {grows}}}

{fake}

instructions.collect = fake_collect(lambda case: LAYERS[case["model"]])  # workers count with the fake
instructions.unavailable = lambda: None  # and need no valgrind for it


def _batch(batch_size, g, **_):
    return torch.randn(batch_size, 32, generator=g), torch.randn(batch_size, 32, generator=g)


for _name, _n in LAYERS.items():
    register_model(_name, family="test", task="regression", batch=_batch, loss=mse, hidden=True)(
        lambda n=_n: nn.Sequential(*[m for _ in range(n) for m in (nn.Linear(32, 32), nn.ReLU())]))
'''

SUITE = '''\
[suite]
name = "ictest"
rounds = 1
round_time = 0.01
passes = 2
timeout = 120
count = "instructions"
instruction_calls = 4

[[study]]
name = "ic"
question = "Does the new revision do more work?"
base = { mode = "train", batch_size = 4 }
axes = { model = ["ic_same", "ic_grows"] }
'''


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def _metric(layers: int, calls: int = 4, repeats: int = 3) -> dict:
    stats = fake_collect(lambda case: layers)({}, calls, repeats)
    return instructions.summarize_counts(stats, calls)


# ---------------------------------------------------------------- the A/B path, end to end (fake counts)

def test_ab_of_two_plugin_revisions_gates_on_instructions_and_names_the_function(tmp_path):
    """HEAD gives ic_grows 8 layers instead of 4 and leaves ic_same alone: one ab run holds an A/B
    (ic_grows: more instructions, exit 1, addmm grew) and an A/A (ic_same: unchanged)."""
    repo = tmp_path / "plug"
    repo.mkdir()
    _git(repo, "init", "-q")
    for grows in (4, 8):
        (repo / "icplug.py").write_text(PLUGIN.format(grows=grows, fake=FAKE))
        _git(repo, "add", "icplug.py")
        _git(repo, "commit", "-q", "-m", f"{grows} layers")
    (tmp_path / "suite.toml").write_text(SUITE)
    p = run_cli("ab", "--suite", str(tmp_path / "suite.toml"), "--plugin", "icplug", "--device", "cpu",
                "--threads", "1", "--out", str(tmp_path / "results"), "--no-report", "--base", "HEAD~1", "--new",
                "HEAD", "--repo", str(repo), "--json", timeout=400)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    cmp = json.loads(p.stdout)
    rows = {(r["case_id"].split(",")[0], r["metric"]): r for r in cmp["rows"]}
    grew, same = rows[("ic_grows", "instructions_per_step")], rows[("ic_same", "instructions_per_step")]
    assert grew["verdict"] == "more" and grew["new"] > grew["base"], grew
    assert grew["ratio"] == pytest.approx((1e6 + 8 * 50_000) / (1e6 + 4 * 50_000), rel=1e-4), grew
    assert same["verdict"] == "unchanged" and same["ratio"] == pytest.approx(1, abs=1e-4), same
    assert cmp["failures"] == [f"ic/{grew['case_id']}:instructions_per_step"], cmp["failures"]
    # the time rows are there, but gate nothing where both arms were counted
    assert all(not r["gates"] for r in cmp["rows"] if r["metric"] == "step_time")
    # the function that grew, with its sign, first in the delta; nothing moved in the A/A case
    fns = cmp["functions"][f"ic/{grew['case_id']}"]
    assert fns[0]["function"] == "at::native::addmm" and fns[0]["delta"] == pytest.approx(160_000), fns
    assert fns[1]["function"] == "at::native::relu" and fns[1]["delta"] == pytest.approx(40_000), fns
    assert cmp["functions"][f"ic/{same['case_id']}"] == []
    # the tables say which basis gated, and where it grew
    (run,) = (tmp_path / "results").glob("*.jsonl")
    from sciml_bench.compare import compare_ab, to_markdown

    again = compare_ab(run)  # what `compare RUN` prints: the same gate from the file alone
    md = to_markdown(again)
    assert again.exit_code == 1 and "gate: instructions per step (Callgrind) for 2 case(s)" in md, md
    assert "`at::native::addmm` +160 k/step (+100%)" in md, md
    from sciml_bench.report import build_report

    report = (build_report([run], tmp_path / "report") / "report.md").read_text()
    assert "at::native::addmm +160 k/step" in report and "instructions/step" in report


# ---------------------------------------------------------------- absent, never zero

@pytest.mark.parametrize("fields, words", [
    ({"device": "cuda"}, "GPU kernels"), ({"ddp_ranks": 2}, "DDP"), ({"num_workers": 2}, "DataLoader worker"),
    ({"compile": "default"}, "compiled case"), ({"mode": "fit"}, "mode='fit'")])
def test_a_case_that_cannot_be_counted_is_absent_with_its_reason(fields, words):
    case = Case.__new__(Case)  # no validation: a CUDA case must be describable on a CPU machine
    object.__setattr__(case, "__dict__", dict(Case(model="mlp").__dict__, **fields))
    out = instructions.measure(case, None, {}, count=lambda *a: pytest.fail("counted an uncountable case"))
    assert out["metrics"] == {} and words in out["absent"][instructions.METRIC], out


def test_without_valgrind_the_metric_is_absent_naming_valgrind(monkeypatch):
    monkeypatch.setattr(instructions.shutil, "which", lambda cmd: None)
    reason = instructions.unavailable()
    assert reason and "valgrind is not installed" in reason, reason
    out = instructions.measure(Case(model="mlp"), lambda: None, {})
    assert out == {"metrics": {}, "absent": {instructions.METRIC: reason}}


def test_a_case_too_slow_for_its_calls_is_skipped_with_the_estimate():
    out = instructions.measure(Case(model="mlp"), lambda: time.sleep(0.02), {"calls": 20, "max_seconds": 60},
                               count=lambda *a: pytest.fail("counted a case over its limit"))
    why = out["absent"][instructions.METRIC]
    assert out["metrics"] == {} and why.startswith("too slow to count: about ") and "limit 60 s" in why, why
    est = float(why.split("about ")[1].split(" s")[0])
    assert est == pytest.approx(instructions.estimate_seconds(0.02, 20, instructions.REPEATS), rel=0.3)


def test_a_failed_count_is_absent_with_the_error():
    def broken(*a):
        raise OSError("Failed to collect callgrind profile:\nInterpreter mismatch")

    out = instructions.measure(Case(model="mlp"), None, {}, count=broken)
    assert out["metrics"] == {}
    assert out["absent"][instructions.METRIC] == ("Callgrind count failed: OSError: Failed to collect callgrind "
                                                  "profile: Interpreter mismatch")


# ---------------------------------------------------------------- the record's figures

def test_the_metric_holds_per_step_counts_their_spread_and_the_busiest_functions():
    calls = 4
    out = instructions.measure(Case(model="mlp"), None, {"calls": calls, "repeats": 3},
                               count=fake_collect(lambda case: 4))
    m = out["metrics"][instructions.METRIC]
    per_step = [(1.2e6 * calls + 7 * r) / calls for r in range(3)]  # jitter 7 per repeat on one function
    assert m["samples"] == pytest.approx(per_step) and m["value"] == pytest.approx(per_step[1])
    assert m["spread"] == pytest.approx((per_step[2] - per_step[0]) / per_step[1])
    assert (m["calls"], m["repeats"], m["threads"], m["unit"]) == (calls, 3, 1, "instructions")
    assert m["functions"]["at::native::addmm"] == pytest.approx(160_000), m["functions"]
    # the interpreter's frames lead every inclusive list; the top list starts below them
    assert [t["function"] for t in m["top_inclusive"]][0] == "THPEngine_run_backward", m["top_inclusive"]
    assert m["seconds"] >= 0


# ---------------------------------------------------------------- the gate and the delta

def _drifting(level: float, drift: float = 0.01, calls: int = 10) -> dict:
    """A metric whose three repeats fall by ``drift`` each (as a training step's count does in one process)."""
    samples = [level * (1 - drift * k) for k in range(3)]
    return {"value": samples[1], "samples": samples, "calls": calls,
            "spread": (samples[0] - samples[2]) / samples[1]}


def test_gate_pairs_repeats_so_a_shared_drift_cancels_and_their_spread_sets_the_threshold():
    a, b = _drifting(1e7), _drifting(1e7)
    assert instructions.threshold(a, b) == instructions.FLOOR, "the same drift on both sides cancels"
    assert instructions.verdict(a, b)[1] == "unchanged"
    up = _drifting(1.01e7)  # 1 % more work in every repeat, inside each side's own 2 % spread
    ratio, v, t = instructions.verdict(a, up)
    assert v == "more" and ratio == pytest.approx(1.01) and t == instructions.FLOOR
    assert instructions.verdict(up, a)[1] == "fewer"
    # a noisy pairing widens the threshold: one repeat 2 % off gives 2 x 2 %
    noisy = dict(up, samples=[up["samples"][0] * 1.02] + up["samples"][1:])
    assert instructions.threshold(a, noisy) == pytest.approx(instructions.SPREAD_FACTOR * 0.02, rel=0.02)
    assert instructions.verdict(a, noisy)[1] == "unchanged"
    # measured unlike (other calls): no pairing, each side's own spread, drift and all
    other = _drifting(1.01e7, calls=20)
    assert instructions.paired_ratios(a, other) is None
    assert instructions.threshold(a, other) == pytest.approx(instructions.SPREAD_FACTOR * a["spread"])
    assert instructions.verdict(a, other)[1] == "unchanged"


def test_function_changes_sorts_by_size_and_marks_one_sided_functions():
    a, b = _metric(4), _metric(6)
    b["functions"]["new_kernel"] = 5.0
    rows = instructions.function_changes(a, b, top=3)
    assert [r["function"] for r in rows] == ["at::native::addmm", "at::native::relu", "new_kernel"]
    assert rows[0]["delta"] == pytest.approx(80_000) and not rows[0]["partial"] and rows[2]["partial"]
    assert instructions.fmt_delta(rows[0]) == "+80 k/step (+50%)"
    assert instructions.function_changes(a, a) == []


def test_compare_gates_on_instructions_and_says_a_time_change_points_at_the_machine(tmp_path):
    """Two runs: time 1.5x slower (a busy neighbour), instructions unchanged: exit 0, the note; the same
    with 5 % more instructions: exit 1 on instructions."""
    import numpy as np

    from sciml_bench.compare import compare_runs
    from tests._runs import record, samples, write_run

    rng = np.random.default_rng(0)
    studies = {"s": {"question": "q", "axes": {"model": ["mlp"]}, "reference": {}, "metrics": ["time"]}}

    def run(name, median, metric):
        rec = record("s", {"model": "mlp"}, samples(median, rng, noise=0.01))
        rec["metrics"][instructions.METRIC] = metric
        return write_run(tmp_path / f"{name}.jsonl", [rec], studies, run_id=name)

    base = run("base", 1e-3, _metric(4))
    busy = run("busy", 1.5e-3, _metric(4))
    cmp = compare_runs(base, busy)
    time_row = next(r for r in cmp.rows if r.metric == "step_time")
    assert time_row.verdict == "slower" and not time_row.gates and cmp.exit_code == 0, cmp.rows
    assert any("not more work" in w and "machine" in w and "memory system" in w for w in cmp.warnings), cmp.warnings
    assert cmp.basis.startswith("instructions per step (Callgrind) for 1 case(s)")
    m = _metric(4)
    more = run("more", 1e-3, dict(m, value=m["value"] * 1.05, samples=[x * 1.05 for x in m["samples"]]))
    cmp = compare_runs(base, more)
    assert cmp.exit_code == 1 and [r.metric for r in cmp.failures] == [instructions.METRIC]
    # without a count on both sides the case gates on time, as before
    plain = write_run(tmp_path / "plain.jsonl", [record("s", {"model": "mlp"}, samples(1.5e-3, rng, noise=0.01))],
                      studies, run_id="plain")
    cmp = compare_runs(base, plain)
    assert cmp.basis == "time" and cmp.exit_code == 1


# ---------------------------------------------------------------- the valgrind child

def test_the_child_gets_the_interpreter_first_on_path_and_instrumentation_off(monkeypatch):
    seen = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: seen.append((args, kw)))
    env = instructions.child_env()
    with instructions.child_processes(env):
        subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=yes", "python", "x.py"])
    args, kw = seen[0]
    assert args == ["valgrind", "--tool=callgrind", "--instr-atstart=no", "python", "x.py"]
    assert kw["env"] is env and kw["preexec_fn"] is not None
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert env[instructions.CHILD_ENV] == "1" and env["PYTHONHASHSEED"]
    assert subprocess.run is not seen and subprocess.run.__name__ == "<lambda>", "restored after the count"


def test_a_process_the_count_starts_dies_with_the_worker(tmp_path):
    """The worker is killed (-9) while its count's child runs: the kernel kills the child too."""
    pid_file = tmp_path / "child.pid"
    code = (f"import subprocess, sys\n"
            f"from sciml_bench.measure import instructions\n"
            f"with instructions.child_processes(instructions.child_env()):\n"
            f"    subprocess.run(['sh', '-c', 'echo $$ > {pid_file}; exec sleep 60'])\n")
    worker = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(Path.cwd())))
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":  # reaped by init soon: dead
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the count's child outlived its killed worker")


def test_setup_code_builds_the_case_in_the_child_and_switches_instrumentation_on(tmp_path, monkeypatch):
    log = tmp_path / "control.log"
    fake = tmp_path / "callgrind_control"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {log}\n")
    fake.chmod(0o755)
    code = instructions.setup_code(Case(model="mlp", batch_size=4).to_dict(), warmup=1)
    monkeypatch.delenv(instructions.CHILD_ENV, raising=False)
    worker: dict = {}
    exec(code, worker)  # in the worker (torch's check): a no-op step, nothing built
    assert worker["step"]() is None and "wl" not in worker and not log.exists()
    monkeypatch.setenv(instructions.CHILD_ENV, "1")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    child: dict = {}
    exec(code, child)
    assert child["wl"].case == Case(model="mlp", batch_size=4) and child["step"] == child["wl"].step
    assert log.read_text().split() == ["-i", "on", str(os.getpid())]


# ---------------------------------------------------------------- where it is switched on

def test_suite_setting_and_bad_values(tmp_path):
    path = tmp_path / "s.toml"
    text = SUITE.replace('["ic_same", "ic_grows"]', '["mlp"]')
    path.write_text(text)
    suite = load_suite(str(path))
    assert (suite.count, suite.instruction_calls) == ("instructions", 4)
    assert instructions.count_options(suite.count, suite.instruction_calls)["calls"] == 4
    assert instructions.count_options("time") is None
    path.write_text(text.replace('count = "instructions"', 'count = "cycles"'))
    with pytest.raises(UsageError, match="unknown .suite. count .* 'cycles'"):
        load_suite(str(path))
    path.write_text(text.replace("instruction_calls = 4", "instruction_calls = 0"))
    with pytest.raises(UsageError, match="instruction_calls .* must be a positive integer"):
        load_suite(str(path))


@pytest.mark.parametrize("args", [("--count", "cycles"), ("--instruction-calls", "0")])
def test_bad_count_options_one_line_exit_2_nothing_written(tmp_path, capsys, args):
    from sciml_bench.cli import main

    assert main(["run", "--suite", "smoke", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and args[0] in err, err
    assert not (tmp_path / "r").exists()


def test_the_count_runs_after_the_rounds_with_its_own_limit_under_its_metric_name():
    """A count that hangs or dies is absent under instructions_per_step, and its minutes never come off
    the case's --timeout: its limit is its own, above the worker's skip limit."""
    from sciml_bench.rounds import AFTER_ROUNDS
    from sciml_bench.worker import RunOptions

    (count,) = [a for a in AFTER_ROUNDS if a.name == instructions.METRIC]
    opts = RunOptions(instructions=instructions.count_options("instructions", 7))
    case = Case(model="mlp")
    assert count.wanted(case, opts) and not count.wanted(case, RunOptions()) and not count.fatal
    assert count.command(None, case, opts) == ("instructions", opts.instructions, case.to_dict())
    assert count.limit(opts) > instructions.MAX_SECONDS and opts.instructions["calls"] == 7


def test_counts_run_one_per_core_at_once_and_other_commands_one_at_a_time(monkeypatch):
    """A count is not moved by other processes, so a chunk's counts go out one per usable core at once
    (a wave is posted before any of it is awaited); a profile pass (timings that load would move) runs
    one worker at a time. A count that hangs is absent under its metric; the others keep theirs."""
    from sciml_bench import rounds
    from sciml_bench.cases import Study
    from sciml_bench.worker import RunOptions

    events: list[tuple[str, int, str]] = []

    class FakeWorker:
        def __init__(self, k):
            self.k, self.case, self.failure, self.budget, self.pending = k, Case(model="mlp", seed=k), None, 60.0, None
            self.proc = type("P", (), {"is_alive": lambda s: True})()

        def post(self, msg):
            events.append(("post", self.k, msg[0]))
            self.pending = msg

        def call(self, msg, timeout, charge=True, limit="of starting"):
            if msg is not None:
                self.post(msg)
            events.append(("wait", self.k, self.pending[0]))
            if self.pending[0] == "instructions" and self.k == 1:
                return "timeout", f"no answer within {timeout:.0f} s {limit}"
            return "ok", {"metrics": {self.pending[0]: self.k}, "absent": {}}

        def kill(self):
            pass

    monkeypatch.setattr(rounds, "usable_cores", lambda: 2)
    workers = [FakeWorker(k) for k in range(3)]
    info = {k: {"metrics": {}, "absent": {}} for k in range(3)}
    opts = RunOptions(phases=True, instructions=instructions.count_options("instructions", 4))
    failed = rounds._after_rounds(Study("s", "q", {}, {}), workers, info, opts, lambda desc, n: None)
    assert failed == {}
    profile = [(e, k) for e, k, what in events if what == "profile"]
    assert profile == [("post", 0), ("wait", 0), ("post", 1), ("wait", 1), ("post", 2), ("wait", 2)], events
    counts = [(e, k) for e, k, what in events if what == "instructions"]
    assert counts == [("post", 0), ("post", 1), ("wait", 0), ("wait", 1), ("post", 2), ("wait", 2)], events
    assert info[0]["metrics"]["instructions"] == 0 and info[2]["metrics"]["instructions"] == 2
    assert "instructions" not in info[1]["metrics"] and "timeout" in info[1]["absent"][instructions.METRIC]
    assert "(the rest of its own" in info[1]["absent"][instructions.METRIC], "the count's own limit, not 'of starting'"
