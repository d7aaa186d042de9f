"""A weight-saliency mask: train only the weights most salient to forgetting (SalUn's mask, usable
with any method)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from unlearn_pl.methods.optim import task_loss

# Optimiser state of a parameter that must not move while its weight is masked out.
_STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def saliency_mask(network: nn.Module, batches: Any, ratio: float,
                  multilabel: bool = False) -> dict[str, Tensor]:
    """SalUn's weight-saliency mask (Fan et al., ICLR 2024, Eq. 6): the gradient of the forget
    loss ``−CE`` summed over the forget set's batches (each a batch mean), in eval mode and with
    no step; the ``ratio`` share of all weights with the largest absolute value, ranked globally
    over every parameter, is 1, the rest 0.

    Args:
        network: the network being unlearned (its current, i.e. the original's, weights).
        batches: ``(images, targets)`` of the forget set on the network's device.
        ratio: share of the weights kept trainable, in (0, 1].
        multilabel: the forget loss is the per-label BCE.

    Returns:
        ``{parameter name: bool mask}``.
    """
    was_training = network.training
    network.eval()
    params = dict(network.named_parameters())
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    try:
        for images, targets in batches:
            loss = -task_loss(network(images).float(), targets, multilabel)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for name, g in zip(params, grads, strict=True):
                if g is not None:
                    sums[name] += g.float()
    finally:
        network.train(was_training)
    scores = torch.cat([s.abs().flatten() for s in sums.values()])
    keep = max(1, round(ratio * scores.numel()))
    threshold = scores.topk(keep).values.min()
    return {name: s.abs() >= threshold for name, s in sums.items()}


class SaliencyMask(Callback):
    """Train only the salient weights: before the first step, :func:`saliency_mask` of the
    forget set on the module's network; then the gradients of the other weights are zeroed before
    every optimiser step, and after it their values and their optimiser state (momentum, Adam's
    moments) are put back to where they started, so they end bit-identical to the original.
    The mask and the start values are kept in the checkpoint (a resumed run keeps its mask).

    Args:
        ratio: share of the weights trained (SalUn: 0.5).
    """

    def __init__(self, ratio: float = 0.5) -> None:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
        self.ratio = ratio
        self.mask: dict[str, Tensor] = {}
        self.start: dict[str, Tensor] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        network: nn.Module = pl_module.network  # type: ignore[assignment]
        if not self.mask:  # not restored from a checkpoint
            loader = trainer.datamodule.dataloader("forget", shuffle=False)  # type: ignore[attr-defined]
            batches = ((x.to(pl_module.device), y.to(pl_module.device)) for x, y, _ in loader)
            with torch.autocast(pl_module.device.type, enabled=False):
                self.mask = saliency_mask(network, batches, self.ratio,
                                          getattr(pl_module, "multilabel", False))
            self.start = {n: p.detach().clone() for n, p in network.named_parameters()}
        device = pl_module.device
        self.mask = {n: m.to(device) for n, m in self.mask.items()}
        self.start = {n: v.to(device) for n, v in self.start.items()}
        kept = sum(int(m.sum()) for m in self.mask.values())
        # The same mask on every rank (each computes it on the whole forget set).
        pl_module.log("train/salient_share", kept / sum(m.numel() for m in self.mask.values()),
                      on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: Any) -> None:
        for name, param in pl_module.network.named_parameters():  # type: ignore[union-attr]
            if param.grad is not None and name in self.mask:
                param.grad.mul_(self.mask[name].to(param.grad.dtype))

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any
                           ) -> None:
        optimizers = trainer.optimizers
        for name, param in pl_module.network.named_parameters():  # type: ignore[union-attr]
            if name not in self.mask:
                continue
            frozen = ~self.mask[name]
            param.copy_(torch.where(frozen, self.start[name].to(param.dtype), param))
            for optimizer in optimizers:
                state = optimizer.state.get(param, {})
                for key in _STATE_KEYS:
                    if isinstance(state.get(key), Tensor):
                        state[key].masked_fill_(frozen, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "mask": {n: m.cpu() for n, m in self.mask.items()},
                "start": {n: v.cpu() for n, v in self.start.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.mask = dict(state_dict.get("mask", {}))
        self.start = dict(state_dict.get("start", {}))
