"""A bank of retrain networks trained at once: one ensemble module in one Lightning ``Trainer``.

The privacy audit (:func:`unlearn_pl.evaluation.audit_method`) reads every method's per-example
signals against a bank of K retrain networks: the retrain recipe on the same split with K other
seeds. Trained one after another, each pays a whole run (the CLI, the trainer, a validation
probe every epoch, its own data pipeline); :func:`train_bank` trains the K networks as one
:class:`EnsembleTrain` instead: the K copies' parameters and buffers are stacked along a leading
member dimension (``torch.func.stack_module_state``) and one forward runs all of them with
``torch.func.vmap(functional_call)`` (the "model ensembling" recipe of the ``torch.func`` docs).

Member ``k`` is the network the retrain recipe trains with seed ``seeds[k]``:

* the same initialisation (``torch.manual_seed(seeds[k])`` before the network is built, as
  ``seed_everything`` does before the CLI builds it);
* the same batches: its own shuffled order (:class:`~unlearn_pl.data.datamodule.EpochShuffleSampler`
  with ``shuffle_seed = seeds[k]``) and its own augmentation of each sample (seeded by
  ``(seeds[k], epoch, pass, sample id)``, as :class:`~unlearn_pl.data.core.ImageTensorDataset`
  does), gathered from the datamodule's in-memory tensors;
* the same BatchNorm: the stacked running statistics are passed through ``functional_call``, so
  each member's in-place update hits its own slice (batched tensors under ``vmap``);
* the same update: the loss is the sum of the members' mean losses (each member's gradient is its
  own), and SGD / Adam / AdamW with weight decay and the one-cycle or cosine schedule act element
  by element, so one optimiser over the stacked tensors equals K separate ones.

Only the order of floating-point operations differs (a grouped convolution instead of K), so a
member matches its sequential twin to float tolerance, not bit for bit. Gradient clipping by norm
couples the members (one global norm) and is refused; with ``16-mixed`` precision the gradient
scaler is shared, so a step one member overflows is skipped for all.

What it saves: on a GPU the K small networks' kernels become one launch each; on a CPU the step
itself is compute-bound, so the gain is the per-run overhead (measured by
``benchmarks/bench_bank.py``; results in the README).
"""

from __future__ import annotations

import inspect
import itertools
import math
import multiprocessing
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
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
from unlearn_pl.evaluation.evaluate import evaluate, sample_losses, sample_signals
from unlearn_pl.methods import Train, UnlearningModule
from unlearn_pl.utils import atomic_save_checkpoint

__all__ = ["EnsembleTrain", "StackedNetworks", "bank_loader", "member_losses", "train_bank"]

#: The training split of the retrain recipe.
RETRAIN_SPLIT = "retain"
#: Hyperparameters the CLI links from the datamodule; a recipe that gives them must agree.
LINKED = ("num_classes", "in_channels", "normalization", "task")


