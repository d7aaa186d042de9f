"""DLFD and its dynamic forgetting strategy: the inner loop, the switch, resume, DDP and bf16."""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import unlearn_pl  # noqa: F401  (torchvision shim before lightning)

# isort: split
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from tests.conftest import Interrupt, make_datamodule, make_trainer, model_kwargs
from unlearn_pl.callbacks import DynamicForgetting
from unlearn_pl.losses import ot_distance
from unlearn_pl.methods import DLFD, FineTune
from unlearn_pl.methods.dlfd import dlfd_objective

EPSILON = 8 / 255


def build(original: str, datamodule: Any, **kwargs: Any) -> DLFD:
    module = DLFD(original=original, **{**model_kwargs(datamodule), **kwargs})
    module.setup("test")  # loads the original weights (no trainer needed)
    module._total_steps = 10.0  # the retain-weight schedule without a trainer
    return module


def batches(datamodule: Any, size: int = 16) -> tuple[torch.Tensor, ...]:
    datamodule.setup("fit")
    images, targets, ids = next(iter(datamodule.dataloader("retain", batch_size=size)))
    forget = next(iter(datamodule.dataloader("forget", batch_size=size)))[0]
    return images, targets, ids, forget


# --------------------------------------------------------------------------- the inner loop
def test_inner_loop_leaves_training_state_untouched(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    module = build(original_ckpt, datamodule, steps=3)
    images, targets, ids, forget = batches(datamodule)
    module.train()
    optimizer = torch.optim.SGD(module.network.parameters(), lr=0.1, momentum=0.9)
    module.loss(module(images), targets).backward()
    optimizer.step()  # gradients and momentum buffers now exist
    grads = {n: p.grad.clone() for n, p in module.network.named_parameters()}
    weights = {n: p.detach().clone() for n, p in module.network.named_parameters()}
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    buffers = {n: b.clone() for n, b in module.network.named_buffers()}
    assert any("running_mean" in n for n in buffers)

    delta, _ = module.perturb(images, targets, ids, forget)

    assert delta.abs().max() > 0
    assert all(m.training for m in module.network.modules())
    for name, parameter in module.network.named_parameters():
        assert torch.equal(parameter.grad, grads[name]), name
        assert torch.equal(parameter, weights[name]), name
    for name, buffer in module.network.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    after = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        assert torch.equal(after["state"][index]["momentum_buffer"], state["momentum_buffer"])

    optimizer.zero_grad(set_to_none=True)
    module.eval()
    module.perturb(images, targets, ids, forget)
    assert all(p.grad is None for p in module.network.parameters())
    assert not module.network.training  # the caller's mode is restored, whichever it was


@pytest.mark.parametrize("features", ["logits", "embedding"])
def test_perturbation_moves_retain_features_away_from_forget(original_ckpt: str,
                                                             features: str) -> None:
    datamodule = make_datamodule()
    module = build(original_ckpt, datamodule, steps=10, features=features).eval()
    images, targets, ids, forget = batches(datamodule)
    with torch.no_grad():
        forget_features = module.features_and_logits(forget)[0]
        before = ot_distance(module.features_and_logits(images)[0], forget_features)
    delta, _ = module.perturb(images, targets, ids, forget)
    with torch.no_grad():
        after = ot_distance(module.features_and_logits(images + delta)[0], forget_features)
    assert after > before + 0.01, (before, after)
    assert delta.abs().max() <= EPSILON + 1e-6
    assert (images + delta).min() >= 0 and (images + delta).max() <= 1


def test_authors_code_ot_term_has_no_gradient_with_respect_to_delta(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    module = build(original_ckpt, datamodule, steps=5).eval()
    images, targets, ids, forget = batches(datamodule)
    with torch.no_grad():
        forget_features = module.features_and_logits(forget)[0]
    delta = torch.zeros_like(images, requires_grad=True)
    gradients = {}
    for authors_code in (True, False):
        ot_term, _ = dlfd_objective(module.features_and_logits, module.loss, images, delta,
                                    targets, forget_features, authors_code=authors_code)
        grad = (torch.autograd.grad(ot_term, delta, allow_unused=True)[0]
                if ot_term.requires_grad else None)  # no graph to δ at all: zero gradient
        gradients[authors_code] = torch.zeros_like(delta) if grad is None else grad
    assert gradients[True].abs().max() == 0
    assert gradients[False].abs().max() > 0
    # Consequence: the authors' ascent ignores the forget set, the paper's does not.
    other_forget = forget.flip(0)[: len(forget) // 2]
    for authors_code, same in ((True, True), (False, False)):
        module.hparams.authors_code = authors_code
        first, _ = module.perturb(images, targets, ids, forget)
        second, _ = module.perturb(images, targets, ids, other_forget)
        assert torch.equal(first, second) is same


def test_random_init_is_seeded_per_sample(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    module = build(original_ckpt, datamodule, random_init=True)
    images, _, ids, _ = batches(datamodule)
    first = module.initial_perturbation(images, ids)
    again = module.initial_perturbation(images.flip(0), ids.flip(0))
    assert first is not None and again is not None
    torch.testing.assert_close(again, first.flip(0))  # a sample's noise follows its id
    assert first.abs().max() <= EPSILON and first.std() > EPSILON / 4
    assert not torch.equal(first[0], first[1])


# ------------------------------------------------------------------- the callback, unit level
class Switchable:
    forgetting_enabled = True

    def disable_forgetting(self) -> None:
        self.forgetting_enabled = False


class RecordingLogger:
    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, float], int | None]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.append((metrics, step))


def fake_trainer(value: float | None, step: int, *, sanity: bool = False,
                 others_below: bool = True, logger: RecordingLogger | None = None) -> Any:
    def reduce_boolean_decision(decision: bool, all: bool = True) -> bool:
        assert all, "every rank must agree before switching"
        return decision and others_below

    metrics = {} if value is None else {"val/fs": torch.tensor(value)}
    return SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.FITTING), sanity_checking=sanity,
                           callback_metrics=metrics, global_step=step, loggers=[logger or
                                                                                RecordingLogger()],
                           strategy=SimpleNamespace(reduce_boolean_decision=reduce_boolean_decision))


