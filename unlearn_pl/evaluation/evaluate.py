"""Evaluate a network, module or checkpoint: every number of the test stage, and the
per-sample values every report and table reads.

:func:`evaluate` runs the test stage of :class:`~unlearn_pl.methods.UnlearningModule` (accuracy
on D_r, D_f, D_u and, class-wise, Dr_test / Df_test; the MUFAC / DLFD membership inference attack;
the forgetting score, paper scale (:func:`~unlearn_pl.metrics.forgetting_score`); NoMUS; the
unlearning time) on any network, module or checkpoint and returns the numbers the CLI logs.
:func:`sample_losses` and :func:`sample_signals` read the module's one per-sample collector
(``last_samples``: each sample once, also under DDP).
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from unlearn_pl.data import UnlearningDataModule
from unlearn_pl.data.datamodule import POPULATION_SPLIT
from unlearn_pl.methods.base import UnlearningModule
from unlearn_pl.networks import Classifier, load_network_weights, network_name

__all__ = ["check_evaluation_splits", "evaluate", "load_checkpoint_for_evaluation",
           "sample_losses", "sample_signals"]


def _check_finite(results: Mapping[str, float], what: str) -> None:
    bad = {k: v for k, v in results.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"{what}: non-finite evaluation results {bad}; the network's outputs "
                         "are not finite (a diverged model), so there is nothing to report")


def _datamodule(trainer: Trainer) -> UnlearningDataModule:
    datamodule = getattr(trainer, "datamodule", None)
    if not isinstance(datamodule, UnlearningDataModule):
        raise RuntimeError("the unlearning evaluation needs an UnlearningDataModule: it names the "
                           "forget, retain and unseen splits")
    return datamodule


def check_evaluation_splits(datamodule: UnlearningDataModule) -> None:
    """Raise a clear error when a split the evaluation needs holds no sample.

    An empty split would otherwise surface as a NaN mean with a warning, or an attack error naming
    neither the split nor the fix.
    """
    empty = [s for s in datamodule.eval_splits if len(datamodule.splits[s][2]) == 0]
    if empty:
        raise ValueError(f"evaluation split(s) {empty} hold no sample: accuracy and the "
                         "membership inference attack need samples in every split; check the "
                         "forget request and the held-out data of the dataset")


def sample_losses(module: UnlearningModule, splits: Sequence[str]) -> dict[str, list[float]]:
    """The per-sample losses of ``splits`` in the module's last evaluation: every sample once (the
    repeats DDP pads with dropped), in id order, equal on every rank. The report, its plot and the
    comparison runner all read them from here.

    Raises:
        RuntimeError: the module has not evaluated these splits.
    """
    missing = [s for s in splits if s not in module.last_samples]
    if missing:
        raise RuntimeError(f"{type(module).__name__} has no per-sample values of {missing}: "
                           "run Trainer.test first")
    return {s: module.last_samples[s]["loss"].tolist() for s in splits}


def sample_signals(module: UnlearningModule, nonmember: str) -> dict[str, Any]:
    """The per-sample logit-scaled confidence of the forget split, of the attack's non-member
    split and of RMIA's population (the validation split's held-out samples, when the last
    evaluation was a test) in the module's last evaluation, by sample id (rounded to 6
    decimals): ``{"forget": {"ids", "signal"}, "nonmember": {...}, "population": {...}}``, what
    the privacy audit reads."""
    out = {}
    for key, split in (("forget", "forget"), ("nonmember", nonmember),
                       ("population", POPULATION_SPLIT)):
        if key == "population" and split not in module.last_samples:
            continue
        samples = module.last_samples[split]
        out[key] = {"ids": samples["ids"].tolist(),
                    "signal": [round(v, 6) for v in samples["signal"].tolist()]}
    return out


class _TestRun(Callback):
    """Checks the evaluation splits before a test run starts and hands over the evaluation the
    module computed in this run (never a stale one from an earlier run)."""

    def __init__(self) -> None:
        self._previous: object = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "test":
            check_evaluation_splits(_datamodule(trainer))

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Identity of the module's previous evaluation, to tell a fresh one from a stale one.
        self._previous = getattr(pl_module, "last_evaluation", None)

    def results(self, pl_module: LightningModule) -> dict[str, float]:
        """The evaluation the module computed in this test run."""
        results = getattr(pl_module, "last_evaluation", None)
        if results is None or results is self._previous:
            raise RuntimeError(f"{type(pl_module).__name__} produced no test evaluation "
                               "(UnlearningModule.on_test_epoch_end sets last_evaluation)")
        return dict(results)

    def losses(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, list[float]]:
        """Per-sample losses of the forget split and of the attack's non-member split."""
        nonmember = _datamodule(trainer).mia_nonmember_split
        return sample_losses(pl_module, ("forget", nonmember))  # type: ignore[arg-type]

    def signals(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Per-sample signals of the forget split and the attack's non-members."""
        nonmember = _datamodule(trainer).mia_nonmember_split
        return sample_signals(pl_module, nonmember)  # type: ignore[arg-type]


def load_checkpoint_for_evaluation(path: str | os.PathLike[str]) -> tuple[UnlearningModule, str]:
    """A checkpoint of any method as a plain :class:`UnlearningModule` ready for evaluation.

    Evaluation depends only on the network and the base hyperparameters (task, attack feature and
    seed), so the checkpoint's network weights are loaded into a base module: this works for every
    method, including ones whose class is not importable here. The unlearning time and the forget
    set the checkpoint was unlearned for are restored from it (evaluating it on another forget
    request is refused), and its original is never read.

    Args:
        path: a Lightning checkpoint written by an unlearn_pl run.

    Returns:
        ``(module, method)``, the method's class path as the CLI recorded it, or ``"unknown"``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an unlearn_pl Lightning checkpoint, or its network does not
            load (e.g. a widened head saved mid-run).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "arch" not in hparams:
        raise ValueError(f"{path} is not a Lightning checkpoint of an unlearn_pl run (it has no "
                         "network hyperparameters); pass a checkpoint or a report.json")
    accepted = inspect.signature(UnlearningModule.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in accepted and k != "original"}
    module = UnlearningModule(**kwargs)
    load_network_weights(module.network, Path(path), network_name(kwargs))
    module.restore_record(checkpoint)
    return module, str(hparams.get("_class_path", "unknown"))


def _as_module(network_or_module: Classifier | UnlearningModule | str | os.PathLike[str],
               datamodule: UnlearningDataModule) -> UnlearningModule:
    if isinstance(network_or_module, UnlearningModule):
        return network_or_module
    if isinstance(network_or_module, str | os.PathLike):
        return load_checkpoint_for_evaluation(network_or_module)[0]
    if not isinstance(network_or_module, Classifier):
        raise TypeError("evaluate() takes a Classifier, an UnlearningModule or a checkpoint path, "
                        f"got {type(network_or_module).__name__}")
    network = network_or_module
    if network.num_classes != datamodule.num_classes:
        raise ValueError(f"the network has {network.num_classes} outputs but the dataset has "
                         f"{datamodule.num_classes} classes")
    # The placeholder tiny_cnn is replaced at once; only the evaluation settings are kept.
    module = UnlearningModule(arch="tiny_cnn", num_classes=network.num_classes,
                              in_channels=network.normalize.get_buffer("mean").shape[1],
                              task=datamodule.task, width=0.1)
    module.network = network
    module.weights_source = "given"
    return module


def _evaluate(network_or_module: Classifier | UnlearningModule | str | os.PathLike[str],
              datamodule: UnlearningDataModule, trainer_kwargs: dict[str, Any] | None
              ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    module = _as_module(network_or_module, datamodule)
    collector = _TestRun()
    kwargs: dict[str, Any] = dict(devices=1, logger=False, enable_checkpointing=False,
                                  enable_progress_bar=False, enable_model_summary=False)
    kwargs.update(trainer_kwargs or {})
    kwargs["callbacks"] = [*list(kwargs.get("callbacks") or []), collector]
    previous_trainer = datamodule.trainer
    with tempfile.TemporaryDirectory(prefix="unlearn_pl_eval_") as scratch:
        # The datamodule writes splits.json into the run folder: keep it out of the caller's cwd.
        kwargs.setdefault("default_root_dir", scratch)
        trainer = Trainer(**kwargs)
        if trainer.world_size > 1:
            # Spawned workers would keep the results; the report callback gathers over ranks.
            raise ValueError("evaluate() runs in one process; evaluate on several devices with "
                             "`unlearn-pl test` and read its report.json")
        try:
            trainer.test(module, datamodule=datamodule, verbose=False)
        finally:
            datamodule.trainer = previous_trainer
        losses = collector.losses(trainer, module)
        signals = collector.signals(trainer, module)
    results = collector.results(module)
    _check_finite(results, type(module).__name__)
    return results, losses, signals


def evaluate(network_or_module: Classifier | UnlearningModule | str | os.PathLike[str],
             datamodule: UnlearningDataModule, *,
             trainer_kwargs: dict[str, Any] | None = None) -> dict[str, float]:
    """Evaluate a network, module or checkpoint on a datamodule's full test splits.

    Runs ``Trainer.test`` (eval mode, test transform, full splits) and returns what the CLI logs,
    without the ``test/`` prefix: ``acc_{retain,forget,unseen}`` (and, class-wise,
    ``acc_{retain,forget}_test``), the matching ``loss_*``, ``mia`` and ``mia_auc`` (members D_f,
    non-members D_u, or Df_test for class-wise requests), ``forgetting_score`` (paper scale, see
    :func:`unlearn_pl.metrics.forgetting_score`), ``nomus`` and ``fit_seconds`` (0 for a plain
    network).

    Args:
        network_or_module: a plain :class:`~unlearn_pl.networks.Classifier` (wrapped in a base
            :class:`UnlearningModule` with the dataset's task and the default attack settings),
            any :class:`UnlearningModule`, or the path of a checkpoint (see
            :func:`load_checkpoint_for_evaluation`).
        datamodule: the dataset and forget request.
        trainer_kwargs: overrides of the evaluation ``Trainer`` (default: one device, no logger,
            no checkpoints, a scratch ``default_root_dir``).

    Returns:
        ``{name: value}`` as plain floats.

    Raises:
        ValueError: an empty evaluation split, too few forget or non-member samples for the
            attack, or non-finite outputs.
    """
    return _evaluate(network_or_module, datamodule, trainer_kwargs)[0]
