"""submit: submitit's local executor runs 2 shards of a tiny suite; they merge into one run and report."""
from sciml_bench.cli import main
from sciml_bench.results import read_run
from sciml_bench.submit import run_shard

SUITE = """
[suite]
name = "tiny"
rounds = 2
round_time = 0.02
timeout = 60

[[study]]
name = "modes"
question = "train vs infer"
base = { model = "mlp", batch_size = 8, width = 32, depth = 2 }
axes = { mode = ["train", "infer"] }
reference = { mode = "train" }

[[study]]
name = "batch"
question = "one batch size"
base = { model = "mlp", mode = "train", width = 32, depth = 2 }
axes = { batch_size = [8] }
reference = { batch_size = 8 }
"""


def test_local_executor_runs_two_shards_that_merge_into_one_report(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.toml").write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    rc = main(["submit", "--suite", "tiny.toml", "--shards", "2", "--executor", "local", "--device", "cpu",
               "--out", "results", "--poll", "0.5"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    shard_files = sorted(tmp_path.glob("results/*-submit-*/shard-*-of-2/*.jsonl"))
    assert len(shard_files) == 2, "one run file per shard"
    shard_studies = [{r["study"] for r in read_run(f)[1]} for f in shard_files]
    assert shard_studies[0].isdisjoint(shard_studies[1]) and set.union(*shard_studies) == {"modes", "batch"}
    [merged] = tmp_path.glob("results/*-merged-*.jsonl")
    header, recs = read_run(merged)
    assert sorted((r["study"], r["case_id"]) for r in recs) == [
        ("batch", "mlp,batch_size=8,width=32,depth=2"), ("modes", "mlp,batch_size=8,width=32,depth=2"),
        ("modes", "mlp,mode=infer,batch_size=8,width=32,depth=2")]
    assert all(r["status"] == "ok" and r["machine"]["run_id"] for r in recs)
    assert sorted(m["shard"] for m in header["merged_from"]) == ["1/2", "2/2"] and header["merge_warnings"] == []
    modes_train = next(r for r in recs if r["study"] == "modes" and r["case"]["mode"] == "train")
    assert modes_train["metrics"]["time_ratio"]["reference"] == modes_train["case_id"], "ratios survive the merge"
    report = (tmp_path / "reports" / merged.stem / "report.md").read_text()
    assert all(name in report for name in ("modes", "batch", "| machine |")), "a study or the machine column missing"
    # A resubmitted shard resumes its run file: finished cases never run twice.
    before = shard_files[0].read_text()
    assert run_shard({}, str(shard_files[0].parent), {}) == str(shard_files[0])
    assert shard_files[0].read_text() == before


def test_slurm_options_become_sbatch_parameters(tmp_path, monkeypatch):
    import pytest

    from sciml_bench.errors import UsageError
    from sciml_bench.submit import make_executor

    with pytest.raises(UsageError, match="--executor local"):  # no srun here: one line, not a traceback
        monkeypatch.setenv("PATH", str(tmp_path))
        make_executor("slurm", tmp_path / "jobs")
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "srun").chmod(0o755)
    ex = make_executor("slurm", tmp_path / "jobs", partition="gpu", gpus_per_node=8, time_min=240, account="proj")
    params = ex._executor.parameters  # what submitit writes as #SBATCH lines
    assert {k: params[k] for k in ("partition", "account", "gpus_per_node", "time", "nodes", "ntasks_per_node")} == \
        {"partition": "gpu", "account": "proj", "gpus_per_node": 8, "time": 240, "nodes": 1, "ntasks_per_node": 1}
    with pytest.raises(UsageError, match="slurm only"):
        make_executor("local", tmp_path / "jobs", partition="gpu")


def test_passes_and_seeds_reach_every_shard_run(tmp_path, monkeypatch, capsys):
    """--passes and --seeds travel to each shard's job, as start_run's options and the RunSpec it runs."""
    import inspect

    import sciml_bench.submit as submit
    from sciml_bench.runner import RunSpec, start_run

    submitted = []

    class Job:
        def __init__(self, n):
            self.job_id, self.state = str(n), "PENDING"

    class Executor:
        def submit(self, fn, spec, shard_dir, options):
            submitted.append((fn, spec, shard_dir, options))
            return Job(len(submitted))

    (tmp_path / "tiny.toml").write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(submit, "make_executor", lambda *a, **kw: Executor())
    assert main(["submit", "--suite", "tiny.toml", "--shards", "2", "--executor", "local", "--device", "cpu",
                 "--passes", "3", "--seeds", "2", "--rounds", "4", "--no-wait"]) == 0, capsys.readouterr().err
    assert len(submitted) == 2
    for k, (fn, spec, shard_dir, options) in enumerate(submitted, 1):
        assert isinstance(fn, submit.ShardJob) and shard_dir.endswith(f"shard-{k}-of-2")
        assert options == {"passes": 3, "rounds": 4}
        assert spec["seeds"] == 2 and spec["shard"] == f"{k}/2"
        inspect.signature(start_run).bind(RunSpec(**spec), shard_dir, **options)  # what run_shard calls
    assert main(["submit", "--suite", "tiny.toml", "--shards", "2", "--executor", "local", "--seeds", "0"]) == 2
    assert "--seeds must be a positive integer" in capsys.readouterr().err
