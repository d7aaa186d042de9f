"""Stop unlearning when the forget set looks unseen, or when it costs too much accuracy: early
stopping for any unlearning method, decided on the validation probe."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from unlearn_pl.callbacks.probe import fit_check, log_event, no_check_reason, read_monitor

#: Why a run stopped, as logged under ``stop/reason``.
REASONS = {"forgotten": 1.0, "accuracy": 2.0}


class StopWhenForgotten(Callback):
    """Stop an unlearning fit once the forget set looks unseen on the validation probe, or once
    it has cost too much held-out accuracy on the remaining data.

    **Forgotten:** the monitored metric is at most ``threshold`` at ``patience`` consecutive
    checks. By default it follows the request: for class-wise (and group-wise) requests the
    accuracy on the forget set, ``val/acc_forget`` at most 0.02 (a network never trained on the
    class predicts it for almost none of its images; membership attacks cannot say more, since
    they compare the forget set with held-out images of the same class); otherwise the
    population attack's forgetting score, ``val/forgetting_score`` at most 0.1 (the attacker on
    the probe can no longer tell forget samples from held-out ones). The weights at that check
    are the result.

    **Accuracy:** the held-out accuracy of the remaining data (``val/acc_retain_test`` for
    class-wise requests, ``val/acc_unseen`` otherwise) falls more than ``max_accuracy_drop``
    below its value before the first step (measured on the same probe samples at the start of
    the fit) at ``accuracy_patience`` consecutive checks. The run stops and the network goes back
    to the weights of the last check within the tolerance (the start's, before any check: then
    nothing was unlearned, and a warning says so), so the result is never the damaged network.
    Methods that first perturb the network and then recover (MSG, CT, EU-k) need a larger
    ``accuracy_patience`` or ``max_accuracy_drop=None``.

    Checks run at the Trainer's validation (``val_check_interval``) on the datamodule's
    validation probe, never on test data; sanity checks are skipped. Every DDP rank decides the
    same at the same step. The decision, its step, the start accuracy and the rollback weights
    are kept in the checkpoint: a resumed run that had stopped stays stopped, and one resumed
    after a damaged check still rolls back to the last check within the tolerance. The stop is
    logged as ``stop/step`` and ``stop/reason`` (1: forgotten, 2: accuracy). Works with every
    :class:`~unlearn_pl.methods.UnlearningModule` and an
    :class:`~unlearn_pl.data.UnlearningDataModule`, as one config line:
    ``--trainer.callbacks+=unlearn_pl.callbacks.StopWhenForgotten``.

    Args:
        monitor: the metric that says the forget set looks unseen (``None``: by request, as
            above).
        threshold: stop when ``monitor`` is at most this (``None``: by request, as above).
        max_accuracy_drop: tolerated fall of the held-out accuracy, a fraction in (0, 1]
            (``None``: no accuracy check).
        patience: consecutive checks at most ``threshold`` needed to stop.
        accuracy_patience: consecutive checks beyond ``max_accuracy_drop`` needed to stop.
        strict: raise if the monitored metric is missing at a check (else warn and skip).
        verbose: announce the stop.
    """

    def __init__(self, monitor: str | None = None, threshold: float | None = None,
                 max_accuracy_drop: float | None = 0.05, patience: int = 1,
                 accuracy_patience: int = 1, strict: bool = True, verbose: bool = True) -> None:
        if min(patience, accuracy_patience) < 1:
            raise ValueError(f"patience ({patience}) and accuracy_patience "
                             f"({accuracy_patience}) count checks and must be at least 1")
        if max_accuracy_drop is not None and not 0 < max_accuracy_drop <= 1:
            raise ValueError(f"max_accuracy_drop is a fraction in (0, 1], got "
                             f"{max_accuracy_drop}; use None for no accuracy check")
        self.monitor = monitor
        self.threshold = threshold
        self._given = (monitor, threshold)  # None: chosen by each fit's request
        self.max_accuracy_drop = max_accuracy_drop
        self.patience = patience
        self.accuracy_patience = accuracy_patience
        self.strict = strict
        self.verbose = verbose
        self.stopped: Literal["forgotten", "accuracy"] | None = None
        self.stop_step: int | None = None
        self.start_accuracy: float | None = None
        self.wait_count = 0
        self.damaged_count = 0
        self._last_good: dict[str, Tensor] | None = None
        self._last_good_step: int | None = None

    # ------------------------------------------------------------ lifecycle
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if not (hasattr(pl_module, "network") and callable(getattr(pl_module, "correct", None))
                and hasattr(datamodule, "heldout_split")):
            raise TypeError("StopWhenForgotten needs an unlearn_pl method "
                            "(unlearn_pl.methods.UnlearningModule) fitted with an "
                            f"UnlearningDataModule; got {type(pl_module).__name__} and "
                            f"{type(datamodule).__name__}")
        if stage == "fit":  # a new fit starts afresh (a resumed one then loads its state)
            self.stopped, self.stop_step, self.start_accuracy = None, None, None
            self.wait_count = self.damaged_count = 0
            self._last_good, self._last_good_step = None, None
        monitor, threshold = self._given
        class_wise = bool(getattr(datamodule, "class_wise", False))
        self.monitor = monitor or ("val/acc_forget" if class_wise else "val/forgetting_score")
        if threshold is None:
            threshold = 0.02 if self.monitor == "val/acc_forget" else 0.1
        self.threshold = threshold

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stopped is not None:  # restored: the run had already stopped
            trainer.should_stop = True
            return
        reason = no_check_reason(trainer)
        if reason is not None:
            rank_zero_warn(f"StopWhenForgotten can never stop this fit: {reason}. The method "
                           "will run to the end.", category=RuntimeWarning)
        if self.max_accuracy_drop is None:
            return
        if self.start_accuracy is None:
            self.start_accuracy = self._heldout_accuracy(trainer, pl_module)
        if self._last_good is None:  # a resumed run brings its own from the checkpoint
            self._last_good, self._last_good_step = self._snapshot(pl_module), None
        else:
            self._last_good = {k: v.to(pl_module.device) for k, v in self._last_good.items()}

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not fit_check(trainer) or self.stopped:
            return
        assert self.monitor is not None and self.threshold is not None  # set in setup
        current = read_monitor(trainer, self.monitor, "StopWhenForgotten", self.strict)
        damaged = False
        if self.max_accuracy_drop is not None and self.start_accuracy is not None:
            accuracy = read_monitor(trainer, self._accuracy_metric(trainer),
                                    "StopWhenForgotten", strict=True)
            damaged = accuracy is not None and not (
                accuracy >= self.start_accuracy - self.max_accuracy_drop)
            # Every rank decides the same at the same step.
            damaged = trainer.strategy.reduce_boolean_decision(damaged, all=False)
            self.damaged_count = self.damaged_count + 1 if damaged else 0
            if self.damaged_count >= self.accuracy_patience:
                self._stop(trainer, pl_module, "accuracy",
                           f"{self._accuracy_metric(trainer)} = {accuracy:.4f}, more than "
                           f"{self.max_accuracy_drop} below {self.start_accuracy:.4f} at the "
                           f"start for {self.damaged_count} check(s); back to the weights of the "
                           "last check within it")
                return
            if not damaged:
                self._last_good = self._snapshot(pl_module)
                self._last_good_step = trainer.global_step
        if current is None or damaged:  # a damaged network is no result, forgotten or not
            self.wait_count = 0 if damaged else self.wait_count
            return
        met = math.isfinite(current) and current <= self.threshold
        met = trainer.strategy.reduce_boolean_decision(met, all=True)
        self.wait_count = self.wait_count + 1 if met else 0
        if self.wait_count >= self.patience:
            self._stop(trainer, pl_module, "forgotten",
                       f"{self.monitor} = {current:.4f} <= {self.threshold} for "
                       f"{self.wait_count} check(s)")

    def _stop(self, trainer: Trainer, pl_module: LightningModule,
              reason: Literal["forgotten", "accuracy"], why: str) -> None:
        self.stopped = reason
        self.stop_step = trainer.global_step
        if reason == "accuracy" and self._last_good is not None:
            network = pl_module.network  # type: ignore[union-attr]
            network.load_state_dict(self._last_good)  # type: ignore[union-attr]
            if self._last_good_step is None:
                rank_zero_warn("StopWhenForgotten: no check was within the accuracy tolerance, "
                               "so the network is back at the weights the fit started from: "
                               "nothing was unlearned. Lower the learning rate, or raise "
                               "max_accuracy_drop or accuracy_patience",
                               category=RuntimeWarning)
        trainer.should_stop = True
        log_event(trainer, {"stop/step": float(self.stop_step), "stop/reason": REASONS[reason]})
        if self.verbose:
            rank_zero_info(f"StopWhenForgotten: {why}; stopped after step {self.stop_step}")

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _accuracy_metric(trainer: Trainer) -> str:
        return f"val/acc_{trainer.datamodule.heldout_split}"  # type: ignore[attr-defined]

    @staticmethod
    def _snapshot(pl_module: LightningModule) -> dict[str, Tensor]:
        network = pl_module.network  # type: ignore[union-attr]
        return {k: v.detach().clone() for k, v in network.state_dict().items()}  # type: ignore[union-attr]

    @staticmethod
    @torch.no_grad()
    def _heldout_accuracy(trainer: Trainer, pl_module: LightningModule) -> float:
        """The held-out accuracy of the remaining data on the probe's samples, as the probe
        computes it (eval mode, the run's precision), with the weights the fit starts from."""
        datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
        split = datamodule.probe_source(datamodule.heldout_split)
        loader = datamodule.dataloader(split, max_samples=datamodule.eval_max_samples)
        was_training = pl_module.training
        pl_module.eval()
        correct = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
        try:
            with trainer.precision_plugin.val_step_context():
                for images, targets, _ in loader:
                    right = pl_module.correct(  # type: ignore[operator]
                        pl_module(images.to(pl_module.device)).float(),
                        targets.to(pl_module.device))
                    correct += torch.stack([right.sum().double(),
                                            torch.tensor(len(right), dtype=torch.float64,
                                                         device=pl_module.device)])
        finally:
            pl_module.train(was_training)
        # Every rank read the whole probe split: the same value, made exactly equal.
        correct = trainer.strategy.reduce(correct, reduce_op="max")
        return float(correct[0] / correct[1])

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        # The rollback weights too (plain tensors): a run resumed after a damaged check must
        # still go back to the last check within the tolerance.
        return {"stopped": self.stopped, "stop_step": self.stop_step,
                "start_accuracy": self.start_accuracy, "wait_count": self.wait_count,
                "damaged_count": self.damaged_count, "last_good_step": self._last_good_step,
                "last_good": None if self._last_good is None or self.stopped else
                {k: v.cpu() for k, v in self._last_good.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stopped = state_dict["stopped"]
        self.stop_step = state_dict["stop_step"]
        self.start_accuracy = state_dict["start_accuracy"]
        self.wait_count = int(state_dict["wait_count"])
        self.damaged_count = int(state_dict.get("damaged_count", 0))
        self._last_good_step = state_dict.get("last_good_step")
        self._last_good = state_dict.get("last_good")
