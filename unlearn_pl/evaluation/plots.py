"""Plots of an evaluation: the loss distributions the population attack sees, and each forget
example's signal against the reference networks' distribution of it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from unlearn_pl.utils import atomic_save_figure

__all__ = ["plot_loss_distribution", "plot_signal_against_references"]


def plot_signal_against_references(panels: list[tuple[str, Tensor]], references: Tensor,
                                   path: Path, band: float = 0.95) -> None:
    """What the per-example tests see: each forget example's signal under a network (y) against
    the mean of that example's signal under the reference networks (x), over the references'
    central ``band`` (mean ± z·σ, σ pooled over examples as the tests pool it when K < 16), one
    panel per network (the unlearned one, a held-out retrain...), written atomically.

    Args:
        panels: ``(title, signal (M,))`` per network.
        references: the references' signals, ``(K, M)``.
        path: the PNG file.
        band: the central probability of the shaded band.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    mean = references.double().mean(0)
    sigma = float(references.double().var(0).mean().sqrt())
    z = float(torch.special.ndtri(torch.tensor(0.5 + band / 2, dtype=torch.float64)))
    grid = torch.linspace(float(mean.min()), float(mean.max()), 50)
    figure = Figure(figsize=(4.5 * len(panels), 4.0), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, signal) in zip(axes, panels, strict=True):
        ax.fill_between(grid, grid - z * sigma, grid + z * sigma, color="tab:green", alpha=0.2,
                        label=f"references' central {band:.0%}")
        ax.plot(grid, grid, color="tab:green", linewidth=1)
        ax.scatter(mean, signal.double(), s=6, color="tab:red", label="forget examples")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mean signal under the references")
        ax.set_ylabel("signal under this network")
        ax.legend(fontsize=8)
    atomic_save_figure(figure, path)


def plot_loss_distribution(panels: list[tuple[str, dict[str, list[float]]]], non_member: str,
                           path: Path, bins: int = 40) -> None:
    """Density histograms of the per-sample loss of forget vs non-member samples, one panel per
    model (the result, and retrain when known), on shared bins, written atomically to ``path``.

    The bins span the smallest loss to the 99.5th percentile of all samples; larger losses are
    drawn in the last bin so a few outliers do not squash the plot.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    every = torch.tensor([x for _, losses in panels for v in losses.values() for x in v],
                         dtype=torch.float64)
    lower = float(every.min()) if every.numel() else 0.0
    upper = float(torch.quantile(every, 0.995)) if every.numel() else 1.0
    upper = max(upper, lower + 1e-6)
    edges = torch.linspace(lower, upper, bins + 1).tolist()
    figure = Figure(figsize=(5.0 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, losses) in zip(axes, panels, strict=True):
        for split, label, color in (("forget", "forget (members)", "tab:red"),
                                    (non_member, f"{non_member} (non-members)", "tab:blue")):
            values = [min(v, upper) for v in losses.get(split, [])]
            if values:
                ax.hist(values, bins=edges, density=True, alpha=0.5, color=color, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("per-sample loss")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    atomic_save_figure(figure, path)