# --------------------------------------------------------------------------- the stacked networks
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
def _recipe(datamodule: UnlearningDataModule, recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    """The retrain recipe's ``Train`` arguments: ``recipe`` (e.g. a retrain module's
    ``hparams``) with the datamodule's linked values; anything inconsistent is refused."""
    given = {k: v for k, v in dict(recipe or {}).items() if not k.startswith("_")}
    given.pop("seed", None)  # each member has its own
    if given.pop("train_on", "retain") != "retain":
        raise ValueError("a bank holds retrain networks: the recipe must train on the retain set "
                         "(train_on: retain)")
    if given.pop("original", None) is not None:
        raise ValueError("a retrain network starts from a random initialisation: the recipe "
                         "must not name an original network")
    linked = {"num_classes": datamodule.num_classes, "in_channels": datamodule.num_channels,
              "normalization": datamodule.normalization, "task": datamodule.task}
    mismatched = {k: (given[k], v) for k, v in linked.items()
                  if given.get(k) is not None and _plain(given[k]) != _plain(v)}
    if mismatched:
        detail = ", ".join(f"{k}: recipe {a} vs data {b}" for k, (a, b) in mismatched.items())
        raise ValueError(f"the recipe's network does not fit the datamodule ({detail}): give "
                         "the recipe of a retrain network of this dataset")
    accepted = _arguments(Train) | _arguments(UnlearningModule)
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ValueError(f"unknown recipe argument(s) {unknown}: give Train's arguments (arch, "
                         "width, lr, scheduler, ...)")
    return {**given, **linked}


def _arguments(cls: type) -> set[str]:
    return set(inspect.signature(cls).parameters) - {"kwargs"}


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


class _SaveAfterTest(Callback):
    """Writes the evaluated module's Lightning checkpoint (atomically) when its test ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        atomic_save_checkpoint(trainer, self.path)


def train_bank(datamodule: UnlearningDataModule, references: int, seeds: Sequence[int],
               epochs: int, *, recipe: Mapping[str, Any] | None = None,
               checkpoints: Sequence[str | os.PathLike[str]] | None = None,
               trainer_kwargs: Mapping[str, Any] | None = None,
               processes: int = 1) -> list[dict[str, Any]]:
    """Train a bank of ``references`` retrain networks as one ensemble and evaluate each.

    One :class:`EnsembleTrain` is fitted in one ``Trainer`` for ``epochs`` epochs on the
    retain set (:func:`bank_loader`: member ``k`` has its own order and augmentation); then
    every member is evaluated as an ordinary :class:`~unlearn_pl.methods.Train` module with
    :func:`~unlearn_pl.evaluation.evaluate`. Member ``k`` is the network a retrain run with
    ``seed_everything(seeds[k])``, ``shuffle_seed = seeds[k]`` and ``model.seed = seeds[k]``
    trains, to float tolerance.

    Args:
        datamodule: the dataset and forget request (its ``batch_size`` and ``augment`` are the
            recipe's).
        references: K, the size of the bank (at least 2).
        seeds: K distinct seeds, one per member (the runner's
            :func:`~unlearn_pl.benchmark.bank_seed`).
        epochs: training epochs of every member.
        recipe: the retrain recipe's :class:`~unlearn_pl.methods.Train` arguments (a retrain
            module's ``hparams`` will do): ``arch``, ``width``, ``lr``, ``scheduler``, ...; the
            datamodule's ``num_classes``, ``in_channels``, ``normalization`` and ``task`` are
            filled in (and must agree when given). Default: ``Train``'s defaults.
        checkpoints: one path per member: its Lightning checkpoint is written there (atomically)
            after its evaluation, loadable with ``Train.load_from_checkpoint`` or as an
            ``original``; it records the member's share of the fit time and its forget request.
        trainer_kwargs: arguments of the ensemble's ``Trainer`` (accelerator, precision, ...);
            its ``accelerator`` and ``precision`` also serve the evaluations. One device only.
        processes: split the members into this many ensembles of at least 2, each trained and
            evaluated in its own process on ``torch.get_num_threads() // processes`` threads at
            once: the way to use a CPU's cores for networks too small to keep several threads
            busy. ``fit_seconds`` is then the slowest process's fit divided by K.

    Returns:
        One record per member, in seed order, shaped like the comparison runner's reference
        records: every number of the test (``acc_*``, ``loss_*``, ``mia``, ``mia_auc``,
        ``forgetting_score``, ``nomus``), ``fit_seconds`` (the ensemble's fit time divided by
        K), ``wall_seconds`` (likewise), ``bank_fit_seconds`` (the whole fit), ``member_seed``,
        ``class_path``, ``nonmember_split``, the per-sample ``losses`` and ``signals`` (what
        :func:`~unlearn_pl.evaluation.audit_method` reads) and ``checkpoint`` (or ``None``).

    Raises:
        ValueError: fewer than 2 references, seeds not K distinct values, fewer than 1 epoch,
            ``checkpoints`` not K paths, a recipe that is not a retrain of this dataset's
            network, gradient clipping by norm, several devices, or ``processes`` that would
            leave an ensemble of fewer than 2.
    """
    if references < 2:
        raise ValueError(f"a bank needs at least 2 references, got {references}: the audit "
                         "reads a spread over references")
    seeds = [int(s) for s in seeds]
    if len(seeds) != references or len(set(seeds)) != references:
        raise ValueError(f"give {references} distinct seeds, one per reference; got {seeds}")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    paths = [Path(p) for p in checkpoints] if checkpoints is not None else None
    if paths is not None and len(paths) != references:
        raise ValueError(f"give {references} checkpoint paths, one per reference; got "
                         f"{len(paths)}")
    if processes < 1 or references < 2 * processes:
        raise ValueError(f"processes={processes} for a bank of {references}: give 1 to "
                         f"{references // 2} processes (each trains an ensemble of at least 2)")
    arguments = _recipe(datamodule, recipe)
    if processes > 1:
        return _train_in_processes(datamodule, seeds, epochs, arguments, paths,
                                   dict(trainer_kwargs or {}), processes)
    network_args = {k: v for k, v in arguments.items() if k in _arguments(EnsembleTrain)}
    ensemble = EnsembleTrain(seeds, **network_args)
    fit_kwargs: dict[str, Any] = dict(logger=False, enable_checkpointing=False,
                                      enable_progress_bar=False, enable_model_summary=False,
                                      num_sanity_val_steps=0, limit_val_batches=0)
    fit_kwargs.update(trainer_kwargs or {})
    fit_kwargs["max_epochs"] = epochs
    with tempfile.TemporaryDirectory(prefix="unlearn_pl_bank_") as scratch:
        fit_kwargs.setdefault("default_root_dir", scratch)
        trainer = Trainer(**fit_kwargs)
        if trainer.world_size > 1:
            raise ValueError("train_bank runs in one process (the ensemble already batches the "
                             "members); give one device")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            start = time.perf_counter()
            trainer.fit(ensemble, train_dataloaders=bank_loader(datamodule, seeds))
            fit_seconds = time.perf_counter() - start
    evaluation_kwargs = {k: v for k, v in (trainer_kwargs or {}).items()
                         if k in ("accelerator", "precision")}
    nonmember = datamodule.mia_nonmember_split
    records = []
    for index, seed in enumerate(seeds):
        module = Train(train_on="retain", **arguments, seed=seed)
        module.network.load_state_dict(
            {k: v.cpu() for k, v in ensemble.member_state_dict(index).items()})
        module.weights_source = "trained"
        module.fit_seconds = fit_seconds / references  # each member's share of the fit
        callbacks = [_SaveAfterTest(paths[index])] if paths is not None else []
        results = evaluate(module, datamodule,
                           trainer_kwargs={**evaluation_kwargs, "callbacks": callbacks})
        losses = sample_losses(module, ("forget", nonmember))
        records.append({**results, "fit_seconds": fit_seconds / references,
                        "wall_seconds": fit_seconds / references, "validation_seconds": 0.0,
                        "bank_fit_seconds": fit_seconds, "member_seed": seed,
                        "class_path": f"{Train.__module__}.{Train.__name__}",
                        "nonmember_split": nonmember,
                        "losses": {"forget": [round(v, 6) for v in losses["forget"]],
                                   "nonmember": [round(v, 6) for v in losses[nonmember]]},
                        "signals": sample_signals(module, nonmember),
                        "checkpoint": str(paths[index]) if paths is not None else None})
    return records


def _train_share(args: tuple[Any, ...]) -> list[dict[str, Any]]:
    datamodule, seeds, epochs, recipe, paths, trainer_kwargs, threads = args
    torch.set_num_threads(threads)
    return train_bank(datamodule, len(seeds), seeds, epochs, recipe=recipe, checkpoints=paths,
                      trainer_kwargs=trainer_kwargs)


def _train_in_processes(datamodule: UnlearningDataModule, seeds: list[int], epochs: int,
                        recipe: Mapping[str, Any], paths: list[Path] | None,
                        trainer_kwargs: dict[str, Any], processes: int) -> list[dict[str, Any]]:
    """:func:`train_bank` of contiguous shares of the members in ``processes`` worker
    processes at once (forked where the platform allows: nothing to import again)."""
    bounds = [round(i * len(seeds) / processes) for i in range(processes + 1)]
    threads = max(1, torch.get_num_threads() // processes)
    shares = [(datamodule, seeds[a:b], epochs, dict(recipe),
               paths[a:b] if paths is not None else None, trainer_kwargs, threads)
              for a, b in itertools.pairwise(bounds)]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context(method)) as pool:
        results = list(pool.map(_train_share, shares))
    slowest = max(share[0]["bank_fit_seconds"] for share in results)
    return [{**record, "fit_seconds": slowest / len(seeds), "wall_seconds": slowest / len(seeds),
             "bank_fit_seconds": slowest} for share in results for record in share]
