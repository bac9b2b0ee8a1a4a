"""Probes: measurements a case's knobs call for, taken once per case after its warmup.

The case worker calls ``probe(wl, first_step_s)`` on the built workload (``sciml_bench.workloads``,
where the knobs are applied) and records what it returns beside the timed rounds: compile time and
graph counts, a shape sweep's first calls and recompiles, the numerics drift of a reduced precision
against fp32, and the DataLoader's stalls and worker processes.
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch

from sciml_bench.cases import Case
from sciml_bench.cpus import affinity_count
from sciml_bench.errors import Unsupported, classify
from sciml_bench.measure.timing import device_sync
from sciml_bench.models import get_model_spec, to_device
from sciml_bench.workloads import (DTYPES, EPOCH_BATCHES, Workload, build_workload, release, set_backend_flags,
                                   torch_dynamo)

NUMERICS_STEPS = 10  # train steps compared against fp32 for the numerics drift


def probe(wl: Workload, first_step_s: float) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Measurements a case's knobs call for, taken once after warmup: (metrics, absent reasons).

    - compile: compile time (the first call), graphs, graph breaks, frames compiled;
    - shape_sweep: first-call time per extra input size and the recompilations they caused;
    - precision (train, not fp32): loss after ``NUMERICS_STEPS`` steps and its drift from fp32
      from the same seed, GradScaler skipped steps, non-finite losses;
    - dataset: data-stall fraction of a loaded train step, live DataLoader worker processes.
    """
    metrics: dict[str, dict[str, Any]] = {}
    absent: dict[str, str] = {}
    case = wl.case
    if case.compile != "none":
        _compile_metrics(first_step_s, metrics)
    if case.shape_sweep:
        _shape_sweep(wl, metrics, absent)
    if case.mode == "train" and case.precision != "fp32" and case.dataset is None:
        try:
            _numerics(case, metrics, absent)
        except Exception as e:  # noqa: BLE001  (only out of memory is an answer: the copies must not fail the case)
            if classify(e)[0] != "oom":
                raise
            absent["loss_drift"] = (f"the numerics probe's two fresh copies of the case did not fit beside it: "
                                    f"{classify(e)[1]}")
        finally:  # building the fp32 twin set its TF32 / cudnn flags: this case's again, and the copies freed
            set_backend_flags(case)
            release()
    if case.dataset is not None:
        _loader_metrics(wl, metrics)
    return metrics, absent


def dynamo_counts() -> dict[str, int]:
    """Graphs, graph breaks and frames compiled so far, from ``torch._dynamo.utils.counters``."""
    c = torch_dynamo().utils.counters
    return {"graphs": int(c["stats"]["unique_graphs"]), "graph_breaks": int(sum(c["graph_break"].values())),
            "frames": int(c["frames"]["total"]), "fxgraph_cache_hits": int(c["inductor"]["fxgraph_cache_hit"])}


def _compile_metrics(first_step_s: float, metrics: dict[str, dict[str, Any]]) -> None:
    counts = dynamo_counts()
    metrics["compile_time"] = {"value": first_step_s, "unit": "s",
                               "note": "first call of the compiled step (compilation plus one step)"}
    metrics["compiled_graphs"] = {"value": counts["graphs"], "unit": "count"}
    metrics["graph_breaks"] = {"value": counts["graph_breaks"], "unit": "count",
                               "reasons": {str(k): v for k, v in torch_dynamo().utils.counters["graph_break"].items()}}
    metrics["frames_compiled"] = {"value": counts["frames"], "unit": "count"}
    metrics["compile_cache_hits"] = {"value": counts["fxgraph_cache_hits"], "unit": "count",
                                     "note": "inductor FX-graph cache hits: a warm cache shortens compile_time"}


def sweep_sizes(case: Case) -> tuple[str, int, list[int]]:
    """(knob, base size, extra sizes) of a shape sweep: resolution or seq_len, base x 1.5, 2, 2.5, ..."""
    spec = get_model_spec(case.model)
    merged = spec.merged(case.knobs)
    for knob in ("resolution", "seq_len"):
        if knob in spec.knobs and merged.get(knob):
            base = merged[knob]
            return knob, base, [int(base * (2 + k) / 2) for k in range(1, case.shape_sweep + 1)]
    raise Unsupported(f"shape_sweep needs a model with a resolution or seq_len knob; {case.model} has neither")


