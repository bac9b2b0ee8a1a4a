"""Training run: a Case trained for a fixed budget over several seeds on a generated task with ground truth.

What a configuration *buys*: the loss curve, the final train/validation loss, a task metric
(relative L2 error, accuracy, PSNR, or rollout error), steps and time to a target loss, divergence,
and gradient health at initialization and at the end. It runs inside the runner's case worker
(command ``fit``), after the case's timing rounds, so speed, memory and convergence of the same
configuration land in one record.

The budget is a number of optimizer steps (``Case.steps``): a result does not depend on how loaded
the machine was. ``time_budget`` adds a wall-clock limit for users who want one. The data are
generated once per case from fixed data seeds (training pool and held-out validation set); the
case's seeds change the initialization and the minibatch order only. On the CPU the same seed
gives a bit-identical loss curve.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from sciml_bench.cases import Case
from sciml_bench.measure.energy import COUNTER_NOTE, EnergyMeter, Tally
from sciml_bench.measure.timing import device_sync
from sciml_bench.models import Batch, get_model_spec, to_device
from sciml_bench.tasks import DATA_SEED, VAL_SEED, Task, burgers_solver_error, get_task, task_metric
from sciml_bench.workloads import AUTOCAST, DTYPES, build_workload

TRAIN_SIZE = 1024  # samples in the training pool
VAL_SIZE = 256  # held-out validation samples
DIAG_BATCH = 64  # validation samples in the gradient-health batch (fixed, so cases compare)
CURVE_POINTS = 60  # most train-loss points kept per seed


# ---------------------------------------------------------------- one seed

def _batches(n: int, batch_size: int, g: torch.Generator):
    """Endless minibatch indices: a fresh permutation of the pool each epoch."""
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


def _take(x: Any, idx: torch.Tensor) -> Any:
    return tuple(t[idx] for t in x) if isinstance(x, (tuple, list)) else x[idx]


def _autocast(case: Case):
    dtype = AUTOCAST.get(case.precision)
    return torch.autocast(case.device, dtype=dtype) if dtype else contextlib.nullcontext()


def fit_seed(case: Case, task: Task, train: Batch, val: Batch, clock: Callable[[], float] = time.perf_counter,
             meter: EnergyMeter | None = None) -> dict[str, Any]:
    """Train one seed of ``case`` for its budget; return its curve, final figures and gradient health.

    ``meter`` (a GPU's, ``measure.energy``): the energy of the training steps up to the evaluation that
    first reaches the target, evaluations left out as in the time to target (``reached``)."""
    from sciml_bench.measure.gradients import gradient_health

    wl = build_workload(case)
    spec = get_model_spec(case.model)
    knobs = spec.merged(case.knobs)
    model = wl.model
    sync = device_sync(wl.device)
    dtype, mf = DTYPES[case.precision], torch.channels_last if case.channels_last else None
    val_dev = (to_device(val[0], wl.device, dtype, mf), to_device(val[1], wl.device, dtype))  # as Workload.load
    diag = (_take(val_dev[0], torch.arange(min(DIAG_BATCH, VAL_SIZE))),
            _take(val_dev[1], torch.arange(min(DIAG_BATCH, VAL_SIZE))))

    def diag_loss() -> torch.Tensor:
        with _autocast(case):
            return spec.loss(model, *diag)

    def evaluate() -> float:
        model.eval()
        with torch.enable_grad() if task.grad_eval else torch.no_grad(), _autocast(case):
            loss = spec.loss(model, *val_dev).item()
        model.train()
        return loss

    health_init = gradient_health(model, diag_loss)
    every = case.eval_every or max(1, case.steps // 10)
    log_every = max(1, case.steps // CURVE_POINTS)
    g = torch.Generator().manual_seed(case.seed)
    batches = _batches(TRAIN_SIZE, case.batch_size, g)
    train_curve: list[tuple[int, float]] = []
    pending: list[tuple[int, torch.Tensor]] = []
    val_curve: list[tuple[int, float, float]] = [(0, evaluate(), 0.0)]
    train_time, diverged, reached = 0.0, None, None
    step = 0
    # the counter is read only where the loop syncs anyway: at a segment's first step and at its evaluation
    tally = Tally(meter) if meter is not None else None
    if case.target is not None and val_curve[0][1] <= case.target:
        reached = (0, 0.0, 0.0 if tally else None)
    while step < case.steps:
        sync()
        if tally:
            tally.begin()  # no-op while a segment is open
        t0 = clock()
        idx = next(batches)
        wl.load(_take(train[0], idx), _take(train[1], idx))
        wl.step()
        step += 1
        if step % log_every == 0 or step == case.steps:
            pending.append((step, wl.last_loss))
        at_eval = step % every == 0 or step == case.steps
        if at_eval:
            sync()
        train_time += clock() - t0
        if at_eval and tally:
            tally.end()
        if at_eval or (case.time_budget is not None and train_time >= case.time_budget):
            for s, loss in pending:  # losses are read here, not inside the step: no per-step sync
                value = float(loss)
                if not math.isfinite(value) and diverged is None:
                    diverged = s
                train_curve.append((s, value))
            pending.clear()
            if diverged is not None:
                break
            vloss = evaluate()
            val_curve.append((step, vloss, train_time))
            if not math.isfinite(vloss):
                diverged = step
                break
            if reached is None and case.target is not None and vloss <= case.target:
                reached = (step, train_time, tally.joules() if tally else None)
            if case.time_budget is not None and train_time >= case.time_budget:
                break
    tail = [v for s, v in train_curve if s > step - max(case.steps // 10, log_every)]
    out: dict[str, Any] = {
        "seed": case.seed, "steps_run": step, "train_time": train_time, "diverged_step": diverged,
        "final_train_loss": sum(tail) / len(tail) if tail and diverged is None else math.nan,
        "final_val_loss": val_curve[-1][1] if diverged is None else math.nan,
        "reached": reached, "energy_broken": tally.broken if tally else None,
        "train_curve": train_curve, "val_curve": val_curve,
        "health_init": health_init,
    }
    if diverged is None:
        model.eval()
        with _autocast(case):
            out["metric"] = task_metric(task, model, *val_dev, knobs)
        model.train()
        out["health_end"] = gradient_health(model, diag_loss)
    if case.clip is not None:
        out["clipped_fraction"] = float(wl.clipped) / max(step, 1)
    return out


# ---------------------------------------------------------------- a case: all its seeds

def _json_safe(x: Any) -> Any:
    """Non-finite floats (a diverged loss, an exploded gradient) become None: JSON has no NaN."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    return x


def _downsample(points: list, n: int) -> list:
    if len(points) <= n:
        return points
    keep = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in keep]


