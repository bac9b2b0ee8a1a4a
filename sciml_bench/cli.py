"""The ``sciml-bench`` command line: a thin adapter over suites, the runner and the results store."""
from __future__ import annotations

import argparse
import os
import re
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sciml_bench.errors import UsageError
from sciml_bench.cases import positive_number
from sciml_bench.units import fmt_bytes

# Piped output (files, CI logs) gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 180)
err_console = Console(stderr=True)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


# ---------------------------------------------------------------- formatting

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


def writable_dir(path: str | os.PathLike, flag: str) -> None:
    """UsageError unless ``path`` is a directory this user can write, or can be created as one.

    Checked before any work, so a bad ``--out`` fails at once and creates nothing."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {p}: exists and is not a directory")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {p}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {p}: {parent} is not writable by this user (read-only or permissions)")


def fmt_ci(m: dict[str, Any], fmt) -> str:
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return fmt(m["value"])
    level = m.get("ci_level", 0.95)  # imported asv intervals are 99%: say so where they are shown
    tag = "" if level == 0.95 else f" {level:.0%} CI"
    return f"{fmt(m['value'])} [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]{tag}"


def results_table(header: dict[str, Any], records: list[dict[str, Any]]) -> Table:
    """The per-case table of ``show``: every case with its numbers and the metrics its study promises."""
    from sciml_bench.compare import fmt_value
    from sciml_bench.report.content import METRIC_LABELS, fmt_metric, study_metrics
    from sciml_bench.report.words import ratio_words
    from sciml_bench.results import nonfinite_loss, peak_memory, starved_unreliable

    studies = header.get("studies") if isinstance(header.get("studies"), dict) else {}
    extra = {name: study_metrics(st.get("axes") or {}, st.get("metrics")) for name, st in studies.items()
             if isinstance(st, dict)}
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
    """The end of ``run``: the case counts, then one line per study with its answer, each within ``width``."""
    from sciml_bench.report import collect
    from sciml_bench.report.content import status_counts
    from sciml_bench.results import read_run

    header, records = read_run(path)
    rep, _ = collect([path])
    out = [f"{len(records)} cases: {status_counts(records)}"[:width]]
    name_w = min(max((len(s.name) for s in rep.sections), default=0), 24)
    for s in rep.sections:
        line = f"{s.name[:name_w]:<{name_w}}  {s.short_answer}"
        out.append(line if len(line) <= width else line[:width - 1] + "…")
    return out


def print_trust_warnings(records: list[dict[str, Any]]) -> None:
    """Starved and overhead-dominated cases, loudly, under the table of ``run`` and ``show``."""
    from sciml_bench.results import trust_warnings

    for w in trust_warnings(records):
        console.print(f"[yellow]warning[/]: {txt(w)}")


# ---------------------------------------------------------------- commands

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


def execute_with_progress(run) -> bool:
    """``runner.execute`` under a progress bar with ETA; False when Ctrl-C stopped it (records kept)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from sciml_bench.runner import execute

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    written = [0]
    try:
        with Progress(*columns, console=err_console, transient=False) as progress:
            task = progress.add_task("starting", total=run.units)

            def tick(desc: str, n: int) -> None:
                progress.update(task, description=txt(plain(desc)[:70]), advance=n)

            execute(run, tick, on_record=lambda rec: written.__setitem__(0, written[0] + 1))
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted[/]: {written[0]} new records kept in {txt(run.path)} (the study "
                          f"chunk in progress is discarded)")
        return False
    return True


def timing_options(args: argparse.Namespace) -> None:
    """UsageError for a non-positive timing option (shared by run and ab)."""
    for name in ("rounds", "round_time", "timeout", "threads", "max_live", "passes"):
        if getattr(args, name, None) is not None:
            positive_number(getattr(args, name), f"--{name.replace('_', '-')}")


