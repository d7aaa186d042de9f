"""Boundary Unlearning (Chen et al., CVPR 2023): Boundary Shrink and Boundary Expanding.

Min Chen, Weizhuo Gao, Gaoyang Liu, Kai Peng, Chen Wang, "Boundary Unlearning: Rapid Forgetting
of Deep Networks via Shifting the Decision Boundary", CVPR 2023 (arXiv:2303.11570). Both methods
fine-tune the original network on the forget set only, so that the decision space of the
forgotten data moves. The maths lives in plain functions (:mod:`unlearn_pl.methods.boundary_ops`)
that test without a Trainer; the two Lightning modules are thin. The docs page
``docs/methods/boundary.md`` gives the algorithms, the differences and the measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unlearn_pl.methods.base import Batch, UnlearningModule
from unlearn_pl.methods.boundary_ops import (  # noqa: F401  (re-exported)
    adversarial_neighbours,
    curvature,
    freeze_batchnorm,
    margin_weights,
    prune_classifier,
    shadow_row,
    widen_classifier,
)
from unlearn_pl.utils import atomic_torch_save

BatchNormMode = Literal["train", "frozen"]


def _require_linear_classifier(cls: type, network: nn.Module) -> None:
    classifier = getattr(network, "classifier", None)
    if not isinstance(classifier, nn.Linear):
        raise TypeError(f"{cls.__name__} needs a network whose final layer `classifier` is an "
                        f"nn.Linear; {type(network).__name__} has {type(classifier).__name__}")


# ------------------------------------------------------------------ Lightning modules
class _BatchNormModeMixin(UnlearningModule):
    """``bn_mode`` shared by both Boundary methods: ``"frozen"`` keeps the network's BatchNorm
    layers in eval mode during training (running statistics untouched by forget-only batches);
    ``"train"`` lets them re-estimate statistics on forget batches, as the authors' code does."""

    bn_mode: BatchNormMode = "train"
    supports_multilabel = False

    def train(self, mode: bool = True) -> _BatchNormModeMixin:
        super().train(mode)
        if mode and self.bn_mode == "frozen":
            freeze_batchnorm(self.network)
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning does not call train() at fit start: assert the mode every epoch.
        if self.bn_mode == "frozen":
            freeze_batchnorm(self.network)


