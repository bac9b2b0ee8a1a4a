"""Synthetic run files for report/compare/history tests: real file format, seeded samples, no timers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sciml_bench.cases import make_case
from sciml_bench.results import RunWriter
from sciml_bench.stats import paired_ratio, summarize

ENV = {"python": "3.11.7", "os": "Linux test", "hostname": "testhost", "cpu_model": "Test CPU", "cpu_cores_logical": 2,
       "torch": "2.14.1", "cuda": None, "cudnn": None, "gpu_name": None, "git": {"commit": "a" * 40, "dirty": False},
       "fingerprint": "testfp"}


def samples(median: float, rng: np.random.Generator, rounds: int = 8, calls: int = 10, noise: float = 0.03
            ) -> list[list[float]]:
    """Per-round per-call times around ``median`` with per-round drift and per-call noise."""
    return [list(median * np.exp(rng.normal(0, noise)) * np.exp(rng.normal(0, noise, calls))) for _ in range(rounds)]


def record(study: str, case: dict[str, Any], raw: list[list[float]], mem: float = 1e6, flops: float = 1e9,
           status: str = "ok", reason: str | None = None) -> dict[str, Any]:
    c = make_case(case)
    rec: dict[str, Any] = {"study": study, "case_id": c.case_id, "case": c.to_dict(), "status": status,
                           "reason": reason, "metrics": {}, "absent": {}}
    if status != "ok":
        return rec
    med = [float(np.median(r)) for r in raw]
    s = summarize(med)
    rec["metrics"] = {
        "step_time": {"value": s["median"], "unit": "s", "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                      "iqr": s["iqr"], "n": s["n"], "samples": med, "raw": raw},
        "throughput": {"value": c.batch_size / s["median"], "unit": "samples/s"},
        "peak_cpu_tensor_bytes": {"value": mem, "unit": "B"},
        "flops": {"value": flops, "unit": "FLOP"},
        "flop_rate": {"value": flops / s["median"], "unit": "FLOP/s"}}
    return rec


def add_ratio(rec: dict[str, Any], ref: dict[str, Any]) -> None:
    pr = paired_ratio(rec["metrics"]["step_time"]["samples"], ref["metrics"]["step_time"]["samples"])
    rec["metrics"]["time_ratio"] = {"value": pr["ratio"], "unit": "x", "ci_low": pr["ci_low"],
                                    "ci_high": pr["ci_high"], "n": pr["n"], "reference": ref["case_id"]}
    rec["metrics"]["memory_ratio"] = {"value": rec["metrics"]["peak_cpu_tensor_bytes"]["value"] /
                                      ref["metrics"]["peak_cpu_tensor_bytes"]["value"], "unit": "x",
                                      "reference": ref["case_id"]}


def write_run(path: Path, records: list[dict[str, Any]], studies: dict[str, Any], run_id: str = "run-a",
              created: str = "2026-01-01T00:00:00+0000", env: dict[str, Any] | None = None,
              peak: bool = True) -> Path:
    header = {"run_id": run_id, "created": created, "suite": "test", "suite_file": "test.toml",
              "spec": {}, "options": {"rounds": 8, "round_time": 0.1}, "studies": studies,
              "environment": dict(ENV, **(env or {}))}
    if peak:
        header["machine_peak"] = {"device": "cpu", "size": 1024, "threads": 2, "seconds": 1.0, "absent": {},
                                  "metrics": {"fp32": {"value": 5e10, "unit": "FLOP/s", "n": 5}}}
    with RunWriter(path, header) as w:
        for r in records:
            w.append(r)
    return path


def study_run(path: Path, seed: int = 0, scale: float = 1.0, study: str = "batch", run_id: str = "run-a",
              created: str = "2026-01-01T00:00:00+0000", env: dict[str, Any] | None = None,
              failed: bool = True) -> Path:
    """A batch-size study (mlp train, bs 8/32/128, reference bs 8) plus an infer case and a failed case.

    ``scale`` multiplies every time (an injected slowdown)."""
    rng = np.random.default_rng(seed)
    recs = []
    for bs, t in ((8, 0.010), (32, 0.025), (128, 0.080)):
        recs.append(record(study, {"model": "mlp", "mode": "train", "batch_size": bs},
                           samples(t * scale, rng), mem=1e6 * (1 + bs / 32)))
    for r in recs:
        add_ratio(r, recs[0])
    recs.append(record(study, {"model": "mlp", "mode": "infer", "batch_size": 8}, samples(0.003 * scale, rng),
                       mem=3e5))
    if failed:
        recs.append(record(study, {"model": "resnet18", "mode": "train", "batch_size": 8}, [], status="oom",
                           reason="worker killed by SIGKILL"))
    studies = {study: {"question": "How does step time scale with batch size?",
                       "axes": {"batch_size": [8, 32, 128]}, "reference": {"batch_size": 8},
                       "metrics": ["time", "memory", "flops"]}}
    return write_run(path, recs, studies, run_id=run_id, created=created, env=env)
