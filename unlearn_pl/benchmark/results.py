"""The comparison's results: rows, their summary over seeds, the privacy audit of each method,
the Markdown table, the plots and the files (``results.{md,csv,json}``)."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearn_pl.benchmark.settings import REFERENCES, Setting
from unlearn_pl.evaluation import VERDICT_RULE, audit_method
from unlearn_pl.utils import atomic_save_figure, atomic_write_text

# Every number of a row, in table order; the class-wise ones only exist for class-wise requests.
METRICS = ("acc_retain", "acc_forget", "acc_unseen", "acc_retain_test", "acc_forget_test", "mia",
           "forgetting_score", "nomus", "fit_seconds", "time_ratio_to_retrain")
EXTRA_NUMBERS = ("mia_auc", "wall_seconds", "validation_seconds", "loss_retain", "loss_forget",
                 "loss_unseen", "loss_retain_test", "loss_forget_test")
# The privacy audit's numbers of a row (with --references K): unlearn_pl.evaluation.audit.
AUDIT_NUMBERS = ("distance_to_retrain", "outside_band", "floor_outside_band", "mean_abs_z",
                 "lira_auc", "floor_lira_auc", "lira_tpr_1pct", "floor_lira_tpr_1pct",
                 "rmia_auc", "floor_rmia_auc", "rmia_tpr_1pct", "floor_rmia_tpr_1pct",
                 "loss_auc", "loss_tpr_1pct",
                 "epsilon_forget_quality", "retrain_epsilon_forget_quality",
                 "epsilon_final_score")


# --------------------------------------------------------------------------- summary
def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (n − 1) over the runs of each method (its seeds, and
    method seeds where there are several), per method, in the order methods first appear.
    ``std`` is ``None`` for a single run; numbers missing from a setting (``acc_retain_test`` in
    sample-wise settings) are left out."""
    order: list[str] = []
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["method"] not in groups:
            order.append(row["method"])
            groups[row["method"]] = []
        groups[row["method"]].append(row)
    summary = []
    for method in order:
        group = groups[method]
        entry: dict[str, Any] = {"method": method, "seeds": [r["seed"] for r in group],
                                 "method_seeds": [_method_seed(r) for r in group]}
        errors = [f"{_run_name(r)}: {r['error']}" for r in group if r.get("error")]
        if errors:
            entry["errors"] = errors
        # One verdict per split seed: it is over that seed's method seeds together.
        split_seeds = {r["seed"] for r in group}
        verdicts = sorted({f"{r['verdict']} (seed {r['seed']})" if len(split_seeds) > 1
                           else r["verdict"] for r in group if r.get("verdict")})
        if verdicts:
            entry["verdicts"] = verdicts
        for key in (*METRICS, *EXTRA_NUMBERS, *AUDIT_NUMBERS):
            values = [float(r[key]) for r in group
                      if r.get(key) is not None and not math.isnan(float(r[key]))]
            if not values:
                continue
            entry[key] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        summary.append(entry)
    return summary


def _method_seed(row: Mapping[str, Any]) -> int:
    return int(row.get("method_seed", row["seed"]))


def _run_name(row: Mapping[str, Any]) -> str:
    """``seed 0``, or ``seed 0 method seed 2`` for a run with its own method seed."""
    own = _method_seed(row)
    return f"seed {row['seed']}" + (f" method seed {own}" if own != row["seed"] else "")


_COLUMNS = (("acc_retain", "D_r acc"), ("acc_forget", "D_f acc"), ("acc_unseen", "D_u acc"),
            ("acc_retain_test", "Dr_test acc"), ("acc_forget_test", "Df_test acc"),
            ("mia", "MIA"), ("forgetting_score", "FS"), ("nomus", "NoMUS"),
            ("fit_seconds", "time (s)"), ("time_ratio_to_retrain", "time / retrain"))
# The audit's columns lead the table when there is a bank: the distance to retrain first.
_AUDIT_COLUMNS = (("distance_to_retrain", "distance to retrain"),
                  ("outside_band", "outside retrain band"), ("mean_abs_z", "mean abs z"),
                  ("lira_auc", "LiRA AUC"), ("lira_tpr_1pct", "LiRA TPR@1%FPR"),
                  ("rmia_auc", "RMIA AUC"), ("rmia_tpr_1pct", "RMIA TPR@1%FPR"),
                  ("epsilon_forget_quality", "ε-score F"))


