"""K networks of one architecture as one module: their parameters and buffers stacked along a
leading member dimension and run with ``torch.func.vmap`` (the "model ensembling" recipe of the
``torch.func`` docs), and the LightningModule that trains them as K retrain networks at once."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from unlearn_pl.methods.optim import Schedule, configure_optimization, task_loss
from unlearn_pl.networks import Classifier, build_network


def _shapes(network: nn.Module) -> dict[str, tuple[str, tuple[int, ...]]]:
    state = network.state_dict()
    return {name: (str(value.dtype), tuple(value.shape)) for name, value in state.items()}


class StackedNetworks(nn.Module):
    """K networks of one architecture held as one module and run at once.

    Every parameter and buffer of the K networks is stacked along a new leading member
    dimension; the stacked tensors sit in a copy of the first network's module tree, so the state
    dict keeps the network's own keys (``features.0.0.weight`` of shape ``K × ...``). The forward
    maps ``functional_call`` of the architecture over the members with ``torch.func.vmap``;
    BatchNorm's in-place running-statistics updates land in each member's slice of the stacked
    buffers. Dropout draws differently for every member (``randomness="different"``).

    Args:
        networks: two or more networks of the same architecture (the same parameter and buffer
            names, shapes and dtypes).

    Raises:
        ValueError: fewer than 2 networks, or networks of different architectures.
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(networks) < 2:
            raise ValueError(f"an ensemble needs at least 2 networks, got {len(networks)}")
        first = _shapes(networks[0])
        for index, network in enumerate(networks[1:], start=1):
            other = _shapes(network)
            if type(network) is not type(networks[0]) or other != first:
                differ = sorted(set(first) ^ set(other)) or [
                    k for k in first if first[k] != other[k]]
                detail = (f"first difference: {differ[0]!r} "
                          f"{first.get(differ[0])} vs {other.get(differ[0])}") if differ else (
                    f"{type(networks[0]).__name__} vs {type(network).__name__}")
                raise ValueError(f"network {index} is not of network 0's architecture ({detail}): "
                                 "an ensemble stacks copies of one architecture")
        params, buffers = stack_module_state(list(networks))  # type: ignore[arg-type]
        # The module tree that holds the stacked tensors (never called itself) ...
        self.stacked = copy.deepcopy(networks[0]).to("meta")
        for name, value in params.items():
            owner, leaf = self._owner(name)
            owner._parameters[leaf] = nn.Parameter(value.detach().clone())
        for name, value in buffers.items():
            owner, leaf = self._owner(name)
            owner._buffers[leaf] = value.detach().clone()
        # ... and the architecture functional_call runs: weightless (meta) and kept out of the
        # module tree (a list), so it is neither saved nor moved; train()/eval() reach it below.
        self._template = [copy.deepcopy(networks[0]).to("meta")]
        self.size = len(networks)

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        path, _, leaf = name.rpartition(".")
        return (self.stacked.get_submodule(path) if path else self.stacked), leaf

    def train(self, mode: bool = True) -> StackedNetworks:
        super().train(mode)
        self._template[0].train(mode)  # BatchNorm: batch statistics and running updates
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``K × B × classes`` of member ``k`` on its own images ``images[k]``
        (``K × B × C × H × W``)."""
        template = self._template[0]

        def member(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(template, (params, buffers), (x,))

        params: dict[str, Tensor] = dict(self.stacked.named_parameters())
        buffers: dict[str, Tensor] = dict(self.stacked.named_buffers())
        return vmap(member, randomness="different")(params, buffers, images)

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        """Member ``index``'s state dict, loadable into a network of the architecture."""
        if not -self.size <= index < self.size:
            raise IndexError(f"member {index} of an ensemble of {self.size}")
        return {name: value[index].detach().clone()
                for name, value in self.stacked.state_dict().items()}

    def member(self, index: int) -> nn.Module:
        """Member ``index`` as a network of its own (a copy, in eval mode)."""
        state = self.member_state_dict(index)
        device = next(iter(state.values())).device
        network = copy.deepcopy(self._template[0]).to_empty(device=device)
        network.load_state_dict(state)
        return network.eval()


def member_losses(logits: Tensor, targets: Tensor,
                  task: Literal["multiclass", "multilabel"] = "multiclass") -> Tensor:
    """Each member's mean task loss (``K``) from logits ``K × B × classes`` and targets ``K × B``
    (``K × B × labels`` for multilabel): the loss of
    :meth:`~unlearn_pl.methods.UnlearningModule.loss`, member by member."""
    members, batch = logits.shape[:2]
    flat = logits.reshape(members * batch, -1).float()
    flat_targets = targets.reshape(members * batch, *targets.shape[2:])
    per_sample = task_loss(flat, flat_targets, task == "multilabel", reduction="none")
    return per_sample.view(members, batch).mean(1)


