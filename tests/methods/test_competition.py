"""MSG and CT (the NeurIPS 2023 competition's solutions): MSG's small-gradient masks, its
re-initialised and slowed weights, the per-epoch triangle schedule, and CT's transposed kernels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from torch import nn

from tests.conftest import make_datamodule, make_trainer, model_kwargs
from unlearn_pl.methods import CT, MSG
from unlearn_pl.methods.competition import small_gradient_masks
from unlearn_pl.methods.optim import triangle


def _original_network(original: str, cls: type = MSG) -> nn.Module:
    return cls(original=original, **model_kwargs(make_datamodule())).network


def test_masks_select_each_kernels_smallest_retain_minus_forget_gradients() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Flatten(),
                            nn.LazyLinear(3))
    x, y = torch.randn(10, 3, 8, 8), torch.randint(0, 3, (10,))
    network(x)  # materialise the lazy layer
    retain, forget = [(x[:4], y[:4]), (x[4:6], y[4:6])], [(x[6:], y[6:])]
    masks = small_gradient_masks(network, retain, forget, rate=0.3)
    assert set(masks) == {"0.weight", "2.weight"}  # convolution weights only
    network.zero_grad()
    for images, targets in retain:
        nn.functional.cross_entropy(network(images), targets).backward()
    for images, targets in forget:
        (-nn.functional.cross_entropy(network(images), targets)).backward()
    for name, mask in masks.items():
        score = dict(network.named_parameters())[name].grad.abs()
        assert int(mask.sum()) == round(0.3 * mask.numel())
        assert score[mask].max() <= score[~mask].min()


def _msg(original: str, root: Path, **kwargs: Any) -> MSG:
    seed_everything(0)
    datamodule = make_datamodule()
    module = MSG(original=original, **{**model_kwargs(datamodule), **kwargs})
    trainer = make_trainer(root, max_epochs=2, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    return module


def test_msg_trains_only_the_reinitialised_weights_when_the_rest_is_frozen(
        original_ckpt: str, tmp_path: Path) -> None:
    module = _msg(original_ckpt, tmp_path, slow_factor=0.0, weight_decay=0.0, lr=0.05)
    original = dict(_original_network(original_ckpt).named_parameters())
    assert module.masks
    for name, param in module.network.named_parameters():
        if name not in module.masks:
            assert not torch.equal(param, original[name]), name  # BatchNorm, linear: trained
            continue
        mask = module.masks[name]
        assert torch.equal(param.detach()[~mask], original[name].detach()[~mask]), name
        assert (param.detach()[mask] != original[name].detach()[mask]).float().mean() > 0.99


def test_msg_slows_the_kept_weights(original_ckpt: str, tmp_path: Path) -> None:
    """The kept convolution weights move by slow_factor × what they would move unslowed (one
    plain SGD step, no momentum or decay, so the update is linear in the gradient)."""
    moves = {}
    for factor in (1.0, 0.1):
        seed_everything(0)
        datamodule = make_datamodule()
        module = MSG(original=original_ckpt, slow_factor=factor, lr=0.05, momentum=0.0,
                     weight_decay=0.0, scheduler="none", **model_kwargs(datamodule))
        trainer = make_trainer(tmp_path / str(factor), max_steps=1, limit_val_batches=0,
                               enable_checkpointing=False)
        trainer.fit(module, datamodule=datamodule)
        original = dict(_original_network(original_ckpt).named_parameters())
        moves[factor] = {n: (p.detach() - original[n].detach())[~module.masks[n]]
                         for n, p in module.network.named_parameters() if n in module.masks}
    for name, full in moves[1.0].items():
        torch.testing.assert_close(moves[0.1][name], 0.1 * full, rtol=1e-4, atol=1e-7)


class _LearningRates(Callback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_triangle_schedule_rises_then_falls_per_epoch(original_ckpt: str,
                                                      tmp_path: Path) -> None:
    assert [triangle(5)(e) for e in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    assert [triangle(2)(e) for e in range(2)] == pytest.approx([1, 0.5])
    datamodule = make_datamodule()
    module = MSG(original=original_ckpt, lr=0.03, **model_kwargs(datamodule))
    rates = _LearningRates()
    trainer = make_trainer(tmp_path, max_epochs=5, limit_train_batches=2, limit_val_batches=0,
                           enable_checkpointing=False, callbacks=[rates])
    trainer.fit(module, datamodule=datamodule)
    assert rates.seen == pytest.approx([0.01, 0.02, 0.03, 0.02, 0.01])


def test_triangle_needs_max_epochs(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = MSG(original=original_ckpt, **model_kwargs(datamodule))
    trainer = make_trainer(tmp_path, max_epochs=-1, max_steps=2, limit_val_batches=0)
    with pytest.raises(ValueError, match="trainer.max_epochs"):
        trainer.fit(module, datamodule=datamodule)


def test_ct_starts_from_the_transposed_kernels(original_ckpt: str, tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    module = CT(original=original_ckpt, lr=1e-9, momentum=0.0, weight_decay=0.0,
                **model_kwargs(datamodule))
    trainer = make_trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    original = _original_network(original_ckpt, CT)
    convs = [(a, b) for a, b in zip(module.network.modules(), original.modules(), strict=True)
             if isinstance(a, nn.Conv2d)]
    assert convs and module.transposed
    for after, before in convs:
        assert not torch.equal(before.weight, before.weight.transpose(2, 3))
        torch.testing.assert_close(after.weight, before.weight.transpose(2, 3), atol=1e-6,
                                   rtol=0)


@pytest.mark.parametrize("cls", [MSG, CT])
def test_networks_the_methods_cannot_change_are_refused(cls: type, original_ckpt: str) -> None:
    module = cls(original=original_ckpt, **model_kwargs(make_datamodule()))
    module.network = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))  # type: ignore[assignment]
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        module.setup_unlearning()
    if cls is CT:
        module.network = nn.Sequential(nn.Conv2d(3, 2, (3, 1)))  # type: ignore[assignment]
        with pytest.raises(ValueError, match="not square"):
            module.setup_unlearning()
