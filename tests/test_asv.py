"""asv integration, driven through the real asv CLI: discovery (`asv check`), `asv run --quick`, the
direction `asv compare` reads, benchmark identity (versions), and asv's graphs vs sciml-bench history."""
from __future__ import annotations

import importlib
import json
import shutil
import sys

import pytest
from tests._asv import ROOT, asv, asv_conf, commit, machine, result_file

from sciml_bench.cases import load_suite

# units asv shows for generated track_* benchmarks; each is a lower-is-better quantity
LOWER_IS_BETTER_UNITS = {"seconds", "bytes", "loss", "instructions"}


@pytest.fixture(scope="module")
def bench_studies():
    sys.path.insert(0, str(ROOT))
    try:
        yield importlib.import_module("benchmarks.asv_benchmarks.bench_studies")
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
            tracks = {k: getattr(cls, k) for k in dir(cls) if k.startswith("track_")}
            assert "track_throughput" not in tracks and "track_flop_rate" not in tracks, \
                "higher-is-better quantities read as regressions in every asv view"
            for name, fn in tracks.items():
                assert fn.unit in LOWER_IS_BETTER_UNITS, f"{cls.__name__}.{name}: unit {fn.unit!r}"
    only = bench_studies.make_classes("smoke", device="cpu", studies="models, batch-*")
    assert set(only) == {"ModelsTrain", "ModelsInfer", "BatchSizeTrain"}, f"study filter gave {set(only)}"


def _versions(classes: dict[str, type]) -> dict[str, str]:
    return {f"{c}.{k}": getattr(cls, k).version for c, cls in classes.items() for k in dir(cls)
            if k.startswith(("time_", "track_", "peakmem_"))}


def test_identity_changes_exactly_when_the_measurement_does(bench_studies, tmp_path):
    make = bench_studies.make_classes
    smoke = _versions(make("smoke", device="cpu"))
    assert smoke == _versions(make("smoke", device="cpu")), "regenerating unchanged must keep every version"
    # a study's base setting: only that study's benchmarks change
    text = (ROOT / "sciml_bench/suites/smoke.toml").read_text()
    assert "base = { batch_size = 8 }" in text
    edited = tmp_path / "smoke.toml"
    edited.write_text(text.replace("base = { batch_size = 8 }", "base = { batch_size = 16 }", 1))
    changed = _versions(make(str(edited), device="cpu"))
    assert set(changed) == set(smoke), "same names for the same studies"
    moved = {k for k in smoke if smoke[k] != changed[k]}
    assert moved and all(k.startswith("Models") for k in moved), f"only the models study moved: {sorted(moved)}"
    assert all(smoke[k] == changed[k] for k in smoke if not k.startswith("Models"))
    # the device and the suite profile are part of what is measured
    cuda = _versions(make("smoke", device="cuda"))
    assert all(cuda[k] != smoke[k] for k in smoke), "cpu and cuda results must not share a history line"
    quick = _versions(make("quick", device="cpu"))
    common = set(quick) & set(smoke)
    assert common and all(quick[k] != smoke[k] for k in common), "smoke and quick must not share a history line"


def test_no_module_level_function_is_mistaken_for_a_benchmark(bench_studies):
    stray = [k for k, v in vars(bench_studies).items() if callable(v) and not isinstance(v, type)
             and k.startswith(("time_", "track_", "peakmem_", "mem_", "timeraw_"))]
    assert not stray, f"asv would collect these module-level functions as benchmarks: {stray}"


def test_asv_check_discovers_only_benchmarks(tmp_path):
    """`asv check --python=same` imports every module of benchmark_dir and validates what it collects."""
    asv_conf(tmp_path)
    proc = asv(tmp_path, "check", "--python=same")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"asv check failed:\n{out[-3000:]}"
    assert "bench_studies.ModelsTrain.time_train_step" in out or "Discovering benchmarks" in out


def test_asv_quick_run_writes_every_selected_benchmark(asv_smoke):
    results = asv_smoke / "results"
    benchmarks = json.loads((results / "benchmarks.json").read_text())
    result = json.loads(result_file(results).read_text())
    selected = [n for n in benchmarks if n.startswith("bench_studies.Models")]
    assert selected, "asv discovered no generated benchmark"
    for name in selected:
        assert name in result["results"], f"no result for {name}"
        values = result["results"][name][0]
        index = [p.strip("'") for p in benchmarks[name]["params"][0]].index("mlp")
        value = values[index]
        if name.endswith("track_compile_time"):
            assert value != value, "compile_time must be skipped (NaN) for compile='none'"
        elif name.endswith("track_instructions"):  # counted only with SCIML_BENCH_ASV_COUNT=instructions
            assert value != value, "track_instructions must be skipped (NaN) unless asked for"
        else:
            assert isinstance(value, (int, float)) and value > 0, f"{name}(mlp) has no positive result: {value}"


