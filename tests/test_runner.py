"""Runner isolation: faults become records and the run goes on; Ctrl-C and --resume keep results."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sciml_bench.results import read_run
from tests.conftest import ROOT, no_report, run_cli

FAULTS = """
[suite]
name = "faults"
rounds = 2
round_time = 0.02
timeout = 8  # what fault_hang costs; every other case's setup and rounds take well under 1 s

[[study]]
name = "faults"
base = { batch_size = 4 }
axes = { model = ["mlp", "fault_raise", "fault_abort", "fault_segfault", "fault_hang", "fault_oom", "fault_sigkill",
                  "fault_memoryerror", "fault_exit", "fault_os_exit", "fault_chatty", "fault_nan"] }

[[study]]
name = "cuda-only"
base = { model = "mlp" }
axes = { precision = ["fp32", "fp16", "tf32"] }
reference = { precision = "fp32" }

[[study]]
name = "diverge"
base = { model = "fault_nan" }
axes = { batch_size = [4] }
fail_on_nonfinite = true

[[study]]
name = "../../escape/a/b"
base = { model = "mlp" }
axes = { batch_size = [2] }
"""


def test_fault_matrix_every_status_and_reason(tmp_path):
    """Each fault becomes the right status with a reason that says why; the run goes on; names that
    try to leave logs/<run_id>/ stay inside it; a chatty case's log is capped, head and tail kept."""
    from sciml_bench.supervise import LOG_LIMIT

    suite = tmp_path / "suite" / "faults.toml"
    suite.parent.mkdir()
    suite.write_text(FAULTS)
    proc = run_cli("run", "--suite", str(suite), "--device", "cpu", "--out", str(tmp_path / "out"),
                   "--plugin", "tests.fault_models", *no_report(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "out").glob("*.jsonl")
    _, records = read_run(path)
    status = {(r["study"], r["case_id"]): (r["status"], r["reason"]) for r in records}
    f = {cid.split(",")[0].removeprefix("fault_"): v for (st, cid), v in status.items() if st == "faults"}
    assert f["mlp"][0] == "ok"
    assert f["raise"] == ("error", "RuntimeError: planted fault")
    assert f["abort"][0] == "crashed" and "SIGABRT" in f["abort"][1]
    assert f["segfault"][0] == "crashed" and "SIGSEGV" in f["segfault"][1]
    assert "Fatal Python error: Segmentation fault" in f["segfault"][1], "the crash reason shows what happened"
    assert "CUDA_HOME" not in f["segfault"][1], "known noise is not the crash reason"
    assert f["hang"][0] == "timeout" and "no answer within" in f["hang"][1]
    assert f["oom"][0] == "oom", f["oom"]
    assert f["sigkill"][0] == "crashed" and f["sigkill"][1].startswith("killed (SIGKILL)"), \
        f"a SIGKILL without OOM evidence is not labelled oom: {f['sigkill']}"
    assert f["memoryerror"] == ("oom", "MemoryError: planted MemoryError")
    assert f["exit"] == ("error", "SystemExit: 3")
    assert f["os_exit"][0] == "crashed" and "exited with code 7" in f["os_exit"][1]
    assert "planted last words" in f["os_exit"][1], "the last real output line is in the reason"
    assert f["chatty"][0] == "ok", "output volume is not a failure"
    assert f["nan"][0] == "ok", "a NaN loss alone does not fail a case unless the study asks"
    nan_rec = next(r for r in records if r["study"] == "faults" and r["case"]["model"] == "fault_nan")
    assert "nan" in nan_rec["nonfinite_loss"] and "non-finite" in nan_rec["absent"]["loss_after_warmup"]
    assert status[("diverge", "fault_nan,batch_size=4")][0] == "error"
    assert "diverged" in status[("diverge", "fault_nan,batch_size=4")][1]
    assert status[("cuda-only", "mlp,precision=fp16")] == ("skipped", "fp16 autocast with GradScaler needs CUDA")
    assert status[("cuda-only", "mlp,precision=tf32")][0] == "skipped"
    assert status[("cuda-only", "mlp")][0] == "ok", "the run went on after every fault"
    assert status[("../../escape/a/b", "mlp,batch_size=2")][0] == "ok", "an odd study name is not a crash"
    pids = [r["worker"]["pid"] for r in records if r["status"] == "ok" and "worker" in r]
    assert len(set(pids)) == len(pids), "each case runs in its own worker, so its peak memory is its own"

    files = {p for p in tmp_path.rglob("*") if p.is_file()}
    (log_dir,) = (tmp_path / "out" / "logs").iterdir()
    assert files <= {suite, path} | set(log_dir.iterdir()), f"files written outside logs/<run_id>/: {files}"
    chatty = next(p for p in log_dir.iterdir() if "fault_chatty" in p.name).read_bytes()
    assert len(chatty) <= LOG_LIMIT + 2 ** 16, f"log not capped: {len(chatty)} bytes"
    assert b"FIRST LINE OF OUTPUT" in chatty and b"LAST LINE OF OUTPUT" in chatty and b"dropped" in chatty

    show = run_cli("show", str(path))
    assert show.returncode == 0 and "non-finite loss" in show.stdout, "show flags the diverged cases"


def test_ctrl_c_keeps_a_valid_file_and_resume_completes_without_duplicates(tmp_path):
    suite = tmp_path / "three.toml"
    # A fast first study, then a slower one, so SIGINT lands while the run is still going, then a fast one.
    suite.write_text("\n".join(
        f'[[study]]\nname = "s{i}"\nbase = {{ model = "{"resnet18" if i == 1 else "mlp"}" }}\n'
        f'axes = {{ batch_size = [{8 * (i + 1)}] }}\n' for i in range(3)) + '[suite]\nrounds = 2\nround_time = 0.02\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sciml_bench", "run", "--suite", str(suite), "--device", "cpu", "--out", str(out),
           *no_report()]
    # A shell's background job (`ci &`, nohup) inherits SIGINT ignored, and Python keeps it so: the run
    # under test gets the Ctrl-C of an interactive terminal.
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline:  # interrupt once the first study's record is on disk
        files = list(out.glob("*.jsonl"))
        if files and len(files[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err, "the user is told how to continue"
    (path,) = out.glob("*.jsonl")
    lines = path.read_text().splitlines()
    assert all(json.loads(ln) for ln in lines), "file stays valid JSON lines after Ctrl-C"
    kept = len(read_run(path)[1])
    assert 1 <= kept < 3, f"expected an interrupted run, got {kept} records"

    resumed = run_cli("run", "--resume", str(path), "--out", str(out), *no_report(), timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    _, records = read_run(path)
    keys = [(r["study"], r["case_id"]) for r in records]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 3, f"resume must complete without duplicates: {keys}"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception, on purpose
def test_ctrl_c_swallowed_by_a_finalizer_still_stops_the_run():
    """Python drops a KeyboardInterrupt raised inside __del__ (the run reaps workers all the time):
    the run's SIGINT handler keeps a flag, so the next progress tick still stops it."""
    from sciml_bench.runner import _sticky_interrupt

    class Reaped:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs, and raises, right here, inside __del__

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even under `ci &`
    try:
        with _sticky_interrupt() as hit:
            Reaped()  # collected at once; Python prints "Exception ignored in ... KeyboardInterrupt"
            time.sleep(0.01)
        assert hit == [signal.SIGINT], "the interrupt must not be lost with the dropped exception"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the usual Ctrl-C is restored"
    finally:
        signal.signal(signal.SIGINT, before)


def test_non_finite_measurements_become_absent_with_reason():
    """A diverged loss (NaN) cannot go into strict JSON and must not become 0: it is absent, with why."""
    from sciml_bench.cases import Case, Study
    from sciml_bench.records import record
    from sciml_bench.worker import RunOptions

    info = {"metrics": {"loss_after_steps": {"value": float("nan"), "unit": ""},
                        "flops": {"value": 100, "unit": "FLOP"}},
            "absent": {}, "pid": 1, "threads": 1, "warmup_steps": 3}
    rec = record(Study("s", "", {}, {}), Case(), None, info, [[0.1, 0.2], [0.3]], RunOptions(), 0.0)
    assert "loss_after_steps" not in rec["metrics"] and "non-finite" in rec["absent"]["loss_after_steps"]
    assert rec["metrics"]["step_time"]["samples"] == [0.15000000000000002, 0.3]
    json.dumps(rec, allow_nan=False)


def test_run_id_names_what_ran_not_the_whole_suite():
    from sciml_bench.results import new_run_id
    from sciml_bench.runner import RunSpec, plan_cases, run_label

    for studies, want in ((["batch-size"], "-batch-size-"), (["batch-size", "models"], "-quick-2-studies-"),
                          ([], "-quick-")):
        spec = RunSpec(suite="quick", studies=studies, device="cpu")
        suite, plan = plan_cases(spec)
        run_id = new_run_id(run_label(suite, plan, spec))
        assert want in run_id, f"--study {studies}: run id {run_id} should contain {want!r}"


HOGGED = """
[suite]
name = "hogged"
rounds = 3
round_time = 0.05
passes = 2

[[study]]
name = "act"
base = { model = "mlp", mode = "infer", batch_size = 8 }
axes = { activation = ["relu", "gelu"] }
reference = { activation = "relu" }
"""


def test_case_next_to_a_cpu_hog_is_starved_and_the_run_says_so(tmp_path):
    """Busy machine made visible: with CPU hogs on every core, a 1-thread case's timed blocks wait for a CPU,
    are flagged starved (run summary, record, compare), and the two passes' RMIT orders replay from the seed."""
    import os

    from sciml_bench.rounds import round_orders

    suite = tmp_path / "hogged.toml"
    suite.write_text(HOGGED)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "sciml_bench", "run", "--suite", str(suite), "--device", "cpu",
                            "--threads", "1", "--out", str(out), *no_report()], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob("logs/*/*.log")) and run.poll() is None and time.time() < deadline:
        time.sleep(0.1)  # the hogs start with the first worker: the run's start-up is not what is tested
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range((os.cpu_count() or 1) + 1)]
    try:
        stdout, stderr = run.communicate(timeout=240)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        if run.poll() is None:  # timed out: the run goes too
            run.kill()
            run.communicate()
    proc = subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stderr
    assert "was starved: it got" in proc.stdout and "of 1 core" in proc.stdout, proc.stdout[-2000:]
    (path,) = (tmp_path / "out").glob("*.jsonl")
    header, records = read_run(path)
    for rec in records:
        st = rec["starved"]
        assert st["blocks"] >= 1 and st["max_run_queue_wait"] >= 0.25, f"{rec['case_id']} not flagged: {rec['cpu']}"
        assert len(rec["metrics"]["step_time"]["samples"]) == 6 and rec["metrics"]["step_time"]["pass"] == [0] * 3 + [1] * 3
        passes = rec["timing"]["passes"]
        assert [p["pass"] for p in passes] == [0, 1] and all(p["load"]["start"].get("loadavg") for p in passes)
        i = [r["case_id"] for r in records].index(rec["case_id"])
        for p in passes:  # RMIT: the recorded positions are those the seed gives
            assert p["order_seed"] == f"{header['options']['seed']}:act:{p['pass']}"
            slots = 2 + bool(header["options"]["anchor"])  # the anchor has a slot of its own in every round
            assert p["position"] == [o.index(i) for o in round_orders(p["order_seed"], slots, 3)]
    gelu = next(r for r in records if "gelu" in r["case_id"])["metrics"]["time_ratio"]
    assert gelu["passes"] == 2 and len(gelu["pass_ratios"]) == 2 and "rerun interval" in gelu["ci_method"]
    assert gelu["ci_low"] <= gelu["value"] <= gelu["ci_high"] and gelu["ci_within"][0] is not None
    cmp = run_cli("compare", str(path), str(path))
    assert "unreliable" in cmp.stdout and cmp.returncode == 0, cmp.stdout[-2000:]


def test_round_orders_are_random_per_round_and_reproducible():
    from sciml_bench.rounds import round_orders

    a = round_orders("42:study:0", 5, 20)
    assert a == round_orders("42:study:0", 5, 20) and a != round_orders("42:study:1", 5, 20)
    assert all(sorted(o) == list(range(5)) for o in a) and len({tuple(o) for o in a}) > 10


def test_round_plan_keeps_a_units_workers_together_in_a_random_order():
    from sciml_bench.rounds import round_orders, round_plan

    units = [[0, 3], [1, 4], [2, 5]]  # A/B: a case's base and new slots
    plan = round_plan("42:ab:0", units, 50, anchor=True, together=False)
    assert plan == round_plan("42:ab:0", units, 50, anchor=True, together=False)
    firsts = set()
    for steps, order in zip(plan, round_orders("42:ab:0", 4, 50)):
        assert steps.count(()) == 1 and sorted(i for st in steps for i in st) == list(range(6))
        # the units take turns in round_orders' order, a unit's two workers back to back
        unit_of = {i: k for k, m in enumerate(units) for i in m}
        turns = [unit_of[st[0]] if st else len(units) for st in steps]
        assert [u for k, u in enumerate(turns) if k == 0 or turns[k - 1] != u] == order
        flat = [st[0] if st else None for st in steps]
        for m in units:
            assert abs(flat.index(m[0]) - flat.index(m[1])) == 1
        firsts |= {flat.index(0) < flat.index(3)}
    assert firsts == {True, False}, "each arm goes first in some rounds"
    duet = round_plan("42:ab:0", units, 3, anchor=False, together=True)
    assert all(sorted(steps) == [(0, 3), (1, 4), (2, 5)] for steps in duet)
    for together in (False, True):  # a plain run: one worker per unit, in round_orders' order exactly
        plain = round_plan("42:s:0", [[0], [1], [2]], 4, anchor=True, together=together)
        assert [[st[0] if st else 3 for st in steps] for steps in plain] == round_orders("42:s:0", 4, 4)


def test_passes_interleave_studies_and_resume_keeps_finished_passes(tmp_path, monkeypatch):
    """Bookkeeping of passes without workers (run_pass faked): every study's pass 1 runs before any pass 2,
    a pass is on disk as soon as it finishes, and --resume after a Ctrl-C in pass 2 reruns only what is missing."""
    from dataclasses import asdict

    import sciml_bench.runner as runner
    from sciml_bench.results import RunWriter

    suite = tmp_path / "two.toml"
    suite.write_text('[suite]\nrounds = 3\npasses = 2\n' + "".join(
        f'[[study]]\nname = "s{i}"\nbase = {{ model = "mlp" }}\naxes = {{ batch_size = [8, 16] }}\n'
        f'reference = {{ batch_size = 8 }}\n' for i in range(2)))
    calls, stop_at = [], [("s1", 1)]

    def fake_pass(study, cases, opts, log_dir, progress=None, index=0, arms=None, context=None):
        assert context is servers[-1][1] and servers[-1][0] == index, "the pass index's own server, for every chunk"
        if (study.name, index) in stop_at:
            stop_at.clear()
            raise KeyboardInterrupt
        calls.append((study.name, index))
        info = {"metrics": {}, "absent": {}, "pid": 1, "threads": 1, "warmup_steps": 3}
        return [{"study": study.name, "case_id": c.case_id, "pass": index, "failure": None, "info": info,
                 # the larger case slows 5 % a pass: its ratio's passes differ, so the pool gets a variance
                 "blocks": [{"times": [c.batch_size * (1 + 0.01 * r + 0.05 * index * (c.batch_size > 8))] * 3,
                             "starved": False}
                            for r in range(opts.rounds)],
                 "order_seed": f"x:{study.name}:{index}", "position": [0] * opts.rounds, "load": {},
                 "started": 0.0, "finished": 0.0} for c in cases]

    servers = []  # (pass index, the context execute handed in) for every fork server it started

    class FakeServer:
        def __init__(self, log_path):
            self.closed = False
            servers.append((int(log_path.stem.removeprefix("server--pass")) - 1, self))

        def alive(self):
            return not self.closed

        def close(self):
            self.closed = True

    monkeypatch.setattr(runner, "run_pass", fake_pass)
    monkeypatch.setattr(runner, "pass_context", FakeServer)
    spec = runner.RunSpec(suite=str(suite), device="cpu")
    _, plan = runner.plan_cases(spec)
    opts = runner.RunOptions(rounds=3, passes=2)
    path = tmp_path / "run.jsonl"
    RunWriter(path, {"run_id": "r", "spec": asdict(spec), "options": asdict(opts)}).close()
    try:
        runner.execute(runner.Run(path, {"run_id": "r"}, spec, opts, plan, set()))
    except KeyboardInterrupt:
        pass
    assert calls == [("s0", 0), ("s1", 0), ("s0", 1)], f"passes must interleave studies: {calls}"
    assert [i for i, _ in servers] == [0, 1] and all(s.closed for _, s in servers), \
        "one fork server per pass index, shared by its chunks, closed at its end (a Ctrl-C too)"
    servers.clear()
    assert {r["study"] for r in read_run(path)[1]} == {"s0"} and len(read_run(path, "pass")[1]) == 4
    calls.clear()
    run = runner.resume_run(path)
    assert run.pool and len(run.partial) == 2, "resume keeps s1's finished pass and the run's pooled variance"
    runner.execute(run)
    assert calls == [("s1", 1)], f"resume must rerun only the missing pass: {calls}"
    assert [i for i, _ in servers] == [1], "a pass index with nothing left to run starts no fork server"
    _, records = read_run(path)
    assert sorted((r["study"], r["case_id"]) for r in records) == sorted(
        (f"s{i}", c) for i in range(2) for c in ("mlp,batch_size=8", "mlp,batch_size=16"))
    tr = next(r for r in records if r["study"] == "s1" and r["case_id"] == "mlp,batch_size=16")["metrics"]["time_ratio"]
    assert tr["passes"] == 2 and abs(tr["pass_ratios"][0] - 2.0) < 1e-9 and "pooled" in tr["ci_method"]


TWO_STUDIES = '[suite]\nrounds = 2\nround_time = 0.02\npasses = 2\n' + "".join(
    f'[[study]]\nname = "s{i}"\nbase = {{ model = "mlp", mode = "infer" }}\naxes = {{ batch_size = [4] }}\n'
    for i in range(2))


def _run_two_studies(tmp_path, monkeypatch, passes: int) -> list[dict]:
    """The records of a real run of TWO_STUDIES (each study one chunk), executed in this process."""
    from dataclasses import asdict

    import sciml_bench.runner as runner
    from sciml_bench.lifetime import RUN_PID_ENV
    from sciml_bench.results import RunWriter

    monkeypatch.setenv(RUN_PID_ENV, "")  # the run marks this process; restored afterwards
    monkeypatch.setenv("SCIML_BENCH_PLUGINS", "")
    suite = tmp_path / "two.toml"
    suite.write_text(TWO_STUDIES)
    spec = runner.RunSpec(suite=str(suite), device="cpu")
    _, plan = runner.plan_cases(spec)
    opts = runner.RunOptions(rounds=2, round_time=0.02, passes=passes, threads=1, timeout=120)
    path = tmp_path / "run.jsonl"
    RunWriter(path, {"run_id": "r", "spec": asdict(spec), "options": asdict(opts)}).close()
    runner.execute(runner.Run(path, {"run_id": "r"}, spec, opts, plan, set()))
    _, records = read_run(path)
    assert [r["status"] for r in records] == ["ok", "ok"], [r.get("reason") for r in records]
    return records


def test_each_pass_index_forks_its_workers_from_a_fresh_server(tmp_path, monkeypatch):
    """A plain run starts a fork server per pass index, as A/B arms do, so that per-process effects of a
    server (library addresses, heap layout) differ between passes, where the between-pass CI sees them; the
    chunks of one pass (here: two studies) share its server (one torch import per pass, not per chunk)."""
    import psutil

    records = _run_two_studies(tmp_path, monkeypatch, passes=2)
    parent = {(r["study"], p["pass"]): p["worker"]["parent_pid"] for r in records for p in r["timing"]["passes"]}
    workers = {(r["study"], p["pass"]): p["worker"]["pid"] for r in records for p in r["timing"]["passes"]}
    assert len(set(workers.values())) == 4, f"a fresh worker per case and pass: {workers}"
    assert parent["s0", 0] == parent["s1", 0] and parent["s0", 1] == parent["s1", 1], \
        f"the chunks of a pass share its fork server: {parent}"
    assert parent["s0", 0] != parent["s0", 1], f"each pass forks its workers from a fresh server: {parent}"
    assert os.getpid() not in parent.values(), "workers are forked by a server, not by the run"
    logs = tmp_path / "logs" / "r"
    assert (logs / "server--pass1.log").is_file() and (logs / "server--pass2.log").is_file()
    children = {c.pid for c in psutil.Process().children(recursive=True)}
    assert not children & set(parent.values()), "each pass's server is stopped at the end of its pass"


def test_a_fork_server_that_dies_fails_only_its_own_chunk(tmp_path, monkeypatch):
    """The chunks of a pass share its fork server; when it dies (here: SIGKILL after the first study's chunk),
    the next chunk gets a fresh server instead of failing at start, and so does every later chunk."""
    import signal

    import sciml_bench.runner as runner

    killed = []
    real_pass = runner.run_pass

    def pass_then_kill(*args, context=None, **kw):
        out = real_pass(*args, context=context, **kw)
        if not killed:
            os.kill(context.server.popen.pid, signal.SIGKILL)
            context.server.popen.wait()
            killed.append(context.server.popen.pid)
        return out

    monkeypatch.setattr(runner, "run_pass", pass_then_kill)
    records = _run_two_studies(tmp_path, monkeypatch, passes=1)
    parents = [r["timing"]["passes"][0]["worker"]["parent_pid"] for r in records]
    assert parents[0] == killed[0] and parents[1] != killed[0], f"the second study's server is a new one: {parents}"
    logs = tmp_path / "logs" / "r"
    assert (logs / "server--pass1.log").is_file() and (logs / "server--pass1-2.log").is_file()
