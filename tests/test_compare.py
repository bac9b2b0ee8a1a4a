"""compare (ratio, CI, Mann-Whitney, verdict, exit code) on seeded run files."""
import json

import numpy as np
import pytest

from sciml_bench.cli import main
from sciml_bench.compare import compare_runs, to_markdown
from sciml_bench.errors import UsageError
from tests._runs import study_run


def test_identical_copy_passes(tmp_path):
    a = study_run(tmp_path / "a.jsonl", seed=0)
    cmp = compare_runs(a, a)
    assert cmp.exit_code == 0, f"an identical copy must pass, got failures {cmp.failures}"
    assert all(r.verdict == "unchanged" for r in cmp.rows), [r.verdict for r in cmp.rows]


def test_aa_rerun_passes_and_20_percent_slowdown_fails(tmp_path):
    base = study_run(tmp_path / "base.jsonl", seed=0)
    same = study_run(tmp_path / "same.jsonl", seed=1, run_id="run-b")
    slow = study_run(tmp_path / "slow.jsonl", seed=2, scale=1.2, run_id="run-c")
    assert compare_runs(base, same).exit_code == 0, "A/A re-run with fresh noise must pass"
    cmp = compare_runs(base, slow)
    time_rows = [r for r in cmp.rows if r.family == "time"]
    assert cmp.exit_code == 1, "a 20% slowdown must fail"
    assert all(r.verdict == "slower" for r in time_rows), [(r.case_id, r.verdict, r.p_value) for r in time_rows]
    assert all(1.1 < r.ratio < 1.3 and r.p_value < 0.01 for r in time_rows)
    assert all(r.ci_low <= 1.2 <= r.ci_high for r in time_rows), "the ratio CI should cover the injected 1.2"


def test_faster_is_not_a_failure_and_memory_gate(tmp_path):
    base = study_run(tmp_path / "base.jsonl", seed=0)
    fast = study_run(tmp_path / "fast.jsonl", seed=3, scale=0.7, run_id="run-f")
    cmp = compare_runs(base, fast)
    assert cmp.exit_code == 0 and {r.verdict for r in cmp.rows if r.family == "time"} == {"faster"}
    assert compare_runs(base, fast, fail_on=("memory",)).exit_code == 0


def test_cli_exit_codes_json_markdown_and_warnings(tmp_path, capsys):
    base = study_run(tmp_path / "base.jsonl", seed=0)
    slow = study_run(tmp_path / "slow.jsonl", seed=2, scale=1.2, run_id="run-c", env={"torch": "2.15.0"},
                     failed=False)
    assert main(["compare", str(base), str(base)]) == 0
    capsys.readouterr()
    assert main(["compare", str(base), str(slow), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["exit_code"] == 1 and out["env_differences"]["torch"] == ["2.14.1", "2.15.0"]
    assert out["only_base"] == ["batch/resnet18,batch_size=8"], "a case in one run only must be listed"
    assert main(["compare", str(base), str(slow), "--markdown", "--threshold", "30"]) == 0, \
        "a 20% slowdown is within a 30% threshold"
    md = capsys.readouterr().out
    assert "| study |" in md and "environments differ" in md
    assert main(["compare", str(base), str(slow)]) == 1
    assert "torch" in capsys.readouterr().err, "environment differences must be warned about"


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    a = study_run(tmp_path / "a.jsonl")
    for argv in (["compare", str(a), str(bad)], ["compare", str(a), str(a), "--alpha", "3"],
                 ["compare", str(a), str(a), "--fail-on", "speed"], ["history", "--dir", str(tmp_path / "none")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("sciml-bench: error:") and "\n" not in err, err
    with pytest.raises(UsageError):
        compare_runs(a, a, threshold=-1)


def test_markdown_escapes_names(tmp_path):
    a = study_run(tmp_path / "a.jsonl", study="<b>|x")
    md = to_markdown(compare_runs(a, a))
    assert "<b>" not in md and "&lt;b&gt;\\|x" in md


def test_case_that_breaks_in_new_fails_the_gate(tmp_path):
    """ok in base, timeout in new: no timing to compare, but a CI gate must not pass it."""
    import json as _json

    base = study_run(tmp_path / "base.jsonl", seed=0)
    lines = base.read_text().splitlines()
    recs = [_json.loads(ln) for ln in lines]
    victim = next(r for r in recs[1:] if r["status"] == "ok")
    victim.update(status="timeout", reason="no answer within 5 s", metrics={})
    broken = tmp_path / "new.jsonl"
    broken.write_text("\n".join(_json.dumps(r) for r in recs) + "\n")
    cmp = compare_runs(base, broken)
    assert cmp.exit_code == 1 and any(victim["case_id"] in b for b in cmp.broke), cmp.broke


def test_runs_with_no_case_in_common_are_a_usage_error(tmp_path, capsys):
    a = study_run(tmp_path / "a.jsonl", study="one")
    b = study_run(tmp_path / "b.jsonl", study="two", run_id="run-b")
    with pytest.raises(UsageError, match="no case in common"):
        compare_runs(a, b)
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no case in common" in err and "\n" not in err, err


def test_skipped_in_both_runs_is_not_a_change(tmp_path):
    import json as _json

    base = study_run(tmp_path / "base.jsonl", seed=0)
    recs = [_json.loads(ln) for ln in base.read_text().splitlines()]
    victim = next(r for r in recs[1:] if r["status"] == "ok")
    victim.update(status="skipped", reason="fp16 autocast with GradScaler needs CUDA", metrics={})
    both = tmp_path / "both.jsonl"
    both.write_text("\n".join(_json.dumps(r) for r in recs) + "\n")
    cmp = compare_runs(both, both)
    assert not any(victim["case_id"] in x for x in cmp.not_ok), f"skipped -> skipped listed as a change: {cmp.not_ok}"


def test_anchor_cancels_common_mode_drift_across_runs(tmp_path):
    """A whole machine 1.3x slower (case and anchor scaled together): unchanged when compared on anchored
    rounds, slower on raw seconds (the same samples with the anchor removed); a real 1.3x slowdown of the
    case alone is slower either way; different anchor versions fall back to raw seconds."""
    from tests.test_history import _anchored_run

    def pair(name, machine=1.0, case_scale=None, anchors=True, versions=(1, 1)):
        d = tmp_path / name
        d.mkdir()
        rng = np.random.default_rng(3)
        paths = [_anchored_run(d, 0, rng, anchors=anchors), _anchored_run(d, 1, rng, machine, case_scale, anchors)]
        for p, v in zip(paths, versions):  # the anchor version each run recorded in its header
            lines = p.read_text().splitlines()
            head = json.loads(lines[0])
            head["anchor"] = {"version": v}
            p.write_text("\n".join([json.dumps(head)] + lines[1:]) + "\n")
        return compare_runs(*paths)

    def verdicts(cmp):
        return sorted(r.verdict for r in cmp.rows if r.metric == "step_time")

    drift = pair("drift", machine=1.3)
    assert verdicts(drift) == ["unchanged", "unchanged"] and "anchor-normalised" in drift.method
    assert drift.anchored == 2 and drift.unanchored == 0
    raw = pair("raw", machine=1.3, anchors=False)
    assert verdicts(raw) == ["slower", "slower"] and "raw seconds" in raw.method
    real = pair("real", case_scale={8: 1.3, 32: 1.3})
    assert verdicts(real) == ["slower", "slower"]
    mixed = pair("versions", machine=1.3, versions=(1, 2))
    assert verdicts(mixed) == ["slower", "slower"] and "anchor versions differ" in mixed.method