class BoundaryShrink(_BatchNormModeMixin):
    """Boundary Shrink (Chen et al., CVPR 2023, Sec. "Boundary Shrink").

    For each forget sample ``(x, y)`` the **frozen original** ``f_0`` (eval mode) finds the
    nearest wrong class by one untargeted FGSM step in pixel space,

        ``x' = clip_[0,1](x + ε · sign(∇_x CE(f_0(x), y)))``,   ``y_nbi = argmax f_0(x')``,

    and the network is fine-tuned on the **clean** forget images with the neighbour labels,
    ``min_w Σ_{(x,y)∈D_f} CE(f_w(x), y_nbi)``, forget data only. A failed attack keeps the true
    label (the success share is logged as ``train/attack_success``). The authors' enhanced
    variants, a curvature regulariser (:func:`curvature`) and margin re-weighting
    (:func:`margin_weights`), are off by default and combine here.

    Deliberately, the attack runs in true pixel space, so ``bound`` means what it says (the
    authors' normalisation mismatch makes their 0.1 about 0.25), and BatchNorm is frozen by
    default; ``bn_mode="train"`` with ``bound=0.25`` reproduces the authors' setting. The docs
    page ``docs/methods/boundary.md`` gives the variants, the differences and the measurements.

    Args:
        bound: FGSM step / L∞ budget ε in pixel units (paper 0.1).
        attack: ``fgsm`` (paper) or ``pgd`` (the authors' commented-out alternative).
        step: PGD step size (authors 8/255).
        iters: PGD steps (authors 5).
        curvature_weight: λ of the curvature regulariser (0 = off; authors' enhanced 0.7).
        curvature_h: finite-difference length of the curvature, normalised coordinates (0.9).
        margin_reweight: weight the loss with :func:`margin_weights`.
        margin_bias: re-weighting bias (−0.5).
        margin_slope: re-weighting slope (5).
        bn_mode: ``frozen`` (default) or ``train`` (authors).
        lr: learning rate (1e-5).
        momentum: SGD momentum (0.9).
        weight_decay: weight decay (0: the authors' SGD has none).
        **kwargs: :class:`UnlearningModule` arguments.

    Raises:
        ValueError: a multilabel task, ``bound <= 0``, an invalid PGD or curvature setting, or
            fewer than 2 classes.
        TypeError: a network without a final ``nn.Linear`` classifier.
    """

    train_splits = ("forget",)
    epoch_split = "forget"

    def __init__(self, bound: float = 0.1,
                 attack: Literal["fgsm", "pgd"] = "fgsm", step: float = 8 / 255, iters: int = 5,
                 curvature_weight: float = 0.0, curvature_h: float = 0.9,
                 margin_reweight: bool = False, margin_bias: float = -0.5,
                 margin_slope: float = 5.0, bn_mode: BatchNormMode = "frozen",
                 lr: float = 1e-5, momentum: float = 0.9, weight_decay: float = 0.0,
                 **kwargs: Any) -> None:
        if bound <= 0:
            raise ValueError(f"bound must be positive (the attack's L∞ budget in pixel units, "
                             f"paper 0.1), got {bound}")
        if attack == "pgd" and (step <= 0 or iters < 1):
            raise ValueError(f"PGD needs step > 0 and iters >= 1, got step={step}, iters={iters}")
        if curvature_weight < 0 or curvature_h <= 0:
            raise ValueError(f"curvature_weight must be >= 0 and curvature_h > 0, got "
                             f"{curvature_weight} and {curvature_h}")
        if kwargs.get("num_classes", 10) < 2:
            raise ValueError("Boundary Shrink needs at least 2 classes to find a neighbour class")
        super().__init__(lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
        _require_linear_classifier(type(self), self.network)
        self.bn_mode = bn_mode

    def setup_unlearning(self) -> None:
        self.frozen_copy("original")

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, _ = batch["forget"]
        hp: Any = self.hparams
        original = self.frozen["original"]
        adversarial = adversarial_neighbours(original, images, targets, hp.bound, hp.attack,
                                             hp.step, hp.iters)
        with torch.no_grad():
            adversarial_logits = original(adversarial).float()
        neighbours = adversarial_logits.argmax(1)
        loss = F.cross_entropy(self.network(images).float(), neighbours, reduction="none")
        if hp.margin_reweight:
            loss = loss * margin_weights(adversarial_logits, neighbours, hp.margin_bias,
                                         hp.margin_slope)
        loss = loss.mean()
        if hp.curvature_weight > 0:
            std = getattr(getattr(self.network, "normalize", None), "std", None)
            reference = curvature(original, images, targets, hp.curvature_h, std)
            current = curvature(self.network, images, targets, hp.curvature_h, std,
                                create_graph=True)
            regulariser = torch.linalg.vector_norm(reference - current)
            self.log("train/curvature", regulariser, on_step=False, on_epoch=True,
                     batch_size=len(targets), sync_dist=True)
            loss = loss + hp.curvature_weight * regulariser
        self.log("train/attack_success", (neighbours != targets).float().mean(), on_step=False,
                 on_epoch=True, batch_size=len(targets), sync_dist=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(targets))
        return loss


class BoundaryExpanding(_BatchNormModeMixin):
    """Boundary Expanding (Chen et al., CVPR 2023, Sec. "Boundary Expanding").

    The classifier head is widened from C to C+1 outputs (the shadow row drawn from ``seed``),
    the **whole network** is fine-tuned on D_f only with every target set to the shadow class,

        ``min_w Σ_{x∈D_f} CE(f_w^{C+1}(x), C)``,

    and the shadow row is **pruned** at the end of training. Evaluation (:meth:`forward`) uses
    the first C logits, and every checkpoint and :meth:`export_network` hold the C-output head
    (the shadow row is stored apart, so a resume is exact): the result loads into the original
    architecture. BatchNorm: ``bn_mode`` as in :class:`BoundaryShrink` (default ``frozen``;
    ``train`` is the authors' behaviour). The docs page ``docs/methods/boundary.md`` gives the
    head's lifecycle and the measurements.

    Args:
        bn_mode: ``frozen`` (default) or ``train`` (authors).
        lr: learning rate (1e-5).
        momentum: SGD momentum (0.9).
        weight_decay: weight decay (0: the authors' SGD has none).
        **kwargs: :class:`UnlearningModule` arguments.

    Raises:
        ValueError: a multilabel task.
        TypeError: a network without a final ``nn.Linear`` classifier.
    """

    train_splits = ("forget",)
    epoch_split = "forget"

    def __init__(self, bn_mode: BatchNormMode = "frozen",
                 lr: float = 1e-5, momentum: float = 0.9, weight_decay: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
        _require_linear_classifier(type(self), self.network)
        self.bn_mode = bn_mode
        self.num_outputs = int(self.hparams["num_classes"])  # C, the exported head's size
        # The shadow row last pruned (or read from a checkpoint): a later fit continues from it.
        self._shadow: tuple[Tensor, Tensor | None] | None = None

    @property
    def widened(self) -> bool:
        """Whether the head currently has the shadow output."""
        return self.network.classifier.out_features == self.num_outputs + 1

    def _widen(self) -> None:
        linear = self.network.classifier
        if self._shadow is not None:
            weight, bias = self._shadow
        else:
            weight = shadow_row(linear.in_features, self.num_outputs, self.hparams["seed"])
            bias = None
        self.network.classifier = widen_classifier(linear, weight, bias)

    def _prune(self) -> None:
        if self.widened:
            pruned, weight, bias = prune_classifier(self.network.classifier, self.num_outputs)
            self.network.classifier = pruned
            self._shadow = (weight, bias)

    def setup_unlearning(self) -> None:
        self._widen()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and not self.widened:
            self._widen()  # a second fit of the same module: setup_unlearning ran already

    def forward(self, x: Tensor) -> Tensor:
        # Evaluation sees the network as it will be exported: the shadow logit is not a class.
        return self.network(x)[:, : self.num_outputs]

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor:
        images, targets, _ = batch["forget"]
        logits = self.network(images).float()
        shadow = torch.full_like(targets, self.num_outputs)
        loss = F.cross_entropy(logits, shadow)
        self.log("train/shadow_rate", (logits.argmax(1) == shadow).float().mean(),
                 on_step=False, on_epoch=True, batch_size=len(targets), sync_dist=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(targets))
        return loss

    def on_train_end(self) -> None:
        self._prune()

    def on_fit_end(self) -> None:
        super().on_fit_end()
        self._prune()

    # --------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        weight_key, bias_key = "network.classifier.weight", "network.classifier.bias"
        shadow = self._shadow
        if self.widened:
            weight = state[weight_key]
            shadow = (weight[self.num_outputs:].detach().clone(),
                      state[bias_key][self.num_outputs:].detach().clone()
                      if bias_key in state else None)
            state[weight_key] = weight[: self.num_outputs].detach().clone()
            if bias_key in state:
                state[bias_key] = state[bias_key][: self.num_outputs].detach().clone()
        if shadow is not None:
            checkpoint["unlearn_pl"]["shadow_class"] = {"weight": shadow[0], "bias": shadow[1]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        weight_key, bias_key = "network.classifier.weight", "network.classifier.bias"
        if weight_key not in state:
            return
        saved = checkpoint.get("unlearn_pl", {}).get("shadow_class")
        shadow = (saved["weight"], saved.get("bias")) if saved is not None else None
        c = self.num_outputs
        if state[weight_key].shape[0] == c + 1:  # a widened head stored as is
            if shadow is None:
                shadow = (state[weight_key][c:], state[bias_key][c:] if bias_key in state
                          else None)
            if not self.widened:
                state[weight_key] = state[weight_key][:c]
                if bias_key in state:
                    state[bias_key] = state[bias_key][:c]
        elif self.widened:
            if shadow is None:  # no stored row: keep the seeded one drawn in setup_unlearning
                linear = self.network.classifier
                shadow = (linear.weight[c:].detach().clone(),
                          linear.bias[c:].detach().clone() if linear.bias is not None else None)
            state[weight_key] = torch.cat([state[weight_key], shadow[0].to(state[weight_key])])
            if bias_key in state:
                extra = shadow[1] if shadow[1] is not None else torch.zeros(1)
                state[bias_key] = torch.cat([state[bias_key], extra.to(state[bias_key])])
        if shadow is not None:
            self._shadow = (shadow[0].detach().clone(),
                            shadow[1].detach().clone() if shadow[1] is not None else None)

    def export_network(self, path: str | Path) -> Path:
        """Save the network's plain state dict with exactly C outputs (the shadow row removed if
        the head is still widened), loadable into ``build_network(arch, num_classes, ...)``."""
        state = self.network.state_dict()
        if self.widened:
            state = dict(state)
            for key in ("classifier.weight", "classifier.bias"):
                if key in state:
                    state[key] = state[key][: self.num_outputs].clone()
        return atomic_torch_save(state, path)
