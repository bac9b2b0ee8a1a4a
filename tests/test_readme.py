"""The docs' snippets stay true: every Python snippet of README.md and docs/*.md runs, in order, against a small
synthetic results/ directory; every ``sciml-bench`` command line they show parses; every relative link resolves."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from tests._runs import record, samples, write_run

ROOT = Path(__file__).resolve().parents[1]


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(lang: str) -> list[tuple[Path, str]]:
    """(page, code) of every fenced ``lang`` block, README first."""
    return [(page, code) for page in PAGES
            for code in re.findall(rf"```{lang}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)]


def snippets() -> list[str]:
    return [code for _, code in blocks("python")]


def _results(out: Path) -> None:
    """Two runs of the models study (mlp train / infer), as `sciml-bench run` writes them."""
    rng = np.random.default_rng(0)
    studies = {"models": {"question": "q", "axes": {"model": ["mlp"], "mode": ["train", "infer"]},
                          "reference": {"mode": "train"}, "metrics": ["time"]}}
    for day, scale in (("01", 1.0), ("02", 1.1)):
        recs = [record("models", {"model": "mlp", "mode": mode, "batch_size": 8}, samples(t * scale, rng))
                for mode, t in (("train", 0.01), ("infer", 0.003))]
        write_run(out / f"202601{day}-000000-smoke-aaaa.jsonl", recs, studies, run_id=f"202601{day}-000000-smoke-aaaa",
                  created=f"2026-01-{day}T00:00:00+0000")


def test_readme_python_snippets_run(tmp_path):
    code = list(dict.fromkeys(snippets()))  # a snippet two pages show (README and concepts) runs once
    assert len(code) >= 3, "README lost its Python examples"
    _results(tmp_path / "results")
    script = tmp_path / "readme_snippets.py"
    script.write_text("\n\n".join(code))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, f"a README snippet failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "reports/api-example/index.html").is_file(), "report() did not write its index.html"
    assert "mlp,batch_size=8" in proc.stdout and "slower" not in proc.stderr


def command_lines() -> list[tuple[Path, str]]:
    """Every ``sciml-bench ...`` line of the pages' shell blocks, comments and continuations joined."""
    out = []
    for page, code in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("sciml-bench ") or ".venv/bin/sciml-bench " in line:
                out.append((page, line[line.index("sciml-bench "):].split(" && ")[0]))
    return out


def test_every_documented_command_line_parses():
    """A flag renamed or removed fails here, not in a reader's terminal. Placeholders (BASE, RUN...) are kept:
    argparse takes any positional string, and bracketed optional parts are dropped."""
    import shlex

    from sciml_bench.parser import build_parser

    lines = command_lines()
    assert len(lines) >= 30, f"the docs lost their command lines: {len(lines)}"
    parser = build_parser()
    for page, line in lines:
        argv = shlex.split(re.sub(r"\[[^\]]*\]", "", line))[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"{page.name}: `{line}` does not parse (exit {e.code})") from None


def test_every_relative_link_in_the_docs_resolves():
    """Links between pages (and to their sections) point at files and headings that exist."""
    def anchors(page: Path) -> set[str]:
        heads = re.findall(r"^#+ (.*)$", page.read_text(encoding="utf-8"), flags=re.M)
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}

    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: link to {target} - no such file"
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), f"{page.name}: link to {target} - no such heading"
            checked += 1
    assert checked >= 20
