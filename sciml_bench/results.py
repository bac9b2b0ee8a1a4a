"""Results store: one JSON-lines file per run (header, then one record per case) and load_results."""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
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


def safe_filename(name: str, suffix: str = "") -> str:
    """The one place a user-given name (study, case id, suite, run id) becomes a file name.

    Keeps letters, digits and ``-_=.``; anything else (``/``, ``..``, control characters)
    becomes ``_``, and a short hash of the original keeps two names that differ only there apart,
    so a name can never point outside its directory."""
    safe = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_=." else "_" for ch in name)[:150]
    if safe != name or not safe or safe.startswith("."):
        safe = f"{safe.lstrip('.') or 'unnamed'}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return safe + suffix


def new_run_id(suite: str) -> str:
    """``YYYYmmdd-HHMMSS-<suite>-<hex>``: sortable by time, unique, readable."""
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in suite)[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{secrets.token_hex(2)}"


class RunLocked(UsageError):
    """The run file is being written by another process."""


class RunWriter:
    """Appends records to a run file, flushing and fsyncing each so an interrupted run keeps them.

    The file is locked (``fcntl.flock``) while open, so two processes never write one run:
    a second ``--resume`` is refused, and ``latest`` skips runs in progress. A record that cannot
    be encoded becomes an ``error`` record naming why; it never costs the others."""

    def __init__(self, path: Path, header: dict[str, Any] | None = None):
        self.path = Path(path)
        if header is not None:  # new run: the file must not exist yet
            line = _dumps(dict(header, type="header", format=FORMAT, schema=SCHEMA_VERSION))  # fail before creating
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "x", encoding="utf-8")
            except OSError as e:
                raise UsageError(f"cannot create results file {self.path}: {e.strerror}") from None
            self._lock()
            self._write_line(line)
        else:  # resume: append after dropping a partial last line, if any
            try:
                self._fh = open(self.path, "a", encoding="utf-8")
            except OSError as e:
                raise UsageError(f"cannot append to results file {self.path}: {e.strerror}") from None
            self._lock()
            _truncate_partial_line(self.path)

    def _lock(self) -> None:
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise RunLocked(f"{self.path} is being written by another sciml-bench process; wait for it to "
                            f"finish (or stop it) before resuming") from None

    def _write_line(self, line: str) -> None:
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, record: dict[str, Any], kind: str = "case") -> None:
        """Write one record; ``kind`` "pass" holds a timed pass of a case whose record is not final yet.
        A record that cannot be encoded still keeps its case, as an error saying why its data is gone."""
        try:
            line = _dumps(dict(finite_record(record), type=kind))
        except (TypeError, ValueError, RecursionError) as e:
            line = _dumps({"type": kind, "study": str(record.get("study")), "case_id": str(record.get("case_id")),
                           "case": record.get("case") if isinstance(record.get("case"), dict) else {},
                           "status": "error", "reason": f"record could not be stored: {type(e).__name__}: {e}",
                           "metrics": {}, "absent": {}})
        self._write_line(line)

    def close(self) -> None:
        self._fh.close()  # closing releases the lock

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _dumps(obj: dict[str, Any]) -> str:
    """One JSON line; NaN/inf are refused (ValueError), since strict JSON readers reject them."""
    return json.dumps(_finite(obj, [], []), allow_nan=False, default=str)


