"""StopWhenForgotten: stops when the forget set looks unseen on the probe, rolls back a run that
costs too much held-out accuracy, agrees across ranks and stays stopped on resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from tests.conftest import make_datamodule, make_trainer, model_kwargs
from unlearn_pl.callbacks import StopWhenForgotten
from unlearn_pl.methods import FineTune, NegGrad


def _fit(module: Any, datamodule: Any, root: Path, callback: StopWhenForgotten,
         max_steps: int = 30, ckpt_path: str | None = None, **overrides: Any) -> Any:
    checkpoint = ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
    trainer = make_trainer(root, max_steps=max_steps, max_epochs=-1, val_check_interval=1,
                           check_val_every_n_epoch=None, callbacks=[callback, checkpoint],
                           **overrides)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def test_defaults_follow_the_request(original_ckpt: str) -> None:
    callback = StopWhenForgotten()  # one instance, two fits: each fit's request decides
    for request, monitor, threshold in (({"forget_classes": [1]}, "val/acc_forget", 0.02),
                                        ({"forget_fraction": 0.25}, "val/forgetting_score",
                                         0.1)):
        datamodule = make_datamodule(**request)
        trainer = SimpleNamespace(datamodule=datamodule)
        callback.setup(trainer, FineTune(**model_kwargs(datamodule)), "fit")  # type: ignore[arg-type]
        assert (callback.monitor, callback.threshold) == (monitor, threshold)
    kept = StopWhenForgotten(monitor="val/mia_auc", threshold=0.55)
    kept.setup(SimpleNamespace(datamodule=datamodule),  # type: ignore[arg-type]
               FineTune(**model_kwargs(datamodule)), "fit")
    assert (kept.monitor, kept.threshold) == ("val/mia_auc", 0.55)


def test_stops_at_the_first_check_where_the_class_is_forgotten(original_ckpt: str,
                                                               tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    module = NegGrad(original=original_ckpt, lr=0.02, **model_kwargs(datamodule))
    callback = StopWhenForgotten(max_accuracy_drop=None, verbose=False)
    trainer = _fit(module, datamodule, tmp_path, callback)
    assert callback.stopped == "forgotten"
    assert 0 < callback.stop_step == trainer.global_step < 30
    assert trainer.callback_metrics["val/acc_forget"] <= 0.02
    # The weights of the stopping check are the result, and the checkpoint holds them.
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    for key, value in module.state_dict().items():
        if key.startswith("network."):
            torch.testing.assert_close(saved["state_dict"][key], value, msg=key)

    # Resumed with a longer budget, a stopped run stays stopped: no further step.
    resumed_module = NegGrad(original=original_ckpt, lr=0.02, **model_kwargs(datamodule))
    resumed = StopWhenForgotten(max_accuracy_drop=None, verbose=False)
    trainer = _fit(resumed_module, make_datamodule(), tmp_path / "again", resumed,
                   max_steps=60, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.stopped == "forgotten" and trainer.global_step == callback.stop_step
    for key, value in module.network.state_dict().items():
        torch.testing.assert_close(resumed_module.network.state_dict()[key], value, msg=key)


def test_start_accuracy_is_the_probes_own(original_ckpt: str, tmp_path: Path) -> None:
    """With weights that barely move, the first check's held-out accuracy is the start's."""
    datamodule = make_datamodule(forget_fraction=0.25)
    module = FineTune(original=original_ckpt, lr=1e-12, **model_kwargs(datamodule))
    callback = StopWhenForgotten(threshold=-1.0, verbose=False)  # never forgotten
    trainer = _fit(module, datamodule, tmp_path, callback, max_steps=1)
    assert callback.stopped is None
    assert callback.start_accuracy == pytest.approx(
        float(trainer.callback_metrics["val/acc_unseen"]), abs=1e-6)


def test_a_run_that_destroys_accuracy_is_rolled_back(original_ckpt: str,
                                                     tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule(forget_fraction=0.25)
    module = NegGrad(original=original_ckpt, lr=0.5, **model_kwargs(datamodule))
    callback = StopWhenForgotten(threshold=-1.0, max_accuracy_drop=0.05, verbose=False)
    trainer = _fit(module, datamodule, tmp_path, callback)
    assert callback.stopped == "accuracy" and trainer.global_step < 30
    assert callback.start_accuracy is not None
    # The damaged check was seen, and the network went back to weights within the tolerance.
    assert trainer.callback_metrics["val/acc_unseen"] < callback.start_accuracy - 0.05
    results = make_trainer(tmp_path / "check").validate(module, datamodule=datamodule,
                                                         verbose=False)[0]
    assert results["val/acc_unseen"] >= callback.start_accuracy - 0.05


def _fake_trainer(metrics: dict[str, float], decisions: list[tuple[bool, bool]],
                  others: bool) -> Any:
    """A trainer whose other ranks decide ``others``; records each (decision, all) asked."""
    def reduce_boolean_decision(decision: bool, all: bool = True) -> bool:
        decisions.append((decision, all))
        return (decision and others) if all else (decision or others)

    return SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING), sanity_checking=False,
                           callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
                           global_step=5, loggers=[], should_stop=False,
                           datamodule=SimpleNamespace(heldout_split="unseen"),
                           strategy=SimpleNamespace(
                               reduce_boolean_decision=reduce_boolean_decision))


def test_ranks_agree_forgotten_needs_all_damage_needs_one() -> None:
    module = SimpleNamespace(network=torch.nn.Linear(2, 2))
    callback = StopWhenForgotten(monitor="val/fs", threshold=0.1, verbose=False)
    callback.start_accuracy = 0.9
    fine = {"val/fs": 0.05, "val/acc_unseen": 0.9}
    decisions: list[tuple[bool, bool]] = []
    trainer = _fake_trainer(fine, decisions, others=False)  # another rank not yet forgotten
    callback.on_validation_end(trainer, module)  # type: ignore[arg-type]
    assert callback.stopped is None and not trainer.should_stop
    assert decisions == [(False, False), (True, True)]
    trainer = _fake_trainer({"val/fs": 0.5, "val/acc_unseen": 0.9}, [], others=True)
    callback.on_validation_end(trainer, module)  # another rank damaged: every rank stops
    assert callback.stopped == "accuracy" and trainer.should_stop


def test_accuracy_patience_waits_for_recovery_and_blocks_a_damaged_result() -> None:
    module = SimpleNamespace(network=torch.nn.Linear(2, 2))
    callback = StopWhenForgotten(monitor="val/fs", threshold=0.1, accuracy_patience=2,
                                 verbose=False)
    callback.start_accuracy = 0.9
    # Damaged and forgotten: no stop (a damaged network is no result); then it recovers.
    for metrics in ({"val/fs": 0.05, "val/acc_unseen": 0.5},
                    {"val/fs": 0.3, "val/acc_unseen": 0.88}):
        trainer = _fake_trainer(metrics, [], others=False)
        callback.on_validation_end(trainer, module)  # type: ignore[arg-type]
        assert callback.stopped is None
    assert callback.damaged_count == 0 and callback.wait_count == 0
    for _ in range(2):  # two damaged checks in a row stop it
        trainer = _fake_trainer({"val/fs": 0.3, "val/acc_unseen": 0.5}, [], others=False)
        callback.on_validation_end(trainer, module)  # type: ignore[arg-type]
    assert callback.stopped == "accuracy"


def test_bad_arguments_and_modules() -> None:
    with pytest.raises(ValueError, match="patience"):
        StopWhenForgotten(patience=0)
    with pytest.raises(ValueError, match="accuracy_patience"):
        StopWhenForgotten(accuracy_patience=0)
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        StopWhenForgotten(max_accuracy_drop=5)
    with pytest.raises(TypeError, match="UnlearningModule"):
        StopWhenForgotten().setup(SimpleNamespace(datamodule=None),  # type: ignore[arg-type]
                                  torch.nn.Linear(2, 2), "fit")  # type: ignore[arg-type]


def test_a_run_resumed_after_a_damaged_check_still_rolls_back(original_ckpt: str,
                                                              tmp_path: Path) -> None:
    def run(root: Path, max_steps: int, ckpt_path: str | None = None) -> tuple[Any, Any]:
        seed_everything(0)
        datamodule = make_datamodule(forget_fraction=0.25)
        module = NegGrad(original=original_ckpt, lr=0.2, **model_kwargs(datamodule))
        callback = StopWhenForgotten(threshold=-1.0, accuracy_patience=2, verbose=False)
        _fit(module, datamodule, root, callback, max_steps=max_steps, ckpt_path=ckpt_path)
        return module, callback

    straight, stop = run(tmp_path / "straight", 30)
    assert stop.stopped == "accuracy" and stop.stop_step is not None and stop.stop_step >= 2
    first, _ = run(tmp_path / "first", stop.stop_step - 1)  # ends after the first damaged check
    resumed, again = run(tmp_path / "second", 30, str(tmp_path / "first" / "ckpt" / "last.ckpt"))
    assert (again.stopped, again.stop_step) == ("accuracy", stop.stop_step)
    for key, value in straight.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value, msg=key)


class _RecordStop(StopWhenForgotten):
    """Writes each rank's decision to a file at the end of training (ddp_spawn workers)."""

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        path = Path(trainer.default_root_dir) / f"stop{trainer.global_rank}.pt"
        flat = torch.cat([p.detach().flatten() for p in pl_module.network.parameters()])
        torch.save({"stopped": self.stopped, "step": self.stop_step, "weights": flat}, path)


def test_ddp_ranks_stop_at_the_same_step_with_the_same_weights(original_ckpt: str,
                                                               tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = NegGrad(original=original_ckpt, lr=0.02, **model_kwargs(datamodule))
    trainer = make_trainer(tmp_path, strategy="ddp_spawn", devices=2, max_steps=30,
                           max_epochs=-1, val_check_interval=1, check_val_every_n_epoch=None,
                           enable_checkpointing=False,
                           callbacks=[_RecordStop(max_accuracy_drop=None, verbose=False)])
    trainer.fit(module, datamodule=datamodule)
    ranks = [torch.load(tmp_path / f"stop{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["stopped"] == ranks[1]["stopped"] == "forgotten"
    assert ranks[0]["step"] == ranks[1]["step"] < 30
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"])
