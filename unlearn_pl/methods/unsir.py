"""UNSIR: error-maximising noise, then impair and repair (Tarun et al., "Fast Yet Effective
Machine Unlearning", IEEE TNNLS 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from unlearn_pl.methods.base import Batch, UnlearningModule
from unlearn_pl.networks import Classifier

# Seed streams, so class-wise and sample-wise noise never share an initial draw.
_CLASS_NOISE, _SAMPLE_NOISE, _NOISE_ORDER = 1, 2, 3


def _generator(*keys: int) -> torch.Generator:
    # Tuples of ints hash identically in every process (no string hashing involved).
    return torch.Generator().manual_seed(hash(keys) & 0x7FFF_FFFF_FFFF_FFFF)


def error_maximizing_noise(network: Classifier, targets: Tensor, init: Tensor,
                           loss_fn: Callable[[Tensor, Tensor], Tensor], *, steps: int = 40,
                           lr: float = 0.1, l2: float = 0.1) -> Tensor:
    """Learn inputs that maximise the network's loss on ``targets`` (UNSIR's error-maximising
    noise: ``argmin_N E[−L(f, y) + λ‖N‖]`` in the paper).

    Solves ``min_N Σ_i [−L(f(N_i), y_i) + λ·‖N_i‖²]`` (the squared norm, as the reference code)
    with Adam on the noise only. ``N`` lives in
    the network's normalised input space (what the reference code feeds its network, whose data
    are normalised); the returned images are ``N·std + mean`` in the pixel space that
    :class:`~unlearn_pl.networks.Classifier` expects, not clamped to [0, 1] (the noise is an
    error-maximising input, not an image). The network is evaluated in eval mode (its BatchNorm
    statistics stay untouched) and the gradient is taken with ``torch.autograd.grad`` with respect
    to the noise alone, so no parameter ``.grad`` is written. Each sample's term depends on its own
    noise only, so the result does not depend on how samples are grouped into calls.

    Args:
        network: the frozen-state network f.
        targets: the label of each noise sample (class ids, or 0/1 label vectors for multilabel).
        init: initial noise ``N_0`` (``N×C×H×W``, normalised space), typically standard normal.
        loss_fn: per-sample task loss ``(logits, targets) → N``.
        steps: Adam steps (reference: 5 epochs × 8 steps = 40).
        lr: Adam learning rate (reference: 0.1).
        l2: weight λ of the squared L2 norm of each noise sample (reference: 0.1).

    Returns:
        The learned noise in pixel space, ``N×C×H×W`` float32.
    """
    was_training = network.training
    network.eval()
    constants = dict(network.normalize.named_buffers())
    mean, std = constants["mean"].float(), constants["std"].float()
    dtype = network.classifier.weight.dtype
    noise = init.detach().to(device=mean.device, dtype=torch.float32).clone().requires_grad_(True)
    targets = targets.to(mean.device)
    optimizer = torch.optim.Adam([noise], lr=lr)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                logits = network((noise * std + mean).to(dtype)).float()
                penalty = noise.pow(2).flatten(1).sum(1)
                objective = (l2 * penalty - loss_fn(logits, targets)).sum()
                (gradient,) = torch.autograd.grad(objective, [noise])
                noise.grad = gradient
                optimizer.step()
    finally:
        network.train(was_training)
    return (noise.detach() * std + mean).float()


class UNSIR(UnlearningModule):
    """UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023,
    arXiv:2111.08947): error-maximising noise for the forget set, then one "impair" epoch on the
    noise mixed with retain data and one "repair" epoch on retain data.

    1. **Noise** (before epoch 0, :func:`error_maximizing_noise`): ``noise_per_class`` images per
       forgotten class for class-wise requests, one per forget sample otherwise, each labelled
       with its class or sample's target; seeded, and saved in the checkpoint.
    2. **Impair** (Lightning epoch 0, ``lr``): each retain batch of size B gets
       ``round(noise_ratio·B)`` noise samples appended; the task loss on the mixed batch.
    3. **Repair** (later epochs, ``repair_lr``): the task loss on retain batches, with a fresh
       optimiser state, as the reference builds a new optimiser.

    Each epoch trains on a fresh random ``retain_subset`` share of the retain batches. Unlike
    the reference notebook (``vikram2000b/Fast-Machine-Unlearning``), which labels all noise as
    class 0, each noise sample keeps its own label; ``noise_per_class=256`` learns as many noise
    images as the reference. The docs page ``docs/methods/unsir.md`` gives the algorithm, the
    differences and the measurements (on small data sets, raise ``retain_subset``).

    Args:
        lr: impair learning rate (reference: Adam, 0.02).
        repair_lr: repair learning rate of the fresh repair optimiser (reference: Adam, 0.01).
        optimizer: optimiser (reference: ``adam``).
        weight_decay: weight decay (reference: 0).
        retain_subset: share of the retain batches trained on per epoch, in (0, 1] (reference:
            1,000 of 5,000 images per class, 0.2).
        noise_ratio: noise samples appended per retain sample in impair batches (> 0).
        noise_per_class: noise images learned per forgotten class (class-wise requests).
        noise_steps: Adam steps of the noise optimisation (reference: 40).
        noise_lr: Adam learning rate of the noise (reference: 0.1).
        noise_l2: weight λ of the noise's squared L2 norm (reference: 0.1).
        **kwargs: :class:`UnlearningModule` arguments (``scheduler`` must stay ``none``).
    """

    train_splits = ("retain",)
    epoch_split = "retain"
    noise: Tensor
    noise_targets: Tensor

    def __init__(self, lr: float = 0.02, repair_lr: float = 0.01,
                 optimizer: Literal["sgd", "adam", "adamw"] = "adam", weight_decay: float = 0.0,
                 retain_subset: float = 0.2, noise_ratio: float = 0.5, noise_per_class: int = 1,
                 noise_steps: int = 40, noise_lr: float = 0.1, noise_l2: float = 0.1,
                 **kwargs: Any) -> None:
        if repair_lr <= 0 or noise_lr <= 0:
            raise ValueError(f"repair_lr and noise_lr must be positive, got {repair_lr} and "
                             f"{noise_lr}")
        if not 0 < retain_subset <= 1:
            raise ValueError(f"retain_subset must lie in (0, 1], got {retain_subset}")
        if noise_ratio <= 0:
            raise ValueError(f"noise_ratio must be positive, got {noise_ratio}")
        if noise_per_class < 1 or noise_steps < 0:
            raise ValueError(f"noise_per_class must be >= 1 and noise_steps >= 0, got "
                             f"{noise_per_class} and {noise_steps}")
        if noise_l2 < 0:
            raise ValueError(f"noise_l2 must be >= 0, got {noise_l2}")
        super().__init__(lr=lr, optimizer=optimizer,
                         weight_decay=weight_decay, **kwargs)
        if self.hparams.scheduler != "none":
            raise ValueError("UNSIR sets the learning rate of each step itself (lr for impair, "
                             "repair_lr for repair); leave scheduler at 'none'")
        self.automatic_optimization = False
        self.register_buffer("noise", torch.empty(0), persistent=False)
        self.register_buffer("noise_targets", torch.empty(0, dtype=torch.long), persistent=False)
        # Whether the optimiser state was reset for repair (saved: a resume must not redo it).
        self.repair_started = False

    # ------------------------------------------------------------------ noise
    def noise_request(self) -> tuple[Tensor, Tensor]:
        """Initial noise (normalised space) and labels for this run's forget request."""
        datamodule = self.datamodule
        images, targets, ids = datamodule.splits["forget"]
        shape = tuple(images.shape[1:])
        seed = self.hparams.seed
        classes = datamodule.hparams.get("forget_classes")
        if classes is not None:
            labels = torch.tensor(sorted(set(classes)), dtype=torch.long)
            labels = labels.repeat_interleave(self.hparams.noise_per_class)
            keys = [(int(c), k) for c in labels.unique() for k in
                    range(self.hparams.noise_per_class)]
            init = torch.stack([torch.randn(shape, generator=_generator(seed, _CLASS_NOISE, c, k))
                                for c, k in keys])
            return init, labels
        init = torch.stack([torch.randn(shape, generator=_generator(seed, _SAMPLE_NOISE, int(i)))
                            for i in ids])
        return init, targets.clone()

    def learn_noise(self) -> None:
        """Learn the noise of every forget class or sample, in chunks of one batch size."""
        init, labels = self.noise_request()
        chunk = self.datamodule.batch_size
        hp = self.hparams
        parts = [error_maximizing_noise(self.network, labels[i:i + chunk], init[i:i + chunk],
                                        lambda z, y: self.loss(z, y, reduction="none"),
                                        steps=hp.noise_steps, lr=hp.noise_lr, l2=hp.noise_l2)
                 for i in range(0, len(labels), chunk)]
        # Float results may differ in the last bits between GPUs: rank 0's noise is everyone's.
        noise = self.trainer.strategy.broadcast(torch.cat(parts).cpu(), src=0)
        self.noise = noise.to(self.device)
        self.noise_targets = labels.to(self.device)

    def noise_batch(self, batch_idx: int, count: int) -> tuple[Tensor, Tensor]:
        """``count`` noise samples for impair batch ``batch_idx`` (seeded, rank-offset cycle)."""
        n = len(self.noise)
        order = torch.randperm(n, generator=_generator(self.hparams.seed, _NOISE_ORDER))
        start = (batch_idx * self.trainer.world_size + self.global_rank) * count
        index = order[(start + torch.arange(count)) % n].to(self.noise.device)
        return self.noise[index], self.noise_targets[index]

    # --------------------------------------------------------------- training
    @staticmethod
    def is_impair_epoch(epoch: int) -> bool:
        """Lightning epoch 0 is the impair step; every later epoch is a repair step."""
        return epoch == 0

    def subset_batches(self) -> int:
        """Batches trained on per epoch: ``ceil(retain_subset · batches)``, at least one."""
        return max(1, math.ceil(self.hparams.retain_subset * self.trainer.num_training_batches))

    def on_train_epoch_start(self) -> None:
        impair = self.is_impair_epoch(self.current_epoch)
        if impair and self.noise.numel() == 0:
            self.learn_noise()
        optimizer = self.trainer.optimizers[0]
        if not impair and not self.repair_started:
            optimizer.state.clear()  # the reference's new optimiser for the repair step
            self.repair_started = True
        for group in optimizer.param_groups:
            group["lr"] = self.hparams.lr if impair else self.hparams.repair_lr

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> Tensor | None:
        if batch_idx >= self.subset_batches():
            return None  # outside this epoch's retain subset
        images, targets, _ = batch["retain"]
        if self.is_impair_epoch(self.current_epoch):
            noise, noise_targets = self.noise_batch(
                batch_idx, max(1, round(self.hparams.noise_ratio * len(images))))
            images = torch.cat([images, noise.to(images.dtype)])
            targets = torch.cat([targets, noise_targets.to(targets.dtype)])
        loss = self.loss(self(images), targets)
        return self.manual_step(loss)

    # ------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["unsir"] = {"noise": self.noise.detach().cpu(),
                               "noise_targets": self.noise_targets.detach().cpu(),
                               "repair_started": self.repair_started}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("unsir")
        if state is not None:
            self.noise = state["noise"].to(self.noise.device)
            self.noise_targets = state["noise_targets"].to(self.noise_targets.device)
            self.repair_started = bool(state.get("repair_started", False))
