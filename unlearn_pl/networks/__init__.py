"""Classifier networks built by name from plain hyperparameters.

Every network is a :class:`Classifier`: it owns its input normalisation (so methods work in
pixel space [0, 1]), exposes its feature extractor (``features``: image → embedding) and its
final linear layer (``classifier``), lists its blocks in forward order (CF-k / EU-k) and
re-initialises a block with its own initialiser.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision import models as tvm

import unlearn_pl  # noqa: F401  (torchvision compatibility shim)
from unlearn_pl.networks.custom import find_classifier, instantiate_network, network_spec


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; the constants are buffers saved with the weights."""

    mean: Tensor
    std: Tensor

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
        head_path: where the classifier sits in the bare network ``features`` was made from
            (``fc`` for torchvision's ResNet, ``head.fc``...), so that a state dict of the bare
            network loads (:func:`load_network_weights`); ``None`` when there is none.
    """

    def __init__(self, features: nn.Module, classifier: nn.Linear, mean: Sequence[float],
                 std: Sequence[float], blocks: Sequence[str | Sequence[str]],
                 init: Callable[[nn.Module], None], head_path: str | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = features
        self.classifier = classifier
        self._block_names = [[b] if isinstance(b, str) else list(b) for b in blocks]
        self._init = init
        self.head_path = head_path

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
                  std: Sequence[float] | None = None, *,
                  network: str | Mapping[str, Any] | None = None, classifier: str | None = None,
                  input_size: Sequence[int] | None = None) -> Classifier:
    """Build a :class:`Classifier` by name, or wrap the user's own network.

    Args:
        arch: one of :data:`NETWORKS` (``resnet18``, ``densenet121``, ``efficientnet_b0``,
            ``allcnn``, ``tiny_cnn``); ignored when ``network`` is given.
        num_classes: outputs of the final layer (classes, or labels for multilabel tasks).
        in_channels: image channels.
        small_input: a stem for small images (32×32): stride-1 3×3 first convolution and no
            early pooling, as is usual for CIFAR.
        width: channel-width multiplier (``allcnn``, ``tiny_cnn``).
        mean: per-channel normalisation mean (default 0.5).
        std: per-channel normalisation std (default 0.5).
        network: the user's network as ``{"class_path": ..., "init_args": {...}}`` (or a
            class path alone): any importable ``nn.Module`` class or function returning one
            (:mod:`unlearn_pl.networks.custom`).
        classifier: the attribute path of ``network``'s final ``nn.Linear`` (found by tracing
            a forward pass when ``None``).
        input_size: ``(height, width)`` of the images, for that forward pass.
    """
    if num_classes < 1 or in_channels < 1 or width <= 0:
        raise ValueError(f"num_classes ({num_classes}), in_channels ({in_channels}) and width "
                         f"({width}) must be positive")
    if network is None and arch not in NETWORKS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(NETWORKS)}, give your "
                         "own network as network: {class_path: ..., init_args: ...}, or "
                         "register a builder with unlearn_pl.networks.register_network")
    mean = list(mean) if mean is not None else [0.5] * in_channels
    std = list(std) if std is not None else [0.5] * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {in_channels} channels")
    if network is not None:
        return wrap_network(network, num_classes, in_channels, mean, std, classifier=classifier,
                            input_size=input_size)
    return NETWORKS[arch](num_classes=num_classes, in_channels=in_channels,
                          small_input=small_input, width=width, mean=mean, std=std)


def wrap_network(network: str | Mapping[str, Any] | nn.Module, num_classes: int,
                 in_channels: int, mean: Sequence[float], std: Sequence[float], *,
                 classifier: str | None = None,
                 input_size: Sequence[int] | None = None) -> Classifier:
    """The user's network as a :class:`Classifier`: its final linear layer (found by
    :func:`~unlearn_pl.networks.custom.find_classifier`, or named by ``classifier``) becomes
    ``classifier``, the rest (that layer replaced by ``nn.Identity``) ``features``; its direct
    children with parameters are the blocks; layers are re-initialised with their own
    ``reset_parameters``.

    Args:
        network: a spec (see :func:`build_network`) or a built ``nn.Module`` (taken over,
            not copied).
        num_classes: the classes the final layer must output.
        in_channels: image channels.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        classifier: the final layer's attribute path.
        input_size: ``(height, width)`` of the tracing forward pass.

    Raises:
        ValueError: an unknown class path, a network that cannot classify the images, no final
            linear layer, or one with another number of outputs than ``num_classes``.
    """
    model = network if isinstance(network, nn.Module) else \
        instantiate_network(network_spec(network), num_classes)
    head_path, blocks = find_classifier(model, in_channels, input_size, classifier)
    head = model.get_submodule(head_path)
    assert isinstance(head, nn.Linear)  # find_classifier checked it
    if head.out_features != num_classes:
        raise ValueError(f"the network's classifier {head_path!r} has {head.out_features} "
                         f"outputs but the dataset has {num_classes} classes: set "
                         f"network.init_args so that it outputs {num_classes} (e.g. "
                         "num_classes), or use the dataset it was trained on")
    model.set_submodule(head_path, nn.Identity())
    return Classifier(model, head, mean, std, blocks, _default_init, head_path=head_path)


def network_name(hparams: Mapping[str, Any]) -> str | None:
    """What network a module's hyperparameters build: the user's class path, or ``arch``."""
    spec = hparams.get("network")
    if spec is not None:
        return str(network_spec(spec)["class_path"])
    return hparams.get("arch")


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
                      _torchvision_init, head_path="fc")


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
                      lambda m: _torchvision_init(m, linear_init="zero_bias"),
                      head_path="classifier")


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
                      lambda m: _torchvision_init(m, linear_init="uniform"),
                      head_path="classifier.1")


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
                      "<run>/checkpoints/last.ckpt) or by your own LightningModule, or a state "
                      "dict of the network (written by torch.save, e.g. by "
                      "UnlearningModule.export_network, or a torchvision or timm weights file, "
                      "also .safetensors)")


def _unreadable(path: str | Path, problem: str) -> ValueError:
    return ValueError(f"network file {path} {problem}; it must be {VALID_NETWORK_FILE}. Point "
                      "original at such a file, or copy or export it again if it was cut short")


def check_network_file(path: str | Path) -> Path:
    """Refuse a path that cannot hold network weights, cheaply (before any data or training):
    a missing path, a directory, or a file that is neither a ``torch.save`` zip archive, a
    legacy ``torch.save`` pickle nor a safetensors file (a text file, an empty or cut-off
    download). The full check is :func:`read_network_state`.

    Raises:
        FileNotFoundError: nothing at ``path``.
        IsADirectoryError: ``path`` is a directory (the message lists checkpoints inside it).
        ValueError: the file is not a ``torch.save`` or safetensors file.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*")
                       if p.suffix in (".ckpt", ".pt", ".pth", ".bin", ".safetensors"))
        hint = (f"; it holds {', '.join(found[:3])}{' ...' if len(found) > 3 else ''}"
                if found else "")
        raise IsADirectoryError(f"original network file {path} is a directory, not a file{hint}: "
                                f"point original at {VALID_NETWORK_FILE}")
    if not path.is_file():
        raise FileNotFoundError(f"original network file {path} does not exist; train one with "
                                "`unlearn-pl fit --config configs/methods/original.yaml ...`, "
                                f"or point original at {VALID_NETWORK_FILE}")
    with path.open("rb") as handle:
        head = handle.read(9)
    if path.suffix == ".safetensors":  # an 8-byte header length, then the JSON header
        if len(head) < 9 or head[8:9] != b"{":
            raise _unreadable(path, "is not a safetensors file")
        return path
    # torch.save writes a zip archive ("PK"); before torch 1.6 a pickle (protocol >= 2: 0x80).
    if len(head) < 2 or not (head[:2] == b"PK" or head[0] == 0x80):
        raise _unreadable(path, "is empty" if not head else "is not a file written by torch.save")
    return path


