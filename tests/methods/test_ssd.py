"""Selective Synaptic Dampening: importances against a direct loop, the dampening rule, and the
deterministic variant's independence of batch order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from torch import nn

from tests.conftest import make_datamodule, make_trainer, model_kwargs
from unlearn_pl.methods import SSD
from unlearn_pl.methods.ssd import dampen, importances


def _data() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    return network, torch.randn(10, 12), torch.randint(0, 3, (10,))


def test_importances_match_a_direct_loop() -> None:
    network, x, y = _data()
    per_sample = importances(network, [(x[:4], y[:4]), (x[4:], y[4:])], variant="deterministic")
    batch_mean = importances(network, [(x[:4], y[:4]), (x[4:], y[4:])], variant="published")
    expected_sample = {n: torch.zeros_like(p) for n, p in network.named_parameters()}
    expected_batch = {n: torch.zeros_like(p) for n, p in network.named_parameters()}
    for i in range(10):
        network.zero_grad()
        nn.functional.cross_entropy(network(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in network.named_parameters():
            expected_sample[n] += p.grad.pow(2)
    for part in (slice(0, 4), slice(4, 10)):
        network.zero_grad()
        nn.functional.cross_entropy(network(x[part]), y[part]).backward()
        for n, p in network.named_parameters():
            expected_batch[n] += p.grad.pow(2)
    for n in expected_sample:
        torch.testing.assert_close(per_sample[n], expected_sample[n])
        torch.testing.assert_close(batch_mean[n], expected_batch[n])
    # The published importance depends on which samples share a batch; the per-sample one not.
    regrouped = importances(network, [(x[:7], y[:7]), (x[7:], y[7:])], variant="published")
    assert not torch.allclose(regrouped["1.weight"], batch_mean["1.weight"])
    again = importances(network, [(x[:7], y[:7]), (x[7:], y[7:])], variant="deterministic")
    torch.testing.assert_close(again["1.weight"], per_sample["1.weight"])


def test_dampening_scales_only_the_selected_parameters() -> None:
    network, _, _ = _data()
    before = {n: p.detach().clone() for n, p in network.named_parameters()}
    full = {n: torch.ones_like(p) for n, p in network.named_parameters()}
    forget = {n: torch.full_like(p, 0.5) for n, p in network.named_parameters()}
    forget["1.weight"][0, :3] = 40.0  # > α·I_D = 10: dampened by β = 1/40
    assert dampen(network, forget, full, alpha=10.0, lam=1.0) == 3
    weight = network[1].weight.detach()
    torch.testing.assert_close(weight[0, :3], before["1.weight"][0, :3] / 40)
    assert torch.equal(weight[0, 3:], before["1.weight"][0, 3:])
    assert torch.equal(network[1].bias.detach(), before["1.bias"])


def _ssd_weights(original: str, root: Path, variant: str, shuffle_seed: int) -> dict:
    seed_everything(0)
    datamodule = make_datamodule(shuffle_seed=shuffle_seed)
    module = SSD(original=original, variant=variant, alpha=2.0, importance_batch_size=16,
                 **model_kwargs(datamodule))
    trainer = make_trainer(root, max_epochs=1, limit_train_batches=1,
                           enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    assert module.applied and module.dampened > 0
    return {k: v.clone() for k, v in module.network.state_dict().items()}


def test_the_deterministic_variant_ignores_the_batch_order(original_ckpt: str,
                                                           tmp_path: Path) -> None:
    one = _ssd_weights(original_ckpt, tmp_path / "a", "deterministic", shuffle_seed=1)
    two = _ssd_weights(original_ckpt, tmp_path / "b", "deterministic", shuffle_seed=2)
    for name, value in one.items():
        assert torch.equal(value, two[name]), name
    # The published variant squares batch means over the shuffled batches: another order,
    # other importances, other weights.
    three = _ssd_weights(original_ckpt, tmp_path / "c", "published", shuffle_seed=1)
    four = _ssd_weights(original_ckpt, tmp_path / "d", "published", shuffle_seed=2)
    assert any(not torch.equal(value, four[name]) for name, value in three.items())
    with pytest.raises(ValueError, match="variant"):
        SSD(variant="fast")  # type: ignore[arg-type]
