"""What the command line prints: terminal-safe text, the tables of a run, its phases, operators and
comparisons, and the commands that only read runs and print them (``list``, ``show``, ``compare``,
``history``)."""
from __future__ import annotations

import argparse
import re
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sciml_bench.errors import UsageError
from sciml_bench.parser import writable_dir

# Piped output (files, CI logs) gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 180)
err_console = Console(stderr=True)

# Terminal escapes (CSI, OSC, other ESC sequences) and control characters: a name or reason from a
# file must never move the cursor, retitle the terminal or hide text.
_CONTROL = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-?]*[ -/]*[@-~]|\x1b.?|[\x00-\x1f\x7f-\x9f]")


def plain(value: Any) -> str:
    """``value`` as text with every terminal escape and control character removed (newlines and tabs
    become spaces). Used on every user-given string the CLI prints."""
    return _CONTROL.sub(lambda m: " " if m.group() in "\n\t\r" else "", str(value))


def txt(value: Any) -> str:
    """``plain`` text, escaped for rich: a name like ``[/]`` is shown, never parsed as markup."""
    return escape(plain(value))


# ---------------------------------------------------------------- tables

def fmt_ci(m: dict[str, Any], fmt) -> str:
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return fmt(m["value"])
    level = m.get("ci_level", 0.95)  # imported asv intervals are 99%: say so where they are shown
    tag = "" if level == 0.95 else f" {level:.0%} CI"
    return f"{fmt(m['value'])} [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]{tag}"


