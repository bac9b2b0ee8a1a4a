"""Python API for notebooks and scripts: run, compare and report, as thin wrappers over the CLI's machinery."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sciml_bench.results import load_results, read_run, resolve_run


@dataclass
class RunResult:
    """A finished run: its file, header and case records; ``frame()`` is its tidy DataFrame."""

    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def run_id(self) -> str:
        return self.header["run_id"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Records whose status is not ok (each with its reason)."""
        return [r for r in self.records if r["status"] != "ok"]

    def frame(self, samples: bool = False) -> pd.DataFrame:
        """``load_results`` of this run (``samples=True``: one row per stored sample)."""
        return load_results(self.path, samples=samples)


def run(suite: str = "quick", *, studies: Iterable[str] = (), models: Iterable[str] = (),
        overrides: Mapping[str, Any] | Iterable[str] = (), device: str = "auto", plugins: Iterable[str] = (),
        out: str | os.PathLike = "results", rounds: int | None = None, round_time: float | None = None,
        timeout: float | None = None, threads: int | None = None, max_live: int | None = None,
        hide_hostname: bool = False, progress: Callable[[str, int], None] | None = None) -> RunResult:
    """Run a suite (``sciml-bench run``) and return the finished run; no report is written.

    Parameters
    ----------
    suite: a shipped suite (smoke, quick, full) or a TOML path.
    studies, models: keep only these studies / models (globs), as ``--study`` / ``--model``.
    overrides: case fields set on every case, as ``{"batch_size": 16}`` or ``["batch_size=16"]``.
    device: auto, cpu or cuda. out: results directory.
    rounds, round_time, timeout, threads, max_live: as the CLI options (default: the suite's; max_live
    ``RunOptions.max_live``).
    progress: called as ``progress(description, n_done)`` while cases finish.

    Cases run in worker subprocesses, so a crash or hang becomes a record, never an exception
    here. Raises UsageError for bad input, before any file is written.
    """
    from sciml_bench.runner import RunSpec, execute, start_run

    sets = [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, Mapping) else list(overrides)
    spec = RunSpec(suite=str(suite), studies=list(studies), models=list(models), set=sets, device=device,
                   plugins=list(plugins))
    r = start_run(spec, out, rounds=rounds, round_time=round_time, timeout=timeout, threads=threads,
                  max_live=max_live, hide_hostname=hide_hostname)
    execute(r, progress or (lambda desc, n: None))
    header, records = read_run(r.path)
    return RunResult(r.path, header, records)


def _path(run_ref: str | os.PathLike | RunResult, results_dir: str | os.PathLike) -> Path:
    return run_ref.path if isinstance(run_ref, RunResult) else resolve_run(str(run_ref), results_dir)


def compare(base: str | os.PathLike | RunResult, new: str | os.PathLike | RunResult | None = None, *,
            results_dir: str | os.PathLike = "results", **options: Any):
    """Compare run ``new`` against ``base`` (``sciml-bench compare``); returns a ``compare.Comparison``.

    ``base`` / ``new``: a RunResult, a run file, a run id in ``results_dir``, or ``latest``. With
    ``new`` None, ``base`` is an A/B run (``sciml-bench ab``) and its arms are compared
    (``compare.compare_ab``: paired by round). ``options``: threshold, alpha, fail_on (and samples
    across runs), as ``compare.compare_runs``. The result has ``rows`` (ratio, CI, p-value, verdict
    per case), ``failures``, ``exit_code`` and ``to_dict()``.
    """
    from sciml_bench.compare import compare_ab, compare_runs

    if new is None:
        return compare_ab(_path(base, results_dir), **options)
    return compare_runs(_path(base, results_dir), _path(new, results_dir), **options)


def report(runs: str | os.PathLike | RunResult | Iterable[str | os.PathLike | RunResult],
           out: str | os.PathLike | None = None, *, title: str | None = None,
           history_dir: str | os.PathLike | None = None, results_dir: str | os.PathLike = "results") -> Path:
    """Write a report (``sciml-bench report``) and return the path of its ``index.html``.

    ``runs``: one or more runs (RunResult, file, run id or ``latest``). ``out`` defaults to
    ``reports/<first run id>``; it also holds ``report.md`` and ``figures/``.
    """
    from sciml_bench.report import build_report

    items = [runs] if isinstance(runs, (str, os.PathLike, RunResult)) else list(runs)
    paths = [_path(r, results_dir) for r in items]
    if out is None:
        out = Path("reports") / paths[0].stem
    return Path(build_report(paths, out, title=title, history_dir=history_dir)) / "index.html"