@pytest.fixture(scope="module")
def two_commits(asv_smoke, tmp_path_factory):
    """asv results for HEAD (the real run) and HEAD~1, where HEAD~1 is the real result with every
    value doubled (a commit twice as slow / as large), under HEAD~1's hash and date."""
    tmp = tmp_path_factory.mktemp("asv2")
    shutil.copytree(asv_smoke / "results", tmp / "results")
    shutil.copy(asv_smoke / ".asv-machine.json", tmp / ".asv-machine.json")
    asv_conf(tmp)
    src = result_file(tmp / "results")
    data = json.loads(src.read_text())
    old = commit("HEAD~1")
    for row in data["results"].values():
        row[0] = [v * 2 if isinstance(v, (int, float)) and v == v else v for v in row[0]]
        cols = data.get("result_columns", [])
        for key in ("stats_ci_99_a", "stats_ci_99_b", "stats_q_25", "stats_q_75"):
            if key in cols and cols.index(key) < len(row) and isinstance(row[cols.index(key)], list):
                row[cols.index(key)] = [v * 2 if isinstance(v, (int, float)) and v == v else v
                                        for v in row[cols.index(key)]]
    data["commit_hash"] = old
    data["date"] = data["date"] - 3_600_000
    (src.parent / src.name.replace(commit()[:8], old[:8])).write_text(json.dumps(data))
    return tmp


def test_asv_compare_reads_a_faster_commit_as_improved(two_commits):
    proc = asv(two_commits, "compare", commit("HEAD~1"), commit("HEAD"), "--machine", machine(two_commits),
               "--split", "--factor", "1.1")
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    worse = out.split("Benchmarks that have got worse")[1].split("Benchmarks that have")[0] \
        if "Benchmarks that have got worse" in out else ""
    better = out.split("Benchmarks that have improved")[1].split("Benchmarks that have")[0] \
        if "Benchmarks that have improved" in out else ""
    assert "bench_studies." not in worse, f"a halved time / memory is listed as worse:\n{out}"
    for method in ("time_train_step", "track_time_per_sample", "track_peak_memory", "peakmem_train_step"):
        assert f"ModelsTrain.{method}" in better, f"{method} halved but not listed as improved:\n{out}"


def test_asv_compare_reads_more_instructions_as_a_regression(two_commits, tmp_path):
    """track_instructions (SCIML_BENCH_ASV_COUNT=instructions) is lower-is-better: 2 % more at HEAD than at
    HEAD~1 is listed as worse at asv's --factor 1.01 (the regressions threshold asv.conf.json sets for it)."""
    shutil.copytree(two_commits, tmp_path / "asv", dirs_exist_ok=True)
    tmp = tmp_path / "asv"
    asv_conf(tmp)
    name = "bench_studies.ModelsTrain.track_instructions"
    benchmarks = json.loads((tmp / "results" / "benchmarks.json").read_text())
    index = [p.strip("'") for p in benchmarks[name]["params"][0]].index("mlp")
    for ref, value in (("HEAD~1", 1.0e6), ("HEAD", 1.02e6)):
        (path,) = [p for p in (tmp / "results").glob(f"*/{commit(ref)[:8]}*.json")]
        data = json.loads(path.read_text())
        data["results"][name][0][index] = value
        path.write_text(json.dumps(data))
    proc = asv(tmp, "compare", commit("HEAD~1"), commit("HEAD"), "--machine", machine(tmp), "--split",
               "--factor", "1.01")
    assert proc.returncode == 0, proc.stderr
    worse = proc.stdout.split("Benchmarks that have got worse")[1].split("Benchmarks that have")[0] \
        if "Benchmarks that have got worse" in proc.stdout else ""
    assert "ModelsTrain.track_instructions" in worse, proc.stdout


def test_history_shows_asvs_graph_series(two_commits, tmp_path):
    """`asv publish` writes the series asv's graphs draw; import-asv + history must show the same."""
    from sciml_bench.history import history
    from sciml_bench.imports import import_asv

    proc = asv(two_commits, "publish")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import_asv(two_commits / "results", tmp_path)
    hist = history([tmp_path], case_pattern="models/*", metric="time_per_sample", order="commit")
    ours = {s.case_id: [p["value"] for p in s.points] for s in hist.series}
    graphs = [p for p in (two_commits / "html" / "graphs").rglob("bench_studies.ModelsTrain.track_time_per_sample.json")
              if "summary" not in p.parts]  # one graph per machine x environment, plus asv's summary
    assert len(graphs) == 1, graphs
    benchmarks = json.loads((two_commits / "results" / "benchmarks.json").read_text())
    models = [p.strip("'") for p in benchmarks["bench_studies.ModelsTrain.track_time_per_sample"]["params"][0]]
    points = json.loads(graphs[0].read_text())  # [[revision, [value per model]], ...] oldest first
    series = [v[models.index("mlp")] for _, v in points]
    assert ours["mlp,batch_size=8"] == pytest.approx(series, rel=1e-12), (ours, series)
    assert series[0] == pytest.approx(2 * series[1]), "HEAD~1 is the doubled copy"
