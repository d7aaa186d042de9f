"""CF-k and EU-k: fine-tune, or re-initialise and retrain, only the last k blocks on D_r."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from unlearn_pl.methods.base import Batch, UnlearningModule


class CFk(UnlearningModule):
    """CF-k ("catastrophic forgetting of the last k"; Goel, Prabhu, Sanyal, Lim, Torr &
    Kumaraguru, "Towards Adversarial Evaluations for Inexact Machine Unlearning", 2022,
    arXiv:2201.06640; also a baseline of SCRUB, NeurIPS 2023): freeze all but the **last k
    blocks** of the network and fine-tune those on the retain set,
    ``min_{θ_k} L(D_r; θ_frozen, θ_k)``.

    k counts the entries of ``network.blocks()`` (forward order, classifier last), so the trained
    part is ``network.blocks()[-k:]``: ``k = 1`` is the classifier only; for ``resnet18`` ``k = 2``
    is ``layer4`` + ``fc``. Public code counts "layers" in different ways; translate theirs into
    blocks. Frozen blocks, their BatchNorm statistics included, stay bit-identical. The docs page
    ``docs/methods/last_k.md`` gives the details and the measurements.

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
    """EU-k ("exact unlearning of the last k", Goel et al. 2022, as :class:`CFk`): re-initialise
    the **last k blocks** with the network's own initialiser (``network.reinitialize``, seeded
    by ``seed``), then train them on the retain set with the rest frozen. Retraining them from
    scratch on D_r is exact unlearning for those blocks; the frozen part still holds what it
    learnt from D_f. k is defined as in :class:`CFk`; the defaults are a from-scratch learning
    rate with the one-cycle schedule. The docs page ``docs/methods/last_k.md`` gives the details
    and the measurements.

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
