"""import-asv / import-pytest-benchmark: real files produced here become run files whose medians match them."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tests.test_asv import ROOT, run_asv_smoke

from sciml_bench.cli import main
from sciml_bench.imports import import_asv, import_pytest_benchmark
from sciml_bench.results import load_results, read_run

MICRO = ["benchmarks/micro/test_micro_layers.py::test_activation_fwd_bwd[relu]",
         "benchmarks/micro/test_micro_layers.py::test_attention_manual_vs_sdpa[sdpa]",
         "benchmarks/micro/test_micro_recurrent.py::test_pinn_second_order_autograd[residual]"]


@pytest.fixture(scope="module")
def asv_dir(tmp_path_factory):
    return run_asv_smoke(tmp_path_factory.mktemp("asv"), r"^bench_studies\.ModelsTrain\..*\('mlp'\)$")


@pytest.fixture(scope="module")
def pytest_benchmark_json(tmp_path_factory):
    out = tmp_path_factory.mktemp("pb") / "micro.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", *MICRO, "--benchmark-only", "-q", "-p", "no:cacheprovider",
                           "--benchmark-min-rounds=6", "--benchmark-max-time=0.05", "--benchmark-min-time=0.001",
                           f"--benchmark-json={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"micro-benchmarks failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    return out


def test_import_asv_medians_match_source(asv_dir, tmp_path):
    written, skipped = import_asv(asv_dir, tmp_path)
    assert len(written) == 1 and not skipped
    df = load_results(tmp_path)
    source = json.loads(next(p for p in asv_dir.glob("*/*.json") if p.name != "machine.json").read_text())
    machine = json.loads(next(asv_dir.glob("*/machine.json")).read_text())
    benchmarks = json.loads((asv_dir / "benchmarks.json").read_text())
    checks = {"time_train_step": "step_time", "track_throughput": "throughput", "track_flop_rate": "flop_rate",
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
    assert env["fingerprint"] and env["torch"] is None, "asv machine info not mapped (or torch guessed)"
    mlp = next(r for r in records if r["case"]["model"] == "mlp" and r["case"]["mode"] == "train")
    assert "compile_time" in mlp["absent"], "a skipped asv value must be absent with a reason, not zero"
    # importing again adds nothing
    assert import_asv(asv_dir, tmp_path) == ([], written)


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
    header, _ = read_run(path)
    assert header["environment"]["python"] == source["machine_info"]["python_version"]


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
