"""asv integration: the generated classes follow the studies, and `asv run --python=same --quick` writes results."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sciml_bench.cases import load_suite

ROOT = Path(__file__).resolve().parents[1]
ASV = shutil.which("asv", path=str(Path(sys.executable).parent)) or shutil.which("asv")
# The mlp cases of the smoke profile: every benchmark method of both generated "models" classes.
SELECTION = r"^bench_studies\.Models(Train|Infer)\..*\('mlp'\)$"


@pytest.fixture(scope="module")
def bench_studies():
    sys.path.insert(0, str(ROOT))
    try:
        yield importlib.import_module("benchmarks.bench_studies")
    finally:
        sys.path.remove(str(ROOT))


def test_classes_follow_the_studies(bench_studies):
    suite = load_suite("smoke")
    classes = bench_studies.make_classes("smoke", device="cpu")
    for study in suite.studies:
        for mode in {c.mode for c in study.cases()}:
            cls = classes[bench_studies._class_name(study.name, mode)]
            axes = {k: v for k, v in study.axes.items() if k != "mode"}
            assert cls.param_names == list(axes), f"{cls.__name__}: param_names differ from the study axes"
            assert cls.params == list(axes.values()), f"{cls.__name__}: params differ from the study axes"
            assert hasattr(cls, f"time_{mode}_step") and hasattr(cls, f"peakmem_{mode}_step")
            assert hasattr(cls, "track_loss_after_budget") == (mode == "train")
            assert cls.track_throughput.unit == "samples/s" and cls.track_peak_memory.unit == "bytes"


def test_unsupported_case_raises_not_implemented(bench_studies):
    classes = bench_studies.make_classes("smoke", device="cuda")  # no GPU in tests
    bench = classes["ModelsTrain"]()
    if bench_studies.torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(NotImplementedError, match="CUDA"):
        bench.setup("mlp")


def test_no_module_level_function_is_mistaken_for_a_benchmark(bench_studies):
    stray = [k for k, v in vars(bench_studies).items() if callable(v) and not isinstance(v, type)
             and k.startswith(("time_", "track_", "peakmem_", "mem_", "timeraw_"))]
    assert not stray, f"asv would collect these module-level functions as benchmarks: {stray}"


def asv_conf(tmp: Path) -> Path:
    """A copy of the repo's asv.conf.json with every output directory inside ``tmp``."""
    from asv import util

    conf = util.load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), results_dir=str(tmp / "results"),
                html_dir=str(tmp / "html"), env_dir=str(tmp / "env"))
    path = tmp / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def run_asv_smoke(tmp: Path, selection: str = SELECTION) -> Path:
    """`asv machine` + `asv run --python=same --quick` on the smoke profile; returns the results dir.

    HOME points into ``tmp``, so the user's ~/.asv-machine.json is never read or written.
    """
    if ASV is None:
        pytest.skip("asv is not installed")
    conf = asv_conf(tmp)
    env = dict(os.environ, HOME=str(tmp), SCIML_BENCH_ASV_SUITE="smoke", SCIML_BENCH_ASV_DEVICE="cpu")
    # asv's defaults (hostname, CPU, cores, OS, RAM) written to the temporary HOME's machine file.
    subprocess.run([ASV, "machine", "--yes", "--config", str(conf)], env=env, cwd=tmp, check=True,
                   capture_output=True, timeout=60)
    (machine,) = [k for k in json.loads((tmp / ".asv-machine.json").read_text()) if k != "version"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    proc = subprocess.run([ASV, "run", "--python=same", "--quick", "--config", str(conf), "--machine", machine,
                           "--launch-method", "forkserver", "--set-commit-hash", commit, "--bench", selection,
                           "--show-stderr"], env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"asv run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return tmp / "results"


@pytest.fixture(scope="module")
def asv_results(tmp_path_factory):
    return run_asv_smoke(tmp_path_factory.mktemp("asv"))


def test_asv_quick_run_writes_every_selected_benchmark(asv_results):
    benchmarks = json.loads((asv_results / "benchmarks.json").read_text())
    (result_file,) = [p for p in asv_results.glob("*/*.json") if p.name != "machine.json"]
    result = json.loads(result_file.read_text())
    selected = [n for n in benchmarks if n.startswith("bench_studies.Models")]
    assert selected, "asv discovered no generated benchmark"
    for name in selected:
        assert name in result["results"], f"no result for {name}"
        values = result["results"][name][0]
        index = [p.strip("'") for p in benchmarks[name]["params"][0]].index("mlp")
        value = values[index]
        if name.endswith("track_compile_time"):
            assert value != value, "compile_time must be skipped (NaN) for compile='none'"
        else:
            assert isinstance(value, (int, float)) and value > 0, f"{name}(mlp) has no positive result: {value}"
