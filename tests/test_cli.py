"""CLI: bad input is one line + exit 2 with no file; an end-to-end smoke run; show; load_results."""
import pytest

from sciml_bench import load_results
from sciml_bench.cli import main
from sciml_bench.results import read_run
from tests.conftest import run_cli


@pytest.mark.parametrize("args, needle", [
    (["run", "--model", "resnet81"], "unknown model 'resnet81' (did you mean 'resnet18'"),
    (["run", "--study", "modles"], "unknown study"),
    (["run", "--suite", "smok"], "unknown suite 'smok'"),
    (["run", "--set", "batchsize=4"], "unknown case field 'batchsize' (did you mean 'batch_size'"),
    (["run", "--set", "batch_size"], "malformed --set"),
    (["run", "--set", "batch_size=0"], "batch_size must be a positive integer"),
    (["run", "--set", "precision=fp8"], "expected one of: fp32"),
    (["run", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["run", "--rounds", "0"], "--rounds must be a finite positive number"),
    (["run", "--round-time", "nan"], "--round-time must be a finite positive number"),
    (["run", "--timeout", "inf"], "--timeout must be a finite positive number"),
    (["show", "nosuchrun"], "no such run"),
    (["list", "gadgets"], "invalid choice"),
])
def test_bad_input_one_line_exit_2_no_file(tmp_path, capsys, args, needle):
    if args[0] == "run":
        args = args + ["--out", str(tmp_path / "out")]
    else:
        args = args + ["--dir", str(tmp_path)] if args[0] == "show" else args
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert err.count("\n") == 1 and err.startswith("sciml-bench: error: "), f"one line, no traceback: {err!r}"
    assert not (tmp_path / "out").exists(), "bad input must not leave a results file"


def test_bad_toml_names_its_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[suite]\nrounds = = 3\n")
    assert main(["run", "--suite", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "line 2" in capsys.readouterr().err


def test_cuda_request_without_cuda_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["run", "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_foreign_file_for_show(tmp_path):
    f = tmp_path / "notes.jsonl"
    f.write_text('{"hello": 1}\n')
    proc = run_cli("show", str(f))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not a sciml_bench results file" in proc.stderr


def test_list_commands(capsys):
    assert main(["list", "suites"]) == 0
    assert "smoke" in capsys.readouterr().out
    assert main(["list", "studies", "--suite", "smoke"]) == 0
    assert "batch-size" in capsys.readouterr().out
    assert main(["list", "models", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "11,173,962" in out, "resnet18 (CIFAR stem) parameter count"


def test_every_command_runs_one_handler_and_shares_run_options():
    """parser.build_parser declares the commands, cli.COMMANDS runs them: the two name the same set; and an
    option of `run` that profile, ab or submit also take means the same there (type, choices, help)."""
    from sciml_bench.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    run = {a.option_strings[0]: a for a in sub.choices["run"]._actions if a.option_strings}
    # their own: profile's --out is the profiles root; submit's suite defaults to full, its device is resolved
    # on each job's machine, and its shard runs, merged run and report go elsewhere than run's; ab's --count
    # also says that both arms are counted and gate on it
    own = {("profile", "--out"), ("submit", "--suite"), ("submit", "--device"), ("submit", "--out"),
           ("submit", "--no-report"), ("ab", "--count")}
    for name in ("profile", "ab", "submit"):
        for a in sub.choices[name]._actions:
            r = run.get(a.option_strings[0] if a.option_strings else None)
            if r is not None and a.dest != "help" and (name, a.option_strings[0]) not in own:
                assert (a.dest, a.type, a.choices, a.help) == (r.dest, r.type, r.choices, r.help), (name, a.dest)


def test_smoke_run_end_to_end(smoke_run):
    header, records = read_run(smoke_run)
    env = header["environment"]
    for key in ("torch", "python", "cpu_model", "cpu_cores_logical", "torch_threads", "float32_matmul_precision",
                "cudnn_benchmark", "fingerprint"):
        assert key in env, f"environment fingerprint lacks {key}"
    assert header["schema"] == 1 and header["suite"] == "smoke"
    ok = [r for r in records if r["status"] == "ok"]
    assert ok, "smoke run produced no ok cases"
    for r in ok:
        m = r["metrics"]
        st = m["step_time"]
        # rounds the machine starved are kept in samples/raw but may be left out of the statistics
        left_out = r["starved"]["blocks"] if r.get("starved", {}).get("excluded") else 0
        assert header["options"]["rounds"] == len(st["samples"]) == len(st["raw"]), r["case_id"]
        assert st["n"] == len(st["samples"]) - left_out, r["case_id"]
        assert min(st["samples"]) <= st["value"] <= max(st["samples"]), "median lies within round medians"
        if r["case"]["mode"] == "data":  # a DataLoader epoch has no model: FLOPs absent, with the reason
            assert "flops" not in m and r["absent"]["flops"], r["case_id"]
        else:
            assert m["flops"]["value"] > 0
            assert m["flop_rate"]["value"] == pytest.approx(m["flops"]["value"] / st["value"])
        assert m["throughput"]["value"] == pytest.approx(r["case"]["batch_size"] / st["value"])
        assert m["peak_cpu_tensor_bytes"]["value"] >= m["state_cpu_tensor_bytes"]["value"] > 0
        assert "peak_cuda_bytes" in r["absent"], "CUDA memory is absent with a reason on CPU, not zero"
        assert r["worker"]["threads"] >= 1
    refs = [r for r in ok if r["metrics"].get("time_ratio", {}).get("reference") == r["case_id"]]
    assert refs and all(r["metrics"]["time_ratio"]["value"] == 1.0 for r in refs)


def test_show_and_load_results(smoke_run, capsys):
    assert main(["show", str(smoke_run)]) == 0
    out = capsys.readouterr().out
    assert "step time" in out and "resnet18" in out
    df = load_results(smoke_run)
    assert {"case_id", "metric", "value", "model", "batch_size", "precision"} <= set(df.columns)
    assert not df.duplicated(["study", "case_id", "metric"]).any(), "one row per case x metric"
    st = df[(df.metric == "step_time") & (df.model == "mlp")]
    assert len(st) >= 1 and (st.value > 0).all()


def test_show_and_report_display_the_metrics_a_study_promises(tmp_path, capsys):
    """A compile study promises compile time and break-even steps: `show`, the table and the verdict show them."""
    from sciml_bench.report import collect
    from tests._runs import add_ratio, record, samples, write_run

    import re

    import numpy as np

    rng = np.random.default_rng(0)
    base = record("compile", {"model": "mlp", "mode": "train"}, samples(0.010, rng))
    comp = record("compile", {"model": "mlp", "mode": "train", "compile": "default"}, samples(0.008, rng))
    for r in (base, comp):
        add_ratio(r, base)
    comp["metrics"]["compile_time"] = {"value": 1.28, "unit": "s"}
    comp["metrics"]["break_even_steps"] = {"value": 640.0, "unit": "steps"}
    comp["absent"]["recompiles"] = "no shape sweep in this case"
    path = write_run(tmp_path / "c.jsonl", [base, comp],
                     {"compile": {"question": "What does torch.compile cost and buy?", "reference": {"compile": "none"},
                                  "axes": {"compile": ["none", "default"]}, "metrics": ["time"]}})
    assert main(["show", str(path)]) == 0
    out = re.sub(r"[│\s]+", " ", capsys.readouterr().out)  # cells wrapped over lines, joined back
    assert "compile time 1.28 s" in out and "break-even 640 steps" in out, out
    assert "recompiles not measured: no shape sweep" in out, "an absent promised metric says why"
    rep, _ = collect([path])
    verdict = next(v for v in rep.sections[0].verdicts if "default" in v)
    assert "faster" in verdict and "compile time 1.28 s" in verdict, verdict
    claim = next(c for c in rep.claims if "torch.compile" in c.claim)
    assert claim.verdict != "not measured" and "break-even ~640 steps" in claim.summary(), claim.summary()
