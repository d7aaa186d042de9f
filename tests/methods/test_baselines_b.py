"""UNSIR, Bad Teaching and SCRUB: the parts each paper's method rests on."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import NETWORK, make_datamodule, make_trainer, model_kwargs
from unlearn_pl.losses import distillation_kl
from unlearn_pl.methods import SCRUB, UNSIR, BadTeaching
from unlearn_pl.methods.bad_teaching import incompetent_teacher
from unlearn_pl.methods.scrub import scrub_phase
from unlearn_pl.methods.unsir import error_maximizing_noise
from unlearn_pl.networks import Classifier, build_network, load_network_weights

QUIET = dict(limit_val_batches=0, enable_checkpointing=False)


def original_network(path: str, datamodule: Any) -> Classifier:
    kwargs = model_kwargs(datamodule)
    mean, std = kwargs["normalization"]
    network = build_network(NETWORK["arch"], kwargs["num_classes"], kwargs["in_channels"],
                            width=NETWORK["width"], mean=mean, std=std)
    load_network_weights(network, path, NETWORK["arch"])
    return network


def images_of(datamodule: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets, _ = datamodule.splits[split]
    return images.float() / 255, targets


class Record(Callback):
    """Per training batch: the epoch, the learning rate and the optimiser step count."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, int]] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append((trainer.current_epoch, lr, trainer.global_step))


