"""Profiling: traces readable by torch-tb-profiler, HTA and Perfetto; phases that cover the step;
a profiled run times exactly what an unprofiled one does."""
import csv
import json
import os
import subprocess
import sys

import pytest

from sciml_bench.cases import make_case
from sciml_bench.measure.timing import warmup
from sciml_bench.profiling import GAP_TOLERANCE, ProfileOptions, measure_phases, profile_pass, profile_trace, read_trace
from sciml_bench.results import read_run
from sciml_bench.workloads import PHASES, build_workload, mark_phase
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def mlp_profile(tmp_path_factory):
    """(profile_pass result, trace dir) of a small MLP train step on CPU."""
    out = tmp_path_factory.mktemp("prof") / "study" / "mlp"
    wl = build_workload(make_case({"model": "mlp", "mode": "train", "batch_size": 8, "device": "cpu"}))
    warmup(wl.step, 2)
    return profile_pass(wl, str(out)), out


def test_profile_writes_trace_operator_table_memory_view_and_phases(mlp_profile):
    res, out = mlp_profile
    prof = res["profile"]
    for key in ("trace", "operators_csv", "operators_md", "memory_csv", "memory_png"):
        assert (out / prof["files"][key]).is_file(), f"{key} missing from {out}"
    assert (out / "memory_timeline.png").stat().st_size > 5000, "memory timeline PNG is empty"
    with open(out / "operators.csv", newline="") as f:
        ops = list(csv.DictReader(f))
    assert any(o["name"] == "aten::addmm" or o["name"] == "aten::mm" for o in ops), "no matmul in the operator table"
    assert all(o["name"] not in PHASES for o in ops), "phase ranges are annotations, not operators"
    assert ops[0]["input_shapes"], "record_shapes: input shapes missing"
    assert any(float(o["flops"] or 0) > 0 for o in ops), "with_flops: no FLOPs recorded"
    assert 0 < len(prof["top_ops"]) <= 10 and prof["top_ops"][0]["self_cpu_us"] > 0
    mem = prof["memory"]
    assert mem["peak_bytes"] > 0 and mem["peak_phase"] in PHASES, mem
    m, absent = res["metrics"], res["absent"]
    for p in ("forward", "backward", "optimizer"):
        assert m[f"phase_{p}_time"]["value"] > 0, f"phase {p} not measured"
    for p in ("data", "h2d", "loss"):
        assert f"phase_{p}_time" not in m and absent[f"phase_{p}_time"], f"phase {p} needs an absent reason"
    assert m["profile_memory_peak_bytes"]["phase"] == mem["peak_phase"]


def test_trace_is_chrome_json_with_the_phase_ranges(mlp_profile):
    res, out = mlp_profile
    trace = json.loads((out / res["profile"]["files"]["trace"]).read_text())
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"], "no traceEvents"
    ranges = {ev["name"] for ev in trace["traceEvents"] if ev.get("cat") == "user_annotation" and ev.get("ph") == "X"}
    assert {"forward", "backward", "optimizer"} <= ranges, f"phase ranges missing from the trace: {ranges}"
    assert sum(ev["name"].startswith("ProfilerStep#") for ev in trace["traceEvents"]) == 3, "schedule: 3 active steps"
    assert trace["distributedInfo"]["rank"] == 0, "HTA needs distributedInfo with the rank"


def test_gzip_traces_and_the_schedule(tmp_path):
    wl = build_workload(make_case({"model": "mlp", "mode": "infer", "batch_size": 4, "device": "cpu"}))
    warmup(wl.step, 2)
    prof = profile_trace(wl, tmp_path, ProfileOptions(wait=0, warmup=1, active=2, repeat=2, gzip=True))
    assert len(prof["files"]["traces"]) == 2, "one trace per schedule cycle"
    assert prof["files"]["trace"].endswith(".pt.trace.json.gz") and prof["steps"] == 2
    mm = [o for o in prof["top_ops"] if o["name"] == "aten::addmm"]
    assert mm and all(o["calls"] == 1 for o in mm), f"per-step calls of the last cycle: {mm}"
    trace = read_trace(tmp_path / prof["files"]["trace"])
    assert [ev["name"] for ev in trace["traceEvents"] if ev.get("cat") == "user_annotation"].count("forward") == 2


