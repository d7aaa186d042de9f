"""Networks of the user's own: any importable ``nn.Module`` given as ``class_path`` /
``init_args``, wrapped as a :class:`~unlearn_pl.networks.Classifier`.

In YAML (the form LightningCLI uses for dependency injection)::

    model:
      init_args:
        network:
          class_path: torchvision.models.resnet50
          init_args: {num_classes: 10}

The spec stays a plain dict in the module's hyperparameters, so checkpoints hold plain values
and load with ``torch.load(weights_only=True)``. The final linear layer (the classifier that
Boundary Expanding, DLFD, CF-k / EU-k, Fisher and UNSIR use) is found by tracing one forward
pass: the last ``nn.Linear`` whose output is the network's output. Name it with
``classifier`` (a dotted attribute path such as ``fc`` or ``head.fc``) to skip the search.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

#: The input size of the tracing forward pass when the datamodule gives none.
DEFAULT_TRACE_SIZE = (32, 32)


def network_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """The plain form ``{"class_path": str, "init_args": dict}`` of a network spec: a class
    path alone (``"torchvision.models.resnet18"``) or its YAML mapping.

    Raises:
        ValueError: not a class path or mapping, or extra keys beside ``class_path`` /
            ``init_args``.
    """
    if isinstance(spec, str):
        spec = {"class_path": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class_path"), str):
        raise ValueError(f"network must be a class path or {{class_path, init_args}}, got "
                         f"{spec!r}; e.g. network: {{class_path: torchvision.models.resnet50, "
                         "init_args: {num_classes: 10}}")
    extra = sorted(set(spec) - {"class_path", "init_args"})
    if extra:
        raise ValueError(f"network has keys {extra} beside class_path and init_args: put the "
                         "constructor's arguments under init_args")
    init_args = dict(spec.get("init_args") or {})
    return {"class_path": spec["class_path"], "init_args": init_args}


def import_network_class(class_path: str) -> Callable[..., nn.Module]:
    """The class or factory function at ``class_path``.

    Raises:
        ValueError: the module or attribute does not exist, or is not callable.
    """
    module_name, _, name = class_path.rpartition(".")
    target = None
    error = ""
    if module_name:
        try:
            target = getattr(importlib.import_module(module_name), name, None)
        except ImportError as failure:
            error = f" ({failure})"
    if not callable(target):
        raise ValueError(f"unknown network class path {class_path!r}{error}: give the full "
                         "import path of an nn.Module class or of a function returning one, "
                         "e.g. torchvision.models.resnet50 or timm.create_model (pip install "
                         "the package that provides it)")
    return target  # type: ignore[return-value]


def _accepts(target: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def instantiate_network(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    """Build the user's network from its plain spec; ``num_classes`` is passed when the
    constructor takes it and the spec does not set it.

    Raises:
        ValueError: unknown class path, a constructor that fails on the given arguments, or
            something other than an ``nn.Module``.
    """
    target = import_network_class(spec["class_path"])
    kwargs = dict(spec["init_args"])
    if "num_classes" not in kwargs and _accepts(target, "num_classes"):
        kwargs["num_classes"] = num_classes
    try:
        model = target(**kwargs)
    except Exception as error:  # the user's constructor: report it with the spec
        raise ValueError(f"network {spec['class_path']}(**{kwargs}) failed: "
                         f"{type(error).__name__}: {error}; fix network.init_args") from error
    if not isinstance(model, nn.Module):
        raise ValueError(f"network {spec['class_path']} returned a {type(model).__name__}, not "
                         "an nn.Module")
    return model


def _trace(model: nn.Module, in_channels: int, size: Sequence[int]
           ) -> tuple[Tensor, list[tuple[str, Tensor]], list[str]]:
    """One eval-mode forward pass of a random batch: the output, every ``nn.Linear`` call as
    ``(name, output)`` in call order, and the direct children in first-call order."""
    linears: list[tuple[str, Tensor]] = []
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(
                lambda _m, _i, out, name=name: linears.append((name, out))))
    for name, child in model.named_children():
        hooks.append(child.register_forward_hook(
            lambda _m, _i, _o, name=name: order.append(name) if name not in order else None))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.rand(2, in_channels, *size, generator=torch.Generator()
                                      .manual_seed(0)))
    except Exception as error:
        raise ValueError(f"the network cannot classify {in_channels}-channel "
                         f"{'×'.join(map(str, size))} images ({type(error).__name__}: {error}); "
                         "give it the dataset's channels and size (data.num_channels, "
                         "data.image_size) or fix network.init_args") from error
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if not isinstance(output, Tensor):
        raise ValueError(f"the network returns a {type(output).__name__}, not a tensor of "
                         "logits: wrap it in an nn.Module whose forward returns the logits")
    return output, linears, order


def find_classifier(model: nn.Module, in_channels: int, size: Sequence[int] | None = None,
                    name: str | None = None) -> tuple[str, list[str]]:
    """The dotted name of ``model``'s final linear layer and the names of its direct children
    holding parameters, in forward order (the blocks of CF-k / EU-k; the stages of a sole
    ``nn.Sequential`` child).

    The final linear layer is the last ``nn.Linear`` called in a forward pass whose output is
    the network's output (nothing is applied after it); ``name`` names it instead, and is
    checked the same way.

    Args:
        model: the network.
        in_channels: channels of the traced batch.
        size: ``(height, width)`` of the traced batch (:data:`DEFAULT_TRACE_SIZE`).
        name: the classifier's attribute path (``fc``, ``head.fc``, ``classifier.1``).

    Raises:
        ValueError: the forward pass fails, ``name`` is not an ``nn.Linear`` of the network,
            or no linear layer produces the network's output; the message lists the linear
            layers and how to name one.
    """
    size = tuple(size) if size is not None else DEFAULT_TRACE_SIZE
    output, linears, order = _trace(model, in_channels, size)
    modules = dict(model.named_modules())
    names = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if name is not None:
        if not isinstance(modules.get(name), nn.Linear):
            raise ValueError(f"classifier {name!r} is not an nn.Linear of the network (its "
                             f"linear layers: {names or 'none'}): name the final linear layer")
    finals = [n for n, out in linears if out.shape == output.shape and torch.equal(out, output)]
    if name is not None and name not in finals:
        raise ValueError(f"classifier {name!r} does not produce the network's output (the "
                         "network applies something after it, or never calls it): name the "
                         f"final linear layer{f' ({finals[-1]!r})' if finals else ''}")
    if not finals:
        raise ValueError(
            "found no final linear classifier: no nn.Linear of the network produces its output "
            f"(its linear layers: {names or 'none'}). Methods need the network as a feature "
            "extractor followed by one nn.Linear: name it with model.classifier: <attribute "
            "path>, or wrap the network so that its forward ends with an nn.Linear")
    head = name if name is not None else finals[-1]
    # A child holding only the classifier (``fc``, ``head`` = Dropout + Linear) is not a block.
    in_head = {id(p) for p in modules[head].parameters()}
    blocks = [child for child in order
              if any(id(p) not in in_head for p in modules[child].parameters())]
    if len(blocks) == 1 and isinstance(modules[blocks[0]], nn.Sequential):
        # One container of stages (torchvision's EfficientNet, MobileNet, VGG ``features``).
        blocks = [f"{blocks[0]}.{n}" for n, m in modules[blocks[0]].named_children()
                  if any(True for _ in m.parameters())]
    return head, blocks


__all__ = ["DEFAULT_TRACE_SIZE", "find_classifier", "import_network_class",
           "instantiate_network", "network_spec"]
