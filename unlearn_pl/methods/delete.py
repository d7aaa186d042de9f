"""DELETE: decoupled distillation to erase, on the forget data only."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from unlearn_pl.losses import distillation_kl
from unlearn_pl.methods.base import Batch, UnlearningModule

#: The logit the true class gets in the teacher's target: its probability becomes 0.
MASKED_LOGIT = -1e10


def masked_target_logits(teacher_logits: Tensor, targets: Tensor) -> Tensor:
    """The teacher's logits with each sample's true class masked out, so that its softmax is the
    teacher's distribution over the other classes, renormalised (DELETE's forgetting target)."""
    masked = teacher_logits.detach().float().clone()
    masked[torch.arange(len(targets), device=masked.device), targets] = MASKED_LOGIT
    return masked


class DELETE(UnlearningModule):
    """DELETE (Zhou et al., "Decoupled Distillation to Erase: A General Unlearning Method for
    Any Class-centric Tasks", CVPR 2025, arXiv:2503.23751).

    Trains on the forget set only, distilling from the frozen original: the target of a forget
    sample ``(x, y)`` is the original's softmax with class ``y`` masked out,
    ``p_t = softmax(f_0(x) with f_0(x)_y = −∞)``, and the loss is ``KL(p_t ‖ softmax(f_θ(x)))``
    averaged over the batch. The forgotten class loses its mass while the "dark knowledge" of
    how the sample resembles the other classes is kept, so no retain data is needed. The docs
    page ``docs/methods/delete.md`` gives the algorithm and the measurements.

    Args:
        lr: learning rate (the authors' scripts: 1e-3 with SGD momentum 0.9).
        weight_decay: weight decay (the authors' code: none).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("forget",)
    epoch_split = "forget"
    supports_multilabel = False  # the target masks one true class

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, **kwargs)

    def setup_unlearning(self) -> None:
        self.frozen_copy("teacher")

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, _ = batch["forget"]
        with torch.no_grad():
            target = masked_target_logits(self.frozen["teacher"](images), targets)
        loss = distillation_kl(self(images), target).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss
