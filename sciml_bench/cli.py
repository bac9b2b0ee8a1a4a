"""The ``sciml-bench`` command line: a thin adapter over suites, the runner and the results store."""
from __future__ import annotations

import argparse
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sciml_bench.errors import UsageError
from sciml_bench.cases import positive_number

# Piped output (files, CI logs) gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 180)
err_console = Console(stderr=True)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


# ---------------------------------------------------------------- formatting

def fmt_ci(m: dict[str, Any], fmt) -> str:
    if m.get("ci_low") is None or m.get("ci_high") is None:
        return fmt(m["value"])
    return f"{fmt(m['value'])} [{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]"


def results_table(header: dict[str, Any], records: list[dict[str, Any]]) -> Table:
    """The per-case table of ``show`` and the end of ``run``."""
    from sciml_bench.compare import fmt_value
    from sciml_bench.runner import peak_memory

    table = Table(title=f"run {header.get('run_id')} · suite {header.get('suite')} · "
                        f"{header.get('environment', {}).get('cpu_model', '?')}", title_justify="left")
    for col, just in (("study", "left"), ("case", "left"), ("status", "left"),
                      ("step time, median [95% CI]", "right"), ("vs ref [95% CI]", "right"),
                      ("throughput", "right"), ("peak mem", "right"), ("GFLOP/s", "right")):
        table.add_column(col, justify=just, overflow="fold")
    for r in records:
        m = r.get("metrics", {})
        study, case = escape(r["study"]), escape(r["case_id"])  # ids are text, never rich markup
        if r["status"] != "ok":
            table.add_row(study, case, f"[red]{r['status']}[/]", f"[dim]{escape(r.get('reason') or '')}[/]",
                          "", "", "", "")
            continue
        ratio = m.get("time_ratio")
        ratio_s = "ref" if ratio and ratio.get("reference") == r["case_id"] else (
            fmt_ci(ratio, lambda x: f"{x:.2f}x") if ratio else "-")
        mem = peak_memory(r)
        table.add_row(study, case, "ok", fmt_ci(m["step_time"], lambda x: fmt_value(x, "s")) if "step_time" in m else "-", ratio_s,
                      f"{m['throughput']['value']:.4g}/s" if "throughput" in m else "-",
                      fmt_value(mem[1] if mem else None, "B"),
                      f"{m['flop_rate']['value'] / 1e9:.3g}" if "flop_rate" in m else "-")
    return table


# ---------------------------------------------------------------- commands

