"""A/B: two revisions of a plugin repository, or two interpreters, timed in one interleaved run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sciml_bench.cli import main
from sciml_bench.results import read_run
from tests.conftest import run_cli

PLUGIN = '''\
import torch
from torch import nn

from sciml_bench.models import mse, register_model

LAYERS = {layers}


def _batch(batch_size, g, **_):
    return torch.randn(batch_size, 128, generator=g), torch.randn(batch_size, 128, generator=g)


@register_model("ab_net", family="test", task="regression", batch=_batch, loss=mse, hidden=True)
def ab_net():
    return nn.Sequential(*[m for _ in range(LAYERS) for m in (nn.Linear(128, 128), nn.ReLU())])
'''

SUITE = '''\
[suite]
name = "abtest"
rounds = 3
round_time = 0.03
passes = 2
timeout = 120

[[study]]
name = "ab"
question = "Did the new revision of ab_net get slower?"
base = { model = "ab_net", mode = "infer", batch_size = 32 }
axes = { seed = [0, 1] }
'''


# Fewer than ab's default 12 rounds where the verdict is not the point (a crash; A/A at a 10 %
# threshold); the revision test's 2x slowdown is judged with the defaults.
ROUNDS = ("--rounds", "4")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.fixture
def plugin_repo(tmp_path):
    """A git repository whose HEAD doubles the layers of HEAD~1's model: a real extra op."""
    repo = tmp_path / "plug"
    repo.mkdir()
    _git(repo, "init", "-q")
    for layers in (4, 8):
        (repo / "abplug.py").write_text(PLUGIN.format(layers=layers))
        _git(repo, "add", "abplug.py")
        _git(repo, "commit", "-q", "-m", f"{layers} layers")
    (tmp_path / "suite.toml").write_text(SUITE)
    return repo


def _ab(tmp_path, *args):
    return run_cli("ab", "--suite", str(tmp_path / "suite.toml"), "--plugin", "abplug", "--device", "cpu",
                   "--threads", "1", "--out", str(tmp_path / "results"), "--no-report", *args, timeout=400)


def test_revision_with_extra_layers_is_slower_exit_1(tmp_path, plugin_repo):
    p = _ab(tmp_path, "--base", "HEAD~1", "--new", "HEAD", "--repo", str(plugin_repo), "--json")
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    cmp = json.loads(p.stdout)
    times = [r for r in cmp["rows"] if r["metric"] == "step_time"]
    assert len(times) == 2 and all(r["verdict"] == "slower" for r in times), times
    assert all(r["ratio"] > 1.3 and r["ci_low"] > 1 for r in times), times  # twice the layers
    assert cmp["paired"] is True
    # one file holds both arms, each arm's revision and environment in the header
    (run,) = (tmp_path / "results").glob("*.jsonl")
    header, records = read_run(run)
    arms = header["ab"]["arms"]
    assert arms["base"]["revision"] != arms["new"]["revision"] and arms["new"]["environment"]["torch"]
    assert sorted(r["arm"] for r in records) == ["base", "base", "new", "new"]
    # the recorded positions are the seed's plan: a case's two arms back to back in every round,
    # in a random order, the cases' turns and the anchor shuffled (slots are arm-major)
    from sciml_bench.rounds import plan_positions, round_plan

    cases = [r["case_id"] for r in records if r["arm"] == "base"]  # records keep the chunk's case order
    firsts = []
    for r in records:
        slot = cases.index(r["case_id"]) + 2 * (r["arm"] == "new")
        for p in r["timing"]["passes"]:
            plan = round_plan(p["order_seed"], [[0, 2], [1, 3]], len(p["position"]),
                              bool(header["options"]["anchor"]), False)
            assert p["position"] == plan_positions(plan, slot)
            if slot == 0:
                firsts += [steps.index((0,)) < steps.index((2,)) for steps in plan]
    assert set(firsts) == {True, False}, "over 24 rounds, each arm of a case went first in some"
    # the worktrees are gone and the repository is left as it was
    listed = subprocess.run(["git", "-C", str(plugin_repo), "worktree", "list"], capture_output=True, text=True)
    assert len(listed.stdout.strip().splitlines()) == 1, listed.stdout
    # compare of the A/B file alone gives the same verdicts, with the same exit code
    again = run_cli("compare", str(run), "--json")
    assert again.returncode == 1 and [r["verdict"] for r in json.loads(again.stdout)["rows"]
                                      if r["metric"] == "step_time"] == ["slower", "slower"]
    # the report renders the A/B run as its own section, arms labelled like runs
    from sciml_bench.report import build_report

    md = (build_report([run], tmp_path / "report") / "report.md").read_text()
    ab_part = md.split("## A/B: new vs base")[1].split("\n## ")[0]
    assert "HEAD~1 =" in ab_part and ab_part.count("| slower |") == 2, ab_part
    assert "[base]" in md and "[new]" in md


