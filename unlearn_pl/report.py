"""Deprecated location of the evaluation and the report, kept for one release.

Use :mod:`unlearn_pl.evaluation` (``evaluate``, ``load_checkpoint_for_evaluation``,
``sample_losses``, ``sample_signals``, ``render_markdown``, the plots) and
:class:`unlearn_pl.callbacks.UnlearningReport`.
"""

from __future__ import annotations

import warnings

from unlearn_pl.callbacks.report import UnlearningReport
from unlearn_pl.evaluation.evaluate import (
    check_evaluation_splits,
    evaluate,
    load_checkpoint_for_evaluation,
    sample_losses,
    sample_signals,
)
from unlearn_pl.evaluation.plots import plot_loss_distribution
from unlearn_pl.evaluation.render import render_markdown

warnings.warn("unlearn_pl.report is deprecated: import from unlearn_pl.evaluation and "
              "unlearn_pl.callbacks", DeprecationWarning, stacklevel=2)

__all__ = ["UnlearningReport", "check_evaluation_splits", "evaluate",
           "load_checkpoint_for_evaluation", "plot_loss_distribution", "render_markdown",
           "sample_losses", "sample_signals"]