# --------------------------------------------------------------------------- the Lightning module
class EnsembleTrain(LightningModule):
    """The retrain recipe (:class:`~unlearn_pl.methods.Train` with ``train_on: retain``) for K
    networks at once, one per seed, in one module.

    Training batches are ``(images K × B × C × H × W, targets K × B, ids K × B)``: member ``k``
    gets its own batch (:func:`bank_loader`). The loss is the sum of the members' mean losses, so
    every member's gradient is its own; the optimiser and schedule are the recipe's and act
    element by element on the stacked tensors. Hyperparameters are plain values: a checkpoint
    of the ensemble loads anywhere. :meth:`member_network` gives each member as an ordinary
    network.

    Args:
        seeds: one seed per member (K ≥ 2, distinct): member ``k`` is initialised after
            ``torch.manual_seed(seeds[k])``, as a run seeded with ``seeds[k]`` initialises its
            network.
        arch: the network's architecture (as :class:`~unlearn_pl.methods.UnlearningModule`).
        num_classes: classes (or labels).
        in_channels: image channels.
        normalization: ``[mean, std]`` per channel, applied inside the network.
        task: ``multiclass`` or ``multilabel``.
        small_input: the small-image stem.
        width: channel width multiplier.
        optimizer: the recipe's optimiser (:class:`~unlearn_pl.methods.Train`'s default).
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        scheduler: learning-rate schedule.
        network: your own network (as :class:`~unlearn_pl.methods.UnlearningModule`).
        classifier: its final linear layer's attribute path.
        input_size: ``[height, width]`` of the images.

    Raises:
        ValueError: fewer than 2 seeds, repeated seeds, or a non-positive ``lr``.
    """

    if TYPE_CHECKING:
        @property
        def hparams(self) -> Any: ...

    def __init__(self, seeds: list[int], arch: str = "resnet18", num_classes: int = 10,
                 in_channels: int = 3, normalization: list[list[float]] | None = None,
                 task: Literal["multiclass", "multilabel"] = "multiclass",
                 small_input: bool = False, width: float = 1.0,
                 optimizer: Literal["sgd", "adam", "adamw"] = "sgd", lr: float = 0.05,
                 momentum: float = 0.9, weight_decay: float = 5e-4,
                 scheduler: Schedule = "onecycle", network: dict[str, Any] | str | None = None,
                 classifier: str | None = None, input_size: list[int] | None = None) -> None:
        super().__init__()
        seeds = [int(s) for s in seeds]
        if len(seeds) < 2:
            raise ValueError(f"a bank needs at least 2 members (seeds), got {len(seeds)}: the "
                             "audit reads a spread over references")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"the members' seeds must be distinct, got {seeds}: equal seeds "
                             "train the same network twice")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.save_hyperparameters()
        mean, std = normalization if normalization is not None else (None, None)
        networks = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):  # the caller's random stream is untouched
                torch.manual_seed(seed)
                networks.append(self._build(mean, std))
        self.networks = StackedNetworks(networks)

    @property
    def size(self) -> int:
        """K, the number of members."""
        return self.networks.size

    def forward(self, images: Tensor) -> Tensor:
        return self.networks(images)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets, _ = batch
        losses = member_losses(self(images), targets, self.hparams.task)
        self.log("train/loss", losses.detach().mean(), prog_bar=True)
        return losses.sum()

    def on_fit_start(self) -> None:
        clip = self.trainer.gradient_clip_val
        if clip and self.trainer.gradient_clip_algorithm != "value":
            raise ValueError("gradient clipping by norm takes one norm over all members' "
                             "gradients, which couples them: train the bank without it, or clip "
                             "by value (gradient_clip_algorithm='value', element by element)")

    def on_before_backward(self, loss: Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"EnsembleTrain: the training loss became {loss.item()} at "
                                     f"step {self.global_step}; lower the learning rate")

    def configure_optimizers(self) -> Any:
        # The recipe's optimiser over the stacked tensors: every update is element-wise, so it
        # equals one optimiser per member.
        return configure_optimization(list(self.parameters()), self.hparams, self.trainer)

    def member_state_dict(self, index: int) -> dict[str, Tensor]:
        """Member ``index``'s network state dict (``build_network(...).load_state_dict``)."""
        return self.networks.member_state_dict(index)

    def _build(self, mean: list[float] | None, std: list[float] | None) -> Classifier:
        hp = self.hparams
        return build_network(hp.arch, hp.num_classes, hp.in_channels, hp.small_input, hp.width,
                             mean, std, network=hp.network, classifier=hp.classifier,
                             input_size=hp.input_size)

    def member_network(self, index: int) -> Classifier:
        """Member ``index`` as an ordinary network (a copy on the CPU, in eval mode)."""
        hp = self.hparams
        network = self._build(*(hp.normalization if hp.normalization is not None
                                else (None, None)))
        network.load_state_dict({k: v.cpu() for k, v in self.member_state_dict(index).items()})
        return network.eval()


# --------------------------------------------------------------------------- the training batches
