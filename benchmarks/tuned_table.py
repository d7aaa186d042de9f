"""The docs' "Tuned recipes" table of a setting: each tuned method's study (its record written by
``unlearn-pl-tune --record``) beside its rows on the report split (``results.json`` of
``unlearn-pl-compare``; a later file's rows replace an earlier one's), as Markdown.

    python benchmarks/tuned_table.py benchmarks/results/tuning/fer2013 \
        benchmarks/results/fer2013_tuned/results.json \
        --metrics acc_retain acc_forget acc_unseen forgetting_score nomus time_ratio_to_retrain
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LABELS = {"acc_retain": "D_r acc", "acc_forget": "D_f acc", "acc_unseen": "D_u acc",
          "acc_forget_test": "Df_test acc", "acc_retain_test": "Dr_test acc",
          "forgetting_score": "FS", "nomus": "NoMUS", "mia": "MIA",
          "distance_to_retrain": "distance to retrain", "outside_band": "outside retrain band",
          "fit_seconds": "time (s)", "time_ratio_to_retrain": "time / retrain"}


def _value(row: dict, key: str) -> str:
    value, std = row.get(key), row.get(f"{key}_std")
    if value is None:
        return "—"
    digits = 1 if key == "fit_seconds" else 3
    return f"{value:.{digits}f}" if std is None else f"{value:.{digits}f} ± {std:.{digits}f}"


def _params(params: dict) -> str:
    def short(value: object) -> str:
        return f"{value:.2g}" if isinstance(value, float) else str(value)
    return ", ".join(f"{key.rsplit('.', 1)[-1]} {short(value)}" for key, value in params.items())


def table(records: Path, results: list[Path], metrics: list[str]) -> str:
    """The Markdown table: references first, then the tuned methods in the first results' order;
    a method's row in a later results file replaces the earlier one."""
    studies = {path.stem: json.loads(path.read_text()) for path in sorted(records.glob("*.json"))}
    rows: dict[str, dict] = {}
    for path in results:
        rows.update((row["method"], row) for row in json.loads(path.read_text())["summary"])
    summary = list(rows.values())
    head = ["method", "tuned values", "probe objective", *(LABELS.get(m, m) for m in metrics),
            "trials done/pruned/failed", "tuning wall s"]
    lines = ["| " + " | ".join(head) + " |",
             "|---|---|" + "---:|" * (len(head) - 2)]
    for row in summary:
        study = studies.get(row["method"])
        if study is None and row["method"] not in ("original", "retrain"):
            continue
        states = [t["state"] for t in study["trials"]] if study else []
        cells = [row["method"],
                 _params(study["best"]["params"]) if study else "—",
                 f"{study['best']['value']:.3f}" if study else "—",
                 *(_value(row, m) for m in metrics),
                 "/".join(str(states.count(s)) for s in ("COMPLETE", "PRUNED", "FAIL"))
                 if study else "—",
                 f"{study['seconds'] - study['reference_seconds']:.0f}" if study else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="folder of the studies' JSON records")
    parser.add_argument("results", type=Path, nargs="+",
                        help="results.json of the report split (a later file's rows replace an "
                             "earlier one's)")
    parser.add_argument("--metrics", nargs="+", default=["acc_forget_test", "acc_retain_test",
                                                         "time_ratio_to_retrain"],
                        help="summary columns to show")
    args = parser.parse_args()
    print(table(args.records, args.results, args.metrics))


if __name__ == "__main__":
    main()
