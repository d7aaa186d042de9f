"""Classifier networks built by name from plain hyperparameters.

Every network is a :class:`Classifier`: it owns its input normalisation (so methods work in
pixel space [0, 1]), exposes its feature extractor (``features``: image → embedding) and its
final linear layer (``classifier``), lists its blocks in forward order (CF-k / EU-k) and
re-initialises a block with its own initialiser.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import models as tvm

import unlearn_pl  # noqa: F401  (torchvision compatibility shim)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; the constants are buffers saved with the weights."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32)
                             .view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32)
                             .view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``classifier(features(normalize(x)))`` with named parts.

    Args:
        features: maps normalised images to a flat embedding.
        classifier: the final linear layer (``embedding → num_classes``).
        mean: per-channel mean of the training images in [0, 1].
        std: per-channel standard deviation.
        blocks: names of the feature extractor's blocks in forward order (attribute paths under
            ``features``); the classifier is always the last block.
        init: the architecture's own initialiser, applied module by module.
    """

    def __init__(self, features: nn.Module, classifier: nn.Linear, mean: Sequence[float],
                 std: Sequence[float], blocks: Sequence[str | Sequence[str]],
                 init: Callable[[nn.Module], None]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = features
        self.classifier = classifier
        self._block_names = [[b] if isinstance(b, str) else list(b) for b in blocks]
        self._init = init

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))

    def embed(self, x: Tensor) -> Tensor:
        """The penultimate embedding of images ``x`` in pixel space [0, 1]."""
        return self.features(self.normalize(x))

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def blocks(self) -> list[nn.Module]:
        """The network's blocks in forward order, the final classifier last. "The last k blocks"
        of CF-k / EU-k are ``blocks()[-k:]``."""
        out: list[nn.Module] = []
        for names in self._block_names:
            parts = [self.features.get_submodule(n) for n in names]
            out.append(parts[0] if len(parts) == 1 else nn.ModuleList(parts))
        return out + [self.classifier]

    def reinitialize(self, module: nn.Module) -> None:
        """Re-initialise every layer of ``module`` with this architecture's own initialiser."""
        for layer in module.modules():
            self._init(layer)


NetworkBuilder = Callable[..., Classifier]
NETWORKS: dict[str, NetworkBuilder] = {}


def register_network(name: str) -> Callable[[NetworkBuilder], NetworkBuilder]:
    """Register a builder ``f(num_classes, in_channels, small_input, width, mean, std)`` under
    ``name`` so ``arch: name`` works in configs."""

    def wrap(builder: NetworkBuilder) -> NetworkBuilder:
        NETWORKS[name] = builder
        return builder

    return wrap


def build_network(arch: str, num_classes: int, in_channels: int = 3, small_input: bool = False,
                  width: float = 1.0, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> Classifier:
    """Build a :class:`Classifier` by name.

    Args:
        arch: one of :data:`NETWORKS` (``resnet18``, ``densenet121``, ``efficientnet_b0``,
            ``allcnn``, ``tiny_cnn``).
        num_classes: outputs of the final layer (classes, or labels for multilabel tasks).
        in_channels: image channels.
        small_input: a stem for small images (32×32): stride-1 3×3 first convolution and no
            early pooling, as is usual for CIFAR.
        width: channel-width multiplier (``allcnn``, ``tiny_cnn``).
        mean: per-channel normalisation mean (default 0.5).
        std: per-channel normalisation std (default 0.5).
    """
    if arch not in NETWORKS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(NETWORKS)} or register "
                         "your own with unlearn_pl.networks.register_network")
    if num_classes < 1 or in_channels < 1 or width <= 0:
        raise ValueError(f"num_classes ({num_classes}), in_channels ({in_channels}) and width "
                         f"({width}) must be positive")
    mean = list(mean) if mean is not None else [0.5] * in_channels
    std = list(std) if std is not None else [0.5] * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {in_channels} channels")
    return NETWORKS[arch](num_classes=num_classes, in_channels=in_channels,
                          small_input=small_input, width=width, mean=mean, std=std)


# ------------------------------------------------------------------ initialisers
def _torchvision_init(layer: nn.Module, linear_init: str = "default") -> None:
    """The initialisers torchvision's ResNet/DenseNet/EfficientNet constructors apply."""
    if isinstance(layer, nn.Conv2d):
        nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif isinstance(layer, nn.BatchNorm2d | nn.GroupNorm):
        nn.init.ones_(layer.weight)
        nn.init.zeros_(layer.bias)
        if isinstance(layer, nn.BatchNorm2d):
            layer.reset_running_stats()
    elif isinstance(layer, nn.Linear):
        if linear_init == "uniform":  # EfficientNet
            bound = 1.0 / math.sqrt(layer.out_features)
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)
        else:
            layer.reset_parameters()
            if linear_init == "zero_bias":  # DenseNet
                nn.init.zeros_(layer.bias)


def _default_init(layer: nn.Module) -> None:
    reset = getattr(layer, "reset_parameters", None)
    if callable(reset):
        reset()
    if isinstance(layer, nn.BatchNorm2d):
        layer.reset_running_stats()


