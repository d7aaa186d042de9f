"""Bad Teaching: distil from an incompetent teacher on the forget set and from the original on
the retain set (Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks
Using an Incompetent Teacher", AAAI 2023)."""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import Tensor

from unlearn_pl.losses import distillation_kl
from unlearn_pl.methods.base import Batch, UnlearningModule
from unlearn_pl.networks import Classifier


def incompetent_teacher(network: Classifier, seed: int) -> Classifier:
    """A copy of ``network`` with every layer re-initialised by the architecture's own
    initialiser (normalisation constants kept), drawn on the CPU from ``seed`` inside
    :func:`torch.random.fork_rng`: the same seed gives the same teacher on every rank and after
    a resume, and the global random state is left as it was."""
    teacher = copy.deepcopy(network).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher.reinitialize(teacher)
    return teacher


class BadTeaching(UnlearningModule):
    """Bad Teaching (Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep
    Networks Using an Incompetent Teacher", AAAI 2023): the student starts from the original f_0
    and is distilled, in one epoch over D_f ∪ a random ``retain_subset`` share of D_r, towards a
    randomly initialised **incompetent teacher** T_d on forget samples (l_u = 1) and the
    **competent teacher** T_s = f_0 on retain samples (l_u = 0), minimising

        ``KL(t(x) ‖ softmax(S(x)/τ))``,
        ``t(x) = l_u·softmax(T_d(x)/τ) + (1 − l_u)·softmax(T_s(x)/τ)``

    (τ: ``temperature``). Both teachers are frozen; T_d is rebuilt from ``seed``
    (:func:`incompetent_teacher`). An epoch is one shuffled pass over D, skipping retain samples
    outside the subset, so batches hold fewer than ``batch_size`` used samples.

    Unlike the public code (``vikram2000b/bad-teaching-unlearning``), whose ``F.kl_div`` divides
    by batch × classes, the KL is summed over classes and averaged over samples. The docs page
    ``docs/methods/bad_teaching.md`` gives the details, the differences and the measurements.

    Args:
        lr: learning rate (reference: Adam, 1e-4).
        optimizer: optimiser (reference: ``adam``).
        weight_decay: weight decay (reference: 0).
        temperature: distillation temperature (paper: 1).
        retain_subset: share of D_r distilled from the competent teacher, in (0, 1] (paper: 0.3).
        **kwargs: :class:`UnlearningModule` arguments; ``seed`` also seeds the incompetent
            teacher and the retain subset.
    """

    train_splits = ("train",)
    epoch_split = "train"
    is_forget: Tensor
    used: Tensor

    def __init__(self, lr: float = 1e-4,
                 optimizer: Literal["sgd", "adam", "adamw"] = "adam", weight_decay: float = 0.0,
                 temperature: float = 1.0, retain_subset: float = 0.3, **kwargs: Any) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 < retain_subset <= 1:
            raise ValueError(f"retain_subset must lie in (0, 1], got {retain_subset}")
        super().__init__(lr=lr, optimizer=optimizer, weight_decay=weight_decay, **kwargs)

    def setup_unlearning(self) -> None:
        self.frozen_copy("competent_teacher")
        teacher = incompetent_teacher(self.network, self.hparams.seed).to(self.device)
        self.frozen_copy("incompetent_teacher", teacher)
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise RuntimeError("BadTeaching needs an UnlearningDataModule (it names the forget "
                               "and retain samples)")
        forget_ids = datamodule.splits["forget"][2]
        retain_ids = datamodule.splits["retain"][2]
        size = int(max(forget_ids.max(), retain_ids.max())) + 1
        count = round(self.hparams.retain_subset * len(retain_ids))
        generator = torch.Generator().manual_seed(self.hparams.seed)
        chosen = retain_ids[torch.randperm(len(retain_ids), generator=generator)[:count]]
        is_forget = torch.zeros(size, dtype=torch.bool)
        is_forget[forget_ids] = True
        used = is_forget.clone()
        used[chosen] = True
        # Derived from the datamodule and seed on every rank: rebuilt, never checkpointed.
        self.register_buffer("is_forget", is_forget.to(self.device), persistent=False)
        self.register_buffer("used", used.to(self.device), persistent=False)

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor | None:
        images, _, ids = batch["train"]
        keep = self.used[ids]
        if not keep.any():
            if self.trainer.world_size == 1:
                return None
            # DDP needs a backward on every rank: a zero loss touching every parameter.
            return torch.stack([p.sum() for p in self.trainable_parameters()]).sum() * 0.0
        images, forget = images[keep], self.is_forget[ids[keep]]
        student = self(images)
        with torch.no_grad():
            teacher = torch.empty_like(student)
            if forget.any():
                teacher[forget] = self.frozen["incompetent_teacher"](images[forget]).to(
                    teacher.dtype)
            if not forget.all():
                teacher[~forget] = self.frozen["competent_teacher"](images[~forget]).to(
                    teacher.dtype)
        loss = distillation_kl(student, teacher, self.hparams.temperature, self.multilabel).mean()
        self.log("train/loss", loss.detach(), prog_bar=True)
        self.log("train/forget_share", forget.float().mean())
        return loss
