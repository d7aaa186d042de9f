"""MSG and CT: the NeurIPS 2023 Machine Unlearning competition's solutions that DeepUnlearn
found best of 18 methods: re-initialise (MSG) or transpose (CT) the convolution kernels, then
fine-tune on the retain set."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from unlearn_pl.methods.finetune import FineTune
from unlearn_pl.methods.optim import Schedule, task_loss


def small_gradient_masks(network: nn.Module, retain: Iterable[tuple[Tensor, Tensor]],
                         forget: Iterable[tuple[Tensor, Tensor]], rate: float,
                         multilabel: bool = False) -> dict[str, Tensor]:
    """MSG's re-initialisation masks: the gradient of ``CE(retain sample) − CE(forget set)``,
    summed over batches (each a batch mean), in eval mode; in every ``nn.Conv2d`` kernel, the
    ``rate`` share of its weights with the smallest absolute gradient, chosen per layer.

    Args:
        network: the original network.
        retain: ``(images, targets)`` batches of the retain sample on the network's device.
        forget: the same for the forget set.
        rate: share of each kernel's weights selected, in (0, 1).
        multilabel: the loss is the per-label BCE.

    Returns:
        ``{conv weight's parameter name: bool mask}`` (``True``: re-initialise).
    """
    convs = {f"{name}.weight": m.weight for name, m in network.named_modules()
             if isinstance(m, nn.Conv2d)}
    sums = {name: torch.zeros_like(w, dtype=torch.float32) for name, w in convs.items()}
    was_training = network.training
    network.eval()
    try:
        for sign, batches in ((1.0, retain), (-1.0, forget)):
            for images, targets in batches:
                loss = sign * task_loss(network(images).float(), targets, multilabel)
                for name, g in zip(sums, torch.autograd.grad(loss, list(convs.values())),
                                   strict=True):
                    sums[name] += g.float()
    finally:
        network.train(was_training)
    masks = {}
    for name, g in sums.items():
        mask = torch.zeros(g.numel(), dtype=torch.bool, device=g.device)
        mask[g.abs().flatten().topk(round(rate * g.numel()), largest=False).indices] = True
        masks[name] = mask.view_as(g)
    return masks


class MSG(FineTune):
    """Masked Small Gradients, the NeurIPS 2023 Machine Unlearning competition's 2nd-place
    solution as packaged by DeepUnlearn (Cadet et al., "Deep Unlearn: Benchmarking Machine
    Unlearning for Image Classification", EuroS&P 2025; ``kgltop2``).

    Before the first step, :func:`small_gradient_masks` selects in every convolution kernel the
    ``init_rate`` share of weights with the smallest gradient of
    ``CE(retain sample of |D_f|) − CE(D_f)``; they are re-drawn (Kaiming normal, fan-out, ReLU
    gain). Then the network is fine-tuned on D_r with the gradients of the other convolution
    weights scaled by ``slow_factor``, under the per-epoch ``triangle`` schedule. The masks are
    kept in the checkpoint, so a resumed run neither re-draws nor forgets them. The docs page
    ``docs/methods/msg.md`` states the differences from the packaged code.

    Args:
        init_rate: share of each kernel re-initialised (0.3).
        slow_factor: gradient scale of the kept convolution weights (0.1).
        lr: learning rate (1e-3).
        scheduler: learning-rate schedule (``triangle``: the packaged code's per-epoch one).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    def __init__(self, init_rate: float = 0.3, slow_factor: float = 0.1, lr: float = 1e-3,
                 scheduler: Schedule = "triangle", **kwargs: Any) -> None:
        if not 0 < init_rate < 1:
            raise ValueError(f"init_rate must lie in (0, 1), got {init_rate}")
        if not 0 <= slow_factor <= 1:
            raise ValueError(f"slow_factor must lie in [0, 1], got {slow_factor}")
        super().__init__(lr=lr, scheduler=scheduler, **kwargs)
        self.masks: dict[str, Tensor] = {}

    def setup_unlearning(self) -> None:
        if not any(isinstance(m, nn.Conv2d) for m in self.network.modules()):
            raise ValueError(f"MSG re-initialises convolution weights, but the network "
                             f"{self.hparams.arch!r} has no nn.Conv2d: use another method")

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.masks:  # restored from a checkpoint: already re-initialised
            self.masks = {n: m.to(self.device) for n, m in self.masks.items()}
            return
        datamodule = self.datamodule
        size = len(datamodule.splits["forget"][2])

        def batches(split: str, **kwargs: Any) -> Iterable[tuple[Tensor, Tensor]]:
            loader = datamodule.dataloader(split, batch_size=datamodule.batch_size,
                                           shuffle=False, **kwargs)
            return ((x.to(self.device), y.to(self.device)) for x, y, _ in loader)

        with torch.autocast(self.device.type, enabled=False):
            masks = small_gradient_masks(self.network, batches("retain", max_samples=size),
                                         batches("forget"), self.hparams.init_rate,
                                         self.multilabel)
        # Rank 0's masks on every rank: a weight at the cut-off could otherwise be re-drawn on
        # one rank and not another (GPU gradients are not bit-exact), and the replicas drift.
        masks = self.trainer.strategy.broadcast({n: m.cpu() for n, m in masks.items()}, src=0)
        self.masks = {n: m.to(self.device) for n, m in masks.items()}
        # The same seeded draw on every rank.
        generator = torch.Generator().manual_seed(self.hparams.seed)
        params = dict(self.network.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                weight = params[name]
                fresh = nn.init.kaiming_normal_(torch.empty(weight.shape), mode="fan_out",
                                                nonlinearity="relu", generator=generator)
                weight.copy_(torch.where(mask, fresh.to(weight), weight))
        share = sum(int(m.sum()) for m in self.masks.values()) / sum(
            m.numel() for m in self.masks.values())
        self.log("train/reinitialised_share", share, on_step=False, on_epoch=True,
                 sync_dist=True, reduce_fx="max")

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        params = dict(self.network.named_parameters())
        for name, mask in self.masks.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(torch.where(mask, 1.0, self.hparams.slow_factor).to(grad.dtype))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["msg_masks"] = {n: m.cpu() for n, m in self.masks.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.masks = dict(checkpoint.get("msg_masks", {}))


class CT(FineTune):
    """Convolution Transpose, the NeurIPS 2023 Machine Unlearning competition's 5th-place
    solution as packaged by DeepUnlearn (Cadet et al., EuroS&P 2025; ``kgltop5``): before the
    first step every ``nn.Conv2d`` kernel is transposed (its two spatial axes swapped), then the
    network is fine-tuned on D_r (SGD lr 1e-3, cosine). The transposition is recorded in the
    checkpoint, so a resumed run does not transpose again.

    Args:
        lr: learning rate (1e-3).
        scheduler: learning-rate schedule (``cosine``).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    def __init__(self, lr: float = 1e-3, scheduler: Schedule = "cosine", **kwargs: Any) -> None:
        super().__init__(lr=lr, scheduler=scheduler, **kwargs)
        self.transposed = False

    def setup_unlearning(self) -> None:
        convs = [(n, m) for n, m in self.network.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(f"CT transposes convolution kernels, but the network "
                             f"{self.hparams.arch!r} has no nn.Conv2d: use another method")
        odd = [n for n, m in convs if m.weight.shape[2] != m.weight.shape[3]]
        if odd:
            raise ValueError(f"CT transposes square convolution kernels, but {odd} are not "
                             "square: use another method")

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.transposed:
            return
        with torch.no_grad():
            for module in self.network.modules():
                if isinstance(module, nn.Conv2d):
                    module.weight.copy_(module.weight.transpose(2, 3).clone())
        self.transposed = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ct_transposed"] = self.transposed

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.transposed = bool(checkpoint.get("ct_transposed", False))
