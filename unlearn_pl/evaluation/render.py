"""The Markdown of an unlearning report: the verdict, the numbers, retrain's beside them."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from unlearn_pl.evaluation.audit import VERDICT_RULE

__all__ = ["FS_SCALE", "reference_gaps", "render_markdown"]

# The reports' one-line scale note (user-facing text); the full statement is the docstring of
# unlearn_pl.metrics.forgetting_score.
FS_SCALE = ("2*|MIA - 0.5| (paper scale, 0 = the attacker cannot tell); the DLFD and MUFAC code "
            "print |MIA - 0.5|, half of it")


def reference_gaps(results: Mapping[str, float],
                   reference: Mapping[str, float]) -> dict[str, float | None]:
    """Result minus reference for every shared number, the average gap and the time ratio."""
    diffs = {k: results[k] - reference[k] for k in results
             if k in reference and k != "fit_seconds"}
    headline = [k for k in diffs if k.startswith("acc_") or k == "forgetting_score"]
    gaps: dict[str, float | None] = dict(diffs)
    gaps["avg_gap"] = sum(abs(diffs[k]) for k in headline) / len(headline) if headline else None
    mine, theirs = results.get("fit_seconds", 0.0), reference.get("fit_seconds", 0.0)
    if mine > 0 and theirs > 0:
        gaps["time_ratio"] = mine / theirs
    else:
        gaps["time_ratio"] = None
        warnings.warn(f"time ratio left out: fit_seconds is {mine} for the result and {theirs} "
                      "for the reference (0 means the checkpoint holds no unlearning time)",
                      stacklevel=2)
    return gaps


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if name == "fit_seconds" else f"{value:.4f}"


def _audit_lines(audit: Mapping[str, Any] | None) -> list[str]:
    """The privacy audit's verdict and numbers beside the held-out retrain network's."""
    if not audit:
        return []
    exposed = audit["most_exposed"]
    pairs = ", ".join(f"{i} ({z:+.1f})" for i, z in zip(exposed["ids"][:10], exposed["z"][:10],
                                                        strict=True))
    return ["", f"**Verdict: {audit['verdict']}** (distance to retrain "
            f"{audit['distance']:.3f}; {len(audit['bank'])} retrain networks of other seeds as "
            "references; rule: " + VERDICT_RULE + ")", "",
            "| per-example test | result | held-out retrain |", "|---|---:|---:|",
            f"| forget examples outside the references' 95 % band | {audit['outside']:.3f} | "
            f"{audit['floor_outside']:.3f} |",
            f"| mean abs z | {audit['mean_abs_z']:.2f} | {audit['floor_mean_abs_z']:.2f} |",
            f"| LiRA AUC (forget vs held-out) | {audit['lira_auc']:.3f} | "
            f"{audit['floor_lira_auc']:.3f} |",
            f"| LiRA TPR at 1 % FPR | {audit['lira_tpr_1pct']:.3f} | "
            f"{audit['floor_lira_tpr_1pct']:.3f} |",
            *[f"| {title} | {audit[key]:.3f} | {audit[f'floor_{key}']:.3f} |"
              for key, title in (("rmia_auc", "RMIA AUC"), ("rmia_tpr_1pct", "RMIA TPR at 1 % FPR"),
                                 ("loss_auc", "loss threshold AUC (the population attack's)"),
                                 ("loss_tpr_1pct", "loss threshold TPR at 1 % FPR"))
              if key in audit], "",
            f"- most exposed forget examples (id, LiRA z): {pairs}"]


def render_markdown(record: Mapping[str, Any]) -> str:
    """The Markdown table of a ``report.json`` record."""
    results: dict[str, float] = record["metrics"]
    reference = record.get("reference")
    request = ", ".join(f"{k}={v}" for k, v in record["forget_request"].items()
                        if v is not None and k != "seed")
    dataset = record["dataset"]
    lines = [f"# Unlearning report: {record['method']}", "",
             f"- dataset: `{dataset['class_path']}` ({dataset['task']}, "
             f"{dataset['num_classes']} classes); request: {request} "
             f"(seed {record['forget_request'].get('seed')})",
             f"- MIA members: forget; non-members: {dataset['mia_nonmember_split']}; "
             f"forgetting_score = {FS_SCALE}",
             f"- evaluated: the {record.get('weights', 'unknown')} weights; checkpoint: "
             f"{record.get('checkpoint')}; written {record['timestamp']}"]
    lines += [f"- warning: {warning}" for warning in record.get("warnings", [])]
    lines += _audit_lines(record.get("audit"))
    if reference is None:
        lines += ["", "| metric | result |", "|---|---:|"]
        lines += [f"| {k} | {_format(k, v)} |" for k, v in results.items()]
        return "\n".join(lines) + "\n"
    gaps = record["gaps"]
    ref_metrics = reference["metrics"]
    lines += [f"- reference: {reference['method']} from `{reference['source']}`; gap = result "
              "− reference; avg_gap = mean |gap| over the accuracies and the forgetting score",
              "", "| metric | result | reference | gap |", "|---|---:|---:|---:|"]
    for k, v in results.items():
        if k == "fit_seconds":
            ratio = gaps.get("time_ratio")
            gap = "–" if ratio is None else f"×{ratio:.3f}"
        else:
            gap = "–" if gaps.get(k) is None else f"{gaps[k]:+.4f}"
        lines.append(f"| {k} | {_format(k, v)} | {_format(k, ref_metrics.get(k))} | {gap} |")
    lines.append(f"| avg_gap | | | {_format('avg_gap', gaps.get('avg_gap'))} |")
    return "\n".join(lines) + "\n"
