"""The evaluation layer: evaluating any network, module or checkpoint, the one per-sample
collector every report and table reads, the privacy audit against retrained references, and the
report's rendering and plots."""

from unlearn_pl.evaluation.audit import VERDICT_RULE, audit_method, distance_to_retrain
from unlearn_pl.evaluation.evaluate import (
    check_evaluation_splits,
    evaluate,
    load_checkpoint_for_evaluation,
    sample_losses,
    sample_signals,
)
from unlearn_pl.evaluation.plots import plot_loss_distribution, plot_signal_against_references
from unlearn_pl.evaluation.render import render_markdown

__all__ = ["VERDICT_RULE", "audit_method", "check_evaluation_splits", "distance_to_retrain",
           "evaluate", "load_checkpoint_for_evaluation", "plot_loss_distribution",
           "plot_signal_against_references", "render_markdown", "sample_losses",
           "sample_signals"]
