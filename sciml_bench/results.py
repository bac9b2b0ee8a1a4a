"""Results store: one JSON-lines file per run (header, then one record per case) and load_results."""
from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from sciml_bench.errors import UsageError

SCHEMA_VERSION = 1
FORMAT = "sciml_bench.run"
STATUSES = ("ok", "error", "crashed", "timeout", "oom", "skipped")


def new_run_id(suite: str) -> str:
    """``YYYYmmdd-HHMMSS-<suite>-<hex>``: sortable by time, unique, readable."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in suite)[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{secrets.token_hex(2)}"


class RunWriter:
    """Appends records to a run file, flushing and fsyncing each so an interrupted run keeps them."""

    def __init__(self, path: Path, header: dict[str, Any] | None = None):
        self.path = Path(path)
        if header is not None:  # new run: the file must not exist yet
            line = _dumps(dict(header, type="header", format=FORMAT, schema=SCHEMA_VERSION))  # fail before creating
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "x", encoding="utf-8")
            self._write_line(line)
        else:  # resume: append after dropping a partial last line, if any
            _truncate_partial_line(self.path)
            self._fh = open(self.path, "a", encoding="utf-8")

    def _write_line(self, line: str) -> None:
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, record: dict[str, Any]) -> None:
        self._write_line(_dumps(dict(record, type="case")))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _dumps(obj: dict[str, Any]) -> str:
    """One JSON line; NaN/inf are refused (ValueError), since strict JSON readers reject them."""
    return json.dumps(obj, allow_nan=False, default=str)


def _truncate_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def read_run(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, case records) of a run file. A partial last line (killed mid-write) is ignored.

    Raises UsageError for an unreadable file, or one that is not a sciml_bench run file.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read results file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UsageError(f"{path} is not a sciml_bench results file (expected a JSON-lines file whose "
                         f"first line is a {FORMAT!r} header)")
    if header.get("schema") != SCHEMA_VERSION:
        raise UsageError(f"{path} has results schema {header.get('schema')!r}; this version reads schema "
                         f"{SCHEMA_VERSION}")
    records = []
    for i, line in enumerate(lines[1:], start=2):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                break  # partial last line from an interrupted write
            raise UsageError(f"{path}:{i}: corrupt record line") from None
    return header, [r for r in records if r.get("type") == "case"]


def run_files(path: str | os.PathLike) -> list[Path]:
    """Run files under a directory (sorted by name, i.e. by time), or the file itself."""
    p = Path(path)
    if p.is_dir():
        return sorted(p.glob("*.jsonl"))
    return [p]


def resolve_run(ref: str, results_dir: str | os.PathLike = "results") -> Path:
    """A run file from a path, a run id in ``results_dir``, or ``latest``."""
    if ref == "latest":
        files = [f for f in run_files(results_dir) if f.is_file()]
        if not files:
            raise UsageError(f"no run files (*.jsonl) in {results_dir}; run `sciml-bench run` first")
        return max(files, key=lambda f: (f.stat().st_mtime, f.name))
    p = Path(ref)
    if p.is_file():
        return p
    candidate = Path(results_dir) / f"{ref}.jsonl"
    if candidate.is_file():
        return candidate
    raise UsageError(f"no such run {ref!r}: not a file, nor {candidate}; use a path, a run id, or 'latest'")


def done_keys(records: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(study, case_id) of finished records, for ``--resume``."""
    return {(r["study"], r["case_id"]) for r in records}


def _rows(header: dict[str, Any], records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    env = header.get("environment", {})
    for r in records:
        base = {"run_id": header.get("run_id"), "created": header.get("created"), "suite": header.get("suite"),
                "fingerprint": env.get("fingerprint"), "study": r["study"], "case_id": r["case_id"],
                "status": r["status"], "reason": r.get("reason"), **r["case"]}
        metrics = r.get("metrics", {})
        if not metrics:
            yield dict(base, metric=None, value=None, unit=None)
        for name, m in metrics.items():
            yield dict(base, metric=name, value=m.get("value"), unit=m.get("unit"), ci_low=m.get("ci_low"),
                       ci_high=m.get("ci_high"), iqr=m.get("iqr"), n=m.get("n"), reference=m.get("reference"))


def load_results(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Tidy DataFrame of one or more runs: one row per case x metric, case fields as columns.

    ``paths`` may be a run file, a directory of run files, or a list of either. Failed cases
    appear once with ``metric`` None and their status and reason.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    rows = []
    for item in items:
        for f in run_files(item):
            header, records = read_run(f)
            rows.extend(_rows(header, records))
    columns = ["run_id", "created", "suite", "fingerprint", "study", "case_id", "status", "reason", "metric",
               "value", "unit", "ci_low", "ci_high", "iqr", "n", "reference"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=columns)
    for c in columns:
        if c not in df:
            df[c] = None
    return df[columns + [c for c in df.columns if c not in columns]]


CURVE_COLUMNS = ["run_id", "study", "case_id", "seed", "split", "step", "loss", "train_time"]


def load_curves(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Tidy DataFrame of the loss curves of fixed-budget training records (mode='fit').

    One row per run x case x seed x curve point: ``split`` is "train" (training loss, downsampled)
    or "val" (validation loss at the evaluation steps, with ``train_time``: seconds of training so
    far, evaluation excluded). ``loss`` is NaN where the run diverged (stored as null). Case fields
    are joined as columns, so ``df.groupby(["case_id", "step"])["loss"].agg(["mean", "min", "max"])``
    gives a seed band. Paths as in :func:`load_results`.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    rows = []
    for item in items:
        for f in run_files(item):
            header, records = read_run(f)
            for r in records:
                for c in r.get("curves") or []:
                    base = {"run_id": header.get("run_id"), "study": r["study"], "case_id": r["case_id"],
                            "seed": c["seed"], **{k: v for k, v in r["case"].items() if k != "seed"}}
                    rows += [dict(base, split="train", step=p[0], loss=p[1], train_time=None) for p in c["train"]]
                    rows += [dict(base, split="val", step=p[0], loss=p[1], train_time=p[2]) for p in c["val"]]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    df["loss"] = df["loss"].astype(float)
    return df[CURVE_COLUMNS + [c for c in df.columns if c not in CURVE_COLUMNS]]
