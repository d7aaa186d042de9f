"""Fisher forgetting (Golatkar et al., CVPR 2020): noise scaled by the inverse Fisher of D_r."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from unlearn_pl.methods.base import Batch, UnlearningModule
from unlearn_pl.utils import sample_generator

_LABEL_SALT = 0x46495348  # separates the sampled-class stream from the noise stream
_NOISE_SALT = 0x4E4F4953
_EPS = 1e-8  # the authors' code: 1 / (F + 1e-8)
_CODE_CLASSIFIER_MAX_INVERSE = 1e2
_CODE_FORGOTTEN_ROW_VAR = 1e-4


def fisher_sums(network: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *,
                multilabel: bool = False, classes: Literal["all", "sampled"] = "all",
                seed: int = 0) -> tuple[dict[str, Tensor], int]:
    """Sum over samples of the diagonal Fisher information of ``network``'s predictive
    distribution, ``Σ_x E_{y~p(y|x)} [(∇_θ log p(y|x))²]``, from per-sample gradients.

    The network is evaluated in eval mode (BatchNorm running statistics, no dropout), in float32.

    Args:
        network: the classifier.
        batches: ``(images, ids)`` pairs on the network's device.
        multilabel: independent Bernoulli outputs (sigmoid) instead of a softmax.
        classes: ``all`` takes the expectation over y exactly, one gradient per sample per class
            (per label for multilabel: ``Σ_l p_l(1−p_l)(∇z_l)²``, the exact diagonal);
            ``sampled`` draws one y ~ p(y|x) per sample (a one-gradient Monte Carlo estimate),
            seeded by ``(seed, sample id)``.
        seed: seed of the sampled classes.

    Returns:
        ``({parameter name: Σ_x F_x}, number of per-sample gradients computed)``.
    """
    was_training = network.training
    network.eval()
    params = {name: p.detach() for name, p in network.named_parameters()}
    buffers = {name: b.detach() for name, b in network.named_buffers()}

    def score(params: dict[str, Tensor], image: Tensor, coefficients: Tensor) -> Tensor:
        out = functional_call(network, (params, buffers), (image.unsqueeze(0),))[0].float()
        if not multilabel:
            out = out.log_softmax(-1)
        return (out * coefficients).sum()

    per_sample = vmap(grad(score), in_dims=(None, 0, 0))
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    gradients = 0
    try:
        for images, ids in batches:
            with torch.no_grad():
                logits = network(images).float()
            probs = logits.sigmoid() if multilabel else logits.softmax(-1)
            for coefficients, weight in _fisher_terms(probs, ids, multilabel, classes, seed):
                per_sample_grads = per_sample(params, images, coefficients)
                for name, g in per_sample_grads.items():
                    sums[name] += torch.einsum("b,b...->...", weight, g.float().square())
                gradients += len(images)
    finally:
        network.train(was_training)
    return sums, gradients


def _fisher_terms(probs: Tensor, ids: Tensor, multilabel: bool, classes: str,
                  seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``(coefficients, weight)`` per term: the score is ``∇ Σ_k coefficients_k·out_k`` and its
    square enters the Fisher with ``weight``."""
    n, c = probs.shape
    eye = torch.eye(c, device=probs.device, dtype=probs.dtype)
    if classes == "all":
        for k in range(c):
            weight = probs[:, k] * (1 - probs[:, k]) if multilabel else probs[:, k]
            yield eye[k].expand(n, c), weight
        return
    draws = 1 if not multilabel else c
    uniform = torch.stack([torch.rand(draws, generator=sample_generator(seed, _LABEL_SALT, i))
                           for i in ids.tolist()]).to(probs.device, probs.dtype)
    ones = torch.ones(n, device=probs.device, dtype=probs.dtype)
    if multilabel:
        # ∇ log p(y|x) = Σ_l (y_l − p_l) ∇z_l for independent Bernoulli labels.
        yield (uniform < probs).to(probs.dtype) - probs, ones
    else:
        sampled = torch.searchsorted(probs.cumsum(-1), uniform).clamp(max=c - 1).squeeze(-1)
        yield eye[sampled], ones


