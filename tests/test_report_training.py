"""Fit records downstream: convergence claims with seed CIs, compare's quality family, load_curves, report view."""
import numpy as np

from sciml_bench.cases import make_case
from sciml_bench.compare import compare_runs
from sciml_bench.report.claims import convergence_claims
from sciml_bench.results import RunWriter, load_curves


def fit_record(study, case, val_losses, metric=None, steps_to_target=None, grad_ratio=None, dead_end=None,
               step_time=1e-3, reference=None):
    c = make_case(dict(case, mode="fit"))

    def m(samples, unit="loss"):
        return {"value": float(np.mean(samples)), "unit": unit, "samples": list(samples), "n": len(samples),
                "ci_low": float(np.min(samples)), "ci_high": float(np.max(samples))}

    metrics = {"final_val_loss": m(val_losses), "rel_l2": m(metric or [v ** 0.5 for v in val_losses], "rel_l2"),
               "step_time": {"value": step_time, "unit": "s", "samples": [step_time] * 3},
               "diverged_seeds": {"value": 0, "unit": "count", "n": 3}}
    if steps_to_target:
        metrics["steps_to_target"] = m(steps_to_target, "steps")
    if grad_ratio:
        metrics["grad_ratio_init"] = m(grad_ratio, "x")
    if dead_end is not None:
        metrics["dead_fraction_end"] = {"value": dead_end, "unit": "fraction"}
    if reference:
        metrics["time_ratio"] = {"value": 1.0, "reference": reference}
    curves = [{"seed": s, "train": [[1, 1.0], [2, 0.5 + s]], "val": [[0, 1.0, 0.0], [2, v, 0.01]]}
              for s, v in enumerate(val_losses)]
    return {"study": study, "case_id": c.case_id, "case": c.to_dict(), "status": "ok", "reason": None,
            "metrics": metrics, "absent": {}, "curves": curves, "gradients": {},
            "fit": {"task": "function2d", "metric": "rel_l2", "higher_is_better": False, "steps": c.steps,
                    "seeds": [0, 1, 2], "target": 0.1 if steps_to_target else None}}


def _verdicts(records):
    return {c.claim.split(" (")[0]: c for c in convergence_claims([dict(r, _run="r") for r in records])}


def test_convergence_claims_get_verdicts_with_seed_cis():
    base = {"model": "mlp", "depth": 8}
    recs = [fit_record("init", dict(base, init="default"), [0.10, 0.11, 0.12]),
            fit_record("init", dict(base, init="kaiming_normal"), [0.020, 0.021, 0.022]),
            fit_record("init", dict(base, init="zeros"), [0.50, 0.50, 0.51]),
            fit_record("act", dict(base, activation="sigmoid", depth=4), [0.1] * 3, grad_ratio=[0.1, 0.11, 0.12]),
            fit_record("act", dict(base, activation="sigmoid", depth=16), [0.4, 0.41, 0.42],
                       grad_ratio=[1e-5, 2e-5, 3e-5]),
            fit_record("act", dict(base, activation="relu", depth=16), [0.05, 0.051, 0.052]),
            fit_record("norm", dict(base, norm="none", batch_size=2), [0.2, 0.21, 0.22]),
            fit_record("norm", dict(base, norm="batch", batch_size=2), [0.8, 0.82, 0.84]),
            fit_record("norm", dict(base, norm="none", batch_size=64), [0.1, 0.11, 0.12], steps_to_target=[200] * 3),
            fit_record("norm", dict(base, norm="batch", batch_size=64), [0.05, 0.051, 0.052],
                       steps_to_target=[50, 55, 60])]
    v = _verdicts(recs)
    he = v["Xavier / He"]
    assert he.verdict == "holds" and he.evidence[0].value < 0.25 and he.evidence[0].ci_high < 1
    assert v["Zero / constant initialization fails to train"].verdict == "holds"
    assert v["Sigmoid gradients vanish with depth"].verdict == "holds"
    assert v["BatchNorm hurts at a tiny batch"].verdict == "holds"
    speed = v["Normalization gives 2-10x faster convergence"]
    assert speed.verdict == "holds" and 3 < speed.evidence[0].value < 4.5
    assert v["Residual"].verdict == "not measured" and "depth-skips" in v["Residual"].summary()


