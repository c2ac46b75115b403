"""The README's first command, end to end: scripts/demo prints the finished records."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_and_prints_records() -> None:
    done = subprocess.run([str(ROOT / "scripts" / "demo")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line.split() for line in done.stdout.splitlines()]
    rows = {cells[0]: cells[2] for cells in table if len(cells) > 2 and cells[1] == "annotation"}
    assert rows == {"sample-a": "completed", "sample-b": "completed",
                    "missing-file": "failed", "malformed": "failed"}
    assert "missing required field `outputBasePath`" in done.stdout