def _finite(obj: Any, path: list[str], found: list[tuple[str, float]]) -> Any:
    """``obj`` with every non-finite float replaced by None; ``found`` collects (where, value)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        found.append((".".join(path), obj))
        return None
    if isinstance(obj, dict):
        return {k: _finite(v, path + [str(k)], found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, path + [str(i)], found) for i, v in enumerate(obj)]
    return obj


def finite_record(record: dict[str, Any]) -> dict[str, Any]:
    """A case record fit for strict JSON: a metric whose value is NaN/inf moves to ``absent`` with
    the reason (0 would be a lie); any other non-finite number becomes null, named in ``absent``."""
    rec = dict(record)
    metrics = rec.get("metrics") if isinstance(rec.get("metrics"), dict) else {}
    absent = dict(rec.get("absent") or {}) if isinstance(rec.get("absent"), dict) else {}
    kept = {}
    for name, m in metrics.items():
        v = m.get("value") if isinstance(m, dict) else None
        if isinstance(v, float) and not math.isfinite(v):
            absent[name] = f"measured value was {v} (non-finite)"
        else:
            kept[name] = m
    found: list[tuple[str, float]] = []
    rec = _finite(dict(rec, metrics=kept), [], found)
    for where, v in found:
        absent[f"nonfinite:{where}"] = f"{v} stored as null"
    if metrics or absent:
        rec["absent"] = absent
    return rec


def _truncate_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def read_run(path: str | os.PathLike, kind: str = "case") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, case records) of a run file (``kind`` "pass": the pass results kept for ``--resume``).
    A partial last line (killed mid-write) is ignored.

    Raises UsageError for an unreadable file, or one that is not a sciml_bench run file.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):  # committed evidence is kept compressed: read as if plain
            import gzip

            with gzip.open(path, "rt", encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as e:
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
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                break  # partial last line from an interrupted write
            raise UsageError(f"{path}:{i}: corrupt record line") from None
        if not isinstance(rec, dict):
            raise UsageError(f"{path}:{i}: a record must be a JSON object, got {type(rec).__name__}")
        if rec.get("type") == kind:
            if kind == "case":
                _check_record(rec, f"{path}:{i}")
            records.append(rec)
    return header, records


# Fields every case record has, and their JSON types; readers (show, report, compare) rely on them.
RECORD_FIELDS = {"study": str, "case_id": str, "status": str, "case": dict}
RECORD_OPTIONAL = {"reason": (str, type(None)), "metrics": dict, "absent": dict}


def _check_record(rec: dict[str, Any], where: str) -> None:
    for key, typ in RECORD_FIELDS.items():
        if not isinstance(rec.get(key), typ):
            raise UsageError(f"{where}: case record needs {key!r} as a JSON {_json_type(typ)}, got {rec.get(key)!r}"[:300])
    for key, typ in RECORD_OPTIONAL.items():
        if key in rec and not isinstance(rec[key], typ):
            raise UsageError(f"{where}: case record field {key!r} must be a JSON {_json_type(typ)}, "
                             f"got {type(rec[key]).__name__}")
    if rec["status"] not in STATUSES:
        raise UsageError(f"{where}: unknown status {rec['status']!r}; expected one of: {', '.join(STATUSES)}")
    for name, m in rec.get("metrics", {}).items():
        if not isinstance(m, dict) or not isinstance(m.get("value"), (int, float, type(None))) \
                or isinstance(m.get("value"), bool):
            raise UsageError(f"{where}: metric {name!r} must be an object with a numeric 'value'"[:300])


def _json_type(typ: Any) -> str:
    names = {str: "string", dict: "object", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in (typ if isinstance(typ, tuple) else (typ,)))


RUN_SUFFIXES = (".jsonl", ".jsonl.gz")  # a run file, and one gzipped for keeping (read-only)


def run_files(path: str | os.PathLike) -> list[Path]:
    """Run files under a directory, plain or gzipped (sorted by name, i.e. by time), or the file itself."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for s in RUN_SUFFIXES for f in p.glob(f"*{s}"))
    return [p]


def is_locked(path: str | os.PathLike) -> bool:
    """True while another process holds the run file's write lock (a run in progress)."""
    try:
        with open(path, "rb") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def resolve_run(ref: str, results_dir: str | os.PathLike = "results") -> Path:
    """A run file from a path, a run id in ``results_dir``, or ``latest`` (the newest finished or
    interrupted run: runs still being written are skipped)."""
    if ref == "latest":
        files = [f for f in run_files(results_dir) if f.is_file()]
        if not files:
            raise UsageError(f"no run files (*.jsonl) in {results_dir}; run `sciml-bench run` first")
        done = [f for f in files if not is_locked(f)]
        if not done:
            raise UsageError(f"every run in {results_dir} is still being written; name one by path or run id")
        return max(done, key=lambda f: (f.stat().st_mtime, f.name))
    p = Path(ref)
    if p.is_file():
        return p
    for suffix in RUN_SUFFIXES:
        candidate = Path(results_dir) / f"{ref}{suffix}"
        if candidate.is_file():
            return candidate
    candidate = Path(results_dir) / f"{ref}{RUN_SUFFIXES[0]}"
    raise UsageError(f"no such run {ref!r}: not a file, nor {candidate}; use a path, a run id, or 'latest'")


def pass_rounds(rec: dict[str, Any], ref: dict[str, Any]) -> dict[int, list[int]]:
    """{pass: indices into both records' per-round samples} of the rounds where neither block was
    starved (all rounds of a pass where that would leave fewer than two)."""
    a, b = rec["metrics"]["step_time"], ref["metrics"]["step_time"]
    n = min(len(a["samples"]), len(b["samples"]))
    out = {}
    for p in sorted(set(a.get("pass", [0] * n)[:n])):
        idx = [i for i in range(n) if a.get("pass", [0] * n)[i] == p and b.get("pass", [0] * n)[i] == p]
        clean = [i for i in idx if not (a.get("starved", [False] * n)[i] or b.get("starved", [False] * n)[i])]
        out[p] = clean if len(clean) >= 2 else idx
    return out