def test_compare_quality_tells_converges_worse_from_runs_slower(tmp_path):
    case = {"model": "mlp", "depth": 4}
    header = {"run_id": "x", "environment": {}}
    paths = []
    for name, losses, t in (("base", [0.10, 0.11, 0.12], 1e-3), ("new", [0.30, 0.31, 0.33], 1e-3)):
        p = tmp_path / f"{name}.jsonl"
        with RunWriter(p, dict(header, run_id=name)) as w:
            w.append(fit_record("s", case, losses, step_time=t))
        paths.append(p)
    cmp = compare_runs(*paths, fail_on=("quality",))
    rows = {r.metric: r for r in cmp.rows}
    assert rows["final_val_loss"].verdict == "worse" and rows["final_val_loss"].family == "quality"
    assert rows["step_time"].verdict == "unchanged", "same step time: it converges worse, it does not run slower"
    assert cmp.exit_code == 1
    assert compare_runs(*paths, fail_on=("time",)).exit_code == 0
    same = compare_runs(paths[0], paths[0], fail_on=("quality",))
    assert {r.verdict for r in same.rows if r.family == "quality"} == {"unchanged"}

    df = load_curves(paths)
    assert set(df["split"]) == {"train", "val"} and df["seed"].nunique() == 3
    band = df[df.split == "val"].groupby(["run_id", "step"])["loss"].agg(["min", "max"])
    assert band.loc[("new", 2), "min"] == 0.30 and band.loc[("new", 2), "max"] == 0.33


def test_report_shows_curves_cost_benefit_and_gradient_table(tmp_path):
    from sciml_bench.report.build import build_report

    p = tmp_path / "run.jsonl"
    header = {"run_id": "r", "suite": "train", "environment": {},
              "studies": {"init": {"question": "q", "axes": {"init": ["default", "xavier_uniform"]},
                                   "reference": {"init": "default"}}}}
    with RunWriter(p, header) as w:
        w.append(fit_record("init", {"init": "default"}, [0.10, 0.11, 0.12], grad_ratio=[0.5, 0.5, 0.5]))
        w.append(fit_record("init", {"init": "xavier_uniform"}, [0.05, 0.06, 0.07], step_time=2e-3))
    out = build_report([p], tmp_path / "rep")
    figs = {f.name for f in (out / "figures").iterdir()}
    assert {"init-loss-curves.png", "init-cost-benefit.png"} <= figs
    md = (out / "report.md").read_text()
    assert "grad ratio first/last" in md and "function2d" in md
    assert "Xavier / He (Kaiming) initialization converges better" in md


def test_does_not_hurt_needs_the_whole_ci_within_the_margin():
    """BatchNorm "does not hurt" at a large batch is a non-inferiority test: holds only when the loss ratio's
    whole 95% CI is at most 1.1x; an effect of about 1 measured too noisily to say so is inconclusive."""
    base = {"model": "mlp", "depth": 8}
    tiny = [fit_record("norm", dict(base, norm="none", batch_size=2), [0.2, 0.21, 0.22]),
            fit_record("norm", dict(base, norm="batch", batch_size=2), [0.8, 0.82, 0.84])]

    def large_batch_evidence(bn_losses):
        recs = tiny + [fit_record("norm", dict(base, norm="none", batch_size=64), [0.1, 0.1, 0.1]),
                       fit_record("norm", dict(base, norm="batch", batch_size=64), bn_losses)]
        claim = _verdicts(recs)["BatchNorm hurts at a tiny batch"]
        return claim, next(e for e in claim.evidence if "does not hurt" in e.what)

    claim, ev = large_batch_evidence([0.05, 0.1, 0.2])  # no effect on average, but noisy
    assert 0.8 < ev.value < 1.2 and ev.ci_high > 1.1 and ev.holds is None, ev
    assert claim.verdict != "holds", claim.verdict
    claim, ev = large_batch_evidence([0.100, 0.101, 0.102])  # 1 % worse, tightly measured
    assert ev.ci_high <= 1.1 and ev.holds is True and claim.verdict == "holds", (ev, claim.verdict)


