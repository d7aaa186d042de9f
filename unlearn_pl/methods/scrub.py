"""SCRUB: alternate a max pass on the forget set and a min pass on the retain set
(Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from unlearn_pl.losses import distillation_kl
from unlearn_pl.methods.base import Batch, UnlearningModule

Phase = Literal["max", "min"]


def scrub_phase(epoch: int, msteps: int) -> tuple[int, Phase]:
    """Map a Lightning epoch to ``(SCRUB epoch, pass)``.

    SCRUB epoch ``e`` is a max pass over D_f (only while ``e < msteps``) followed by a min pass
    over D_r. Each pass is one Lightning epoch, so Lightning epochs ``0, 1, …, 2·msteps − 1`` are
    ``max, min`` of SCRUB epochs ``0 … msteps − 1`` and every later Lightning epoch is the min pass
    of one more SCRUB epoch: ``E`` SCRUB epochs take ``E + min(E, msteps)`` Lightning epochs.
    """
    if epoch < 2 * msteps:
        return epoch // 2, "max" if epoch % 2 == 0 else "min"
    return epoch - msteps, "min"


class SCRUB(UnlearningModule):
    """SCRUB (Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine
    Unlearning", NeurIPS 2023): a student initialised from the original network f_0 moves away
    from the frozen teacher f_0 on the forget set and stays close to it on the retain set.

    With ``d(x) = KL(f_0(x)/T ‖ f(x)/T)``, the objective
    ``min_f  α·mean_{D_r} d + γ·mean_{D_r} CE(f(x), y) − mean_{D_f} d`` is optimised by
    alternating passes. Per SCRUB epoch ``e``: a **max pass** over D_f minimising ``−T²·d``
    (only while ``e < msteps``), then a **min pass** over D_r minimising ``γ·CE + α·T²·d``.
    Each pass is one Lightning epoch (:func:`scrub_phase`): the paper's 3 SCRUB epochs with
    ``msteps = 2`` are ``trainer.max_epochs: 5``. The learning rate drops by ``lr_decay_rate``
    at each of ``lr_decay_epochs``; multilabel tasks use per-label Bernoulli KLs
    (:func:`~unlearn_pl.losses.distillation_kl`).

    Unlike the public code's ``scrub.py`` (``meghdadk/SCRUB``), which runs ``msteps + 1`` max
    passes, ``msteps`` counts max passes exactly: pass ``msteps + 1`` to reproduce it. The docs
    page ``docs/methods/scrub.md`` gives the mapping onto Lightning, the differences and the
    measurements.

    Args:
        alpha: weight α of the retain KL term (paper code: 0.001).
        gamma: weight γ of the retain cross-entropy (paper code: 0.99).
        msteps: number of SCRUB epochs with a max pass (paper code: 2).
        temperature: distillation temperature T (paper code: 4).
        lr: learning rate (paper code: 5e-4, SGD, momentum 0.9, weight decay 5e-4).
        optimizer: optimiser (paper code: ``sgd``).
        lr_decay_epochs: 1-based SCRUB epochs after which the rate is multiplied by
            ``lr_decay_rate``; ``None`` uses the paper code's ``[3, 5, 9]``, ``[]`` none.
        lr_decay_rate: the decay factor (paper code: 0.1).
        **kwargs: :class:`UnlearningModule` arguments (``scheduler`` must stay ``none``).
    """

    train_splits = ("retain", "forget")

    def __init__(self, alpha: float = 0.001, gamma: float = 0.99,
                 msteps: int = 2, temperature: float = 4.0, lr: float = 5e-4,
                 optimizer: Literal["sgd", "adam", "adamw"] = "sgd",
                 lr_decay_epochs: list[int] | None = None, lr_decay_rate: float = 0.1,
                 **kwargs: Any) -> None:
        if alpha < 0 or gamma < 0:
            raise ValueError(f"alpha and gamma must be >= 0, got {alpha} and {gamma}")
        if msteps < 0:
            raise ValueError(f"msteps counts epochs with a max pass and must be >= 0, got {msteps}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 < lr_decay_rate <= 1:
            raise ValueError(f"lr_decay_rate must lie in (0, 1], got {lr_decay_rate}")
        super().__init__(lr=lr, optimizer=optimizer, **kwargs)
        if self.hparams.scheduler != "none":
            raise ValueError("SCRUB sets its learning rate per epoch (lr, lr_decay_epochs, "
                             "lr_decay_rate); leave scheduler at 'none'")
        self.automatic_optimization = False
        self.lr_decay_epochs = [3, 5, 9] if lr_decay_epochs is None else list(lr_decay_epochs)

    @property
    def epoch_split(self) -> str:  # type: ignore[override]
        """The longer of the two loaders, so one epoch holds a full pass over either split."""
        lengths = self._loader_lengths(planned=True)
        return "forget" if lengths["forget"] > lengths["retain"] else "retain"

    def _loader_lengths(self, planned: bool = False) -> dict[str, int]:
        trainer = self._trainer
        if trainer is None:
            return {"retain": 1, "forget": 0}
        if not planned:  # the loaders Lightning actually iterates (per rank under DDP)
            loaders = trainer.train_dataloader  # the dict of the combined loader's iterables
            return {s: len(loaders[s]) for s in self.train_splits}  # type: ignore[index]
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        sizes = {s: len(datamodule.splits[s][2]) for s in self.train_splits}
        return {"retain": math.ceil(sizes["retain"] / datamodule.batch_size),
                "forget": math.ceil(sizes["forget"] / datamodule.forget_batch_size)}

    def setup_unlearning(self) -> None:
        self.frozen_copy("teacher")

    def scheduled_lr(self, scrub_epoch: int) -> float:
        """The paper code's step decay at 1-based SCRUB epoch ``scrub_epoch + 1``."""
        steps = sum(scrub_epoch + 1 > milestone for milestone in self.lr_decay_epochs)
        return self.hparams.lr * self.hparams.lr_decay_rate ** steps

    def on_train_epoch_start(self) -> None:
        scrub_epoch, _ = scrub_phase(self.current_epoch, self.hparams.msteps)
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = self.scheduled_lr(scrub_epoch)

    def _divergence(self, student: Tensor, images: Tensor) -> Tensor:
        with torch.no_grad():
            teacher = self.frozen["teacher"](images)
        T = self.hparams.temperature
        return distillation_kl(student, teacher, T, self.multilabel).mean() * T**2

    def max_step(self, images: Tensor) -> Tensor:
        """The max-pass loss on a forget batch: ``−T²·KL(teacher ‖ student)``."""
        kl = self._divergence(self(images), images)
        self.log("train/kl_forget", kl.detach())
        return -kl

    def min_step(self, images: Tensor, targets: Tensor) -> Tensor:
        """The min-pass loss on a retain batch: ``γ·CE + α·T²·KL(teacher ‖ student)``."""
        student = self(images)
        kl = self._divergence(student, images)
        task = self.loss(student, targets)
        self.log("train/kl_retain", kl.detach())
        self.log("train/ce_retain", task.detach())
        return self.hparams.gamma * task + self.hparams.alpha * kl

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor | None:
        _, phase = scrub_phase(self.current_epoch, self.hparams.msteps)
        split = "forget" if phase == "max" else "retain"
        if batch_idx >= self._loader_lengths()[split]:
            return None  # this pass is complete; the rest of the epoch only cycles the other split
        images, targets, _ = batch[split]
        loss = self.max_step(images) if phase == "max" else self.min_step(images, targets)
        return self.manual_step(loss)
