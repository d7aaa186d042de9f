"""Boundary Shrink and Boundary Expanding: the neighbour search, the widened and pruned head,
checkpoints of either shape, BatchNorm modes, refusals and a behavioural forgetting check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from tests.conftest import make_datamodule, make_trainer, model_kwargs
from unlearn_pl.methods import BoundaryExpanding, BoundaryShrink
from unlearn_pl.methods.boundary import (
    adversarial_neighbours,
    curvature,
    margin_weights,
    prune_classifier,
    shadow_row,
    widen_classifier,
)
from unlearn_pl.networks import Classifier, build_network, load_network_weights

C = 4  # classes of the synthetic task (conftest)


def original_network(original_ckpt: str) -> Classifier:
    datamodule = make_datamodule()
    kwargs = model_kwargs(datamodule)
    mean, std = kwargs["normalization"]
    network = build_network("tiny_cnn", C, width=0.5, mean=mean, std=std)
    load_network_weights(network, original_ckpt, "tiny_cnn")
    return network.eval()


def forget_data() -> tuple[torch.Tensor, torch.Tensor]:
    datamodule = make_datamodule()
    datamodule.setup("fit")
    images, targets, _ = datamodule.splits["forget"]
    return images.float() / 255 if images.dtype == torch.uint8 else images, targets


def accuracy(network: nn.Module, split: str) -> float:
    """Eval-mode accuracy of ``network`` on one split of the synthetic class-wise request (no
    attack fitted: cheaper than ``trainer.test``)."""
    datamodule = make_datamodule()
    datamodule.setup("fit")
    images, targets, _ = datamodule.splits[split]
    images = images.float() / 255 if images.dtype == torch.uint8 else images
    was_training = network.training
    network.eval()
    with torch.no_grad():
        correct = (network(images).argmax(1) == targets).float().mean().item()
    network.train(was_training)
    return correct


def batchnorm_stats(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}


def fit(module: LightningModule, root: Path, epochs: int = 1, ckpt_path: str | None = None,
        **trainer_kwargs: Any) -> Trainer:
    seed_everything(0)
    callbacks = trainer_kwargs.get("callbacks", [])
    trainer_kwargs.setdefault("enable_checkpointing",
                              any(isinstance(c, ModelCheckpoint) for c in callbacks))
    trainer_kwargs.setdefault("limit_val_batches", 0)
    trainer = make_trainer(root, max_epochs=epochs, **trainer_kwargs)
    trainer.fit(module, datamodule=make_datamodule(), ckpt_path=ckpt_path)
    return trainer


# A hand-made linear classifier on 1×1×2 images, so every quantity has a closed form:
# logits = W·u + b with u = (x − 0.5) / 0.25.
MEAN, STD = 0.5, 0.25
W0 = torch.tensor([[2.0, -1.0], [-1.0, 2.0], [0.5, 0.5]])
B0 = torch.tensor([0.0, 0.0, 0.1])
W1 = W0 + torch.tensor([[0.3, 0.0], [0.0, -0.2], [0.1, 0.1]])  # "the network being trained"
X = torch.tensor([[0.7, 0.3], [0.3, 0.7], [0.5, 0.55], [0.9, 0.1]]).view(4, 1, 1, 2)
Y = torch.tensor([0, 1, 2, 0])


def linear_classifier(weight: torch.Tensor, bias: torch.Tensor) -> Classifier:
    linear = nn.Linear(2, 3)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return Classifier(nn.Flatten(), linear, [MEAN], [STD], [], lambda module: None)


def closed_form_curvature(weight: torch.Tensor, bias: torch.Tensor, h: float) -> torch.Tensor:
    """CURE's curvature of the batch-mean cross-entropy of a linear classifier, in normalised
    coordinates: ∇_u CE = W^T(p − e_y) / B, so the gradient difference along
    z = h·sign(g)/‖sign(g)‖ is W^T(p(u + z) − p(u)) / B."""
    u = (X.flatten(1) - MEAN) / STD
    p = (u @ weight.T + bias).softmax(1)
    gradient = (p - F.one_hot(Y, 3).float()) @ weight / len(Y)
    direction = gradient.detach().sign()
    z = h * direction / direction.norm(dim=1, keepdim=True)
    shifted = ((u + z) @ weight.T + bias).softmax(1)
    return ((shifted - p) @ weight / len(Y)).norm(dim=1)


def closed_form_neighbours(bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FGSM on the linear original: ∇_x CE ∝ W0^T(p − e_y) (std > 0), one step of ``bound``,
    clipped to [0, 1]; returns the neighbour labels and the original's probabilities there."""
    u = (X.flatten(1) - MEAN) / STD
    p = (u @ W0.T + B0).softmax(1)
    step = ((p - F.one_hot(Y, 3).float()) @ W0).sign()
    adversarial = (X.flatten(1) + bound * step).clamp(0, 1)
    probs = (((adversarial - MEAN) / STD) @ W0.T + B0).softmax(1)
    return probs.argmax(1), probs