TB_LOAD = """
import sys
from torch_tb_profiler import io
from torch_tb_profiler.profiler.loader import RunLoader
if __name__ == "__main__":
    with io.Cache() as cache:
        run = RunLoader("case", sys.argv[1], cache).load()
    worker = run.workers[0]
    prof = run.get_profile(worker, (run.get_spans(worker) or [None])[0])
    print([v.display_name for v in prof.views])
    print(len(prof.overview["steps"]["rows"]), len(prof.operation_table_by_name["data"]))
"""


def test_torch_tb_profiler_loads_the_trace_directory(mlp_profile, tmp_path):
    pytest.importorskip("torch_tb_profiler", reason="extra [profile] not installed")
    _, out = mlp_profile
    script = tmp_path / "tb_load.py"  # its loader spawns processes: run it as a script with a main guard
    script.write_text(TB_LOAD)
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    views, counts = proc.stdout.strip().splitlines()[-2:]
    assert "Overview" in views and "Operator" in views, views
    steps, ops = map(int, counts.split())
    assert steps == 3 and ops > 5, f"overview steps {steps}, operator rows {ops}"


def test_hta_reads_the_trace_and_documents_the_cpu_only_limit(mlp_profile):
    pytest.importorskip("hta", reason="extra [profile] not installed")
    from hta.trace_analysis import TraceAnalysis

    _, out = mlp_profile
    analysis = TraceAnalysis(trace_dir=str(out))
    assert list(analysis.t.traces) == [0], "rank 0 from distributedInfo"
    names = set(analysis.t.symbol_table.get_sym_table())
    assert {"forward", "backward", "optimizer"} <= names, "HTA sees the phase ranges"
    kernel_types, kernels = analysis.get_gpu_kernel_breakdown(visualize=False)
    assert kernel_types.empty and kernels.empty, "a CPU-only trace has no GPU kernels"
    # Documented in the README: the temporal breakdown divides GPU kernel time; with no kernel
    # (stream != -1) event it fails, and no metadata can supply kernels a CPU run never launched.
    with pytest.raises(IndexError):
        analysis.get_temporal_breakdown(visualize=False)


@pytest.mark.parametrize("model,knobs", [("mlp", {}), ("small_cnn", {}),
                                         ("transformer_encoder", {"seq_len": 32, "width": 64, "depth": 2})])
def test_phases_sum_to_the_step(model, knobs):
    wl = build_workload(make_case(dict(model=model, mode="train", batch_size=4, device="cpu", **knobs)))
    warmup(wl.step, 2)
    m, absent = measure_phases(wl, min_steps=5, min_time=0.0)
    covered = sum(m[f"phase_{p}_time"]["value"] for p in PHASES if f"phase_{p}_time" in m)
    gap = m["phase_gap"]["value"]
    assert abs(gap) <= GAP_TOLERANCE, f"{model}: phases cover {covered:.4g} s of a {m['phase_step_time']['value']:.4g} s step"
    assert abs(sum(m[f"phase_{p}_time"]["share"] for p in PHASES if f"phase_{p}_time" in m) - (1 - gap)) < 1e-9
    assert set(absent) == {"phase_data_time", "phase_h2d_time", "phase_loss_time"}
    assert wl.mark is mark_phase, "the phases pass must restore the free mark"


def test_marks_are_free_outside_a_profiler_and_ranges_inside():
    import torch

    from sciml_bench import workloads

    assert mark_phase("forward") is workloads._NULL, "outside a profiler a mark must be the shared no-op"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        assert isinstance(mark_phase("forward"), torch.profiler.record_function)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "sciml_bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=400, env=dict(os.environ, PYTHONPATH=str(ROOT)))


SELECT = ["--suite", "smoke", "--study", "models", "--model", "mlp", "--device", "cpu"]


