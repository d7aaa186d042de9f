"""Plain training: the original network and the retrain-from-scratch reference."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from unlearn_pl.methods.base import Batch, UnlearningModule
from unlearn_pl.methods.optim import Schedule


class Train(UnlearningModule):
    """Train a classifier with the task loss.

    ``train_on: full`` trains on the whole training set (the **original** network every method
    starts from); ``train_on: retain`` trains on the retain set only (the **retrain** reference,
    the gold standard of unlearning: the network that never saw the forget set).

    Args:
        train_on: ``full`` or ``retain``.
        lr: peak learning rate of the schedule.
        scheduler: learning-rate schedule (one-cycle by default).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    requires_original = False

    def __init__(self, train_on: Literal["full", "retain"] = "full", lr: float = 0.05,
                 scheduler: Schedule = "onecycle",
                 **kwargs: Any) -> None:
        super().__init__(lr=lr, scheduler=scheduler, **kwargs)
        self.train_on = train_on

    @property
    def forgets(self) -> bool:
        return self.train_on == "retain"

    @property
    def train_splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("train",) if self.train_on == "full" else ("retain",)

    @property
    def epoch_split(self) -> str:  # type: ignore[override]
        return self.train_splits[0]

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, _ = batch[self.epoch_split]
        loss = self.loss(self(images), targets)
        self.log("train/loss", loss, prog_bar=True)
        return loss
