"""`scripts/bench --quick` runs end to end and prints its report: a smoke test, not a speed
test (no figure is asserted). Skipped until `scripts/bench` has created .venv-bench."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench


@pytest.mark.timeout(150)
def test_quick_bench_prints_its_tables(tmp_path: Path) -> None:
    if not (ROOT / ".venv-bench" / "bin" / "python").exists():
        pytest.skip("no .venv-bench: run scripts/bench once to install it")
    env = {**os.environ, "BENCH_SKIP_INSTALL": "1"}
    # Database 14, not the full run's 13: a smoke test must not flush a real run's data.
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--out", str(tmp_path),
         "--redis-url", "redis://127.0.0.1:6379/14"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=140,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| bystroq inline, 1 process |" in proc.stdout.replace("**", "")
    assert "| system | enqueue jobs/s | x bystroq | processing jobs/s |" in proc.stdout
    assert "### Targets for bystroq inline, 1 process" in proc.stdout
    (raw,) = tmp_path.glob("bench-*.json")
    figures = json.loads(raw.read_text())
    assert figures["workloads"]["a"]["systems"]["bystroq-inline-1"]["median"]["process_rate"] > 0
    assert (tmp_path / "processing-rates.png").stat().st_size > 0
