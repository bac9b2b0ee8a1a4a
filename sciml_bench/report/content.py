"""What a report shows, before figures and rendering: sections, rows, and the metrics each study promises."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sciml_bench.compare import fmt_value

# A block of a report part, shared by every renderer: ("p"|"muted"|"warn"|"strong", text) · ("ul", [text])
# · ("img", file in figures/, alt) · ("file_img", path relative to the report, alt)
# · ("links", label, [(text, relative href)]) · ("table", head, rows, classes_or_None, column_the_classes_apply_to)
# · ("code", Python source)
Block = tuple


@dataclass
class Part:
    """One headed part of the page: an anchor, a title and its blocks (built by ``render.SECTIONS``)."""

    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    css_class: str = ""


# Metrics every study shows (its table's fixed columns); the study TOML's ``metrics = [...]`` adds more.
BASE_METRICS = ("time", "memory", "flops")
# Metrics a study shows by default when it varies an axis, because its question is about them.
AXIS_METRICS: dict[str, tuple[str, ...]] = {
    "compile": ("compile_time", "break_even_steps", "graph_breaks", "recompiles"),
    "dynamic": ("recompiles", "compile_time"),
    "shape_sweep": ("recompiles",),
    "precision": ("loss_drift", "scaler_skipped_steps", "nonfinite_loss_steps"),
    "num_workers": ("data_stall_fraction",),
    "pin_memory": ("data_stall_fraction",),
    "persistent_workers": ("data_stall_fraction",),
    "prefetch_factor": ("data_stall_fraction",),
}
# Short column names and the unit fmt_value formats them with.
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "compile_time": ("compile time", "s"), "break_even_steps": ("break-even", "steps"),
    "graph_breaks": ("graph breaks", "count"), "recompiles": ("recompiles", "count"),
    "data_stall_fraction": ("data stall", "fraction"), "loss_drift": ("loss drift vs fp32", "fraction"),
    "scaler_skipped_steps": ("scaler-skipped steps", "count"),
    "nonfinite_loss_steps": ("non-finite steps", "count"),
    "energy_per_step": ("energy/step", "J"), "avg_power": ("power", "W"), "energy_to_target": ("energy to target", "J"),
    "instructions_per_step": ("instructions/step", "instructions"),
}
# Shown wherever a study's records have them, whatever its axes: they depend on the device (a GPU's NVML
# energy counter, measure.energy) or on the run (--count instructions: Callgrind, measure.instructions), so a
# run without them gets no column of "-".
DEVICE_METRICS = ("energy_per_step", "avg_power", "energy_to_target", "instructions_per_step")


def study_metrics(axes: dict[str, Any], declared: list[str] | tuple[str, ...] | None) -> list[str]:
    """The extra metrics a study's table and verdict show: declared ones, then the defaults of its axes."""
    out: list[str] = [m for m in (declared or ()) if m not in BASE_METRICS]
    for axis in axes:
        out += [m for m in AXIS_METRICS.get(axis, ()) if m not in out]
    return out


def present_metrics(records: list[dict[str, Any]], shown: list[str]) -> list[str]:
    """The ``DEVICE_METRICS`` some of ``records`` (records or report rows) measured that ``shown`` lacks."""
    return [k for k in DEVICE_METRICS if k not in shown and any(k in (r.get("metrics") or {}) for r in records)]


def fmt_metric(name: str, m: dict[str, Any] | None, absent: str | None = None, why: bool = True) -> str:
    """One extra metric's value in words, or why it is absent (``why``; "-" when the record says nothing)."""
    if m is None:
        return ("not measured" + (f": {absent}" if why else "")) if absent else "-"
    unit = METRIC_LABELS.get(name, (name, m.get("unit", "")))[1]
    v = m.get("value")
    if v is None:
        return "-"
    if unit == "fraction":
        return f"{v:.1%}"
    if unit in ("count", "steps"):
        return f"{v:,.0f}" + (" steps" if unit == "steps" else "")
    if unit in ("J", "W"):
        return f"{v:.3g} {unit}"
    return fmt_value(v, unit)


# above this fraction of the measured GEMM peak a point is flagged: the peak or the FLOP count is off
PEAK_FLAG = 1.0


def fmt_peak_frac(row: dict[str, Any]) -> str:
    """"12.3%" of the measured GEMM peak; above 100% never silently: the value says what is wrong."""
    f = row.get("peak_frac")
    if f is None:
        return "not measured"
    if f > PEAK_FLAG:
        return f"{f:.0%} ⚠ over 100%: peak or FLOPs wrong"
    return f"{f:.1%}"


def skip_reason_kind(reason: str | None) -> str:
    """"CUDA-only" for cases skipped because this device has no CUDA, else "other"."""
    return "CUDA-only" if reason and "cuda" in reason.lower() else "other"


def status_counts(records: list[dict[str, Any]]) -> str:
    """"88 ok, 9 skipped (CUDA-only), 0 failed": skips counted apart from failures, by reason."""
    ok = sum(r["status"] == "ok" for r in records)
    skipped = [r for r in records if r["status"] == "skipped"]
    failed = sum(r["status"] not in ("ok", "skipped") for r in records)
    kinds: dict[str, int] = {}
    for r in skipped:
        k = skip_reason_kind(r.get("reason"))
        kinds[k] = kinds.get(k, 0) + 1
    why = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) if len(kinds) > 1 else "".join(kinds)
    return f"{ok} ok, {len(skipped)} skipped" + (f" ({why})" if skipped else "") + f", {failed} failed"


def fmt_time(s: float | None) -> str:
    return fmt_value(s, "s")


@dataclass
class Section:
    """One study in the report: its question, table rows, verdicts, figures and scaling fits."""

    name: str
    question: str
    reference: dict[str, Any]
    axes: dict[str, list[Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    fits: list[dict[str, Any]] = field(default_factory=list)
    pareto: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # extra metrics its question promises
    answer: str = ""  # one line for the summary at the top
    short_answer: str = ""  # the same, as ranges over contexts, for the terminal
    resolves: float | None = None  # smallest effect its ratio CIs could tell from 1 (words.resolvable)
    training: dict[str, Any] = field(default_factory=dict)  # fit studies: see report/training.py


@dataclass
class Report:
    """Everything a report shows, before rendering."""

    title: str
    runs: list[dict[str, Any]]  # headers, with "path"
    sections: list[Section]
    claims: list[Any]  # claims.Claim
    failed: list[dict[str, Any]]
    peaks: dict[str, dict[str, Any]]  # run_id -> machine_peak record
    env_warnings: list[str]
    figures: list[str]
    history: Any = None
    history_figures: list[str] = field(default_factory=list)
    flat_peaks: dict[str, float] = field(default_factory=dict)  # dtype -> FLOP/s (first run's)
    trust: list[str] = field(default_factory=list)  # lines saying how far to trust the numbers
    profiles: Any = None  # report.profiles.ProfileViews
    ab: Any = None  # compare.Comparison of an A/B run's arms (sciml-bench ab)
    forest: str | None = None  # the summary's figure: every variant's time ratio (figures.forest)
    recommend: list[Any] = field(default_factory=list)  # recommend runs' views (report.recommend.View)

    @property
    def multi_run(self) -> bool:
        return len(self.runs) > 1 or self.ab is not None  # an A/B run's arms are labelled like runs