def shrink_on_linear(**kwargs: Any) -> BoundaryShrink:
    module = BoundaryShrink(arch="tiny_cnn", num_classes=3, in_channels=1, **kwargs)
    module.network = linear_classifier(W1, B0)
    module.frozen_copy("original", linear_classifier(W0, B0))
    return module


# ---------------------------------------------------------------------- the maths
def test_neighbour_labels_follow_the_bound(original_ckpt: str) -> None:
    network = original_network(original_ckpt)
    images, targets = forget_data()
    with torch.no_grad():
        clean = network(images).argmax(1)
    assert (clean == targets).float().mean() > 0.9  # the original knows the forget class
    labels = {}
    for bound in (1e-3, 0.3):
        adversarial = adversarial_neighbours(network, images, targets, bound)
        # One signed step: every pixel moves by exactly ±bound unless [0, 1] clips it there.
        full_step = ((adversarial - images).abs() - bound).abs() < 1e-6
        clipped = (adversarial == 0) | (adversarial == 1)
        assert (full_step | clipped).all() and clipped.any()
        assert ((adversarial - images).abs()[clipped] <= bound).all()
        with torch.no_grad():
            labels[bound] = network(adversarial).argmax(1)
    assert torch.equal(labels[1e-3], clean)  # a tiny step crosses no boundary
    assert (labels[0.3] != targets).float().mean() > 0.8  # a large one reaches a neighbour
    assert all(p.grad is None for p in network.parameters())  # autograd.grad on inputs only


def test_pgd_stays_in_the_ball(original_ckpt: str) -> None:
    network = original_network(original_ckpt)
    images, targets = forget_data()
    adversarial = adversarial_neighbours(network, images, targets, 0.1, "pgd", step=0.04, iters=4)
    # Four steps of 0.04 would reach 0.16: the projection holds them at the 0.1 ball's surface.
    distance = (adversarial - images).abs()
    assert distance.max() == pytest.approx(0.1, abs=1e-6)
    assert ((distance - 0.1).abs() < 1e-6).float().mean() > 0.25
    assert adversarial.min() >= 0 and adversarial.max() <= 1  # images span [0, 1]: clipped


def test_margin_weights_match_the_formula() -> None:
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]))
    targets = torch.tensor([0, 0, 2])
    # p_other - p_target: 0.3-0.6 (target top-1), 0.5-0.2 (target outside top-2), 0.1-0.8
    margin = torch.tensor([-0.3, 0.3, -0.7])
    expected = 3 * torch.sigmoid(5 * (margin - 0.5))
    torch.testing.assert_close(margin_weights(logits, targets), expected)


def test_curvature_matches_the_closed_form_and_is_differentiable() -> None:
    network = linear_classifier(W1, B0)
    std: Any = network.normalize.std
    reference = curvature(network, X, Y, h=0.9, std=std)
    torch.testing.assert_close(reference, closed_form_curvature(W1, B0, 0.9))
    # With the graph kept, its gradient with respect to the weights is the closed form's.
    current = curvature(network, X, Y, h=0.9, std=std, create_graph=True)
    current.sum().backward()
    weight = W1.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(closed_form_curvature(weight, B0, 0.9).sum(), weight)
    torch.testing.assert_close(network.classifier.weight.grad, expected)


def test_widen_and_prune_round_trip() -> None:
    linear = nn.Linear(6, C)
    row = shadow_row(6, C, seed=3)
    torch.testing.assert_close(row, shadow_row(6, C, seed=3))  # seeded: ranks and resumes agree
    assert not torch.equal(row, shadow_row(6, C, seed=4))
    wider = widen_classifier(linear, row)
    assert wider.out_features == C + 1
    torch.testing.assert_close(wider.weight[:C], linear.weight)
    torch.testing.assert_close(wider.weight[C:], row)
    assert wider.bias[C] == 0
    pruned, weight, bias = prune_classifier(wider, C)
    torch.testing.assert_close(pruned.weight, linear.weight)
    torch.testing.assert_close(pruned.bias, linear.bias)
    torch.testing.assert_close(weight, row)
    assert bias is not None and bias.shape == (1,)


# ----------------------------------------------------------------- Boundary Shrink
def test_shrink_frozen_original_unchanged_and_in_eval(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = BoundaryShrink(original=original_ckpt, lr=0.05, bound=0.3, bn_mode="train",
                            **model_kwargs(datamodule))
    trainer = fit(module, tmp_path, epochs=2, limit_val_batches=1)
    frozen: Any = module.frozen["original"]
    assert not any(m.training for m in frozen.modules())
    assert not any(p.requires_grad for p in frozen.parameters())
    for key, value in original_network(original_ckpt).state_dict().items():
        torch.testing.assert_close(frozen.state_dict()[key], value, msg=key)
    assert trainer.callback_metrics["train/attack_success"] > 0.8  # bound 0.3 always succeeds


@pytest.mark.parametrize("cls", [BoundaryShrink, BoundaryExpanding])
def test_batchnorm_modes(cls: type, original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    before = batchnorm_stats(original_network(original_ckpt))
    after = {}
    for mode in ("frozen", "train"):
        module = cls(original=original_ckpt, bn_mode=mode, lr=1e-3, **model_kwargs(datamodule))
        # Validation in between: the frozen mode must survive Lightning's eval/train switches.
        fit(module, tmp_path / mode, epochs=2, limit_val_batches=1 if mode == "frozen" else 0)
        after[mode] = batchnorm_stats(module.network)
    assert before and all(torch.equal(after["frozen"][k], v) for k, v in before.items())
    assert any(not torch.equal(after["train"][k], v) for k, v in before.items())


def test_shrink_forgets_the_class(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = BoundaryShrink(original=original_ckpt, bound=0.2, lr=0.01,
                            **model_kwargs(datamodule))
    network = original_network(original_ckpt)
    assert accuracy(network, "forget") > 0.9 and accuracy(network, "forget_test") > 0.9
    fit(module, tmp_path, epochs=5)
    assert accuracy(module.network, "forget") < 0.2
    assert accuracy(module.network, "forget_test") < 0.2
    assert accuracy(module.network, "retain_test") > 0.8  # the other classes survive


# training_step called without a Trainer: its self.log calls warn and do nothing.
WITHOUT_TRAINER = pytest.mark.filterwarnings("ignore:You are trying to .self.log")


def forget_batch() -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return {"forget": (X, Y, torch.arange(len(Y)))}


@WITHOUT_TRAINER
def test_shrink_loss_is_cross_entropy_towards_the_neighbours() -> None:
    neighbours, _ = closed_form_neighbours(0.3)
    assert (neighbours != Y).any() and (neighbours == Y).any()  # the example has both
    logits = ((X.flatten(1) - MEAN) / STD) @ W1.T + B0
    loss = shrink_on_linear(bound=0.3).training_step(forget_batch(), 0)
    torch.testing.assert_close(loss, F.cross_entropy(logits, neighbours))


@WITHOUT_TRAINER
def test_shrink_margin_reweighting_weights_each_sample() -> None:
    # w = 3·σ(5·(p_other − p_neighbour − 0.5)) from the original's probabilities at x'.
    neighbours, probs = closed_form_neighbours(0.3)
    top2 = probs.sort(1, descending=True).values[:, :2]
    weights = 3 * torch.sigmoid(5 * (top2[:, 1] - top2[:, 0] - 0.5))
    logits = ((X.flatten(1) - MEAN) / STD) @ W1.T + B0
    per_sample = F.cross_entropy(logits, neighbours, reduction="none")
    loss = shrink_on_linear(bound=0.3, margin_reweight=True).training_step(forget_batch(), 0)
    torch.testing.assert_close(loss, (weights * per_sample).mean())
    assert not torch.allclose(loss, per_sample.mean(), rtol=0.05)


@WITHOUT_TRAINER
def test_shrink_curvature_adds_the_distance_to_the_original_curvature() -> None:
    # loss = CE(f(x), y_nbi) + λ·‖c_0 − c_w‖₂, curvatures at the true labels; the regulariser's
    # gradient reaches the trained weights.
    neighbours, _ = closed_form_neighbours(0.3)
    weight = W1.clone().requires_grad_(True)
    logits = ((X.flatten(1) - MEAN) / STD) @ weight.T + B0
    distance = torch.linalg.vector_norm(closed_form_curvature(W0, B0, 0.5)
                                        - closed_form_curvature(weight, B0, 0.5))
    expected = F.cross_entropy(logits, neighbours) + 0.7 * distance
    assert distance > 1e-3
    module = shrink_on_linear(bound=0.3, curvature_weight=0.7, curvature_h=0.5)
    loss = module.training_step(forget_batch(), 0)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    (gradient,) = torch.autograd.grad(expected, weight)
    torch.testing.assert_close(module.network.classifier.weight.grad, gradient)


def test_shrink_enhanced_variants_forget_the_class(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = BoundaryShrink(original=original_ckpt, bound=0.2, lr=0.01, attack="pgd", step=0.05,
                            iters=3, curvature_weight=0.7, margin_reweight=True,
                            **model_kwargs(datamodule))
    fit(module, tmp_path, epochs=3)
    assert accuracy(module.network, "forget") < 0.2
    assert accuracy(module.network, "retain_test") > 0.8


# -------------------------------------------------------------- Boundary Expanding
class HeadProbe(Callback):
    """Records the head at the start of training and stops after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.head: torch.Tensor | None = None

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        self.head = pl_module.network.classifier.weight.detach().clone()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stop_after is not None and trainer.current_epoch + 1 >= self.stop_after:
            trainer.should_stop = True


def test_expanding_widens_trains_and_prunes(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    original = original_network(original_ckpt)
    module = BoundaryExpanding(original=original_ckpt, lr=1e-3, **model_kwargs(datamodule))
    probe = HeadProbe()
    fit(module, tmp_path, epochs=1, callbacks=[probe])
    assert probe.head is not None and probe.head.shape[0] == C + 1
    torch.testing.assert_close(probe.head[:C], original.classifier.weight)
    torch.testing.assert_close(probe.head[C:], shadow_row(probe.head.shape[1], C, seed=0))
    assert module.network.classifier.out_features == C
    assert module(torch.rand(2, 3, 12, 12)).shape == (2, C)
    network = build_network("tiny_cnn", C, width=0.5)
    network.load_state_dict(torch.load(module.export_network(tmp_path / "n.pt"),
                                       weights_only=True))


def test_expanding_checkpoints_resume_and_load(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = BoundaryExpanding(original=original_ckpt, lr=1e-3, **model_kwargs(datamodule))
    fit(module, tmp_path, epochs=3, callbacks=[ModelCheckpoint(tmp_path / "a", save_last=True),
                                               HeadProbe(stop_after=1)])
    path = tmp_path / "a" / "last.ckpt"
    raw = torch.load(path, weights_only=True)
    # Every checkpoint's network loads into the original architecture...
    assert raw["state_dict"]["network.classifier.weight"].shape[0] == C
    load_network_weights(build_network("tiny_cnn", C, width=0.5), path, "tiny_cnn")
    # ...and holds the trained shadow row, which a resumed fit puts back before training.
    saved = raw["unlearn_pl"]["shadow_class"]["weight"]
    assert not torch.equal(saved, shadow_row(saved.shape[1], C, seed=0))
    resumed = BoundaryExpanding(original=original_ckpt, lr=1e-3, **model_kwargs(datamodule))
    probe = HeadProbe()
    fit(resumed, tmp_path, epochs=2, callbacks=[probe], ckpt_path=str(path))
    assert probe.head is not None
    torch.testing.assert_close(probe.head[C:], saved)
    torch.testing.assert_close(probe.head[:C], raw["state_dict"]["network.classifier.weight"])
    assert resumed.network.classifier.out_features == C

    # A checkpoint holding a widened head (another writer) loads pruned.
    widened = dict(raw)
    widened["state_dict"] = dict(raw["state_dict"])
    for key, extra in (("weight", saved), ("bias", raw["unlearn_pl"]["shadow_class"]["bias"])):
        full = f"network.classifier.{key}"
        widened["state_dict"][full] = torch.cat([raw["state_dict"][full], extra])
    widened["unlearn_pl"] = {"fit_seconds": 1.0}
    torch.save(widened, tmp_path / "widened.ckpt")
    loaded = BoundaryExpanding.load_from_checkpoint(tmp_path / "widened.ckpt")
    torch.testing.assert_close(loaded.network.classifier.weight,
                               raw["state_dict"]["network.classifier.weight"])
    assert loaded._shadow is not None
    torch.testing.assert_close(loaded._shadow[0], saved)


def test_expanding_forgets_the_class(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = BoundaryExpanding(original=original_ckpt, lr=0.01, **model_kwargs(datamodule))
    network = original_network(original_ckpt)
    assert accuracy(network, "forget") > 0.9 and accuracy(network, "forget_test") > 0.9
    fit(module, tmp_path, epochs=3)
    assert module.network.classifier.out_features == C
    assert accuracy(module.network, "forget") < 0.2
    assert accuracy(module.network, "forget_test") < 0.2
    assert accuracy(module.network, "retain_test") > 0.4  # C = 4: chance is 0.25


# ------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("cls", [BoundaryShrink, BoundaryExpanding])
def test_refusals(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    datamodule = make_datamodule()
    kwargs = model_kwargs(datamodule)
    with pytest.raises(ValueError, match="multilabel"):
        cls(**{**kwargs, "task": "multilabel"})
    if cls is BoundaryShrink:
        for bound in (0.0, -0.1):
            with pytest.raises(ValueError, match="bound"):
                cls(bound=bound, **kwargs)

    import unlearn_pl.methods.base as base

    def sequential_head(*args: Any, **kw: Any) -> Classifier:
        network = build_network(*args, **kw)
        network.classifier = nn.Sequential(network.classifier)  # type: ignore[assignment]
        return network

    monkeypatch.setattr(base, "build_network", sequential_head)
    with pytest.raises(TypeError, match="nn.Linear"):
        cls(**kwargs)