def pass_pairs(rec: dict[str, Any], ref: dict[str, Any]) -> tuple[list[list[float]], list[list[float]]]:
    """Per pass, the (variant, reference) per-round medians of ``pass_rounds``."""
    a, b = rec["metrics"]["step_time"]["samples"], ref["metrics"]["step_time"]["samples"]
    rounds = pass_rounds(rec, ref).values()
    return [[a[i] for i in idx] for idx in rounds], [[b[i] for i in idx] for idx in rounds]


def starved_unreliable(rec: dict[str, Any]) -> str | None:
    """The starved-blocks message of a case whose statistics still contain starved blocks (too few
    clean ones to leave them out), else None. A case whose few starved blocks were left out of its
    statistics is measured cleanly: its verdicts stand (the record still says what was dropped)."""
    st = rec.get("starved")
    if not st or st.get("excluded"):
        return None
    return st.get("message") or "starved timed blocks"


def anchored_samples(metric: dict[str, Any]) -> list[float] | None:
    """A time metric's per-round samples divided by the anchor time of the same round.

    The anchor (``measure.anchor``) is a fixed numpy workload the run times beside every case, in
    the same rounds: machine-wide speed changes (frequency, load, a neighbour) move both, so the
    quotient is comparable across runs where raw seconds are not. None when the run timed no anchor
    (older runs, imports) or a round lacks one."""
    anchor, samples = metric.get("anchor"), metric.get("samples")
    if not anchor or not samples or len(anchor) != len(samples) or not all(a and a > 0 for a in anchor):
        return None
    return [s / a for s, a in zip(samples, anchor)]


def peak_memory(rec: dict[str, Any]) -> tuple[str, float] | None:
    """(metric name, bytes) of a record's peak tensor memory on its device."""
    for name in ("peak_cuda_bytes", "peak_cpu_tensor_bytes"):
        if name in rec.get("metrics", {}):
            return name, rec["metrics"][name]["value"]
    return None


def memory_ratio(rec: dict[str, Any], ref: dict[str, Any]) -> float | None:
    """``rec``'s peak tensor memory over ``ref``'s, where both were measured on the same device."""
    mine, theirs = peak_memory(rec), peak_memory(ref)
    if mine and theirs and mine[0] == theirs[0] and theirs[1]:
        return mine[1] / theirs[1]
    return None


def nonfinite_loss(rec: dict[str, Any]) -> str | None:
    """Why a case's training loss went NaN/inf (the runner's flag, or its numerics count), else None."""
    bad = (rec.get("metrics") or {}).get("nonfinite_loss_steps") or {}
    return rec.get("nonfinite_loss") or (f"{bad['value']} of {bad.get('steps', '?')} numerics steps non-finite"
                                         if bad.get("value") else None)


def trust_warnings(records: Iterable[dict[str, Any]], most: int = 5) -> list[str]:
    """Lines about cases whose numbers deserve less trust: starved timed blocks (the machine was busy),
    a step so small that the timing harness's fixed cost dominates it, or a training loss that went
    NaN/inf. Beyond ``most`` cases of a kind, the rest are summed up in one line."""
    records = list(records)
    ok = [r for r in records if r.get("status") == "ok"]
    kinds = (("was starved", [r for r in ok if r.get("starved")], lambda r: r["starved"].get("message")),
             ("is overhead-dominated", [r for r in ok if (r.get("overhead") or {}).get("dominated")],
              lambda r: r["overhead"].get("reason")),
             ("has a non-finite loss", [r for r in records if nonfinite_loss(r)], nonfinite_loss))
    out = []
    for what, rs, why in kinds:
        out += [f"case {r['study']}/{r['case_id']} {what}: {why(r)}" for r in rs[:most]]
        if len(rs) > most:
            out.append(f"... and {len(rs) - most} more such cases ({what.split(' ', 1)[1]}): "
                       + ", ".join(f"{r['study']}/{r['case_id']}" for r in rs[most:]))
    return out


