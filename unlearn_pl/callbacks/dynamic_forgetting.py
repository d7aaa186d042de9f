"""DLFD's dynamic forgetting strategy as a Lightning callback."""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from unlearn_pl.callbacks.probe import fit_check, log_event, no_check_reason, read_monitor


class DynamicForgetting(Callback):
    """Switch a method to classification-only training once it has forgotten enough.

    The dynamic forgetting strategy of DLFD (Choi & Na, AAAI 2025): the forgetting score is
    watched during unlearning; once it falls below ``threshold`` the forgetting part (DLFD's OT
    term) stops and training continues on the classification loss only, for the rest of the run.
    Checks run at the Trainer's validation (``val_check_interval``) on the datamodule's bounded
    probe; sanity checks and non-fit stages are skipped, all DDP ranks switch at the same step,
    and the state is checkpointed under :attr:`state_key` and re-applied on resume. The switch
    step is logged as ``dynamic_forgetting/switch_step``. Works with any LightningModule that has
    a ``forgetting_enabled`` attribute and a ``disable_forgetting()`` method
    (:class:`unlearn_pl.methods.DLFD`).

    ``threshold`` is on the paper scale (see :func:`unlearn_pl.metrics.forgetting_score` before
    taking one from the authors' code). The docs page ``docs/methods/dlfd.md`` gives the check
    schedule, the model selection and the differences from the authors' code.

    Args:
        monitor: logged metric to watch.
        threshold: switch when the metric is strictly below this value (paper scale).
        patience: consecutive checks below the threshold needed to switch (1: the first one).
        strict: raise if the metric is missing at a check (else warn and skip the check).
        verbose: announce the switch.
    """

    def __init__(self, monitor: str = "val/forgetting_score", threshold: float = 0.30,
                 patience: int = 1, strict: bool = True, verbose: bool = True) -> None:
        if patience < 1:
            raise ValueError(f"patience counts checks and must be at least 1, got {patience}")
        self.monitor = monitor
        self.threshold = threshold
        self.patience = patience
        self.strict = strict
        self.verbose = verbose
        self.switched = False
        self.switch_step: int | None = None
        self.wait_count = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, threshold=self.threshold)

    # ------------------------------------------------------------ lifecycle
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not (hasattr(pl_module, "forgetting_enabled")
                and callable(getattr(pl_module, "disable_forgetting", None))):
            raise TypeError(
                f"DynamicForgetting needs a module with a `forgetting_enabled` attribute and a "
                f"`disable_forgetting()` method (e.g. unlearn_pl.methods.DLFD); "
                f"{type(pl_module).__name__} has no such switch")

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Checkpoint state is restored after `setup`, before `on_fit_start`: re-apply it here.
        if self.switched and pl_module.forgetting_enabled:  # type: ignore[attr-defined]
            pl_module.disable_forgetting()  # type: ignore[operator]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A fit with no check cannot switch: say so before the work is spent. (Checked here:
        # the loop sets `val_check_batch` after `on_fit_start`.)
        if self.switched:
            return
        reason = no_check_reason(trainer)
        if reason is not None:
            rank_zero_warn(f"DynamicForgetting can never switch in this fit: {reason}. The "
                           "forgetting part will run to the end.", category=RuntimeWarning)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not fit_check(trainer) or self.switched:
            return
        current = read_monitor(trainer, self.monitor, "DynamicForgetting", self.strict)
        if current is None:
            return
        below = math.isfinite(current) and current < self.threshold
        # Every rank switches at the same step, or none does.
        below = trainer.strategy.reduce_boolean_decision(below, all=True)
        self.wait_count = self.wait_count + 1 if below else 0
        if self.wait_count >= self.patience:
            self._switch(trainer, pl_module, current)

    def _switch(self, trainer: Trainer, pl_module: LightningModule, current: float) -> None:
        self.switched = True
        self.switch_step = trainer.global_step
        pl_module.disable_forgetting()  # type: ignore[operator]
        log_event(trainer, {"dynamic_forgetting/switch_step": float(self.switch_step)})
        if self.verbose:
            rank_zero_info(f"DynamicForgetting: {self.monitor} = {current:.4f} < "
                           f"{self.threshold} for {self.wait_count} check(s); forgetting "
                           f"disabled after step {self.switch_step}, classification only from now")

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"switched": self.switched, "switch_step": self.switch_step,
                "wait_count": self.wait_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.switched = bool(state_dict["switched"])
        self.switch_step = state_dict["switch_step"]
        self.wait_count = int(state_dict["wait_count"])
