"""Every Python snippet in README.md runs, in order, against a small synthetic results/ directory."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from tests._runs import record, samples, write_run

ROOT = Path(__file__).resolve().parents[1]


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


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
    code = snippets()
    assert len(code) >= 3, "README lost its Python examples"
    _results(tmp_path / "results")
    script = tmp_path / "readme_snippets.py"
    script.write_text("\n\n".join(code))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, f"a README snippet failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "reports/api-example/index.html").is_file(), "report() did not write its index.html"
    assert "mlp,batch_size=8" in proc.stdout and "slower" not in proc.stderr