def _take_linear(model: nn.Module, attr: str) -> nn.Linear:
    head = getattr(model, attr)
    linear = head if isinstance(head, nn.Linear) else head[-1]
    setattr(model, attr, nn.Identity())
    return linear


# ------------------------------------------------------------------ architectures
@register_network("resnet18")
def resnet18(num_classes: int, in_channels: int, small_input: bool, width: float,
             mean: Sequence[float], std: Sequence[float]) -> Classifier:
    """torchvision ResNet-18 (He et al. 2016), the network of DLFD's and most unlearning
    benchmarks. Blocks: stem, layer1–layer4, fc."""
    model = tvm.resnet18(num_classes=num_classes)
    if small_input or in_channels != 3:
        model.conv1 = (nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False) if small_input
                       else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False))
        _torchvision_init(model.conv1)
    if small_input:
        model.maxpool = nn.Identity()
    fc = _take_linear(model, "fc")
    return Classifier(model, fc, mean, std,
                      [("conv1", "bn1"), "layer1", "layer2", "layer3", "layer4"],
                      _torchvision_init)


@register_network("densenet121")
def densenet121(num_classes: int, in_channels: int, small_input: bool, width: float,
                mean: Sequence[float], std: Sequence[float]) -> Classifier:
    """torchvision DenseNet-121 (Huang et al. 2017). Blocks: stem, 4 dense blocks (each with
    its transition), final norm, classifier."""
    model = tvm.densenet121(num_classes=num_classes)
    if small_input or in_channels != 3:
        model.features.conv0 = (nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False) if small_input
                                else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False))
        _torchvision_init(model.features.conv0)
    if small_input:
        model.features.pool0 = nn.Identity()
    fc = _take_linear(model, "classifier")
    blocks: list[str | tuple[str, ...]] = [("features.conv0", "features.norm0"),
                                           ("features.denseblock1", "features.transition1"),
                                           ("features.denseblock2", "features.transition2"),
                                           ("features.denseblock3", "features.transition3"),
                                           ("features.denseblock4", "features.norm5")]
    return Classifier(model, fc, mean, std, blocks,
                      lambda m: _torchvision_init(m, linear_init="zero_bias"))


@register_network("efficientnet_b0")
def efficientnet_b0(num_classes: int, in_channels: int, small_input: bool, width: float,
                    mean: Sequence[float], std: Sequence[float]) -> Classifier:
    """torchvision EfficientNet-B0 (Tan & Le 2019); ``small_input`` makes the stem stride 1.
    Blocks: the 9 stages of ``features``, classifier."""
    model = tvm.efficientnet_b0(num_classes=num_classes)
    stem = model.features[0][0]
    if small_input or in_channels != 3:
        model.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3,
                                         1 if small_input else 2, 1, bias=False)
        _torchvision_init(model.features[0][0])
    fc = _take_linear(model, "classifier")
    model.classifier = nn.Dropout(0.2)  # the dropout that preceded the linear layer
    return Classifier(model, fc, mean, std, [f"features.{i}" for i in range(9)],
                      lambda m: _torchvision_init(m, linear_init="uniform"))


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register_network("allcnn")
def allcnn(num_classes: int, in_channels: int, small_input: bool, width: float,
           mean: Sequence[float], std: Sequence[float]) -> Classifier:
    """All-CNN (Springenberg et al. 2015) with batch norm, the network of Boundary Unlearning
    (Chen et al. 2023) and of Golatkar et al.'s Fisher forgetting; ``width`` scales the
    96/192 filters. Blocks: the 9 convolutions, classifier."""
    c1, c2 = max(1, int(96 * width)), max(1, int(192 * width))
    convs = [_conv_bn_relu(in_channels, c1, 3), _conv_bn_relu(c1, c1, 3),
             _conv_bn_relu(c1, c2, 3, 2), _conv_bn_relu(c2, c2, 3), _conv_bn_relu(c2, c2, 3),
             _conv_bn_relu(c2, c2, 3, 2), _conv_bn_relu(c2, c2, 3), _conv_bn_relu(c2, c2, 1)]
    features = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net = Classifier(features, nn.Linear(c2, num_classes), mean, std,
                     [str(i) for i in range(len(convs))], _default_init)
    return net


