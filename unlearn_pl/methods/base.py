"""The base of every unlearning method: the wrapped network, optimiser, evaluation and timing."""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn

from unlearn_pl.data.datamodule import POPULATION_SPLIT
from unlearn_pl.methods.optim import Schedule, configure_optimization, task_loss  # noqa: F401
from unlearn_pl.metrics import MembershipInferenceAttack, PerSampleValues, attack_features, nomus
from unlearn_pl.metrics.privacy import logit_confidence
from unlearn_pl.networks import Classifier, build_network, load_network_weights, network_name
from unlearn_pl.utils import atomic_torch_save

Batch = tuple[Tensor, Tensor, Tensor]
EVAL_SPLITS = ("retain", "forget", "unseen", "retain_test", "forget_test", POPULATION_SPLIT)
#: Where the weights a module holds came from (:attr:`UnlearningModule.weights_source`).
WeightsSource = Literal["random", "original", "checkpoint", "trained", "given"]


class UnlearningModule(LightningModule):
    """Base class of every method: wraps the network being trained or unlearned.

    A method subclass sets :attr:`train_splits` (which splits its training batches hold, as a
    dict batch ``{split: (images, targets, ids)}``) and :attr:`epoch_split` (one epoch = one pass
    over it), and implements ``training_step``. Everything else lives here:

    * the network, built by name (``arch``) or from your own class path (``network``), both
      plain hyperparameters, and, if ``original`` is given, loaded from the original's weights;
    * frozen copies (:meth:`frozen_copy`): eval mode, out of the optimiser, out of checkpoints;
    * the optimiser and schedule (:meth:`configure_optimizers`);
    * evaluation at validation and test, in eval mode on untransformed data, logging under
      stable names ``{val,test}/acc_{retain,forget,unseen,retain_test,forget_test}``,
      ``{stage}/mia``, ``{stage}/mia_auc``, ``{stage}/forgetting_score`` (2·|MIA − 0.5|),
      ``{stage}/nomus`` and ``{stage}/fit_seconds``;
    * wall-clock time of the fit (:attr:`fit_seconds`) and of the validation runs inside it
      (:attr:`validation_seconds`: the online monitoring cost), both kept across resumes;
    * :attr:`weights_source`: where the weights it holds came from (``random``, ``original``,
      ``checkpoint``, ``trained`` by a fit, or ``given`` by the caller). Evaluation always uses
      the weights the module holds; a method module that holds only the original's weights
      (neither fitted nor loaded from a checkpoint) refuses to be evaluated, and a checkpoint
      refuses a forget request other than the one it was unlearned for.

    NoMUS uses the held-out accuracy of the remaining data: ``acc_retain_test`` for class-wise
    requests, ``acc_unseen`` otherwise.

    Args:
        arch: network name (see :func:`unlearn_pl.networks.build_network`).
        num_classes: classes (or labels); linked from the datamodule by the CLI.
        in_channels: image channels; linked from the datamodule.
        normalization: per-channel ``[mean, std]`` of the training data; linked from the
            datamodule and stored in the network's buffers.
        task: ``multiclass`` or ``multilabel``; linked from the datamodule.
        small_input: small-image stem (32×32 CIFAR-style networks).
        width: width multiplier (``allcnn``, ``tiny_cnn``).
        original: path of the original network's weights (an unlearn_pl or your own Lightning
            checkpoint, a state dict, a torchvision or timm weights file:
            :func:`unlearn_pl.networks.load_network_weights`), loaded at construction when the
            file exists, or an earlier request's unlearned checkpoint; methods start from it and
            keep frozen references of it. Required to fit every method but :class:`Train`; not
            needed to evaluate a checkpoint, which holds every weight it needs.
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        scheduler: ``none``, ``cosine`` (per step, to 0 at the end of training), ``onecycle``
            or ``triangle`` (per epoch; :func:`unlearn_pl.methods.optim.triangle`).
        mia_feature: per-sample attack feature: ``loss`` (DLFD / MUFAC), ``entropy`` or
            ``confidence``.
        seed: seed of the attack's balancing and splits.
        network: your own network instead of ``arch``: ``{class_path, init_args}`` of any
            importable ``nn.Module`` class or function returning one (e.g.
            ``torchvision.models.resnet50``), kept as plain values
            (:func:`unlearn_pl.networks.wrap_network`); ``num_classes`` is passed when its
            constructor takes it.
        classifier: the attribute path of ``network``'s final ``nn.Linear`` (``fc``,
            ``head.fc``); found by tracing a forward pass when not given.
        input_size: ``[height, width]`` of the images (linked from the datamodule), for that
            forward pass.
    """

    train_splits: ClassVar[tuple[str, ...]] = ("retain",)
    epoch_split: ClassVar[str] = "retain"
    #: ``False`` for methods built on single class labels (relabelling, class re-routing): they
    #: refuse multilabel tasks before any work.
    supports_multilabel: ClassVar[bool] = True
    #: ``True`` for unlearning methods: fitting needs ``original``, and evaluating a module that
    #: holds only the original's weights is refused (it would report the original as unlearned).
    requires_original: ClassVar[bool] = True

    if TYPE_CHECKING:  # Lightning types it as a MutableMapping; it is an attribute dict.
        @property
        def hparams(self) -> Any: ...

    def __init__(self, arch: str = "resnet18", num_classes: int = 10, in_channels: int = 3,
                 normalization: list[list[float]] | None = None,
                 task: Literal["multiclass", "multilabel"] = "multiclass",
                 small_input: bool = False, width: float = 1.0, original: str | None = None,
                 optimizer: Literal["sgd", "adam", "adamw"] = "sgd", lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 5e-4,
                 scheduler: Schedule = "none",
                 mia_feature: Literal["loss", "entropy", "confidence"] = "loss",
                 seed: int = 0, network: dict[str, Any] | str | None = None,
                 classifier: str | None = None, input_size: list[int] | None = None) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if task == "multilabel" and not self.supports_multilabel:
            raise ValueError(f"{type(self).__name__} needs single-label (multiclass) targets: it "
                             "relabels or re-routes each forget sample to one class. For "
                             "multilabel tasks use FineTune, NegGrad, NegGradPlus, SCRUB, DLFD, "
                             "BadTeaching, UNSIR, FisherForgetting, CFk or EUk")
        self.save_hyperparameters()
        mean, std = normalization if normalization is not None else (None, None)
        self.network: Classifier = build_network(arch, num_classes, in_channels, small_input,
                                                 width, mean, std, network=network,
                                                 classifier=classifier, input_size=input_size)
        self.frozen = nn.ModuleDict()
        self.fit_seconds = 0.0
        self.validation_seconds = 0.0
        self._fit_started: float | None = None
        self._validation_started: float | None = None
        self.weights_source: WeightsSource = "random"
        # What a loaded checkpoint was unlearned for (on_load_checkpoint), checked at evaluation.
        self._checkpoint_forget: dict[str, Any] | None = None
        # Per-sample correctness, loss and logit-scaled confidence (the privacy audit's signal)
        # by sample id: DDP-exact means, and what the report and the runner read
        # (``last_samples``).
        # A ModuleDict (moved with the module, synced under DDP), typed by what it holds.
        self.eval_samples: dict[str, PerSampleValues] = nn.ModuleDict(  # type: ignore[assignment]
            {s: PerSampleValues(("correct", "loss", "signal")) for s in EVAL_SPLITS})
        self.last_samples: dict[str, dict[str, Tensor]] = {}
        self.mia = MembershipInferenceAttack(seed=seed)
        if original is not None and Path(original).exists():  # unreadable files fail here
            load_network_weights(self.network, original, network_name(self.hparams))
            self.weights_source = "original"

    # ------------------------------------------------------------------ network
    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    @property
    def multilabel(self) -> bool:
        return self.hparams.task == "multilabel"

    def loss(self, logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """The task's loss: cross-entropy (multiclass) or mean BCE over labels (multilabel)."""
        return task_loss(logits, targets, self.multilabel, reduction)

    def correct(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Per-sample correctness (multilabel: the share of labels right)."""
        if self.multilabel:
            return ((logits > 0).float() == targets.float()).float().mean(1)
        return (logits.argmax(1) == targets).float()

    def frozen_copy(self, name: str, network: nn.Module | None = None) -> nn.Module:
        """A frozen copy of ``network`` (default: the current network), kept in eval mode, out of
        the optimiser and out of checkpoints (it is rebuilt from ``original`` on resume)."""
        copy_ = copy.deepcopy(network if network is not None else self.network)
        copy_.requires_grad_(False).eval()
        self.frozen[name] = copy_
        return copy_

    def train(self, mode: bool = True) -> UnlearningModule:
        super().train(mode)
        self.frozen.eval()  # frozen networks never update BatchNorm statistics
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser updates; methods with extra trainable state override."""
        return (p for p in self.network.parameters() if p.requires_grad)

    # --------------------------------------------------------------- lifecycle
    @property
    def datamodule(self) -> Any:
        """The :class:`~unlearn_pl.data.UnlearningDataModule` the Trainer runs this module with
        (Lightning attaches it to the Trainer at run time, untyped)."""
        return self.trainer.datamodule  # type: ignore[attr-defined]

    @property
    def forgets(self) -> bool:
        """Whether this module's weights depend on the forget request (every unlearning method,
        and the retrain reference): its checkpoints refuse to be evaluated on another request."""
        return True

    def setup(self, stage: str) -> None:
        original = self.hparams.original
        if stage == "fit":
            self.check_original_given()
            if original is not None:
                self._check_original_is_safe()
            if not getattr(self, "_unlearning_ready", False):
                self._prepare_unlearning()
                self._unlearning_ready = True

    def check_original_given(self) -> None:
        """Refuse to fit a method (:attr:`requires_original`) without an original: it would
        unlearn a randomly initialised network."""
        if self.hparams.original is None and self.requires_original:
            raise ValueError(f"{type(self).__name__} unlearns an original network: set "
                             "model.init_args.original to the original's checkpoint (train one "
                             "with `unlearn-pl fit --config configs/methods/original.yaml`)")

    def _prepare_unlearning(self) -> None:
        """Run :meth:`setup_unlearning` on the original's weights, so frozen references are
        copies of the original even when the module holds other weights (a checkpoint loaded
        with ``load_from_checkpoint``); those weights are put back afterwards."""
        original = self.hparams.original
        held = None
        if original is not None and self.weights_source != "original":
            if self.weights_source != "random":
                held = {k: v.clone() for k, v in self.network.state_dict().items()}
            # Raises the loader's clear errors for a missing, unreadable or mismatched file.
            load_network_weights(self.network, original, network_name(self.hparams))
            if held is None:
                self.weights_source = "original"
        self.setup_unlearning()
        if held is not None:
            try:
                self.network.load_state_dict(held)
            except RuntimeError as error:
                raise ValueError(f"{type(self).__name__} cannot continue unlearning from the "
                                 f"weights it holds ({self.weights_source}): {error}") from error

    def _check_evaluated_weights(self) -> None:
        """Before an evaluation outside a fit (after any checkpoint was restored): refuse weights
        that are not a result (untrained ones or, for a method, the original's: its report would
        show the original as the unlearned network) and a checkpoint's other forget request."""
        self._check_forget_request()
        name = type(self).__name__
        fix = ("pass the checkpoint to evaluate (`unlearn-pl test --ckpt_path "
               ".../checkpoints/last.ckpt`, `Trainer.test(ckpt_path=...)` or "
               f"`{name}.load_from_checkpoint(path)`)")
        if self.weights_source == "random":
            missing = self.hparams.original
            why = (f"its original {missing} does not exist" if missing is not None
                   else "it was neither fitted nor loaded from a checkpoint")
            raise ValueError(f"{name} holds randomly initialised weights ({why}), so there is "
                             f"nothing to evaluate: {fix}")
        if self.weights_source == "original" and self.requires_original:
            raise ValueError(f"{name} holds the original network's weights (it was neither "
                             "fitted nor loaded from a checkpoint), so its evaluation would "
                             f"report the original as the unlearned network: {fix}; to evaluate "
                             "the original itself, pass its checkpoint to "
                             "unlearn_pl.evaluation.evaluate or test it with the original's config")

    def setup_unlearning(self) -> None:
        """Hook: prepare method state from the original network (frozen copies, a widened head)
        before training starts or a checkpoint is restored."""

    def _check_original_is_safe(self) -> None:
        if self._trainer is None:
            return
        original = Path(self.hparams.original).resolve()
        for callback in self.trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
                if Path(callback.dirpath).resolve() == original.parent:
                    raise ValueError(
                        f"this run would write checkpoints into {original.parent}, the folder of "
                        "the original checkpoint, which must never be overwritten: give the run "
                        "another --trainer.default_root_dir or checkpoint dirpath")

    def on_fit_start(self) -> None:
        self._check_forget_request()
        self._fit_started = time.perf_counter()

    def on_train_start(self) -> None:
        self.weights_source = "trained"

    def on_test_start(self) -> None:
        self._check_evaluated_weights()

    def on_predict_start(self) -> None:
        self._check_evaluated_weights()

    def _elapsed(self) -> float:
        if self._fit_started is None:
            return self.fit_seconds
        return self.fit_seconds + time.perf_counter() - self._fit_started

    def on_fit_end(self) -> None:
        self.fit_seconds = self._elapsed()
        self._fit_started = None

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":  # a fit checked in on_fit_start
            self._check_evaluated_weights()
        self._validation_started = time.perf_counter() if self._fit_started is not None else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("frozen.")]:
            del state[key]
        record: dict[str, Any] = {"fit_seconds": self._elapsed(),
                                  "validation_seconds": self.validation_seconds}
        forget = self._forget_record()
        if forget is not None:
            record["forget"] = forget
        checkpoint["unlearn_pl"] = record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Frozen copies are not saved: give the strict loader the ones rebuilt in setup.
        checkpoint["state_dict"].update({f"frozen.{k}": v for k, v in
                                         self.frozen.state_dict().items()})
        self.restore_record(checkpoint)

    def restore_record(self, checkpoint: dict[str, Any]) -> None:
        """Take what a checkpoint records beside the weights: the unlearning time and the forget
        set it was unlearned for; from now on the module holds the checkpoint's weights."""
        saved = checkpoint.get("unlearn_pl", {})
        self.fit_seconds = float(saved.get("fit_seconds", 0.0))
        self.validation_seconds = float(saved.get("validation_seconds", 0.0))
        self._checkpoint_forget = saved.get("forget")
        self.weights_source = "checkpoint"

    def _forget_record(self) -> dict[str, Any] | None:
        """The forget request of the attached datamodule, its size and a digest of its ids."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        splits = getattr(datamodule, "splits", None)
        if not self.forgets or splits is None or "forget" not in splits:
            return None
        ids = splits["forget"][2].long().sort().values
        request = {k: v for k, v in dict(datamodule.hparams).items()  # type: ignore[union-attr]
                   if (k.startswith("forget_") and k != "forget_batch_size" or k == "seed")
                   and v is not None}
        return {"request": request, "size": int(ids.numel()),
                "digest": hashlib.sha256(ids.numpy().tobytes()).hexdigest()[:16]}

    def _check_forget_request(self) -> None:
        """Refuse to evaluate or continue a checkpoint on a forget set other than its own."""
        saved = self._checkpoint_forget
        if saved is None or self.weights_source != "checkpoint":
            return
        mine = self._forget_record()
        if mine is not None and mine["digest"] != saved.get("digest"):
            raise ValueError(
                f"this {type(self).__name__} checkpoint was unlearned for the forget request "
                f"{saved.get('request')} ({saved.get('size')} samples), but this run's "
                f"datamodule asks for {mine['request']} ({mine['size']} samples): its numbers "
                "would be meaningless. Use the data config of the run that wrote the checkpoint "
                "(its config.yaml; splits.json lists the forget ids)")

    def on_before_backward(self, loss: Tensor) -> None:
        # Methods that ascend a loss (NegGrad, UNSIR) can diverge: stop before a non-finite
        # update reaches the weights, so the last checkpoint written stays the last good one.
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{type(self).__name__}: the training loss became {loss.item()} at step "
                f"{self.global_step} (epoch {self.current_epoch}); the method diverged. The last "
                "good checkpoint is kept; lower the learning rate or the number of epochs.")

    def manual_step(self, loss: Tensor) -> Tensor:
        """One optimiser step on ``loss`` for methods with manual optimisation (Lightning still
        owns precision, gradient sync and the optimiser); logs and returns the detached loss."""
        optimizer = self.optimizers()
        optimizer.zero_grad()  # type: ignore[union-attr]
        self.manual_backward(loss)
        optimizer.step()  # type: ignore[union-attr]
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss.detach()

    # --------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Any:
        return configure_optimization(list(self.trainable_parameters()), self.hparams,
                                      self.trainer)

    # -------------------------------------------------------------- evaluation
    def _eval_split_names(self) -> list[str]:
        """The splits of this stage's evaluation loaders, in loader order: the datamodule's
        ``test_splits`` in test, its ``val_splits`` (the validation probe) otherwise."""
        datamodule = getattr(self.trainer, "datamodule", None)
        names = getattr(datamodule, "test_splits" if self.trainer.testing else "val_splits", None)
        if names is None:
            raise RuntimeError("evaluation needs an UnlearningDataModule (it names the splits of "
                               "the evaluation loaders)")
        return list(names)

    def _eval_step(self, batch: Batch, dataloader_idx: int) -> dict[str, Tensor]:
        images, targets, ids = batch
        split = self._eval_split_names()[dataloader_idx]
        logits = self(images).float()
        losses = self.loss(logits, targets, reduction="none")
        if not torch.isfinite(losses).all():
            bad = int((~torch.isfinite(losses)).sum())
            raise ValueError(f"{bad} non-finite per-sample losses (NaN/inf) on the {split} split: "
                             "the network's outputs diverged; evaluation would be meaningless. "
                             "Use an earlier checkpoint or a lower learning rate.")
        task: Literal["multiclass", "multilabel"] = ("multilabel" if self.multilabel
                                                      else "multiclass")
        self.eval_samples[split].update(ids, self.correct(logits, targets), losses,
                                        logit_confidence(logits, targets, task))
        nonmember = self.datamodule.mia_nonmember_split
        if split in ("forget", nonmember):
            features = attack_features(logits, targets, self.hparams.mia_feature, task)
            membership = torch.full_like(features, 1 if split == "forget" else 0,
                                         dtype=torch.long)
            # The attack de-duplicates by (membership, id): DDP pads loaders with repeats.
            self.mia.update(features, membership, ids)
        # The per-sample losses as the step's outputs, for callbacks of users; the report and
        # the runner read the de-duplicated ``last_samples`` instead.
        return {"losses": losses.detach(), "ids": ids}

    def validation_step(self, batch: Batch, batch_idx: int,
                        dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self._eval_step(batch, dataloader_idx)

    def heldout_accuracy(self, results: dict[str, float]) -> float:
        """The held-out accuracy of the remaining data in ``results``, the one NoMUS uses: that
        of the datamodule's ``heldout_split`` (``acc_retain_test`` for class-wise requests,
        ``acc_unseen`` otherwise)."""
        return results[f"acc_{self.datamodule.heldout_split}"]

    def evaluation_results(self) -> dict[str, float]:
        """Compute (and reset) the accumulated evaluation: accuracies, losses, MIA, forgetting
        score and NoMUS, as plain floats keyed by the names logged without the stage prefix."""
        results: dict[str, float] = {}
        self.last_samples = {}
        for split in self._eval_split_names():
            # Each sample once (DDP pads with repeats), in id order: the same float64 sums on
            # any number of processes.
            samples = self.eval_samples[split].compute()
            self.last_samples[split] = samples
            if split == POPULATION_SPLIT:  # validation samples: only the privacy audit's signals
                continue
            results[f"acc_{split}"] = float(samples["correct"].mean())
            results[f"loss_{split}"] = float(samples["loss"].mean())
        attack = self.mia.compute()
        results["mia"] = float(attack["accuracy"])
        results["mia_auc"] = float(attack["auc"])
        results["forgetting_score"] = float(attack["forgetting_score"])
        accuracy = self.heldout_accuracy(results)
        results["nomus"] = float(nomus(accuracy, results["forgetting_score"]))
        results["fit_seconds"] = self._elapsed()
        self._reset_evaluation()
        return results

    def _reset_evaluation(self) -> None:
        for metric in [*self.eval_samples.values(), self.mia]:
            metric.reset()

    def _log_evaluation(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            self._reset_evaluation()
            return
        results = self.evaluation_results()
        self.last_evaluation = results
        # Values come from synced metrics (equal on every rank). sync_dist with max is an exact
        # no-op on equal values (a mean of N equal float32 can round) and tells Lightning they
        # are synced (no "sync_dist=True" warning under DDP); fit_seconds: the slowest rank's.
        self.log_dict({f"{stage}/{k}": v for k, v in results.items()}, sync_dist=True,
                      reduce_fx="max")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")
        # The monitoring cost inside a fit (the probe's forward passes and the attack, sanity
        # check included; not the checkpoint saves that callbacks make after it), kept across
        # resumes like fit_seconds.
        if self._validation_started is not None:
            self.validation_seconds += time.perf_counter() - self._validation_started
            self._validation_started = None

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    # ------------------------------------------------------------------ export
    def export_network(self, path: str | Path) -> Path:
        """Save the network's plain state dict (loadable with ``weights_only=True`` into
        ``build_network(arch, ...)``), written atomically."""
        return atomic_torch_save(self.network.state_dict(), path)