def results_table(header: dict[str, Any], records: list[dict[str, Any]]) -> Table:
    """The per-case table of ``show``: every case with its numbers and the metrics its study promises."""
    from sciml_bench.compare import fmt_value
    from sciml_bench.report.content import METRIC_LABELS, fmt_metric, present_metrics, study_metrics
    from sciml_bench.report.words import ratio_words
    from sciml_bench.results import nonfinite_loss, peak_memory, starved_unreliable

    studies = header.get("studies") if isinstance(header.get("studies"), dict) else {}
    extra = {name: study_metrics(st.get("axes") or {}, st.get("metrics")) for name, st in studies.items()
             if isinstance(st, dict)}
    for name in {r["study"] for r in records}:  # e.g. a GPU's energy: wherever the study's records have it
        extra[name] = extra.get(name, []) + present_metrics([r for r in records if r["study"] == name],
                                                            extra.get(name, []))
    env = header.get("environment") if isinstance(header.get("environment"), dict) else {}
    table = Table(title=f"run {txt(header.get('run_id'))} · suite {txt(header.get('suite'))} · "
                        f"{txt(env.get('cpu_model', '?'))}", title_justify="left")
    for col, just in (("study", "left"), ("case", "left"), ("status", "left"),
                      ("step time, median [95% CI]", "right"), ("vs reference [95% CI]", "right"),
                      ("throughput", "right"), ("peak mem", "right"), ("GFLOP/s", "right"),
                      ("study metrics", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for r in records:
        m = r.get("metrics", {})
        study, case = txt(r["study"]), txt(r["case_id"])  # ids are text, never rich markup
        if r["status"] != "ok":
            table.add_row(study, case, f"[red]{txt(r['status'])}[/]", f"[dim]{txt(r.get('reason') or '')}[/]",
                          "", "", "", "", "")
            continue
        ratio = m.get("time_ratio")
        ratio_s = "reference" if ratio and ratio.get("reference") == r["case_id"] else (
            txt(ratio_words(ratio["value"], ratio.get("ci_low"), ratio.get("ci_high"))) if ratio else "-")
        if ratio and ratio.get("passes", 1) > 1:  # how sure: the passes' own ratios beside the rerun interval
            ratio_s += f"\n[dim]passes {', '.join(f'{x:.2f}' for x in ratio['pass_ratios'])}[/]"
        if starved_unreliable(r) or (r.get("overhead") or {}).get("dominated"):
            ratio_s += "\n[yellow]" + ("starved" if starved_unreliable(r) else "overhead-dominated") + "[/]"
        mem = peak_memory(r)
        absent = r.get("absent") or {}
        shown = "; ".join(f"{METRIC_LABELS.get(k, (k,))[0]} {fmt_metric(k, m.get(k), absent.get(k))}"
                          for k in extra.get(r["study"], []) if k in m or k in absent)
        table.add_row(study, case, "ok" + (" [yellow](NaN loss)[/]" if nonfinite_loss(r) else ""),
                      fmt_ci(m["step_time"], lambda x: fmt_value(x, "s")) if "step_time" in m else "-",
                      ratio_s, f"{m['throughput']['value']:.4g}/s" if "throughput" in m else "-",
                      fmt_value(mem[1] if mem else None, "B"),
                      (">= " if m.get("flop_rate", {}).get("lower_bound") else "")
                      + f"{m['flop_rate']['value'] / 1e9:.3g}" if "flop_rate" in m else "-", txt(shown))
    return table


def verdict_summary(path: Path, width: int = 80) -> list[str]:
    """The end of ``run``: the case counts, then one line per study with the smallest effect its run
    could resolve (so that "no clear difference" says whether to run longer) and its answer, each
    within ``width``."""
    from sciml_bench.report import collect
    from sciml_bench.report.content import status_counts
    from sciml_bench.report.words import at_least

    rep, records = collect([path])  # reads the run once
    out = [f"{len(records)} cases: {status_counts(records)}"[:width]]
    name_w = min(max([5, *(len(s.name) for s in rep.sections)]), 24)  # at least the header's "study"
    out.append(f"{'study':<{name_w}}  resolves  answer")
    for s in rep.sections:
        line = f"{s.name[:name_w]:<{name_w}}  {at_least(s.resolves):<8}  {s.short_answer}"
        out.append(line if len(line) <= width else line[:width - 1] + "…")
    return out


def print_trust_warnings(records: list[dict[str, Any]]) -> None:
    """Starved and overhead-dominated cases, loudly, under the table of ``run`` and ``show``."""
    from sciml_bench.results import trust_warnings

    for w in trust_warnings(records):
        console.print(f"[yellow]warning[/]: {txt(w)}")


def phase_table(records: list[dict[str, Any]]) -> Table:
    """Per case: time per phase of a step and its share (from a phases pass)."""
    from sciml_bench.compare import fmt_value
    from sciml_bench.workloads import PHASES

    t = Table(title="phase split of a step (phases pass after the timed rounds)", title_justify="left")
    for col in ("study", "case", *PHASES, "step", "gap"):
        t.add_column(col, justify="left" if col in ("study", "case") else "right", overflow="fold")
    for r in records:
        m = r.get("metrics", {})
        if "phase_step_time" not in m:
            continue
        cells = [f"{fmt_value(m[k]['value'], 's')} [dim]{m[k]['share']:.0%}[/]" if k in m else "[dim]-[/]"
                 for k in (f"phase_{p}_time" for p in PHASES)]
        gap = m["phase_gap"]
        t.add_row(escape(r["study"]), escape(r["case_id"]), *cells, fmt_value(m["phase_step_time"]["value"], "s"),
                  f"{gap['value']:+.1%}" if gap.get("within_tolerance") else f"[red]{gap['value']:+.1%}[/]")
    return t


def operator_table(rec: dict[str, Any]) -> Table:
    """A profiled case's top operators by self CPU time, per step (``key_averages().table()``, readable)."""
    from sciml_bench.compare import fmt_value

    prof = rec["profile"]
    cuda = "CUDA" in prof.get("activities", [])
    t = Table(title=f"{escape(rec['study'])} / {escape(rec['case_id'])}: top operators by self CPU time "
                    f"(per step, mean of {prof['steps']} profiled steps)", title_justify="left")
    for col in ("operator", "input shapes", "calls", "self CPU", *(("self device",) if cuda else ()),
                "MFLOP", "self CPU mem (net)"):
        t.add_column(col, justify="left" if col in ("operator", "input shapes") else "right", overflow="fold")
    for op in prof["top_ops"]:
        t.add_row(escape(op["name"]), escape(op["input_shapes"] or "-"), f"{op['calls']:.3g}",
                  fmt_value(op["self_cpu_us"] / 1e6, "s"),
                  *((fmt_value(op["self_device_us"] / 1e6, "s"),) if cuda else ()),
                  f"{op['flops'] / 1e6:.3g}" if op.get("flops") else "-", fmt_value(op["self_cpu_mem_bytes"], "B"))
    return t


def print_comparison(cmp, args: argparse.Namespace) -> int:
    """A comparison (two runs, or the arms of an A/B run) as a table, JSON or markdown; its exit code."""
    from sciml_bench.compare import fmt_p, fmt_ratio, fmt_value, to_json, to_markdown
    from sciml_bench.measure.instructions import fmt_delta

    if args.json:
        print(to_json(cmp))
        return cmp.exit_code
    if args.markdown:
        print("".join(plain(line) + "\n" for line in to_markdown(cmp).splitlines()), end="")
        return cmp.exit_code
    for w in cmp.warnings:
        err_console.print(f"[yellow]warning[/]: {txt(w)}")
    console.print(f"time compared: {txt(cmp.method)}")
    console.print(f"gate: {txt(cmp.basis)}")
    color = {"slower": "red", "larger": "red", "worse": "red", "faster": "green", "smaller": "green", "better": "green",
             "noisy": "yellow", "unreliable": "yellow", "more": "red", "fewer": "green"}
    t = Table(title=f"{txt(cmp.new_run)} vs {txt(cmp.base_run)} · threshold {cmp.threshold:.0%} · alpha {cmp.alpha}",
              title_justify="left")
    for col in ("study", "case", "metric", "base", "new", "new/base [95% CI]", "p", "verdict"):
        t.add_column(col, overflow="fold")
    for r in cmp.rows:
        c = color.get(r.verdict)
        t.add_row(txt(r.study), txt(r.case_id), txt(r.metric), fmt_value(r.base, r.unit), fmt_value(r.new, r.unit),
                  fmt_ratio(r),
                  fmt_p(r.p_value), (f"[{c}]{r.verdict}[/]" if c and r.gates else r.verdict)
                  + ("" if r.gates else " (not gating)"))
    console.print(t)
    for title, items in (("only in base", cmp.only_base), ("only in new", cmp.only_new),
                         ("not ok in one run", cmp.not_ok)):
        if items:
            console.print(f"{title}: " + ", ".join(txt(i) for i in items))
    for key, ops in cmp.operators.items():  # both runs profiled: which operators moved
        console.print(f"operators whose self time changed most, {txt(key)}: " + "; ".join(
            f"{txt(o['operator'])} [{'red' if o['delta_us'] > 0 else 'green'}]{o['delta_us'] / 1e3:+.3g} ms[/]/step"
            for o in ops))
    for key, fns in cmp.functions.items():  # both sides counted instructions: which functions moved
        if fns:
            console.print(f"functions whose instructions changed most, {txt(key)}: " + "; ".join(
                f"{txt(f['function'])} [{'red' if f['delta'] > 0 else 'green'}]{txt(fmt_delta(f))}[/]" for f in fns))
    n = len(cmp.failures)
    if cmp.broke:
        console.print(f"[red]{len(cmp.broke)} case(s) ok in base broke in new[/]: "
                      f"{txt(', '.join(cmp.broke))} (exit 1)")
    console.print(f"[red]{n} significantly worse beyond {cmp.threshold:.0%}[/] (exit 1)" if n else
                  f"no significant {'/'.join(cmp.fail_on)} regression beyond {cmp.threshold:.0%}"
                  + ("" if cmp.broke else " (exit 0)"))
    return cmp.exit_code


# ---------------------------------------------------------------- commands that print runs

def cmd_list(args: argparse.Namespace) -> int:
    """List models, studies or suites."""
    from sciml_bench.cases import builtin_suites, load_suite

    if args.what == "models":
        from sciml_bench.models import default_param_count, get_model_spec, list_models

        t = Table("model", "family", "task", "params", "knobs", "description", title="models")
        for name in list_models(args.pattern):
            spec = get_model_spec(name)
            t.add_row(txt(name), txt(spec.family), txt(spec.task), f"{default_param_count(name):,}",
                      txt(", ".join(sorted(spec.knobs))), txt(spec.description))
    elif args.what == "studies":
        suite = load_suite(args.suite)
        t = Table("study", "cases", "axes", "reference", "question", title=f"studies in suite {txt(suite.name)}")
        for s in suite.studies:
            if fnmatch(s.name, args.pattern):
                axes = "; ".join(f"{k}={v}" for k, v in s.axes.items())
                ref = ", ".join(f"{k}={v}" for k, v in s.reference.items()) or "-"
                t.add_row(txt(s.name), str(len(s.cases())), txt(axes), txt(ref), txt(s.question))
    else:
        t = Table("suite", "studies", "cases", "passes x rounds x round time", "description", title="suites")
        for name in builtin_suites():
            s = load_suite(name)
            t.add_row(txt(name), str(len(s.studies)), str(sum(len(st.cases()) for st in s.studies)),
                      f"{s.passes} x {s.rounds} x {s.round_time} s", txt(s.description))
    console.print(t)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print the per-case table of a run."""
    from sciml_bench.results import read_run, resolve_run

    path = resolve_run(args.run, args.dir)
    header, records = read_run(path)
    console.print(results_table(header, records))
    print_trust_warnings(records)
    if header.get("recommend"):  # a recommend run: its answer under the table
        from sciml_bench.recommend.command import answer_text

        for line in answer_text(path):
            console.print(txt(line), soft_wrap=True)
    if any("phase_step_time" in r.get("metrics", {}) for r in records):
        console.print(phase_table(records))
    console.print(f"[dim]{txt(path)}[/]")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two runs; exit 1 when a gated metric got significantly worse beyond the threshold."""
    from sciml_bench.compare import DEFAULT_ALPHA, DEFAULT_THRESHOLD, compare_ab, compare_runs
    from sciml_bench.results import read_run, resolve_run

    # None: the default ("time" across runs; an A/B run's own gate, kept in its header)
    fail_on = None if args.fail_on is None else tuple(f.strip() for f in args.fail_on.split(",") if f.strip())
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    base = resolve_run(args.base, args.dir)
    if args.new is None:  # one run: the two arms of an A/B run
        if not read_run(base)[0].get("ab"):
            raise UsageError(f"compare needs BASE and NEW runs; {base} is one ordinary run (only an A/B run from "
                             f"`sciml-bench ab` holds both sides)")
        cmp = compare_ab(base, threshold=None if args.threshold is None else args.threshold / 100,
                         alpha=args.alpha, fail_on=fail_on)
    else:
        threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold / 100
        cmp = compare_runs(base, resolve_run(args.new, args.dir), threshold=threshold, alpha=alpha,
                           fail_on=fail_on or ("time",), samples=args.samples)
    return print_comparison(cmp, args)


def cmd_history(args: argparse.Namespace) -> int:
    """Per-case trends on one machine, with step detection and a list of regressions.

    Exit 1 with ``--fail-on-change`` when the newest run starts a slower level in any series."""
    import json

    from sciml_bench.compare import fmt_value
    from sciml_bench.history import describe_point, history, history_figures

    if not Path(args.dir).is_dir():
        raise UsageError(f"--dir {args.dir}: not a directory")
    hist = history([args.dir], args.case, args.metric, args.machine, args.order, args.threshold / 100)
    newest = hist.newest_regressions
    code = 1 if args.fail_on_change and newest else 0
    if args.out:
        writable_dir(args.out, "--out")
        out = Path(args.out)
        names = history_figures(hist, out / "figures")
        (out / "history.json").write_text(json.dumps(hist.to_dict(), indent=1, default=str), encoding="utf-8")
        console.print(f"history: {txt(out / 'history.json')} and {len(names)} figures in {txt(out / 'figures')}")
    if args.json:
        print(json.dumps(hist.to_dict(), indent=1, default=str))
        return code
    t = Table(title=f"history · machine {txt(hist.machine)} · {len(hist.runs)} runs · {len(hist.series)} cases",
              title_justify="left")
    for col in ("study", "case", "runs", "basis", "latest", "steps", "regression (first run · commit · torch)"):
        t.add_column(col, overflow="fold")
    for s in hist.series:
        regs = [st for st in s.steps if st["ratio"] > 1 + hist.threshold]
        basis = "anchored" if s.normalised else "raw" + (f" ({s.raw_reason})" if s.raw_reason else "")
        t.add_row(txt(s.study), txt(s.case_id), str(len(s.points)), basis, txt(describe_point(s, s.points[-1])),
                  ", ".join(f"{st['ratio']:.2f}x@{st['index']}" + (f" [{st['ci_low']:.2f}, {st['ci_high']:.2f}]"
                                                                   if st.get("ci_low") is not None else "")
                            for st in s.steps) or "-",
                  "; ".join(f"[red]{st['ratio']:.2f}x[/] from {txt(st['run_id'])} · {txt(str(st['commit'] or '-')[:10])}"
                            f" · torch {txt(st['torch'])}" for st in regs) or "-")
    console.print(t)
    n_norm = sum(s.normalised for s in hist.series)
    console.print(f"[dim]basis: {n_norm} series anchor-normalised (case time in anchor times, machine-wide speed "
                  f"changes cancel), {len(hist.series) - n_norm} raw[/]")
    change = hist.anchor_change
    timed = sum(a["value"] is not None for a in hist.anchor)
    if change:
        first, last, ratio = change
        console.print(f"anchor (machine speed): {fmt_value(first['value'], 's')} ({txt(first['run_id'])}) → "
                      f"{fmt_value(last['value'], 's')} ({txt(last['run_id'])}), {ratio:.2f}x; "
                      f"{timed} of {len(hist.anchor)} runs timed it")
    else:
        console.print(f"[dim]anchor (machine speed): {timed} of {len(hist.anchor)} runs timed it[/]")
    if hist.other_machines:
        console.print(f"[dim]left out: runs of other machines {txt(hist.other_machines)} (use --machine)[/]")
    console.print(f"{len(hist.regressions)} regressions beyond {hist.threshold:.0%}")
    if args.fail_on_change:
        for r in newest:
            console.print(f"[red]slower in the newest run[/]: {txt(r['study'])}/{txt(r['case_id'])} "
                          f"{r['ratio']:.2f}x ({'anchored' if r['normalised'] else 'raw'})")
        console.print(f"--fail-on-change: {len(newest)} series start a slower level in the newest run "
                      f"{txt(hist.runs[-1]['run_id'])} (exit {code})")
    return code