def fisher_noise_std(fisher: Tensor, *, alpha: float, noise: Literal["paper", "code"],
                     max_inverse: float = 1e3, classifier: bool = False) -> Tensor:
    """Per-parameter standard deviation of the Fisher-forgetting noise.

    ``paper``: ``α·F^{-1/4}`` (the noise of the scrubbing function ``S(w) = w +
    (λσ_h²)^{1/4} F^{-1/4} n``, with ``α = (λσ_h²)^{1/4}``); ``code``: the authors' notebook,
    ``sqrt(α·F^{-1})`` averaged over each output unit's inputs, ×√10 for the classifier and
    every 1-D parameter (BatchNorm, biases). Both bound ``1/(F + 1e-8)`` by ``max_inverse`` (the
    code's clamp; 1e2 for its classifier) so parameters with zero Fisher stay finite.
    """
    inverse = (1.0 / (fisher + _EPS)).clamp(max=max_inverse)
    if noise == "paper":
        return alpha * inverse.pow(0.25)
    if classifier:
        inverse = inverse.clamp(max=_CODE_CLASSIFIER_MAX_INVERSE)
    var = alpha * inverse
    if var.ndim > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(fisher).clone()
    if classifier or var.ndim == 1:
        var = var * 10
    return var.sqrt()


