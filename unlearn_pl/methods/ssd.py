"""Selective Synaptic Dampening: training-free unlearning by the forget set's importances."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from unlearn_pl.methods.base import Batch, UnlearningModule
from unlearn_pl.methods.optim import task_loss

Variant = Literal["published", "deterministic", "label_free"]


def importances(network: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *,
                variant: Variant = "published", multilabel: bool = False) -> dict[str, Tensor]:
    """Per-parameter importance of a dataset, summed over its batches or samples.

    ``published``: the square of each batch's mean gradient of the task loss, summed over
    batches (the SSD code; divide by the batch count for its mean). ``deterministic``: the
    square of each sample's own gradient, summed over samples (independent of batching and
    order). ``label_free`` (LFSSD): the absolute gradient of each batch's mean squared L2 norm of
    the outputs, summed over batches. The network runs in eval mode, in float32.

    Args:
        network: the classifier.
        batches: ``(images, targets)`` on the network's device.
        variant: ``published``, ``deterministic`` or ``label_free``.
        multilabel: the task loss is the per-label BCE.

    Returns:
        ``{parameter name: summed importance}`` (float32, the parameters' shapes).
    """
    was_training = network.training
    network.eval()
    params = {name: p.detach() for name, p in network.named_parameters()}
    buffers = {name: b.detach() for name, b in network.named_buffers()}
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}

    def batch_loss(params: dict[str, Tensor], images: Tensor, targets: Tensor) -> Tensor:
        out = functional_call(network, (params, buffers), (images,)).float()
        if variant == "label_free":
            return out.pow(2).sum(-1).mean()
        return task_loss(out, targets, multilabel)

    def sample_loss(params: dict[str, Tensor], image: Tensor, target: Tensor) -> Tensor:
        return batch_loss(params, image.unsqueeze(0), target.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    try:
        for images, targets in batches:
            if variant == "deterministic":
                for name, g in per_sample(params, images, targets).items():
                    sums[name] += g.float().pow(2).sum(0)
                continue
            for name, g in grad(batch_loss)(params, images, targets).items():
                sums[name] += g.float().abs() if variant == "label_free" else g.float().pow(2)
    finally:
        network.train(was_training)
    return sums


@torch.no_grad()
def dampen(network: nn.Module, forget: dict[str, Tensor], full: dict[str, Tensor],
           alpha: float = 10.0, lam: float = 1.0) -> int:
    """SSD's dampening, in place: every parameter with ``I_f > α·I_D`` is multiplied by
    ``β = min(λ·I_D / I_f, 1)``; the others are left alone. Returns how many were dampened."""
    changed = 0
    for name, param in network.named_parameters():
        selected = forget[name] > alpha * full[name]
        beta = (lam * full[name] / forget[name].clamp_min(torch.finfo(torch.float32).tiny))
        beta = beta.clamp(max=1.0)
        param.copy_(torch.where(selected, param * beta.to(param.dtype), param))
        changed += int(selected.sum())
    return changed


class SSD(UnlearningModule):
    """Selective Synaptic Dampening (Foster, Schoepf & Brintrup, "Fast Machine Unlearning
    Without Retraining Through Selective Synaptic Dampening", AAAI 2024, arXiv:2308.07707).

    Training-free: the importances ``I_D`` of the whole training set and ``I_f`` of the forget
    set (diagonal Fisher estimates, the mean squared gradient of the task loss) select the
    parameters far more important to D_f than to D, ``I_f > α·I_D``, and scale them by
    ``β = min(λ·I_D / I_f, 1)``; nothing else changes. Applied once, in the first training step,
    and kept in the checkpoint. ``variant``: ``published`` squares batch-mean gradients over the
    training loaders' shuffled batches, as the authors' code does, so its result depends on the
    batch order; ``deterministic`` squares per-sample gradients over the data in id order;
    ``label_free`` is LFSSD (Foster et al., 2024: the L2 norm of the outputs instead of the loss,
    absolute gradients). The docs page ``docs/methods/ssd.md`` gives the algorithm and the
    measurements.

    Args:
        alpha: selection threshold α (paper: 10).
        lam: dampening constant λ (paper: 1).
        variant: ``published``, ``deterministic`` or ``label_free``.
        importance_batch_size: batch size of the importance passes (``None``: the data's
            training batch size, as the authors' code uses its training loaders).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("forget",)
    epoch_split = "forget"

    def __init__(self, alpha: float = 10.0, lam: float = 1.0, variant: Variant = "published",
                 importance_batch_size: int | None = None, **kwargs: Any) -> None:
        if alpha <= 0 or lam <= 0:
            raise ValueError(f"alpha ({alpha}) and lam ({lam}) must be positive")
        if variant not in ("published", "deterministic", "label_free"):
            raise ValueError(f"variant must be published, deterministic or label_free, got "
                             f"{variant!r}")
        if importance_batch_size is not None and importance_batch_size < 1:
            raise ValueError(f"importance_batch_size must be at least 1, got "
                             f"{importance_batch_size}")
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.applied = False
        self.dampened = 0

    def configure_optimizers(self) -> None:
        return None  # training-free: one in-place dampening

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> None:
        if self.applied:
            return
        start = time.perf_counter()
        full, forget = self.importance("train"), self.importance("forget")
        self.dampened = dampen(self.network, forget, full, self.hparams.alpha, self.hparams.lam)
        self.applied = True
        self.log_dict({"train/ssd_seconds": time.perf_counter() - start,
                       "train/ssd_dampened": float(self.dampened)}, on_step=False,
                      on_epoch=True, sync_dist=True, reduce_fx="max")

    def importance(self, split: str) -> dict[str, Tensor]:
        """The split's mean importance (per batch, or per sample for ``deterministic``), its
        batches shared out over DDP ranks and summed."""
        hp = self.hparams
        datamodule = self.datamodule
        loader = datamodule.dataloader(split, batch_size=hp.importance_batch_size
                                       or datamodule.batch_size,
                                       shuffle=hp.variant != "deterministic")
        rank, world = self.global_rank, self.trainer.world_size
        batches = ((images.to(self.device), targets.to(self.device))
                   for i, (images, targets, _) in enumerate(loader) if i % world == rank)
        with torch.autocast(self.device.type, enabled=False):
            sums = importances(self.network, batches, variant=hp.variant,
                               multilabel=self.multilabel)
        flat = self.trainer.strategy.reduce(torch.cat([s.flatten() for s in sums.values()]),
                                            reduce_op="sum")
        count = len(loader.dataset) if hp.variant == "deterministic" else len(loader)
        sizes = [s.numel() for s in sums.values()]
        return {name: part.view_as(sums[name]) / count
                for name, part in zip(sums, flat.split(sizes), strict=True)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ssd"] = {"applied": self.applied, "dampened": self.dampened}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("ssd", {})
        self.applied = bool(state.get("applied", False))
        self.dampened = int(state.get("dampened", 0))
