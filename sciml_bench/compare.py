"""Compare two runs case by case (ratio, CI, Mann-Whitney p, verdict, CI exit code)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sciml_bench.errors import UsageError
from sciml_bench.measure import instructions
from sciml_bench.measure.environment import differences
from sciml_bench.results import anchored_samples, pass_pairs, read_run, starved_unreliable
from sciml_bench.stats import cliffs_delta, mann_whitney, pass_ratio, ratio_of_medians
from sciml_bench.units import fmt_bytes

DEFAULT_THRESHOLD = 0.05
# A/B rounds are paired within one run, so far smaller changes are resolvable than across runs
# (the README's detection-quality figures were measured with this threshold).
DEFAULT_AB_THRESHOLD = 0.02
DEFAULT_ALPHA = 0.01
# metric families that --fail-on selects, and the record metrics that belong to each
FAMILIES = {"time": ("step_time",), "memory": ("peak_cpu_tensor_bytes", "peak_cuda_bytes"),
            # fixed-budget training (mode='fit'): "converges worse", as distinct from "runs slower"
            "quality": ("final_val_loss", "rel_l2", "rollout_rel_l2", "accuracy", "psnr"),
            # Callgrind counts (measure.instructions): where both sides have one, a case's time gate is on them
            "instructions": (instructions.METRIC,)}
HIGHER_IS_BETTER = ("accuracy", "psnr")


@dataclass
class Row:
    """One case x metric compared: base and new values, ratio new/base with CI, p-value and verdict."""

    study: str
    case_id: str
    metric: str
    family: str
    base: float
    new: float
    ratio: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    effect: float | None  # Cliff's delta of new vs base samples
    verdict: str  # faster | slower | unchanged | noisy | unreliable (memory: smaller | larger; quality: better | worse;
    # instructions: more | fewer)
    unit: str = ""
    gates: bool = True  # False: a time row whose case gates on its instruction counts instead

    @property
    def fails(self) -> bool:
        return self.verdict in ("slower", "larger", "worse", "more")


@dataclass
class Comparison:
    """All rows of a two-run comparison plus what could not be compared."""

    base_path: str
    new_path: str
    base_run: str
    new_run: str
    threshold: float
    alpha: float
    samples: str
    fail_on: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    not_ok: list[str] = field(default_factory=list)  # in both runs but failed in one: "key: base→new status"
    broke: list[str] = field(default_factory=list)  # ok in base, error/crashed/timeout/oom in new: always fails
    unreliable: list[str] = field(default_factory=list)  # starved timed blocks in either run: time verdict withheld
    env_differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    operators: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # key -> operator_changes
    functions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # key -> instructions.function_changes
    notes: list[str] = field(default_factory=list)  # a time change the case's instruction count does not share
    paired: bool = False  # A/B: both arms timed in the same rounds of one run (compare_ab)
    anchored: int = 0  # time rows compared on anchor-normalised samples (both runs timed the anchor)
    unanchored: int = 0  # time rows compared on raw seconds
    use_anchor: bool = True  # False when the runs' anchor versions differ
    anchor_note: str = ""

    @property
    def method(self) -> str:
        """How the time rows were compared, in words (printed above every comparison)."""
        if self.paired:
            return ("paired by round within one interleaved run: CI of the mean ratio over passes and "
                    "t-test (random effects over passes, pooled across cases)")
        if self.anchored and not self.unanchored:
            return (f"anchor-normalised: each round's time divided by the anchor timed in the same round "
                    f"(machine speed cancels; base/new show raw seconds, the ratio is of the anchored values); "
                    f"Mann-Whitney U on {self.samples} samples")
        if self.anchored:
            return (f"{self.anchored} case(s) anchor-normalised, {self.unanchored} raw (a run without anchor "
                    f"times); Mann-Whitney U on {self.samples} samples")
        why = self.anchor_note or ("--samples raw" if self.samples == "raw" else "no anchor in both runs")
        return f"raw seconds ({why}); Mann-Whitney U on {self.samples} samples"

    @property
    def basis(self) -> str:
        """What the gate read, in words: instruction counts where both sides have them, else time."""
        counted = sum(r.family == "instructions" for r in self.rows)
        timed = sum(r.family == "time" and r.gates for r in self.rows)
        if not counted:
            return "time"
        return (f"instructions per step (Callgrind) for {counted} case(s), relative change beyond max("
                f"{instructions.FLOOR:.1%}, {instructions.SPREAD_FACTOR:g} x the spread of the repeats' paired ratios)"
                + (f"; time for {timed} case(s) without a count on both sides" if timed else ""))

    @property
    def failures(self) -> list[Row]:
        gated = set(self.fail_on) | ({"instructions"} if "time" in self.fail_on else set())
        return [r for r in self.rows if r.fails and r.gates and r.family in gated]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures or self.broke else 0

    @property
    def global_shift(self) -> float | None:
        """Median new/base time ratio over all cases: far from 1 when the machine itself changed speed."""
        ratios = sorted(r.ratio for r in self.rows if r.family == "time")
        return ratios[len(ratios) // 2] if len(ratios) >= 3 else None

    @property
    def warnings(self) -> list[str]:
        out = [f"environments differ in {k}: {a!r} (base) vs {b!r} (new)" for k, (a, b) in self.env_differences.items()]
        g = None if self.paired else self.global_shift  # in an A/B run a shift of every case is the code
        if g is not None and abs(math.log(g)) > math.log(1 + 2 * self.threshold):
            out.append(f"the median case moved {g:.2f}x: the whole machine ran at a different speed (load, "
                       f"frequency, threads?); per-case verdicts mostly measure that, not the code")
        if self.unreliable:
            out.append(f"{len(self.unreliable)} case(s) marked unreliable, their time verdicts withheld (the machine "
                       f"starved their timed blocks): " + "; ".join(self.unreliable))
        return out + self.notes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["env_differences"] = {k: list(v) for k, v in self.env_differences.items()}
        d["exit_code"] = self.exit_code
        d["warnings"] = self.warnings
        d["failures"] = [f"{r.study}/{r.case_id}:{r.metric}" for r in self.failures]
        return d


def time_samples(metric: dict[str, Any], samples: str = "rounds") -> list[float]:
    """The samples a comparison tests: per-round medians (``rounds``) or every per-call time (``raw``)."""
    if samples == "raw" and metric.get("raw"):
        return [t for block in metric["raw"] for t in block]
    return list(metric.get("samples") or [metric["value"]])


def verdict(ratio: float, ci: tuple[float | None, float | None], p: float | None, threshold: float,
            alpha: float) -> str:
    """Plain-words verdict of a time ratio new/base.

    slower / faster: significant (p < alpha) *and* beyond the threshold. unchanged: the CI lies
    within ±threshold, or the change is within the threshold and not significant. noisy:
    a change beyond the threshold that the test cannot tell from noise.
    """
    lo, hi = ci
    significant = p is not None and p < alpha
    if significant and ratio > 1 + threshold:
        return "slower"
    if significant and ratio < 1 / (1 + threshold):
        return "faster"
    if lo is not None and hi is not None and lo >= 1 / (1 + threshold) and hi <= 1 + threshold:
        return "unchanged"
    if abs(math.log(ratio)) <= math.log(1 + threshold):
        return "unchanged"
    return "noisy"


def _key(rec: dict[str, Any]) -> str:
    return f"{rec['study']}/{rec['case_id']}"


def compare_runs(base: str | os.PathLike, new: str | os.PathLike, threshold: float = DEFAULT_THRESHOLD,
                 alpha: float = DEFAULT_ALPHA, fail_on: tuple[str, ...] = ("time",),
                 samples: str = "rounds") -> Comparison:
    """Compare run ``new`` against run ``base``, case by case.

    Parameters
    ----------
    threshold: relative change below which a difference is "unchanged" however significant
        (0.05 = 5%). A real but tiny change should not fail CI.
    alpha: significance level of the two-sided Mann-Whitney U test on the time samples.
    fail_on: metric families ("time", "memory") whose slower/larger verdict sets exit code 1.
    samples: "rounds" (default) tests the per-round medians, the independent units: calls
        within one round share that round's machine state (load, frequency). "raw" tests every
        per-call time as if independent, which is anti-conservative: a machine that drifts
        between rounds gives tiny p-values for identical code. See the README's detection-quality
        numbers for what each costs in false alarms on this kind of machine.

    Raises UsageError for unreadable runs, bad options, or runs with no case in common.
    """
    check_options(threshold, alpha, fail_on, samples)
    hb, rb = read_run(base)
    hn, rn = read_run(new)
    if hb.get("ab") or hn.get("ab"):
        raise UsageError(f"{base if hb.get('ab') else new} is an A/B run (both arms in one file): compare its "
                         f"arms with `sciml-bench compare RUN` (one run)")
    cmp = Comparison(str(base), str(new), hb.get("run_id", "?"), hn.get("run_id", "?"), threshold, alpha,
                     samples, tuple(fail_on))
    cmp.env_differences = differences(hb.get("environment", {}), hn.get("environment", {}))
    va, vb = ((h.get("anchor") or {}).get("version") for h in (hb, hn))
    if va != vb:  # a different anchor workload: quotients do not compare, raw seconds it is
        cmp.use_anchor = False
        cmp.anchor_note = f"anchor versions differ (v{va} base, v{vb} new): compared in raw seconds"
    return _fill(cmp, rb, rn)


def compare_ab(path: str | os.PathLike, threshold: float | None = None, alpha: float | None = None,
               fail_on: tuple[str, ...] | None = None) -> Comparison:
    """Compare the two arms of an A/B run (``sciml-bench ab``): new/base per case, paired by round.

    Both arms ran in the same interleaved rounds, so a round's ratio cancels the machine's state;
    the CI is that of the mean ratio over passes (fresh processes each, which re-draw per-process
    effects such as memory layout), moderated by the pooled pass variance of the run's other cases,
    and the p-value its t-test. Same rows, verdicts and exit code as ``compare_runs``. Options left
    None are the ones ``sciml-bench ab`` gated with (kept in the header), else the A/B defaults.
    """
    header, records = read_run(path)
    arms = (header.get("ab") or {}).get("arms")
    if not arms:
        raise UsageError(f"{path} is not an A/B run (no arms in its header); compare two runs with "
                         f"`sciml-bench compare BASE NEW`")
    gate = header["ab"].get("gate") or {}
    threshold = gate.get("threshold", DEFAULT_AB_THRESHOLD) if threshold is None else threshold
    alpha = gate.get("alpha", DEFAULT_ALPHA) if alpha is None else alpha
    fail_on = tuple(gate.get("fail_on", ("time",))) if fail_on is None else fail_on
    check_options(threshold, alpha, fail_on, "rounds")
    run_id = header.get("run_id", "?")
    cmp = Comparison(str(path), str(path), f"{run_id} [base]", f"{run_id} [new]", threshold, alpha, "rounds",
                     tuple(fail_on), paired=True)
    cmp.env_differences = differences(arms["base"].get("environment", {}), arms["new"].get("environment", {}))
    return _fill(cmp, [r for r in records if r.get("arm") == "base"], [r for r in records if r.get("arm") == "new"])


def check_options(threshold: float, alpha: float, fail_on: tuple[str, ...], samples: str) -> None:
    """UsageError for a threshold, alpha, --fail-on family or --samples a comparison cannot use."""
    if not 0 < threshold < 10:
        raise UsageError(f"--threshold must be a fraction between 0 and 10 (0.05 = 5%), got {threshold}")
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
    bad = [f for f in fail_on if f not in FAMILIES]
    if bad:
        raise UsageError(f"--fail-on: unknown metric family {bad[0]!r}; expected any of: {', '.join(FAMILIES)}")
    if samples not in ("raw", "rounds"):
        raise UsageError(f"--samples must be raw or rounds, got {samples!r}")


def _fill(cmp: Comparison, rb: list[dict[str, Any]], rn: list[dict[str, Any]]) -> Comparison:
    """The comparison core shared by ``compare_runs`` and ``compare_ab``: match cases, then one row per
    case x metric, with failures, starved cases and operator changes."""
    bmap, nmap = {_key(r): r for r in rb}, {_key(r): r for r in rn}
    cmp.only_base = [k for k in bmap if k not in nmap]
    cmp.only_new = [k for k in nmap if k not in bmap]
    if not any(k in nmap for k in bmap):
        raise UsageError(f"runs {cmp.base_run} and {cmp.new_run} have no case in common (study/case id); "
                         f"nothing to compare")
    pool = _pass_variances(bmap, nmap) if cmp.paired else {}
    for k, b in bmap.items():
        n = nmap.get(k)
        if n is None or b["status"] == n["status"] == "skipped":  # skipped in both: not a change
            continue
        if b["status"] != "ok" or n["status"] != "ok":
            cmp.not_ok.append(f"{k}: {b['status']} → {n['status']}")
            if b["status"] == "ok" and n["status"] in ("error", "crashed", "timeout", "oom"):
                cmp.broke.append(f"{k}: {n['status']}")
            continue
        rows = _compare_case(b, n, cmp, [v for key, v in pool.items() if key != k])
        starved = [f"{side}: {starved_unreliable(r)}" for side, r in (("base", b), ("new", n)) if starved_unreliable(r)]
        if starved:  # a starved block measures the neighbours, not the code: never gate on it
            for row in rows:
                if row.family == "time":
                    row.verdict = "unreliable"
            cmp.unreliable.append(f"{k} ({'; '.join(starved)})")
        cmp.rows.extend(rows)
        if b.get("profile") and n.get("profile"):
            cmp.operators[k] = operator_changes(b["profile"], n["profile"])
    return cmp


def _operator_times(profile: dict[str, Any]) -> dict[str, float]:
    """{operator (name and input shapes): self CPU + device us per step}: every operator from
    operators.csv when the profile directory is still there, else the record's top operators."""
    import csv

    path = Path(profile.get("dir", "")) / profile.get("files", {}).get("operators_csv", "operators.csv")
    rows = profile.get("top_ops", [])
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    out: dict[str, float] = {}
    for r in rows:
        key = f"{r['name']} {r.get('input_shapes') or ''}".strip()
        out[key] = out.get(key, 0.0) + float(r["self_cpu_us"]) + float(r.get("self_device_us") or 0)
    return out


