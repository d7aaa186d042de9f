"""Whether two comparison runs give the same numbers: every row's numbers but the times, its
verdict and its per-sample signals, as ``unlearn-pl-compare`` writes them in ``results.json``.

Usage: python benchmarks/same_results.py BEFORE/results.json AFTER/results.json
Prints the differences and a summary; exits 1 when there is any.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TIMES = {"fit_seconds", "wall_seconds", "validation_seconds", "time_ratio_to_retrain"}


def differences(before: dict, after: dict) -> tuple[list[str], int]:
    def rows(result: dict) -> dict:
        return {(r["method"], r["seed"], r["method_seed"]): r for r in result["rows"]}

    old, new = rows(before), rows(after)
    found = [f"rows only in one run: {sorted(set(old) ^ set(new))}"] if set(old) != set(new) else []
    compared = 0
    for key in sorted(set(old) & set(new)):
        for name, value in old[key].items():
            if name in TIMES or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            compared += 1
            if new[key].get(name) != value:
                found.append(f"{key} {name}: {value} -> {new[key].get(name)}")
        for name in ("verdict", "signals"):
            if old[key].get(name) != new[key].get(name):
                found.append(f"{key} {name} differs")
    return found, compared


def main(argv: list[str]) -> int:
    before, after = (json.loads(Path(p).read_text()) for p in argv[:2])
    found, compared = differences(before, after)
    print("\n".join(found))
    print(f"{compared} numbers compared (times left out), verdicts and per-sample signals of "
          f"{len(before['rows'])} rows: {len(found)} differences")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
