"""Imports: asv results and pytest-benchmark JSON converted into sciml_bench run files.

Once converted, ``load_results``, ``show``, reports, compare and history work on asv's commit
history and on pytest-benchmark sessions like on any ``sciml-bench run``. Nothing is invented:
a value asv skipped (NaN) or failed (null) becomes an ``absent`` entry with the reason, and a
machine field asv does not record (GPU, torch version with ``--python=same``) stays None.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from sciml_bench.errors import UsageError
from sciml_bench.measure.environment import fingerprint
from sciml_bench.results import RunWriter, read_run
from sciml_bench.stats import summarize

# asv benchmark method (bench_studies.py) -> sciml_bench metric name and unit.
ASV_METRICS: dict[str, tuple[str, str]] = {
    "time_train_step": ("step_time", "s"),
    "time_infer_step": ("step_time", "s"),
    "peakmem_train_step": ("peak_rss_bytes", "B"),
    "peakmem_infer_step": ("peak_rss_bytes", "B"),
    "track_time_per_sample": ("time_per_sample", "s"),
    # asv results written before bench_studies published only lower-is-better quantities
    "track_throughput": ("throughput", "samples/s"),
    "track_flop_rate": ("flop_rate", "FLOP/s"),
    "track_compile_time": ("compile_time", "s"),
    "track_loss_after_budget": ("loss_after_budget", "loss"),
    # track_peak_memory: peak_cuda_bytes or peak_cpu_tensor_bytes, by the case's device
}
ASV_UNITS = {"seconds": "s", "bytes": "B"}
# pytest-benchmark rounds are grouped into this many contiguous blocks, the units compare tests
PB_BLOCKS = 10


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch_s))


def _safe(s: str, n: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:n]


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON ({what}): line {e.lineno}: {e.msg}") from None


def _header(run_id: str, created: str, suite: str, source: dict[str, Any], env: dict[str, Any],
            studies: Iterable[str]) -> dict[str, Any]:
    env = dict(env)
    env["fingerprint"] = fingerprint(env)
    return {"run_id": run_id, "created": created, "suite": suite, "source": source,
            "spec": {"imported_from": source.get("tool")}, "options": {},
            "studies": {s: {"question": "", "axes": {}, "reference": {}, "metrics": []} for s in studies},
            "environment": env}


def _case_fields(values: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(case fields, case_id): a validated Case when the fields still form one, else the fields as given."""
    from sciml_bench.cases import make_case

    try:
        case = make_case(values)
        return case.to_dict(), case.case_id
    except (UsageError, TypeError):  # e.g. a model since removed from the zoo: keep the history anyway
        model = values.get("model", "?")
        return dict(values), ",".join([str(model)] + [f"{k}={v}" for k, v in values.items() if k != "model"])


def _write(path: Path, header: dict[str, Any], records: list[dict[str, Any]]) -> None:
    with RunWriter(path, header) as w:
        for r in records:
            w.append(r)


# ---------------------------------------------------------------- asv

def asv_environment(machine: dict[str, Any], result: dict[str, Any], discovered_torch: str | None = None
                    ) -> dict[str, Any]:
    """Fingerprint fields from asv's machine.json and one result file's environment.

    asv records the machine name (by default the hostname), CPU model, core count, OS, arch and
    RAM; the Python and package versions come from the environment's matrix when asv built it.
    Otherwise (``--python=same``) the torch version is the one bench_studies recorded in
    benchmarks.json at asv's benchmark discovery (``discovered_torch``), and ``torch_source``
    says which. Fields asv does not record (GPU, CUDA) are None.
    """
    params = result.get("params", {}) or {}
    reqs = result.get("requirements", {}) or {}
    py = result.get("python") or params.get("python")
    num_cpu, ram = str(machine.get("num_cpu", "")), str(machine.get("ram", ""))
    torch_version = reqs.get("torch") or params.get("torch") or None
    torch_source = "asv environment matrix" if torch_version else "not recorded by asv (--python=same)"
    if torch_version is None and discovered_torch:
        torch_version, torch_source = discovered_torch, "asv benchmarks.json (torch at benchmark discovery)"
    return {
        "source": "asv",
        "hostname": machine.get("machine"),
        "cpu_model": machine.get("cpu") or None,
        "cpu_cores_logical": int(num_cpu) if num_cpu.isdigit() else None,
        "os": machine.get("os") or None,
        "arch": machine.get("arch") or None,
        "memory_total_bytes": int(ram) if ram.isdigit() else None,
        "python": py if py and re.fullmatch(r"\d+(\.\d+)*", str(py)) else None,
        "python_executable": py if py and not re.fullmatch(r"\d+(\.\d+)*", str(py)) else None,
        "torch": torch_version, "torch_source": torch_source,
        "cuda": None, "cudnn": None, "gpu_name": None,
        "git": {"commit": result.get("commit_hash"), "dirty": None},
        "asv": {"machine": machine, "env_name": result.get("env_name"), "params": params,
                "requirements": reqs, "env_vars": result.get("env_vars", {})},
    }