class FisherForgetting(UnlearningModule):
    """Fisher forgetting (Golatkar, Achille & Soatto, "Eternal Sunshine of the Spotless Net:
    Selective Forgetting in Deep Networks", CVPR 2020): perturb the weights with Gaussian noise
    shaped by the inverse diagonal Fisher information of the retain set, so directions D_r does
    not constrain are scrambled.

    The paper's scrubbing function with the Hessian replaced by the Fisher F of D_r and the
    Newton step dropped::

        S(w) = w + (λσ_h²)^{1/4} F^{-1/4} n,   n ~ N(0, I),   F = diag Fisher of D_r

    implemented as ``θ ← θ + α·min(1/(F + 1e-8), max_inverse)^{1/4}·n`` (``noise: paper``), with
    the true (not empirical) Fisher in eval mode. Class-wise requests also zero the
    classifier's rows of the forgotten classes. The perturbation is applied once, in the first
    training step, and kept in the checkpoint; there is no gradient training.

    ``noise: code`` reproduces the authors' released notebook (std ∝ F^{-1/2}, α = 1e-6); the
    classifier is ``network.classifier``, not every parameter with C rows as in their code. The
    docs page ``docs/methods/fisher.md`` gives the estimate, the differences and the
    measurements.

    Args:
        alpha: noise scale α; ``None`` = 5e-3 for ``paper`` (tuned on the embedded digits) and
            1e-6 for ``code`` (the authors' notebook).
        noise: ``paper`` (std α·F^{-1/4}) or ``code`` (the released notebook's variant).
        fisher_samples: estimate F on this many retain samples (a seeded subset); ``None``
            uses all of D_r.
        fisher_classes: ``all`` (exact expectation over classes, C gradients per sample) or
            ``sampled`` (one class drawn from p(y|x) per sample).
        fisher_batch_size: samples per vectorised per-sample-gradient call (memory ∝ this ×
            number of parameters).
        max_inverse: upper bound of ``1/F`` (the authors' clamp), so parameters with ~zero
            Fisher get bounded noise.
        zero_forgotten_classes: zero the classifier rows of forgotten classes (class-wise).
        **kwargs: :class:`UnlearningModule` arguments.
    """

    train_splits = ("forget",)
    epoch_split = "forget"

    def __init__(self, alpha: float | None = None,
                 noise: Literal["paper", "code"] = "paper", fisher_samples: int | None = None,
                 fisher_classes: Literal["all", "sampled"] = "all", fisher_batch_size: int = 32,
                 max_inverse: float = 1e3, zero_forgotten_classes: bool = True,
                 **kwargs: Any) -> None:
        if alpha is not None and alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {alpha}")
        if fisher_samples is not None and fisher_samples < 1:
            raise ValueError(f"fisher_samples must be at least 1 (or None for all of D_r), got "
                             f"{fisher_samples}")
        if fisher_batch_size < 1 or max_inverse <= 0:
            raise ValueError(f"fisher_batch_size ({fisher_batch_size}) and max_inverse "
                             f"({max_inverse}) must be positive")
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.alpha = alpha if alpha is not None else (5e-3 if noise == "paper" else 1e-6)
        self.applied = False
        self.fisher_seconds = 0.0
        self.fisher_gradients = 0

    def configure_optimizers(self) -> None:
        return None  # no gradient step: the method only adds noise

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> None:
        if self.applied:
            return
        start = time.perf_counter()
        fisher = self.retain_fisher()
        self.fisher_seconds = time.perf_counter() - start
        self.perturb(fisher, self.datamodule.hparams.forget_classes)
        self.applied = True
        self.log("train/fisher_seconds", self.fisher_seconds, on_step=False, on_epoch=True,
                 sync_dist=True, reduce_fx="max")  # the slowest rank's time, on every rank

    def retain_fisher(self) -> dict[str, Tensor]:
        """The diagonal Fisher of D_r (or its subsample), averaged over samples and summed over
        DDP ranks."""
        hp = self.hparams
        loader = self.datamodule.dataloader(
            "retain", batch_size=hp.fisher_batch_size, shuffle=False,
            max_samples=hp.fisher_samples)
        rank, world = self.global_rank, self.trainer.world_size
        batches = ((images.to(self.device), ids) for i, (images, _, ids) in enumerate(loader)
                   if i % world == rank)
        with torch.autocast(self.device.type, enabled=False):
            sums, gradients = fisher_sums(self.network, batches, multilabel=self.multilabel,
                                          classes=hp.fisher_classes, seed=hp.seed)
        flat = torch.cat([s.flatten() for s in sums.values()]
                         + [torch.tensor([float(gradients)], device=self.device)])
        flat = self.trainer.strategy.reduce(flat, reduce_op="sum")
        self.fisher_gradients = int(flat[-1].item())
        flat = flat[:-1] / len(loader.dataset)
        sizes = [s.numel() for s in sums.values()]
        return {name: part.view_as(sums[name])
                for name, part in zip(sums, flat.split(sizes), strict=True)}

    @torch.no_grad()
    def perturb(self, fisher: dict[str, Tensor], forget_classes: list[int] | None = None) -> None:
        """Apply the Fisher-forgetting noise to the network, in place; the classifier rows of
        ``forget_classes`` are zeroed (if ``zero_forgotten_classes``)."""
        hp = self.hparams
        forgotten = None
        if hp.zero_forgotten_classes and forget_classes:
            forgotten = torch.tensor(list(forget_classes), dtype=torch.long)
        classifier = {id(p) for p in self.network.classifier.parameters()}
        generator = sample_generator(hp.seed, _NOISE_SALT)
        for name, param in self.network.named_parameters():
            is_classifier = id(param) in classifier
            std = fisher_noise_std(fisher[name].to(param.device), alpha=self.alpha,
                                   noise=hp.noise, max_inverse=hp.max_inverse,
                                   classifier=is_classifier)
            mean = param.detach().float().clone()
            if forgotten is not None and is_classifier:
                rows = forgotten.to(param.device)
                mean[rows] = 0.0
                std = std.clone()
                std[rows] = ((_CODE_FORGOTTEN_ROW_VAR * 10) ** 0.5 if hp.noise == "code"
                             else 0.0)
            noise = torch.randn(param.shape, generator=generator).to(param.device)
            param.copy_((mean + std * noise).to(param.dtype))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["fisher_forgetting"] = {"applied": self.applied,
                                           "fisher_seconds": self.fisher_seconds,
                                           "fisher_gradients": self.fisher_gradients}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("fisher_forgetting", {})
        self.applied = bool(state.get("applied", False))
        self.fisher_seconds = float(state.get("fisher_seconds", 0.0))
        self.fisher_gradients = int(state.get("fisher_gradients", 0))
