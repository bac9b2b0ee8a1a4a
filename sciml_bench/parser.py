"""The ``sciml-bench`` command line's grammar: every command and its options, each option declared once,
and the checks on option values that argparse cannot make.

``run``, ``profile``, ``ab`` and ``submit`` share their options through the ``add_*_options`` helpers, so
a flag means the same (type, default, help) in every command that takes it. Declaration only: the
commands themselves live in ``cli`` and ``display``, which dispatch on ``args.command``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from sciml_bench.cases import positive_number
from sciml_bench.errors import UsageError
from sciml_bench.worker import RunOptions


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


# ---------------------------------------------------------------- checks argparse cannot make

# the options of add_timing_options that must be positive numbers when given
TIMING_OPTIONS = ("rounds", "round_time", "timeout", "threads", "max_live", "passes", "instruction_calls")


def check_positive(args: argparse.Namespace, names: tuple[str, ...] = TIMING_OPTIONS) -> None:
    """UsageError for a given option among ``names`` (dests) that is not a finite positive number."""
    for name in names:
        if getattr(args, name, None) is not None:
            positive_number(getattr(args, name), f"--{name.replace('_', '-')}")


def check_seeds(args: argparse.Namespace) -> None:
    """UsageError unless ``--seeds``, when given, is a positive integer."""
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be a positive integer, got {args.seeds}")


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
    try:  # access() says yes to root on filesystems that refuse new entries (/proc): make one and remove it
        os.rmdir(tempfile.mkdtemp(prefix=".sciml-bench-probe-", dir=parent))
    except OSError as e:
        raise UsageError(f"{flag} {p}: cannot create a directory in {parent} ({e.strerror})") from None


def profile_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """ProfileOptions fields from ``--profile``, ``--schedule``, ``--profile-stack``, ``--profile-gzip``."""
    if not args.profile:
        return None
    parts = args.schedule.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--schedule must be WAIT,WARMUP,ACTIVE,REPEAT (four integers), got {args.schedule!r}")
    wait, warmup, active, repeat = map(int, parts)
    return {"out": getattr(args, "profile_out", None), "wait": wait, "warmup": warmup, "active": active,
            "repeat": repeat, "with_stack": args.profile_stack, "gzip": args.profile_gzip}


# ---------------------------------------------------------------- options shared between commands

def add_selection_options(p: argparse.ArgumentParser, suite_default: str = "quick",
                          device_help: str = "auto picks CUDA when present (default: auto)") -> None:
    """``--suite --study --model --set --device``: which cases run, and where."""
    p.add_argument("--suite", default=suite_default,
                   help=f"smoke | quick | full, or a path to a suite TOML file (default: {suite_default})")
    p.add_argument("--study", action="append", default=[], metavar="NAME", help="only this study (repeatable)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="only cases of this model; globs allowed (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a Case field in every case, e.g. --set batch_size=64 (repeatable)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help=device_help)


def add_out_option(p: argparse.ArgumentParser) -> None:
    """``--out DIR``: where run files are written."""
    p.add_argument("--out", default="results", metavar="DIR", help="results directory (default: results/)")


def add_timing_options(p: argparse.ArgumentParser, max_live: bool = True) -> None:
    """``--rounds --passes --round-time --timeout --threads [--max-live]``: how each case is timed
    (``TIMING_OPTIONS``, checked by ``check_positive``)."""
    p.add_argument("--rounds", type=int, help="interleaved timing rounds per case and pass (default: the suite's)")
    p.add_argument("--passes", type=int,
                   help="timed passes per study, each in fresh workers; all studies' pass 1 runs before any "
                        "pass 2, so the ratio CIs see the machine's slow changes (default: the suite's)")
    p.add_argument("--round-time", type=float, metavar="SECONDS",
                   help="seconds of timed steps per case per round (default: the suite's)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="per-case limit for setup plus all rounds (default: the suite's)")
    p.add_argument("--threads", type=int, help="torch intra-op threads in workers (default: torch's)")
    if max_live:
        p.add_argument("--max-live", type=int, default=RunOptions.max_live,
                       help="most worker processes alive at once; a study's cases are timed side by side "
                            f"in chunks of this size (default: {RunOptions.max_live})")


def add_count_options(p: argparse.ArgumentParser, gate: bool = False) -> None:
    """``--count --instruction-calls``: what each case is measured by besides time (``measure.instructions``)."""
    p.add_argument("--count", choices=("time", "instructions"), default=None,
                   help="instructions: after its timed rounds, also count each case's instructions per step under "
                        "Callgrind (one thread; valgrind needed; about a minute per case on the 2-core machine it was measured on: "
                        "docs/regression-tracking.md, from results/detection/instructions/score.json), "
                        "a figure a busy neighbour cannot move" + (
                            "; both arms are counted, and a case counted on both sides gates on its instructions "
                            "(rounds: the suite's, not raised to 12)" if gate else "")
                   + " (default: the suite's, time)")
    p.add_argument("--instruction-calls", type=int, metavar="N",
                   help="steps per Callgrind measurement, 3 measurements per case (default: the suite's, or 20)")


def add_setup_options(p: argparse.ArgumentParser) -> None:
    """``--seeds --hide-hostname --plugin``: training seeds, what the run header keeps, extra models."""
    p.add_argument("--seeds", type=int, metavar="N",
                   help="training seeds per mode='fit' case (convergence: mean and CI across seeds; default: "
                        "the suite's, 3)")
    p.add_argument("--hide-hostname", action="store_true", help="leave the hostname out of the run header")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE to register extra models (repeatable)")


def add_report_option(p: argparse.ArgumentParser) -> None:
    """``--no-report`` of the commands whose report goes beside the results directory."""
    p.add_argument("--no-report", action="store_true",
                   help="do not write the HTML/markdown report (default: reports/<run_id>/ beside --out)")


def add_shard_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", metavar="K/N",
                   help="run only shard K of N: whole studies, split by estimated cost, the same split on "
                        "every machine; merge the N run files with `sciml-bench merge`")


def add_profile_options(p: argparse.ArgumentParser, switches: bool) -> None:
    """``--schedule --profile-stack --profile-gzip``, after ``--phases --profile`` when ``switches``
    (``profile`` has both always on)."""
    if switches:
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


def add_runs_dir_option(p: argparse.ArgumentParser) -> None:
    """``--dir``: where run ids and 'latest' are looked up."""
    p.add_argument("--dir", default="results", help="results directory for ids and 'latest'")


def add_output_format_options(p: argparse.ArgumentParser, json_help: str) -> None:
    """``--json`` or ``--markdown`` (one of them) for a printed comparison."""
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help=json_help)
    fmt.add_argument("--markdown", action="store_true", help="print a markdown table (for PR comments)")


# ---------------------------------------------------------------- the commands

def build_parser() -> argparse.ArgumentParser:
    """The whole command line; ``args.command`` names the command to run."""
    p = _Parser(prog="sciml-bench", description="Benchmark and profile PyTorch scientific-ML architectures: "
                "speed, memory and FLOPs of the same configuration side by side, with honest CIs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    ls = sub.add_parser("list", help="list models, studies or suites")
    ls.add_argument("what", choices=("models", "studies", "suites"), help="what to list")
    ls.add_argument("pattern", nargs="?", default="*", help="glob filter on names (default: *)")
    ls.add_argument("--suite", default="quick", help="suite whose studies to list (default: quick)")

    run = sub.add_parser("run", help="run a suite and write results/<run_id>.jsonl",
                         description="Run the cases of a suite in worker subprocesses, timed in interleaved "
                                     "rounds, and append one record per case to results/<run_id>.jsonl.")
    add_selection_options(run)
    add_out_option(run)
    add_timing_options(run)
    add_count_options(run)
    run.add_argument("--resume", metavar="RUN", help="continue an interrupted run (path, run id or 'latest'), "
                                                     "skipping finished cases; other selection flags are ignored")
    add_setup_options(run)
    add_report_option(run)
    add_shard_option(run)
    add_profile_options(run, switches=True)

    prof = sub.add_parser("profile", help="trace cases with torch.profiler after their timed rounds",
                          description="Select cases exactly like `run`, time them as `run` does, then profile "
                                      "each after its timed rounds: phase split, torch.profiler trace (TensorBoard "
                                      "/ Perfetto / HTA), operator table and memory timeline under "
                                      "OUT/<study>/<case_id>/. Prints each case's top operators.")
    add_selection_options(prof)
    add_timing_options(prof)
    add_setup_options(prof)
    add_report_option(prof)
    add_shard_option(prof)
    prof.add_argument("--out", dest="profile_out", metavar="DIR",
                      help="profiles root: traces in DIR/<study>/<case_id>/ (default: reports/<run_id>/profiles)")
    prof.add_argument("--results", dest="out", default="results", metavar="DIR",
                      help="results directory for the run file (default: results/)")
    add_profile_options(prof, switches=False)
    prof.set_defaults(profile=True, phases=True, resume=None)  # profile is `run` with both switches on

    show = sub.add_parser("show", help="print the table of a run")
    show.add_argument("run", nargs="?", default="latest", help="run file, run id, or 'latest' (default)")
    add_runs_dir_option(show)

    rep = sub.add_parser("report", help="write reports/NAME/ (index.html, report.md, figures/) from runs",
                         description="Build a report from one or more runs: per-study tables, verdicts and "
                                     "figures, claims checked, machine peak, failed cases, environment.")
    rep.add_argument("runs", nargs="*", default=["latest"], metavar="RUN",
                     help="run files, run ids or 'latest' (default: latest)")
    rep.add_argument("--out", metavar="DIR", help="report directory (default: reports/<first run id>)")
    add_runs_dir_option(rep)
    rep.add_argument("--title", help="report title")
    rep.add_argument("--history", metavar="DIR", help="add a history section from the runs in DIR")

    cmp = sub.add_parser("compare", help="compare two runs case by case; exit 1 on a significant slowdown",
                         description="Compare NEW against BASE: ratio new/base with a 95 percent CI, Mann-Whitney U "
                                     "p-value and a verdict per case and metric. Exit code 1 when any case is "
                                     "significantly slower (or larger) beyond the threshold. When both runs timed "
                                     "the anchor, each round is divided by the anchor of its round first. Given "
                                     "one A/B run (sciml-bench ab), compares its arms, paired by round.")
    cmp.add_argument("base", help="baseline run (file, run id or 'latest'); alone: an A/B run, its arms compared")
    cmp.add_argument("new", nargs="?", help="new run (file, run id or 'latest')")
    add_runs_dir_option(cmp)
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
    add_output_format_options(cmp, "print JSON")

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
    add_selection_options(ab)
    add_out_option(ab)
    add_timing_options(ab)
    add_count_options(ab, gate=True)
    add_setup_options(ab)
    add_report_option(ab)
    ab.add_argument("--threshold", type=float, default=None, metavar="PERCENT",
                    help="smallest change that counts, in percent (default: 2; rounds are paired within one run)")
    ab.add_argument("--alpha", type=float, default=None, help="significance level of the paired test (default: 0.01)")
    ab.add_argument("--duet", action="store_true",
                    help="time a case's two arms at the same time, each pinned to its own half of the cores "
                         "(threads: at most half; default half), instead of one after the other (duet "
                         "benchmarking, Bulej et al. 2020); see the README for what it measured here")
    ab.add_argument("--fail-on", default="time", metavar="FAMILIES",
                    help="metric families that gate the exit code: time, memory, quality (default: time)")
    add_output_format_options(ab, "print the comparison as JSON")

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

    sm = sub.add_parser("submit", help="run a suite's shards as Slurm (or local) jobs via submitit, then merge",
                        description="Submit one submitit job per shard (`run --shard K/N` into "
                                    "OUT/submit-.../shard-K-of-N/), show the shards' states while waiting, "
                                    "resubmit failed ones (they resume: finished cases never run twice; preempted "
                                    "jobs are requeued by submitit), merge the shard runs and write the report.")
    add_selection_options(sm, suite_default="full", device_help="resolved on each job's machine (default: auto)")
    sm.add_argument("--shards", type=int, required=True, help="number of shards (jobs); at most one per study")
    sm.add_argument("--executor", default="slurm", choices=("slurm", "local"),
                    help="slurm, or local processes on this machine (default: slurm)")
    sm.add_argument("--partition", help="Slurm partition")
    sm.add_argument("--account", help="Slurm account")
    sm.add_argument("--gpus-per-node", type=int, help="GPUs per job")
    sm.add_argument("--cpus-per-task", type=int, help="CPU cores per job")
    sm.add_argument("--time", type=int, metavar="MINUTES", help="time limit per job in minutes")
    add_timing_options(sm, max_live=False)
    add_setup_options(sm)
    sm.add_argument("--out", default="results", metavar="DIR",
                    help="results directory: shard runs go to DIR/submit-<id>/, the merged run to DIR")
    sm.add_argument("--retries", type=int, default=1, help="resubmissions of a failed shard (default: 1)")
    sm.add_argument("--poll", type=float, default=10.0, metavar="SECONDS", help="state polling period (default: 10)")
    sm.add_argument("--no-wait", action="store_true", help="print the job ids and the merge command, then exit")
    sm.add_argument("--no-report", action="store_true", help="do not write a report")

    ia = sub.add_parser("import-asv", help="convert asv results into run files (reports, compare, history)",
                        description="Convert every asv result file (one per machine x commit x environment) "
                                    "into results/asv-<machine>-<commit>-<env>.jsonl; asv's machine info "
                                    "becomes the environment fingerprint. Unchanged files are skipped; a "
                                    "commit asv ran again is re-imported and the replaced values listed.")
    ia.add_argument("results_dir", nargs="?", default=".asv/results",
                    help="asv results_dir (default: .asv/results, as in asv.conf.json)")
    add_out_option(ia)

    ip = sub.add_parser("import-pytest-benchmark", help="convert pytest-benchmark JSON into a run file",
                        description="Convert files written by `pytest --benchmark-json FILE` into run files.")
    ip.add_argument("file", nargs="+", help="pytest-benchmark JSON file(s)")
    add_out_option(ip)
    add_recommend_parser(sub)
    return p


def add_recommend_parser(sub) -> None:
    """``recommend``: the fastest configuration of one model on this machine (``sciml_bench.recommend``)."""
    rc = sub.add_parser("recommend", help="the fastest configuration of a model here, within a memory limit and an "
                                          "accuracy tolerance",
                        description="Search precision, torch.compile, channels_last, gradient checkpointing, "
                                    "DataLoader workers, inference_mode and batch size for MODEL on this machine: "
                                    "every one-knob change first, then combinations of the winners by successive "
                                    "halving, then a short training run over seeds for each candidate that changes "
                                    "the numerics, then the winner against the baseline (fp32, eager, your batch "
                                    "size) and the runners-up over several passes. Values this machine cannot run "
                                    "are listed with the reason. Writes one run file (show, report, compare and "
                                    "load_results read it) and prints the answer with its --set line.")
    rc.add_argument("model", help="zoo model (sciml-bench list models) or a --plugin model")
    rc.add_argument("--mode", default="train", choices=("train", "infer"), help="train or infer (default: train)")
    rc.add_argument("--memory-limit", metavar="SIZE",
                    help="peak memory the answer must stay under, with a unit: 2GiB, 512MB (default: 90%% of the "
                         "GPU memory free at start, or half the RAM available)")
    rc.add_argument("--tolerance", type=float, default=0.05,
                    help="relative: a candidate changing precision, compile or batch size must keep its final "
                         "validation loss (95%% CI over seeds) under 1 + TOLERANCE times the baseline's (default: 0.05)")
    rc.add_argument("--budget", default="10m", metavar="TIME",
                    help="wall time of the whole search: 10m, 600s, 1h (default: 10m); what did not fit is listed")
    rc.add_argument("--batch-size", type=int, help="pin the batch size (not searched; the objective is then step time)")
    rc.add_argument("--max-batch-size", type=int, default=1024,
                    help="largest batch size tried (default: 1024, the accuracy check's training pool)")
    rc.add_argument("--knobs", metavar="LIST",
                    help="comma-separated knobs to search (default: all): precision, compile, channels_last, "
                         "checkpoint, grad_mode, num_workers, batch_size")
    rc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a baseline Case field, e.g. --set width=64 or --set batch_size=64 (repeatable)")
    rc.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: auto)")
    rc.add_argument("--fit-steps", type=int, default=60,
                    help="training steps of the accuracy check at the baseline's batch size (default: 60)")
    rc.add_argument("--seeds", type=int, default=3, help="seeds of the accuracy check (default: 3; at least 2)")
    add_out_option(rc)
    rc.add_argument("--threads", type=int, help="torch intra-op threads in workers (default: torch's)")
    rc.add_argument("--hide-hostname", action="store_true", help="leave the hostname out of the run header")
    rc.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                    help="import MODULE to register extra models (repeatable)")
    add_report_option(rc)