def _asv_value(name: str, meta: dict[str, Any], col: dict[str, Any], i: int, device: str | None
               ) -> tuple[str, dict[str, Any] | None, str | None]:
    """(metric, metric dict or None, absent reason) for parameter index ``i`` of one asv benchmark."""
    method = name.rsplit(".", 1)[-1]
    if method == "track_peak_memory":
        metric, unit = ("peak_cuda_bytes" if device == "cuda" else "peak_cpu_tensor_bytes"), "B"
    elif method in ASV_METRICS:
        metric, unit = ASV_METRICS[method]
    else:  # a benchmark of another module: keep asv's name and unit
        metric, unit = method, ASV_UNITS.get(meta.get("unit", ""), meta.get("unit"))
    value = (col.get("result") or [None])[i] if i < len(col.get("result") or []) else None
    if value is None:
        return metric, None, f"asv: {name} failed (see the asv run log)"
    if isinstance(value, float) and math.isnan(value):
        return metric, None, f"asv: {name} skipped (NotImplementedError: not supported here)"

    def stat(key: str) -> float | None:
        seq = col.get(key)
        return _finite(seq[i]) if isinstance(seq, list) and i < len(seq) else None

    q25, q75 = stat("stats_q_25"), stat("stats_q_75")
    samples = col.get("samples")
    samples = samples[i] if isinstance(samples, list) and i < len(samples) else None
    m: dict[str, Any] = {"value": value, "unit": unit, "ci_low": stat("stats_ci_99_a"),
                         "ci_high": stat("stats_ci_99_b"), "iqr": q75 - q25 if None not in (q25, q75) else None,
                         "n": int(stat("stats_repeat")) if stat("stats_repeat") else None,
                         "samples": samples, "source": f"asv:{name}"}
    if m["ci_low"] is not None:
        m["ci_level"] = 0.99  # asv's interval, not sciml_bench's 95%
    if stat("stats_number"):
        m["calls_per_sample"] = int(stat("stats_number"))
    return metric, m, None