def test_profile_command_keeps_the_timed_rounds_and_reports_the_views(tmp_path, capsys, smoke_run):
    prof = _cli("profile", *SELECT, "--results", str(tmp_path / "results"), cwd=tmp_path)
    assert prof.returncode == 0, prof.stderr[-2000:]
    assert "top operators by self CPU time" in prof.stdout and "aten::" in prof.stdout, prof.stdout[-3000:]
    assert "phase split" in prof.stdout and "memory peak" in prof.stdout
    # the plain run of the same cases, same suite settings: the smoke run's mlp cases of its models study
    h0, recs0 = read_run(smoke_run)
    recs0 = [r for r in recs0 if r["study"] == "models" and r["case"]["model"] == "mlp"]
    (h1, recs1), = [read_run(p) for p in (tmp_path / "results").glob("*.jsonl")]
    assert [r["case_id"] for r in recs0] == [r["case_id"] for r in recs1]
    assert h1["options"]["profile"] and not h0["options"]["profile"]
    for a, b in zip(recs0, recs1):
        assert a["status"] == b["status"] == "ok"
        for r in (a, b):  # same rounds: one block per round, each the per-call times of one timed block
            st = r["metrics"]["step_time"]  # n counts the rounds kept: starved blocks of a busy machine drop out
            assert len(st["raw"]) == len(st["samples"]) == 3 and st["n"] in (3, 3 - sum(st.get("starved", [])))
        extra = set(b["metrics"]) - set(a["metrics"])
        assert extra and all(k.startswith(("phase_", "profile_")) for k in extra), extra
        assert not any(k.startswith("phase_") for k in a["metrics"])
        assert set(a["metrics"]) - set(b["metrics"]) == set(), "profiling must not drop a timed metric"
    from sciml_bench.cli import main

    assert main(["show", str(next((tmp_path / "results").glob("*.jsonl")))]) == 0
    shown = capsys.readouterr().out
    assert "phase split" in shown and "forward" in shown, "show lists the phase split"
    # the report shows the views and its links resolve inside the report directory
    report = tmp_path / "reports" / h1["run_id"]
    from tests.test_report import CHROMIUM, _referenced

    html = (report / "index.html").read_text()
    refs = _referenced(html)
    assert "<script" not in html.lower() and refs
    for ref in refs:  # figures, traces, tables: every link resolves inside the report, none goes out
        assert not ref.startswith(("http:", "https:", "/")) and (report / ref).is_file() and \
            (report / ref).stat().st_size > 0, f"broken or external link {ref}"
    assert "Profiles" in html and "ui.perfetto.dev" in html and "tensorboard --logdir" in html
    assert "A training step splits about 25/5/34/25/10" in html
    case_dir = report / "profiles" / "models"
    assert len(list(case_dir.glob("*/*.pt.trace.json"))) == 2, "traces copied into the report"
    if CHROMIUM:
        shot = tmp_path / "shot.png"
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               f"--user-data-dir={tmp_path / 'chrome'}", "--enable-logging=stderr", "--v=0",
                               f"--screenshot={shot}", (report / "index.html").as_uri()],
                              capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
        errors = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Failed to load resource" in ln
                  or "ERR_FILE_NOT_FOUND" in ln]
        assert shot.is_file() and not errors, errors or proc.stderr[-1000:]


@pytest.mark.parametrize("schedule,message", [("1,1,0,1", "active must be an integer >= 1"),
                                              ("1,1,3", "--schedule must be WAIT,WARMUP,ACTIVE,REPEAT")])
def test_bad_schedule_is_a_usage_error(tmp_path, capsys, schedule, message):
    from sciml_bench.cli import main

    assert main(["profile", "--suite", "smoke", "--schedule", schedule, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir()), "nothing written on bad input"


def test_compare_lists_the_operators_whose_self_time_changed_most(tmp_path):
    import numpy as np

    from sciml_bench.compare import compare_runs
    from tests._runs import record, samples, write_run

    def run(name, mm_us, relu_us):
        rec = record("s", {"model": "mlp", "mode": "train", "batch_size": 8},
                     samples(0.01, np.random.default_rng(0)))
        rec["profile"] = {"dir": str(tmp_path / "gone"), "files": {}, "top_ops": [
            {"name": "aten::mm", "input_shapes": "[[8, 64], [64, 128]]", "self_cpu_us": mm_us, "self_device_us": 0},
            {"name": "aten::relu", "input_shapes": "[[8, 128]]", "self_cpu_us": relu_us, "self_device_us": 0}]}
        return write_run(tmp_path / f"{name}.jsonl", [rec], {"s": {}}, run_id=name)

    cmp = compare_runs(run("base", 100.0, 50.0), run("new", 180.0, 45.0))
    (key, ops), = cmp.operators.items()
    assert [o["operator"].split()[0] for o in ops] == ["aten::mm", "aten::relu"], ops
    assert ops[0]["delta_us"] == 80.0 and ops[1]["delta_us"] == -5.0