def done_keys(records: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(study, case_id) of finished records, for ``--resume``."""
    return {(r["study"], r["case_id"]) for r in records}


# machine identity for grouping and history: hardware only, so a torch upgrade stays on one machine
MACHINE_KEYS = ("cpu_model", "cpu_cores_logical", "gpu_name", "hostname")


def machine_id(env: dict[str, Any]) -> str:
    """Hash of the hardware identity fields: one machine's runs form one history across upgrades."""
    key = json.dumps({k: env.get(k) for k in MACHINE_KEYS}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


# run-level columns: what people group by across runs
RUN_COLUMNS = ["run_id", "created", "suite", "fingerprint", "machine", "hostname", "cpu_model", "gpu_name",
               "commit", "dirty", "torch", "cuda"]
COLUMNS = RUN_COLUMNS + ["study", "case_id", "arm", "status", "reason", "started", "duration_s", "metric", "value",
                         "unit", "ci_low", "ci_high", "ci_level", "iqr", "n", "reference"]


def _rows(header: dict[str, Any], records: list[dict[str, Any]], samples: bool = False
          ) -> Iterator[dict[str, Any]]:
    env = header.get("environment", {})
    git = env.get("git") or {}
    run = {"run_id": header.get("run_id"), "created": header.get("created"), "suite": header.get("suite"),
           "fingerprint": env.get("fingerprint"), "machine": machine_id(env), "hostname": env.get("hostname"),
           "cpu_model": env.get("cpu_model"), "gpu_name": env.get("gpu_name"), "commit": git.get("commit"),
           "dirty": git.get("dirty"), "torch": env.get("torch"), "cuda": env.get("cuda")}
    for r in records:
        started, finished = r.get("started"), r.get("finished")
        base = dict(run, study=r["study"], case_id=r["case_id"], arm=r.get("arm"), status=r["status"],
                    reason=r.get("reason"),
                    started=started, duration_s=finished - started if started and finished else None, **r["case"])
        metrics = r.get("metrics", {})
        if not metrics and not samples:
            yield dict(base, metric=None, value=None, unit=None)
        for name, m in metrics.items():
            row = dict(base, metric=name, value=m.get("value"), unit=m.get("unit"), ci_low=m.get("ci_low"),
                       ci_high=m.get("ci_high"), ci_level=m.get("ci_level", 0.95 if m.get("ci_low") is not None
                                                                       else None),
                       iqr=m.get("iqr"), n=m.get("n"), reference=m.get("reference"))
            if not samples:
                yield row
                continue
            for i, x in enumerate(m.get("samples") or []):
                yield dict(row, sample_index=i, sample=x)


def _dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Case fields and counts as nullable integers / booleans, times as datetimes (not object columns)."""
    from dataclasses import fields

    from sciml_bench.cases import Case

    ints = {"n", "sample_index"} | {f.name for f in fields(Case) if f.type in ("int", "int | None")}
    bools = {"dirty"} | {f.name for f in fields(Case) if f.type in ("bool", "bool | None")}
    for c in df.columns:
        if c in ints:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
        elif c in bools:
            df[c] = df[c].astype("boolean")
        elif c in ("value", "ci_low", "ci_high", "ci_level", "iqr", "duration_s", "sample", "lr"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["created"] = pd.to_datetime(df["created"], utc=True, errors="coerce", format="ISO8601")
    df["started"] = pd.to_datetime(df["started"], unit="s", utc=True, errors="coerce")
    return df


def load_results(paths: str | os.PathLike | Iterable[str | os.PathLike], samples: bool = False) -> pd.DataFrame:
    """Tidy DataFrame of one or more runs: one row per case x metric, case fields as columns.

    ``paths`` may be a run file, a directory of run files, or a list of either. Failed cases
    appear once with ``metric`` None and their status and reason.

    Columns: the run's identity (``run_id``, ``created`` as a UTC datetime, ``suite``,
    ``fingerprint``, ``machine`` = hash of CPU model, cores, GPU and hostname, ``hostname``,
    ``cpu_model``, ``gpu_name``, ``commit``, ``dirty``, ``torch``, ``cuda``), the case's
    (``study``, ``case_id``, ``status``, ``reason``, ``started`` as a UTC datetime, ``duration_s``
    = the case's wall time in its worker, and every Case field, integers as nullable ``Int64``),
    and the metric's (``metric``, ``value``, ``unit``, ``ci_low``, ``ci_high``, ``ci_level`` (0.95,
    or 0.99 for asv imports), ``iqr``, ``n``, ``reference``).

    ``samples=True`` gives the long form instead: one row per stored sample of each metric,
    with ``sample_index`` and ``sample`` added (for ``step_time`` the per-round medians, the
    independent units that compare tests); metrics without samples and failed cases have no rows.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    rows = []
    for item in items:
        for f in run_files(item):
            header, records = read_run(f)
            rows.extend(_rows(header, records, samples))
    columns = COLUMNS + (["sample_index", "sample"] if samples else [])
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=columns)
    for c in columns:
        if c not in df:
            df[c] = None
    return _dtypes(df[columns + [c for c in df.columns if c not in columns]])


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