def cmd_run(args: argparse.Namespace) -> int:
    """Run a suite and write results/<run_id>.jsonl (the orchestration lives in runner.py)."""
    from sciml_bench.results import read_run, resolve_run
    from sciml_bench.runner import RunSpec, resume_run, start_run

    if args.resume:
        run = resume_run(resolve_run(args.resume, args.out))
    else:
        timing_options(args)
        if args.seeds is not None and args.seeds < 1:
            raise UsageError(f"--seeds must be a positive integer, got {args.seeds}")
        writable_dir(args.out, "--out")
        spec = RunSpec(suite=args.suite, studies=args.study, models=args.model, set=args.set, device=args.device,
                       plugins=args.plugin, shard=args.shard or "", seeds=args.seeds)
        run = start_run(spec, args.out, rounds=args.rounds, round_time=args.round_time, timeout=args.timeout,
                        threads=args.threads, max_live=args.max_live, hide_hostname=args.hide_hostname,
                        phases=args.phases, profile=_profile_options(args), passes=args.passes)
    args.run_path = run.path  # for `profile`, which prints operator tables after the run
    opts = run.opts
    err_console.print(f"[bold]sciml-bench[/] run {txt(run.run_id)}: {run.todo} cases ({len(run.done)} already done), "
                      f"{opts.passes} pass(es) x {opts.rounds} rounds x {opts.round_time} s, "
                      f"device {txt(run.spec.device)} → {txt(run.path)}")
    from sciml_bench.cases import load_suite

    for w in load_suite(run.spec.suite).warnings:
        err_console.print(f"[yellow]warning[/]: {txt(w)}")
    if not execute_with_progress(run):
        err_console.print(f"continue with: sciml-bench run --resume {txt(run.path)}")
        return 130
    header, records = read_run(run.path)
    out = Console(width=80) if not sys.stdout.isatty() else console  # the summary fits 80 columns
    for line in verdict_summary(run.path):
        out.print(txt(line), soft_wrap=True)
    console.print(f"results: {txt(run.path)}")
    console.print(f"full table: sciml-bench show {txt(run.run_id)}"
                  + ("" if run.path.parent == Path("results") else f" --dir {txt(run.path.parent)}"))
    print_trust_warnings(records)  # after the 80-column summary: they name cases and can be long
    if not args.no_report:
        write_report(run)
    return 0


def write_report(run) -> None:
    """reports/<run_id>/ beside the results directory, after run or ab; a failure is a warning."""
    from sciml_bench.report import build_report

    report_dir = run.path.resolve().parent.parent / "reports" / run.run_id
    try:
        console.print(f"report: {txt(build_report([run.path], report_dir) / 'index.html')}")
    except Exception as e:  # noqa: BLE001  (the results file is the product; a report bug must not hide it)
        err_console.print(f"[yellow]report not written[/]: {type(e).__name__}: {txt(e)}; "
                          f"retry with: sciml-bench report {txt(run.path)}")


def cmd_show(args: argparse.Namespace) -> int:
    """Print the per-case table of a run."""
    from sciml_bench.results import read_run, resolve_run

    path = resolve_run(args.run, args.dir)
    header, records = read_run(path)
    console.print(results_table(header, records))
    print_trust_warnings(records)
    if any("phase_step_time" in r.get("metrics", {}) for r in records):
        console.print(phase_table(records))
    console.print(f"[dim]{txt(path)}[/]")
    return 0


# ---------------------------------------------------------------- profiling

def _profile_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """ProfileOptions fields from ``--profile``, ``--schedule``, ``--profile-stack``, ``--profile-gzip``."""
    if not args.profile:
        return None
    parts = args.schedule.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--schedule must be WAIT,WARMUP,ACTIVE,REPEAT (four integers), got {args.schedule!r}")
    wait, warmup, active, repeat = map(int, parts)
    return {"out": getattr(args, "profile_out", None), "wait": wait, "warmup": warmup, "active": active,
            "repeat": repeat, "with_stack": args.profile_stack, "gzip": args.profile_gzip}


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


