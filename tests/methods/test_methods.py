"""Every method found in the package runs the same smoke, checkpoint and resume checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import Interrupt, build_method, make_datamodule, make_trainer, model_kwargs
from unlearn_pl.methods import Train, UnlearningModule, available_methods
from unlearn_pl.networks import build_network

METHODS = available_methods()
REQUESTS = {"class_wise": {"forget_classes": [1]}, "sample_wise": {"forget_fraction": 0.25}}


def network_state(module: UnlearningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.network.state_dict().items()}


def test_methods_are_discovered() -> None:
    assert {"Train", "FineTune"} <= set(METHODS)


@pytest.mark.parametrize("request_kind", sorted(REQUESTS))
@pytest.mark.parametrize("name", sorted(METHODS))
def test_smoke_fit_and_test(name: str, request_kind: str, original_ckpt: str,
                            tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule(**REQUESTS[request_kind])
    module = build_method(METHODS[name], original_ckpt, datamodule)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=3,
                           enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    before = build_method(METHODS[name], original_ckpt, datamodule)  # holds the original's weights
    changed = any(not torch.equal(a, b) for a, b in
                  zip(network_state(before).values(), network_state(module).values(), strict=True))
    assert changed, f"{name} did not change the network"
    assert all(torch.isfinite(p).all() for p in module.network.parameters())
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    expected = {"test/acc_retain", "test/acc_forget", "test/acc_unseen", "test/mia",
                "test/forgetting_score", "test/nomus"}
    if request_kind == "class_wise":
        expected |= {"test/acc_retain_test", "test/acc_forget_test"}
    assert expected <= set(results)
    assert module.fit_seconds > 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_checkpoint_round_trip(name: str, original_ckpt: str, tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    module = build_method(METHODS[name], original_ckpt, datamodule)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=2,
                           limit_val_batches=1, callbacks=[checkpoint])
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "ckpt" / "last.ckpt"
    raw = torch.load(path, weights_only=True)
    assert not [k for k in raw["state_dict"] if k.startswith("frozen.")]
    assert raw["unlearn_pl"]["fit_seconds"] > 0
    loaded = METHODS[name].load_from_checkpoint(path)
    for key, value in network_state(module).items():
        torch.testing.assert_close(loaded.network.state_dict()[key], value)
    # The exported network loads into the plain architecture with the original class count.
    exported = module.export_network(tmp_path / "network.pt")
    network = build_network("tiny_cnn", datamodule.num_classes, width=0.5)
    network.load_state_dict(torch.load(exported, weights_only=True))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_resume_matches_uninterrupted_run(name: str, original_ckpt: str, tmp_path: Path) -> None:
    def run(folder: str, stop_after: int | None = None,
            ckpt_path: str | None = None) -> UnlearningModule:
        seed_everything(0)
        datamodule = make_datamodule()
        module = build_method(METHODS[name], original_ckpt, datamodule)
        callbacks: list[Callback] = [ModelCheckpoint(dirpath=tmp_path / folder, save_last=True)]
        if stop_after is not None:
            callbacks.append(Interrupt(stop_after))
        trainer = make_trainer(tmp_path, max_epochs=3, limit_train_batches=3,
                               limit_val_batches=1, callbacks=callbacks)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        assert trainer.current_epoch == (stop_after or 3)
        return module

    straight = run("straight")
    run("first", stop_after=1)
    resumed = run("second", ckpt_path=str(tmp_path / "first" / "last.ckpt"))
    for key, value in network_state(straight).items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value, msg=key)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_multilabel_tasks_run_or_are_refused_clearly(name: str, tmp_path: Path) -> None:
    """Multilabel (several binary labels per image, MUCAC-style): methods that support it train
    and evaluate on the per-sample BCE; class-based ones refuse it before any work."""
    seed_everything(0)
    datamodule = make_datamodule(multilabel=True, forget_fraction=0.25)
    cls = METHODS[name]
    kwargs = model_kwargs(datamodule)
    assert kwargs["task"] == "multilabel"
    if not cls.supports_multilabel:
        with pytest.raises(ValueError, match="multilabel"):
            cls(**kwargs)
        return
    original = Train(train_on="full", **kwargs)  # an untrained multilabel original suffices
    path = tmp_path / "original.pt"
    torch.save(original.network.state_dict(), path)
    module = cls(**kwargs) if cls is Train else cls(original=str(path), **kwargs)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=2,
                           enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    results = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    # Multilabel accuracy is the share of labels right, computed here from the network.
    images, targets, _ = datamodule.splits["unseen"]
    with torch.no_grad():
        logits = module.eval().network(images.float() / 255)
    expected = ((logits > 0) == targets.bool()).float().mean()
    assert results["test/acc_unseen"] == pytest.approx(float(expected), abs=1e-6)
    assert "test/forgetting_score" in results
