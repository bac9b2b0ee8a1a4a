"""The ``sciml-bench`` command line: ``main`` and the commands that time code or write files, a thin
adapter over suites, the runner and the results store. The options are declared in ``parser``; the
tables and the commands that only print runs are in ``display``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sciml_bench.display import (cmd_compare, cmd_history, cmd_list, cmd_show, console, err_console, operator_table,
                                 phase_table, plain, print_comparison, print_trust_warnings, txt, verdict_summary)
from sciml_bench.errors import UsageError
from sciml_bench.parser import TIMING_OPTIONS, build_parser, check_positive, check_seeds, profile_options, writable_dir
from sciml_bench.units import fmt_bytes

__all__ = ["COMMANDS", "build_parser", "main", "plain"]


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


def cmd_run(args: argparse.Namespace) -> int:
    """Run a suite and write results/<run_id>.jsonl (the orchestration lives in runner.py)."""
    from sciml_bench.results import read_run, resolve_run
    from sciml_bench.runner import RunSpec, resume_run, start_run

    if args.resume:
        run = resume_run(resolve_run(args.resume, args.out))
    else:
        check_positive(args)
        check_seeds(args)
        writable_dir(args.out, "--out")
        spec = RunSpec(suite=args.suite, studies=args.study, models=args.model, set=args.set, device=args.device,
                       plugins=args.plugin, shard=args.shard or "", seeds=args.seeds)
        run = start_run(spec, args.out, rounds=args.rounds, round_time=args.round_time, timeout=args.timeout,
                        threads=args.threads, max_live=args.max_live, hide_hostname=args.hide_hostname,
                        phases=args.phases, profile=profile_options(args), passes=args.passes,
                        count=getattr(args, "count", None), instruction_calls=getattr(args, "instruction_calls", None))
    args.run_path = run.path  # for `profile`, which prints operator tables after the run
    opts = run.opts
    err_console.print(f"[bold]sciml-bench[/] run {txt(run.run_id)}: {run.todo} cases ({len(run.done)} already done), "
                      f"{opts.passes} pass(es) x {opts.rounds} rounds x {opts.round_time} s, "
                      f"device {txt(run.spec.device)} → {txt(run.path)}")
    from sciml_bench.cases import load_suite

    planned = {study.name for study, _ in run.plan}
    for study, w in load_suite(run.spec.suite).warnings:
        if study in planned:  # `--study X` hears of X's choices only
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


def cmd_ab(args: argparse.Namespace) -> int:
    """Time two code versions in one interleaved run, then compare the arms like `compare`."""
    from sciml_bench.ab import MIN_PASSES, MIN_ROUNDS, arms
    from sciml_bench.supervise import duet_cores
    from sciml_bench.compare import DEFAULT_AB_THRESHOLD, DEFAULT_ALPHA, check_options, compare_ab
    from sciml_bench.runner import RunSpec, start_run

    check_positive(args)
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
        # the suite's rounds and passes, but at least MIN_*: fewer cannot resolve what ab is for; with
        # --count instructions a counted case gates on its instructions, so the suite's rounds stand (not where
        # this machine cannot count: every case would gate on time, from too few rounds)
        from sciml_bench.measure.instructions import unavailable

        counts = args.count == "instructions" and unavailable() is None
        run = start_run(spec, args.out, rounds=args.rounds, round_time=args.round_time, timeout=args.timeout,
                        threads=threads, max_live=args.max_live, hide_hostname=args.hide_hostname,
                        passes=args.passes, least=(1 if counts else MIN_ROUNDS, MIN_PASSES),
                        arms=[base, new], duet=args.duet, count=args.count, instruction_calls=args.instruction_calls,
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

    check_positive(args, ("shards", *TIMING_OPTIONS, "time"))
    check_seeds(args)
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


def cmd_recommend(args: argparse.Namespace) -> int:
    """Search the fastest configuration of a model (sciml_bench.recommend), print the answer, write the report."""
    from types import SimpleNamespace

    from sciml_bench.recommend.command import answer_text, request
    from sciml_bench.recommend.search import SearchOptions, search

    req = request(args)  # every one-line error before anything is built or written
    check_positive(args, ("threads",))
    writable_dir(args.out, "--out")
    path = search(req, args.out, SearchOptions(threads=args.threads, hide_hostname=args.hide_hostname),
                  execute=execute_with_progress, say=lambda line: err_console.print(f"[bold]recommend[/] {txt(line)}"))
    for line in answer_text(path):
        console.print(txt(line), soft_wrap=True)
    console.print(f"results: {txt(path)}")
    if not args.no_report:
        write_report(SimpleNamespace(path=path, run_id=path.name.removesuffix(".jsonl")))
    return 0


# what each command of ``parser.build_parser`` runs
COMMANDS = {"list": cmd_list, "run": cmd_run, "profile": cmd_profile, "show": cmd_show, "report": cmd_report,
            "compare": cmd_compare, "ab": cmd_ab, "history": cmd_history, "merge": cmd_merge, "submit": cmd_submit,
            "import-asv": cmd_import_asv, "import-pytest-benchmark": cmd_import_pytest_benchmark,
            "recommend": cmd_recommend}


def main(argv: list[str] | None = None) -> int:
    """Entry point: UsageError becomes one line on stderr and exit code 2."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"sciml-bench: error: {plain(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a run's rounds (which keep their records and say so): 130, as a shell does
        print("sciml-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