@register_network("tiny_cnn")
def tiny_cnn(num_classes: int, in_channels: int, small_input: bool, width: float,
             mean: Sequence[float], std: Sequence[float]) -> Classifier:
    """A two-stage CNN with batch norm for tests and the embedded digits (a few thousand
    parameters). Blocks: stage 1, stage 2, classifier."""
    c = max(1, int(16 * width))
    features = nn.Sequential(
        nn.Sequential(_conv_bn_relu(in_channels, c, 3), nn.MaxPool2d(2, ceil_mode=True)),
        nn.Sequential(_conv_bn_relu(c, 2 * c, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return Classifier(features, nn.Linear(2 * c, num_classes), mean, std, ["0", "1"],
                      _default_init)


# ------------------------------------------------------------------ weights
#: What ``original`` must be, for error messages.
VALID_NETWORK_FILE = ("a Lightning checkpoint written by an unlearn_pl run (e.g. "
                      "<run>/checkpoints/last.ckpt) or a plain state dict saved by "
                      "UnlearningModule.export_network")


def _unreadable(path: str | Path, problem: str) -> ValueError:
    return ValueError(f"network file {path} {problem}; it must be {VALID_NETWORK_FILE}. Point "
                      "original at such a file, or copy or export it again if it was cut short")


def check_network_file(path: str | Path) -> Path:
    """Refuse a path that cannot hold network weights, cheaply (before any data or training):
    a missing path, a directory, or a file that is neither a ``torch.save`` zip archive nor a
    legacy ``torch.save`` pickle (a text file, an empty or cut-off download). The full check is
    :func:`read_network_state`.

    Raises:
        FileNotFoundError: nothing at ``path``.
        IsADirectoryError: ``path`` is a directory (the message lists checkpoints inside it).
        ValueError: the file is not a ``torch.save`` file.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if p.suffix in (".ckpt", ".pt", ".pth"))
        hint = (f"; it holds {', '.join(found[:3])}{' ...' if len(found) > 3 else ''}"
                if found else "")
        raise IsADirectoryError(f"original network file {path} is a directory, not a file{hint}: "
                                f"point original at {VALID_NETWORK_FILE}")
    if not path.is_file():
        raise FileNotFoundError(f"original network file {path} does not exist; train one with "
                                "`unlearn-pl fit --config configs/methods/original.yaml ...`, "
                                f"or point original at {VALID_NETWORK_FILE}")
    with path.open("rb") as handle:
        head = handle.read(2)
    # torch.save writes a zip archive ("PK"); before torch 1.6 a pickle (protocol >= 2: 0x80).
    if len(head) < 2 or not (head == b"PK" or head[0] == 0x80):
        raise _unreadable(path, "is empty" if not head else "is not a file written by torch.save")
    return path


def read_network_state(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read network weights from a Lightning checkpoint (keys under ``network.``) or a plain
    state-dict file, with ``torch.load(weights_only=True)`` (never unpickling code).

    Returns:
        ``(state_dict, hyper_parameters)``; the latter is empty for plain state dicts.

    Raises:
        FileNotFoundError, IsADirectoryError: see :func:`check_network_file`.
        ValueError: the file is truncated, not a ``torch.save`` file, holds objects other than
            tensors and plain values, or holds no state dict; the message names the file and
            what a valid one is.
    """
    check_network_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises OSError, KeyError, RuntimeError, UnpicklingError...
        # Never pass on torch's advice to retry with weights_only=False: that runs the file's
        # code. A valid checkpoint never needs it.
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        if "weights only" in reason.lower() or "weights_only" in reason:
            reason = "it holds objects other than tensors and plain values"
        raise _unreadable(path, f"cannot be read as network weights ({type(error).__name__}: "
                                f"{reason[:200]})") from None
    if not isinstance(obj, dict):
        raise _unreadable(path, f"holds a {type(obj).__name__}, not a state dict or checkpoint")
    hparams = obj.get("hyper_parameters", {})
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not isinstance(hparams, dict):
        raise _unreadable(path, "has a state_dict or hyper_parameters entry that is not a dict")
    if any(isinstance(k, str) and k.startswith("network.") for k in state):
        state = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not state or not_tensors:
        raise _unreadable(path, "holds no network weights" if not state else
                          f"holds entries that are not tensors ({not_tensors[:5]}), so it is "
                          "not a state dict")
    return state, dict(hparams)


def load_network_weights(network: Classifier, path: str | Path, arch: str | None = None) -> None:
    """Load weights into ``network``; a checkpoint of another architecture or class count gets an
    error that names the mismatch and the fix, before any training."""
    state, hparams = read_network_state(path)
    saved_arch = hparams.get("arch")
    if arch is not None and saved_arch is not None and saved_arch != arch:
        raise ValueError(f"{path} holds a {saved_arch!r} network but this run builds {arch!r}: "
                         f"set model.arch: {saved_arch} or point original at a {arch} checkpoint")
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path} does not match the {arch or 'configured'} architecture: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}; check model.arch, "
                         "model.small_input and model.in_channels against the original's run")
    for key, value in state.items():
        if value.shape != own[key].shape:
            if key.startswith("classifier."):
                raise ValueError(f"{path} has {value.shape[0]} outputs but this run has "
                                 f"{own[key].shape[0]} classes: use the dataset (and forget "
                                 "request) the original was trained on, or set num_classes")
            raise ValueError(f"{path}: weight {key} has shape {tuple(value.shape)}, the "
                             f"network expects {tuple(own[key].shape)}; check model.arch, "
                             "model.width, model.small_input and model.in_channels")
    network.load_state_dict(state)


__all__ = ["NETWORKS", "VALID_NETWORK_FILE", "Classifier", "Normalize", "build_network",
           "check_network_file", "load_network_weights", "read_network_state",
           "register_network"]