def test_callback_switches_after_patience_checks_below_threshold() -> None:
    callback = DynamicForgetting(monitor="val/fs", threshold=0.3, patience=2, verbose=False)
    module, logger = Switchable(), RecordingLogger()
    callback.on_validation_end(fake_trainer(0.0, 0, sanity=True), module)  # sanity: ignored
    # 0.3 is not below 0.3; a check above resets the count; another rank above blocks.
    script = [(0.5, True), (0.29, True), (0.35, True), (0.3, True), (0.2, False), (0.2, True),
              (0.1, True)]
    for check, (value, others_below) in enumerate(script[:-1]):
        callback.on_validation_end(fake_trainer(value, 10 * (check + 1),
                                                others_below=others_below), module)
        assert module.forgetting_enabled and not callback.switched, check
    callback.on_validation_end(fake_trainer(0.1, 70, logger=logger), module)
    assert not module.forgetting_enabled
    assert callback.switched and callback.switch_step == 70 and callback.wait_count == 2
    assert logger.logged == [({"dynamic_forgetting/switch_step": 70.0}, 70)]
    callback.on_validation_end(fake_trainer(0.9, 80), module)  # for the rest of the run
    assert callback.switch_step == 70

    restored = DynamicForgetting(monitor="val/fs", threshold=0.3, patience=2)
    restored.load_state_dict(copy.deepcopy(callback.state_dict()))
    assert restored.state_key == callback.state_key
    fresh = Switchable()
    restored.on_fit_start(fake_trainer(None, 70), fresh)  # type: ignore[arg-type]
    assert not fresh.forgetting_enabled and restored.switch_step == 70


@pytest.mark.parametrize(("overrides", "never"), [
    ({"val_check_interval": 1000, "check_val_every_n_epoch": None}, True),
    ({"limit_val_batches": 0}, True),
    ({"val_check_interval": 2, "check_val_every_n_epoch": None}, False)])
