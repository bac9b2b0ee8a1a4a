"""Shared fixtures: one real smoke run through the CLI, reused by tests that read results."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 300, env: dict | None = None,
            **kw) -> subprocess.CompletedProcess:
    """Run ``python -m sciml_bench ARGS`` in a subprocess (the way a user runs it)."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "sciml_bench", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env, **kw)


def marked(mark: str) -> list:
    """Live processes whose environment carries ``SCIML_TEST_MARK=mark``: the descendants of a run
    started with that mark (``run_cli(..., env={"SCIML_TEST_MARK": mark})``), whatever their parent now."""
    import psutil

    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("SCIML_TEST_MARK") == mark and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, OSError):
            pass
    return out


def no_report() -> list[str]:
    """``["--no-report"]`` once ``run`` writes reports by default, so tests skip report building."""
    from sciml_bench.cli import build_parser

    return ["--no-report"] if "--no-report" in build_parser().format_help() + _run_help() else []


def _run_help() -> str:
    from sciml_bench.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["run"].format_help()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """Path of a results file from a real ``sciml-bench run --suite smoke --no-report`` on this machine."""
    out = tmp_path_factory.mktemp("smoke")
    args = ["run", "--suite", "smoke", "--device", "cpu", "--out", str(out), *no_report()]
    proc = run_cli(*args, timeout=600)
    assert proc.returncode == 0, f"smoke run failed:\n{proc.stdout}\n{proc.stderr}"
    files = sorted(out.glob("*.jsonl"))
    assert len(files) == 1, f"expected one run file, got {files}"
    return files[0]


@pytest.fixture(scope="session")
def asv_smoke(tmp_path_factory) -> Path:
    """A temp dir holding asv.conf.json, a machine file and the results of one real
    ``asv run --python=same --quick`` of the smoke "models" study's mlp cases (tests/_asv.py)."""
    from tests._asv import run_asv_smoke

    tmp = tmp_path_factory.mktemp("asv")
    run_asv_smoke(tmp)
    return tmp