def convert_asv_result(path: Path, machine: dict[str, Any], benchmarks: dict[str, Any],
                       discovered_at: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, case records) for one asv result file (one commit x environment on one machine).

    ``discovered_at``: when asv last wrote benchmarks.json (its mtime). The torch version recorded
    there is used only for results measured after it, i.e. by that same asv run.
    """
    result = _load_json(path, "asv result file")
    if not isinstance(result, dict) or "results" not in result or "commit_hash" not in result:
        raise UsageError(f"{path} is not an asv result file (no 'results' / 'commit_hash')")
    columns = result.get("result_columns") or ["result", "params", "version", "started_at", "duration"]
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for name, row in result["results"].items():
        col = dict(zip(columns, row if isinstance(row, list) else [row]))
        if isinstance(row, dict):  # asv results format version 1
            col = dict(row)
        meta = benchmarks.get(name, {})
        sb = meta.get("sciml_bench") or {}
        names = meta.get("param_names") or []
        param_sets = col.get("params") or meta.get("params") or []
        combos = list(_product(param_sets)) or [()]
        if not isinstance(col.get("result"), list):
            col["result"] = [col.get("result")]
        for i, combo in enumerate(combos):
            values = {k: _literal(v) for k, v in zip(names, combo)}
            if sb:
                study = sb["study"]
                fields, case_id = _case_fields(dict(sb.get("base", {}), **values, mode=sb["mode"],
                                                    device=sb["device"]))
            else:
                study = name.rsplit(".", 1)[0]
                fields, case_id = values, f"{name.rsplit('.', 1)[-1]}({', '.join(map(str, combo))})"
            rec = records.setdefault((study, case_id), {
                "study": study, "case_id": case_id, "case": fields, "metrics": {}, "absent": {},
                "started": (col.get("started_at") or 0) / 1000 or None, "asv_benchmarks": []})
            metric, m, why = _asv_value(name, meta, col, i, fields.get("device"))
            rec["asv_benchmarks"].append(name)
            if m is not None:
                rec["metrics"][metric] = m
            else:
                rec["absent"][metric] = why
    out = []
    for rec in records.values():
        tps = rec["metrics"].get("time_per_sample")
        if tps and tps["value"] > 0 and "throughput" not in rec["metrics"]:  # what `show` and reports display
            rec["metrics"]["throughput"] = {"value": 1.0 / tps["value"], "unit": "samples/s",
                                            "derived_from": "time_per_sample"}
        if rec["metrics"]:
            status, reason = "ok", None
        elif any("failed" in r for r in rec["absent"].values()):
            status, reason = "error", next(r for r in rec["absent"].values() if "failed" in r)
        else:
            status, reason = "skipped", next(iter(rec["absent"].values()), "asv: no result")
        out.append(dict(rec, status=status, reason=reason))
    commit = result["commit_hash"]
    env_name = result.get("env_name", "env")
    run_id = f"asv-{_safe(machine.get('machine', 'machine'), 30)}-{commit[:8]}-{_safe(env_name, 40)}"
    metas = [benchmarks.get(n, {}).get("sciml_bench") or {} for n in result["results"]]
    suites = {m.get("suite") for m in metas} - {None}
    torches = {m.get("torch") for m in metas} - {None}
    started = [r["started"] for r in out if r.get("started")]
    if discovered_at is not None and (not started or min(started) < discovered_at - 1):
        torches = set()  # measured before the last discovery: that torch may not be this run's
    suite = "asv" + (f":{','.join(sorted(suites))}" if suites else "")
    header = _header(run_id, _iso(result.get("date", 0) / 1000), suite,
                     {"tool": "asv", "file": str(path), "commit": commit, "env_name": env_name},
                     asv_environment(machine, result, torches.pop() if len(torches) == 1 else None),
                     sorted({r["study"] for r in out}))
    return header, out


def _product(param_sets: list[list[Any]]):
    import itertools
    return itertools.product(*param_sets) if param_sets else iter(())


def _literal(text: Any) -> Any:
    """asv stores parameter values as their repr; turn them back into values."""
    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


class AsvImport(NamedTuple):
    """What ``import_asv`` did: new run files, unchanged ones, and re-imported ones with what changed."""

    written: list[Path]
    skipped: list[Path]
    replaced: dict[Path, list[str]]  # run file -> "study/case metric: old -> new" lines


def _changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """Per case x metric: what a re-import replaces (values, and metrics that appeared or vanished)."""
    def values(recs):
        return {(f"{r['study']}/{r['case_id']}", k): m.get("value") for r in recs
                for k, m in r.get("metrics", {}).items()}
    a, b = values(old), values(new)
    out = [f"{case} {metric}: {a.get((case, metric))} -> {b.get((case, metric))}"
           for case, metric in sorted(a.keys() | b.keys()) if a.get((case, metric)) != b.get((case, metric))]
    return out or ["run metadata (samples, statuses or environment)"]


def import_asv(results_dir: str | os.PathLike = ".asv/results", out_dir: str | os.PathLike = "results"
               ) -> AsvImport:
    """Convert every asv result file under ``results_dir`` into a run file in ``out_dir``.

    One run file per (machine, commit, environment), named ``asv-<machine>-<commit>-<env>.jsonl``.
    Importing again after ``asv run`` adds the new commits, leaves unchanged files alone and
    re-imports a commit asv ran again (its result file changed), listing the values replaced.
    Returns an ``AsvImport`` (written, skipped, replaced). Raises UsageError when ``results_dir``
    holds no asv results (no ``benchmarks.json``).
    """
    root = Path(results_dir)
    bench_file = root / "benchmarks.json"
    if not bench_file.is_file():
        raise UsageError(f"{root} is not an asv results directory (no benchmarks.json); "
                         f"expected asv.conf.json's results_dir, e.g. .asv/results")
    benchmarks = _load_json(bench_file, "asv benchmarks.json")
    done = AsvImport([], [], {})
    for machine_file in sorted(root.glob("*/machine.json")):
        machine = _load_json(machine_file, "asv machine.json")
        for path in sorted(machine_file.parent.glob("*.json")):
            if path.name == "machine.json":
                continue
            header, records = convert_asv_result(path, machine, benchmarks, bench_file.stat().st_mtime)
            target = Path(out_dir) / f"{header['run_id']}.jsonl"
            if not target.exists():
                _write(target, header, records)
                done.written.append(target)
                continue
            old_header, old_records = read_run(target)
            if _normal(old_records) == _normal(records) and _normal(old_header["environment"]) == \
                    _normal(header["environment"]):
                done.skipped.append(target)
                continue
            tmp = target.with_name(target.name + ".tmp")  # replace whole, never half-written
            tmp.unlink(missing_ok=True)
            _write(tmp, header, records)
            os.replace(tmp, target)
            done.replaced[target] = _changes(old_records, records)
    if not (done.written or done.skipped or done.replaced):
        raise UsageError(f"no asv result files under {root}/<machine>/; run `asv run` first")
    return done


def _normal(obj: Any) -> Any:
    """``obj`` as a run file stores it (JSON round trip, without the record type tag)."""
    data = json.loads(json.dumps(obj, default=str))
    if isinstance(data, list):
        for r in data:
            r.pop("type", None)
    return data


# ---------------------------------------------------------------- pytest-benchmark

def pytest_benchmark_environment(data: dict[str, Any]) -> dict[str, Any]:
    """Fingerprint fields from a pytest-benchmark JSON's machine_info and commit_info."""
    mi = data.get("machine_info", {}) or {}
    cpu = mi.get("cpu", {}) or {}
    ci = data.get("commit_info", {}) or {}
    extra = [b.get("extra_info", {}) for b in data.get("benchmarks", [])]
    first = next((e for e in extra if e.get("torch")), {})
    return {
        "source": "pytest-benchmark",
        "hostname": mi.get("node"),
        "cpu_model": cpu.get("brand_raw") or mi.get("processor") or None,
        "cpu_cores_logical": cpu.get("count"),
        "os": f"{mi.get('system')} {mi.get('release')}" if mi.get("system") else None,
        "arch": mi.get("machine"),
        "python": mi.get("python_version"),
        "torch": first.get("torch"),
        "torch_threads": first.get("threads"),
        "cuda": None, "cudnn": None,
        "gpu_name": None,
        "git": {"commit": ci.get("id"), "dirty": ci.get("dirty")} if ci.get("id") else None,
        "pytest_benchmark": {"version": data.get("version"), "machine_info": mi, "commit_info": ci},
    }


