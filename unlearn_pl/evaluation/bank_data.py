"""The bank's batches: every member's own shuffled order and own augmentation of each retain
sample, gathered from the datamodule's in-memory tensors into one ``(K, B, ...)`` batch, as
:class:`~unlearn_pl.data.UnlearningDataModule` would give each member's retrain run."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from unlearn_pl.data import UnlearningDataModule
from unlearn_pl.data.core import ImageTensorDataset, augmentation_seed
from unlearn_pl.data.datamodule import EpochShuffleSampler
from unlearn_pl.evaluation.ensemble import (  # noqa: F401  (re-exported)
    EnsembleTrain,
    StackedNetworks,
    member_losses,
)

#: The split a bank trains on: the retain set, as the retrain recipe does.
RETRAIN_SPLIT = "retain"


class _MemberOrders(Sampler[tuple[Any, ...]]):
    """Position ``i`` of an epoch → every member's ``i``-th sample in its own shuffled order
    (the :class:`EpochShuffleSampler` its sequential run would use, ``(index, epoch, pass)``
    items when augmenting). ``set_epoch`` reaches every member's sampler."""

    def __init__(self, length: int, seeds: Sequence[int], epoch: int, tag_epoch: bool) -> None:
        self.samplers = [EpochShuffleSampler(length, seed, epoch=epoch, tag_epoch=tag_epoch)
                         for seed in seeds]
        self.length = length

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(*(iter(sampler) for sampler in self.samplers), strict=True)


def _pass_through(batch: Any) -> Any:
    return batch  # _MemberBatches.__getitems__ already returns whole batches


class _Crop:
    """``v2.RandomCrop`` (without ``pad_if_needed``) on a batch, each sample's offsets drawn as
    the transform draws them."""

    def __init__(self, transform: v2.RandomCrop, height: int, width: int) -> None:
        left, right, top, bottom = transform.padding if transform.padding is not None else [0] * 4
        self.pad = (left, right, top, bottom)  # torch.nn.functional.pad order
        self.mode = {"edge": "replicate"}.get(transform.padding_mode, transform.padding_mode)
        fills = set(transform._fill.values()) if isinstance(transform._fill, dict) else set()
        fill = fills.pop() if len(fills) == 1 else None
        self.fill = float(fill) if isinstance(fill, int | float) else math.nan
        self.size = tuple(transform.size)
        self.range = (height + top + bottom - self.size[0] + 1,
                      width + left + right - self.size[1] + 1)

    def supported(self) -> bool:
        return (self.mode in ("constant", "reflect", "replicate") and min(self.range) >= 1
                and (self.mode != "constant" or not math.isnan(self.fill)))

    def draw(self, generator: torch.Generator) -> tuple[int, int]:
        top = int(torch.randint(0, self.range[0], size=(), generator=generator)) \
            if self.range[0] > 1 else 0
        left = int(torch.randint(0, self.range[1], size=(), generator=generator)) \
            if self.range[1] > 1 else 0
        return top, left

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        if any(self.pad):
            images = (F.pad(images, self.pad, value=self.fill) if self.mode == "constant"
                      else F.pad(images, self.pad, mode=self.mode))
        n, channels = images.shape[:2]
        rows = params[:, 0, None] + torch.arange(self.size[0])
        cols = params[:, 1, None] + torch.arange(self.size[1])
        return images[torch.arange(n)[:, None, None, None], torch.arange(channels)[:, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]]


class _Flip:
    """``v2.RandomHorizontalFlip`` on a batch."""

    def __init__(self, transform: v2.RandomHorizontalFlip) -> None:
        self.p = float(transform.p)

    def supported(self) -> bool:
        return True

    def draw(self, generator: torch.Generator) -> tuple[int]:
        # The transform returns its input when torch.rand(1) >= p.
        return (int(bool(torch.rand(1, generator=generator) < self.p)),)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        flip = params[:, 0].bool()
        return torch.where(flip[:, None, None, None], images.flip(-1), images)


