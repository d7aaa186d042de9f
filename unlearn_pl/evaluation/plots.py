"""Plots of the privacy audit."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from unlearn_pl.utils import atomic_save_figure

__all__ = ["plot_signal_against_references"]


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
