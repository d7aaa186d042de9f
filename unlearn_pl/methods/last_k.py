"""CF-k and EU-k: fine-tune, or re-initialise and retrain, only the last k blocks on D_r."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from unlearn_pl.methods.base import Batch, UnlearningModule


class CFk(UnlearningModule):
    """CF-k ("catastrophic forgetting of the last k"): freeze all but the **last k blocks** of the
    network and fine-tune those on the retain set.

    Goel, Prabhu, Sanyal, Lim, Torr & Kumaraguru, "Towards Adversarial Evaluation of Machine
    Unlearning" (2022; also the CF-k baseline of SCRUB, NeurIPS 2023).

    **What k counts.** Public code counts "layers" in different ways (parameter tensors, modules,
    residual stages). Here k counts the entries of ``network.blocks()`` — the architecture's
    blocks in forward order, the final classifier last — so the trained part is
    ``network.blocks()[-k:]``: ``k = 1`` is the classifier only; for ``resnet18`` (blocks: stem,
    layer1..layer4, fc) ``k = 2`` is ``layer4`` + ``fc`` and ``k = 6`` is the whole network.

    Frozen blocks are ``requires_grad_(False)`` (out of the optimiser) and every BatchNorm outside
    the trained blocks stays in eval mode, so the frozen part is bit-identical after training.

    Args:
        k: number of last blocks to train, ``1 ≤ k ≤ len(network.blocks())``.
        lr: learning rate.
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("retain",)
    epoch_split = "retain"

    def __init__(self, k: int = 2, lr: float = 0.01,
                 **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)
        blocks = len(self.network.blocks())
        if not 1 <= k <= blocks:
            raise ValueError(f"k must be between 1 and the {blocks} blocks of "
                             f"{self.hparams.arch} (the classifier is the last block), got {k}")
        self.k = k
        self._freeze()

    def trained_blocks(self) -> list[nn.Module]:
        """The last k blocks of ``network.blocks()``: the only part that trains."""
        return self.network.blocks()[-self.k:]

    def _freeze(self) -> None:
        self.network.requires_grad_(False)
        for block in self.trained_blocks():
            block.requires_grad_(True)
        self._freeze_norms()

    def _freeze_norms(self) -> None:
        # Frozen blocks must not re-estimate their BatchNorm statistics on D_r. Lightning keeps
        # each module's mode as it finds it (it never calls train() at fit start), so the eval
        # mode is set here and re-asserted whenever train() is called or an epoch starts.
        trained = {id(m) for block in self.trained_blocks() for m in block.modules()}
        for module in self.network.modules():
            if isinstance(module, _BatchNorm) and id(module) not in trained:
                module.eval()

    def train(self, mode: bool = True) -> CFk:
        super().train(mode)
        if mode and hasattr(self, "k"):
            self._freeze_norms()
        return self

    def on_train_epoch_start(self) -> None:
        self._freeze_norms()

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, _ = batch["retain"]
        loss = self.loss(self(images), targets)
        self.log("train/loss", loss, prog_bar=True)
        return loss


class EUk(CFk):
    """EU-k ("exact unlearning of the last k"): re-initialise the **last k blocks** with the
    network's own initialiser, then train them on the retain set with the rest frozen.

    Goel et al., "Towards Adversarial Evaluation of Machine Unlearning" (2022): retraining the
    last k blocks from scratch on D_r is exact unlearning for those blocks (the frozen part still
    holds what it learnt from D_f). k is defined as in :class:`CFk`: ``network.blocks()[-k:]``.

    The re-initialisation uses ``network.reinitialize`` (the architecture's own initialiser, e.g.
    torchvision's Kaiming-normal convolutions, BatchNorm weight 1 / bias 0 with reset running
    statistics) under ``torch.random.fork_rng`` seeded from ``seed``: every rank and every resume
    draws the same weights and the global RNG is left untouched. It happens in
    ``setup_unlearning``, after the original is loaded and before a checkpoint restore.
    Retraining from scratch needs a training learning rate and schedule (the defaults).

    Args:
        k: number of last blocks to re-initialise and train.
        lr: learning rate (a from-scratch rate, used with the one-cycle schedule).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    def __init__(self, k: int = 2, lr: float = 0.05,
                 **kwargs: Any) -> None:
        kwargs.setdefault("scheduler", "onecycle")
        super().__init__(k=k, lr=lr, **kwargs)

    def setup_unlearning(self) -> None:
        super().setup_unlearning()
        # Seed only the generators the initialisers draw from, inside fork_rng: the global RNG
        # state (and lazily seeded CUDA devices) stay untouched; every rank draws the same.
        cuda = sorted({p.device.index or 0 for p in self.network.parameters()
                       if p.device.type == "cuda"})
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(self.hparams.seed)
            for index in cuda:
                torch.cuda.default_generators[index].manual_seed(self.hparams.seed)
            for block in self.trained_blocks():
                self.network.reinitialize(block)