class _BatchedAugmentation:
    """A datamodule's training transform applied to a whole batch, for the transforms the shipped
    datamodules use (``v2.RandomCrop``, ``v2.RandomHorizontalFlip``, a ``v2.Compose`` of them).

    Each sample's random numbers are drawn as the transform draws them, from a generator seeded
    with :func:`~unlearn_pl.data.core.augmentation_seed` of ``(seed, epoch, pass, sample id)``,
    so the result equals :class:`~unlearn_pl.data.core.ImageTensorDataset`'s sample by sample;
    :meth:`build` checks that on a few samples and returns ``None`` (per-sample augmentation)
    for any other transform or any difference."""

    def __init__(self, ops: list[_Crop | _Flip]) -> None:
        self.ops = ops
        self.generator = torch.Generator()

    @classmethod
    def build(cls, transform: Callable[[Tensor], Tensor],
              check: ImageTensorDataset) -> _BatchedAugmentation | None:
        # Exact types only: a subclass may draw or transform differently.
        parts: list[Any] = [transform]
        if type(transform) is v2.Compose:
            parts = list(transform.transforms)  # type: ignore[attr-defined]
        height, width = check.images.shape[-2:]
        ops: list[_Crop | _Flip] = []
        for part in parts:
            op: _Crop | _Flip
            if type(part) is v2.RandomCrop and not part.pad_if_needed:
                op = _Crop(part, height, width)
                height, width = op.size
            elif type(part) is v2.RandomHorizontalFlip:
                op = _Flip(part)
            else:
                return None
            if not op.supported():
                return None
            ops.append(op)
        batched = cls(ops)
        # The equivalence with the per-sample transform, checked on a few samples.
        count = min(8, len(check))
        seeds = [augmentation_seed(check.seed or 0, 0, 0, int(i)) for i in check.ids[:count]]
        expected = torch.stack([check[(i, 0, 0)][0] for i in range(count)])
        got = batched(check.images[:count].float().div_(255), seeds)
        return batched if got.shape == expected.shape and torch.equal(got, expected) else None

    def __call__(self, images: Tensor, seeds: Sequence[int]) -> Tensor:
        draws = []
        for seed in seeds:
            self.generator.manual_seed(seed)
            draws.append([op.draw(self.generator) for op in self.ops])
        for index, op in enumerate(self.ops):
            params = torch.tensor([draw[index] for draw in draws], dtype=torch.long)
            images = op.apply(images, params)
        return images


class _MemberBatches(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Whole training batches of every member gathered from one split's in-memory tensors:
    ``__getitems__`` takes the positions a batch sampler draws from :class:`_MemberOrders` and
    returns ``(images K × B × C × H × W, targets K × B, ids K × B)``, member ``k``'s samples
    augmented with its own seed (batched where :class:`_BatchedAugmentation` applies, else
    sample by sample through the datamodule's own dataset class)."""

    def __init__(self, images: Tensor, targets: Tensor, ids: Tensor, seeds: Sequence[int],
                 transform: Callable[[Tensor], Tensor] | None) -> None:
        self.images, self.targets, self.ids = images, targets, ids
        self.seeds = list(seeds)
        self.transform = transform
        self.per_member = [ImageTensorDataset(images, targets, ids, transform, seed=seed)
                           for seed in self.seeds]
        self.batched = (_BatchedAugmentation.build(transform, self.per_member[0])
                        if transform is not None else None)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: tuple[Any, ...]) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(t[:, 0] for t in self.__getitems__([item]))  # type: ignore[return-value]

    def __getitems__(self, items: list[tuple[Any, ...]]) -> tuple[Tensor, Tensor, Tensor]:
        members, batch = len(self.seeds), len(items)
        if self.transform is not None and self.batched is None:  # sample by sample
            samples = [[self.per_member[k][item[k]] for item in items] for k in range(members)]
            images = torch.stack([torch.stack([s[0] for s in row]) for row in samples])
            targets = torch.stack([torch.stack([s[1] for s in row]) for row in samples])
            ids = torch.stack([torch.stack([s[2] for s in row]) for row in samples])
            return images, targets, ids
        tagged = self.transform is not None
        index = torch.tensor([[item[k][0] if tagged else item[k] for item in items]
                              for k in range(members)], dtype=torch.long)
        flat = index.reshape(-1)
        images = self.images[flat].float().div_(255)
        if self.batched is not None:
            seeds = [augmentation_seed(self.seeds[k], item[k][1], item[k][2],
                                       int(self.ids[item[k][0]]))
                     for k in range(members) for item in items]
            images = self.batched(images, seeds)
        return (images.view(members, batch, *images.shape[1:]),
                self.targets[flat].view(members, batch, *self.targets.shape[1:]),
                self.ids[flat].view(members, batch))


def bank_loader(datamodule: UnlearningDataModule, seeds: Sequence[int], *,
                split: str = RETRAIN_SPLIT, batch_size: int | None = None) -> DataLoader:
    """The training loader of an ensemble: per step, every member's batch of ``split``.

    Member ``k`` sees the batches a run with ``shuffle_seed = seeds[k]`` sees through
    ``datamodule.dataloader(split, train=True)``: its order, its batch size, its augmentation
    (when the datamodule augments). Lightning's ``set_epoch`` reaches every member's order.

    Args:
        datamodule: the dataset and forget request (its splits are in memory).
        seeds: the members' shuffle (and augmentation) seeds.
        split: the training split (``retain`` for the retrain recipe).
        batch_size: default the datamodule's ``batch_size``.

    The orders start at epoch 0: the loader of a fresh fit (:func:`train_bank` never resumes).
    """
    images, targets, ids = datamodule.splits[split]
    transform = datamodule.train_transform() if datamodule.augment else None
    dataset = _MemberBatches(images, targets, ids, seeds, transform)
    sampler = _MemberOrders(len(ids), seeds, epoch=0, tag_epoch=transform is not None)
    workers = datamodule.num_workers
    return DataLoader(dataset, batch_size=batch_size or datamodule.batch_size, sampler=sampler,
                      collate_fn=_pass_through, num_workers=workers,
                      persistent_workers=workers > 0)


# --------------------------------------------------------------------------- the bank
