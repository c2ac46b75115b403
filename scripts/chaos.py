"""Run every chaos scenario against real servers and print a table (lost must be 0)."""

from __future__ import annotations

import sys

from bystroq.chaos import SCENARIOS


def main() -> int:
    names = sys.argv[1:] or list(SCENARIOS)
    rows = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.append(SCENARIOS[name]())
    print("| scenario | submitted | completed | lost | run more than once | buried | wall s "
          "| notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.scenario} | {r.submitted} | {r.completed} | {r.lost} | {r.ran_twice} | "
              f"{r.buried} | {r.wall_s} | {'; '.join(r.notes)} |")
    return 1 if any(r.lost for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