def test_batchnorm_below_batch_8_is_judged_by_an_interval_not_a_bare_ratio():
    """The claim needs the ratio of median final losses (batch < 8 over >= 8) to be above 1.1 by its whole
    bootstrap CI: a median ratio of ~1.3 from overlapping, noisy cases is inconclusive, where the old rule
    (ratio > 1.1) said holds; a clear gap holds."""
    from sciml_bench.report.performance_claims import performance_claims

    def claim(small, large):
        recs = [fit_record("bn", {"model": "mlp", "norm": "batch", "batch_size": bs, "seed": i}, [v] * 3)
                for bs, vals in ((2, small), (32, large)) for i, v in enumerate(vals)]
        return next(c for c in performance_claims(recs) if c.claim.startswith("BatchNorm trains poorly"))

    noisy = claim([0.13, 0.05, 0.30], [0.10, 0.02, 0.25])
    assert noisy.evidence[0].value > 1.1 and noisy.evidence[0].holds is None and noisy.verdict != "holds"
    clear = claim([0.50, 0.52, 0.55], [0.10, 0.11, 0.12])
    assert clear.evidence[0].ci_low > 1.1 and clear.verdict == "holds"


def test_normalization_lr_claim_needs_every_deciding_lr_settled_by_its_ci():
    """'10x the learning rate' holds only when the unnormalized net's larger lrs fail by their CIs (the final loss
    wholly at or above half the initial loss, which is 1.0 here); one whose CI straddles that line makes it
    inconclusive, where a bare comparison of point values said holds."""
    def claim(none_at_high):
        base = {"model": "mlp", "depth": 6, "batch_size": 64}
        recs = [fit_record("norm-lr", dict(base, norm=n, lr=lr), losses) for n, lr, losses in (
            ("none", 0.001, [0.10, 0.11, 0.12]), ("none", 0.01, none_at_high), ("none", 0.1, [0.9, 0.95, 1.0]),
            ("batch", 0.001, [0.10, 0.11, 0.12]), ("batch", 0.01, [0.10, 0.11, 0.12]),
            ("batch", 0.1, [0.10, 0.11, 0.12]))]
        return _verdicts(recs)["Normalization allows a 10x higher learning rate"]

    clear = claim([0.8, 0.85, 0.9])  # lr 0.01 fails without norm: BatchNorm's 0.1 is 100x the 0.001 that trains
    assert clear.evidence[0].value == 100 and clear.evidence[0].holds is True and clear.verdict == "holds"
    straddling = claim([0.3, 0.55, 0.8])  # mean below the line, CI across it: lr 0.01 may or may not train
    ev = straddling.evidence[0]
    assert ev.value == 100 and ev.holds is None and straddling.verdict == "inconclusive", (ev, straddling.verdict)


def test_phase_split_claim_is_judged_by_the_profiled_steps_spread():
    """The step-split claim's verdict comes from the median per-step deviation and its CI: steps that scatter
    around a split within 10 pp but too widely to say so read inconclusive; steady steps decide; a record
    without per-step samples is shown without a verdict."""
    from sciml_bench.report.performance_claims import performance_claims

    def claim(forward, backward, optimizer):
        m = {f"phase_{p}_time": {"value": float(np.mean(xs)), "samples": list(xs)}
             for p, xs in (("forward", forward), ("backward", backward), ("optimizer", optimizer))}
        m["phase_step_time"] = {"value": 1.0}
        rec = {"study": "s", "case_id": "mlp", "case": {"model": "mlp", "mode": "train", "batch_size": 8}, "status": "ok",
               "metrics": m, "_run": "r"}
        return next(c for c in performance_claims([rec]) if c.claim.startswith("A training step splits"))

    n = 12  # the seed split without data/h2d is 49/36/14 %
    steady = claim([0.49] * n, [0.36] * n, [0.15] * n)
    assert steady.evidence[0].holds is True and steady.evidence[0].ci_high <= 10
    far = claim([0.80] * n, [0.15] * n, [0.05] * n)
    assert far.evidence[0].holds is False
    rng = np.random.default_rng(0)
    scatter = claim(0.49 + rng.uniform(-0.3, 0.3, n), [0.36] * n, [0.15] * n)
    ev = scatter.evidence[0]
    assert ev.ci_low < 10 < ev.ci_high and ev.holds is None, ev
    bare = claim([0.49], [0.36], [0.15])
    assert bare.evidence[0].holds is None and bare.verdict != "holds"
