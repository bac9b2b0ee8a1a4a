"""Fixed-budget training: determinism, the PINN reaches cos t, the Burgers data solver converges, fit cases
validate and run through the runner's workers."""
import json

import pytest
import torch

from sciml_bench.cases import Case
from sciml_bench.errors import UsageError
from sciml_bench.tasks import get_task
from sciml_bench.training import TRAIN_SIZE, VAL_SIZE, fit, fit_seed


def _data(case):
    from sciml_bench.models import get_model_spec

    task = get_task(case.model)
    knobs = get_model_spec(case.model).merged(case.knobs)
    return (task, task.make(TRAIN_SIZE, torch.Generator().manual_seed(1), knobs),
            task.make(VAL_SIZE, torch.Generator().manual_seed(2), knobs))


def test_same_seed_gives_a_bit_identical_cpu_curve():
    case = Case(model="mlp", mode="fit", depth=3, width=16, steps=40, seeds=1, eval_every=10)
    runs = [fit_seed(case, *_data(case)) for _ in range(2)]
    assert runs[0]["train_curve"] == runs[1]["train_curve"], "train curves differ between two runs of one seed"
    assert [v[:2] for v in runs[0]["val_curve"]] == [v[:2] for v in runs[1]["val_curve"]]
    other = fit_seed(case.replace(seed=1), *_data(case))
    assert other["train_curve"] != runs[0]["train_curve"], "a different seed must change the curve"


def test_pinn_reaches_cos_t_at_a_modest_budget():
    case = Case(model="pinn_oscillator", mode="fit", width=32, batch_size=64, lr=1e-2, steps=800, seeds=1,
                eval_every=800)
    out = fit_seed(case, *_data(case))
    assert out["diverged_step"] is None
    assert out["metric"] < 1e-2, f"PINN relative L2 error against cos t is {out['metric']:.3g} after 800 steps"


def test_burgers_solver_converges_under_refinement():
    from sciml_bench.data.fields import burgers_1d

    def solve(**kw):
        return burgers_1d(4, 64, torch.Generator().manual_seed(0), dtype=torch.float64, **kw)[1]

    ref = solve(n_solver=256, dt=1e-3)
    err = lambda u: ((u - ref).norm() / ref.norm()).item()  # noqa: E731
    in_time = [err(solve(n_solver=256, dt=dt)) for dt in (0.2, 0.1, 0.05)]
    assert in_time[0] > in_time[1] > in_time[2]
    assert all(a / b > 8 for a, b in zip(in_time, in_time[1:])), f"RK4 should gain ~16x per halving: {in_time}"
    in_space = [err(solve(n_solver=n, dt=1e-3)) for n in (16, 32, 48)]
    assert in_space[0] > in_space[1] > in_space[2], f"spectral error must fall with resolution: {in_space}"


def test_fit_fields_are_validated():
    with pytest.raises(UsageError, match="applies to mode='fit' only"):
        Case(steps=10)
    with pytest.raises(UsageError, match="seeds must be a positive integer"):
        Case(mode="fit", seeds=0)
    with pytest.raises(UsageError, match="clip must be a finite positive"):
        Case(mode="fit", clip=-1.0)
    with pytest.raises(UsageError, match="dataset does not apply"):
        Case(mode="fit", dataset="memmap")


def test_fit_reports_seeds_ci_target_clipping_and_json_safe_divergence():
    case = Case(model="mlp", mode="fit", depth=2, width=8, steps=20, seeds=2, target=10.0, clip=1e-3)
    out = fit(case)
    m = out["metrics"]
    assert m["final_val_loss"]["n"] == 2 and len(m["final_val_loss"]["samples"]) == 2
    assert m["steps_to_target"]["value"] == 0.0, "loss starts below a target of 10"
    assert m["clipped_fraction"]["value"] == 1.0, "a 1e-3 clip norm clips every step"
    assert out["fit"]["task"] == "function2d" and out["fit"]["metric"] == "rel_l2"
    bad = fit(Case(model="mlp", mode="fit", depth=2, width=8, steps=20, seeds=1, lr=1e12, optimizer="sgd"))
    assert bad["metrics"]["diverged_seeds"]["value"] == 1 and "final_val_loss" in bad["absent"]
    json.dumps(bad, allow_nan=False)  # non-finite points are stored as None
    timed = fit(Case(model="mlp", mode="fit", depth=2, width=8, steps=50, seeds=1, time_budget=1e-9))
    assert timed["fit"]["steps_run"] == [1], "a time budget stops training at the first check past it"


def test_fit_case_runs_in_the_runner_with_timing_beside_convergence(tmp_path):
    from sciml_bench.cases import Study
    from sciml_bench.runner import RunOptions, run_chunk

    study = Study("fit", "", {"mode": "fit"}, {"model": ["mlp"]})
    cases = [Case(model="mlp", mode="fit", depth=2, width=8, steps=10, seeds=2),
             Case(model="mlp", mode="fit", depth=2, width=8, steps=10, seeds=1, precision="fp16")]
    recs = run_chunk(study, cases, RunOptions(rounds=2, round_time=0.01, timeout=120), tmp_path)
    ok, skipped = recs
    assert ok["status"] == "ok", ok.get("reason")
    assert {"step_time", "final_val_loss", "rel_l2", "grad_ratio_init"} <= set(ok["metrics"])
    assert len(ok["curves"]) == 2 and ok["curves"][0]["train"], "one downsampled curve per seed"
    # energy needs a GPU's NVML counter: on this CPU one absent reason, no figure (not 0), no fit energy
    assert not {"energy_per_step", "avg_power", "energy_to_target"} & set(ok["metrics"])
    assert ok["absent"]["energy_per_step"].startswith("case ran on CPU"), ok["absent"]
    assert skipped["status"] == "skipped" and "CUDA" in skipped["reason"]
