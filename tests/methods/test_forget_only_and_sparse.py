"""DELETE's masked-teacher target and training, and l1-sparse's decaying L1 penalty."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from tests.conftest import make_datamodule, make_trainer, model_kwargs
from unlearn_pl.methods import DELETE, L1Sparse
from unlearn_pl.methods.delete import masked_target_logits


def test_the_target_moves_the_true_class_mass_to_the_others_in_the_teachers_proportions() -> None:
    teacher = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 3.0, 0.5, 0.0]])
    targets = torch.tensor([0, 1])
    target = masked_target_logits(teacher, targets).softmax(1)
    assert target[0, 0] == 0 and target[1, 1] == 0
    torch.testing.assert_close(target.sum(1), torch.ones(2))
    others = teacher[0, 1:].softmax(0)  # the teacher's distribution over the other classes
    torch.testing.assert_close(target[0, 1:], others)


def test_delete_forgets_on_forget_data_alone(original_ckpt: str, tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    module = DELETE(original=original_ckpt, lr=0.05, **model_kwargs(datamodule))
    datamodule.setup("fit")
    images, targets, _ = datamodule.splits["forget"]
    x = images.float() / 255

    def forget_accuracy() -> float:
        with torch.no_grad():
            return float((module.eval().network(x).argmax(1) == targets).float().mean())

    before = forget_accuracy()
    trainer = make_trainer(tmp_path, max_epochs=5, enable_checkpointing=False,
                           limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    assert before > 0.5 and forget_accuracy() < 0.2
    # Only the forget split was trained on.
    assert DELETE.train_splits == ("forget",)


class _Alphas(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object
                           ) -> None:
        self.values.append(float(trainer.callback_metrics["train/l1_alpha"]))


@pytest.mark.parametrize("decay", ["step", "epoch"])
def test_the_l1_strength_decays_to_zero(original_ckpt: str, tmp_path: Path, decay: str) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    module = L1Sparse(original=original_ckpt, alpha=1e-2, decay=decay,
                      **model_kwargs(datamodule))
    alphas = _Alphas()
    trainer = make_trainer(tmp_path, max_epochs=2, enable_checkpointing=False,
                           limit_val_batches=0, callbacks=[alphas])
    trainer.fit(module, datamodule=datamodule)
    steps = len(alphas.values)
    if decay == "step":
        expected = [1e-2 * (1 - t / steps) for t in range(steps)]
    else:
        expected = [1e-2 * (1 - (t // (steps // 2)) / 2) for t in range(steps)]
    assert alphas.values == pytest.approx(expected)


def test_the_l1_penalty_shrinks_the_weights(original_ckpt: str, tmp_path: Path) -> None:
    def l1_after(alpha: float) -> float:
        seed_everything(0)
        datamodule = make_datamodule()
        module = L1Sparse(original=original_ckpt, alpha=alpha, **model_kwargs(datamodule))
        trainer = make_trainer(tmp_path / str(alpha), max_epochs=2,
                               enable_checkpointing=False, limit_val_batches=0)
        trainer.fit(module, datamodule=datamodule)
        return float(sum(p.detach().abs().sum() for p in module.network.parameters()))

    assert l1_after(5e-2) < 0.9 * l1_after(0.0)
    with pytest.raises(ValueError, match="alpha"):
        L1Sparse(alpha=-1.0)
