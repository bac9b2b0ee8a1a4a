"""The shipped suites validate: every study expands to valid Cases with a valid reference."""
import pytest

from sciml_bench.cases import Case, builtin_suites, load_suite
from sciml_bench.errors import UsageError

OPTIMIZATION_STUDIES = ("precision", "checkpointing", "compile", "compile-recompile", "dataloader-train",
                        "channels-last", "cudnn-benchmark", "inference-modes")


@pytest.mark.parametrize("name", builtin_suites())
def test_suite_studies_expand_to_valid_cases(name):
    suite = load_suite(name)
    for study in suite.studies:
        cases = study.cases()
        assert cases, f"{name}/{study.name} has no cases"
        assert all(isinstance(c, Case) for c in cases)
        assert study.reference, f"{name}/{study.name} declares no reference"
        for c in cases:
            assert study.reference_of(c) is not None, f"{name}/{study.name}: no valid reference for {c.case_id}"


@pytest.mark.parametrize("name", ["smoke", "quick"])
def test_suite_covers_every_optimization_study(name):
    studies = {s.name for s in load_suite(name).studies}
    missing = [s for s in OPTIMIZATION_STUDIES if s not in studies]
    assert not missing, f"{name} lacks studies {missing}"
    assert any(s.startswith("dataloader") and s != "dataloader-train" for s in studies), "no loader-only study"


def test_smoke_keeps_studies_small():
    for study in load_suite("smoke").studies:
        assert len(study.cases()) <= 6, f"smoke/{study.name} has {len(study.cases())} cases"


def test_smoke_leaves_out_only_the_references_it_means_to():
    """A reference outside the axes warns on every run; smoke leaves out only these (one cheap case each),
    and its fit study keeps its reference, so CI sees a convergence ratio."""
    deliberate = {"precision", "checkpointing", "compile-recompile", "dataloader", "channels-last", "cudnn-benchmark",
                  "inference-modes"}
    warned = {study for study, _ in load_suite("smoke").warnings}
    assert warned <= deliberate, f"new smoke studies without their reference: {sorted(warned - deliberate)}"
    assert "fit" not in warned


def test_quick_exercises_every_dataset_and_compile_mode():
    cases = [c for s in load_suite("quick").studies for c in s.cases()]
    assert {c.dataset for c in cases} >= {"images", "memmap", "timeseries"}
    assert {c.compile for c in cases} == {"none", "default", "reduce-overhead", "max-autotune"}
    assert {c.precision for c in cases} == {"fp32", "fp64", "bf16", "fp16", "tf32"}
    assert {c.dynamic for c in cases} >= {True, False}


def test_full_has_the_gpu_matrix():
    cases = [c for s in load_suite("full").studies for c in s.cases()]
    assert max(c.num_workers for c in cases) >= 16
    assert {c.compile for c in cases} == {"none", "default", "reduce-overhead", "max-autotune"}
    assert {c.precision for c in cases} == {"fp32", "fp64", "bf16", "fp16", "tf32"}


def test_reference_outside_the_axes_is_refused(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[[study]]\nname = "x"\naxes = { precision = ["bf16"] }\nreference = { compile = "none" }\n')
    with pytest.raises(UsageError, match="not one of its axes"):
        load_suite(str(p))


def test_dynamic_needs_compile():
    with pytest.raises(UsageError, match="needs compile"):
        Case(dynamic=True)


def test_shipped_checkpoint_values_fit_their_models():
    """checkpoint=N segments must not exceed a model's sequential blocks, and models that
    checkpoint each block (U-Net, DenseNet, FNO) take only on/off (1): no silently ignored counts."""
    from torch import nn

    from sciml_bench.cases import builtin_suites, load_suite
    from sciml_bench.models import create_model

    for suite in builtin_suites():
        for study in load_suite(suite).studies:
            for case in study.cases():
                if not case.checkpoint:
                    continue
                blocks = getattr(create_model(case.model, **case.knobs), "blocks", None)
                limit = len(blocks) if isinstance(blocks, nn.Sequential) else 1
                assert case.checkpoint <= limit, f"{suite}/{study.name}: {case.case_id} exceeds {limit}"
