"""history: step detection, the anchor-normalised series and the anchor's own series, --fail-on-change (fabricated runs)."""
import json

import numpy as np

from sciml_bench.cli import main
from sciml_bench.history import history
from tests._runs import record, study_run, write_run

STUDIES = {"hist": {"question": "Did it change?", "axes": {"batch_size": [8, 32]}, "reference": {"batch_size": 8},
                    "metrics": ["time"]}}
CASES = {8: 0.010, 32: 0.025}  # batch size -> step time (s)
ANCHOR = 0.002  # the anchor's time per round (s)


def _anchored_run(path, i, rng, machine=1.0, case_scale=None, anchors=True):
    """Run ``i``: per round a shared drift moves the anchor and both cases alike; ``machine`` scales all of
    them (common mode), ``case_scale`` {batch size: factor} only the case (a real change)."""
    rounds, recs = 8, []
    drift = np.exp(rng.normal(0, 0.03, rounds)) * machine
    anchor = [float(ANCHOR * d * np.exp(rng.normal(0, 0.005))) for d in drift]
    for bs, t in CASES.items():
        f = (case_scale or {}).get(bs, 1.0)
        raw = [list(t * f * d * np.exp(rng.normal(0, 0.005, 5))) for d in drift]
        rec = record("hist", {"model": "mlp", "mode": "train", "batch_size": bs}, raw)
        if anchors:
            rec["metrics"]["step_time"]["anchor"] = anchor
        recs.append(rec)
    env = {"git": {"commit": f"{i:040x}", "dirty": False}}
    return write_run(path / f"run{i:02d}.jsonl", recs, STUDIES, run_id=f"run{i:02d}",
                     created=f"2026-02-{i + 1:02d}T00:00:00+0000", env=env)


def _anchored_dir(tmp_path, name, n=6, machine_from=None, slow_from=None, slow=None, anchors=True, seed=7):
    """``n`` runs; from run index ``machine_from`` on the whole machine is 1.3x slower (case and anchor),
    from ``slow_from`` on the cases in ``slow`` ({batch size: factor}) change on their own."""
    d = tmp_path / name
    d.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        machine = 1.3 if machine_from is not None and i >= machine_from else 1.0
        scale = slow if slow_from is not None and i >= slow_from else None
        _anchored_run(d, i, rng, machine, scale, anchors=anchors if isinstance(anchors, bool) else i in anchors)
    return d


def test_common_mode_drift_cancels_in_anchored_series_but_steps_raw(tmp_path):
    anchored = history([_anchored_dir(tmp_path, "anchored", machine_from=3)])
    raw = history([_anchored_dir(tmp_path, "raw", machine_from=3, anchors=False)])  # same data, no anchor
    assert len(anchored.series) == len(raw.series) == 2
    for s in anchored.series:
        assert s.normalised and s.unit == ""
        assert s.steps == [], f"{s.case_id}: machine 1.3x slower in case and anchor alike is no step: {s.steps}"
        t = CASES[8 if s.case_id == "mlp,batch_size=8" else 32]  # 32 is mlp's default batch size
        assert all(abs(p["value"] - t / ANCHOR) / (t / ANCHOR) < 0.03 for p in s.points), s.points
        assert all(p["ci_low"] <= p["value"] <= p["ci_high"] for p in s.points)
        ratio_raw = s.points[-1]["raw"] / s.points[0]["raw"]
        assert 1.2 < ratio_raw < 1.4, "the raw seconds stay on each point"
    assert anchored.regressions == [] and anchored.newest_regressions == []
    for s in raw.series:
        assert not s.normalised and s.unit == "s"
        assert [st["index"] for st in s.steps] == [3], s.steps
        assert 1.25 < s.steps[0]["ratio"] < 1.35, s.steps
    assert len(raw.regressions) == 2
    # the anchor's own series: the machine speed line shows the 1.3x
    assert [a["value"] is not None for a in anchored.anchor] == [True] * 6
    first, last, ratio = anchored.anchor_change
    assert first["run_id"] == "run00" and last["run_id"] == "run05" and 1.25 < ratio < 1.35
    assert all(a["value"] is None and a["n"] == 0 for a in raw.anchor) and raw.anchor_change is None


