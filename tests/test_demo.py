"""The README's first command, end to end: scripts/demo prints the finished records."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_and_prints_records() -> None:
    done = subprocess.run([str(ROOT / "scripts" / "demo")], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    sections = {part.split("\n", 1)[0].strip(" \x1b[0m"): part.split("\n", 1)[-1]
                for part in done.stdout.split("==> ")[1:]}
    table = [line.split() for line in sections["bystroq list"].splitlines()]
    rows = {cells[0]: cells[2] for cells in table if len(cells) > 2 and cells[1] == "annotation"}
    assert rows == {"sample-a": "completed", "sample-b": "completed",
                    "missing-file": "failed", "malformed": "failed"}
    assert "missing required field `outputBasePath`" in done.stdout
    api = sections["GET /v1/submissions?state=failed (the HTTP API)"].split()
    assert {"malformed", "missing-file"} <= set(api)
    workers = [line.split() for line in sections["bystroq workers"].splitlines()]
    assert any(cells[1:3] == ["annotation", "running"] for cells in workers if len(cells) > 2)