def cmd_profile(args: argparse.Namespace) -> int:
    """Run the selected cases (timed rounds as in `run`), trace each after its rounds, print the tables."""
    from sciml_bench.results import read_run

    code = cmd_run(args)
    if code != 0 or getattr(args, "run_path", None) is None:
        return code
    _, records = read_run(args.run_path)
    for r in records:
        if r.get("profile"):
            console.print(operator_table(r))
            mem = r["profile"].get("memory") or {}
            if mem.get("peak_bytes") is not None:
                console.print(f"memory peak {fmt_bytes(mem['peak_bytes'])} ({mem['device']}) in phase "
                              f"[bold]{escape(mem['peak_phase'])}[/]")
            console.print(f"[dim]files: {escape(r['profile']['dir'])}/ ({', '.join(sorted(r['profile']['files']))})[/]")
        elif r["status"] == "ok":
            console.print(f"[yellow]{escape(r['case_id'])}: no profile[/] "
                          f"({escape(r.get('absent', {}).get('profile', 'see the case log'))})")
    console.print(phase_table(records))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a report directory from one or more runs."""
    from sciml_bench.report import build_report
    from sciml_bench.results import read_run, resolve_run

    from sciml_bench.results import safe_filename

    paths = [resolve_run(r, args.dir) for r in args.runs]
    out = args.out or str(Path("reports") / safe_filename(str(read_run(paths[0])[0].get("run_id", "report"))))
    writable_dir(out, "--out")
    if args.history and not Path(args.history).is_dir():
        raise UsageError(f"--history {args.history}: not a directory")
    path = build_report(paths, out, title=args.title, history_dir=args.history)
    console.print(f"report: {txt(path / 'index.html')}  (also {txt(path / 'report.md')})")
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


def print_comparison(cmp, args: argparse.Namespace) -> int:
    """A comparison (two runs, or the arms of an A/B run) as a table, JSON or markdown; its exit code."""
    from sciml_bench.compare import fmt_p, fmt_ratio, fmt_value, to_json, to_markdown

    if args.json:
        print(to_json(cmp))
        return cmp.exit_code
    if args.markdown:
        print("".join(plain(line) + "\n" for line in to_markdown(cmp).splitlines()), end="")
        return cmp.exit_code
    for w in cmp.warnings:
        err_console.print(f"[yellow]warning[/]: {txt(w)}")
    console.print(f"time compared: {txt(cmp.method)}")
    color = {"slower": "red", "larger": "red", "worse": "red", "faster": "green", "smaller": "green", "better": "green",
             "noisy": "yellow", "unreliable": "yellow"}
    t = Table(title=f"{txt(cmp.new_run)} vs {txt(cmp.base_run)} · threshold {cmp.threshold:.0%} · alpha {cmp.alpha}",
              title_justify="left")
    for col in ("study", "case", "metric", "base", "new", "new/base [95% CI]", "p", "verdict"):
        t.add_column(col, overflow="fold")
    for r in cmp.rows:
        c = color.get(r.verdict)
        t.add_row(txt(r.study), txt(r.case_id), txt(r.metric), fmt_value(r.base, r.unit), fmt_value(r.new, r.unit),
                  fmt_ratio(r),
                  fmt_p(r.p_value), f"[{c}]{r.verdict}[/]" if c else r.verdict)
    console.print(t)
    for title, items in (("only in base", cmp.only_base), ("only in new", cmp.only_new),
                         ("not ok in one run", cmp.not_ok)):
        if items:
            console.print(f"{title}: " + ", ".join(txt(i) for i in items))
    for key, ops in cmp.operators.items():  # both runs profiled: which operators moved
        console.print(f"operators whose self time changed most, {txt(key)}: " + "; ".join(
            f"{txt(o['operator'])} [{'red' if o['delta_us'] > 0 else 'green'}]{o['delta_us'] / 1e3:+.3g} ms[/]/step"
            for o in ops))
    n = len(cmp.failures)
    if cmp.broke:
        console.print(f"[red]{len(cmp.broke)} case(s) ok in base broke in new[/]: "
                      f"{txt(', '.join(cmp.broke))} (exit 1)")
    console.print(f"[red]{n} significantly worse beyond {cmp.threshold:.0%}[/] (exit 1)" if n else
                  f"no significant {'/'.join(cmp.fail_on)} regression beyond {cmp.threshold:.0%}"
                  + ("" if cmp.broke else " (exit 0)"))
    return cmp.exit_code


def cmd_ab(args: argparse.Namespace) -> int:
    """Time two code versions in one interleaved run, then compare the arms like `compare`."""
    from sciml_bench.ab import MIN_PASSES, MIN_ROUNDS, arms, duet_cores
    from sciml_bench.compare import DEFAULT_AB_THRESHOLD, DEFAULT_ALPHA, check_options, compare_ab
    from sciml_bench.runner import RunSpec, start_run

    timing_options(args)
    fail_on = tuple(f.strip() for f in args.fail_on.split(",") if f.strip())
    threshold = DEFAULT_AB_THRESHOLD if args.threshold is None else args.threshold / 100
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    check_options(threshold, alpha, fail_on, "rounds")  # before minutes of timing, not after
    if args.passes is not None and args.passes < MIN_PASSES:
        raise UsageError(f"ab --passes must be at least {MIN_PASSES}: the arms' CI comes from the spread between "
                         f"passes (fresh processes), got {args.passes}")
    threads = args.threads
    if args.duet:  # each arm gets half the cores: more threads would make the two arms fight over them
        cores = len(duet_cores()[0])
        threads = threads or cores
        if threads > cores:
            raise UsageError(f"--duet gives each arm {cores} of this machine's cores, so --threads must be at most "
                             f"{cores}, got {threads}")
    writable_dir(args.out, "--out")
    spec = RunSpec(suite=args.suite, studies=args.study, models=args.model, set=args.set, device=args.device,
                   plugins=args.plugin, seeds=args.seeds)
    with arms(args.base, args.new, args.repo, args.plugin) as (base, new):
        # the suite's rounds and passes, but at least MIN_*: fewer cannot resolve what ab is for
        run = start_run(spec, args.out, rounds=args.rounds, round_time=args.round_time, timeout=args.timeout,
                        threads=threads, max_live=args.max_live, hide_hostname=args.hide_hostname,
                        passes=args.passes, least=(MIN_ROUNDS, MIN_PASSES), arms=[base, new], duet=args.duet,
                        ab_gate={"threshold": threshold, "alpha": alpha, "fail_on": list(fail_on)})
        opts = run.opts
        err_console.print(f"[bold]sciml-bench[/] ab {txt(run.run_id)}: {run.todo} cases x 2 arms, {opts.passes} "
                          f"pass(es) x {opts.rounds} rounds x {opts.round_time} s, "
                          + (f"the arms' blocks at the same time on disjoint cores ({opts.threads} thread(s) each), "
                             "cases" if opts.duet else "a case's arms back to back, cases") +
                          f" in a random order per round (seed {opts.seed}) → {txt(run.path)}")
        for arm in (base, new):
            err_console.print(f"  {arm.name}: {txt(arm.describe())}")
        if not execute_with_progress(run):
            return 130
    (err_console if args.json or args.markdown else console).print(f"results: {txt(run.path)}")  # stdout: JSON only
    cmp = compare_ab(run.path)  # with the gate the header keeps: the report agrees with this exit code
    code = print_comparison(cmp, args)
    if not args.no_report and not (args.json or args.markdown):
        write_report(run)
    return code


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


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge shard runs into one run file (checked for sameness), then write its report."""
    from sciml_bench.results import resolve_run
    from sciml_bench.shard import merge_runs

    paths = [resolve_run(r, args.dir) for r in args.runs]
    path, warnings = merge_runs(paths, args.out, allow_mixed=args.allow_mixed)
    for w in warnings:
        err_console.print(f"[yellow]warning[/]: {escape(w)}")
    console.print(f"merged {len(paths)} runs: {path}")
    if not args.no_report:
        from sciml_bench.report import build_report

        console.print(f"report: {build_report([path], args.report or Path('reports') / path.stem) / 'index.html'}")
    return 0


