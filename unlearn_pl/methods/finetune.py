"""Fine-tune: the simplest unlearning baseline."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from unlearn_pl.methods.base import Batch, UnlearningModule


class FineTune(UnlearningModule):
    """Fine-tune the original network on the retain set only, with a small learning rate, for a
    few epochs ("catastrophic forgetting" of D_f; Golatkar et al. 2020, Warnecke et al. 2023).

    Args:
        lr: learning rate (default 0.01, a tenth of typical training).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("retain",)
    epoch_split = "retain"

    def __init__(self, lr: float = 0.01, **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, _ = batch["retain"]
        loss = self.loss(self(images), targets)
        self.log("train/loss", loss, prog_bar=True)
        return loss
