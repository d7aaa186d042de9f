"""What the callbacks that decide on the validation probe share: reading a monitored metric,
saying when a fit can never check, and writing an event to the loggers."""

from __future__ import annotations

import math

from lightning.pytorch import Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn


def fit_check(trainer: Trainer) -> bool:
    """Whether this validation run is a check inside a fit (not a sanity check, nor a
    ``validate`` or ``test`` of its own): the only runs a decision may act on."""
    return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking


def no_check_reason(trainer: Trainer) -> str | None:
    """Why this fit will never run the validation probe, or ``None`` when it will. (Call it
    from ``on_train_start``: the loop sets ``val_check_batch`` after ``on_fit_start``.)"""
    if trainer.limit_val_batches == 0:
        return "validation is disabled (limit_val_batches=0)"
    if trainer.check_val_every_n_epoch is None:
        every = trainer.val_check_batch
        total = trainer.estimated_stepping_batches * trainer.accumulate_grad_batches
        if every is not None and math.isfinite(total) and every > total:
            return (f"a check every {every} training batches, but the run has {total:g}; "
                    f"set trainer.val_check_interval to at most {total:g}")
    return None


def read_monitor(trainer: Trainer, monitor: str, owner: str, strict: bool) -> float | None:
    """The monitored metric's value at this check; a missing metric raises (``strict``) or
    warns and gives ``None``."""
    value = trainer.callback_metrics.get(monitor)
    if value is not None:
        return float(value)
    message = (f"{owner} monitors `{monitor}`, which was not logged; available: "
               f"{sorted(trainer.callback_metrics)}")
    if strict:
        raise RuntimeError(message)
    rank_zero_warn(message, category=RuntimeWarning)
    return None


def log_event(trainer: Trainer, metrics: dict[str, float]) -> None:
    """Write ``metrics`` at the current step to every logger (``self.log`` is not allowed in
    ``on_validation_end``; loggers act on rank 0 only)."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
