"""l1-sparse: fine-tuning on the retain set with a decaying L1 penalty."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from unlearn_pl.methods.base import Batch, UnlearningModule


class L1Sparse(UnlearningModule):
    """l1-sparse unlearning (Jia et al., "Model Sparsity Can Simplify Machine Unlearning",
    NeurIPS 2023, arXiv:2304.04934).

    Fine-tunes the original on D_r with an L1 penalty on every weight whose strength decays
    linearly to 0: ``min_θ L(D_r; θ) + α_t·‖θ‖₁`` with ``α_t = alpha·(1 − t/T)``. The paper's
    schedule decays per optimiser step over the run (``decay: step``); the authors' code lowers
    it once per epoch, ``alpha·(1 − e/E)`` (``decay: epoch``). The docs page
    ``docs/methods/l1_sparse.md`` gives the algorithm and the measurements.

    Args:
        alpha: the penalty's initial strength α (paper: 5e-4 on CIFAR-10).
        decay: ``step`` (linear over the run's optimiser steps) or ``epoch`` (the authors' code).
        lr: learning rate (paper: 0.01).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("retain",)
    epoch_split = "retain"

    def __init__(self, alpha: float = 5e-4, decay: Literal["step", "epoch"] = "step",
                 lr: float = 0.01, **kwargs: Any) -> None:
        if alpha < 0:
            raise ValueError(f"alpha (the L1 strength) must be >= 0, got {alpha}")
        if decay not in ("step", "epoch"):
            raise ValueError(f"decay must be 'step' or 'epoch', got {decay!r}")
        super().__init__(lr=lr, **kwargs)

    def current_alpha(self) -> float:
        """α_t at the current step (or epoch)."""
        hp, trainer = self.hparams, self.trainer
        if hp.decay == "epoch":
            epochs = max(int(trainer.max_epochs or 1), 1)
            return hp.alpha * (1 - trainer.current_epoch / epochs)
        total = max(float(trainer.estimated_stepping_batches), 1.0)
        return hp.alpha * max(0.0, 1 - self.global_step / total)

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, _ = batch["retain"]
        task = self.loss(self(images), targets)
        alpha = self.current_alpha()
        l1 = torch.stack([p.abs().sum() for p in self.trainable_parameters()]).sum()
        loss = task + alpha * l1
        self.log_dict({"train/loss": loss, "train/l1_alpha": alpha}, prog_bar=True)
        return loss
