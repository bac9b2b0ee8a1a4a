"""Recommend: the fastest configuration of one model on this machine, within a memory limit and an accuracy tolerance.

``space`` says what can be tried here (and why not the rest), ``search`` times the candidates as
in-memory studies through the runner into one run file, ``answer`` reads the answer back from it.
``recommend(...)`` is the Python API; ``sciml-bench recommend`` the command.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sciml_bench.recommend.space import KNOBS, Request

__all__ = ["KNOBS", "Recommendation", "Request", "read_recommendation", "recommend"]


@dataclass
class Recommendation:
    """A recommend run's answer: ``knobs`` (what to change; empty: keep the baseline), its ``speedup``
    over the baseline with the final comparison's CI (``ci_low``, ``ci_high``; None when nothing was
    chosen), its peak ``memory`` in bytes, ``set_line`` (the ``--set`` form), ``snippet`` (Python for
    your own training loop) and ``table`` (every candidate with its fate; one row each)."""

    path: Path
    model: str
    knobs: dict[str, Any]
    speedup: float | None
    ci_low: float | None
    ci_high: float | None
    memory: float | None
    memory_limit: int | None
    set_line: str
    snippet: str
    why: str | None
    objective: str | None
    table: pd.DataFrame
    not_tried: list[dict[str, str]] = field(default_factory=list)


def read_recommendation(path: str | os.PathLike) -> Recommendation:
    """The answer stored in a recommend run file (UsageError for a run that is not one)."""
    from sciml_bench.errors import UsageError
    from sciml_bench.recommend.answer import summary, table
    from sciml_bench.results import read_run

    header, records = read_run(path)
    if not header.get("recommend"):
        raise UsageError(f"{path} is not a recommend run (sciml-bench recommend)")
    if not header["recommend"].get("finished"):
        raise UsageError(f"{path}: the recommend run did not finish (interrupted), so it has no answer")
    s = summary(header, records)
    sp = s["speedup"] or {}
    rows = pd.DataFrame([{"config": r.config, "fate": r.fate, "speedup": r.speedup, "ci_low": r.ci_low,
                          "ci_high": r.ci_high, "memory_bytes": r.memory, "stage": r.stage, "reason": r.reason,
                          "case_id": r.case_id, **{f"knob_{k}": v for k, v in r.knobs.items()}}
                         for r in table(header, records)])
    return Recommendation(Path(path), header["recommend"]["request"]["model"], s["knobs"], sp.get("value"),
                          sp.get("ci_low"), sp.get("ci_high"), s["memory"], s["memory_limit"], s["set"], s["snippet"],
                          s["why"], s["objective"], rows, s["not_tried"])


def recommend(model: str, *, mode: str = "train", device: str = "auto", memory_limit: int | str | None = None,
              tolerance: float = 0.05, budget: float | str = 600.0, batch_size: int | None = None,
              overrides: Mapping[str, Any] | Iterable[str] = (), knobs: Iterable[str] = KNOBS,
              max_batch_size: int = 1024, fit_steps: int = 60, seeds: int = 3, plugins: Iterable[str] = (),
              out: str | os.PathLike = "results", options: Any = None,
              say: Callable[[str], None] = lambda s: None) -> Recommendation:
    """Search the fastest configuration of ``model`` (``sciml-bench recommend``) and return the answer.

    Parameters
    ----------
    model, mode: a zoo or plugin model (``plugins``: modules that register it); train or infer.
    memory_limit: bytes, or text with a unit ("2GiB"); None: 90 % of the GPU memory free, or half the free RAM.
    tolerance: relative; a candidate that changes the numerics (precision, compile, batch size) must
        keep its final validation loss (a short fit over ``seeds``) within it of the baseline's.
    budget: seconds, or text ("10m"); the search stops within it and logs what it did not try.
    batch_size: pin the batch size (not searched; the objective is then step time).
    overrides: baseline Case fields, as ``{"width": 64}`` or ``["width=64"]``.
    knobs: the knobs to search (default all). options: ``search.SearchOptions`` (rounds, passes).

    Raises UsageError for bad input before any file is written (unknown model, a non-positive
    tolerance or budget, a memory limit below the smallest configuration).
    """
    from sciml_bench.cases import parse_assignment
    from sciml_bench.errors import UsageError
    from sciml_bench.recommend.search import SearchOptions, search
    from sciml_bench.units import parse_bytes, parse_duration

    try:
        limit = parse_bytes(memory_limit) if isinstance(memory_limit, str) else memory_limit
        seconds = parse_duration(budget) if isinstance(budget, str) else budget
    except ValueError as e:
        raise UsageError(str(e)) from None
    base = dict(overrides) if isinstance(overrides, Mapping) else dict(parse_assignment(a) for a in overrides)
    req = Request(model, mode, device, base, batch_size, limit, tolerance, seconds, tuple(knobs), max_batch_size,
                  fit_steps, seeds, tuple(plugins))
    return read_recommendation(search(req, out, options or SearchOptions(), say=say))