def _load_file(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_network_state(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read network weights from a Lightning checkpoint or a state-dict file, with
    ``torch.load(weights_only=True)`` (never unpickling code) or safetensors.

    An unlearn_pl checkpoint's keys lose their ``network.`` prefix; other files' keys are
    returned as they are (:func:`load_network_weights` maps them).

    Returns:
        ``(state_dict, hyper_parameters)``; the latter is empty but for unlearn_pl
        checkpoints (those of another LightningModule mean something else).

    Raises:
        FileNotFoundError, IsADirectoryError: see :func:`check_network_file`.
        ValueError: the file is truncated, not a ``torch.save`` or safetensors file, holds
            objects other than tensors and plain values, or holds no state dict; the message
            names the file and what a valid one is.
    """
    path = check_network_file(path)
    if path.suffix == ".safetensors" and importlib.util.find_spec("safetensors") is None:
        raise ValueError(f"{path} is a safetensors file: pip install safetensors to read it")
    try:
        obj = _load_file(path)
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
    ours = "unlearn_pl" in obj
    hparams = obj.get("hyper_parameters", {}) if ours else {}
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not isinstance(hparams, dict):
        raise _unreadable(path, "has a state_dict or hyper_parameters entry that is not a dict")
    if ours:
        state = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not state or not_tensors:
        raise _unreadable(path, "holds no network weights" if not state else
                          f"holds entries that are not tensors ({not_tensors[:5]}), so it is "
                          "not a state dict")
    return state, dict(hparams)


def _readings(state: Mapping[str, Tensor], head_path: str | None
              ) -> dict[tuple[str, str], dict[str, Tensor]]:
    """Every way to read a file's keys as a :class:`Classifier`'s, by ``(prefix, form)``: the
    keys under a prefix (``""``, ``model.``, ``net.backbone.``: a LightningModule's attribute)
    with the prefix removed, read as a Classifier's own keys (``classifier``) or as the bare
    network's (``bare``: ``fc.weight`` → ``classifier.weight``, ``conv1.weight`` →
    ``features.conv1.weight``)."""
    prefixes = {""}
    for key in state:
        parts = key.split(".")
        prefixes.update(".".join(parts[:i]) + "." for i in range(1, min(len(parts), 4)))
    out = {}
    for prefix in sorted(prefixes):
        under = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        out[(prefix, "classifier")] = under
        if head_path is not None:
            head = head_path + "."
            out[(prefix, "bare")] = {
                ("classifier." + k[len(head):] if k.startswith(head) else "features." + k): v
                for k, v in under.items()}
    return out


def load_network_weights(network: Classifier, path: str | Path, arch: str | None = None) -> None:
    """Load weights into ``network`` from any file :func:`read_network_state` reads.

    The keys are matched as the network's own (an unlearn_pl checkpoint or exported state
    dict), or as the bare network's (a torchvision or timm weights file: ``fc.weight`` is the
    classifier's), in both cases also under a prefix (a Lightning checkpoint of your own
    LightningModule, e.g. ``model.``; its other entries are ignored). The reading that
    matches the most weights is taken; it must match every weight with its shape. Normalisation
    buffers missing from the file keep the configured mean and std.

    Args:
        network: the network to load into.
        path: the file.
        arch: the network this run builds (:func:`network_name`: an arch name or the user's
            network's class path); an unlearn_pl checkpoint of another one is refused.

    Raises:
        ValueError: another network's checkpoint, or weights whose names or shapes do not fit
            (the message lists them), or weights that fit under two prefixes.
    """
    state, hparams = read_network_state(path)
    saved = network_name(hparams)
    if arch is not None and saved is not None and saved != arch:
        raise ValueError(f"{path} holds a {saved!r} network but this run builds {arch!r}: "
                         f"build the network it holds (model.arch or model.network) or point "
                         f"original at a {arch} checkpoint")
    own = network.state_dict()
    required = {k for k in own if not k.startswith("normalize.")}
    readings = _readings(state, network.head_path)
    matched = {where: len(required & set(keys)) for where, keys in readings.items()}
    best = max(matched.values())
    full = sorted({prefix for (prefix, _), n in matched.items() if n == len(required)})
    if len(full) > 1:
        raise ValueError(f"{path} holds the network's weights under several prefixes {full}: "
                         "save the one to unlearn on its own (torch.save(module.<attribute>"
                         ".state_dict(), path)) and point original at that file")
    where = next(w for w, n in matched.items() if n == best)
    reading = readings[where]
    missing = sorted(required - set(reading))
    unexpected = sorted(set(reading) - set(own))
    misshapen = sorted(k for k in required & set(reading) if reading[k].shape != own[k].shape)
    if missing or unexpected or misshapen:
        shapes = [f"{k}: file {tuple(reading[k].shape)}, network {tuple(own[k].shape)}"
                  for k in misshapen]
        head = [k for k in misshapen if k.startswith("classifier.")]
        if head and len(misshapen) == len(head) and not (missing or unexpected):
            raise ValueError(f"{path} has {reading[head[0]].shape[0]} outputs but this run has "
                             f"{own[head[0]].shape[0]} classes: use the dataset (and forget "
                             "request) the original was trained on, or set num_classes")
        prefix = f" under the prefix {where[0]!r}" if where[0] else ""
        raise ValueError(
            f"{path} does not match the network{prefix} ({where[1]} keys): missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}, other shapes {shapes[:5]}; build the "
            "network the file was saved from (model.arch, model.network, model.small_input, "
            "model.in_channels, model.width)")
    network.load_state_dict({**own, **{k: v for k, v in reading.items() if k in own}})


__all__ = ["NETWORKS", "VALID_NETWORK_FILE", "Classifier", "Normalize", "build_network",
           "check_network_file", "load_network_weights", "network_name", "read_network_state",
           "register_network", "wrap_network"]