def _shape_sweep(wl: Workload, metrics: dict[str, dict[str, Any]], absent: dict[str, str]) -> None:
    case = wl.case
    knob, base, sizes = sweep_sizes(case)
    spec = get_model_spec(case.model)
    compiled = case.compile != "none"
    before = dynamo_counts()["frames"] if compiled else 0
    saved = wl.inputs, wl.targets
    times = []
    sync = device_sync(wl.device)
    try:
        for size in sizes:
            x, y = spec.sample_batch(case.batch_size, wl.device, DTYPES[case.precision], seed=case.seed,
                                     **dict(case.knobs, **{knob: size}))
            wl.inputs, wl.targets = to_device(x, wl.device, DTYPES[case.precision],
                                        torch.channels_last if case.channels_last else None), y
            sync()
            t0 = time.perf_counter()
            wl.step()
            sync()
            times.append(time.perf_counter() - t0)
    finally:
        wl.inputs, wl.targets = saved
    metrics["sweep_first_call_time"] = {"value": sum(times) / len(times), "unit": "s", "samples": times,
                                        "sizes": sizes, "knob": knob, "base": base}
    if compiled:
        after = dynamo_counts()
        metrics["recompiles"] = {"value": after["frames"] - before, "unit": "count", "sizes": sizes,
                                 "graphs_after_sweep": after["graphs"],
                                 "note": "frames compiled by calls at new input sizes; TORCH_LOGS=recompiles "
                                         "shows the guard failures behind them"}
    else:
        absent["recompiles"] = "compile=none: nothing is compiled"


def _numerics(case: Case, metrics: dict[str, dict[str, Any]], absent: dict[str, str]) -> None:
    """Train fresh copies of the case and of its fp32 twin from the same seed; compare losses."""
    mine = _train_losses(build_workload(case, reset=False), NUMERICS_STEPS)  # wl's compiled code stays
    ref = _train_losses(build_workload(case.replace(precision="fp32", compile="none", dynamic=None, shape_sweep=0)),
                        NUMERICS_STEPS)
    metrics["loss_after_steps"] = {"value": mine["losses"][-1], "unit": "loss", "steps": NUMERICS_STEPS,
                                   "samples": mine["losses"]}
    metrics["fp32_loss_after_steps"] = {"value": ref["losses"][-1], "unit": "loss", "steps": NUMERICS_STEPS,
                                        "samples": ref["losses"]}
    a, b = mine["losses"][-1], ref["losses"][-1]
    if all(map(_finite, (a, b))) and b != 0:
        metrics["loss_drift"] = {"value": abs(a - b) / abs(b), "unit": "relative",
                                 "note": f"|loss - fp32 loss| / |fp32 loss| after {NUMERICS_STEPS} steps, same seed"}
    else:
        absent["loss_drift"] = f"non-finite or zero loss after {NUMERICS_STEPS} steps (this {a}, fp32 {b})"
    metrics["nonfinite_loss_steps"] = {"value": mine["nonfinite"], "unit": "count", "steps": NUMERICS_STEPS}
    metrics["nonfinite_params"] = {"value": mine["nonfinite_params"], "unit": "count"}
    if mine["skipped"] is None:
        absent["scaler_skipped_steps"] = f"no GradScaler at precision {case.precision}"
    else:
        metrics["scaler_skipped_steps"] = {"value": mine["skipped"], "unit": "count", "steps": NUMERICS_STEPS}


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _train_losses(wl: Workload, steps: int) -> dict[str, Any]:
    """Losses of ``steps`` train steps (synced after each, outside any timed region), with the
    steps GradScaler skipped (its scale dropped after an inf/NaN gradient)."""
    losses, skipped = [], 0
    for _ in range(steps):
        scale = wl.scaler.get_scale() if wl.scaler is not None else None
        wl.step()
        losses.append(float(wl.last_loss.float()))
        if wl.scaler is not None and wl.scaler.get_scale() < scale:
            skipped += 1
    bad_params = sum(int((~torch.isfinite(p)).sum()) for p in wl.model.parameters())
    return {"losses": losses, "nonfinite": sum(not _finite(v) for v in losses),
            "nonfinite_params": bad_params, "skipped": skipped if wl.scaler is not None else None}


def _loader_metrics(wl: Workload, metrics: dict[str, dict[str, Any]]) -> None:
    import psutil

    case = wl.case
    metrics["cpu_count"] = {"value": os.cpu_count(), "unit": "count",
                            "affinity": affinity_count()}
    from sciml_bench.data import default_start_method

    children = psutil.Process().children(recursive=False)
    metrics["loader_worker_processes"] = {"value": len(children), "unit": "count",
                                          "start_method": default_start_method() if case.num_workers else None,
                                          "note": "live child processes of the case worker after warmup"}
    if case.mode == "train":
        n = max(EPOCH_BATCHES, 8)
        sync = device_sync(wl.device)
        sync()
        wl.data_wait_s = 0.0
        t0 = time.perf_counter()
        for _ in range(n):
            wl.step()
        sync()
        total = time.perf_counter() - t0
        metrics["data_stall_fraction"] = {"value": wl.data_wait_s / total, "unit": "fraction", "steps": n,
                                          "wait_s": wl.data_wait_s, "total_s": total,
                                          "note": "host time waiting for the loader's next batch (its copy to the "
                                                  "device not included) / loaded train step time"}
