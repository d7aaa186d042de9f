"""SalUn's weight-saliency mask: the ranking, and weights outside the mask that end bit-identical
to the original after training with momentum and weight decay, also across a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from tests.conftest import Interrupt, make_datamodule, make_trainer, model_kwargs
from unlearn_pl.methods import SalUn
from unlearn_pl.methods.saliency import saliency_mask


def test_the_mask_keeps_the_largest_summed_forget_gradients() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    mask = saliency_mask(network, [(x[:5], y[:5]), (x[5:], y[5:])], ratio=0.25)
    summed = {n: torch.zeros_like(p) for n, p in network.named_parameters()}
    for part in (slice(0, 5), slice(5, 8)):
        network.zero_grad()
        (-nn.functional.cross_entropy(network(x[part]), y[part])).backward()
        for n, p in network.named_parameters():
            summed[n] += p.grad
    scores = torch.cat([s.abs().flatten() for s in summed.values()])
    kept = torch.cat([m.flatten() for m in mask.values()])
    assert int(kept.sum()) == round(0.25 * scores.numel())
    assert scores[kept].min() >= scores[~kept].max()


def _run(original: str, root: Path, epochs: int, stop_after: int | None = None,
         ckpt_path: str | None = None) -> SalUn:
    seed_everything(0)
    datamodule = make_datamodule()
    module = SalUn(original=original, ratio=0.3, lr=0.05, **model_kwargs(datamodule))
    callbacks = [ModelCheckpoint(dirpath=root, save_last=True)]
    if stop_after is not None:
        callbacks.append(Interrupt(stop_after))
    trainer = make_trainer(root, max_epochs=epochs, limit_val_batches=0, callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return module


def test_weights_outside_the_mask_stay_the_originals(original_ckpt: str, tmp_path: Path) -> None:
    module = _run(original_ckpt, tmp_path / "run", epochs=3)
    original = SalUn(original=original_ckpt, **model_kwargs(make_datamodule())).network
    masks = [c for c in module.trainer.callbacks if type(c).__name__ == "SaliencyMask"]
    assert len(masks) == 1
    changed = kept = 0
    for (name, after), before in zip(module.network.named_parameters(),
                                     original.parameters(), strict=True):
        frozen = ~masks[0].mask[name].cpu()
        assert torch.equal(after.detach()[frozen], before.detach()[frozen]), name
        changed += int((after.detach()[~frozen] != before.detach()[~frozen]).sum())
        kept += int((~frozen).sum())
    assert changed > 0.5 * kept  # the salient weights did train
    share = kept / sum(p.numel() for p in module.network.parameters())
    assert share == pytest.approx(0.3, abs=0.01)


def test_a_resumed_run_keeps_its_mask(original_ckpt: str, tmp_path: Path) -> None:
    straight = _run(original_ckpt, tmp_path / "straight", epochs=2)
    _run(original_ckpt, tmp_path / "first", epochs=2, stop_after=1)
    resumed = _run(original_ckpt, tmp_path / "second", epochs=2,
                   ckpt_path=str(tmp_path / "first" / "last.ckpt"))
    for key, value in straight.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value, msg=key)
