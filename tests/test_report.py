"""Reports: files and figures exist, names are escaped, bad input leaves nothing, a browser loads the page."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sciml_bench.cli import main
from sciml_bench.report import build_report
from sciml_bench.report.claims import check_claims
from tests._runs import study_run
from tests.conftest import run_cli


def _referenced(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', html)


def _check_report(out: Path) -> str:
    html = (out / "index.html").read_text()
    assert (out / "report.md").is_file(), "report.md missing"
    figs = list((out / "figures").glob("*.png"))
    assert figs, "no figures written"
    refs = _referenced(html)
    assert refs, "the HTML references no figures"
    for ref in refs:
        assert not re.match(r"^[a-z]+://", ref), f"network reference {ref} in a self-contained report"
        assert (out / ref).is_file() and (out / ref).stat().st_size > 1000, f"referenced figure {ref} missing"
    for ref in re.findall(r"\]\((figures/[^)]+)\)", (out / "report.md").read_text()):
        assert (out / ref).is_file(), f"report.md references missing {ref}"
    assert "<script" not in html.lower(), "the report must not need scripts"
    return html


def test_report_from_synthetic_runs(tmp_path):
    a = study_run(tmp_path / "a.jsonl")
    b = study_run(tmp_path / "b.jsonl", seed=5, run_id="run-b", env={"torch": "9.9"})
    out = build_report([a, b], tmp_path / "reports" / "ab")
    html = _check_report(out)
    assert "Claims checked" in html and "not measured" in html, "unmeasured claims must say 'not measured'"
    assert "warn" in html and "torch: 2.14.1 vs 9.9" in html, "different software must be warned about"
    assert "oom" in html and "worker killed by SIGKILL" in html, "failed cases must be listed with reasons"
    assert "Machine peak" in html and "50 GFLOP" not in html and "50" in html
    assert re.search(r"batch_size=128: \d+\.\d+x slower \[", html), "verdict line missing"
    assert "of measured peak" in html and "%" in html


def test_study_name_is_escaped(tmp_path):
    run = study_run(tmp_path / "x.jsonl", study="<script>alert(1)</script>")
    out = build_report([run], tmp_path / "r")
    html = (out / "index.html").read_text()
    assert "<script>alert(1)</script>" not in html, "a study name must never become markup"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, "the study name must appear as text"
    _check_report(out)


def test_bad_input_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "something else"}\n')
    good = study_run(tmp_path / "good.jsonl")
    out = tmp_path / "rep"
    assert main(["report", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sciml-bench: error:") and "\n" not in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".rep")], \
        "a failed report must leave nothing behind"


def test_claims_not_measured_without_data(tmp_path):
    claims = check_claims([])
    assert claims and all(c.verdict == "not measured" for c in claims)


def test_summary_shows_measured_claims_and_the_full_table_every_claim(tmp_path):
    run = study_run(tmp_path / "a.jsonl")  # varies batch size and mode only: 2 claims measured
    out = build_report([run], tmp_path / "r")
    claims = check_claims([])
    html = (out / "index.html").read_text()
    summary = html[html.index('id="summary"'):html.index('id="study-0"')]
    table = summary[summary.index("<table>"):summary.index("</table>")]
    assert "Larger batches raise throughput" in table and "A training step costs about 3x" in table
    assert table.count("<tr>") == 1 + 2 and "not measured" not in table, "the summary table lists measured claims only"
    line = next(p for p in re.findall(r"<p class='muted'>([^<]*)</p>", summary) if "not measured" in p)
    assert line.startswith(f"{len(claims) - 2} of {len(claims)} claims not measured in these runs (")
    assert "GRU is faster than LSTM" in line and "How claims are checked" in line, line
    full = html[html.index('id="claim-tests"'):]
    full = full[full.index("<table>"):full.index("</table>")]
    assert full.count("<tr>") == 1 + len(claims), "the full claims table lists every claim"
    assert full.count(">not measured</td>") == len(claims) - 2 and full.count(">holds</td>") == 2
    md = (out / "report.md").read_text()
    md_summary = md[md.index("## On this machine"):md.index("## Study:")]
    assert "| GRU is faster than LSTM |" not in md_summary and "| GRU is faster than LSTM | not measured |" in md


STORED_RUN = Path(__file__).parent / "data" / "smoke_run.jsonl"  # a real smoke run recorded on a 2-core CPU
QUICK_RUN = Path(__file__).parents[1] / "results" / "reference" / "cpu-2core-quick-quiet.jsonl.gz"  # the quick suite


def test_report_from_stored_real_run(tmp_path):
    out = tmp_path / "real"
    assert main(["report", str(STORED_RUN), "--out", str(out)]) == 0
    html = _check_report(out)
    assert "Study: models" in html and "Environment" in html


def test_run_writes_report_by_default(tmp_path):
    proc = run_cli("run", "--suite", "smoke", "--study", "batch-size", "--rounds", "2", "--round-time", "0.01",
                   "--device", "cpu", "--out", str(tmp_path / "results"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    from sciml_bench.cases import load_suite

    warned = {study for study, _ in load_suite("smoke").warnings}
    assert warned and "batch-size" not in warned and "is not among its axis values" not in proc.stderr, \
        "--study X warns of X's reference only, not of the other studies' " + proc.stderr
    m = re.search(r"report: (\S+index\.html)", proc.stdout.replace("\n", ""))
    assert m, f"run must print the report path: {proc.stdout}"
    lines = proc.stdout.splitlines()
    assert re.match(r"\d+ cases: \d+ ok, \d+ skipped.*, 0 failed", lines[0]), f"counts first: {lines[:2]}"
    assert lines[1].split() == ["study", "resolves", "answer"], f"a header names the columns: {lines[:3]}"
    # a ratio within 0.5 % of 1 with no CI (2 rounds, 1 pass) reads "same time (1.00x)" (report.words)
    assert any(ln.startswith("batch-size ") and any(w in ln for w in ("slower", "faster", "no clear", "same time"))
               for ln in lines[1:3]), f"one verdict line per study: {lines[:3]}"
    summary = lines[:lines.index(next(ln for ln in lines if ln.startswith("results:")))]
    assert all(len(ln) <= 80 for ln in summary), f"the summary must fit 80 columns: {summary}"
    assert not any("┃" in ln or "│" in ln for ln in lines), "the full table belongs to `show`, not to `run`"
    index = Path(m.group(1))
    assert index.is_file() and index.parent.parent == tmp_path / "reports"
    _check_report(index.parent)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package: chromium)")
def test_browser_loads_report_without_console_errors(tmp_path):
    run = study_run(tmp_path / "a.jsonl", study="<script>alert(1)</script>")
    out = build_report([run], tmp_path / "r")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--window-size=1200,2400", f"--screenshot={shot}",
         (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, HOME=str(tmp_path)))
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot: {proc.stderr[-2000:]}"
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln
               or "Failed to load resource" in ln or "ERR_FILE_NOT_FOUND" in ln]
    assert not console, f"console errors: {console}"


def test_claim_evidence_with_a_straddling_ci_is_inconclusive():
    from sciml_bench.report.claims import _within

    assert _within(1.01, 0.90, 1.12, (1.0, float("inf"))) is None, "CI straddles the boundary: inconclusive"
    assert _within(1.20, 1.10, 1.30, (1.0, float("inf"))) is True
    assert _within(0.80, 0.70, 0.90, (1.0, float("inf"))) is False
    assert _within(0.5, None, None, (0.0, 0.6)) is True, "deterministic values (memory) decide by themselves"


def _dom_positions(chromium: str, index: Path, tmp_path: Path) -> dict[str, int]:
    """Lay the page out in headless Chromium (1400 px wide) and read back element positions and page height."""
    probe = index.with_name(".probe.html")
    script = ("<script>const b=document.body, pos=e=>e?Math.round(e.getBoundingClientRect().top):-1;"
              "b.setAttribute('data-height',document.documentElement.scrollHeight);"
              "b.setAttribute('data-first',document.querySelector('section').id);"
              "b.setAttribute('data-summary',pos(document.getElementById('summary')));"
              "b.setAttribute('data-claims',pos(document.querySelector('#summary table')));"
              "b.setAttribute('data-study',pos(document.getElementById('study-0')));"
              "const f=document.querySelector('#summary img');"
              "b.setAttribute('data-forest',f&&f.getAttribute('src').endsWith('forest.png')?pos(f):-1);</script></body>")
    probe.write_text(index.read_text().replace("</body>", script))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
    attrs = dict(re.findall(r'data-(height|first|summary|claims|study|forest)="([^"]*)"', proc.stdout))
    assert len(attrs) == 6, f"Chromium did not lay the page out: {proc.stderr[-1000:]}"
    return {k: (v if k == "first" else int(v)) for k, v in attrs.items()}


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package: chromium)")
def test_browser_shows_summary_with_claims_first(tmp_path):
    out = build_report([study_run(tmp_path / "a.jsonl")], tmp_path / "r")
    pos = _dom_positions(CHROMIUM, out / "index.html", tmp_path)
    assert pos["first"] == "summary", f"the first section must be the summary, got {pos['first']!r}"
    assert 0 <= pos["summary"] < pos["claims"] < pos["study"], \
        f"the claims table must sit inside the summary, above the first study: {pos}"
    assert pos["summary"] < pos["forest"] < pos["claims"], f"the forest plot opens the summary, first of its images: {pos}"
    html = (out / "index.html").read_text()
    summary = html[html.index('id="summary"'):html.index('id="study-0"')]
    assert "On this machine" in summary and "Larger batches raise throughput" in summary, \
        "claims table not in the summary"
    assert "<td class=\"muted\">not measured</td>" not in summary, "unmeasured claims belong to the full claims table"
    assert "5 cases: 4 ok, 0 skipped, 1 failed" in summary, "the summary must count cases, skips apart from failures"


def test_memory_axis_is_logarithmic_when_values_span_decades():
    from sciml_bench.report.figures import bars_figure

    def rows(mems):
        return [{"label": f"case {i}", "peak_mem": m, "peak_mem_kind": "CPU tensors", "ratio": 1.0 + i / 10,
                 "ratio_lo": 1.0, "ratio_hi": 1.3} for i, m in enumerate(mems)]

    fig = bars_figure("kib-vs-mib", rows([12 * 2 ** 10, 40 * 2 ** 10, 300 * 2 ** 20]))  # KiB beside MiB
    time_ax, mem_ax = fig.axes
    assert mem_ax.get_xscale() == "log", "memory spanning 4 decades needs a log axis, else KiB bars vanish"
    assert time_ax.get_xscale() == "log", "time ratios are drawn on a log axis (2x faster and 2x slower alike)"
    fig = bars_figure("close", rows([10 * 2 ** 20, 12 * 2 ** 20, 15 * 2 ** 20]))
    assert fig.axes[1].get_xscale() == "linear", "values within one decade keep a linear axis"
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert labels and not any(re.match(r"0\.\d+x faster", t) for t in labels), labels


def test_no_fraction_of_peak_above_100_percent_is_printed_unflagged(tmp_path):
    # the synthetic cases reach 100 GFLOP/s against a stored 50 GFLOP/s peak: 200% and more
    out = build_report([study_run(tmp_path / "a.jsonl")], tmp_path / "r")
    for text in ((out / "index.html").read_text(), (out / "report.md").read_text()):
        cells = re.split(r"[<|\n]", text)  # table cells, list items, lines
        over = [c for c in cells if any(float(v) > 100 for v in re.findall(r"(\d+(?:\.\d+)?)%", c))]
        assert over, "the synthetic run must produce fractions above 100%"
        assert all("⚠" in c for c in over), f"unflagged fractions above 100%: {[c for c in over if '⚠' not in c]}"
    assert "above the measured GEMM peak" in (out / "index.html").read_text(), "the summary must say so"


def test_ratio_words_never_say_below_one_faster():
    from sciml_bench.report.words import ratio_words

    assert ratio_words(0.625, 0.6, 0.65) == "1.60x faster [1.54-1.67]"
    assert ratio_words(1.36, 1.2, 1.5) == "1.36x slower [1.20-1.50]"
    assert ratio_words(0.5, kind="memory") == "2.00x less memory"
    assert ratio_words(1.05, 0.95, 1.15).startswith("no clear difference")
    for r in (0.1, 0.59, 0.99, 1.01, 3.0):
        assert not re.search(r"\b0\.\d+x", ratio_words(r, r * 0.9, r * 1.1)), ratio_words(r, r * 0.9, r * 1.1)


def test_claim_verdicts_count_hold_do_not_and_inconclusive():
    from sciml_bench.report.claims import Evidence, _verdict

    ev = [Evidence("a", 1.0, holds=True), Evidence("b", 1.0, holds=False), Evidence("c", 1.0, holds=False),
          Evidence("d", 1.0, holds=None)]
    assert _verdict(ev) == "1 hold / 2 do not / 1 inconclusive"
    assert Evidence("w", 0.0, unit=" workers").text() == "w: 0 workers", "worker counts are whole numbers"


def test_combined_report_labels_every_bullet_and_forest_row_with_its_run(tmp_path, monkeypatch):
    from sciml_bench.report import build_report, collect, figures

    a = study_run(tmp_path / "a.jsonl")
    b = study_run(tmp_path / "b.jsonl", seed=5, run_id="run-b")
    rep, _ = collect([a, b])
    lines = [v for s in rep.sections for v in s.verdicts] + [e.text() for c in rep.claims for e in c.evidence]
    assert lines and all(v.startswith(("[run-a]", "[run-b]")) for v in lines), lines
    assert "[run-a]" in rep.sections[0].answer and "[run-b]" in rep.sections[0].answer
    # the forest plot as the report draws it, with run ids as long as real ones: each row names its run whole
    ids = ["20261206-094057-quick-ab12", "20261206-101500-quick-cd34"]
    runs = [study_run(tmp_path / f"{i}.jsonl", seed=k, run_id=i) for k, i in enumerate(ids)]
    ticks, draw = [], figures.forest_figure

    def spy(sections, tag=None):
        fig = draw(sections, tag)
        ticks.extend(t.get_text() for t in fig.axes[0].get_yticklabels())
        return fig

    monkeypatch.setattr(figures, "forest_figure", spy)
    build_report(runs, tmp_path / "report")
    rows = sorted(t for t in ticks if t.startswith("["))
    assert rows == sorted(f"[{i}] batch_size={b}" for i in ids for b in (32, 128)), ticks


def test_forest_plot_shows_every_variant_with_its_ci_and_each_studys_band(tmp_path):
    import matplotlib.pyplot as plt

    from sciml_bench.report import collect
    from sciml_bench.report.figures import forest, forest_figure

    rep, _ = collect([QUICK_RUN])
    assert forest(rep.sections, tmp_path) == "forest.png" and (tmp_path / "forest.png").stat().st_size > 10_000
    variants = [r for s in rep.sections for r in s.rows if r.get("ratio") is not None and not r.get("is_reference")]
    assert len(variants) > 40, "the stored quick run has ratios"
    fig = forest_figure(rep.sections)
    ax = fig.axes[0]
    drawn = [(float(c.lines[0].get_xdata()[0]), c.lines[2][0].get_segments()[0]) for c in ax.containers]
    assert sorted(x for x, _ in drawn) == pytest.approx(sorted(r["ratio"] for r in variants)), "one point per variant"
    cis = sorted((r.get("ratio_lo") or r["ratio"], r.get("ratio_hi") or r["ratio"]) for r in variants)
    bars = sorted((seg[0][0], seg[1][0]) for _, seg in drawn)
    assert [x for b in bars for x in b] == pytest.approx([x for c in cis for x in c]), "each bar is the case's CI"
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert [s.name for s in rep.sections if any(r in variants for r in s.rows)] == \
        [t for t in labels if t in {s.name for s in rep.sections}], "grouped by study, in the report's order"
    from matplotlib.collections import PolyCollection

    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == sum(s.resolves is not None for s in rep.sections), "one resolvable band per study"
    assert len(fig.axes) == 2 and fig.axes[1].lines, "memory ratios beside, where measured"
    plt.close(fig)


def test_resolvable_effect_is_where_a_symmetric_interval_stops_including_one():
    from sciml_bench.report.words import at_least, resolvable, resolvable_words, significant

    assert resolvable([(1.0 / 1.08, 1.08)]) == pytest.approx(0.08)
    assert resolvable([(1.2 / 1.1, 1.2 * 1.1), (0.5 / 1.3, 0.5 * 1.3), (1 / 1.05, 1.05)]) == pytest.approx(0.10)
    assert resolvable([(None, None)]) is None and resolvable_words(None) == "" and at_least(None) == "-"
    assert resolvable_words(0.083) == "resolves ≥ 8 %" and at_least(0.001) == "≥ 1 %"
    # on a real run: a ratio is significant exactly when it lies beyond its own interval's resolvable effect
    # (the rerun interval is symmetric on the log axis), so "resolves >= X %" means what it says
    from sciml_bench.report import collect

    one_pass, _ = collect([STORED_RUN])  # smoke: one pass, within-run CIs that do not predict a rerun
    assert any(r.get("ratio_lo") for s in one_pass.sections for r in s.rows)
    assert all(s.resolves is None for s in one_pass.sections), "only rerun intervals say what a run resolves"
    rep, _ = collect([QUICK_RUN])
    assert sum(s.resolves is not None for s in rep.sections) >= 20
    rows = [r for s in rep.sections for r in s.rows if r.get("ratio_lo") and not r.get("is_reference")]
    assert len(rows) > 40
    for r in rows:
        f = resolvable([(r["ratio_lo"], r["ratio_hi"])])
        beyond = max(r["ratio"], 1 / r["ratio"]) > 1 + f
        assert beyond == significant(r["ratio_lo"], r["ratio_hi"]), r["case_id"]