def _by_distance(summary: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Retrain first, then every other method by its distance to retrain (the audit's), those
    without one (failed runs) last; the given order when nothing was audited."""
    if not any("distance_to_retrain" in entry for entry in summary):
        return list(summary)
    return sorted(summary, key=lambda e: (e["method"] != "retrain",
                                          e.get("distance_to_retrain", math.inf)))


def markdown_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """The comparison as a Markdown table: one row per method, ``mean ± std`` when there is more
    than one run. With a privacy audit the distance to retrain and the per-example tests come
    first and methods are ordered by that distance (retrain's own row is the held-out retrain
    network's: the floor); otherwise original and retrain first, as :func:`compare` orders
    them."""
    columns = [(k, t) for k, t in (*_AUDIT_COLUMNS, *_COLUMNS)
               if any(k in entry for entry in summary)]
    lines = ["| method | " + " | ".join(t for _, t in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for entry in _by_distance(summary):
        cells = []
        for key, _ in columns:
            if key not in entry:
                cells.append("failed" if entry.get("errors") else "–")
                continue
            digits = 1 if key == "fit_seconds" else 2 if key == "time_ratio_to_retrain" else 3
            cell = f"{entry[key]:.{digits}f}"
            if entry.get(f"{key}_std") is not None:
                cell += f" ± {entry[f'{key}_std']:.{digits}f}"
            cells.append(cell)
        lines.append(f"| {entry['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots
# Method colours; green and grey are kept for retrain and the original.
_PALETTE = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink",
            "tab:olive", "tab:cyan", "navy", "gold", "teal", "magenta", "black", "salmon")


def _plot(rows: Sequence[Mapping[str, Any]], summary: Sequence[Mapping[str, Any]],
          output: Path, setting: str) -> list[Path]:
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state, no display needed

    by_method = {entry["method"]: entry for entry in summary}
    names = list(by_method)
    colours = ["tab:gray" if n == "original" else "tab:green" if n == "retrain" else "tab:blue"
               for n in names]
    paths = []

    def bars(key: str, title: str, ylabel: str, filename: str, log: bool = False) -> None:
        figure = Figure(figsize=(max(5.0, 0.7 * len(names) + 2), 3.8), layout="constrained")
        ax = figure.subplots()
        means = [by_method[n].get(key, math.nan) for n in names]
        errors = [by_method[n].get(f"{key}_std") or 0.0 for n in names]
        ax.bar(names, means, yerr=errors if any(errors) else None, color=colours, capsize=3)
        if "retrain" in by_method and key in by_method["retrain"]:
            ax.axhline(by_method["retrain"][key], color="tab:green", linestyle="--", linewidth=1,
                       label="retrain")
            ax.legend()
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{title} ({setting})")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelrotation=45)
        paths.append(output / filename)
        atomic_save_figure(figure, paths[-1], dpi=100)

    bars("nomus", "NoMUS per method", "NoMUS", "nomus.png")
    bars("time_ratio_to_retrain", "Unlearning time relative to retrain", "fit time / retrain's",
         "time_ratio.png", log=True)

    accuracy = "acc_retain_test" if any("acc_retain_test" in e for e in summary) else "acc_unseen"
    figure = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = figure.subplots()
    for index, name in enumerate(names):
        entry = by_method[name]
        if accuracy not in entry or "forgetting_score" not in entry:
            continue
        marker, colour, size = (("*", "tab:green", 16) if name == "retrain" else
                                ("s", "tab:gray", 8) if name == "original" else
                                ("o", _PALETTE[index % len(_PALETTE)], 7))
        ax.errorbar(entry[accuracy], entry["forgetting_score"],
                    xerr=entry.get(f"{accuracy}_std"), yerr=entry.get("forgetting_score_std"),
                    fmt=marker, color=colour, markersize=size, capsize=2, label=name)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if "retrain" in by_method and accuracy in by_method["retrain"]:
        ax.axvline(by_method["retrain"][accuracy], color="tab:green", linestyle=":", linewidth=1)
        ax.axhline(by_method["retrain"]["forgetting_score"], color="tab:green", linestyle=":",
                   linewidth=1)
    ax.set_xlabel(f"test accuracy ({accuracy})")
    ax.set_ylabel("forgetting score 2·|MIA − 0.5|")
    ax.set_title(f"Forgetting vs accuracy ({setting}); ★ = retrain, the target", fontsize=10)
    paths.append(output / "forgetting_vs_accuracy.png")
    atomic_save_figure(figure, paths[-1], dpi=100)

    losses: dict[str, dict[str, list[float]]] = {}
    nonmember = "unseen"
    for row in rows:
        pooled = losses.setdefault(row["method"], {"forget": [], "nonmember": []})
        for key in pooled:
            pooled[key].extend(row.get("losses", {}).get(key, []))
        nonmember = row.get("nonmember_split", nonmember)
    every = sorted(v for pooled in losses.values() for part in pooled.values() for v in part)
    if every:
        top = max(every[min(len(every) - 1, int(0.99 * len(every)))], 1e-3)
        columns = min(4, len(losses))
        rows_ = math.ceil(len(losses) / columns)
        figure = Figure(figsize=(3.2 * columns, 2.6 * rows_), layout="constrained")
        axes = figure.subplots(rows_, columns, squeeze=False)
        for ax, (name, pooled) in zip(axes.flat, losses.items(), strict=False):
            bins = [top * i / 40 for i in range(41)]
            for key, label, colour in (("forget", "forget (members)", "tab:red"),
                                       ("nonmember", f"{nonmember} (non-members)", "tab:blue")):
                values = [min(v, top) for v in pooled[key]]
                if values:
                    ax.hist(values, bins=bins, density=True, alpha=0.5, color=colour, label=label)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("per-sample loss", fontsize=8)
        for ax in list(axes.flat)[len(losses):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        figure.suptitle(f"Forget vs {nonmember} loss ({setting}; the MIA's feature)")
        paths.append(output / "loss_histograms.png")
        atomic_save_figure(figure, paths[-1], dpi=100)
    return paths


# --------------------------------------------------------------------------- files
def _spread(rows: list[dict[str, Any]]) -> str:
    """What the table's rows are over: the seeds (split, original and retrain) and, where the
    method runs have their own, the method seeds (those of the method rows alone: the
    references always run with their split's seed)."""
    seeds = sorted({row["seed"] for row in rows})
    own = sorted({_method_seed(row) for row in rows
                  if row["method"] not in REFERENCES}) or seeds
    if own == seeds:
        if len(seeds) == 1:
            return f"seed {seeds[0]}"
        return "mean ± sample standard deviation over seeds " + ", ".join(map(str, seeds))
    if len(seeds) == 1 and len(own) == 1:
        return (f"seed {seeds[0]} (split, original and retrain), method seed {own[0]} (the "
                "unlearning run's batch order and own randomness)")
    return ("mean ± sample standard deviation over the runs of each method: seeds "
            + ", ".join(map(str, seeds)) + " (split, original and retrain) × method seeds "
            + ", ".join(map(str, own)) + " (the unlearning run's batch order and own "
            "randomness, against the same references)")


def _row(setting: str, method: str, seed: int, record: Mapping[str, Any],
         method_seed: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"setting": setting, "method": method, "seed": seed,
                           "method_seed": seed if method_seed is None else method_seed,
                           "reused": bool(record.get("reused", False))}
    for key in (*METRICS, *EXTRA_NUMBERS, *AUDIT_NUMBERS):
        if key in record:
            row[key] = float(record[key])
    for key in ("class_path", "log_dir", "checkpoint", "nonmember_split", "losses", "signals",
                "most_exposed", "verdict", "error"):
        if record.get(key) is not None:
            row[key] = record[key]
    return row


def _write_results(rows: list[dict[str, Any]], output: Path, setting: str, spec: Setting,
                   environment: Mapping[str, Any]) -> dict[str, Path]:
    output.mkdir(parents=True, exist_ok=True)
    tuned = sorted({r["method"] for r in rows if r.get("recipe", "paper") != "paper"})
    summary = summarize(rows)
    numbers = [{k: v for k, v in row.items() if k not in ("losses", "signals")} for row in rows]
    present = [k for k in (*METRICS, *EXTRA_NUMBERS, *AUDIT_NUMBERS)
               if any(k in row for row in numbers)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["setting", "method", "seed", "method_seed", "recipe", "reused",
                                     *present,
                                     "verdict", "class_path", "log_dir", "checkpoint", "error"],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(numbers)
    files = {"csv": atomic_write_text(output / "results.csv", buffer.getvalue())}
    files["json"] = atomic_write_text(output / "results.json", json.dumps(
        {"setting": setting, "environment": dict(environment), "rows": numbers,
         "summary": summary}, indent=1))
    text = (f"# Comparison: {setting}\n\n{markdown_table(summary)}\n"
            f"{_spread(rows)}. Accuracies in [0, 1]; FS = forgetting score 2·|MIA − 0.5| "
            "(paper scale, 0 = the attacker cannot tell forget from non-member samples); NoMUS = "
            "0.5·(test accuracy + 1 − FS), test accuracy = Dr_test for class-wise requests, "
            "D_u otherwise; time = the fit's wall-clock seconds (module `fit_seconds`), "
            "time / retrain = its ratio to retrain's fit.\n"
            + "".join(f"\n**{e['method']} failed** ({error[:300]})\n" for e in summary
                      for error in e.get("errors", []))
            + _audit_text(summary)
            + (f"\nSetting: {spec.note}.\n" if spec.note else "")
            + (f"\nRecipes: tuned by `unlearn-pl-tune` (configs/tuned/{setting}/) for "
               + ", ".join(tuned) + "; the shipped (paper) configs for the others.\n"
               if tuned else "")
            + "".join(f"\n**{m}** ran on the split its recipe was tuned on (seed {s}): those "
                      "rows say little about the recipe.\n" for m, s in sorted({
                          (r["method"], r["seed"]) for r in rows
                          if r.get("recipe") == "tuned on this split"}))
            + f"\nCommand: `{' '.join(environment['command'])}`\n")
    files["md"] = atomic_write_text(output / "results.md", text)
    for path in _plot(rows, summary, output, setting):
        files[path.stem] = path
    return files


def _audit_text(summary: Sequence[Mapping[str, Any]]) -> str:
    """The verdicts and how to read the audit's columns, when there was a bank."""
    if not any("verdicts" in entry for entry in summary):
        return ""
    lines = ["", "Privacy audit against a bank of retrain networks of other seeds (the same "
             "split): distance to retrain = mean of the absolute accuracy gaps (forget, retain, "
             "held-out) and of the excess of forget examples outside the bank's central 95 % "
             "band of each example's logit-scaled confidence over a held-out retrain network's "
             "(retrain's row); mean abs z = mean over forget examples of the distance of "
             "their signal from the bank's mean in the bank's standard deviations (retrain's "
             "row: the held-out retrain network's); LiRA = offline LiRA, members forget, "
             "non-members held-out; ε-score F = the competition's forget quality of the "
             "method's N runs against N bank networks (retrain's row: N bank networks against "
             f"N others, the best reachable with N networks). Verdict rule: {VERDICT_RULE}.",
             ""]
    for entry in _by_distance(summary):
        for verdict in entry.get("verdicts", []):
            lines.append(f"- **{entry['method']}**: {verdict}")
    return "\n".join(lines) + "\n"



# The audit's per-run keys under other names in a row.
_AUDIT_ROW_KEYS = {"outside": "outside_band", "floor_outside": "floor_outside_band"}


def _audit(rows: Sequence[dict[str, Any]], bank: Sequence[Mapping[str, Any]],
           retrain: Mapping[str, Any]) -> None:
    """Add each method's privacy audit against the bank to its rows of one seed (in place)."""
    heldout = "acc_retain_test" if "acc_retain_test" in retrain else "acc_unseen"
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "signals" in row:
            groups.setdefault(row["method"], []).append(row)
    for group in groups.values():
        audit = audit_method(group, bank, retrain, heldout)
        epsilon = audit["epsilon"] or {}
        for row, run in zip(group, audit["runs"], strict=True):
            row.update({_AUDIT_ROW_KEYS.get(k, k): v for k, v in run.items()
                        if _AUDIT_ROW_KEYS.get(k, k) in (*AUDIT_NUMBERS, "most_exposed")},
                       distance_to_retrain=audit["distance"], verdict=audit["verdict"])
            for key, name in (("forget_quality", "epsilon_forget_quality"),
                              ("retrain_forget_quality", "retrain_epsilon_forget_quality"),
                              ("final_score", "epsilon_final_score")):
                if key in epsilon:
                    row[name] = epsilon[key]
    # Retrain's own row shows retrain against itself (N bank networks against N others).
    against_itself = [r["retrain_epsilon_forget_quality"] for r in rows
                      if "retrain_epsilon_forget_quality" in r]
    for row in rows:
        if row["method"] == "retrain" and against_itself:
            row["epsilon_forget_quality"] = against_itself[0]
