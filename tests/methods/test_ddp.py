"""Every method trains under DDP on CPU (2 processes, gloo), its ranks stay in agreement, and
nothing it logs draws Lightning's "use sync_dist=True" warning (a metric logged per rank)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from tests.conftest import build_method, make_datamodule, make_trainer
from unlearn_pl.methods import available_methods

METHODS = available_methods()


class RanksAgree(Callback):
    """Asserts inside the workers that every rank holds the same weights and evaluation, and
    turns Lightning's warning about a metric logged without sync (which it emits on rank zero
    when epoch-level values are collected) into an error there."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        warnings.filterwarnings("error", message=r".*sync_dist=True.*")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        flat = torch.cat([p.detach().flatten().float() for p in pl_module.network.parameters()])
        gathered = pl_module.all_gather(flat)
        assert gathered.shape[0] == 2
        torch.testing.assert_close(gathered[0], gathered[1], msg="ranks hold different weights")
        results = torch.tensor(list(pl_module.last_evaluation.values())[:-1])  # not wall time
        gathered_results = pl_module.all_gather(results)
        torch.testing.assert_close(gathered_results[0], gathered_results[1])
        path = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt"
        torch.save(flat, path)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_ddp_two_cpu_processes(name: str, original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule(forget_fraction=0.25)
    module = build_method(METHODS[name], original_ckpt, datamodule)
    trainer = make_trainer(tmp_path, strategy="ddp_spawn", devices=2, max_epochs=1,
                           limit_train_batches=2, enable_checkpointing=False,
                           callbacks=[RanksAgree()])
    trainer.fit(module, datamodule=datamodule)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    torch.testing.assert_close(ranks[0], ranks[1])
