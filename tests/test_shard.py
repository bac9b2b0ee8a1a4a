"""Shards: the split of a selection is deterministic, whole-study and complete; merge refuses mismatches."""
import json

import numpy as np
import pytest

from sciml_bench.cli import main
from sciml_bench.errors import UsageError
from sciml_bench.results import RunWriter, read_run
from sciml_bench.runner import RunSpec, plan_cases
from sciml_bench.shard import assign, merge_runs, parse_shard, study_cost
from tests._runs import ENV, record, samples


def _keys(plan):
    return [(s.name, c.case_id) for s, cases in plan for c in cases]


def test_shards_partition_the_selection_by_whole_studies():
    suite, full = plan_cases(RunSpec(suite="quick", device="cpu"))
    parts = [plan_cases(RunSpec(suite="quick", device="cpu", shard=f"{k}/3"))[1] for k in (1, 2, 3)]
    keys = [_keys(p) for p in parts]
    assert sorted(k for ks in keys for k in ks) == sorted(_keys(full)), "union of shards != unsharded cases"
    assert sum(map(len, keys)) == len(_keys(full)), "a case on two shards"
    studies = [{s.name for s, _ in p} for p in parts]
    assert all(not (a & b) for i, a in enumerate(studies) for b in studies[i + 1:]), "a study split over shards"
    assert _keys(plan_cases(RunSpec(suite="quick", device="cpu", shard="2/3"))[1]) == keys[1], "not deterministic"
    costs = [sum(study_cost(c, suite.rounds, suite.round_time) for _, c in p) for p in parts]
    biggest = max(study_cost(c, suite.rounds, suite.round_time) for _, c in full)
    assert max(costs) - min(costs) <= biggest, f"unbalanced shards {costs}"


def test_bad_shard_specs_are_refused():
    for text in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(UsageError, match="K/N"):
            parse_shard(text)
    _, plan = plan_cases(RunSpec(suite="smoke", device="cpu", studies=["models"]))
    with pytest.raises(UsageError, match="at most 1 shards"):
        plan_cases(RunSpec(suite="smoke", device="cpu", studies=["models"], shard="1/2"))
    assert assign(plan, 1, 3, 0.1) == [["models"]]


def test_cost_grows_with_passes_and_with_fit_steps_times_seeds():
    from sciml_bench.cases import Case, Study
    from sciml_bench.shard import fit_cost

    train = [Case(model="mlp", mode="train")]
    assert study_cost(train, 4, 0.2, passes=2) == pytest.approx(2 * study_cost(train, 4, 0.2)), \
        "each pass sets up and times every case again"
    fit = Case(model="mlp_plain", mode="fit", steps=200, seeds=3)
    assert fit_cost(train[0]) == 0 and fit_cost(fit) > 0
    assert study_cost([fit], 4, 0.2) == pytest.approx(study_cost(train, 4, 0.2) + fit_cost(fit)), \
        "a fit case costs its timed rounds plus its training"
    assert study_cost([fit], 4, 0.2, passes=2) == pytest.approx(study_cost(train, 4, 0.2, passes=2) + fit_cost(fit)), \
        "training runs once, after the last pass"
    assert fit_cost(fit.replace(seeds=6)) == pytest.approx(2 * fit_cost(fit)), "training scales with seeds"
    step = fit_cost(fit.replace(steps=400)) - fit_cost(fit)
    assert step > 0 and fit_cost(fit.replace(steps=600)) - fit_cost(fit.replace(steps=400)) == pytest.approx(step), \
        "training grows linearly with steps"
    assert fit_cost(fit.replace(steps=100_000, time_budget=1.0)) < fit_cost(fit.replace(steps=100_000)), \
        "time_budget caps a seed's training"
    # a study of one long fit case outweighs three timed cases and gets a shard of its own
    plan = [(Study("timed", "", {}, {}), train * 3), (Study("fit", "", {}, {}), [fit.replace(steps=5000)])]
    assert assign(plan, 2, 4, 0.2) == [["fit"], ["timed"]]


