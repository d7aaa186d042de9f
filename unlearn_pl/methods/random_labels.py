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
    """Random labels: train on the retain set mixed with the forget set whose labels are replaced
    by random **wrong** classes, redrawn every epoch.

    The "Random Labels" baseline of Golatkar, Achille & Soatto, "Eternal Sunshine of the Spotless
    Net: Selective Forgetting in Deep Networks" (CVPR 2020), also used by Graves et al. (AAAI
    2021) and SalUn (Fan et al., ICLR 2024). Each step minimises the cross-entropy of a batch of
    retain samples with their true labels and forget samples with labels ỹ ~ U({1..C}∖{y}):
    ``L = CE(f(x), y)`` over the batch, with ``ỹ`` replacing ``y`` on forget samples.

    How forget and retain samples are mixed (``mix``):

    * ``union`` (default, as the public code of SalUn and of the Bad Teaching / SSD ports): one
      epoch is one pass over the training set D = D_r ∪ D_f shuffled together, so every sample
      is seen once per epoch and forget samples make up |D_f|/|D| of the epoch (and, on
      average, of every batch of ``batch_size``).
    * ``paired``: each step holds a retain batch of ``batch_size`` and a forget batch of the
      datamodule's ``forget_batch_size`` (default ``batch_size``); one epoch is one pass over
      D_r with the forget set cycled, so forget samples are
      ``forget_batch_size / (batch_size + forget_batch_size)`` of every step (one half by
      default) and D_f is replayed about ``|D_r|·forget_batch_size / (batch_size·|D_f|)`` times
      per epoch (about 9 times for one class of CIFAR-10).

    Deliberate differences from public code:

    * the random label is never the true label (public implementations often draw uniformly
      over all C classes, so 1/C of the "random" labels confirm what should be forgotten);
    * labels come from a generator seeded by ``(seed, epoch, sample id)`` instead of the global
      RNG, so a resumed or distributed run draws the same labels.

    Multiclass tasks only.

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
    """Amnesiac unlearning, **relabelling form**: every forget sample is relabelled once with a
    fixed random wrong class, then the network is trained on the relabelled forget set mixed
    with the retain set.

    Graves, Nagisetty & Ganesh, "Amnesiac Machine Learning" (AAAI 2021), §"Unlearning" by
    relabelling; public ports (Chundawat et al.'s Bad Teaching and SSD code) train 3 epochs at
    lr 1e-4 on the shuffled union D_r ∪ relabelled D_f (``mix="union"``, the default). The
    paper's *other* method, also called "amnesiac unlearning", which subtracts the parameter
    updates stored for the batches that held sensitive data, is a different method and is not
    this class.

    The label of sample ``i`` is ỹ_i ~ U({1..C}∖{y_i}) from a generator seeded by ``(seed, i)``:
    the same in every epoch, on every rank, after a resume. Differences from public code and the
    mixing of retain and forget batches are as in :class:`RandomLabels`. Multiclass only.

    Args:
        lr: learning rate.
        mix: ``union`` or ``paired``, as in :class:`RandomLabels`.
        **kwargs: :class:`UnlearningModule` arguments.
    """

    relabel_every_epoch = False