def test_interpreter_arms_a_a_duet_exit_0(tmp_path, plugin_repo):
    """Both arms the test venv's interpreter (this checkout's code), in --duet: the interpreter path is
    exercised, each case's two arms are pinned to disjoint cores (alternating by pass), and an A/A
    comparison does not fail (threshold 10%: far beyond A/A noise)."""
    p = run_cli("ab", "--suite", str(tmp_path / "suite.toml"), "--plugin", "abplug", "--device", "cpu",
                "--threads", "1", "--out", str(tmp_path / "results"), "--no-report", *ROUNDS, "--base", sys.executable,
                "--new", sys.executable, "--threshold", "10", "--duet", cwd=plugin_repo, timeout=400)  # abplug: cwd
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "interpreter" in p.stderr and "paired by round" in p.stdout and "disjoint cores" in p.stderr
    (run,) = (tmp_path / "results").glob("*.jsonl")
    header, records = read_run(run)
    assert {a["python"] for a in header["ab"]["arms"].values()} == {sys.executable}
    assert all(r["status"] == "ok" for r in records) and len(records) == 4
    assert header["options"]["duet"] is True and header["options"]["threads"] == 1
    cores = {(r["case_id"], r["arm"], p["pass"]): set(p["cores"]) for r in records for p in r["timing"]["passes"]}
    for case in {r["case_id"] for r in records}:
        for ps in range(2):
            assert not cores[case, "base", ps] & cores[case, "new", ps], cores
        assert cores[case, "base", 0] == cores[case, "new", 1], "which arm gets which cores alternates by pass"
    # both arms of a case take the same turn in a round: one position per case, not per arm
    pos = {(r["case_id"], r["arm"]): [p["position"] for p in r["timing"]["passes"]] for r in records}
    assert all(pos[c, "base"] == pos[c, "new"] for c, _ in pos), pos


# The new revision of ab_net fails by case (torch seeds each case's model with its seed): seed 0 raises, seed
# 1 SIGKILLs its own worker (both while the model is built), seed 2 SIGKILLs its arm's fork server (the
# worker's parent) in its first timed round.
FAULTY = """
import os, signal, sys


class Faulty(nn.Sequential):
    def forward(self, x):
        f = sys._getframe()
        while f is not None and f.f_code.co_name != "time_block":
            f = f.f_back
        if f is not None and torch.initial_seed() == 2:
            os.kill(os.getppid(), signal.SIGKILL)
        return super().forward(x)


@register_model("ab_net", family="test", task="regression", batch=_batch, loss=mse, hidden=True)
def ab_net():
    if torch.initial_seed() == 0:
        raise RuntimeError("planted fault in the new arm")
    if torch.initial_seed() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return Faulty(*[m for _ in range(LAYERS) for m in (nn.Linear(128, 128), nn.ReLU())])
"""