def cmd_list(args: argparse.Namespace) -> int:
    """List models, studies or suites."""
    from sciml_bench.cases import builtin_suites, load_suite

    if args.what == "models":
        from sciml_bench.models import create_model, get_model_spec, list_models, param_count

        t = Table("model", "family", "task", "params", "knobs", "description", title="models")
        for name in list_models(args.pattern):
            spec = get_model_spec(name)
            t.add_row(name, spec.family, spec.task, f"{param_count(create_model(name)):,}",
                      ", ".join(sorted(spec.knobs)), spec.description)
    elif args.what == "studies":
        suite = load_suite(args.suite)
        t = Table("study", "cases", "axes", "reference", "question", title=f"studies in suite {suite.name}")
        for s in suite.studies:
            if fnmatch(s.name, args.pattern):
                axes = "; ".join(f"{k}={v}" for k, v in s.axes.items())
                ref = ", ".join(f"{k}={v}" for k, v in s.reference.items()) or "-"
                t.add_row(s.name, str(len(s.cases())), axes, ref, s.question)
    else:
        t = Table("suite", "studies", "cases", "rounds x round time", "description", title="suites")
        for name in builtin_suites():
            s = load_suite(name)
            t.add_row(name, str(len(s.studies)), str(sum(len(st.cases()) for st in s.studies)),
                      f"{s.rounds} x {s.round_time} s", s.description)
    console.print(t)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a suite and write results/<run_id>.jsonl (the orchestration lives in runner.py)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from sciml_bench.results import read_run, resolve_run
    from sciml_bench.runner import RunSpec, execute, resume_run, start_run

    if args.resume:
        run = resume_run(resolve_run(args.resume, args.out))
    else:
        for name in ("rounds", "round_time", "timeout", "threads", "max_live"):
            if getattr(args, name) is not None:
                positive_number(getattr(args, name), f"--{name.replace('_', '-')}")
        if args.seeds is not None and args.seeds < 1:
            raise UsageError(f"--seeds must be a positive integer, got {args.seeds}")
        spec = RunSpec(suite=args.suite, studies=args.study, models=args.model, set=args.set, device=args.device,
                       plugins=args.plugin, seeds=args.seeds)
        run = start_run(spec, args.out, rounds=args.rounds, round_time=args.round_time, timeout=args.timeout,
                        threads=args.threads, max_live=args.max_live, hide_hostname=args.hide_hostname)
    opts = run.opts
    err_console.print(f"[bold]sciml-bench[/] run {run.run_id}: {run.todo} cases ({len(run.done)} already done), "
                      f"{opts.rounds} rounds x {opts.round_time} s, device {run.spec.device} → {run.path}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    written = [0]
    try:
        with Progress(*columns, console=err_console, transient=False) as progress:
            task = progress.add_task("starting", total=run.units)

            def tick(desc: str, n: int) -> None:
                progress.update(task, description=desc[:70], advance=n)

            execute(run, tick, on_record=lambda rec: written.__setitem__(0, written[0] + 1))
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted[/]: {written[0]} new records kept in {run.path} (the study chunk "
                          f"in progress is discarded); continue with: sciml-bench run --resume {run.path}")
        return 130
    header, records = read_run(run.path)
    console.print(results_table(header, records))
    failed = [r for r in records if r["status"] != "ok"]
    console.print(f"results: {run.path}" + (f"  ({len(failed)} of {len(records)} cases not ok)" if failed else ""))
    if not args.no_report:
        from sciml_bench.report import build_report

        report_dir = run.path.resolve().parent.parent / "reports" / run.run_id
        try:
            console.print(f"report: {build_report([run.path], report_dir) / 'index.html'}")
        except Exception as e:  # noqa: BLE001  (the results file is the product; a report bug must not hide it)
            err_console.print(f"[yellow]report not written[/]: {type(e).__name__}: {e}; "
                              f"retry with: sciml-bench report {run.path}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print the per-case table of a run."""
    from sciml_bench.results import read_run, resolve_run

    path = resolve_run(args.run, args.dir)
    header, records = read_run(path)
    console.print(results_table(header, records))
    console.print(f"[dim]{path}[/]")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a report directory from one or more runs."""
    from sciml_bench.report import build_report
    from sciml_bench.results import read_run, resolve_run

    paths = [resolve_run(r, args.dir) for r in args.runs]
    out = args.out or str(Path("reports") / read_run(paths[0])[0].get("run_id", "report"))
    if args.history and not Path(args.history).is_dir():
        raise UsageError(f"--history {args.history}: not a directory")
    path = build_report(paths, out, title=args.title, history_dir=args.history)
    console.print(f"report: {path / 'index.html'}  (also {path / 'report.md'})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two runs; exit 1 when a gated metric got significantly worse beyond the threshold."""
    from sciml_bench.compare import DEFAULT_ALPHA, compare_runs, fmt_p, fmt_ratio, fmt_value, to_json, to_markdown
    from sciml_bench.results import resolve_run

    fail_on = tuple(f.strip() for f in args.fail_on.split(",") if f.strip())
    cmp = compare_runs(resolve_run(args.base, args.dir), resolve_run(args.new, args.dir),
                       threshold=args.threshold / 100, alpha=DEFAULT_ALPHA if args.alpha is None else args.alpha,
                       fail_on=fail_on, samples=args.samples)
    if args.json:
        print(to_json(cmp))
        return cmp.exit_code
    if args.markdown:
        print(to_markdown(cmp), end="")
        return cmp.exit_code
    for w in cmp.warnings:
        err_console.print(f"[yellow]warning[/]: {w}")
    color = {"slower": "red", "larger": "red", "worse": "red", "faster": "green", "smaller": "green", "better": "green",
             "noisy": "yellow"}
    t = Table(title=f"{cmp.new_run} vs {cmp.base_run} · threshold {cmp.threshold:.0%} · alpha {cmp.alpha}",
              title_justify="left")
    for col in ("study", "case", "metric", "base", "new", "new/base [95% CI]", "p", "verdict"):
        t.add_column(col, overflow="fold")
    for r in cmp.rows:
        c = color.get(r.verdict)
        t.add_row(r.study, r.case_id, r.metric, fmt_value(r.base, r.unit), fmt_value(r.new, r.unit), fmt_ratio(r),
                  fmt_p(r.p_value), f"[{c}]{r.verdict}[/]" if c else r.verdict)
    console.print(t)
    for title, items in (("only in base", cmp.only_base), ("only in new", cmp.only_new),
                         ("not ok in one run", cmp.not_ok)):
        if items:
            console.print(f"{title}: " + ", ".join(items))
    n = len(cmp.failures)
    if cmp.broke:
        console.print(f"[red]{len(cmp.broke)} case(s) ok in base broke in new[/]: {', '.join(cmp.broke)} (exit 1)")
    console.print(f"[red]{n} significantly worse beyond {cmp.threshold:.0%}[/] (exit 1)" if n else
                  f"no significant {'/'.join(cmp.fail_on)} regression beyond {cmp.threshold:.0%}"
                  + ("" if cmp.broke else " (exit 0)"))
    return cmp.exit_code


def cmd_history(args: argparse.Namespace) -> int:
    """Per-case trends on one machine, with step detection and a list of regressions."""
    import json

    from sciml_bench.compare import fmt_value, history, history_figures

    if not Path(args.dir).is_dir():
        raise UsageError(f"--dir {args.dir}: not a directory")
    hist = history([args.dir], args.case, args.metric, args.machine, args.order, args.threshold / 100)
    if args.out:
        out = Path(args.out)
        names = history_figures(hist, out / "figures")
        (out / "history.json").write_text(json.dumps(hist.to_dict(), indent=1, default=str), encoding="utf-8")
        console.print(f"history: {out / 'history.json'} and {len(names)} figures in {out / 'figures'}")
    if args.json:
        print(json.dumps(hist.to_dict(), indent=1, default=str))
        return 0
    unit = "s" if args.metric.endswith("time") else ""
    t = Table(title=f"history · machine {hist.machine} · {len(hist.runs)} runs · {len(hist.series)} cases",
              title_justify="left")
    for col in ("study", "case", "runs", "latest", "steps", "regression (first run · commit · torch)"):
        t.add_column(col, overflow="fold")
    for s in hist.series:
        regs = [st for st in s.steps if st["ratio"] > 1 + hist.threshold]
        t.add_row(s.study, s.case_id, str(len(s.points)), fmt_value(s.points[-1]["value"], unit),
                  ", ".join(f"{st['ratio']:.2f}x@{st['index']}" for st in s.steps) or "-",
                  "; ".join(f"[red]{st['ratio']:.2f}x[/] from {st['run_id']} · {str(st['commit'] or '-')[:10]} · "
                            f"torch {st['torch']}" for st in regs) or "-")
    console.print(t)
    if hist.other_machines:
        console.print(f"[dim]left out: runs of other machines {hist.other_machines} (use --machine)[/]")
    console.print(f"{len(hist.regressions)} regressions beyond {hist.threshold:.0%}")
    return 0


def cmd_import_asv(args: argparse.Namespace) -> int:
    """Convert asv results into run files (one per machine x commit x environment)."""
    from sciml_bench.imports import import_asv

    written, skipped = import_asv(args.results_dir, args.out)
    for path in written:
        console.print(f"imported: {path}")
    console.print(f"{len(written)} run files written to {args.out}" +
                  (f", {len(skipped)} already imported" if skipped else ""))
    return 0


def cmd_import_pytest_benchmark(args: argparse.Namespace) -> int:
    """Convert a pytest-benchmark --benchmark-json file into a run file."""
    from sciml_bench.imports import import_pytest_benchmark

    for f in args.file:
        console.print(f"imported: {import_pytest_benchmark(f, args.out)}")
    return 0


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
    run.add_argument("--rounds", type=int, help="interleaved timing rounds per case (default: the suite's)")
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
    run.set_defaults(fn=cmd_run)

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
                         description="Compare NEW against BASE: ratio new/base with a 95%% CI, Mann-Whitney U "
                                     "p-value and a verdict per case and metric. Exit code 1 when any case is "
                                     "significantly slower (or larger) beyond the threshold.")
    cmp.add_argument("base", help="baseline run (file, run id or 'latest')")
    cmp.add_argument("new", help="new run (file, run id or 'latest')")
    cmp.add_argument("--dir", default="results", help="results directory for ids and 'latest'")
    cmp.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                     help="smallest change that counts, in percent (default: 5)")
    cmp.add_argument("--alpha", type=float, default=None,
                     help="significance level of the Mann-Whitney U test (default: 0.01)")
    cmp.add_argument("--fail-on", default="time", metavar="FAMILIES",
                     help="comma-separated metric families that gate the exit code: time, memory, quality "
                          "(final loss and task metric of mode=fit cases: converges worse) (default: time)")
    cmp.add_argument("--samples", default="raw", choices=("raw", "rounds"),
                     help="test every per-call time (raw) or the per-round medians (default: raw)")
    fmt = cmp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--markdown", action="store_true", help="print a markdown table (for PR comments)")
    cmp.set_defaults(fn=cmd_compare)

    hist = sub.add_parser("history", help="per-case trends over runs of one machine, with change points",
                          description="Order the runs of one machine by time (or commit), fit each case's "
                                      "series piecewise-constant and list the steps up (regressions) with "
                                      "the first run, commit and torch version at which each appeared.")
    hist.add_argument("--dir", default="results", help="directory of run files (default: results/)")
    hist.add_argument("--case", default="*", metavar="PATTERN", help="glob on case id or study/case id")
    hist.add_argument("--metric", default="step_time", help="metric to track (default: step_time)")
    hist.add_argument("--machine", help="machine id prefix (default: the newest run's machine)")
    hist.add_argument("--order", default="time", choices=("time", "commit"), help="run order (default: time)")
    hist.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                      help="smallest step that counts as a regression, in percent (default: 5)")
    hist.add_argument("--out", metavar="DIR", help="also write trend figures and history.json here")
    hist.add_argument("--json", action="store_true", help="print JSON")
    hist.set_defaults(fn=cmd_history)

    ia = sub.add_parser("import-asv", help="convert asv results into run files (reports, compare, history)",
                        description="Convert every asv result file (one per machine x commit x environment) "
                                    "into results/asv-<machine>-<commit>-<env>.jsonl; asv's machine info "
                                    "becomes the environment fingerprint. Already imported files are skipped.")
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
        print(f"sciml-bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
