"""DLFD: Distribution-Level Feature Distancing for machine unlearning (Choi & Na, AAAI 2025)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from unlearn_pl.losses import OTMethod, ot_distance
from unlearn_pl.methods.base import Batch, UnlearningModule

ForwardFn = Callable[[Tensor], tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


def dlfd_objective(forward: ForwardFn, loss: LossFn, images: Tensor, delta: Tensor,
                   targets: Tensor, forget_features: Tensor, *, ot_method: OTMethod = "sinkhorn",
                   sinkhorn_epsilon: float = 0.01, authors_code: bool = False,
                   ) -> tuple[Tensor, Tensor]:
    """The two terms of DLFD's perturbation objective at ``images + delta``.

    Returns ``(ot, cls)``: ``ot = OT(φ(x_r + δ), φ(x_f))`` (:func:`unlearn_pl.losses.ot_distance`,
    cosine cost, uniform marginals) and ``cls = CE(f(x_r + δ), y_r)``. With ``authors_code`` the
    OT term is taken on the **clean** retain features ``φ(x_r)`` as in the released code, so it is
    a constant with respect to ``δ``.

    Args:
        forward: ``x ↦ (features, logits)`` of the network.
        loss: the task loss ``(logits, targets) ↦ scalar``.
        images: retain images in pixel space [0, 1].
        delta: the perturbation (same shape as ``images``).
        targets: retain targets.
        forget_features: features of the forget batch (detached).
        ot_method: ``sinkhorn`` (log domain) or ``emd``.
        sinkhorn_epsilon: entropic regularisation.
        authors_code: OT on the clean retain features (no gradient with respect to δ).
    """
    features, logits = forward(images + delta)
    if authors_code:
        with torch.no_grad():
            features = forward(images)[0]
    ot_term = ot_distance(features, forget_features.detach(), method=ot_method,
                          epsilon=sinkhorn_epsilon)
    return ot_term, loss(logits, targets)


def project_perturbation(delta: Tensor, images: Tensor, epsilon: float | None) -> Tensor:
    """Project ``delta`` onto the L∞ ball of radius ``epsilon`` (if given) and so that
    ``images + delta`` stays in the pixel range [0, 1]."""
    if epsilon is not None:
        delta = delta.clamp(-epsilon, epsilon)
    return (images + delta).clamp(0.0, 1.0) - images


def dlfd_perturbation(forward: ForwardFn, loss: LossFn, images: Tensor, targets: Tensor,
                      forget_features: Tensor, *, steps: int, step_size: float,
                      epsilon: float | None, ot_weight: float, retain_weight: float,
                      ot_method: OTMethod = "sinkhorn", sinkhorn_epsilon: float = 0.01,
                      authors_code: bool = False, init: Tensor | None = None,
                      ) -> tuple[Tensor, Tensor]:
    """Synthesise DLFD's perturbation of a retain batch by signed-gradient ascent.

    ``δ ← Π(δ + step_size · sign ∇_δ J(δ))`` with
    ``J(δ) = ot_weight · OT(φ(x_r + δ), φ(x_f)) − w_t · CE(f(x_r + δ), y_r)``, for ``steps``
    steps, where ``Π`` is :func:`project_perturbation`: the perturbed retain features move away,
    in OT distance, from the forget features while the classification term keeps them
    classifiable. The gradient is taken with ``torch.autograd.grad`` with respect to
    ``δ`` only, so parameter gradients (and DDP's gradient hooks) are never touched.

    Args:
        forward: ``x ↦ (features, logits)``; run it in the mode the caller chose (DLFD: eval).
        loss: the task loss ``(logits, targets) ↦ scalar``.
        images: retain images in pixel space [0, 1].
        targets: retain targets.
        forget_features: features of the forget batch (treated as constants).
        steps: ascent steps.
        step_size: L∞ step in pixel units.
        epsilon: L∞ bound of ``δ``; ``None`` leaves it unbounded (only the pixel range).
        ot_weight: weight of the OT term.
        retain_weight: weight ``w_t`` of the classification term.
        ot_method: ``sinkhorn`` (log domain) or ``emd``.
        sinkhorn_epsilon: entropic regularisation.
        authors_code: OT on the clean retain features (see :func:`dlfd_objective`).
        init: the starting ``δ`` (default zeros, as in the paper's code).

    Returns:
        ``(δ, ot)``: the detached perturbation and the OT term at the last evaluated iterate.
    """
    delta = torch.zeros_like(images) if init is None else init.detach().to(images.dtype)
    delta = project_perturbation(delta, images, epsilon)
    ot_term = images.new_zeros(())
    for _ in range(steps):
        with torch.enable_grad():  # also when called from a no-grad context
            delta.requires_grad_(True)
            ot_term, cls_term = dlfd_objective(
                forward, loss, images, delta, targets, forget_features, ot_method=ot_method,
                sinkhorn_epsilon=sinkhorn_epsilon, authors_code=authors_code)
            objective = ot_weight * ot_term - retain_weight * cls_term
            (grad,) = torch.autograd.grad(objective, delta)
        with torch.no_grad():
            delta = project_perturbation(delta + step_size * grad.sign(), images, epsilon)
    return delta.detach(), ot_term.detach()


class DLFD(UnlearningModule):
    """DLFD (Choi & Na, "Distribution-Level Feature Distancing for Machine Unlearning: Towards a
    Better Trade-off Between Model Utility and Forgetting", AAAI 2025, arXiv:2409.14747).

    Per training step, with a retain batch ``(x_r, y_r)`` and a forget batch ``x_f``: synthesise
    a perturbation ``δ`` of the retain images by ``steps`` signed-gradient ascent steps on
    ``ot_weight · OT(φ(x_r + δ), φ(x_f)) − w_t · CE(f(x_r + δ), y_r)``, then train the network
    with the task loss on ``x_r + δ``; ``w_t`` grows linearly from ``retain_weight_start`` to
    ``retain_weight_end`` over the run. ``φ`` is the logits or the penultimate embedding; the OT
    is cosine-cost, uniform-marginal Sinkhorn or exact. The dynamic forgetting strategy (stop the
    OT part once the forgetting score falls below a threshold) is
    :class:`unlearn_pl.callbacks.DynamicForgetting`, switching :attr:`forgetting_enabled`.

    The perturbation lives in pixel space with an L∞ bound and the OT term is taken on the
    perturbed features; the authors' code differs in both (``authors_code``). The docs page
    ``docs/methods/dlfd.md`` gives the algorithm, the differences and the measurements.

    Args:
        features: ``logits`` (authors' code) or ``embedding`` (the penultimate features).
        ot_weight: weight of the OT term (RAF-DB 7, MUFAC 3).
        retain_weight_start: classification weight at the first step (RAF-DB 0.5, MUFAC 0).
        retain_weight_end: classification weight at the last step (1).
        steps: perturbation steps (RAF-DB 20, MUFAC 15).
        step_size: L∞ step in pixel units (default 2/255).
        epsilon: L∞ bound of the perturbation in pixel units; ``None`` for unbounded.
        random_init: start ``δ`` uniformly in the ε-ball (``step_size`` ball if unbounded),
            seeded from ``(seed, step, sample id)``, instead of at zero (paper).
        ot_method: ``sinkhorn`` (entropic, log domain) or ``emd`` (exact).
        sinkhorn_epsilon: entropic regularisation of Sinkhorn (0.01).
        authors_code: take the OT term on the clean retain features, as the released code
            does (it then has zero gradient with respect to ``δ``); it reproduces no other
            part of the released code.
        save_threshold: the paper's other model selection: also log
            ``{val,test}/accuracy_below_threshold``, the held-out accuracy when the forgetting
            score is strictly below this value (paper scale) and −1 otherwise; select with
            ``ModelCheckpoint(monitor="val/accuracy_below_threshold", mode="max")``.
        lr: learning rate (RAF-DB 0.006, MUFAC 0.008), SGD momentum 0.9, weight decay 5e-4.
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("retain", "forget")
    epoch_split = "retain"

    def __init__(self, features: Literal["logits", "embedding"] = "logits", ot_weight: float = 7.0,
                 retain_weight_start: float = 0.5, retain_weight_end: float = 1.0,
                 steps: int = 20, step_size: float = 2 / 255, epsilon: float | None = 8 / 255,
                 random_init: bool = False, ot_method: Literal["emd", "sinkhorn"] = "sinkhorn",
                 sinkhorn_epsilon: float = 0.01, authors_code: bool = False,
                 save_threshold: float | None = None, lr: float = 0.006,
                 **kwargs: Any) -> None:
        if steps < 0 or step_size < 0:
            raise ValueError(f"steps ({steps}) and step_size ({step_size}) must be >= 0")
        if epsilon is not None and epsilon <= 0:
            raise ValueError(f"epsilon must be positive or None, got {epsilon}")
        if sinkhorn_epsilon <= 0:
            raise ValueError(f"sinkhorn_epsilon must be positive, got {sinkhorn_epsilon}")
        if save_threshold is not None and save_threshold <= 0:
            raise ValueError(f"save_threshold is a forgetting score (paper scale, > 0), got "
                             f"{save_threshold}")
        super().__init__(lr=lr, **kwargs)
        self.forgetting_enabled = True
        self._total_steps: float | None = None

    # ----------------------------------------------------------- the switch
    def disable_forgetting(self) -> None:
        """Stop the OT part for the rest of the run: train on clean retain data only (the
        paper's dynamic forgetting strategy; see
        :class:`unlearn_pl.callbacks.DynamicForgetting`)."""
        self.forgetting_enabled = False

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dlfd"] = {"forgetting_enabled": self.forgetting_enabled}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.forgetting_enabled = bool(checkpoint.get("dlfd", {}).get("forgetting_enabled", True))

    def evaluation_results(self) -> dict[str, float]:
        results = super().evaluation_results()
        threshold = self.hparams.save_threshold
        if threshold is not None:
            below = results["forgetting_score"] < threshold
            results["accuracy_below_threshold"] = self.heldout_accuracy(results) if below else -1.0
        return results

    # ------------------------------------------------------------ schedule
    def retain_weight(self) -> float:
        """``w_t``: linear from ``retain_weight_start`` at the first optimizer step to
        ``retain_weight_end`` at the last one of the run
        (``trainer.estimated_stepping_batches``)."""
        hp = self.hparams
        if self._total_steps is None:
            self._total_steps = float(self.trainer.estimated_stepping_batches)
        if not math.isfinite(self._total_steps) or self._total_steps <= 1:
            return float(hp.retain_weight_start)  # no known end (or one step): no schedule
        progress = min(1.0, self.global_step / (self._total_steps - 1))
        return float(hp.retain_weight_start
                     + (hp.retain_weight_end - hp.retain_weight_start) * progress)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._total_steps = None  # the schedule's length is the length of this fit

    # ---------------------------------------------------------- perturbation
    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(φ(x), f(x))`` with ``φ`` the logits or the penultimate embedding."""
        if self.hparams.features == "embedding":
            embedding = self.network.embed(x)
            return embedding, self.network.classifier(embedding)
        logits = self.network(x)
        return logits, logits

    def initial_perturbation(self, images: Tensor, ids: Tensor) -> Tensor | None:
        """``None`` (start at zero) or uniform noise seeded per sample from (seed, step, id), so
        a resumed run and every DDP rank draw the same noise for the same sample and step."""
        hp = self.hparams
        if not hp.random_init:
            return None
        radius = hp.epsilon if hp.epsilon is not None else hp.step_size
        noise = []
        for sample_id in ids.tolist():
            key = ((hp.seed * 1_000_003 + self.global_step) * 1_000_033 + int(sample_id))
            generator = torch.Generator().manual_seed(key % (2**63))
            noise.append(torch.rand(images.shape[1:], generator=generator))
        return ((torch.stack(noise) * 2 - 1) * radius).to(images.device, images.dtype)

    def perturb(self, images: Tensor, targets: Tensor, ids: Tensor,
                forget_images: Tensor) -> tuple[Tensor, Tensor]:
        """DLFD's perturbation of a retain batch against a forget batch: ``(δ, OT)``.

        The network is put in eval mode for the inner loop and restored afterwards; parameter
        gradients, optimizer state and BatchNorm statistics are left untouched.
        """
        hp = self.hparams
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad():
                forget_features = self.features_and_logits(forget_images)[0]
            return dlfd_perturbation(
                self.features_and_logits, self.loss, images, targets, forget_features,
                steps=hp.steps, step_size=hp.step_size, epsilon=hp.epsilon,
                ot_weight=hp.ot_weight, retain_weight=self.retain_weight(),
                ot_method=hp.ot_method, sinkhorn_epsilon=hp.sinkhorn_epsilon,
                authors_code=hp.authors_code, init=self.initial_perturbation(images, ids))
        finally:
            self.network.train(was_training)

    # ------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, ids = batch["retain"]
        # NaN once forgetting is off: Lightning would otherwise keep re-logging the last value.
        ot_term = images.new_tensor(float("nan"))
        if self.forgetting_enabled:
            delta, ot_term = self.perturb(images, targets, ids, batch["forget"][0])
            images = images + delta
        self.log("train/ot", ot_term)
        self.log("train/retain_weight", self.retain_weight())
        loss = self.loss(self(images), targets)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/forgetting_enabled", float(self.forgetting_enabled))
        return loss
