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


STORED_RUN = Path(__file__).parent / "data" / "smoke_run.jsonl"  # a real smoke run recorded on a 2-core CPU


def test_report_from_stored_real_run(tmp_path):
    out = tmp_path / "real"
    assert main(["report", str(STORED_RUN), "--out", str(out)]) == 0
    html = _check_report(out)
    assert "Study: models" in html and "Environment" in html


def test_run_writes_report_by_default(tmp_path):
    proc = run_cli("run", "--suite", "smoke", "--study", "batch-size", "--rounds", "2", "--round-time", "0.01",
                   "--device", "cpu", "--out", str(tmp_path / "results"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"report: (\S+index\.html)", proc.stdout.replace("\n", ""))
    assert m, f"run must print the report path: {proc.stdout}"
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
