"""SalUn: random labels under a weight-saliency mask."""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch import Callback

from unlearn_pl.methods.random_labels import RandomLabels
from unlearn_pl.methods.saliency import SaliencyMask


class SalUn(RandomLabels):
    """SalUn (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight
    Saliency in Both Image Classification and Generation", ICLR 2024, arXiv:2310.12508).

    Random-label unlearning (:class:`RandomLabels`: D_r with D_f relabelled at random) that
    trains only the salient weights: the mask ``m = 1[|∇_θ(−CE(D_f; θ_0))| ≥ γ]`` keeps the
    ``ratio`` share of weights with the largest forget-loss gradient at the original
    (:class:`~unlearn_pl.methods.saliency.SaliencyMask`); the other weights and their momentum
    stay at their start after every step. The random label is a wrong class (the authors' code
    draws from every class, the true one included). The docs page ``docs/methods/salun.md``
    gives the algorithm and the measurements.

    Args:
        ratio: share of the weights trained (paper: 0.5).
        lr: learning rate (paper: 0.013 for 10 % random forgetting on CIFAR-10).
        mix: as :class:`RandomLabels`.
        **kwargs: :class:`UnlearningModule` arguments.
    """

    def __init__(self, ratio: float = 0.5, lr: float = 0.013,
                 mix: Literal["union", "paired"] = "union", **kwargs: Any) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio (the share of salient weights) must lie in (0, 1], got "
                             f"{ratio}")
        super().__init__(lr=lr, mix=mix, **kwargs)

    def configure_callbacks(self) -> list[Callback]:
        return [SaliencyMask(self.hparams.ratio)]
