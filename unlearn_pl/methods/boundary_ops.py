"""The maths of Boundary Unlearning (Chen et al., CVPR 2023) as plain functions that test
without a Trainer: the adversarial nearest-but-incorrect neighbours of Boundary Shrink and their
enhancements (margin weights, curvature), and the classifier surgery of Boundary Expanding."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def adversarial_neighbours(network: nn.Module, images: Tensor, targets: Tensor, bound: float,
                           attack: Literal["fgsm", "pgd"] = "fgsm", step: float = 8 / 255,
                           iters: int = 5) -> Tensor:
    """Untargeted L∞ attack in pixel space: the neighbour search of Boundary Shrink.

    FGSM: ``x' = clip_[0,1](x + bound · sign(∇_x CE(f(x), y)))``. PGD repeats ``iters`` steps of
    size ``step`` from ``x`` (no random start, as in the authors' code), projecting onto the
    ``bound`` ball around ``x`` and onto [0, 1] after each. The gradient is taken with
    :func:`torch.autograd.grad` with respect to the perturbed input only, so parameter gradients
    are never touched.

    Args:
        network: the (frozen, eval-mode) network attacked; input in pixel space [0, 1].
        images: clean images in [0, 1].
        targets: true labels.
        bound: L∞ budget in pixel units.
        attack: ``fgsm`` (one step of size ``bound``) or ``pgd``.
        step: PGD step size.
        iters: PGD steps.

    Returns:
        The perturbed images ``x'`` (detached), in [0, 1].
    """
    natural = images.detach()
    adversarial = natural.clone()
    steps, size = (1, bound) if attack == "fgsm" else (iters, step)
    with torch.enable_grad():
        for _ in range(steps):
            adversarial.requires_grad_(True)
            # A summed loss gives the same sign as the mean without underflow in half precision.
            loss = F.cross_entropy(network(adversarial).float(), targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adversarial)
            adversarial = adversarial.detach() + size * grad.sign()
            adversarial = torch.minimum(torch.maximum(adversarial, natural - bound),
                                        natural + bound).clamp_(0.0, 1.0)
    return adversarial.detach()


def margin_weights(logits: Tensor, targets: Tensor, bias: float = -0.5,
                   slope: float = 5.0) -> Tensor:
    """Per-sample weights of the authors' "weight_assign" variant of Boundary Shrink.

    With ``p = softmax(logits)`` and ``m = p_other − p_target`` (``p_other``: the largest
    probability of another class), ``w = 3 · σ(slope · (m + bias))``: samples whose neighbour
    label wins by a small margin weigh more. The factor 3 is the authors' normalisation. Their
    code hard-codes 10 or 11 classes; this works for any number of classes ≥ 2.

    Args:
        logits: the frozen original's logits at the adversarial neighbours.
        targets: the labels trained towards (the neighbour labels).
        bias: the authors' −0.5.
        slope: the authors' 5.

    Returns:
        Detached weights of shape ``(batch,)``.
    """
    probs = logits.detach().float().softmax(1)
    p_target = probs.gather(1, targets[:, None]).squeeze(1)
    top2 = probs.topk(2, dim=1)
    target_in_top2 = (top2.indices == targets[:, None]).any(1)
    p_other = torch.where(target_in_top2, top2.values.sum(1) - p_target, top2.values[:, 0])
    return 3.0 * torch.sigmoid((p_other - p_target + bias) * slope)


def curvature(network: nn.Module, images: Tensor, targets: Tensor, h: float = 0.9,
              std: Tensor | None = None, create_graph: bool = False) -> Tensor:
    """Per-sample loss curvature along the gradient-sign direction (the CURE regulariser of
    Moosavi-Dezfooli et al., CVPR 2019), as the Boundary Unlearning code's ``curvature``.

    ``z = h · sign(g) / ‖sign(g)‖₂`` with ``g = ∇_u CE(x)``; the curvature is
    ``‖∇_u CE(x + z) − ∇_u CE(x)‖₂``, both in the network's **normalised** coordinates
    ``u = (x − mean) / std`` as in the authors' code (they feed normalised tensors): in pixel
    space the step is ``std ⊙ z`` and the gradients are scaled by ``std``. The cross-entropies are
    batch means, as theirs, so values carry a factor 1/batch size. Gradients are taken with
    :func:`torch.autograd.grad` with respect to the input only.

    Args:
        network: the network (input in pixel space).
        images: images in [0, 1].
        targets: the true labels.
        h: L2 length of the finite-difference step in normalised coordinates (authors: 0.9).
        std: per-channel std of the network's normalisation (broadcastable); ``None`` = 1.
        create_graph: keep the graph so the result can be differentiated with respect to the
            network's parameters (the network being trained).

    Returns:
        Per-sample curvature, shape ``(batch,)``.
    """
    scale: Tensor | float = std if std is not None else 1.0
    shape = (-1,) + (1,) * (images.dim() - 1)
    with torch.enable_grad():
        x = images.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(network(x).float(), targets), x)
        direction = grad.sign()
        z = h * (direction + 1e-7) / (direction.flatten(1).norm(dim=1).view(shape) + 1e-7)
        x = images.detach().requires_grad_(True)
        difference = (F.cross_entropy(network(x + z * scale).float(), targets)
                      - F.cross_entropy(network(x).float(), targets))
        (grad_difference,) = torch.autograd.grad(difference, x, create_graph=create_graph)
    return (grad_difference * scale).flatten(1).norm(dim=1)


def shadow_row(in_features: int, num_classes: int, seed: int) -> Tensor:
    """The shadow class's weight row, shape ``(1, in_features)``: the last row of a Xavier-normal
    ``(num_classes + 1) × in_features`` matrix (the authors initialise the whole widened layer
    with ``xavier_normal_`` and overwrite the first rows), drawn from a generator seeded with
    ``seed`` so every DDP rank and every resume draws the same row."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.empty(num_classes + 1, in_features)
    nn.init.xavier_normal_(weight, generator=generator)
    return weight[num_classes:].clone()


def widen_classifier(linear: nn.Linear, weight: Tensor, bias: Tensor | None = None) -> nn.Linear:
    """A copy of ``linear`` with one more output: rows ``0..C−1`` copied, row ``C`` = ``weight``
    (and ``bias``, default 0)."""
    wider = nn.Linear(linear.in_features, linear.out_features + 1, bias=linear.bias is not None,
                      device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        wider.weight.copy_(torch.cat([linear.weight, weight.to(linear.weight).view(1, -1)]))
        if linear.bias is not None:
            extra = torch.zeros(1) if bias is None else bias.view(1)
            wider.bias.copy_(torch.cat([linear.bias, extra.to(linear.bias)]))
    wider.requires_grad_(linear.weight.requires_grad)
    wider.train(linear.training)
    return wider


def prune_classifier(linear: nn.Linear,
                     num_classes: int) -> tuple[nn.Linear, Tensor, Tensor | None]:
    """Drop the outputs after the first ``num_classes``.

    Returns:
        ``(pruned layer, removed weight rows, removed bias entries or None)``.
    """
    pruned = nn.Linear(linear.in_features, num_classes, bias=linear.bias is not None,
                       device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        pruned.weight.copy_(linear.weight[:num_classes])
        if linear.bias is not None:
            pruned.bias.copy_(linear.bias[:num_classes])
    pruned.requires_grad_(linear.weight.requires_grad)
    pruned.train(linear.training)
    removed_bias = linear.bias[num_classes:].detach().clone() if linear.bias is not None else None
    return pruned, linear.weight[num_classes:].detach().clone(), removed_bias


def freeze_batchnorm(network: nn.Module) -> None:
    """Put every BatchNorm layer of ``network`` in eval mode: running statistics stop moving and
    batches are normalised with them; the affine parameters still train."""
    for module in network.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