def operator_changes(base: dict[str, Any], new: dict[str, Any], top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` operators whose self time per step (CPU + device) changed most between two
    profiles: the "why" behind a slower or faster verdict."""
    b, n = _operator_times(base), _operator_times(new)
    rows = [{"operator": k, "base_us": b.get(k, 0.0), "new_us": n.get(k, 0.0), "delta_us": n.get(k, 0.0) - b.get(k, 0.0)}
            for k in set(b) | set(n)]
    rows.sort(key=lambda r: abs(r["delta_us"]), reverse=True)
    return rows[:top]


def _pass_variances(bmap: dict[str, dict[str, Any]], nmap: dict[str, dict[str, Any]]) -> dict[str, float]:
    """{case: between-pass variance of its paired log ratio} over the A/B cases that were not starved:
    each case's interval borrows the others' (as the runner's ratios do), so two passes suffice."""
    out = {}
    for k, b in bmap.items():
        n = nmap.get(k)
        if (n is None or b["status"] != "ok" or n["status"] != "ok" or starved_unreliable(b) or starved_unreliable(n)
                or "step_time" not in b["metrics"] or "step_time" not in n["metrics"]):
            continue
        v = pass_ratio(*pass_pairs(n, b))["pass_var"]
        if v is not None:
            out[k] = v
    return out


def time_row(b: dict[str, Any], n: dict[str, Any], cmp: Comparison, prior: list[float]) -> Row:
    """The step-time row of two ok records: paired rounds (``cmp.paired``, A/B), anchor-normalised
    rounds (both records carry anchor times), or raw rounds across runs. Counts the basis in ``cmp``."""
    bt, nt = b["metrics"]["step_time"], n["metrics"]["step_time"]
    if cmp.paired:
        pp = pass_pairs(n, b)
        # A/B pools the arms' pass variances with the arithmetic mean on purpose: its false-alarm and
        # detection rates (README, "How far to trust compare") were measured with it; a run's ratios use
        # stats.typical_variance, which has not been validated for A/B verdicts
        pr = pass_ratio(*pp, prior_var=sum(prior) / len(prior) if prior else None,
                        prior_df=len(prior) * max(len(pp[0]) - 1, 1), predict=False)
        ratio, lo, hi, p = pr["ratio"], pr["ci_low"], pr["ci_high"], pr["p_value"]
        sb, sn = time_samples(bt), time_samples(nt)
    else:
        b_anch, n_anch = anchored_samples(bt), anchored_samples(nt)
        anchored = b_anch is not None and n_anch is not None and cmp.samples == "rounds" and cmp.use_anchor
        cmp.anchored += anchored
        cmp.unanchored += not anchored
        sb, sn = (b_anch, n_anch) if anchored else (time_samples(bt, cmp.samples), time_samples(nt, cmp.samples))
        # the CI resamples rounds, the independent unit (calls within a round share its drift)
        rr = ratio_of_medians(n_anch, b_anch) if anchored else ratio_of_medians(time_samples(nt), time_samples(bt))
        # raw: the ratio of the stored medians (per-round medians' median); anchored: of the normalised ones
        ratio = rr["ratio"] if anchored else nt["value"] / bt["value"]
        lo, hi, p = rr["ci_low"], rr["ci_high"], mann_whitney(sn, sb)
    return Row(b["study"], b["case_id"], "step_time", "time", bt["value"], nt["value"], ratio, lo, hi, p,
               cliffs_delta(sn, sb), verdict(ratio, (lo, hi), p, cmp.threshold, cmp.alpha), "s")


def _compare_case(b: dict[str, Any], n: dict[str, Any], cmp: Comparison, prior: list[float]) -> list[Row]:
    rows = []
    threshold, alpha = cmp.threshold, cmp.alpha
    bm, nm = b["metrics"], n["metrics"]
    if "step_time" in bm and "step_time" in nm:
        rows.append(time_row(b, n, cmp, prior))
    for name in FAMILIES["memory"]:
        if name in bm and name in nm and bm[name]["value"]:
            ratio = nm[name]["value"] / bm[name]["value"]
            v = "larger" if ratio > 1 + threshold else "smaller" if ratio < 1 / (1 + threshold) else "unchanged"
            rows.append(Row(b["study"], b["case_id"], name, "memory", bm[name]["value"], nm[name]["value"], ratio,
                            None, None, None, None, v, "B"))
    rows += [_quality_row(b, n, name, threshold, alpha) for name in FAMILIES["quality"] if name in bm and name in nm]
    if instructions.METRIC in bm and instructions.METRIC in nm:
        rows.append(_instruction_row(b, n, rows, cmp))
    return rows


def _instruction_row(b: dict[str, Any], n: dict[str, Any], rows: list[Row], cmp: Comparison) -> Row:
    """Both sides counted instructions (``measure.instructions``): the case gates on them instead of time
    (its time row stays, not gating); the functions that changed most, and a time change they do not share."""
    mb, mn = b["metrics"][instructions.METRIC], n["metrics"][instructions.METRIC]
    ratio, v, t = instructions.verdict(mb, mn)
    key = _key(b)
    cmp.functions[key] = instructions.function_changes(mb, mn)
    for r in rows:
        if r.family == "time":
            r.gates = False
            note = instructions.time_note(r.ratio, ratio, cmp.threshold, t)
            if note:
                cmp.notes.append(f"{key}: {note}")
    return Row(b["study"], b["case_id"], instructions.METRIC, "instructions", mb["value"], mn["value"], ratio, None,
               None, None, None, v, "instructions")


def _quality_row(b: dict[str, Any], n: dict[str, Any], name: str, threshold: float, alpha: float) -> Row:
    """Final loss or task metric after the same step budget: ratio new/base of the means over seeds,
    Welch's t-test across seeds (seeds are the independent unit; timing noise does not enter)."""
    from scipy import stats

    mb, mn = b["metrics"][name], n["metrics"][name]
    sb, sn = list(mb.get("samples") or [mb["value"]]), list(mn.get("samples") or [mn["value"]])
    p = None
    if len(sb) >= 2 and len(sn) >= 2 and (len(set(sb)) > 1 or len(set(sn)) > 1):
        p = float(stats.ttest_ind(sn, sb, equal_var=False).pvalue)
    elif sb == sn:
        p = 1.0  # bit-identical seeds: the same training happened
    ratio = mn["value"] / mb["value"] if mb["value"] else math.inf
    worse_ratio = 1 / ratio if name in HIGHER_IS_BETTER and ratio else ratio  # > 1 means worse
    v = verdict(worse_ratio, (None, None), p, threshold, alpha) if math.isfinite(worse_ratio) else "noisy"
    v = {"slower": "worse", "faster": "better"}.get(v, v)
    return Row(b["study"], b["case_id"], name, "quality", mb["value"], mn["value"], ratio, None, None, p,
               cliffs_delta(sn, sb), v, mn.get("unit", ""))


def to_markdown(cmp: Comparison) -> str:
    """The comparison as a GitHub-flavoured markdown table, for PR comments."""
    icon = {"worse": "🔴 worse", "better": "🟢 better",
            "slower": "🔴 slower", "larger": "🔴 larger", "faster": "🟢 faster", "smaller": "🟢 smaller",
            "noisy": "🟡 noisy", "unchanged": "unchanged", "unreliable": "🟡 unreliable", "more": "🔴 more",
            "fewer": "🟢 fewer"}
    out = [f"### sciml-bench compare: `{cmp.new_run}` vs `{cmp.base_run}`", "",
           f"threshold {cmp.threshold:.0%}, alpha {cmp.alpha}; "
           f"fails on: {', '.join(cmp.fail_on)}. **{len(cmp.failures)} failing**.", "",
           f"time compared: {cmp.method}.", "", f"gate: {cmp.basis}.", ""]
    if cmp.env_differences:
        out += ["> ⚠️ environments differ: " + "; ".join(f"{k}: {a} → {b}" for k, (a, b) in
                                                         cmp.env_differences.items()), ""]
    out += [f"> ⚠️ {_md(w)}" for w in cmp.warnings if not w.startswith("environments differ")]
    out += ["| study | case | metric | base | new | new/base [95% CI] | p | verdict |",
            "|---|---|---|---:|---:|---:|---:|---|"]
    for r in cmp.rows:
        out.append(f"| {_md(r.study)} | {_md(r.case_id)} | {r.metric} | {fmt_value(r.base, r.unit)} | "
                   f"{fmt_value(r.new, r.unit)} | {fmt_ratio(r)} | {fmt_p(r.p_value)} | "
                   f"{icon[r.verdict] if r.gates else r.verdict + ' (not gating)'} |")
    for title, items in (("only in base", cmp.only_base), ("only in new", cmp.only_new),
                         ("not ok in one run", cmp.not_ok)):
        if items:
            out += ["", f"**{title}:** " + ", ".join(f"`{_md(i)}`" for i in items)]
    for key, ops in cmp.operators.items():
        out += ["", f"**operators whose self time changed most, `{_md(key)}`:** " + "; ".join(
            f"`{_md(o['operator'])}` {o['delta_us'] / 1e3:+.3g} ms/step" for o in ops)]
    for key, fns in cmp.functions.items():
        if fns:
            out += ["", f"**functions whose instructions changed most, `{_md(key)}`:** " + "; ".join(
                f"`{_md(f['function'])}` {instructions.fmt_delta(f)}" for f in fns)]
    return "\n".join(out) + "\n"


def _md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        for u, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
            if abs(v) >= scale:
                return f"{v / scale:.3g} {u}"
        return f"{v * 1e9:.3g} ns"
    if unit == "B":
        return fmt_bytes(v)
    if unit == "instructions":
        return instructions.fmt_count(v)
    return f"{v:.4g}"


def fmt_ratio(r: Row) -> str:
    if r.ci_low is None or r.ci_high is None:
        return f"{r.ratio:.3f}x"
    return f"{r.ratio:.3f}x [{r.ci_low:.3f}, {r.ci_high:.3f}]"


def fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def to_json(cmp: Comparison) -> str:
    return json.dumps(cmp.to_dict(), indent=2, default=str)
