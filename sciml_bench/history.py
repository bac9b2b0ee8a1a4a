"""History: per-case trends over the runs of one machine, anchor-normalised where runs timed the anchor, with steps."""
from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from sciml_bench.compare import DEFAULT_THRESHOLD, fmt_value
from sciml_bench.errors import UsageError
from sciml_bench.results import anchored_samples, machine_id, read_run, run_files
from sciml_bench.stats import CONFIDENCE, detect_steps, median_ci, ratio_of_medians


@dataclass
class Series:
    """One case's metric over runs of one machine, with the steps found in it.

    ``normalised``: the values are anchor-normalised (the case's time in anchor times, unitless),
    which every point must support, all with the same anchor version; otherwise they are the
    metric's own raw values and ``raw_reason`` says why (for step_time). Each point keeps the raw
    value as ``raw``, the record's median anchor time as ``anchor`` (None without) and its run's
    ``anchor_version`` (None where the header records none).
    """

    study: str
    case_id: str
    metric: str
    points: list[dict[str, Any]]  # {run_id, created, commit, torch, value, raw, anchor, ci_low, ci_high, ci_level}
    steps: list[dict[str, Any]]
    normalised: bool = False
    raw_reason: str = ""  # why a step_time series stayed raw: runs lacking the anchor, or differing anchor versions

    @property
    def unit(self) -> str:
        """The unit of ``value``: '' for anchor-normalised and non-time metrics, 's' for raw times."""
        return "s" if self.metric.endswith("time") and not self.normalised else ""


@dataclass
class History:
    """Every case's series on one machine, the anchor's own series (machine speed) and the regressions found."""

    machine: str
    runs: list[dict[str, Any]]  # {run_id, created, commit, torch, path}
    series: list[Series]
    other_machines: dict[str, int]  # machine id -> number of runs left out
    threshold: float
    # per run, in run order: {run_id, created, value (median anchor s or None), n, version (header's anchor version)}
    anchor: list[dict[str, Any]]

    @property
    def regressions(self) -> list[dict[str, Any]]:
        """Every step up beyond the threshold, in any series."""
        out = []
        for s in self.series:
            for st in s.steps:
                if st["ratio"] > 1 + self.threshold:
                    out.append(dict(st, study=s.study, case_id=s.case_id, metric=s.metric, normalised=s.normalised))
        return out

    @property
    def newest_regressions(self) -> list[dict[str, Any]]:
        """Regressions whose new level starts at the newest run (``--fail-on-change``)."""
        return [r for r in self.regressions if r["newest"]]

    @property
    def anchor_change(self) -> tuple[dict[str, Any], dict[str, Any], float] | None:
        """(first, last, last/first) of the runs that timed the anchor in the newest run's anchor version
        (another version is another workload); None with fewer than two."""
        timed = [a for a in self.anchor if a["value"]]
        timed = [a for a in timed if a.get("version") == timed[-1].get("version")] if timed else []
        if len(timed) < 2:
            return None
        return timed[0], timed[-1], timed[-1]["value"] / timed[0]["value"]

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "runs": self.runs, "threshold": self.threshold,
                "other_machines": self.other_machines, "anchor": self.anchor, "regressions": self.regressions,
                "newest_regressions": self.newest_regressions,
                "series": [dict(asdict(s), unit=s.unit) for s in self.series]}


def _median_anchor(metric: dict[str, Any] | None) -> float | None:
    vals = [a for a in (metric or {}).get("anchor") or [] if isinstance(a, (int, float)) and a > 0]
    return float(statistics.median(vals)) if vals else None