def _shard_table(shards) -> Table:
    t = Table("shard", "job", "state", "attempts", "cases written", "last error", title="shards", title_justify="left")
    for sh in shards:
        files = sorted(sh.directory.glob("*.jsonl"))
        written = max(0, len(files[-1].read_text(errors="replace").splitlines()) - 1) if files else 0
        color = {"COMPLETED": "green", "FAILED": "red"}.get(sh.state, "yellow")
        t.add_row(sh.label, str(sh.job.job_id), f"[{color}]{escape(sh.state)}[/]", str(sh.attempts), str(written),
                  escape(sh.errors[-1]) if sh.errors else "")
    return t


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a suite's shards through submitit, wait, merge them and write the report."""
    from rich.live import Live

    from sciml_bench.results import new_run_id
    from sciml_bench.runner import RunSpec
    from sciml_bench.shard import merge_runs
    try:
        from sciml_bench.submit import make_executor, shard_runs, submit_shards, wait
    except ImportError as e:
        raise UsageError(f"submit needs submitit ({e}); install it with: pip install 'sciml-bench[cluster]'") from None

    for name in ("shards", "rounds", "round_time", "timeout", "threads", "time", "passes"):
        if getattr(args, name) is not None:
            positive_number(getattr(args, name), f"--{name.replace('_', '-')}")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be a positive integer, got {args.seeds}")
    spec = RunSpec(suite=args.suite, studies=args.study, models=args.model, set=args.set, device=args.device,
                   plugins=args.plugin, seeds=args.seeds)
    out = Path(args.out) / new_run_id(f"submit-{Path(args.suite).stem}")
    executor = make_executor(args.executor, out / "submitit", partition=args.partition,
                             gpus_per_node=args.gpus_per_node, time_min=args.time, account=args.account,
                             cpus_per_task=args.cpus_per_task)
    options = {k: v for k, v in (("rounds", args.rounds), ("round_time", args.round_time), ("timeout", args.timeout),
                                 ("threads", args.threads), ("passes", args.passes),
                                 ("hide_hostname", args.hide_hostname)) if v}
    shards = submit_shards(spec, args.shards, out, executor, options)
    merge_cmd = f"sciml-bench merge {out}/shard-*/*.jsonl --out {args.out}"
    err_console.print(f"[bold]sciml-bench[/] submitted {args.shards} shards of suite {args.suite} "
                      f"({args.executor}): jobs {', '.join(str(sh.job.job_id) for sh in shards)} → {out}")
    if args.no_wait:
        console.print(_shard_table(shards))
        console.print(f"when they finish: {merge_cmd}")
        return 0
    try:
        with Live(_shard_table(shards), console=err_console, refresh_per_second=1) as live:
            wait(shards, executor, spec, options, retries=args.retries, poll=args.poll,
                 on_change=lambda s: live.update(_shard_table(s)))
    except KeyboardInterrupt:
        err_console.print(f"[yellow]stopped waiting[/]: the jobs keep running; when they finish: {merge_cmd}")
        return 130
    runs = shard_runs(shards)
    if not runs:
        err_console.print("[red]no shard wrote a run file[/]; see the job logs in " + str(out / "submitit"))
        return 1
    path, warnings = merge_runs(runs, args.out)
    for w in warnings:
        err_console.print(f"[yellow]warning[/]: {escape(w)}")
    console.print(f"merged: {path}")
    if not args.no_report:
        from sciml_bench.report import build_report

        console.print(f"report: {build_report([path], Path('reports') / path.stem) / 'index.html'}")
    failed = [sh.label for sh in shards if sh.state != "COMPLETED"]
    if failed:
        err_console.print(f"[red]shards {', '.join(failed)} failed[/] after {args.retries} resubmission(s); "
                          f"see {out / 'submitit'}")
    return 1 if failed else 0