def test_callback_warns_before_a_fit_that_cannot_check(original_ckpt: str, tmp_path: Path,
                                                       overrides: dict, never: bool) -> None:
    datamodule = make_datamodule(forget_fraction=0.25)
    module = DLFD(original=original_ckpt, steps=1, **model_kwargs(datamodule))
    trainer = make_trainer(tmp_path, max_steps=2, enable_checkpointing=False,
                           callbacks=[DynamicForgetting(threshold=1e-9, verbose=False)],
                           **overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=datamodule)
    assert any("can never switch" in str(w.message) for w in caught) == never


def test_callback_errors(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    callback = DynamicForgetting(monitor="val/fs")
    with pytest.raises(TypeError, match="forgetting_enabled"):
        callback.setup(fake_trainer(None, 0), FineTune(**model_kwargs(datamodule)), "fit")
    callback.setup(fake_trainer(None, 0), Switchable(), "fit")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="val/fs"):
        callback.on_validation_end(fake_trainer(None, 1), Switchable())  # type: ignore[arg-type]
    lenient, module = DynamicForgetting(monitor="val/fs", strict=False), Switchable()
    with pytest.warns(RuntimeWarning, match="val/fs"):
        lenient.on_validation_end(fake_trainer(None, 1), module)  # type: ignore[arg-type]
    assert module.forgetting_enabled
    with pytest.raises(ValueError, match="patience"):
        DynamicForgetting(patience=0)