def history(paths: list[str | os.PathLike] | str | os.PathLike, case_pattern: str = "*",
            metric: str = "step_time", machine: str | None = None, order: str = "time",
            threshold: float = DEFAULT_THRESHOLD) -> History:
    """Per-case history of ``metric`` over the runs of one machine, with step detection.

    Runs are grouped by hardware identity (``machine_id``: CPU model, cores, GPU, hostname),
    so software upgrades (torch, CUDA) stay inside one history and show up as steps. By default
    the machine of the newest run is used. Runs are ordered by creation time (``order="time"``)
    or by commit then time (``order="commit"``, the commit order as first seen). Each case's
    series is fitted piecewise-constant (``stats.detect_steps``, on log values) and every step up
    by more than ``threshold`` is a regression, reported with its first run, commit and torch
    version; ``newest`` marks the steps whose new level starts at the newest run.

    For ``step_time``, a case whose every point timed the anchor (a fixed numpy workload timed in
    the same rounds, ``results.anchored_samples``) with the same anchor version (the run header's
    ``anchor.version``: another version is another workload) is tracked anchor-normalised: per run the median
    of the per-round case/anchor quotients, with its order-statistic CI, so a machine-wide speed
    change (clock, thermal state, a noisy neighbour) moves both and cancels. A case with any point
    lacking the anchor, or with points of different anchor versions, stays in raw seconds
    (``Series.normalised`` False, ``Series.raw_reason`` says which). ``History.anchor`` is
    the anchor's own raw series: per run the median of all its ok records' anchor times.

    A/B runs (``sciml-bench ab``: both arms in one file) are left out.

    Raises UsageError when there are no runs, or no case matches.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = [f for p in items for f in run_files(p)]
    if not files:
        raise UsageError(f"no run files (*.jsonl) in {', '.join(map(str, items))}")
    runs = []
    for f in files:
        h, recs = read_run(f)
        if h.get("ab"):  # two code versions in one file: not a point of one history (compare it alone)
            continue
        env = h.get("environment", {})
        runs.append({"run_id": h.get("run_id"), "created": h.get("created") or "", "path": str(f),
                     "commit": (env.get("git") or {}).get("commit"), "torch": env.get("torch"),
                     "machine": machine_id(env), "records": recs,
                     "anchor_version": (h.get("anchor") or {}).get("version")})
    runs.sort(key=lambda r: (r["created"], r["run_id"] or ""))
    if order == "commit":
        first_seen: dict[Any, int] = {}
        for r in runs:
            first_seen.setdefault(r["commit"], len(first_seen))
        runs.sort(key=lambda r: first_seen[r["commit"]])
    elif order != "time":
        raise UsageError(f"--order must be time or commit, got {order!r}")
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["machine"]] = counts.get(r["machine"], 0) + 1
    if machine is None:
        machine = max(runs, key=lambda r: r["created"])["machine"]
    elif not any(m.startswith(machine) for m in counts):
        raise UsageError(f"no runs of machine {machine!r}; machines here: {', '.join(counts)}")
    mine = [r for r in runs if r["machine"].startswith(machine)]
    anchor = []
    for r in mine:
        times = [a for rec in r["records"] if rec.get("status") == "ok"
                 for a in ((rec.get("metrics") or {}).get("step_time") or {}).get("anchor") or []
                 if isinstance(a, (int, float)) and a > 0]
        anchor.append({"run_id": r["run_id"], "created": r["created"],
                       "value": float(statistics.median(times)) if times else None, "n": len(times),
                       "version": r["anchor_version"]})
    # per case: its points, and for each point the run it came from and its anchored samples
    series: dict[tuple[str, str], list[tuple[int, dict[str, Any], list[float] | None]]] = {}
    for ri, r in enumerate(mine):
        for rec in r["records"]:
            if rec["status"] != "ok" or metric not in rec.get("metrics", {}):
                continue
            if not fnmatch(rec["case_id"], case_pattern) and not fnmatch(f"{rec['study']}/{rec['case_id']}",
                                                                         case_pattern):
                continue
            m = rec["metrics"][metric]
            timed = metric == "step_time"
            point = {"run_id": r["run_id"], "created": r["created"], "commit": r["commit"], "torch": r["torch"],
                     "value": m["value"], "raw": m["value"], "anchor": _median_anchor(m) if timed else None,
                     "anchor_version": r["anchor_version"],
                     "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"),
                     "ci_level": m.get("ci_level", CONFIDENCE)}  # asv imports carry 99% intervals
            series.setdefault((rec["study"], rec["case_id"]), []).append(
                (ri, point, anchored_samples(m) if timed else None))
    if not series:
        raise UsageError(f"no ok case matching {case_pattern!r} with metric {metric!r} in {len(mine)} runs")
    out = []
    for (study, case_id), entries in series.items():
        pts = [p for _, p, _ in entries]
        lacking = sum(not q for _, _, q in entries)
        versions = list(dict.fromkeys(p["anchor_version"] for p in pts))  # in run order
        normalised = metric == "step_time" and not lacking and len(versions) == 1
        raw_reason = ""
        if metric == "step_time" and lacking:
            raw_reason = f"{lacking}/{len(pts)} runs lack the anchor"
        elif metric == "step_time" and not normalised:
            per_version = [(v, sum(p["anchor_version"] == v for p in pts)) for v in versions]
            raw_reason = "anchor versions differ: " + ", ".join(
                f"{'unrecorded' if v is None else f'v{v}'} in {n}/{len(pts)} runs" for v, n in per_version)
        if normalised:
            for _, p, q in entries:
                lo, hi = median_ci(q)
                p.update(value=float(statistics.median(q)), ci_low=lo, ci_high=hi, ci_level=CONFIDENCE)
        values = [p["value"] for p in pts]
        steps = detect_steps(values, min_step=threshold / 2) if all(v > 0 for v in values) else []
        bounds = [0] + [st["index"] for st in steps] + [len(values)]
        for k, st in enumerate(steps):
            # the step's CI: bootstrap of after/before over the runs of the two levels (runs are the units)
            rr = ratio_of_medians(values[bounds[k + 1]:bounds[k + 2]], values[bounds[k]:bounds[k + 1]])
            st.update(ci_low=rr["ci_low"], ci_high=rr["ci_high"])
            p = pts[st["index"]]
            st.update(run_id=p["run_id"], commit=p["commit"], torch=p["torch"], created=p["created"],
                      previous_torch=pts[st["index"] - 1]["torch"], previous_commit=pts[st["index"] - 1]["commit"],
                      newest=st["index"] == len(pts) - 1 and entries[-1][0] == len(mine) - 1)
        out.append(Series(study, case_id, metric, pts, steps, normalised, raw_reason))
    run_list = [{k: r[k] for k in ("run_id", "created", "commit", "torch", "path")} for r in mine]
    return History(machine[:12], run_list, out, {m: c for m, c in counts.items() if not m.startswith(machine)},
                   threshold, anchor)


def _anchor_figure(hist: History, out_dir: Path, plt: Any) -> str | None:
    """The anchor's median time per run (machine speed); None when fewer than two runs timed it."""
    if hist.anchor_change is None:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    x = [i for i, a in enumerate(hist.anchor) if a["value"]]
    ax.plot(x, [hist.anchor[i]["value"] * 1e3 for i in x], "o-", ms=4, color="tab:gray")
    ratio = hist.anchor_change[2]
    ax.set_title(f"anchor (fixed numpy workload): machine speed · {ratio:.2f}x first → last", fontsize=9)
    ax.set_xlabel("run (oldest → newest)")
    ax.set_ylabel("anchor median (ms)")
    ax.set_xlim(-0.5, len(hist.anchor) - 0.5)
    fig.tight_layout()
    name = "history-anchor.png"
    fig.savefig(out_dir / name, dpi=90)
    plt.close(fig)
    return name


