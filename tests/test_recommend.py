"""recommend: the space and its refusals, the memory and accuracy rules, the answer read back, bad input, and
one real search through the runner."""
import json
from types import SimpleNamespace

import pytest

from sciml_bench.cases import Case
from sciml_bench.recommend.answer import accuracy_verdict, fate_of, snippet, summary, table
from sciml_bench.recommend.space import Request, Space, build_space, find_batch_sizes
from tests.conftest import ROOT


def _rec(case: Case, *, ratio=None, ci=(None, None), peak=None, study="screen", status="ok", **metrics):
    m = dict(metrics)
    if ratio is not None:
        m["time_ratio"] = {"value": ratio, "ci_low": ci[0], "ci_high": ci[1], "ci_method": "rerun interval"}
    if peak is not None:
        m["peak_cpu_tensor_bytes"] = {"value": peak}
    m["step_time"] = {"value": 0.01 * (ratio or 1)}
    return {"study": study, "case_id": case.case_id, "case": case.to_dict(), "status": status, "reason": None,
            "metrics": m, "absent": {}}


def test_fp16_and_cuda_compile_modes_are_not_available_on_a_cpu_with_the_reason():
    space = build_space(Request("small_cnn", device="cpu"))
    out = {(x["knob"], x["value"]): x for x in space.excluded}
    assert "fp16" not in space.values["precision"] and "bf16" in space.values["precision"]
    assert out[("precision", "fp16")]["fate"] == "not available here"
    assert "CUDA" in out[("precision", "fp16")]["reason"], out[("precision", "fp16")]
    assert out[("compile", "reduce-overhead")]["fate"] == "not available here"
    assert space.values["channels_last"] == [False, True], "small_cnn is convolutional: channels_last is searched"
    mlp = build_space(Request("mlp", device="cpu"))
    assert "channels_last" not in mlp.values and any(x["knob"] == "channels_last" and "not convolutional" in x["reason"]
                                                     for x in mlp.excluded)


def test_a_measured_peak_over_the_limit_is_never_a_candidate_and_the_answer_stays_under_it():
    """The fastest configuration (batch 256) is over a limit that the next one (batch 64) is under: the fastest
    is 'over memory', the chosen one is the fastest under the limit."""
    base = Case(model="mlp", batch_size=32)
    fast, ok = base.replace(batch_size=256), base.replace(batch_size=64)
    limit = 10_000
    assert fate_of(_rec(fast, ratio=2.0, peak=limit + 1), limit, 32, "screen")[0] == "over memory"
    fate, why = fate_of(_rec(ok, ratio=1.0, peak=limit - 1), limit, 32, "screen")
    assert fate == "slower" and "2.00x" in why, why  # twice the batch in the same time: twice the throughput
    header = {"spec": {"device": "cpu"}, "recommend": {
        "baseline": base.to_dict(), "baseline_id": base.case_id, "final_study": "final", "chosen": ok.case_id,
        "space": {"memory_limit": limit, "excluded": [{"knob": "precision", "value": "fp16",
                                                       "fate": "not available here", "reason": "needs CUDA"}]},
        "candidates": {fast.case_id: {"knobs": {"batch_size": 256}, "fate": "over memory", "reason": "peak"},
                       ok.case_id: {"knobs": {"batch_size": 64}, "fate": "chosen", "reason": "fastest"}}}}
    records = [_rec(fast, ratio=2.0, peak=limit + 1), _rec(base, ratio=1.0, ci=(1, 1), peak=900, study="final"),
               _rec(ok, ratio=0.8, ci=(0.5, 1.0), peak=limit - 1, study="final")]
    rows = table(header, records)
    assert [r.fate for r in rows] == ["chosen", "over memory", "not available here"], rows
    s = summary(header, records)
    assert s["memory"] <= limit and s["knobs"] == {"batch_size": 64}
    # throughput: 2x the samples per step, a step-time ratio 0.8 [0.5-1.0] -> 2.5x [2.0-4.0]
    assert s["speedup"]["value"] == pytest.approx(2.5) and (s["speedup"]["ci_low"], s["speedup"]["ci_high"]) == \
        pytest.approx((2.0, 4.0))
    assert s["set"] == "--set batch_size=64"


