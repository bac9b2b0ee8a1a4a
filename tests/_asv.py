"""Driving the real asv CLI on a small generated subset: config in a temp dir, machine file, run, compare."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASV = shutil.which("asv", path=str(Path(sys.executable).parent)) or shutil.which("asv")
# Only the smoke "models" study is generated, and only its mlp cases run: every method of both classes.
STUDIES = "models"
SELECTION = r"^bench_studies\.Models(Train|Infer)\..*\('mlp'\)$"


def asv_env(tmp: Path) -> dict[str, str]:
    """HOME inside ``tmp`` (the user's ~/.asv-machine.json is never touched), the smoke subset on CPU."""
    return dict(os.environ, HOME=str(tmp), SCIML_BENCH_ASV_SUITE="smoke", SCIML_BENCH_ASV_DEVICE="cpu",
                SCIML_BENCH_ASV_STUDIES=STUDIES, PYTHONPATH=str(ROOT))


def asv(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``asv ARGS --config tmp/asv.conf.json``, run in ``tmp``."""
    if ASV is None:
        pytest.skip("asv is not installed")
    return subprocess.run([ASV, *args, "--config", str(tmp / "asv.conf.json")], env=asv_env(tmp), cwd=tmp,
                          capture_output=True, text=True, timeout=timeout)


def asv_conf(tmp: Path) -> Path:
    """A copy of the repo's asv.conf.json with every output directory inside ``tmp``."""
    from asv import util

    conf = util.load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / conf["benchmark_dir"]), results_dir=str(tmp / "results"),
                html_dir=str(tmp / "html"), env_dir=str(tmp / "env"))
    path = tmp / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def commit(ref: str = "HEAD") -> str:
    return subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def run_asv_smoke(tmp: Path, selection: str = SELECTION) -> Path:
    """`asv machine` + `asv run --python=same --quick` (launch method from asv.conf.json) on the subset.

    Returns the results dir (``tmp/results``) holding one result file for HEAD.
    """
    asv_conf(tmp)
    proc = asv(tmp, "machine", "--yes", timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = asv(tmp, "run", "--python=same", "--quick", "--machine", machine(tmp), "--set-commit-hash", commit(),
               "--bench", selection, "--show-stderr")
    assert proc.returncode == 0, f"asv run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return tmp / "results"


def machine(tmp: Path) -> str:
    (name,) = [k for k in json.loads((tmp / ".asv-machine.json").read_text()) if k != "version"]
    return name


def result_file(results: Path) -> Path:
    (path,) = [p for p in results.glob("*/*.json") if p.name != "machine.json"]
    return path
