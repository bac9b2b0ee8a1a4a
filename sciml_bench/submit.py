"""Submission: a suite's shards as submitit jobs (Slurm, or local processes), waited for and merged.

Each shard is one job that runs ``run --shard K/N`` into its own directory. A job that finds a
run file there resumes it, so a preempted job requeued by submitit (``Checkpointable``) or a
failed one resubmitted here continues where it stopped: finished cases never run twice.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import submitit

from sciml_bench.errors import UsageError

EXECUTORS = ("slurm", "local")


def run_shard(spec: dict[str, Any], shard_dir: str, options: dict[str, Any]) -> str:
    """One shard's job: start its run in ``shard_dir``, or resume the run an earlier attempt left there."""
    from sciml_bench.runner import RunSpec, execute, resume_run, start_run

    existing = sorted(Path(shard_dir).glob("*.jsonl"))
    run = resume_run(existing[-1]) if existing else start_run(RunSpec(**spec), shard_dir, **options)
    execute(run)
    return str(run.path)


class ShardJob(submitit.helpers.Checkpointable):
    """``run_shard`` as a submitit job; on preemption submitit requeues it with the same arguments,
    and the requeued job resumes the shard's run file."""

    def __call__(self, spec: dict[str, Any], shard_dir: str, options: dict[str, Any]) -> str:
        return run_shard(spec, shard_dir, options)


@dataclass
class Shard:
    """One shard's job and its history of attempts."""

    index: int
    count: int
    directory: Path
    job: Any = None
    attempts: int = 0
    state: str = "PENDING"
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def make_executor(kind: str, folder: Path, *, partition: str | None = None, gpus_per_node: int | None = None,
                  time_min: int | None = None, account: str | None = None, cpus_per_task: int | None = None):
    """A submitit executor: Slurm, or local processes (the path tested without a cluster)."""
    if kind not in EXECUTORS:
        raise UsageError(f"unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")
    try:
        ex = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    except RuntimeError as e:  # e.g. no srun on this machine
        raise UsageError(f"--executor {kind}: {e}; --executor local runs the shards on this machine") from None
    params: dict[str, Any] = {"name": "sciml-bench-shard", "tasks_per_node": 1, "nodes": 1}
    if time_min:
        params["timeout_min"] = time_min
    if gpus_per_node is not None:
        params["gpus_per_node"] = gpus_per_node
    if cpus_per_task:
        params["cpus_per_task"] = cpus_per_task
    if kind == "slurm":
        params.update({k: v for k, v in (("slurm_partition", partition), ("slurm_account", account)) if v})
    elif partition or account:
        raise UsageError("--partition and --account apply to --executor slurm only")
    ex.update_parameters(**params)
    return ex


def submit_shards(spec: Any, shards: int, out: str | Path, executor: Any, options: dict[str, Any] | None = None
                  ) -> list[Shard]:
    """Submit one job per shard of ``spec`` (a RunSpec); each writes into ``out/shard-K-of-N/``."""
    from sciml_bench.runner import plan_cases

    # Validate the selection and N here, not in a job; the device is resolved on the job's machine.
    plan_cases(_sharded(spec, f"{shards}/{shards}", device="cpu"))
    out = Path(out).resolve()  # jobs may start in another working directory
    result = []
    for k in range(1, shards + 1):
        sh = Shard(k, shards, out / f"shard-{k}-of-{shards}")
        sh.directory.mkdir(parents=True, exist_ok=True)
        result.append(sh)
    for sh in result:
        _submit(sh, executor, spec, options or {})
    return result


def _sharded(spec: Any, shard: str, **changes: Any) -> Any:
    """``spec`` (a RunSpec) for shard ``"K/N"``."""
    from sciml_bench.runner import RunSpec

    return RunSpec(**dict(asdict(spec), shard=shard, **changes))


def _submit(sh: Shard, executor: Any, spec: Any, options: dict[str, Any]) -> None:
    sh.job = executor.submit(ShardJob(), asdict(_sharded(spec, sh.label)), str(sh.directory), options)
    sh.attempts += 1
    sh.state = "SUBMITTED"


def wait(shards: list[Shard], executor: Any, spec: Any, options: dict[str, Any] | None = None, retries: int = 1,
         poll: float = 5.0, on_change: Callable[[list[Shard]], None] = lambda s: None) -> None:
    """Wait for every shard, resubmitting a failed one (it resumes) up to ``retries`` times."""
    while True:
        changed = False
        for sh in shards:
            if sh.state in ("COMPLETED", "FAILED"):
                continue
            state = sh.job.state if not sh.job.done() else None
            if state is None:
                err = sh.job.exception()
                if err is None:
                    state = "COMPLETED"
                elif sh.attempts <= retries:
                    sh.errors.append(str(err).strip().splitlines()[-1][:300] if str(err).strip() else repr(err))
                    _submit(sh, executor, spec, options or {})
                    state = f"RESUBMITTED ({sh.attempts})"
                else:
                    sh.errors.append(str(err).strip().splitlines()[-1][:300] if str(err).strip() else repr(err))
                    state = "FAILED"
            if state != sh.state:
                sh.state, changed = state, True
        if changed:
            on_change(shards)
        if all(sh.state in ("COMPLETED", "FAILED") for sh in shards):
            return
        time.sleep(poll)


def shard_runs(shards: list[Shard]) -> list[Path]:
    """The run files the shards wrote (a failed shard may have written a partial one)."""
    return [p for sh in shards for p in sorted(sh.directory.glob("*.jsonl"))[-1:]]