# ---------------------------------------------------------------------------------------- UNSIR
def test_noise_maximises_its_class_loss_and_touches_no_parameter(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    network = original_network(original_ckpt, datamodule).train()
    labels = torch.tensor([0, 1, 2, 3])
    init = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))

    def learn(loss_fn: Any, l2: float = 0.1) -> torch.Tensor:
        return error_maximizing_noise(network, labels, init, loss_fn, l2=l2)

    def class_loss(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.cross_entropy(network(images), labels, reduction="none")

    task = lambda z, y: F.cross_entropy(z, y, reduction="none")  # noqa: E731
    noise = learn(task)
    assert network.training  # the caller's mode is restored
    assert all(p.grad is None for p in network.parameters())
    network.eval()
    # Against the same optimisation with the regulariser alone, the loss term raises each
    # sample's loss on its own label; without the regulariser, far above the initial draw's.
    shrunk = learn(lambda z, y: z.sum(1) * 0)
    assert (class_loss(noise) > class_loss(shrunk)).all()
    initial = init * network.normalize.std + network.normalize.mean
    assert (class_loss(learn(task, l2=0.0)) > class_loss(initial) + 5).all()
    # The learned noise is a function of the initial draw, not of the global random state.
    torch.manual_seed(123)
    torch.testing.assert_close(learn(task), noise)


def test_unsir_impair_then_repair_with_own_labels_and_resume(
        original_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datamodule = make_datamodule(forget_classes=[2, 3])
    hp = dict(lr=0.02, repair_lr=0.005, retain_subset=0.5, noise_ratio=0.5, noise_per_class=2,
              noise_steps=5)
    module = UNSIR(original=original_ckpt, **hp, **model_kwargs(datamodule))
    sizes: list[tuple[int, int]] = []
    forward = module.forward
    monkeypatch.setattr(module, "forward", lambda x: sizes.append(
        (module.current_epoch, len(x))) or forward(x))
    learned = Counter[int]()
    learn = module.learn_noise
    monkeypatch.setattr(module, "learn_noise", lambda: learned.update([1]) or learn())
    record = Record()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_val_batches=0,
                           callbacks=[record, checkpoint])
    trainer.fit(module, datamodule=datamodule)

    # One noise image pair per forgotten class, each labelled with its own class (not class 0).
    assert module.noise_targets.tolist() == [2, 2, 3, 3]
    assert module.noise.shape == (4, 3, 12, 12) and learned[1] == 1
    batches = trainer.num_training_batches
    stepped = math.ceil(0.5 * batches)
    assert batches > stepped and trainer.global_step == stepped  # only the retain subset
    assert {lr for _, lr, _ in record.rows} == {0.02}
    batch_size = datamodule.batch_size
    assert sizes == [(0, batch_size + batch_size // 2)] * stepped  # retain + noise copies

    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    torch.testing.assert_close(saved["unsir"]["noise"], module.noise)
    assert not [k for k in saved["state_dict"] if k.startswith(("frozen.", "noise"))]

    resumed = UNSIR(original=original_ckpt, **hp, **model_kwargs(datamodule))
    sizes.clear()
    monkeypatch.setattr(resumed, "forward", lambda x: sizes.append(
        (resumed.current_epoch, len(x))) or UNSIR.forward(resumed, x))
    monkeypatch.setattr(resumed, "learn_noise", lambda: pytest.fail("noise relearned on resume"))
    record.rows.clear()
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[record], **QUIET)
    trainer.fit(resumed, datamodule=datamodule, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    torch.testing.assert_close(resumed.noise, module.noise)
    # Repair: retain batches only, at repair_lr, on the retain subset.
    assert sizes == [(1, batch_size)] * stepped
    assert {lr for _, lr, _ in record.rows} == {0.005}
    assert trainer.global_step == 2 * stepped


class OptimiserState(Callback):
    """At each epoch's first batch: the epoch and Adam's step count per parameter (0 when the
    optimiser holds no state for it); at the end of the fit, the same counts."""

    def __init__(self) -> None:
        self.at_epoch_start: dict[int, set[int]] = {}
        self.at_end: set[int] = set()

    @staticmethod
    def steps(trainer: Trainer) -> set[int]:
        optimizer = trainer.optimizers[0]
        return {int(optimizer.state[p]["step"]) if "step" in optimizer.state[p] else 0
                for group in optimizer.param_groups for p in group["params"]}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0:
            self.at_epoch_start[trainer.current_epoch] = self.steps(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.at_end = self.steps(trainer)


def test_unsir_repair_starts_from_a_fresh_optimiser(original_ckpt: str, tmp_path: Path) -> None:
    # Reference: a new Adam for the repair step. Epoch 0 impairs, epochs 1 and 2 repair: the
    # moments are dropped once, at the start of epoch 1, also when a run resumes there.
    datamodule = make_datamodule()
    hp: dict[str, Any] = dict(retain_subset=0.5, noise_steps=2)
    stepped = math.ceil(0.5 * math.ceil(len(datamodule.splits["retain"][2])
                                        / datamodule.batch_size))

    def run(folder: str, epochs: int, ckpt_path: str | None = None) -> OptimiserState:
        module = UNSIR(original=original_ckpt, **hp, **model_kwargs(datamodule))
        state = OptimiserState()
        checkpoint = ModelCheckpoint(dirpath=tmp_path / folder, save_top_k=-1,
                                     filename="{epoch}")
        trainer = make_trainer(tmp_path, max_epochs=epochs, limit_val_batches=0,
                               callbacks=[state, checkpoint])
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        return state

    straight = run("straight", 3)
    assert straight.at_epoch_start == {0: {0}, 1: {0}, 2: {stepped}}
    assert straight.at_end == {2 * stepped}  # the repair steps only
    after_impair = run("impair", 3, str(tmp_path / "straight" / "epoch=0.ckpt"))
    assert after_impair.at_epoch_start == {1: {0}, 2: {stepped}}
    after_repair = run("repair", 3, str(tmp_path / "straight" / "epoch=1.ckpt"))
    assert after_repair.at_epoch_start == {2: {stepped}}  # repair's state carries on
    assert after_repair.at_end == {2 * stepped}


def test_unsir_sample_wise_noise_follows_each_forget_sample(original_ckpt: str,
                                                            tmp_path: Path) -> None:
    datamodule = make_datamodule(forget_fraction=0.25)
    module = UNSIR(original=original_ckpt, noise_steps=3, **model_kwargs(datamodule))
    make_trainer(tmp_path, max_epochs=1, limit_train_batches=1, **QUIET).fit(
        module, datamodule=datamodule)
    _, targets, _ = datamodule.splits["forget"]
    assert module.noise_targets.tolist() == targets.tolist()
    assert len(module.noise) == len(targets)


def test_unsir_collapse_stops_with_a_clear_error(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = UNSIR(original=original_ckpt, optimizer="sgd", lr=1e30, noise_steps=1,
                   retain_subset=1.0, **model_kwargs(datamodule))
    with pytest.raises(FloatingPointError, match="diverged"):
        make_trainer(tmp_path, max_epochs=1, **QUIET).fit(module, datamodule=datamodule)


# --------------------------------------------------------------------------------- Bad Teaching
def test_incompetent_teacher_is_random_seeded_and_leaves_global_rng(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    original = original_network(original_ckpt, datamodule).eval()
    state = torch.get_rng_state()
    teacher = incompetent_teacher(original, seed=7).eval()
    assert torch.equal(torch.get_rng_state(), state)
    same = incompetent_teacher(original, seed=7)
    other = incompetent_teacher(original, seed=8)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(same.state_dict()[key], value)
    assert any(not torch.equal(other.state_dict()[k], v) for k, v in teacher.state_dict().items())
    images, targets = images_of(datamodule, "train")
    with torch.no_grad():
        original_logits, teacher_logits = original(images), teacher(images)
    original_accuracy = (original_logits.argmax(1) == targets).float().mean()
    teacher_accuracy = (teacher_logits.argmax(1) == targets).float().mean()
    assert original_accuracy > 0.9 and teacher_accuracy < 0.5
    assert distillation_kl(teacher_logits, original_logits).mean() > 0.5
    # Normalisation constants are the data's, not re-drawn.
    torch.testing.assert_close(teacher.normalize.std, original.normalize.std)


def test_bad_teaching_teachers_stay_frozen_and_out_of_checkpoints(original_ckpt: str,
                                                                  tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = BadTeaching(original=original_ckpt, lr=1e-2, **model_kwargs(datamodule))
    original = original_network(original_ckpt, datamodule).eval()
    expected = incompetent_teacher(original, module.hparams.seed).eval()
    forget, _ = images_of(datamodule, "forget")
    with torch.no_grad():
        target = expected(forget)
        kl_before = distillation_kl(original(forget), target).mean()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_val_batches=0, callbacks=[checkpoint])
    trainer.fit(module, datamodule=datamodule)

    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    for name in ("competent_teacher", "incompetent_teacher"):
        teacher = module.frozen[name]
        assert not teacher.training and all(not m.training for m in teacher.modules())
        assert all(not p.requires_grad and id(p) not in optimised for p in teacher.parameters())
    # Unchanged by training, and what a resumed run rebuilds from the seed.
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(module.frozen["incompetent_teacher"].state_dict()[key], value)
        torch.testing.assert_close(module.frozen["competent_teacher"].state_dict()[key],
                                   original.state_dict()[key])
    raw = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert not [k for k in raw["state_dict"] if k.startswith("frozen.")]
    # The student moved towards the incompetent teacher on the forget set.
    module.eval()
    with torch.no_grad():
        kl_after = distillation_kl(module(forget), target).mean()
    assert kl_after < 0.5 * kl_before
    # Forget samples all used, retain samples only in the seeded subset.
    retain_ids = datamodule.splits["retain"][2]
    assert module.used[datamodule.splits["forget"][2]].all()
    assert int(module.used[retain_ids].sum()) == round(0.3 * len(retain_ids))


# ---------------------------------------------------------------------------------------- SCRUB
def test_scrub_phase_counts_max_passes_in_epochs() -> None:
    phases = [scrub_phase(e, 2) for e in range(6)]
    assert phases == [(0, "max"), (0, "min"), (1, "max"), (1, "min"), (2, "min"), (3, "min")]
    assert all(scrub_phase(e, 0)[1] == "min" for e in range(4))
    for msteps in range(4):
        run = [scrub_phase(e, msteps) for e in range(10)]
        assert sum(p == "max" for _, p in run) == msteps
        assert all(epoch < msteps for epoch, p in run if p == "max")


def test_distillation_kl_multiclass_and_multilabel() -> None:
    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    p, q = F.softmax(t / 2, 1), F.softmax(s / 2, 1)
    torch.testing.assert_close(distillation_kl(s, t, 2.0), (p * (p / q).log()).sum(1))
    p, q = torch.sigmoid(t), torch.sigmoid(s)
    bernoulli = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    torch.testing.assert_close(distillation_kl(s, t, multilabel=True), bernoulli.mean(1))
    assert distillation_kl(t, t).abs().max() < 1e-6


def test_scrub_max_pass_only_in_first_msteps_epochs(original_ckpt: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A forget loader longer than the retain loader: the epoch follows the longer one.
    datamodule = make_datamodule(forget_fraction=0.5, forget_batch_size=8)
    module = SCRUB(original=original_ckpt, msteps=1, lr=0.01, **model_kwargs(datamodule))
    calls: list[tuple[int, str]] = []
    max_step, min_step = module.max_step, module.min_step
    monkeypatch.setattr(module, "max_step", lambda *a: calls.append(
        (module.current_epoch, "max")) or max_step(*a))
    monkeypatch.setattr(module, "min_step", lambda *a: calls.append(
        (module.current_epoch, "min")) or min_step(*a))
    forget, _ = images_of(datamodule, "forget")
    original = original_network(original_ckpt, datamodule).eval()
    kl_forget: list[float] = []

    class ForgetKL(Callback):
        def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
            with torch.no_grad():
                pl_module.eval()
                kl_forget.append(float(distillation_kl(pl_module(forget), original(forget),
                                                       4.0).mean()))
                pl_module.train()

    trainer = make_trainer(tmp_path, max_epochs=3, callbacks=[ForgetKL()], **QUIET)
    trainer.fit(module, datamodule=datamodule)
    n_forget = math.ceil(len(forget) / 8)
    n_retain = math.ceil(len(datamodule.splits["retain"][2]) / datamodule.batch_size)
    assert module.epoch_split == "forget" and n_forget > n_retain
    assert Counter(calls) == {(0, "max"): n_forget, (1, "min"): n_retain, (2, "min"): n_retain}
    assert trainer.global_step == n_forget + 2 * n_retain
    # The max pass pushed the student away from the teacher on the forget set.
    assert kl_forget[0] > 1e-3
    # The teacher is the original, untouched.
    for key, value in original.state_dict().items():
        torch.testing.assert_close(module.frozen["teacher"].state_dict()[key], value)


@pytest.mark.parametrize("cls", [UNSIR, BadTeaching, SCRUB])
def test_multilabel_runs(cls: type, original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule(multilabel=True, forget_fraction=0.25)
    module = cls(original=original_ckpt, **model_kwargs(datamodule))
    make_trainer(tmp_path, max_epochs=1, limit_train_batches=2, **QUIET).fit(
        module, datamodule=datamodule)
    before = original_network(original_ckpt, datamodule).parameters()
    after = list(module.network.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
