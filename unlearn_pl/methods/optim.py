"""The task loss and the optimiser and learning-rate schedule every method (and the bank's
ensemble) trains with."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: A learning-rate schedule: ``cosine`` and ``onecycle`` per step over the run; ``triangle`` per
#: epoch (linear rise to ``lr`` over the first half of the epochs, linear fall after it).
Schedule = Literal["none", "cosine", "onecycle", "triangle"]


def task_loss(logits: Tensor, targets: Tensor, multilabel: bool,
              reduction: str = "mean") -> Tensor:
    """Cross-entropy (multiclass) or BCE averaged over labels (multilabel), per sample
    (``reduction="none"``) or averaged over samples."""
    if multilabel:
        loss = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
        loss = loss.mean(1)
        return loss.mean() if reduction == "mean" else loss
    return F.cross_entropy(logits, targets, reduction=reduction)


def configure_optimization(params: list[nn.Parameter], hp: Any, trainer: Any) -> Any:
    """The recipe's optimiser (``hp.optimizer``: SGD with ``momentum``, Adam or AdamW, at
    ``hp.lr`` with ``hp.weight_decay``) and schedule (``hp.scheduler``: none, cosine to 0 or
    one-cycle per step over the run's ``estimated_stepping_batches``, or :func:`triangle` per
    epoch), in Lightning's ``configure_optimizers`` form."""
    if hp.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    elif hp.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    if hp.scheduler == "none":
        return optimizer
    if hp.scheduler == "triangle":
        epochs = trainer.max_epochs
        if epochs is None or epochs < 1:
            raise ValueError("scheduler 'triangle' is set per epoch: give trainer.max_epochs "
                             f"(got {epochs})")
        return {"optimizer": optimizer, "lr_scheduler": {
            "scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, triangle(epochs)),
            "interval": "epoch"}}
    steps = max(1, int(trainer.estimated_stepping_batches))
    if hp.scheduler == "cosine":
        scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    else:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.lr,
                                                        total_steps=steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def triangle(epochs: int) -> Any:
    """The per-epoch factor of the ``triangle`` schedule over ``epochs`` epochs (the NeurIPS
    2023 competition's MSG solution): epoch ``e`` (from 0) trains at ``(e + 1) / A`` of the
    learning rate while ``e + 1 ≤ A = ⌊(epochs + 1) / 2⌋``, then at
    ``(epochs − e) / (epochs + 1 − A)``; for 5 epochs 1/3, 2/3, 1, 2/3, 1/3."""
    rise = (epochs + 1) // 2

    def factor(epoch: int) -> float:
        step = epoch + 1
        return step / rise if step <= rise else (epochs + 1 - step) / (epochs + 1 - rise)
    return factor