def test_faults_in_one_arm_are_that_arms_records_and_leave_no_process(tmp_path, plugin_repo):
    """Workers are forked by each arm's fork server: in the new arm, a worker that raises is an error,
    one SIGKILLed a crash (the server reports the exit status), one whose fork server is SIGKILLed a
    crash that says so; the base arm's records are untouched and no process of the run is left."""
    from tests.conftest import marked

    plugin = PLUGIN.format(layers=8)
    (plugin_repo / "abplug.py").write_text(plugin[:plugin.index("@register_model")] + FAULTY.lstrip())
    _git(plugin_repo, "commit", "-q", "-am", "faults")
    (tmp_path / "suite.toml").write_text(SUITE.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    p = run_cli("ab", "--suite", str(tmp_path / "suite.toml"), "--plugin", "abplug", "--device", "cpu", "--threads",
                "1", "--out", str(tmp_path / "results"), "--no-report", "--base", "HEAD~1", "--new", "HEAD", "--repo",
                str(plugin_repo), *ROUNDS, timeout=400, env={"SCIML_TEST_MARK": str(tmp_path)})
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stderr.startswith("sciml-bench ab "), f"the first line is not sciml-bench's own: {p.stderr[:300]!r}"
    (run,) = (tmp_path / "results").glob("*.jsonl")
    _, records = read_run(run)
    by_arm = {a: {r["case"]["seed"]: r for r in records if r["arm"] == a} for a in ("base", "new")}
    assert [r["status"] for r in by_arm["base"].values()] == ["ok"] * 3, by_arm["base"]
    assert all(len(r["metrics"]["step_time"]["samples"]) >= 4 for r in by_arm["base"].values())
    new = by_arm["new"]
    assert (new[0]["status"], new[0]["reason"]) == ("error", "RuntimeError: planted fault in the new arm"), new[0]
    assert new[1]["status"] == "crashed" and new[1]["reason"].startswith("killed (SIGKILL)"), new[1]
    assert new[2]["status"] == "crashed" and new[2]["reason"].startswith(
        "worker lost with its fork server: the fork server exited with code -9"), new[2]
    assert marked(str(tmp_path)) == [], "a worker or fork server of the run outlived it"


def _bad(tmp_path, capsys, *args):
    out = tmp_path / "out"
    code = main(["ab", "--suite", "smoke", "--study", "models", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("sciml-bench: error: "), err
    assert not out.exists(), "bad input must not leave a results file"
    return err


def test_bad_arms_one_line_exit_2_nothing_written(tmp_path, capsys, plugin_repo):
    assert "neither an executable Python interpreter nor a revision" in _bad(
        tmp_path, capsys, "--base", "no-such-rev", "--new", "HEAD", "--repo", str(plugin_repo))
    assert "not a git repository" in _bad(tmp_path, capsys, "--base", "HEAD~1", "--new", "HEAD",
                                          "--repo", str(tmp_path / "missing"))
    (plugin_repo / "abplug.py").write_text("# edited\n")
    assert "uncommitted changes" in _bad(tmp_path, capsys, "--base", "HEAD~1", "--new", "HEAD",
                                         "--repo", str(plugin_repo))
    assert "not an executable Python interpreter" in _bad(tmp_path, capsys, "--base", str(tmp_path / "suite.toml"),
                                                          "--new", sys.executable)
    assert "--passes must be at least 2" in _bad(tmp_path, capsys, "--base", sys.executable, "--new", sys.executable,
                                                 "--passes", "1")
    assert "--fail-on: unknown metric family" in _bad(tmp_path, capsys, "--base", sys.executable,
                                                      "--new", sys.executable, "--fail-on", "speed")
    subprocess.run(["git", "-C", str(plugin_repo), "checkout", "-q", "abplug.py"], check=True)  # clean again
    # no --plugin: neither sciml_bench nor a plugin comes from the worktree, so both arms would run the same code
    assert "comes from its worktree" in _bad(tmp_path, capsys, "--base", "HEAD~1", "--new", "HEAD",
                                             "--repo", str(plugin_repo))
    # a bad --new after --base's worktree was made: the worktree is removed again
    assert "neither an executable Python interpreter nor a revision" in _bad(
        tmp_path, capsys, "--base", "HEAD~1", "--new", "no-such-rev", "--repo", str(plugin_repo), "--plugin", "abplug")
    listed = subprocess.run(["git", "-C", str(plugin_repo), "worktree", "list"], capture_output=True, text=True)
    assert len(listed.stdout.strip().splitlines()) == 1, listed.stdout
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    assert "has no torch installed" in _bad(tmp_path, capsys, "--base", str(bare / "bin" / "python"),
                                            "--new", sys.executable)


def test_duet_with_more_threads_than_half_the_cores_is_refused(tmp_path, capsys):
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: --duet is refused for that reason instead")
    too_many = len(os.sched_getaffinity(0)) // 2 + 1
    err = _bad(tmp_path, capsys, "--base", sys.executable, "--new", sys.executable, "--duet", "--threads", str(too_many))
    assert "--threads must be at most" in err


def test_duet_of_cuda_cases_is_refused(tmp_path, monkeypatch):
    """The arms are pinned to disjoint CPU cores; on a GPU they would time-slice one device. Refused before
    anything is written (the CLI turns the UsageError into one line and exit 2, as for every bad input)."""
    import torch

    from sciml_bench.errors import UsageError
    from sciml_bench.runner import RunSpec, start_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine: --device cuda plans
    spec = RunSpec(suite="smoke", studies=["models"], device="cuda")
    with pytest.raises(UsageError, match="the two arms of a CUDA case would share one GPU.*--device cpu"):
        start_run(spec, tmp_path / "out", arms=[object(), object()], duet=True)
    assert not (tmp_path / "out").exists()


def test_compare_of_one_plain_run_is_refused(tmp_path, capsys):
    from sciml_bench.results import RunWriter

    base = tmp_path / "a.jsonl"
    RunWriter(base, {"run_id": "a"}).close()
    assert main(["compare", str(base)]) == 2
    assert "needs BASE and NEW" in capsys.readouterr().err


def test_ab_help_explains_arms(capsys):
    with pytest.raises(SystemExit):
        main(["ab", "--help"])
    out = capsys.readouterr().out
    assert "interpreter" in out and "git revision" in out and "--repo" in out and "--threshold" in out


def test_history_leaves_ab_runs_out_and_load_results_names_the_arm(tmp_path):
    """An A/B run holds two code versions: not two points of one history; its rows carry their arm."""
    from sciml_bench import load_results
    from sciml_bench.history import history
    from sciml_bench.results import RunWriter
    from tests._runs import record, samples
    import numpy as np

    rng = np.random.default_rng(0)
    runs = tmp_path / "results"
    for i, ab in enumerate((None, {"arms": {}}, None)):
        recs = [record("s", {"model": "mlp", "batch_size": 8}, samples(0.01, rng))]
        if ab is not None:
            recs = [dict(recs[0], arm="base"), dict(record("s", {"model": "mlp", "batch_size": 8},
                                                           samples(0.02, rng)), arm="new")]
        header = {"run_id": f"r{i}", "created": f"2026-01-0{i + 1}T00:00:00+0000",
                  "environment": {"hostname": "h", "cpu_model": "c"}}
        if ab is not None:
            header["ab"] = ab
        with RunWriter(runs / f"r{i}.jsonl", header) as w:
            for r in recs:
                w.append(r)
    h = history([runs])
    assert [r["run_id"] for r in h.runs] == ["r0", "r2"]
    df = load_results(runs / "r1.jsonl")
    assert sorted(df.loc[df.metric == "step_time", "arm"]) == ["base", "new"]


def test_an_arm_imports_its_own_code_not_the_current_directorys(tmp_path, monkeypatch):
    """`ab` run from a checkout's root: the arm's interpreter must not pick up the sciml_bench of the
    current directory (``python -c`` puts it first on the path) instead of the arm's own."""
    from sciml_bench.ab import Arm, probe_arms, source_root

    decoy = tmp_path / "sciml_bench"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the current directory decoy was imported')\n")
    monkeypatch.chdir(tmp_path)
    arm = Arm("new", "interpreter", sys.executable, [source_root()])
    probe_arms([arm], ["--new"], [])  # UsageError ("cannot import sciml_bench's worker") if the decoy shadows it
    assert arm.info["torch"]
    # and in the processes an arm's worker starts with `python -m` (a DDP case's torchrun and ranks)
    grandchild = "import subprocess, sys; subprocess.run([sys.executable, '-m', 'sciml_bench.ranks'])"
    p = subprocess.run([sys.executable, "-c", grandchild], env=arm.env(), capture_output=True, text=True, timeout=120)
    assert "usage: python -m sciml_bench.ranks" in p.stderr and "decoy" not in p.stderr, p.stderr[-500:]


def _fake_interpreter(tmp_path: Path, name: str, body: str) -> Path:
    """An 'interpreter' for an arm: a shell script that records its pid, then runs ``body`` in its place."""
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path / (name + '.pid')}\n{body}\n")
    script.chmod(0o755)
    return script


def _gone(pid_file: Path) -> bool:
    import psutil

    pid = int(pid_file.read_text())
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_base_arm_that_cannot_run_is_reported_at_once_and_stops_the_new_arms_probe(tmp_path):
    import time

    from sciml_bench.ab import Arm, probe_arms
    from sciml_bench.errors import UsageError

    base = _fake_interpreter(tmp_path, "base", f"while [ ! -s {tmp_path / 'new.pid'} ]; do sleep 0.05; done\n"
                                               "echo 'ImportError: broken base' >&2; exit 1")  # once new runs
    new = _fake_interpreter(tmp_path, "new", "exec sleep 60")
    arms_ = [Arm("base", str(base), str(base)), Arm("new", str(new), str(new))]
    t0 = time.monotonic()
    with pytest.raises(UsageError, match="--base .*broken base"):
        probe_arms(arms_, ["--base", "--new"], [])
    assert time.monotonic() - t0 < 20, "the base's error waited for the new arm's probe"
    assert _gone(tmp_path / "new.pid"), "the new arm's probe outlived the error"


def test_ctrl_c_during_the_probes_leaves_no_probe_running(tmp_path):
    import os
    import signal
    import threading
    import time

    from sciml_bench.ab import Arm, probe_arms

    arms_ = [Arm(n, "x", str(_fake_interpreter(tmp_path, n, "exec sleep 60"))) for n in ("base", "new")]
    started = [tmp_path / "base.pid", tmp_path / "new.pid"]
    before = signal.signal(signal.SIGINT, signal.default_int_handler)

    def ctrl_c_once_both_run():
        while not all(p.exists() and p.read_text().strip() for p in started):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=ctrl_c_once_both_run, daemon=True)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            probe_arms(arms_, ["--base", "--new"], [])
    finally:
        timer.join(10)
        signal.signal(signal.SIGINT, before)
    assert _gone(tmp_path / "base.pid") and _gone(tmp_path / "new.pid"), "a probe outlived the Ctrl-C"
