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
import multiprocessing
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from unlearn_pl.data import UnlearningDataModule
from unlearn_pl.evaluation.bank_data import RETRAIN_SPLIT, bank_loader  # noqa: F401
from unlearn_pl.evaluation.ensemble import (  # noqa: F401  (re-exported)
    EnsembleTrain,
    StackedNetworks,
    member_losses,
)
from unlearn_pl.evaluation.evaluate import evaluate, sample_losses, sample_signals
from unlearn_pl.methods import Train, UnlearningModule
from unlearn_pl.utils import atomic_save_checkpoint

__all__ = ["EnsembleTrain", "StackedNetworks", "bank_loader", "member_losses", "train_bank"]

#: Hyperparameters the CLI links from the datamodule; a recipe that gives them must agree.
LINKED = ("num_classes", "in_channels", "normalization", "task")


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
              "normalization": datamodule.normalization, "task": datamodule.task,
              "input_size": datamodule.input_size}
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
