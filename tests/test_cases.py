"""Case validation, case ids, --set parsing, suite loading and expansion."""
import pytest

from sciml_bench.cases import Case, Study, builtin_suites, load_suite, make_case, parse_assignment
from sciml_bench.errors import UsageError


def test_case_id_names_only_non_defaults():
    assert Case().case_id == "mlp"
    assert Case(model="resnet18", batch_size=8, precision="bf16").case_id == "resnet18,batch_size=8,precision=bf16"
    assert Case(model="mlp", batch_size=8) == Case(model="mlp", batch_size=8), "cases must be value-equal"
    assert len({Case(), Case()}) == 1, "cases must hash by value"


@pytest.mark.parametrize("values, needle", [
    ({"model": "resnet81"}, "resnet18"),  # close match suggested
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"batch_size": -3}, "positive"),
    ({"precision": "fp8"}, "fp32"),
    ({"mode": "training"}, "train"),
    ({"batch_size": "8"}, "batch_size must be int"),
    ({"channels_last": 1}, "channels_last must be bool"),
    ({"activation": "relu6"}, "relu"),
    ({"model": "resnet18", "attention": "sdpa"}, "does not accept knob(s) attention"),
    ({"batchsize": 8}, "batch_size"),
    ({"model": "mlp", "channels_last": True}, "accepts"),
])
def test_bad_values_name_field_and_allowed(values, needle):
    with pytest.raises(UsageError) as e:
        make_case(values)
    assert needle in str(e.value), f"error {e.value!r} should mention {needle!r}"
    assert "\n" not in str(e.value), "errors are one line"


def test_parse_assignment_types():
    assert parse_assignment("batch_size=64") == ("batch_size", 64)
    assert parse_assignment("channels_last=true") == ("channels_last", True)
    assert parse_assignment("lr=0.01") == ("lr", 0.01)
    assert parse_assignment("width=none") == ("width", None)
    assert parse_assignment("precision=bf16") == ("precision", "bf16")
    for bad in ("batch_size", "=3", "batch_size=eight", "nosuchfield=1", "channels_last=maybe"):
        with pytest.raises(UsageError):
            parse_assignment(bad)


def test_study_expansion_and_reference():
    st = Study("s", "q", {"mode": "train"}, {"model": ["mlp", "small_cnn"], "batch_size": [8, 16, 32]},
               {"batch_size": 8})
    cases = st.cases()
    assert len(cases) == 6, "product of the axes"
    assert st.reference_of(Case(model="small_cnn", batch_size=32)) == Case(model="small_cnn", batch_size=8)
    collapsed = st.cases({"batch_size": 16})
    assert [c.batch_size for c in collapsed] == [16, 16], "an override collapses its axis"


def test_shipped_suites_load_and_expand():
    assert {"smoke", "quick", "full"} <= set(builtin_suites())
    for name in builtin_suites():
        suite = load_suite(name)
        for study in suite.studies:
            assert study.cases(), f"study {study.name} of {name} has no cases"


def test_bad_toml_reports_line(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[suite]\nname = "x"\n\n[[study]]\nname = \n')
    with pytest.raises(UsageError, match="line 5"):
        load_suite(str(f))


def test_suite_with_bad_case_names_the_study(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[[study]]\nname = "oops"\naxes = { batch_size = [8, 0] }\n')
    with pytest.raises(UsageError, match="study 'oops'.*batch_size"):
        load_suite(str(f))


def test_unknown_suite_lists_builtins():
    with pytest.raises(UsageError, match="smoke"):
        load_suite("smok")


@pytest.mark.parametrize("toml, needle", [
    ('[[study]]\nname = "s"\naxes = 3\n', "axes of study #1"),
    ('[[study]]\nname = "s"\nbase = 5\n', "base of study #1"),
    ('[[study]]\nname = "s"\nreference = 5\n', "reference of study #1"),
    ('[suite]\nrounds = 0\n[[study]]\nname = "s"\n', "rounds"),
    ('[suite]\nround_time = -1\n[[study]]\nname = "s"\n', "round_time"),
    ('[suite]\nrounds = 2.5\n[[study]]\nname = "s"\n', "rounds"),
    ('suite = 3\n[[study]]\nname = "s"\n', "[suite]"),
])
def test_malformed_suite_values_are_usage_errors(tmp_path, toml, needle):
    f = tmp_path / "s.toml"
    f.write_text(toml)
    with pytest.raises(UsageError) as e:
        load_suite(str(f))
    assert needle in str(e.value), str(e.value)