def test_one_run_without_anchor_keeps_the_series_raw(tmp_path, capsys):
    d = _anchored_dir(tmp_path, "mixed", anchors=[0, 1, 2, 4, 5])
    h = history([d])
    assert all(not s.normalised for s in h.series)
    assert [a["value"] is None for a in h.anchor] == [False, False, False, True, False, False]
    assert all(s.points[3]["anchor"] is None and s.points[0]["anchor"] for s in h.series)
    assert main(["history", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "1/6 runs lack the anchor" in out and "0 series anchor-normalised" in out, out


def test_fail_on_change_fails_only_on_a_slower_newest_run(tmp_path, capsys):
    # bs 8 is 1.3x slower in the newest run on its own (anchor unchanged); bs 32 got 1.3x faster there
    d = _anchored_dir(tmp_path, "newest", slow_from=5, slow={8: 1.3, 32: 1 / 1.3})
    h = history([d])
    assert [(r["case_id"], r["index"]) for r in h.newest_regressions] == [("mlp,batch_size=8", 5)], h.regressions
    assert all(s.normalised for s in h.series)
    assert main(["history", "--dir", str(d)]) == 0, "without the flag history only reports"
    capsys.readouterr()
    assert main(["history", "--dir", str(d), "--fail-on-change"]) == 1
    out = capsys.readouterr().out
    slower = [ln for ln in out.splitlines() if "slower in the newest run" in ln]
    assert len(slower) == 1 and "mlp,batch_size=8" in slower[0] and "1.3" in slower[0], out
    assert main(["history", "--dir", str(d), "--fail-on-change", "--json"]) == 1
    js = json.loads(capsys.readouterr().out)
    assert [r["case_id"] for r in js["newest_regressions"]] == ["mlp,batch_size=8"]


def test_an_older_step_does_not_fail_the_newest_run(tmp_path, capsys):
    d = _anchored_dir(tmp_path, "older", slow_from=3, slow={8: 1.3})
    h = history([d])
    assert [(r["case_id"], r["index"]) for r in h.regressions] == [("mlp,batch_size=8", 3)], h.regressions
    assert h.newest_regressions == []
    assert main(["history", "--dir", str(d), "--fail-on-change"]) == 0
    assert "0 series start a slower level" in capsys.readouterr().out


def test_newest_run_without_the_case_is_not_its_step(tmp_path):
    """A step at a case's last point is not the newest run's when the newest run lacks the case."""
    d = _anchored_dir(tmp_path, "gone", n=5, slow_from=4, slow={8: 1.3})
    rng = np.random.default_rng(1)
    path = _anchored_run(d, 5, rng)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(ln for ln in lines if '"mlp,batch_size=8"' not in ln) + "\n")
    h = history([d])
    assert len(h.runs) == 6 and {len(s.points) for s in h.series} == {5, 6}
    assert [r["index"] for r in h.regressions] == [4] and h.newest_regressions == []


def test_anchor_series_reported_in_cli_json_and_figure(tmp_path, capsys):
    d = _anchored_dir(tmp_path, "report", machine_from=3)
    out = tmp_path / "hout"
    assert main(["history", "--dir", str(d), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("anchor (machine speed)"))
    assert "run00" in line and "run05" in line and "6 of 6 runs" in line, line
    ratio = float(line.split("),")[-1].split("x")[0])
    assert 1.25 < ratio < 1.35, line
    assert "anchored" in text and "2 series anchor-normalised" in text, text
    assert (out / "figures" / "history-anchor.png").is_file()
    js = json.loads((out / "history.json").read_text())
    assert len(js["anchor"]) == 6 and all(a["value"] > 0 for a in js["anchor"])
    assert all(s["normalised"] and s["unit"] == "" and all("raw" in p for p in s["points"]) for s in js["series"])
    assert main(["history", "--dir", str(d), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["anchor"] == js["anchor"]


def test_no_anchor_figure_with_fewer_than_two_anchored_runs(tmp_path):
    from sciml_bench.history import history_figures

    h = history([_anchored_dir(tmp_path, "one", n=4, anchors=[3])])
    names = history_figures(h, tmp_path / "figs")
    assert "history-anchor.png" not in names and len(names) == 2
    assert h.anchor_change is None


# ---------------------------------------------------------------- raw histories (moved from test_compare)

def _history_dir(tmp_path, n=12, step_at=7, factor=1.25):
    d = tmp_path / "hist"
    d.mkdir()
    for i in range(n):
        scale = factor if i >= step_at else 1.0
        env = {"git": {"commit": f"{i:040x}", "dirty": False}, "torch": "2.15.0" if i >= step_at else "2.14.1"}
        study_run(d / f"run{i:02d}.jsonl", seed=100 + i, scale=scale, run_id=f"run{i:02d}",
                  created=f"2026-01-{i + 1:02d}T00:00:00+0000", env=env)
    # a run from another machine must stay out of this history
    study_run(d / "other.jsonl", seed=999, scale=3.0, run_id="other", created="2025-12-01T00:00:00+0000",
              env={"cpu_model": "Other CPU"})
    return d


def test_history_finds_planted_step(tmp_path):
    d = _history_dir(tmp_path)
    h = history([d])
    assert len(h.runs) == 12 and sum(h.other_machines.values()) == 1
    regs = h.regressions
    assert {(r["study"], r["case_id"]) for r in regs} == {(s.study, s.case_id) for s in h.series}, \
        f"every case got 25% slower at run 7; found {regs}"
    for r in regs:
        assert r["index"] == 7 and r["run_id"] == "run07" and r["torch"] == "2.15.0", r
        assert r["commit"] == f"{7:040x}" and r["previous_torch"] == "2.14.1"
        assert 1.15 < r["ratio"] < 1.35


def test_history_flat_series_has_no_regressions(tmp_path):
    d = _history_dir(tmp_path, factor=1.0)
    assert history([d]).regressions == []


def test_history_cli_with_figures(tmp_path, capsys):
    d = _history_dir(tmp_path, n=8, step_at=5)
    out = tmp_path / "hout"
    assert main(["history", "--dir", str(d), "--case", "batch/mlp", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "run05" in text and "1 regressions" in text, text
    assert (out / "history.json").is_file() and list((out / "figures").glob("*.png"))




def _set_anchor_version(path, version):
    """Give run file ``path`` the header a real run writes (``measure.anchor.header()``) with ``version``."""
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    head["anchor"] = {"description": f"test anchor v{version}", "version": version, "block_time": 0.05}
    path.write_text("\n".join([json.dumps(head)] + lines[1:]) + "\n")


def test_anchor_versions_must_agree_to_normalise(tmp_path, capsys):
    # from run 3 on the anchor is a new workload (v2): 1.3x slower by itself, the cases unchanged
    d = tmp_path / "versions"
    d.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        path = _anchored_run(d, i, rng)
        _set_anchor_version(path, 1 if i < 3 else 2)
        if i >= 3:
            lines = [json.loads(ln) for ln in path.read_text().splitlines()]
            for rec in lines[1:]:
                st = rec["metrics"]["step_time"]
                st["anchor"] = [a * 1.3 for a in st["anchor"]]
            path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    h = history([d])
    assert h.series and all(not s.normalised and s.unit == "s" for s in h.series), \
        "values in anchor times of two different anchors do not compare"
    assert all(s.raw_reason == "anchor versions differ: v1 in 3/6 runs, v2 in 3/6 runs" for s in h.series)
    assert all(s.steps == [] for s in h.series), \
        "raw, the unchanged cases show no step (the v2 anchor's 1.3x is not theirs)"
    assert [p["anchor_version"] for p in h.series[0].points] == [1, 1, 1, 2, 2, 2]
    assert [a["version"] for a in h.anchor] == [1, 1, 1, 2, 2, 2]
    first, last, ratio = h.anchor_change
    assert (first["run_id"], last["run_id"]) == ("run03", "run05") and abs(ratio - 1) < 0.1, \
        "the anchor's own change compares runs of the newest version only"
    assert main(["history", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert "anchor versions differ" in out and "0 series anchor-normalised" in out, out
    assert main(["history", "--dir", str(d), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert {s["raw_reason"] for s in js["series"]} == {"anchor versions differ: v1 in 3/6 runs, v2 in 3/6 runs"}
    # the same version everywhere normalises again; a header without the anchor block differs from v1
    for path in sorted(d.glob("*.jsonl")):
        _set_anchor_version(path, 1)
    same = history([d]).series
    assert all(s.normalised and s.raw_reason == "" for s in same)
    assert all([st["index"] for st in s.steps] == [3] and abs(s.steps[0]["ratio"] * 1.3 - 1) < 0.05 for s in same), \
        "what mixing versions would have shown: a step that is the anchor's, not the cases'"
    lines = sorted(d.glob("*.jsonl"))[0].read_text().splitlines()
    head = json.loads(lines[0])
    del head["anchor"]
    sorted(d.glob("*.jsonl"))[0].write_text("\n".join([json.dumps(head)] + lines[1:]) + "\n")
    assert all(not s.normalised and "unrecorded in 1/6 runs, v1 in 5/6 runs" in s.raw_reason
               for s in history([d]).series)