def convert_pytest_benchmark(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, case records) for one ``--benchmark-json`` file: one record per benchmark.

    ``step_time`` is pytest-benchmark's median of one call. When the raw ``data`` was saved, its
    rounds are cut into ``PB_BLOCKS`` contiguous blocks (``raw``) whose medians are the samples
    (and give the 95% CI), so compare tests independent units, not thousands of rounds that share
    the machine's drift. FLOPs and the Case fields come from ``extra_info`` when the benchmark
    recorded them (benchmarks/micro does).
    """
    path = Path(path)
    data = _load_json(path, "pytest-benchmark JSON")
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or "machine_info" not in data:
        raise UsageError(f"{path} is not a pytest-benchmark JSON file (expected 'machine_info' and 'benchmarks' "
                         f"as written by --benchmark-json)")
    records = []
    for b in data["benchmarks"]:
        st, extra = b.get("stats", {}), b.get("extra_info", {}) or {}
        study = b.get("group") or extra.get("study") or "pytest-benchmark"
        base = (b.get("name") or b.get("fullname", "?")).split("[")[0].removeprefix("test_")
        case_id = f"{base}:{b['param']}" if b.get("param") else base  # no brackets: tables render markup
        m: dict[str, Any] = {"value": st["median"], "unit": "s", "iqr": st.get("iqr"), "n": st.get("rounds"),
                             "rounds": st.get("rounds"), "ci_low": None, "ci_high": None, "mean": st.get("mean"),
                             "min": st.get("min"), "stddev": st.get("stddev"), "samples": None,
                             "calls_per_sample": st.get("iterations"), "source": f"pytest-benchmark:{b.get('fullname')}"}
        absent: dict[str, str] = {}
        if st.get("data"):
            blocks = _blocks(st["data"])
            m["raw"], m["samples"] = blocks, [statistics.median(blk) for blk in blocks]
            s = summarize(m["samples"])
            m["ci_low"], m["ci_high"], m["n"] = s["ci_low"], s["ci_high"], s["n"]
        else:
            absent["step_time_ci"] = "pytest-benchmark kept no raw data (run with --benchmark-save-data)"
        metrics = {"step_time": m}
        per_call = (extra.get("case") or {}).get("batch_size")  # samples per call; else calls
        metrics["throughput"] = {"value": (per_call or 1) / st["median"], "unit": "samples/s" if per_call else "calls/s"}
        if extra.get("flops"):
            from sciml_bench.measure.flops import flop_rate
            metrics["flops"] = {"value": extra["flops"], "unit": "FLOP", "coverage": "complete"}
            if extra.get("flops_uncounted_ops"):
                metrics["flops"].update(coverage="partial", uncounted_ops=extra["flops_uncounted_ops"])
            metrics["flop_rate"] = flop_rate(metrics["flops"], st["median"])
        elif "flops" in extra:
            absent["flops"] = extra.get("flops_absent") or "FlopCounterMode counted no FLOPs (elementwise or fused ops)"
        records.append({"study": study, "case_id": case_id, "case": extra.get("case", {}),
                        "status": "ok", "reason": None, "metrics": metrics, "absent": absent,
                        "group": b.get("group"), "fullname": b.get("fullname"), "param": b.get("param"),
                        "extra_info": extra})
    when = data.get("datetime") or ""
    try:
        from datetime import datetime
        epoch = datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        epoch = path.stat().st_mtime
    commit = ((data.get("commit_info") or {}).get("id") or "nocommit")[:8]
    run_id = f"pytest-benchmark-{time.strftime('%Y%m%d-%H%M%S', time.localtime(epoch))}-{commit}-{_safe(path.stem, 40)}"
    header = _header(run_id, _iso(epoch), "pytest-benchmark",
                     {"tool": "pytest-benchmark", "file": str(path), "version": data.get("version")},
                     pytest_benchmark_environment(data), sorted({r["study"] for r in records}))
    return header, records


def _blocks(data: list[float], n: int = PB_BLOCKS) -> list[list[float]]:
    """``data`` (in execution order) cut into ``n`` contiguous blocks of near-equal size.

    Consecutive pytest-benchmark rounds share the machine's state of the moment, so thousands of
    them are not independent samples; like sciml_bench's rounds, a block's median is one unit.
    """
    n = max(1, min(n, len(data)))
    edges = [round(i * len(data) / n) for i in range(n + 1)]
    return [list(data[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def import_pytest_benchmark(path: str | os.PathLike, out_dir: str | os.PathLike = "results") -> Path:
    """Convert one pytest-benchmark ``--benchmark-json`` file into a run file in ``out_dir``.

    Raises UsageError for an unreadable or foreign file, or when it was imported already.
    """
    header, records = convert_pytest_benchmark(path)
    target = Path(out_dir) / f"{header['run_id']}.jsonl"
    if target.exists():
        raise UsageError(f"{path} was already imported as {target}")
    _write(target, header, records)
    return target