def test_the_default_gpu_limit_is_most_of_the_memory_free_not_the_cards_total(monkeypatch):
    """Other processes and this one's CUDA context hold part of the card: its total would admit
    configurations that cannot be allocated."""
    import torch

    from sciml_bench.recommend.space import default_memory_limit

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (40 * 2 ** 30, 80 * 2 ** 30))  # (free, total)
    limit, source = default_memory_limit("cuda")
    assert limit == int(0.9 * 40 * 2 ** 30) and "90% of the GPU memory free" in source, (limit, source)


def test_the_batch_finder_stops_at_the_limit_without_allocating_far_above_it():
    """Peak memory linear in the batch: after two probes a size predicted over the limit is not probed."""
    probed = []

    def probe(case):
        probed.append(case.batch_size)
        return 1000 + 100 * case.batch_size

    space = Space(Case(model="mlp", batch_size=32), {})
    assert find_batch_sizes(space, 1000 + 100 * 100, 1024, pinned=False, probe=probe) == [32, 64]
    assert probed == [32, 64], "batch 128 is predicted over the limit from 32 and 64, so it is never built"
    from sciml_bench.errors import UsageError

    with pytest.raises(UsageError, match="below the smallest configuration"):
        find_batch_sizes(Space(Case(model="mlp", batch_size=4), {}), 500, 1024, pinned=False, probe=probe)


def test_snippet_is_python_that_applies_every_chosen_knob():
    code = snippet({"precision": "fp16", "compile": "max-autotune", "channels_last": True, "batch_size": 128})
    compile(code, "<snippet>", "exec")
    for part in ("torch.autocast('cuda', dtype=torch.float16)", "GradScaler", "scaler.scale(loss).backward()",
                 "torch.compile(model, mode='max-autotune')", "channels_last", "batch_size=128"):
        assert part in code, f"{part!r} missing from:\n{code}"
    assert "autocast" not in snippet({}), "the baseline runs in fp32: no autocast"


def test_an_inaccurate_bf16_path_is_rejected_with_its_reason_and_an_exact_one_accepted():
    """A real short fit over seeds of a model whose output gets noise under autocast: bf16's final loss is
    far outside the tolerance, and says so; fp32 against itself is the same ratio for every seed: exact."""
    import importlib

    importlib.import_module("tests.recommend_models")  # registers noisy_bf16
    from sciml_bench.training import fit

    recs = {}
    for p in ("fp32", "bf16"):
        c = Case(model="noisy_bf16", mode="fit", precision=p, steps=15, seeds=2, batch_size=32)
        f = fit(c)
        recs[p] = {"status": "ok", "case": c.to_dict(), "metrics": f["metrics"], "absent": f["absent"]}
    bad = accuracy_verdict(recs["bf16"], recs["fp32"], 0.05)
    assert not bad["accepted"] and bad["ratio"] > 2 and "above 1 + 5%" in bad["reason"], bad
    same = accuracy_verdict(recs["fp32"], recs["fp32"], 0.05)
    assert same["accepted"] and same["ci_high"] == pytest.approx(1.0), same


