"""Run every chaos scenario against real servers and print a table.

Exits non-zero when any scenario lost a job, let a non-holder report one, or left a
record that disagrees with its events.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos import SCENARIOS


def main() -> int:
    names = sys.argv[1:] or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario {', '.join(unknown)}; expected one of {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    rows = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.append(SCENARIOS[name]())
    print("| scenario | submitted | completed | lost | run more than once | reported by two "
          "holders | wrong records | buried | wall s | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.scenario} | {r.submitted} | {r.completed} | {r.lost} | {r.ran_twice} | "
              f"{r.two_holders} | {r.wrong_records} | {r.buried} | {r.wall_s} | "
              f"{'; '.join(r.notes)} |")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
