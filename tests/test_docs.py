"""The docs' numbers are generated from committed evidence: a page that drifted from its files fails."""
from __future__ import annotations

import math

from evidence import statistics_page


def test_statistics_page_is_regenerated_from_the_committed_coverage_files():
    assert statistics_page.PAGE.read_text(encoding="utf-8") == statistics_page.render(), \
        "docs/statistics.md is stale: run python evidence/statistics_page.py"


def test_statistics_page_quotes_each_protocols_overall_figures():
    """Every comparison's overall row shows its files' coverage and width (read back from the page)."""
    page = statistics_page.PAGE.read_text(encoding="utf-8")
    for title, _, protocols in statistics_page.COMPARISONS:
        part = page[page.index(f"### {title}"):]
        row = next(ln for ln in part.splitlines() if ln.startswith("| **all** |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        n = len(protocols)
        for k, (_, name, recomputed) in enumerate(protocols):
            res = statistics_page.load(name, recomputed)
            cover = res["coverage"][statistics_page.STUDY_KEY]["all"]
            assert cells[k] == f"{cover['rate']:.0%} ({cover['n']})", (title, name)
            width = math.sqrt(res["median_width"][statistics_page.STUDY_KEY]["all"])
            assert cells[n + k] == f"×/÷{width:.3f}", (title, name)


def test_rescoring_reproduces_the_intervals_the_runner_recorded():
    """``rerun_coverage --recompute`` (the page's "rescored" columns) makes each ratio again from the raw
    samples; on run files recorded by this code it must give back exactly what the runner wrote, so a
    rescored column differs from a recorded one only by the change it is meant to show. A change to
    the interval fails this: rescore the committed directories and regenerate the page."""
    import pytest

    from evidence import rerun_coverage

    from sciml_bench.results import run_files

    run = run_files(statistics_page.COVERAGE / "untuned10-after")[0]
    _, recorded = rerun_coverage.ratios(run)
    _, again = rerun_coverage.ratios(run, recompute=True)
    assert recorded.keys() == again.keys() and len(recorded) >= 20
    for key, tr in recorded.items():
        assert [again[key][k] for k in ("value", "ci_low", "ci_high")] == \
            pytest.approx([tr[k] for k in ("value", "ci_low", "ci_high")], rel=1e-9), key


def test_every_findings_table_is_regenerated_from_the_committed_files():
    """README.md and docs/*.md hold exactly what ``python evidence/findings.py`` writes from results/."""
    from evidence import findings

    names = {m["name"] for page in findings.PAGES for m in findings.BLOCK.finditer(page.read_text(encoding="utf-8"))}
    assert names == set(findings.BLOCKS), f"blocks written but not shown, or shown but unknown: {names ^ set(findings.BLOCKS)}"
    assert not findings.stale(), f"stale pages {findings.stale()}: run python evidence/findings.py"


def test_changing_one_committed_number_fails_the_docs_check(tmp_path, monkeypatch):
    """Scale one case's time ratio in a copy of the committed quick run: the page built from the real file no longer
    matches what the script writes, so the check above would fail."""
    import gzip
    import json

    from evidence import findings

    lines = gzip.open(findings.QUICK, "rt", encoding="utf-8").read().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        tr = rec.get("metrics", {}).get("time_ratio")
        if rec.get("study") == "activations" and tr and tr.get("reference") != rec["case_id"]:
            for k in ("value", "ci_low", "ci_high"):
                tr[k] *= 1.25
            lines[i] = json.dumps(rec)
            break
    else:
        raise AssertionError("no activations variant in the committed quick run")
    changed = tmp_path / "quick.jsonl.gz"
    with gzip.open(changed, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    page = (findings.ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert findings.render(page) == page
    monkeypatch.setattr(findings, "QUICK", changed)
    assert findings.render(page) != page, "a changed committed number went unnoticed"