def _shard_run(path, shard, study, env=None, run_id=None, cases=((8,), (16,)), options=None):
    rng = np.random.default_rng(0)
    recs = [record(study, {"model": "mlp", "batch_size": bs}, samples(0.01, rng)) for (bs,) in cases]
    header = {"run_id": run_id or path.stem, "created": "2026-01-01T00:00:00+0000", "suite": "test",
              "spec": {"suite": "test", "studies": [], "models": [], "set": [], "device": "cpu", "plugins": [],
                       "shard": shard}, "options": {"rounds": 8, "round_time": 0.1, **(options or {})},
              "studies": {study: {"question": "q", "axes": {"batch_size": [8, 32]}, "reference": {"batch_size": 8}}},
              "environment": dict(ENV, hostname=f"node-{shard[0]}", **(env or {}))}
    with RunWriter(path, header) as w:
        for r in recs:
            w.append(r)
    return path


def test_merge_round_trip_keeps_every_case_and_its_machine(tmp_path):
    a = _shard_run(tmp_path / "a.jsonl", "1/3", "s1")
    b = _shard_run(tmp_path / "b.jsonl", "2/3", "s2")
    path, warnings = merge_runs([a, b], tmp_path / "merged")
    header, recs = read_run(path)
    assert {(r["study"], r["case_id"]) for r in recs} == {(s, f"mlp,batch_size={bs}") for s in ("s1", "s2")
                                                          for bs in (8, 16)}
    assert {r["study"]: r["machine"]["hostname"] for r in recs} == {"s1": "node-1", "s2": "node-2"}
    assert [m["shard"] for m in header["merged_from"]] == ["1/3", "2/3"] and set(header["studies"]) == {"s1", "s2"}
    assert warnings == header["merge_warnings"] == ["missing shards: 3/3 (their studies are absent from this run)"]


def test_merge_refuses_mismatches_and_duplicates(tmp_path, capsys):
    a = _shard_run(tmp_path / "a.jsonl", "1/2", "s1")
    other_torch = _shard_run(tmp_path / "t.jsonl", "2/2", "s2", env={"torch": "2.0.0"})
    other_commit = _shard_run(tmp_path / "c.jsonl", "2/2", "s2", env={"git": {"commit": "b" * 40, "dirty": False}})
    same_shard = _shard_run(tmp_path / "d.jsonl", "1/2", "s2")
    same_case = _shard_run(tmp_path / "e.jsonl", "2/2", "s1")
    other_passes = _shard_run(tmp_path / "p.jsonl", "2/2", "s2", options={"passes": 2})
    no_anchor = _shard_run(tmp_path / "n.jsonl", "2/2", "s2", options={"anchor": False})
    out = tmp_path / "out"
    for other, match in ((other_torch, "torch: '2.14.1'"), (other_commit, "code commit"),
                         (other_passes, "option passes: 1 in a.jsonl vs 2 in p.jsonl"),
                         (no_anchor, "option anchor: None in a.jsonl vs False in n.jsonl"),
                         (same_shard, "shard 1/2 given twice"), (same_case, "is in two runs"), (a, "given twice")):
        with pytest.raises(UsageError, match=match):
            merge_runs([a, other], out)
    assert not out.exists() or not any(out.iterdir()), "a refused merge wrote a file"
    assert main(["merge", str(a), str(other_torch), "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--allow-mixed" in err, err
    path, warnings = merge_runs([a, other_torch], out, allow_mixed=True)
    assert any("torch" in w for w in warnings) and read_run(path)[0]["merge_warnings"] == warnings


def test_report_of_a_merged_run_names_machines_and_warns_on_a_split_study(tmp_path):
    from sciml_bench.report.build import collect

    a = _shard_run(tmp_path / "a.jsonl", "1/2", "s1", cases=((8,),))
    b = _shard_run(tmp_path / "b.jsonl", "2/2", "s1", cases=((16,),))  # a study split over machines
    path, _ = merge_runs([a, b], tmp_path / "m")
    rep, _ = collect([path])
    rows = rep.sections[0].rows
    assert {r["machine"] for r in rows} == {"node-1", "node-2"}
    assert any("study s1 compares numbers measured on different machines" in w for w in rep.env_warnings)
    assert json.loads(path.read_text().splitlines()[0])["spec"]["shard"] == ""
