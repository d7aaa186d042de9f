"""The splits of an unlearning run: the forget request's samples, the retain set, the held-out
data and the validation split carved off it, and the seeded shuffling of training loaders."""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import Trainer
from torch import Tensor
from torch.utils.data import Sampler

from unlearn_pl.data.core import ImageData, Task
from unlearn_pl.data.requests import ForgetRequest

TRAIN_SPLITS = ("train", "retain", "forget")
SplitName = Literal["train", "retain", "forget", "unseen", "retain_test", "forget_test"]


#: The membership inference attack needs at least this many members and non-members.
MIN_ATTACK_SAMPLES = 2

# Splits of a dataset's validation set (``validation/unseen``, ...): the probe's held-out data.
VALIDATION_PREFIX = "validation/"
# The held-out splits: the test's, and (prefixed) the validation probe's.
HELD_OUT_SPLITS = ("unseen", "retain_test", "forget_test")
#: The test stage's extra split: the validation split's held-out samples, never trained on and
#: disjoint from the test splits, the population RMIA compares each scored example with.
POPULATION_SPLIT = "population"
# Offset of the seed that carves a validation split off the held-out data (its own stream).
VALIDATION_SEED = 10_007


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a permutation derived from ``(seed, epoch)`` only.

    Lightning calls :meth:`set_epoch` every epoch (under DDP through the
    ``DistributedSamplerWrapper`` it wraps this sampler in), so a run resumed from a checkpoint
    sees the same order as an uninterrupted one (a global-RNG shuffle would differ after a
    resume).

    With ``tag_epoch`` (augmented training loaders) it yields ``(index, epoch, draw)`` instead
    of ``index``: :class:`~unlearn_pl.data.core.ImageTensorDataset` seeds each sample's
    augmentation from them, so the epoch reaches the dataset even in loader worker processes
    and through DDP's wrapper. ``draw`` counts the passes over this sampler within the epoch,
    so a short loader cycled within an epoch gets fresh augmentations every pass.

    Args:
        length: the dataset's length.
        seed: seed of the permutations.
        epoch: the epoch to start at (the trainer's, when a resumed run builds its loaders:
            worker processes prefetch before Lightning's first :meth:`set_epoch`).
        shuffle: ``False`` keeps the dataset's order (a sampler only to carry the epoch).
        tag_epoch: yield ``(index, epoch, draw)``.
    """

    def __init__(self, length: int, seed: int, epoch: int = 0, shuffle: bool = True,
                 tag_epoch: bool = False) -> None:
        self.length, self.seed, self.epoch = length, seed, epoch
        self.shuffle, self.tag_epoch = shuffle, tag_epoch
        self._draws = 0

    def set_epoch(self, epoch: int) -> None:
        # Only a new epoch restarts the pass count: Lightning may draw the first pass of an
        # epoch (prefetching workers) before it calls set_epoch with that same epoch.
        if epoch != self.epoch:
            self.epoch, self._draws = epoch, 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self):  # type: ignore[no-untyped-def]
        if self.shuffle:
            generator = _generator(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if not self.tag_epoch:
            return iter(order)
        draw, self._draws = self._draws, self._draws + 1
        return iter([(i, self.epoch, draw) for i in order])


def make_splits(data: ImageData, request: ForgetRequest, *, seed: int, unseen_fraction: float,
                val_fraction: float) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Every split of a dataset and forget request, ``{split: (images, targets, ids)}``:
    deterministic in ``seed`` (see :class:`~unlearn_pl.data.UnlearningDataModule`)."""
    flat = request.flat()
    forget_classes, forget_groups = flat.get("forget_classes"), flat.get("forget_groups")
    n = len(data.train_targets)
    all_ids = torch.arange(n)
    unseen: tuple[Tensor, Tensor, Tensor]
    if data.test_images is not None and data.test_targets is not None:
        pool = all_ids
        unseen = (data.test_images, data.test_targets, torch.arange(len(data.test_targets)))
        unseen_groups = data.test_groups
    else:
        held = _stratified_subset(data.train_targets, unseen_fraction, seed,
                                  data.task)
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        pool = keep.nonzero().flatten()
        unseen = (data.train_images[held], data.train_targets[held], held)
        unseen_groups = data.train_groups[held] if data.train_groups is not None else None
    forget = request.select(data.train_targets, pool, task=data.task,
                                        num_classes=len(data.classes),
                                        groups=data.train_groups, seed=seed)
    is_forget = torch.zeros(n, dtype=torch.bool)
    is_forget[forget] = True
    retain = pool[~is_forget[pool]]

    def take(idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return data.train_images[idx], data.train_targets[idx], idx

    validation: tuple[Tensor, Tensor, Tensor]
    if data.val_images is not None and data.val_targets is not None:  # its own split
        validation = (data.val_images, data.val_targets, torch.arange(len(data.val_targets)))
        validation_groups = data.val_groups
    else:
        # No validation split of its own: carve a seeded share of the held-out pool off,
        # disjoint from the test split, stratified by class (by group for group requests,
        # so the forgotten ones are in both), so no decision made while training sees a test
        # sample.
        task: Task
        if forget_groups is not None and unseen_groups is not None:
            strata, task = unseen_groups, "multiclass"
        else:
            strata, task = unseen[1], data.task
        carved = _stratified_subset(strata, val_fraction, seed + VALIDATION_SEED,
                                    task)
        in_validation = torch.zeros(len(unseen[2]), dtype=torch.bool)
        in_validation[carved] = True
        validation = (unseen[0][in_validation], unseen[1][in_validation],
                      unseen[2][in_validation])
        unseen = (unseen[0][~in_validation], unseen[1][~in_validation],
                  unseen[2][~in_validation])
        if unseen_groups is not None:
            validation_groups = unseen_groups[in_validation]
            unseen_groups = unseen_groups[~in_validation]
        else:
            validation_groups = None
    splits = {"train": take(pool), "retain": take(retain), "forget": take(forget),
              **_held_out_splits(unseen, unseen_groups, "held-out", forget_classes, forget_groups)}
    # A carved split too small to hold every part (a class with one held-out sample) is
    # refused at setup, and only when the run validates (_check_attack_sizes).
    own = data.val_images is not None and data.val_targets is not None
    probe = _held_out_splits(validation, validation_groups, "validation", forget_classes,
                             forget_groups, strict=own)
    if own and set(probe) != set(splits) & set(HELD_OUT_SPLITS):
        raise ValueError("the validation split cannot be divided into retain_test / "
                         "forget_test like the test split (no group ids, or no sample of the "
                         "forgotten groups): set val_split: null to carve a validation split "
                         "off the test split instead")
    splits.update({f"{VALIDATION_PREFIX}{name}": value for name, value in probe.items()})
    return splits



def _held_out_splits(unseen: tuple[Tensor, Tensor, Tensor], groups: Tensor | None, label: str,
                     forget_classes: list[int] | None, forget_groups: list[int] | None,
                     strict: bool = True) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """``unseen``, and for class-wise (or group-wise, where the held-out data holds the
    forgotten groups) requests its ``retain_test`` / ``forget_test`` parts; ``strict``
    refuses held-out data without a sample of the forgotten classes."""
    held = {"unseen": unseen}
    forgotten = None
    if forget_classes is not None:
        forgotten = torch.isin(unseen[1], torch.tensor(forget_classes))
        if strict and not forgotten.any():
            hint = (" (set val_split: null to carve a validation split off the test split, "
                    "or a larger val_fraction)") if label == "validation" else ""
            raise ValueError(f"the {label} split has no sample of the forgotten classes, "
                             f"so forgetting cannot be measured on unseen data{hint}")
    elif forget_groups is not None and groups is not None:
        forgotten = torch.isin(groups, torch.tensor(forget_groups))
    if forgotten is not None and forgotten.any():
        held["forget_test"] = tuple(t[forgotten] for t in unseen)  # type: ignore[assignment]
        held["retain_test"] = tuple(t[~forgotten] for t in unseen)  # type: ignore[assignment]
    return held



def _processed_epochs(trainer: Trainer) -> int:
    """The epoch count Lightning's fit loop passes to ``set_epoch`` (its processed epochs)."""
    return int(trainer.fit_loop.epoch_progress.current.processed)  # type: ignore[attr-defined]


def _convert_channels(images: Tensor, channels: int) -> Tensor:
    if channels == 3 and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    raise ValueError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")


def _stratified_subset(targets: Tensor, fraction: float, seed: int, task: Task) -> Tensor:
    """Seeded ids of ``fraction`` of the samples, the same share of every class."""
    generator = _generator(seed)
    if task != "multiclass":
        n = len(targets)
        return torch.randperm(n, generator=generator)[: max(1, round(fraction * n))].sort().values
    chosen = []
    for label in targets.unique():
        members = (targets == label).nonzero().flatten()
        count = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)