def cmd_import_asv(args: argparse.Namespace) -> int:
    """Convert asv results into run files (one per machine x commit x environment)."""
    from sciml_bench.imports import import_asv

    writable_dir(args.out, "--out")
    done = import_asv(args.results_dir, args.out)
    for path in done.written:
        console.print(f"imported: {txt(path)}")
    for path, changes in done.replaced.items():  # asv ran that commit again: its new numbers win
        console.print(f"re-imported: {txt(path)} ({len(changes)} changed)")
        for line in changes[:10]:
            console.print(f"  replaced {txt(line)}")
        if len(changes) > 10:
            console.print(f"  ... and {len(changes) - 10} more")
    console.print(f"{len(done.written)} run files written to {txt(args.out)}" +
                  (f", {len(done.replaced)} re-imported" if done.replaced else "") +
                  (f", {len(done.skipped)} unchanged" if done.skipped else ""))
    return 0


def cmd_import_pytest_benchmark(args: argparse.Namespace) -> int:
    """Convert a pytest-benchmark --benchmark-json file into a run file."""
    from sciml_bench.imports import import_pytest_benchmark

    writable_dir(args.out, "--out")
    for f in args.file:
        console.print(f"imported: {txt(import_pytest_benchmark(f, args.out))}")
    return 0