@pytest.mark.parametrize("args, message", [
    (["no_such_model"], "unknown model"),
    (["mlp", "--tolerance", "0"], "--tolerance must be a finite positive number"),
    (["mlp", "--tolerance", "-0.1"], "--tolerance must be a finite positive number"),
    (["mlp", "--budget", "0s"], "--budget"),
    (["mlp", "--budget", "soon"], "--budget"),
    (["mlp", "--memory-limit", "lots"], "--memory-limit"),
    (["mlp", "--memory-limit", "16B", "--device", "cpu"], "below the smallest configuration"),
    (["mlp", "--knobs", "precision,colour"], "unknown knob"),
    (["mlp", "--set", "precision=bf16"], "searches this knob"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    from sciml_bench.cli import main

    out = tmp_path / "results"
    assert main(["recommend", *args, "--out", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists(), "bad input must not create the results directory"


def test_a_real_search_through_the_runner_answers_under_the_limit_and_is_a_normal_run_file(tmp_path, capsys):
    """mlp, precision x batch size, a limit that the largest batch sizes are over: every stage through the
    runner, one run file whose answer is under the limit, with fp16 'not available here'; show,
    load_results and report read it."""
    from sciml_bench.cli import main
    from sciml_bench.recommend import read_recommendation
    from sciml_bench.recommend.search import SearchOptions, search
    from sciml_bench.report import build_report
    from sciml_bench.results import load_results, read_run

    limit = 60_000  # mlp width 16 depth 2: batch 256 is over it (the finder's probes say so)
    req = Request("mlp", device="cpu", base={"width": 16, "depth": 2}, memory_limit=limit, budget=90, tolerance=0.5,
                  knobs=("precision", "batch_size"), max_batch_size=256, fit_steps=8, seeds=2)
    path = search(req, tmp_path, SearchOptions(rounds=2, round_time=0.01, final_passes=2, final_rounds=2, threads=1,
                                               finalists=2, combinations=2))
    header, records = read_run(path)
    info = header["recommend"]
    assert info["finished"] and info["wall_s"] <= 90
    over = [p for p in info["space"]["batch_probes"] if not p["fits"]]
    assert over and all(p.get("peak_bytes", p.get("predicted_bytes")) > limit for p in over), info["space"]
    rec = read_recommendation(path)
    assert rec.memory is None or rec.memory <= limit
    for c in info["candidates"].values():  # every candidate measured over the limit says so, none is chosen
        r = [x for x in records if x["case"]["mode"] != "fit" and x["case_id"] in info["candidates"]]
        assert c["fate"] != "chosen" or all((x["metrics"].get("peak_cpu_tensor_bytes") or {}).get("value", 0) <= limit
                                            for x in r if x["case_id"] == info["chosen"])
    fp16 = rec.table[rec.table.config == "precision=fp16"]
    assert list(fp16.fate) == ["not available here"] and "CUDA" in fp16.reason.iloc[0]
    assert {"screen", "final"} <= {s["stage"] for s in info["stages"]} or info["chosen"] is None, info["stages"]
    final = [r for r in records if r["study"] == "final"]
    assert all(r["metrics"]["time_ratio"]["ci_method"].startswith("rerun interval") for r in final
               if r["status"] == "ok" and r["case_id"] != info["baseline_id"]), "the final's ratios are the runner's own"
    assert set(load_results(path).study) >= {"screen"}
    assert main(["show", str(path)]) == 0 and "recommend mlp" in capsys.readouterr().out
    report = build_report([path], tmp_path / "report")
    md = (report / "report.md").read_text()
    assert "Recommendation: mlp (train)" in md and "not available here" in md and "```python" in md
    json.dumps(info)  # the header stays plain JSON


def test_a_baseline_over_the_limit_is_never_the_answer():
    """When the baseline itself is over the memory limit, the fastest accepted candidate under it is chosen even
    though it is slower than the baseline; with the baseline under the limit, a slower candidate is not chosen."""

    from sciml_bench.recommend.search import Search

    base, small = Case(model="mlp", batch_size=32), Case(model="mlp", batch_size=8)
    limit = 10_000

    def search(base_peak):
        s = Search.__new__(Search)
        s.req, s.base = SimpleNamespace(mode="train", tolerance=0.05), base
        s.space = SimpleNamespace(memory_limit=limit, knobs_of=lambda c: {"batch_size": c.batch_size})
        s.opts = SimpleNamespace(finalists=2, final_passes=2, final_rounds=2, round_time=0.01)
        s.info, s.not_tried, s.accuracy = {}, [], {}
        s.latest = {base.case_id: _rec(base, ratio=1.0, peak=base_peak),
                    small.case_id: _rec(small, ratio=0.5, peak=limit // 4)}  # a quarter the batch in half the time
        s.cand = {small.case_id: {"knobs": {"batch_size": 8}}}
        s._judge(s.latest[small.case_id], "screen")
        s.accuracy[str(s.signature(small))] = {"accepted": True, "reason": "within tolerance"}
        s.fits_budget = lambda cases, *a: cases[:1]  # no budget left for a final comparison
        assert s.speed(small.case_id) == pytest.approx(0.5), "half the throughput of the baseline"
        return s, s.final()

    s, chosen = search(base_peak=limit + 1)
    assert chosen == small.case_id and s.cand[small.case_id]["fate"] == "chosen", s.info
    assert s.info["baseline_over_limit"] is True
    s, chosen = search(base_peak=limit - 1)
    assert chosen is None and "faster than the baseline" in s.info["chosen_reason"]


def test_a_pick_whose_speedup_ci_includes_one_says_it_is_not_clearly_faster():
    """Every committed evidence run: a pick whose final speed-up CI includes 1 says in words that it is not
    clearly faster; a pick clear of 1 reads as a plain speed-up (both kinds are among the runs)."""
    from sciml_bench.recommend.command import answer_text
    from sciml_bench.results import read_run

    words = "not clearly faster than the baseline (its CI includes 1)"
    seen = set()
    for f in sorted((ROOT / "results" / "recommend").glob("*/*-recommend-*.jsonl.gz")):
        header, records = read_run(f)
        if "recommend" not in header:
            continue  # the grid and its accuracy checks
        s, text = summary(header, records)["speedup"], "\n".join(answer_text(f))
        if s is None or not (s["ci_low"] and s["ci_high"]):
            continue  # the baseline kept, or a pick without a final CI (the answer says "no CI")
        loose = s["ci_low"] <= 1 <= s["ci_high"]
        assert (words in text) == loose, (f.name, s, text)
        assert loose or "speed-up over the baseline" in text
        seen.add(loose)
    assert seen == {True, False}, seen


def test_a_single_knob_winner_ranked_out_of_the_combinations_keeps_its_screen_measurement():
    """Halving starts with the most promising combinations only; a one-knob change that beat the baseline in the
    screen but ranks below them stays a measured candidate (it can still be checked and chosen), while the
    combinations never timed are 'not tried'. (unet_small's first evidence run lost channels_last this way.)"""

    from sciml_bench.recommend.search import Search

    base = Case(model="small_cnn", batch_size=32)
    values = {"precision": ["fp32", "bf16"], "channels_last": [False, True], "batch_size": [32, 64]}
    s = Search.__new__(Search)
    s.base, s.cand, s.latest, s.not_tried = base, {}, {}, []
    s.space = SimpleNamespace(values=values, candidate=lambda **kw: base.replace(**kw), memory_limit=10 ** 12,
                              knobs_of=lambda c: {k: getattr(c, k) for k in values if getattr(c, k) != getattr(base, k)})
    s.opts = SimpleNamespace(combinations=2)
    for (k, v), speed in {("precision", "bf16"): 1.5, ("channels_last", True): 1.1, ("batch_size", 64): 1.3}.items():
        c = base.replace(**{k: v})
        s.latest[c.case_id] = _rec(c, ratio=c.batch_size / base.batch_size / speed, peak=1000)
        s._judge(s.latest[c.case_id], "screen")
    pool = s.combinations()
    cl = base.replace(channels_last=True)
    assert len(pool) == 2 and cl not in pool
    assert s.cand[cl.case_id]["fate"] == "slower" and s.speed(cl.case_id) == pytest.approx(1.1)
    skipped = [cid for cid, c in s.cand.items() if c["fate"] == "not tried"]
    assert skipped and all(cid not in s.latest for cid in skipped), s.cand


def _accuracy_rounds(budget_s=600.0, baseline_fit_ok=True, before=lambda s: None):
    """A Search over six measured candidates whose batch-128/256 numerics fail the check; ``check_accuracy`` run
    with a fake stage. Returns (search, the stages run as (name, numerics checked))."""
    from sciml_bench.recommend.search import Budget, Search

    base = Case(model="small_cnn", batch_size=32)
    speeds = {base.replace(precision="bf16", batch_size=128): 3.0, base.replace(batch_size=256): 2.5,
              base.replace(precision="bf16", compile="default", batch_size=128): 2.2,
              base.replace(precision="bf16"): 1.6, base.replace(channels_last=True): 1.2,
              base.replace(precision="bf16", channels_last=True, batch_size=64): 1.1}
    inaccurate = {128, 256}  # the larger batches' final loss is far above the baseline's
    s = Search.__new__(Search)
    s.req, s.base, s.cand, s.latest, s.accuracy, s.info = Request("small_cnn", tolerance=0.05), base, {}, {}, {}, {}
    s.space = SimpleNamespace(memory_limit=10 ** 12, knobs_of=lambda c: {"batch_size": c.batch_size})
    s.opts = SimpleNamespace(max_live=3, finalists=2, final_rounds=2, final_passes=2, round_time=0.01)
    s.budget = Budget(budget_s, "cpu")
    s.latest[base.case_id] = _rec(base, ratio=1.0, peak=1000)
    for c, speed in speeds.items():
        s.latest[c.case_id] = _rec(c, ratio=c.batch_size / base.batch_size / speed, peak=1000)
        s._judge(s.latest[c.case_id], "halving-1")
    staged = []

    def stage(name, question, fits, rounds, round_time=None, fit_s=0.0):
        staged.append((name, [(f.precision, f.compile, f.batch_size) for f in fits[1:]]))
        loss = lambda f: [4.0 if f.batch_size in inaccurate else 1.0, 1.1 * (4.0 if f.batch_size in inaccurate else 1)]
        recs = [{"case_id": f.case_id, "case": f.to_dict(), "status": "ok",
                 "metrics": {"final_val_loss": {"samples": loss(f)}}} for f in fits]
        if not baseline_fit_ok:
            recs[0].update(status="error", reason="RuntimeError: planted", metrics={})
        return recs

    s.stage = stage
    before(s)
    s.check_accuracy()
    return s, staged


def test_a_rejected_first_round_sends_the_accuracy_check_on_to_the_next_fastest_numerics():
    """unet_small's miss: the fastest candidates were larger batches that all failed the accuracy check, and the
    batch-32 bf16 winner behind them was never checked. Now a rejection checks on, fastest first, round by
    round, until the finalists' numerics have verdicts; the next-fastest accepted candidate is then eligible."""
    s, staged = _accuracy_rounds()
    base = s.base
    assert staged == [("accuracy", [("bf16", "none", 128), ("fp32", "none", 256)]),
                      ("accuracy-r2", [("bf16", "default", 128), ("bf16", "none", 32)])], staged
    assert s.accepted(base.replace(precision="bf16")) and s.accepted(base.replace(channels_last=True))
    assert s.accepted(base.replace(precision="bf16", batch_size=128)) is False
    assert s.accepted(base.replace(precision="bf16", channels_last=True, batch_size=64)) is None, \
        "the finalists had verdicts: batch 64's numerics were not checked"


def test_accuracy_rounds_stop_when_the_baseline_fit_fails_or_the_budget_cuts_a_round_short():
    """A failed baseline fit judges nothing: one round, its candidates rejected with that reason, no second round.
    A budget that fits only part of a round: the rest is 'no time left', and no later round checks slower
    numerics in their place."""
    s, staged = _accuracy_rounds(baseline_fit_ok=False)
    assert [name for name, _ in staged] == ["accuracy"], staged
    v = s.accuracy[str(s.signature(s.base.replace(precision="bf16", batch_size=128)))]
    assert not v["accepted"] and v["reason"].startswith("the baseline's fit error"), v
    assert s.accepted(s.base.replace(precision="bf16")) is None, "left unjudged: final() calls it not tried"
    def room_for_one(s):  # the budget left: the final comparison's reserve and a round of one candidate, no more
        first = s.base.replace(precision="bf16", batch_size=128)
        fits = [s.fit_case(c) for c in (s.base, first)]
        final = s.budget.stage([s.base] * 3, 2, 0.01, 2)
        s.budget.seconds = final + s.budget.stage(fits, 1, 0.02, 1, sum(map(s.fit_cost, (s.base, first)))) + 1.0

    s, staged = _accuracy_rounds(before=room_for_one)
    assert staged == [("accuracy", [("bf16", "none", 128)])], staged
    assert s.accuracy[str(s.signature(s.base.replace(batch_size=256)))]["reason"].startswith("budget: its accuracy")
    assert s.accepted(s.base.replace(precision="bf16")) is None, "no slower numerics checked in their place"
