"""NegGrad and NegGrad+: gradient ascent on the forget set."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from unlearn_pl.methods.base import Batch, UnlearningModule


class NegGrad(UnlearningModule):
    """NegGrad: gradient **ascent** on the forget set, ``min_θ −L(D_f; θ)``.

    The "Negative Gradient" baseline of Golatkar, Achille & Soatto, "Eternal Sunshine of the
    Spotless Net" (CVPR 2020) and Kurmanji et al., "Towards Unbounded Machine Unlearning" (SCRUB,
    NeurIPS 2023): fine-tune on D_f with the sign of the task loss flipped. One epoch is one pass
    over D_f.

    The loss is unbounded below, so the method collapses unless the learning rate is small and
    training short (the defaults); a non-finite loss stops training with a
    ``FloatingPointError`` before the update reaches the weights, so the last checkpoint written
    stays the last good one.

    Args:
        lr: learning rate (small: ascent diverges quickly).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("forget",)
    epoch_split = "forget"

    def __init__(self, lr: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, _ = batch["forget"]
        forget_loss = self.loss(self(images), targets)
        self.log_dict({"train/loss": -forget_loss, "train/loss_forget": forget_loss},
                      prog_bar=True)
        return -forget_loss


class NegGradPlus(UnlearningModule):
    """NegGrad+: descent on the retain set and ascent on the forget set,
    ``min_θ α·L(D_r; θ) − (1 − α)·L(D_f; θ)``.

    Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine Unlearning"
    (SCRUB, NeurIPS 2023), baseline "NegGrad+", with their default ``α = 0.999``. Each step holds
    a retain batch and a forget batch; one epoch is one pass over D_r with the forget set cycled.
    The ascent term can still collapse the network with a large learning rate or many epochs
    (see :class:`NegGrad`).

    Args:
        lr: learning rate.
        alpha: weight α of the retain loss in [0, 1]; the forget loss gets ``1 − α``.
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("retain", "forget")
    epoch_split = "retain"

    def __init__(self, lr: float = 0.01, alpha: float = 0.999,
                 **kwargs: Any) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        super().__init__(lr=lr, **kwargs)
        self.alpha = alpha

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        retain_x, retain_y, _ = batch["retain"]
        forget_x, forget_y, _ = batch["forget"]
        # One forward, so BatchNorm normalises mixed batches (not forget-only ones).
        logits = self(torch.cat([retain_x, forget_x]))
        retain_loss = self.loss(logits[: len(retain_x)], retain_y)
        forget_loss = self.loss(logits[len(retain_x):], forget_y)
        loss = self.alpha * retain_loss - (1.0 - self.alpha) * forget_loss
        self.log_dict({"train/loss": loss, "train/loss_retain": retain_loss,
                       "train/loss_forget": forget_loss}, prog_bar=True)
        return loss