def _add_profile_args(p: argparse.ArgumentParser, in_run: bool) -> None:
    if in_run:
        p.add_argument("--phases", action="store_true",
                       help="after the timed rounds, time each phase of a step (data, h2d, forward, loss, backward, "
                            "optimizer) in its own pass and record it; writes no trace")
        p.add_argument("--profile", action="store_true",
                       help="after the timed rounds, also trace each case with torch.profiler into "
                            "reports/<run_id>/profiles/<study>/<case_id>/ (the timed rounds are unchanged)")
    p.add_argument("--schedule", default="1,1,3,1", metavar="WAIT,WARMUP,ACTIVE,REPEAT",
                   help="torch.profiler.schedule: steps skipped, warmed up, recorded, and cycles (default: 1,1,3,1)")
    p.add_argument("--profile-stack", action="store_true",
                   help="record Python stacks (bigger traces; adds the memory-by-category timeline)")
    p.add_argument("--profile-gzip", action="store_true", help="write gzip-compressed traces (*.pt.trace.json.gz)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sciml-bench", description="Benchmark and profile PyTorch scientific-ML architectures: "
                "speed, memory and FLOPs of the same configuration side by side, with honest CIs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    ls = sub.add_parser("list", help="list models, studies or suites")
    ls.add_argument("what", choices=("models", "studies", "suites"), help="what to list")
    ls.add_argument("pattern", nargs="?", default="*", help="glob filter on names (default: *)")
    ls.add_argument("--suite", default="quick", help="suite whose studies to list (default: quick)")
    ls.set_defaults(fn=cmd_list)

    run = sub.add_parser("run", help="run a suite and write results/<run_id>.jsonl",
                         description="Run the cases of a suite in worker subprocesses, timed in interleaved "
                                     "rounds, and append one record per case to results/<run_id>.jsonl.")
    run.add_argument("--suite", default="quick",
                     help="smoke | quick | full, or a path to a suite TOML file (default: quick)")
    run.add_argument("--study", action="append", default=[], metavar="NAME", help="only this study (repeatable)")
    run.add_argument("--model", action="append", default=[], metavar="NAME",
                     help="only cases of this model; globs allowed (repeatable)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a Case field in every case, e.g. --set batch_size=64 (repeatable)")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="auto picks CUDA when present (default: auto)")
    run.add_argument("--out", default="results", metavar="DIR", help="results directory (default: results/)")
    run.add_argument("--rounds", type=int, help="interleaved timing rounds per case and pass (default: the suite's)")
    run.add_argument("--passes", type=int,
                     help="timed passes per study, each in fresh workers; all studies' pass 1 runs before any "
                          "pass 2, so the ratio CIs see the machine's slow changes (default: the suite's)")
    run.add_argument("--round-time", type=float, metavar="SECONDS",
                     help="seconds of timed steps per case per round (default: the suite's)")
    run.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="per-case limit for setup plus all rounds (default: the suite's)")
    run.add_argument("--threads", type=int, help="torch intra-op threads in workers (default: torch's)")
    run.add_argument("--max-live", type=int, default=8,
                     help="most worker processes alive at once; a study's cases are timed side by side "
                          "in chunks of this size (default: 8)")
    run.add_argument("--resume", metavar="RUN", help="continue an interrupted run (path, run id or 'latest'), "
                                                     "skipping finished cases; other selection flags are ignored")
    run.add_argument("--seeds", type=int, metavar="N",
                     help="training seeds per mode='fit' case (convergence: mean and CI across seeds; default: "
                          "the suite's, 3)")
    run.add_argument("--hide-hostname", action="store_true", help="leave the hostname out of the run header")
    run.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                     help="import MODULE to register extra models (repeatable)")
    run.add_argument("--no-report", action="store_true",
                     help="do not write the HTML/markdown report (default: reports/<run_id>/ beside --out)")
    run.add_argument("--shard", metavar="K/N",
                     help="run only shard K of N: whole studies, split by estimated cost, the same split on "
                          "every machine; merge the N run files with `sciml-bench merge`")
    _add_profile_args(run, in_run=True)
    run.set_defaults(fn=cmd_run)

    prof = sub.add_parser("profile", help="trace cases with torch.profiler after their timed rounds",
                          description="Select cases exactly like `run`, time them as `run` does, then profile "
                                      "each after its timed rounds: phase split, torch.profiler trace (TensorBoard "
                                      "/ Perfetto / HTA), operator table and memory timeline under "
                                      "OUT/<study>/<case_id>/. Prints each case's top operators.")
    for action in run._actions:  # the same selection and timing options as `run`, defined once
        if action.dest not in ("help", "out", "resume", "profile", "phases", "schedule", "profile_stack",
                               "profile_gzip"):
            prof._add_action(action)
    prof.add_argument("--out", dest="profile_out", metavar="DIR",
                      help="profiles root: traces in DIR/<study>/<case_id>/ (default: reports/<run_id>/profiles)")
    prof.add_argument("--results", dest="out", default="results", metavar="DIR",
                      help="results directory for the run file (default: results/)")
    _add_profile_args(prof, in_run=False)
    prof.set_defaults(fn=cmd_profile, profile=True, phases=True, resume=None)

    show = sub.add_parser("show", help="print the table of a run")
    show.add_argument("run", nargs="?", default="latest", help="run file, run id, or 'latest' (default)")
    show.add_argument("--dir", default="results", help="results directory for ids and 'latest'")
    show.set_defaults(fn=cmd_show)

    rep = sub.add_parser("report", help="write reports/NAME/ (index.html, report.md, figures/) from runs",
                         description="Build a report from one or more runs: per-study tables, verdicts and "
                                     "figures, claims checked, machine peak, failed cases, environment.")
    rep.add_argument("runs", nargs="*", default=["latest"], metavar="RUN",
                     help="run files, run ids or 'latest' (default: latest)")
    rep.add_argument("--out", metavar="DIR", help="report directory (default: reports/<first run id>)")
    rep.add_argument("--dir", default="results", help="results directory for ids and 'latest'")
    rep.add_argument("--title", help="report title")
    rep.add_argument("--history", metavar="DIR", help="add a history section from the runs in DIR")
    rep.set_defaults(fn=cmd_report)

    cmp = sub.add_parser("compare", help="compare two runs case by case; exit 1 on a significant slowdown",
                         description="Compare NEW against BASE: ratio new/base with a 95 percent CI, Mann-Whitney U "
                                     "p-value and a verdict per case and metric. Exit code 1 when any case is "
                                     "significantly slower (or larger) beyond the threshold. When both runs timed "
                                     "the anchor, each round is divided by the anchor of its round first. Given "
                                     "one A/B run (sciml-bench ab), compares its arms, paired by round.")
    cmp.add_argument("base", help="baseline run (file, run id or 'latest'); alone: an A/B run, its arms compared")
    cmp.add_argument("new", nargs="?", help="new run (file, run id or 'latest')")
    cmp.add_argument("--dir", default="results", help="results directory for ids and 'latest'")
    cmp.add_argument("--threshold", type=float, default=None, metavar="PERCENT",
                     help="smallest change that counts, in percent (default: 5 across runs, 2 for an A/B run)")
    cmp.add_argument("--alpha", type=float, default=None,
                     help="significance level of the Mann-Whitney U test (default: 0.01)")
    cmp.add_argument("--fail-on", default=None, metavar="FAMILIES",
                     help="comma-separated metric families that gate the exit code: time, memory, quality "
                          "(final loss and task metric of mode=fit cases: converges worse) (default: time; "
                          "an A/B run: the families its `ab` gated on)")
    cmp.add_argument("--samples", default="rounds", choices=("rounds", "raw"),
                     help="test the per-round medians, the independent units (default: rounds), or every "
                          "per-call time (raw: anti-conservative, calls of one round share its drift)")
    fmt = cmp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--markdown", action="store_true", help="print a markdown table (for PR comments)")
    cmp.set_defaults(fn=cmd_compare)

    ab = sub.add_parser("ab", help="time two code versions (interpreters or git revisions) in one interleaved run; "
                                   "exit 1 on a regression",
                        description="A/B: every selected case runs in a worker of each arm; in every round a "
                                    "case's two arms are timed back to back in a random order, and the cases "
                                    "take turns in a random order, so both arms see the same machine. "
                                    "An ARM is a Python interpreter (another venv, e.g. another torch release; it "
                                    "runs this checkout's code) or a git revision of --repo (checked out into a "
                                    "temporary worktree, first on that arm's import path). Writes one run file "
                                    "with both arms, prints the comparison (as `compare`) and exits 1 when a case "
                                    "is significantly slower beyond --threshold. Rounds per pass: the suite's, but "
                                    "at least 12 unless --rounds is given (fewer missed real 10-percent slowdowns "
                                    "here); passes: the suite's, at least 2. For a 5-percent change use more "
                                    "passes, e.g. --passes 6 --rounds 24 (README: 'How far to trust compare and ab').")
    ab.add_argument("--base", required=True, metavar="ARM", help="baseline: interpreter path or git revision")
    ab.add_argument("--new", required=True, metavar="ARM", help="new version: interpreter path or git revision")
    ab.add_argument("--repo", metavar="PATH",
                    help="repository whose revisions the ARMs name, e.g. a plugin package's (default: the "
                         "current directory's repository)")
    for action in run._actions:  # the selection and timing options of `run`, defined once
        if action.dest not in ("help", "resume", "profile", "phases", "schedule", "profile_stack", "profile_gzip",
                               "shard", "profile_out"):
            ab._add_action(action)
    ab.add_argument("--threshold", type=float, default=None, metavar="PERCENT",
                    help="smallest change that counts, in percent (default: 2; rounds are paired within one run)")
    ab.add_argument("--alpha", type=float, default=None, help="significance level of the paired test (default: 0.01)")
    ab.add_argument("--duet", action="store_true",
                    help="time a case's two arms at the same time, each pinned to its own half of the cores "
                         "(threads: at most half; default half), instead of one after the other (duet "
                         "benchmarking, Bulej et al. 2020); see the README for what it measured here")
    ab.add_argument("--fail-on", default="time", metavar="FAMILIES",
                    help="metric families that gate the exit code: time, memory, quality (default: time)")
    abfmt = ab.add_mutually_exclusive_group()
    abfmt.add_argument("--json", action="store_true", help="print the comparison as JSON")
    abfmt.add_argument("--markdown", action="store_true", help="print a markdown table (for PR comments)")
    ab.set_defaults(fn=cmd_ab)

    hist = sub.add_parser("history", help="per-case trends over runs of one machine, with change points",
                          description="Order the runs of one machine by time (or commit), fit each case's "
                                      "series piecewise-constant and list the steps up (regressions) with "
                                      "the first run, commit and torch version at which each appeared. "
                                      "step_time series whose every run timed the anchor (a fixed numpy "
                                      "workload timed in the same rounds) are tracked in anchor times, so "
                                      "machine-wide speed changes cancel; the others stay in raw seconds.")
    hist.add_argument("--dir", default="results", help="directory of run files (default: results/)")
    hist.add_argument("--case", default="*", metavar="PATTERN", help="glob on case id or study/case id")
    hist.add_argument("--metric", default="step_time", help="metric to track (default: step_time)")
    hist.add_argument("--machine", help="machine id prefix (default: the newest run's machine)")
    hist.add_argument("--order", default="time", choices=("time", "commit"), help="run order (default: time)")
    hist.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                      help="smallest step that counts as a regression, in percent (default: 5)")
    hist.add_argument("--out", metavar="DIR", help="also write trend figures and history.json here")
    hist.add_argument("--json", action="store_true", help="print JSON")
    hist.add_argument("--fail-on-change", action="store_true",
                      help="exit 1 when the newest run starts a slower level (a step up beyond --threshold) in "
                           "any series, and name them; an older step, already reported, does not fail again. "
                           "For nightly CI: append a run to --dir, then gate on this")
    hist.set_defaults(fn=cmd_history)

    mg = sub.add_parser("merge", help="merge shard runs (run --shard K/N) into one run and report",
                        description="Combine the run files of a sharded run into one. Refuses a run, shard or "
                                    "case given twice, and runs whose suite, selection, options, code commit, "
                                    "software or hardware differ (unless --allow-mixed); lists missing shards.")
    mg.add_argument("runs", nargs="+", metavar="RUN", help="shard run files or run ids")
    mg.add_argument("--out", default="results", metavar="DIR", help="directory of the merged run (default: results/)")
    mg.add_argument("--dir", default="results", help="results directory for run ids")
    mg.add_argument("--allow-mixed", action="store_true",
                    help="merge runs that differ anyway; the differences become warnings in the report")
    mg.add_argument("--report", metavar="DIR", help="report directory (default: reports/<merged run id>)")
    mg.add_argument("--no-report", action="store_true", help="do not write a report")
    mg.set_defaults(fn=cmd_merge)

    sm = sub.add_parser("submit", help="run a suite's shards as Slurm (or local) jobs via submitit, then merge",
                        description="Submit one submitit job per shard (`run --shard K/N` into "
                                    "OUT/submit-.../shard-K-of-N/), show the shards' states while waiting, "
                                    "resubmit failed ones (they resume: finished cases never run twice; preempted "
                                    "jobs are requeued by submitit), merge the shard runs and write the report.")
    sm.add_argument("--suite", default="full", help="suite name or TOML path (default: full)")
    sm.add_argument("--shards", type=int, required=True, help="number of shards (jobs); at most one per study")
    sm.add_argument("--executor", default="slurm", choices=("slurm", "local"),
                    help="slurm, or local processes on this machine (default: slurm)")
    sm.add_argument("--partition", help="Slurm partition")
    sm.add_argument("--account", help="Slurm account")
    sm.add_argument("--gpus-per-node", type=int, help="GPUs per job")
    sm.add_argument("--cpus-per-task", type=int, help="CPU cores per job")
    sm.add_argument("--time", type=int, metavar="MINUTES", help="time limit per job in minutes")
    for flag, kw in (("--study", dict(action="append", default=[], metavar="NAME", help="only this study")),
                     ("--model", dict(action="append", default=[], metavar="NAME", help="only this model (glob)")),
                     ("--set", dict(action="append", default=[], metavar="KEY=VALUE", help="override a Case field")),
                     ("--plugin", dict(action="append", default=[], metavar="MODULE", help="extra model module"))):
        sm.add_argument(flag, **kw)
    sm.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="resolved on each job's machine (default: auto)")
    sm.add_argument("--rounds", type=int, help="timing rounds per case (default: the suite's)")
    sm.add_argument("--round-time", type=float, metavar="SECONDS", help="seconds per case per round")
    sm.add_argument("--timeout", type=float, metavar="SECONDS", help="per-case limit (default: the suite's)")
    sm.add_argument("--threads", type=int, help="torch intra-op threads in workers")
    sm.add_argument("--passes", type=int, help="timed passes per study, each in fresh workers (default: the suite's)")
    sm.add_argument("--seeds", type=int, metavar="N",
                    help="training seeds per mode='fit' case (default: the suite's, 3)")
    sm.add_argument("--hide-hostname", action="store_true", help="leave hostnames out of the run headers")
    sm.add_argument("--out", default="results", metavar="DIR",
                    help="results directory: shard runs go to DIR/submit-<id>/, the merged run to DIR")
    sm.add_argument("--retries", type=int, default=1, help="resubmissions of a failed shard (default: 1)")
    sm.add_argument("--poll", type=float, default=10.0, metavar="SECONDS", help="state polling period (default: 10)")
    sm.add_argument("--no-wait", action="store_true", help="print the job ids and the merge command, then exit")
    sm.add_argument("--no-report", action="store_true", help="do not write a report")
    sm.set_defaults(fn=cmd_submit)

    ia = sub.add_parser("import-asv", help="convert asv results into run files (reports, compare, history)",
                        description="Convert every asv result file (one per machine x commit x environment) "
                                    "into results/asv-<machine>-<commit>-<env>.jsonl; asv's machine info "
                                    "becomes the environment fingerprint. Unchanged files are skipped; a "
                                    "commit asv ran again is re-imported and the replaced values listed.")
    ia.add_argument("results_dir", nargs="?", default=".asv/results",
                    help="asv results_dir (default: .asv/results, as in asv.conf.json)")
    ia.add_argument("--out", default="results", metavar="DIR", help="results directory (default: results/)")
    ia.set_defaults(fn=cmd_import_asv)

    ip = sub.add_parser("import-pytest-benchmark", help="convert pytest-benchmark JSON into a run file",
                        description="Convert files written by `pytest --benchmark-json FILE` into run files.")
    ip.add_argument("file", nargs="+", help="pytest-benchmark JSON file(s)")
    ip.add_argument("--out", default="results", metavar="DIR", help="results directory (default: results/)")
    ip.set_defaults(fn=cmd_import_pytest_benchmark)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: UsageError becomes one line on stderr and exit code 2."""
    try:
        args = build_parser().parse_args(argv)
        return args.fn(args)
    except UsageError as e:
        print(f"sciml-bench: error: {plain(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
