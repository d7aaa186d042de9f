"""Baselines A: random labels, Amnesiac, NegGrad(+), Fisher forgetting, CF-k and EU-k."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tests.conftest import make_datamodule, make_trainer, model_kwargs
from unlearn_pl.methods import (
    Amnesiac,
    CFk,
    EUk,
    FisherForgetting,
    NegGrad,
    NegGradPlus,
    RandomLabels,
)
from unlearn_pl.methods.fisher import fisher_sums
from unlearn_pl.methods.random_labels import random_other_labels
from unlearn_pl.networks import build_network


def network_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def forget_loss(module: nn.Module, datamodule) -> float:  # type: ignore[no-untyped-def]
    images, targets, _ = datamodule.splits["forget"]
    module.eval()
    with torch.no_grad():
        return float(F.cross_entropy(module(images.float() / 255), targets))


# ---------------------------------------------------------------- random labels, Amnesiac
def test_random_labels_are_wrong_uniform_and_reproducible() -> None:
    targets = torch.arange(400) % 5
    ids = torch.arange(1000, 1400)
    labels = random_other_labels(targets, ids, 5, seed=3, epoch=0)
    assert not (labels == targets).any()
    assert set(labels.tolist()) == set(range(5))
    for true in range(5):  # every other class is drawn, roughly uniformly
        counts = torch.bincount(labels[targets == true], minlength=5)
        assert counts[true] == 0 and (counts.sum() - counts).min() > 0
        assert counts.max() < 40
    # A sample's label depends on (seed, epoch, id) only, not on the batch it is drawn in.
    order = torch.randperm(400)
    torch.testing.assert_close(random_other_labels(targets[order], ids[order], 5, 3, 0),
                               labels[order])
    assert (random_other_labels(targets, ids, 5, seed=3, epoch=1) != labels).float().mean() > 0.5
    assert (random_other_labels(targets, ids, 5, seed=4, epoch=0) != labels).any()
    two_classes = random_other_labels(targets % 2, ids, 2, seed=0, epoch=0)
    assert torch.equal(two_classes, 1 - targets % 2)


def test_random_labels_redrawn_every_epoch_amnesiac_fixed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    datamodule = make_datamodule()
    kwargs = model_kwargs(datamodule)
    epoch = {"now": 0}
    monkeypatch.setattr(RandomLabels, "current_epoch", property(lambda self: epoch["now"]))
    _, targets, ids = datamodule.splits["forget"]
    random_module, amnesiac = RandomLabels(**kwargs), Amnesiac(**kwargs)
    per_epoch = []
    for now in range(3):
        epoch["now"] = now
        per_epoch.append((random_module.forget_labels(targets, ids),
                          amnesiac.forget_labels(targets, ids)))
    for random_labels, amnesiac_labels in per_epoch:
        assert not (random_labels == targets).any() and not (amnesiac_labels == targets).any()
        torch.testing.assert_close(amnesiac_labels, per_epoch[0][1])
    assert not torch.equal(per_epoch[0][0], per_epoch[1][0])


class BatchRecord(Callback):
    """Per training step: the epoch, the ids of the step's samples split by membership of D_f,
    and the targets the loss was computed on (filled by the module's spied loss)."""

    def __init__(self, forget_ids: torch.Tensor) -> None:
        self.forget_ids = forget_ids
        self.steps: list[tuple[int, torch.Tensor]] = []
        self.targets: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        ids = torch.cat([batch[split][2] for split in sorted(batch)])
        self.steps.append((trainer.current_epoch, ids))


def relabelling_run(cls: type[RandomLabels], tmp_path: Path, epochs: int = 1,
                    datamodule: Any = None, **kwargs: Any) -> tuple[RandomLabels, BatchRecord]:
    seed_everything(0)
    datamodule = datamodule or make_datamodule()
    datamodule.setup()
    module = cls(**{**model_kwargs(datamodule), **kwargs})
    record = BatchRecord(datamodule.splits["forget"][2])
    loss = module.loss

    def recorded_loss(logits: torch.Tensor, targets: torch.Tensor,
                      reduction: str = "mean") -> torch.Tensor:
        record.targets.append(targets.detach().clone())
        return loss(logits, targets, reduction)

    module.loss = recorded_loss  # type: ignore[method-assign]
    trainer = make_trainer(tmp_path, max_epochs=epochs, enable_checkpointing=False,
                           limit_val_batches=0, callbacks=[record])
    trainer.fit(module, datamodule=datamodule)
    return module, record


@pytest.mark.parametrize("cls", [RandomLabels, Amnesiac])
def test_default_mix_is_one_pass_over_the_union(cls: type[RandomLabels], original_ckpt: str,
                                                tmp_path: Path) -> None:
    # The papers' code trains on D_r ∪ relabelled D_f shuffled together: each sample once per
    # epoch, forget samples |D_f| / |D| of the epoch (here 1 class of 4: a quarter).
    datamodule = make_datamodule()
    datamodule.setup()
    _, retain_targets, retain_ids = datamodule.splits["retain"]
    _, forget_targets, forget_ids = datamodule.splits["forget"]
    module, record = relabelling_run(cls, tmp_path, epochs=2, datamodule=datamodule,
                                     original=original_ckpt)
    everyone = torch.cat([retain_ids, forget_ids]).sort().values
    for epoch in (0, 1):
        seen = torch.cat([ids for e, ids in record.steps if e == epoch])
        assert torch.equal(seen.sort().values, everyone)
        share = torch.isin(seen, forget_ids).float().mean()
        assert share == pytest.approx(len(forget_ids) / len(everyone))
    # Forget samples are trained on a wrong class, retain samples on their own.
    true_label = dict(zip(torch.cat([retain_ids, forget_ids]).tolist(),
                          torch.cat([retain_targets, forget_targets]).tolist(), strict=True))
    assert len(record.targets) == len(record.steps)
    for (_, ids), targets in zip(record.steps, record.targets, strict=True):
        forget = torch.isin(ids, forget_ids)
        truth = torch.tensor([true_label[i] for i in ids.tolist()])
        assert torch.equal(targets[~forget], truth[~forget])
        assert not (targets[forget] == truth[forget]).any()
    assert module.hparams.mix == "union"


def test_paired_mix_holds_a_forget_batch_per_step(original_ckpt: str, tmp_path: Path) -> None:
    # forget_batch_size 8 beside 32 retain samples: every step holds 8 forget samples (the
    # forget set cycled), so an epoch over D_r replays D_f as often as that takes.
    datamodule = make_datamodule(forget_batch_size=8)
    datamodule.setup()
    retain_count = len(datamodule.splits["retain"][2])
    forget_ids = datamodule.splits["forget"][2]
    _, record = relabelling_run(RandomLabels, tmp_path, datamodule=datamodule, mix="paired",
                                original=original_ckpt)
    steps = math.ceil(retain_count / 32)
    assert len(record.steps) == steps
    counts = [int(torch.isin(ids, forget_ids).sum()) for _, ids in record.steps]
    assert counts == [8] * steps
    seen = torch.cat([ids for _, ids in record.steps])
    assert int((~torch.isin(seen, forget_ids)).sum()) == retain_count


@pytest.mark.parametrize("cls", [RandomLabels, Amnesiac])
def test_relabelling_moves_the_forget_class_to_other_classes(cls: type[RandomLabels],
                                                             original_ckpt: str,
                                                             tmp_path: Path) -> None:
    datamodule = make_datamodule()
    datamodule.setup()
    images, targets, _ = datamodule.splits["forget"]
    test_images, test_targets, _ = datamodule.splits["retain_test"]
    module, _ = relabelling_run(cls, tmp_path, epochs=3, datamodule=datamodule,
                                original=original_ckpt, lr=0.05)
    module.eval()
    with torch.no_grad():
        forget_accuracy = (module(images.float() / 255).argmax(1) == targets).float().mean()
        retain_accuracy = (module(test_images.float() / 255).argmax(1)
                           == test_targets).float().mean()
    assert forget_accuracy < 0.2 and retain_accuracy > 0.8


def test_random_labels_need_multiclass() -> None:
    with pytest.raises(ValueError, match="multiclass"):
        RandomLabels(task="multilabel", num_classes=4)
    with pytest.raises(ValueError, match="multiclass"):
        Amnesiac(task="multilabel", num_classes=4)


# ------------------------------------------------------------------------------ NegGrad
def test_neggrad_increases_the_forget_loss(original_ckpt: str, tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    datamodule.setup()
    module = NegGrad(original=original_ckpt, lr=0.01, **model_kwargs(datamodule))
    module.setup("test")
    before = forget_loss(module, datamodule)
    module.train()
    trainer = make_trainer(tmp_path, max_epochs=2, enable_checkpointing=False,
                           limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    assert forget_loss(module, datamodule) > before + 0.1


def test_neggrad_plus_validates_alpha() -> None:
    with pytest.raises(ValueError, match="alpha"):
        NegGradPlus(alpha=1.5)


def test_neggrad_collapse_stops_and_keeps_the_last_good_checkpoint(original_ckpt: str,
                                                                   tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    module = NegGrad(original=original_ckpt, lr=1e4, **model_kwargs(datamodule))
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=50, limit_val_batches=0,
                           callbacks=[checkpoint])
    with pytest.raises(FloatingPointError, match="NegGrad: the training loss became .* diverged"):
        trainer.fit(module, datamodule=datamodule)
    failed_at = trainer.global_step
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert 0 < saved["global_step"] <= failed_at
    assert all(torch.isfinite(v).all() for k, v in saved["state_dict"].items()
               if k.startswith("network.") and v.is_floating_point())


# ------------------------------------------------------------------------------- Fisher
def reference_fisher(network: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The authors' loop: per sample, per class, a backward of the class's cross-entropy,
    squared gradient weighted by the predicted probability."""
    network.eval()
    out = {n: torch.zeros_like(p) for n, p in network.named_parameters()}
    for image in images:
        logits = network(image[None])
        probs = logits.softmax(-1).detach()
        for y in range(logits.shape[1]):
            network.zero_grad()
            F.cross_entropy(logits, torch.tensor([y])).backward(retain_graph=True)
            for n, p in network.named_parameters():
                out[n] += probs[0, y] * p.grad.square()
    return out


def test_fisher_matches_the_per_sample_loop_of_the_authors() -> None:
    torch.manual_seed(0)
    network = build_network("tiny_cnn", 3, in_channels=1, width=0.25)
    network.train()  # BN must be evaluated with running statistics nonetheless
    images = torch.rand(5, 1, 6, 6)
    sums, gradients = fisher_sums(network, [(images[:3], torch.arange(3)),
                                            (images[3:], torch.arange(3, 5))])
    assert gradients == 5 * 3 and network.training
    for name, expected in reference_fisher(network, images).items():
        torch.testing.assert_close(sums[name], expected, rtol=1e-4, atol=1e-9)


def test_multilabel_fisher_is_the_exact_bernoulli_diagonal() -> None:
    torch.manual_seed(0)
    network = build_network("tiny_cnn", 3, in_channels=1, width=0.25).eval()
    images = torch.rand(2, 1, 6, 6)
    sums, _ = fisher_sums(network, [(images, torch.arange(2))], multilabel=True)
    expected = {n: torch.zeros_like(p) for n, p in network.named_parameters()}
    for image in images:  # brute force over all 2^3 label vectors
        for labels in itertools.product([0.0, 1.0], repeat=3):
            target = torch.tensor([labels])
            logits = network(image[None])
            log_p = -F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
            network.zero_grad()
            log_p.backward()
            for n, p in network.named_parameters():
                expected[n] += log_p.exp().detach() * p.grad.square()
    for name, value in expected.items():
        torch.testing.assert_close(sums[name], value, rtol=1e-4, atol=1e-9)


def fisher_run(tmp_path: Path, datamodule, epochs: int = 1, **kwargs):  # type: ignore[no-untyped-def]
    seed_everything(0)
    module = FisherForgetting(**{**model_kwargs(datamodule), **kwargs})
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, max_epochs=epochs, limit_train_batches=1,
                           limit_val_batches=0, callbacks=[checkpoint])
    trainer.fit(module, datamodule=datamodule)
    return module, trainer


def test_fisher_finds_the_classifier_by_identity(tmp_path: Path) -> None:
    # Feature width (2·int(16·0.125) = 4) equals the number of classes: the public code's
    # "first dimension == num_classes" test would zero channel 1 of the last conv and BN too.
    datamodule = make_datamodule()
    original = tmp_path / "original.pt"  # an untrained original of that width
    torch.save(build_network("tiny_cnn", 4, width=0.125).state_dict(), original)
    module, _ = fisher_run(tmp_path, datamodule, width=0.125, original=str(original))
    network = module.network
    assert network.classifier.in_features == datamodule.num_classes
    impostors = [p for p in network.features.parameters() if p.shape[0] == datamodule.num_classes]
    assert impostors, "the test network must have non-classifier parameters of width C"
    assert torch.all(network.classifier.weight[1] == 0) and network.classifier.bias[1] == 0
    assert network.classifier.weight[[0, 2, 3]].abs().sum(1).min() > 0
    assert all(p[1].abs().sum() > 0 for p in impostors)
    bn = network.features[1][0][1]
    assert bn.weight[1] > 0.5  # initialised at 1, perturbed by small noise, not zeroed


def test_fisher_perturbs_reproducibly_and_subsampling_cuts_the_cost(original_ckpt: str,
                                                                    tmp_path: Path) -> None:
    datamodule = make_datamodule(forget_fraction=0.25)
    datamodule.setup()
    original = build_network("tiny_cnn", 4, width=0.5)
    original.load_state_dict({k[8:]: v for k, v in torch.load(
        original_ckpt, weights_only=True)["state_dict"].items() if k.startswith("network.")})
    classes, retained = datamodule.num_classes, len(datamodule.splits["retain"][2])

    full, trainer = fisher_run(tmp_path / "full", datamodule, original=original_ckpt)
    assert full.applied and full.fisher_gradients == retained * classes
    assert float(trainer.callback_metrics["train/fisher_seconds"]) > 0
    # The paper's noise: θ − θ_0 = α·min(1/(F + 1e-8), 1e3)^{1/4}·n, F the mean Fisher of
    # D_r. Divided by that scale the perturbation is standard normal; divided by α alone
    # (noise not shaped by F) it is not.
    retain_images = datamodule.splits["retain"][0].float() / 255
    sums, _ = fisher_sums(original, [(retain_images, datamodule.splits["retain"][2])])
    scaled, unshaped = [], []
    for (name, before), after in zip(original.named_parameters(), full.network.parameters(),
                                     strict=True):
        inverse = (1 / (sums[name] / retained + 1e-8)).clamp(max=1e3)
        scaled.append(((after - before) / (5e-3 * inverse.pow(0.25))).flatten())
        unshaped.append(((after - before) / 5e-3).flatten())
    z = torch.cat(scaled).detach()
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1
    assert abs(float(torch.cat(unshaped).detach().std()) - 1) > 0.5

    again, _ = fisher_run(tmp_path / "again", datamodule, original=original_ckpt)
    for a, b in zip(full.network.parameters(), again.network.parameters(), strict=True):
        assert torch.equal(a, b)
    reseeded, _ = fisher_run(tmp_path / "seed", datamodule, original=original_ckpt, seed=1)
    assert not torch.equal(reseeded.network.classifier.weight, full.network.classifier.weight)

    subsampled, _ = fisher_run(tmp_path / "sub", datamodule, original=original_ckpt,
                               fisher_samples=8)
    assert subsampled.fisher_gradients == 8 * classes
    sampled, _ = fisher_run(tmp_path / "sampled", datamodule, original=original_ckpt,
                            fisher_classes="sampled", noise="code")
    assert sampled.fisher_gradients == retained


def test_fisher_is_applied_once_and_resume_safe(original_ckpt: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    once, _ = fisher_run(tmp_path / "once", datamodule, epochs=1, original=original_ckpt)
    thrice, _ = fisher_run(tmp_path / "thrice", datamodule, epochs=3, original=original_ckpt)
    for a, b in zip(once.network.parameters(), thrice.network.parameters(), strict=True):
        assert torch.equal(a, b)
    saved = torch.load(tmp_path / "once" / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["fisher_forgetting"]["applied"] is True
    loaded = FisherForgetting.load_from_checkpoint(tmp_path / "once" / "ckpt" / "last.ckpt")
    assert loaded.applied and loaded.fisher_gradients == once.fisher_gradients


# ----------------------------------------------------------------------------- CF-k, EU-k
def test_last_k_rejects_k_out_of_range() -> None:
    for k in (0, 4):  # tiny_cnn has 3 blocks
        with pytest.raises(ValueError, match="k must be between 1 and the 3 blocks"):
            CFk(arch="tiny_cnn", k=k)
        with pytest.raises(ValueError, match="k must be between"):
            EUk(arch="tiny_cnn", k=k)


@pytest.mark.parametrize("cls", [CFk, EUk])
def test_only_the_last_k_blocks_train(cls: type[CFk], original_ckpt: str,
                                      tmp_path: Path) -> None:
    seed_everything(0)
    datamodule = make_datamodule()
    module = cls(original=original_ckpt, k=2, **model_kwargs(datamodule))
    before = build_network("tiny_cnn", 4, width=0.5)
    before.load_state_dict({k[8:]: v for k, v in torch.load(
        original_ckpt, weights_only=True)["state_dict"].items() if k.startswith("network.")})
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=3,
                           enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    blocks, old_blocks = module.network.blocks(), before.blocks()
    trained = {id(p) for p in module.trainable_parameters()}
    assert trained == {id(p) for b in blocks[-2:] for p in b.parameters()}
    for index, (block, old) in enumerate(zip(blocks, old_blocks, strict=True)):
        new_state, old_state = block.state_dict(), old.state_dict()
        if index < len(blocks) - 2:  # frozen: bit-identical, BN statistics included
            for key, value in old_state.items():
                assert torch.equal(new_state[key], value), key
        else:
            assert any(not torch.equal(new_state[key], value)
                       for key, value in old_state.items() if value.is_floating_point())


def test_eu_k_reinitialises_the_last_k_blocks_from_a_seed(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    original = build_network("tiny_cnn", 4, width=0.5)
    original.load_state_dict({k[8:]: v for k, v in torch.load(
        original_ckpt, weights_only=True)["state_dict"].items() if k.startswith("network.")})
    module = EUk(original=original_ckpt, k=2, **model_kwargs(datamodule))
    rng = torch.get_rng_state()
    module.setup("fit")
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG must be left untouched"
    blocks, old_blocks = module.network.blocks(), original.blocks()
    for key, value in old_blocks[0].state_dict().items():
        assert torch.equal(blocks[0].state_dict()[key], value), key
    for block, old in zip(blocks[-2:], old_blocks[-2:], strict=True):
        assert all(not torch.equal(p, q) for p, q in
                   zip(block.parameters(), old.parameters(), strict=True))
    stage_bn = blocks[1][0][1]
    assert torch.equal(stage_bn.weight, torch.ones_like(stage_bn.weight))
    assert torch.equal(stage_bn.bias, torch.zeros_like(stage_bn.bias))
    assert torch.equal(stage_bn.running_mean, torch.zeros_like(stage_bn.running_mean))
    same = EUk(original=original_ckpt, k=2, **model_kwargs(datamodule))
    same.setup("fit")
    other = EUk(original=original_ckpt, k=2, seed=1, **model_kwargs(datamodule))
    other.setup("fit")
    for p, q in zip(module.network.parameters(), same.network.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(module.network.classifier.weight, other.network.classifier.weight)


EXPECTED_BLOCKS = {"resnet18": 6, "densenet121": 6, "efficientnet_b0": 10, "allcnn": 9,
                   "tiny_cnn": 3}


@pytest.mark.parametrize("arch", sorted(EXPECTED_BLOCKS))
def test_blocks_and_eu_k_reinit_on_every_architecture(arch: str) -> None:
    module = EUk(arch=arch, num_classes=10, small_input=True, k=2, width=0.25)
    network = module.network
    blocks = network.blocks()
    assert len(blocks) == EXPECTED_BLOCKS[arch] and blocks[-1] is network.classifier
    # Blocks are disjoint and hold every parameter.
    owners = [id(p) for block in blocks for p in block.parameters()]
    assert len(owners) == len(set(owners)) == len(list(network.parameters()))
    with torch.no_grad():  # move every weight and statistic away from its initial value
        for p in network.parameters():
            p.add_(0.5)
        for m in network.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.fill_(0.25)
    perturbed = {id(p): p.detach().clone() for p in network.parameters()}
    module.setup_unlearning()
    for index, block in enumerate(blocks):
        reinitialised = index >= len(blocks) - 2
        for p in block.parameters():
            assert torch.equal(p, perturbed[id(p)]) != reinitialised
        for m in block.modules():
            if isinstance(m, _BatchNorm):
                assert (torch.equal(m.weight, torch.ones_like(m.weight))
                        and torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
                        ) == reinitialised
    network.eval()
    assert network(torch.rand(2, 3, 16, 16)).shape == (2, 10)