def history_figures(hist: History, out_dir: str | os.PathLike, limit: int = 40) -> list[str]:
    """One trend PNG per case (values with CIs, fitted levels, regressions marked), plus the anchor's own
    series as ``history-anchor.png`` when at least two runs timed it; file names returned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    name = _anchor_figure(hist, out_dir, plt)
    if name:
        names.append(name)
    ranked = sorted(hist.series, key=lambda s: -max([st["ratio"] for st in s.steps] + [0]))
    for s in ranked[:limit]:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
        x = np.arange(len(s.points))
        y = np.array([p["value"] for p in s.points])
        lo = np.array([p["ci_low"] if p["ci_low"] is not None else p["value"] for p in s.points])
        hi = np.array([p["ci_high"] if p["ci_high"] is not None else p["value"] for p in s.points])
        levels = sorted({p["ci_level"] for p in s.points if p["ci_low"] is not None}) or [0.95]
        ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", ms=4, capsize=2,
                    label=f"median [{' / '.join(f'{v:.0%}' for v in levels)} CI]")
        bounds = [0] + [st["index"] for st in s.steps] + [len(y)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            ax.hlines(np.median(y[a:b]), a - 0.4, b - 0.6, colors="tab:orange", lw=2)
        for st in s.steps:
            color = "tab:red" if st["ratio"] > 1 + hist.threshold else "tab:green"
            ax.axvline(st["index"] - 0.5, color=color, ls="--", lw=1)
            ax.annotate(f"{st['ratio']:.2f}x", (st["index"] - 0.5, ax.get_ylim()[1]), color=color,
                        ha="center", va="top", fontsize=8)
        ax.set_title(f"{s.study} / {s.case_id}"[:90], fontsize=9)
        ax.set_xlabel("run (oldest → newest)")
        ax.set_ylabel(s.metric + (" / anchor" if s.normalised else " (s)" if s.unit == "s" else ""))
        fig.tight_layout()
        name = "history-" + "".join(ch if ch.isalnum() or ch in "-_=." else "_"
                                    for ch in f"{s.study}--{s.case_id}")[:120] + ".png"
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        names.append(name)
    return names


def describe_point(s: Series, p: dict[str, Any]) -> str:
    """A point's value as text: 'N× anchor (raw)' when normalised, the raw value otherwise."""
    if s.normalised:
        return f"{p['value']:.4g}× anchor ({fmt_value(p['raw'], 's' if s.metric.endswith('time') else '')})"
    return fmt_value(p["value"], s.unit)
