"""Runner isolation: faults become records and the run goes on; Ctrl-C and --resume keep results."""
import json
import signal
import subprocess
import sys
import time

from sciml_bench.results import read_run
from tests.conftest import ROOT, no_report, run_cli

FAULTS = """
[suite]
name = "faults"
rounds = 2
round_time = 0.02
timeout = 20

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
    from sciml_bench.runner import LOG_LIMIT

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
    # A fast first study, then two slower ones, so SIGINT lands while the run is still going.
    suite.write_text("\n".join(
        f'[[study]]\nname = "s{i}"\nbase = {{ model = "{"mlp" if i == 0 else "resnet18"}" }}\n'
        f'axes = {{ batch_size = [{8 * (i + 1)}] }}\n' for i in range(3)) + '[suite]\nrounds = 2\nround_time = 0.02\n')
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sciml_bench", "run", "--suite", str(suite), "--device", "cpu", "--out", str(out),
           *no_report()]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def test_non_finite_measurements_become_absent_with_reason():
    """A diverged loss (NaN) cannot go into strict JSON and must not become 0: it is absent, with why."""
    from sciml_bench.cases import Case, Study
    from sciml_bench.runner import RunOptions, _record

    info = {"metrics": {"loss_after_steps": {"value": float("nan"), "unit": ""},
                        "flops": {"value": 100, "unit": "FLOP"}},
            "absent": {}, "pid": 1, "threads": 1, "warmup_steps": 3}
    rec = _record(Study("s", "", {}, {}), Case(), None, info, [[0.1, 0.2], [0.3]], RunOptions(), 0.0)
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