# --------------------------------------------------------------------------- real runs
class ScriptedDLFD(DLFD):
    """DLFD that also logs ``val/scripted``: 0 from global step ``below_from[rank]`` on, else 1,
    so a test decides when the switch must come; records each step's mode per rank."""

    def __init__(self, below_from: list[int] | None = None, record_dir: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.below_from = below_from or [0]
        self.record_dir = record_dir
        self.modes: list[bool] = []

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            start = self.below_from[self.global_rank % len(self.below_from)]
            self.log("val/scripted", 0.0 if self.global_step >= start else 1.0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        flags = self.all_gather(torch.tensor(float(self.forgetting_enabled)))
        assert (flags == flags.flatten()[0]).all(), f"ranks disagree at step {self.global_step}"
        self.modes.append(self.forgetting_enabled)

    def on_fit_end(self) -> None:
        super().on_fit_end()
        if self.record_dir is not None:
            switch = next(c for c in self.trainer.callbacks if isinstance(c, DynamicForgetting))
            record = {"switch_step": switch.switch_step, "modes": self.modes}
            path = Path(self.record_dir) / f"rank{self.global_rank}.json"
            path.write_text(json.dumps(record))


def test_resume_gives_the_same_switch_and_weights(original_ckpt: str, tmp_path: Path) -> None:
    # Checks at epoch ends (steps 3, 6, 9, 12); the script is below from step 6, so with
    # patience 2 the switch comes at step 9. Interrupting after epoch 2 needs the restored
    # wait count; after epoch 3 the restored switch.
    def run(folder: str, stop_after: int | None = None,
            ckpt_path: str | None = None) -> tuple[ScriptedDLFD, DynamicForgetting]:
        seed_everything(0)
        datamodule = make_datamodule()
        module = ScriptedDLFD(below_from=[6], original=original_ckpt, steps=2,
                              **model_kwargs(datamodule))
        switch = DynamicForgetting(monitor="val/scripted", threshold=0.5, patience=2)
        callbacks: list[Callback] = [switch, ModelCheckpoint(dirpath=tmp_path / folder,
                                                             save_last=True)]
        if stop_after is not None:
            callbacks.append(Interrupt(stop_after))
        trainer = make_trainer(tmp_path, max_epochs=4, limit_train_batches=3,
                               limit_val_batches=1, callbacks=callbacks)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        return module, switch

    straight, straight_switch = run("straight")
    assert straight_switch.switch_step == 9
    assert straight.modes == [True] * 9 + [False] * 3
    for stop_after in (2, 3):
        run(f"first{stop_after}", stop_after=stop_after)
        resumed, switch = run(f"second{stop_after}",
                              ckpt_path=str(tmp_path / f"first{stop_after}" / "last.ckpt"))
        assert switch.switch_step == 9
        assert resumed.modes == straight.modes[3 * stop_after:]
        for key, value in straight.network.state_dict().items():
            torch.testing.assert_close(resumed.network.state_dict()[key], value, msg=key)
    raw = torch.load(tmp_path / "first3" / "last.ckpt", weights_only=True)
    assert raw["dlfd"] == {"forgetting_enabled": False}


def test_ddp_ranks_switch_at_the_same_step(original_ckpt: str, tmp_path: Path) -> None:
    # Rank 0's score is below the threshold from step 2, rank 1's from step 6: the reduced
    # decision must wait for both (checks every 2 steps), and both ranks switch at step 6.
    seed_everything(0)
    datamodule = make_datamodule()
    module = ScriptedDLFD(below_from=[2, 6], record_dir=str(tmp_path), original=original_ckpt,
                          steps=2, **model_kwargs(datamodule))
    trainer = make_trainer(tmp_path, strategy="ddp_spawn", devices=2, max_steps=8,
                           max_epochs=-1, val_check_interval=2, check_val_every_n_epoch=None,
                           limit_val_batches=1, enable_checkpointing=False,
                           callbacks=[DynamicForgetting(monitor="val/scripted", threshold=0.5)])
    trainer.fit(module, datamodule=datamodule)
    records = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert records[0] == records[1]
    assert records[0]["switch_step"] == 6
    assert records[0]["modes"] == [True] * 6 + [False] * 2


class RecordSteps(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.retain_weights: list[float] = []
        self.ot: list[float] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.losses.append(float(outputs["loss"]))
        self.retain_weights.append(float(trainer.callback_metrics["train/retain_weight"]))
        self.ot.append(float(trainer.callback_metrics["train/ot"]))


def test_bf16_mixed_run_and_retain_weight_schedule(original_ckpt: str, tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule(forget_fraction=0.25)  # sample-wise
    module = DLFD(original=original_ckpt, steps=2, features="embedding",
                  **model_kwargs(datamodule))
    record = RecordSteps()
    trainer = make_trainer(tmp_path, precision="bf16-mixed", limit_train_batches=3,
                           limit_val_batches=0, enable_checkpointing=False, callbacks=[record])
    trainer.fit(module, datamodule=datamodule)
    assert len(record.losses) == 3
    assert all(math.isfinite(v) for v in record.losses + record.ot)
    assert all(v > 0 for v in record.ot)
    assert record.retain_weights == pytest.approx([0.5, 0.75, 1.0])  # linear over the run
    assert all(torch.isfinite(p).all() for p in module.network.parameters())


def test_classification_only_mode_trains_on_clean_retain(original_ckpt: str,
                                                         tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    module = DLFD(original=original_ckpt, **model_kwargs(datamodule))
    module.disable_forgetting()

    def no_perturbation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("classification-only mode must not perturb")

    module.perturb = no_perturbation  # type: ignore[method-assign]
    record = RecordSteps()
    trainer = make_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0,
                           enable_checkpointing=False, callbacks=[record])
    trainer.fit(module, datamodule=datamodule)
    assert len(record.losses) == 2 and all(math.isnan(v) for v in record.ot)


def test_save_threshold_selects_accuracy_under_the_forgetting_threshold(original_ckpt: str,
                                                                        tmp_path: Path) -> None:
    datamodule = make_datamodule(forget_fraction=0.25)
    scores = {}
    for threshold in (2.0, 1e-9):  # FS ≤ 1 is always below 2.0, never (here) below 1e-9
        module = DLFD(original=original_ckpt, steps=1, save_threshold=threshold,
                      **model_kwargs(datamodule))
        trainer = make_trainer(tmp_path / str(threshold), limit_train_batches=1,
                               enable_checkpointing=False)
        trainer.fit(module, datamodule=datamodule)
        scores[threshold] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    high, low = scores[2.0], scores[1e-9]
    assert high["val/accuracy_below_threshold"] == pytest.approx(high["val/acc_unseen"])
    assert high["val/forgetting_score"] > 1e-9
    assert low["val/accuracy_below_threshold"] == -1.0
    with pytest.raises(ValueError, match="save_threshold"):
        DLFD(original=original_ckpt, save_threshold=0.0, **model_kwargs(datamodule))