def fit(case: Case, progress: Callable[[int], None] = lambda seed: None, meter: EnergyMeter | None = None
        ) -> dict[str, Any]:
    """Train ``case`` for ``case.seeds`` seeds (``case.seed``, ``case.seed + 1``, ...) one after another.

    Returns ``metrics`` (mean and 95% t-CI across seeds, with the per-seed samples), ``absent``
    (what could not be measured, with the reason), ``curves`` (downsampled per-seed train and
    validation curves: [step, loss] and [step, loss, train seconds]; None where non-finite),
    ``gradients`` (per-layer detail of the first seed) and ``fit`` (task, metric, budget). Raises what the workload raises (e.g. Unsupported: the case is skipped).
    ``meter`` (a GPU's, ``measure.energy``) adds ``energy_to_target`` where the case has a target.
    """
    from sciml_bench.stats import mean_ci

    task = get_task(case.model)
    knobs = get_model_spec(case.model).merged(case.knobs)
    train = task.make(TRAIN_SIZE, torch.Generator().manual_seed(DATA_SEED), knobs)
    val = task.make(VAL_SIZE, torch.Generator().manual_seed(VAL_SEED), knobs)
    runs = []
    for i in range(case.seeds):
        progress(case.seed + i)
        runs.append(fit_seed(case.replace(seed=case.seed + i), task, train, val, meter=meter))

    metrics: dict[str, dict[str, Any]] = {}
    absent: dict[str, str] = {}

    def put(name: str, values: list[float], unit: str, why_missing: str, **extra: Any) -> None:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            absent[name] = why_missing
            return
        s = mean_ci(finite)
        metrics[name] = {"value": s["mean"], "unit": unit, "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                         "n": s["n"], "samples": finite, "over": "seeds", **extra}

    div = [r["diverged_step"] for r in runs if r["diverged_step"] is not None]
    why_div = f"diverged (NaN/Inf) in {len(div)} of {len(runs)} seeds, at steps {div}"
    metrics["diverged_seeds"] = {"value": len(div), "unit": "count", "steps": div, "n": len(runs)}
    put("final_train_loss", [r["final_train_loss"] for r in runs], "loss", why_div,
        note="mean training loss over the last 10% of the steps")
    put("final_val_loss", [r["final_val_loss"] for r in runs], "loss", why_div)
    put(task.metric, [r.get("metric", math.nan) for r in runs], task.metric, why_div,
        task=task.name, higher_is_better=task.higher_is_better)
    put("fit_time", [r["train_time"] for r in runs], "s", "no seed trained",
        note="training wall time per seed (evaluation excluded); under machine load, see step_time")
    if case.target is None:
        absent["steps_to_target"] = absent["time_to_target"] = "no target set (Case.target)"
    else:
        hit = [r["reached"] for r in runs if r["reached"] is not None]
        why = f"validation loss never reached target {case.target:g} within {case.steps} steps in any seed"
        put("steps_to_target", [float(h[0]) for h in hit], "steps", why, reached=len(hit), n_seeds=len(runs))
        put("time_to_target", [h[1] for h in hit], "s", why, reached=len(hit), n_seeds=len(runs))
        if meter is not None:
            broken = sorted({r["energy_broken"] for r in runs if r["energy_broken"]})
            put("energy_to_target", [h[2] for h in hit], "J", "; ".join(broken) if hit else why, reached=len(hit),
                n_seeds=len(runs), note=f"training steps only, evaluations left out; {COUNTER_NOTE}")
    for when in ("init", "end"):
        hs = [r.get(f"health_{when}") for r in runs]
        hs = [h for h in hs if h is not None]
        why = "diverged before the end" if when == "end" else "no seed ran"
        put(f"grad_ratio_{when}", [h["grad_ratio"] for h in hs if h["grad_ratio"] is not None], "x",
            f"{why}, or fewer than two layers received gradients" if hs else why,
            note="first / last layer gradient norm")
        for key, family in (("dead_fraction", "ReLU-family"), ("saturation_fraction", "tanh/sigmoid")):
            vals = [h[key] for h in hs if h[key] is not None]
            put(f"{key}_{when}", vals, "fraction", why if not hs else f"model has no {family} activation")
        metrics[f"nonfinite_{when}"] = {"value": sum(bool(h["nonfinite"]) for h in hs), "unit": "count",
                                        "n": len(hs)}
    if case.clip is None:
        absent["clipped_fraction"] = "clipping off (Case.clip not set)"
    else:
        put("clipped_fraction", [r["clipped_fraction"] for r in runs], "fraction", "no seed ran")
    if task.name == "burgers_operator":
        metrics["solver_error"] = {"value": burgers_solver_error(knobs.get("resolution") or 64), "unit": "rel_l2",
                                   "note": "the data's own solver (256 pts, dt 1e-2) vs a refined solve "
                                           "(512 pts, dt 2.5e-3): the floor under the model's error"}

    curves = [{"seed": r["seed"], "train": _downsample(r["train_curve"], CURVE_POINTS),
               "val": [list(v) for v in r["val_curve"]]} for r in runs]
    first = runs[0]
    gradients = {w: {k: v for k, v in first[f"health_{w}"].items()} for w in ("init", "end")
                 if first.get(f"health_{w}") is not None}
    info = {"task": task.name, "description": task.description, "metric": task.metric,
            "higher_is_better": task.higher_is_better, "steps": case.steps,
            "seeds": [r["seed"] for r in runs], "steps_run": [r["steps_run"] for r in runs],
            "train_size": TRAIN_SIZE, "val_size": VAL_SIZE, "data_seeds": [DATA_SEED, VAL_SEED],
            "target": case.target, "time_budget": case.time_budget}
    return {"metrics": metrics, "absent": absent, "curves": _json_safe(curves), "gradients": _json_safe(gradients),
            "fit": info}
