"""Picture the report's first screen for the README: build the report of the committed quick run and
take a headless-Chromium screenshot of its top (1400 x 1000 px), as a reader's browser would show it.

From the repository root (needs Debian's ``chromium``)::

    python evidence/screenshot.py                      # writes docs/report-first-screen.png
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evidence.findings import QUICK  # noqa: E402
from sciml_bench.report import build_report  # noqa: E402

OUT = ROOT / "docs" / "report-first-screen.png"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, default=QUICK, help=f"run file (default: {QUICK.relative_to(ROOT)})")
    p.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default: {OUT.relative_to(ROOT)})")
    p.add_argument("--size", default="1400,1000", help="window WIDTH,HEIGHT in px (default: 1400,1000)")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("screenshot: headless Chromium not found (Debian package: chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        index = build_report([args.run], Path(tmp) / "report") / "index.html"
        shot = Path(tmp) / "shot.png"
        proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={args.size}",
                               f"--screenshot={shot}", index.as_uri()],
                              capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=tmp))
        if not shot.is_file():
            print(f"screenshot: Chromium wrote no picture: {proc.stderr[-1000:]}", file=sys.stderr)
            return 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
