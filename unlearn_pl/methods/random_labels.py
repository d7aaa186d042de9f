"""Random labels and Amnesiac unlearning: train on the forget set with wrong labels."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from unlearn_pl.methods.base import Batch, UnlearningModule
from unlearn_pl.utils import sample_generator


def random_other_labels(targets: Tensor, ids: Tensor, num_classes: int, seed: int,
                        epoch: int | None = None) -> Tensor:
    """A random label per sample, uniform over the ``num_classes - 1`` classes other than its
    true label, drawn from a generator seeded by ``(seed, epoch, id)``.

    Args:
        targets: true class per sample.
        ids: training-set sample ids (the same sample always gets the same draw for a given
            ``seed`` and ``epoch``).
        num_classes: number of classes (at least 2).
        seed: run seed.
        epoch: a new draw per epoch; ``None`` draws one fixed label per sample for the whole run.

    Returns:
        Labels on ``targets``' device, never equal to ``targets``.
    """
    if num_classes < 2:
        raise ValueError(f"random wrong labels need at least 2 classes, got {num_classes}")
    keys = (seed, 0 if epoch is None else 1, epoch or 0)
    offsets = torch.stack([torch.randint(1, num_classes, (), generator=sample_generator(*keys, i))
                           for i in ids.tolist()]) if len(ids) else torch.zeros(0, dtype=torch.long)
    # (y + k) mod C with k uniform in 1..C-1 is uniform over the other C-1 classes.
    return (targets + offsets.to(targets.device)) % num_classes


class RandomLabels(UnlearningModule):
    """Random labels: the "Random Labels" baseline of Golatkar, Achille & Soatto, "Eternal
    Sunshine of the Spotless Net: Selective Forgetting in Deep Networks" (CVPR 2020), also used
    by Graves et al. (AAAI 2021) and SalUn (Fan et al., ICLR 2024).

    Train on the retain set mixed with the forget set whose labels are replaced by random
    **wrong** classes, redrawn every epoch: ``L = CE(f(x), ỹ)`` over the batch, with ``ỹ = y``
    on retain samples and ``ỹ ~ U({0..C−1}∖{y})`` on forget samples
    (:func:`random_other_labels`). ``mix="union"`` makes an epoch one shuffled pass over
    D_r ∪ D_f; ``mix="paired"`` pairs each retain batch with a forget batch, cycling D_f.

    Unlike public code, the random label is never the true label and is seeded by
    ``(seed, epoch, sample id)``, so resumed and distributed runs draw the same labels.
    Multiclass tasks only. The docs page ``docs/methods/random_labels.md`` gives the mixing,
    the differences and the measurements.

    Args:
        lr: learning rate (a fine-tuning rate).
        mix: ``union`` (one shuffled pass over D_r ∪ D_f) or ``paired`` (a retain and a forget
            batch per step, the forget set cycled).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    relabel_every_epoch: ClassVar[bool] = True
    supports_multilabel = False
    forget_ids: Tensor

    def __init__(self, lr: float = 0.01,
                 mix: Literal["union", "paired"] = "union", **kwargs: Any) -> None:
        if mix not in ("union", "paired"):
            raise ValueError(f"mix must be 'union' or 'paired', got {mix!r}")
        super().__init__(lr=lr, **kwargs)
        self.register_buffer("forget_ids", torch.empty(0, dtype=torch.long), persistent=False)

    @property
    def train_splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("train",) if self.hparams.mix == "union" else ("retain", "forget")

    @property
    def epoch_split(self) -> str:  # type: ignore[override]
        return self.train_splits[0]

    def setup_unlearning(self) -> None:
        if self.hparams.mix == "union":
            datamodule = getattr(self._trainer, "datamodule", None)
            if datamodule is None:
                raise RuntimeError(f"{type(self).__name__} needs an UnlearningDataModule (it "
                                   "names the forget samples of the training set)")
            # Derived from the datamodule on every rank: rebuilt, never checkpointed.
            self.forget_ids = datamodule.splits["forget"][2].to(self.device)

    def forget_labels(self, targets: Tensor, ids: Tensor) -> Tensor:
        """The wrong labels the forget samples ``ids`` are trained on in the current epoch."""
        epoch = self.current_epoch if self.relabel_every_epoch else None
        return random_other_labels(targets, ids, self.network.num_classes,
                                   self.hparams.seed, epoch)

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        if self.hparams.mix == "union":
            images, targets, ids = batch["train"]
            forget = torch.isin(ids, self.forget_ids)
            targets = targets.clone()
            targets[forget] = self.forget_labels(targets[forget], ids[forget])
            forget_count = int(forget.sum())
        else:
            retain_x, retain_y, _ = batch["retain"]
            forget_x, forget_y, forget_ids = batch["forget"]
            # One forward over both, as in training on the relabelled union (shared BN
            # statistics).
            images = torch.cat([retain_x, forget_x])
            targets = torch.cat([retain_y, self.forget_labels(forget_y, forget_ids)])
            forget_count = len(forget_y)
        loss = self.loss(self(images), targets)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/forget_share", forget_count / len(targets))
        return loss


class Amnesiac(RandomLabels):
    """Amnesiac unlearning, **relabelling form** (Graves, Nagisetty & Ganesh, "Amnesiac Machine
    Learning", AAAI 2021, §"Unlearning"): every forget sample is relabelled once with a fixed
    random wrong class ``ỹ_i ~ U({0..C−1}∖{y_i})``, seeded by ``(seed, i)``, then the network is
    trained on the relabelled forget set mixed with the retain set, as in :class:`RandomLabels`.

    The paper's other "amnesiac unlearning", which subtracts stored parameter updates, is not
    this class. Public ports (Bad Teaching / SSD code) train 3 epochs at lr 1e-4 with
    ``mix="union"``. The docs page ``docs/methods/amnesiac.md`` gives the differences and the
    measurements. Multiclass only.

    Args:
        lr: learning rate.
        mix: ``union`` or ``paired``, as in :class:`RandomLabels`.
        **kwargs: :class:`UnlearningModule` arguments.
    """

    relabel_every_epoch = False
