"""import-asv / import-pytest-benchmark: real files produced here become run files whose medians match them."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tests._asv import ROOT, result_file

from sciml_bench.cli import main
from sciml_bench.imports import import_asv, import_pytest_benchmark
from sciml_bench.results import load_results, read_run

MICRO = ["benchmarks/micro/test_micro_layers.py::test_activation_fwd_bwd[relu]",
         "benchmarks/micro/test_micro_layers.py::test_attention_manual_vs_sdpa[sdpa]",
         "benchmarks/micro/test_micro_recurrent.py::test_pinn_second_order_autograd[residual]"]


@pytest.fixture(scope="module")
def asv_dir(asv_smoke):
    return asv_smoke / "results"


@pytest.fixture(scope="module")
def pytest_benchmark_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("pb") / "micro.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", *MICRO, "--benchmark-only", "-q", "-p", "no:cacheprovider",
                           "--benchmark-min-rounds=6", "--benchmark-max-time=0.05", "--benchmark-min-time=0.001",
                           f"--benchmark-json={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"micro-benchmarks failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    return out


def test_import_asv_medians_match_source(asv_dir, tmp_path):
    written, skipped, replaced = import_asv(asv_dir, tmp_path)
    assert len(written) == 1 and not skipped and not replaced
    df = load_results(tmp_path)
    source = json.loads(next(p for p in asv_dir.glob("*/*.json") if p.name != "machine.json").read_text())
    machine = json.loads(next(asv_dir.glob("*/machine.json")).read_text())
    benchmarks = json.loads((asv_dir / "benchmarks.json").read_text())
    checks = {"time_train_step": "step_time", "track_time_per_sample": "time_per_sample",
              "track_peak_memory": "peak_cpu_tensor_bytes", "peakmem_train_step": "peak_rss_bytes",
              "track_loss_after_budget": "loss_after_budget"}
    row = df[(df.study == "models") & (df.model == "mlp") & (df["mode"] == "train")]
    assert set(row.status) == {"ok"}, f"mlp train imported as {set(row.status)}"
    for method, metric in checks.items():
        name = f"bench_studies.ModelsTrain.{method}"
        index = [p.strip("'") for p in benchmarks[name]["params"][0]].index("mlp")
        expected = source["results"][name][0][index]
        got = row[row.metric == metric].value.tolist()
        assert got == [pytest.approx(expected, rel=1e-12)], f"{metric}: imported {got}, asv has {expected}"
    header, records = read_run(written[0])
    env = header["environment"]
    assert env["hostname"] == machine["machine"] and env["git"]["commit"] == source["commit_hash"]
    assert env["cpu_model"] == machine["cpu"] and env["cpu_cores_logical"] == int(machine["num_cpu"])
    import torch
    assert env["fingerprint"] and env["torch"] == torch.__version__, "torch version not carried through"
    assert "discovery" in env["torch_source"], "say where the torch version comes from"
    mlp = next(r for r in records if r["case"]["model"] == "mlp" and r["case"]["mode"] == "train")
    assert "compile_time" in mlp["absent"], "a skipped asv value must be absent with a reason, not zero"
    tps = mlp["metrics"]["time_per_sample"]
    assert tps.get("ci_level") == 0.99 or tps.get("ci_low") is None, "asv intervals are 99%"
    assert mlp["metrics"]["throughput"]["value"] == pytest.approx(1 / tps["value"])
    # importing again changes nothing
    again = import_asv(asv_dir, tmp_path)
    assert (again.written, again.skipped, again.replaced) == ([], written, {})


def test_import_asv_reimports_a_commit_asv_ran_again(asv_dir, tmp_path, capsys):
    """asv rewrites a commit's result file when it runs it again: the new numbers replace the old."""
    import shutil

    results = tmp_path / "asv"
    shutil.copytree(asv_dir, results)
    out = tmp_path / "runs"
    assert main(["import-asv", str(results), "--out", str(out)]) == 0
    path = result_file(results)
    data = json.loads(path.read_text())
    name = "bench_studies.ModelsTrain.time_train_step"
    index = [p.strip("'") for p in json.loads((results / "benchmarks.json").read_text())[name]["params"][0]
             ].index("mlp")
    old = data["results"][name][0][index]
    data["results"][name][0][index] = old * 1.5  # what a slower re-run of this commit writes
    path.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["import-asv", str(results), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "re-imported" in text and "step_time" in text and str(old) in text, text
    df = load_results(out)
    got = df[(df.model == "mlp") & (df["mode"] == "train") & (df.metric == "step_time")].value.tolist()
    assert got == [pytest.approx(old * 1.5)], "the re-run's number must replace the old one"
    assert not list(out.glob("*.tmp")), "no temporary file left behind"


def test_import_pytest_benchmark_medians_match_source(pytest_benchmark_json, tmp_path):
    path = import_pytest_benchmark(pytest_benchmark_json, tmp_path)
    source = json.loads(pytest_benchmark_json.read_text())
    df = load_results(path)
    assert len(source["benchmarks"]) == len(MICRO)
    for b in source["benchmarks"]:
        rows = df[(df.study == b["group"]) & (df.metric == "step_time")
                  & (df.case_id.str.endswith(f":{b['param']}"))]
        assert rows.value.tolist() == [b["stats"]["median"]], f"{b['name']}: median differs"
        assert b["extra_info"]["case"]["device"] == "cpu" and "flops" in b["extra_info"]
    pinn = df[df.case_id == "pinn_second_order_autograd:residual"]
    flops = pinn[pinn.metric == "flops"].value.item()
    rate = pinn[pinn.metric == "flop_rate"].value.item()
    median = pinn[pinn.metric == "step_time"].value.item()
    assert flops > 0 and math.isclose(rate, flops / median), "FLOP/s must be FLOPs / median"
    header, records = read_run(path)
    assert header["environment"]["python"] == source["machine_info"]["python_version"]
    for r, b in zip(records, source["benchmarks"]):
        st = r["metrics"]["step_time"]
        assert [t for blk in st["raw"] for t in blk] == b["stats"]["data"], "raw keeps every round, in order"
        assert len(st["samples"]) == min(10, len(b["stats"]["data"])), "samples are contiguous-block medians"
    relu = next(r for r in records if r["case_id"].endswith(":relu"))
    assert "flops" in relu["absent"] and "flops" not in relu["metrics"], "ReLU FLOPs are uncountable, not 0"


def test_show_labels_a_99_percent_interval(tmp_path, capsys):
    """An imported asv interval is 99%: `show` and reports must not present it as the default 95%."""
    from tests._runs import study_run
    path = study_run(tmp_path / "r.jsonl", failed=False)
    header, records = read_run(path)
    records[0]["metrics"]["step_time"]["ci_level"] = 0.99
    path.write_text("\n".join(json.dumps(x) for x in [dict(header, type="header")] +
                              [dict(r, type="case") for r in records]) + "\n")
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("99% CI") == 1, out
    from sciml_bench.report import build_report
    md = (build_report([path], tmp_path / "rep") / "report.md").read_text()
    assert md.count("(99% CI)") == 1, "the report labels the 99% interval too"


def _pb_json(path: Path, times: list[float]) -> Path:
    """A minimal pytest-benchmark --benchmark-json file holding one benchmark with these round times."""
    import statistics
    data = {"machine_info": {"node": "h", "python_version": "3.11.7", "cpu": {"brand_raw": "cpu", "count": 2}},
            "commit_info": {"id": "c" * 40, "dirty": False}, "datetime": "2026-01-01T00:00:00", "version": "5.1.0",
            "benchmarks": [{"group": "g", "name": "test_x", "fullname": "t.py::test_x", "param": None, "extra_info": {},
                            "stats": {"median": statistics.median(times), "rounds": len(times), "iterations": 1,
                                      "data": times}}]}
    path.write_text(json.dumps(data))
    return path


def test_compare_tests_independent_rounds_not_drifting_calls(tmp_path):
    """Identical code, two sessions: in the second the machine drifts slowly (0.9x-1.24x). Thousands of
    pytest-benchmark rounds tested as independent call that "slower" with a tiny p; compare's default
    (block medians, the independent units) does not."""
    import numpy as np

    from sciml_bench.compare import compare_runs
    rng = np.random.default_rng(0)
    n = 2000
    a = list(1e-3 * np.exp(rng.normal(0, 0.05, n)))
    drift = 1.07 + 0.17 * np.sin(2 * np.pi * (np.arange(n) + 0.5) / n)
    b = list(1e-3 * drift * np.exp(rng.normal(0, 0.05, n)))
    base = import_pytest_benchmark(_pb_json(tmp_path / "a.json", a), tmp_path / "a")
    new = import_pytest_benchmark(_pb_json(tmp_path / "b.json", b), tmp_path / "b")
    raw = compare_runs(base, new, samples="raw").rows[0]
    default = compare_runs(base, new).rows[0]
    assert raw.verdict == "slower" and raw.p_value < 1e-20, (raw.verdict, raw.p_value)
    assert default.verdict != "slower" and default.p_value > 0.01, (default.verdict, default.p_value)


def test_cli_imports_and_bad_input(pytest_benchmark_json, tmp_path, capsys):
    assert main(["import-pytest-benchmark", str(pytest_benchmark_json), "--out", str(tmp_path)]) == 0
    assert main(["import-pytest-benchmark", str(pytest_benchmark_json), "--out", str(tmp_path)]) == 2
    assert "already imported" in capsys.readouterr().err
    assert main(["import-asv", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "not an asv results directory" in capsys.readouterr().err
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    assert main(["import-pytest-benchmark", str(foreign), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a pytest-benchmark JSON" in err and err.count("\n") == 1
