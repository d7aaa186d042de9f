"""The ensemble bank: member k equals its sequential retrain twin, records carry the audit's
signals, checkpoints load like a retrain network's, and bad input is refused early."""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torchvision.transforms import v2

from tests.conftest import BENCHMARKS, make_datamodule, make_trainer, model_kwargs
from unlearn_pl.data import DigitsDataModule
from unlearn_pl.data.core import ImageTensorDataset, augmentation_seed
from unlearn_pl.evaluation import audit_method, evaluate
from unlearn_pl.evaluation.bank import bank_loader, train_bank
from unlearn_pl.evaluation.bank_data import _BatchedAugmentation
from unlearn_pl.evaluation.ensemble import EnsembleTrain, StackedNetworks, member_losses
from unlearn_pl.methods import Train
from unlearn_pl.networks import build_network

SEEDS = [101, 202]
EPOCHS = 2


def fit_ensemble(datamodule: Any, seeds: list[int], root: Path, **overrides: Any
                 ) -> tuple[EnsembleTrain, Trainer]:
    ensemble = EnsembleTrain(seeds, **model_kwargs(datamodule), **overrides)
    trainer = make_trainer(root, max_epochs=EPOCHS, enable_checkpointing=False,
                           limit_val_batches=0)
    trainer.fit(ensemble, train_dataloaders=bank_loader(datamodule, seeds))
    return ensemble, trainer


def fit_sequential(seed: int, root: Path, augment: bool, **overrides: Any) -> Train:
    """The retrain run the comparison runner makes for a bank member: seeded with its own
    seed (init), shuffled (and augmented) with it, trained through the datamodule's loader."""
    seed_everything(seed)
    datamodule = make_datamodule(augment=augment, shuffle_seed=seed)
    module = Train(train_on="retain", **model_kwargs(datamodule), **overrides)
    trainer = make_trainer(root, max_epochs=EPOCHS, enable_checkpointing=False,
                           limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    return module


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_member_equals_its_sequential_retrain(augment: bool, tmp_path: Path) -> None:
    """Same init, same batches (own order, own augmentation), same BatchNorm statistics and
    the same SGD + one-cycle updates: every tensor of the state dict to float tolerance."""
    ensemble, _ = fit_ensemble(make_datamodule(augment=augment), SEEDS, tmp_path)
    for index, seed in enumerate(SEEDS):
        single = fit_sequential(seed, tmp_path, augment).network.state_dict()
        member = ensemble.member_state_dict(index)
        assert member.keys() == single.keys()
        for name, value in single.items():
            if name.endswith("num_batches_tracked"):
                assert torch.equal(member[name], value), name
            else:
                torch.testing.assert_close(member[name], value, rtol=1e-4, atol=1e-5,
                                           msg=name)


def test_member_equals_its_sequential_retrain_with_adam_and_cosine(tmp_path: Path) -> None:
    recipe = dict(optimizer="adam", lr=0.01, scheduler="cosine")
    ensemble, _ = fit_ensemble(make_datamodule(), SEEDS, tmp_path, **recipe)
    single = fit_sequential(SEEDS[1], tmp_path, False, **recipe).network.state_dict()
    member = ensemble.member_state_dict(1)
    for name, value in single.items():
        torch.testing.assert_close(member[name].to(value.dtype), value, rtol=1e-4, atol=1e-5)


def test_members_differ_in_init_and_order(tmp_path: Path) -> None:
    datamodule = make_datamodule()
    ensemble = EnsembleTrain(SEEDS, **model_kwargs(datamodule))
    first, second = ensemble.member_state_dict(0), ensemble.member_state_dict(1)
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])
    images, targets, ids = next(iter(bank_loader(datamodule, SEEDS)))
    assert images.shape[:2] == targets.shape[:2] == ids.shape[:2] == (2, datamodule.batch_size)
    assert not torch.equal(ids[0], ids[1])
    dataset = bank_loader(datamodule, SEEDS).dataset
    first = dataset[(0, 0)]  # one position (sample 0 for both members), un-augmented
    assert first[0].shape == (2, *datamodule.splits["retain"][0].shape[1:])
    assert first[2].tolist() == [int(datamodule.splits["retain"][2][0])] * 2
    # each member's batch is the one its own sequential loader gives
    for member, seed in enumerate(SEEDS):
        own = next(iter(make_datamodule(shuffle_seed=seed).dataloader("retain", train=True)))
        assert torch.equal(own[2], ids[member]) and torch.equal(own[0], images[member])


def test_stacked_batchnorm_updates_each_members_statistics() -> None:
    """Under vmap the running statistics of every member move as the member's own would."""
    networks = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        networks.append(build_network("tiny_cnn", 4, 3, width=0.5))
    stacked = StackedNetworks(networks).train()
    images = torch.rand(2, 8, 3, 12, 12)
    logits = stacked(images)
    for index, network in enumerate(networks):
        expected = network.train()(images[index])
        torch.testing.assert_close(logits[index], expected)
        for name, value in network.state_dict().items():
            torch.testing.assert_close(stacked.member_state_dict(index)[name], value)
    member = stacked.member(1)
    torch.testing.assert_close(member(images[1]), networks[1].eval()(images[1]))


def test_member_losses_are_each_members_mean() -> None:
    logits, targets = torch.randn(3, 5, 4), torch.randint(0, 4, (3, 5))
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[k], targets[k])
                            for k in range(3)])
    torch.testing.assert_close(member_losses(logits, targets), expected)
    labels = torch.randint(0, 2, (3, 5, 4)).float()
    expected = torch.stack([torch.nn.functional.binary_cross_entropy_with_logits(
        logits[k], labels[k]) for k in range(3)])
    torch.testing.assert_close(member_losses(logits, labels, "multilabel"), expected)


@pytest.mark.parametrize("transform", [
    DigitsDataModule(forget_classes=[3]).train_transform(),  # constant padding
    make_datamodule().train_transform(),  # reflect padding and flip (the CIFAR-style default)
    v2.Compose([v2.RandomHorizontalFlip(p=0.3), v2.RandomCrop(10, padding=2,
                                                              padding_mode="edge")]),
], ids=["digits", "default", "flip_then_edge_crop"])
def test_batched_augmentation_equals_the_transform(transform: Any) -> None:
    images = torch.randint(0, 256, (40, 3, 12, 12), dtype=torch.uint8)
    targets, ids = torch.zeros(40, dtype=torch.long), torch.arange(100, 140)
    dataset = ImageTensorDataset(images, targets, ids, transform, seed=7)
    batched = _BatchedAugmentation.build(transform, dataset)
    assert batched is not None
    expected = torch.stack([dataset[(i, 3, 1)][0] for i in range(40)])
    seeds = [augmentation_seed(7, 3, 1, int(i)) for i in ids]
    assert torch.equal(batched(images.float().div(255), seeds), expected)


def test_unknown_augmentation_goes_sample_by_sample() -> None:
    datamodule = make_datamodule(augment=True)
    transform = v2.Compose([v2.RandomCrop(12, padding=1), v2.ColorJitter(brightness=0.5)])
    datamodule.train_transform = lambda: transform  # type: ignore[method-assign]
    loader = bank_loader(datamodule, SEEDS)
    assert loader.dataset.batched is None  # type: ignore[attr-defined]
    images, _, ids = next(iter(loader))
    for member, seed in enumerate(SEEDS):
        dataset = ImageTensorDataset(*datamodule.splits["retain"], transform, seed=seed)
        position = {int(i): p for p, i in enumerate(datamodule.splits["retain"][2])}
        expected = dataset[(position[int(ids[member, 0])], 0, 0)][0]
        assert torch.equal(images[member, 0], expected)


def test_train_bank_records_and_checkpoints(tmp_path: Path) -> None:
    datamodule = make_datamodule()
    paths = [tmp_path / f"member{k}.ckpt" for k in range(2)]
    records = train_bank(datamodule, 2, SEEDS, 1, recipe=dict(arch="tiny_cnn", width=0.5),
                         checkpoints=paths, trainer_kwargs={"accelerator": "cpu"})
    assert [r["member_seed"] for r in records] == SEEDS
    forget_ids = sorted(datamodule.splits["forget"][2].tolist())
    nonmember_ids = sorted(datamodule.splits[datamodule.mia_nonmember_split][2].tolist())
    for record, path in zip(records, paths, strict=True):
        assert record["signals"]["forget"]["ids"] == forget_ids
        assert record["signals"]["nonmember"]["ids"] == nonmember_ids
        assert len(record["losses"]["forget"]) == len(forget_ids)
        assert 0 <= record["acc_retain"] <= 1 and "acc_retain_test" in record
        assert record["fit_seconds"] == pytest.approx(record["bank_fit_seconds"] / 2)
        assert record["class_path"] == "unlearn_pl.methods.train.Train"
        # an ordinary retrain checkpoint: Train.load_from_checkpoint evaluates to the record
        loaded = Train.load_from_checkpoint(path, weights_only=True)
        assert loaded.hparams.train_on == "retain"
        assert loaded.hparams.seed == record["member_seed"]
        assert loaded.fit_seconds == pytest.approx(record["fit_seconds"])
        again = evaluate(loaded, datamodule)
        assert again["acc_retain"] == pytest.approx(record["acc_retain"])
        # ... and its network loads into build_network
        network = build_network("tiny_cnn", 4, 3, width=0.5)
        state = torch.load(path, weights_only=True)["state_dict"]
        network.load_state_dict({k[len("network."):]: v for k, v in state.items()
                                 if k.startswith("network.")})
    assert records[0]["signals"] != records[1]["signals"]
    # the checkpoint records its forget request, like the runner's: another one is refused
    with pytest.raises(ValueError, match="forget request"):
        evaluate(paths[0], make_datamodule(forget_classes=[2]))
    # the records are what the privacy audit reads
    audit = audit_method([records[0]], records[1:] + records[:1], records[1], "acc_retain_test")
    assert len(audit["runs"]) == 1


def test_a_bank_in_processes_equals_one_ensemble(tmp_path: Path) -> None:
    datamodule, tiny, seeds = make_datamodule(), dict(arch="tiny_cnn", width=0.5), [1, 2, 3, 4]
    together = train_bank(datamodule, 4, seeds, 1, recipe=tiny)
    paths = [tmp_path / f"member{k}.ckpt" for k in range(4)]
    apart = train_bank(datamodule, 4, seeds, 1, recipe=tiny, processes=2, checkpoints=paths)
    assert [r["member_seed"] for r in apart] == seeds
    for one, other, path in zip(together, apart, paths, strict=True):
        # Member k is the same network in an ensemble of 4 or of 2 (float tolerance).
        torch.testing.assert_close(torch.tensor(one["signals"]["forget"]["signal"]),
                                   torch.tensor(other["signals"]["forget"]["signal"]),
                                   atol=1e-3, rtol=0)
        assert "population" in other["signals"] and path.is_file()
        # The slowest process's fit, shared by the K members.
        assert other["fit_seconds"] == pytest.approx(other["bank_fit_seconds"] / 4)
    with pytest.raises(ValueError, match="give 1 to 2 processes"):
        train_bank(datamodule, 4, seeds, 1, recipe=tiny, processes=3)


def test_train_bank_refuses_bad_input(tmp_path: Path) -> None:
    datamodule = make_datamodule()
    tiny = dict(arch="tiny_cnn", width=0.5)
    with pytest.raises(ValueError, match="at least 2 references"):
        train_bank(datamodule, 1, [1], 1, recipe=tiny)
    with pytest.raises(ValueError, match="3 distinct seeds"):
        train_bank(datamodule, 3, [1, 2], 1, recipe=tiny)
    with pytest.raises(ValueError, match="2 distinct seeds"):
        train_bank(datamodule, 2, [1, 1], 1, recipe=tiny)
    with pytest.raises(ValueError, match="epochs"):
        train_bank(datamodule, 2, [1, 2], 0, recipe=tiny)
    with pytest.raises(ValueError, match="2 checkpoint paths"):
        train_bank(datamodule, 2, [1, 2], 1, recipe=tiny, checkpoints=[tmp_path / "a.ckpt"])
    with pytest.raises(ValueError, match=r"does not fit the datamodule \(num_classes: recipe 10"):
        train_bank(datamodule, 2, [1, 2], 1, recipe={**tiny, "num_classes": 10})
    with pytest.raises(ValueError, match="retain set"):
        train_bank(datamodule, 2, [1, 2], 1, recipe={**tiny, "train_on": "full"})
    with pytest.raises(ValueError, match="original"):
        train_bank(datamodule, 2, [1, 2], 1, recipe={**tiny, "original": "x.ckpt"})
    with pytest.raises(ValueError, match="unknown recipe"):
        train_bank(datamodule, 2, [1, 2], 1, recipe={**tiny, "momentun": 0.5})
    with pytest.raises(ValueError, match="unknown arch"):
        train_bank(datamodule, 2, [1, 2], 1, recipe={"arch": "tiny_cnm"})
    with pytest.raises(ValueError, match="clipping by norm"):
        train_bank(datamodule, 2, [1, 2], 1, recipe=tiny,
                   trainer_kwargs={"gradient_clip_val": 1.0})


def test_ensemble_refuses_bad_members() -> None:
    kwargs = dict(arch="tiny_cnn", num_classes=4, in_channels=3, width=0.5)
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleTrain([0], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        EnsembleTrain([3, 3], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"not of network 0's architecture .*features\.0\.0"):
        StackedNetworks([build_network("tiny_cnn", 4, 3, width=0.5),
                         build_network("tiny_cnn", 4, 3, width=1.0)])
    with pytest.raises(ValueError, match="not of network 0's architecture"):
        StackedNetworks([build_network("tiny_cnn", 4, 3, width=0.5),
                         build_network("allcnn", 4, 3, width=0.1)])
    with pytest.raises(ValueError, match="at least 2 networks"):
        StackedNetworks([build_network("tiny_cnn", 4, 3, width=0.5)])


def test_ensemble_checkpoint_round_trip(tmp_path: Path) -> None:
    """The ensemble itself checkpoints with plain hyperparameters and reloads."""
    datamodule = make_datamodule()
    ensemble, trainer = fit_ensemble(datamodule, SEEDS, tmp_path)
    trainer.save_checkpoint(tmp_path / "ensemble.ckpt")
    loaded = EnsembleTrain.load_from_checkpoint(tmp_path / "ensemble.ckpt", weights_only=True)
    for name, value in ensemble.member_state_dict(1).items():
        assert torch.equal(loaded.member_state_dict(1)[name], value)
    images = datamodule.splits["forget"][0][:4].float() / 255
    torch.testing.assert_close(loaded.member_network(1)(images),
                               ensemble.networks.member(1)(images))


def test_benchmark_script_runs(tmp_path: Path) -> None:
    """benchmarks/bench_bank.py end to end at toy size (its timings are not asserted)."""
    main = runpy.run_path(str(BENCHMARKS / "bench_bank.py"))["main"]
    output = tmp_path / "bank.json"
    result = main(["--references", "4", "--epochs", "1", "--rounds", "1", "--output",
                   str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(result))
    # With two cores or more, also the bank split over processes (the runner's way on a CPU).
    parallel = {"bank_processes"} if (os.cpu_count() or 1) >= 2 else set()
    assert set(result["seconds_median"]) == {"bank", "sequential_lean", "sequential_runner",
                                             *parallel}
    # the same seeds give the same networks both ways, up to rounding
    assert result["bank_vs_sequential_twins"]["max_abs_acc_retain_test_diff"] < 0.05


def test_member_of_your_own_network_equals_its_sequential_retrain(tmp_path: Path) -> None:
    """A bank of a network given by class path (``network``), built and trained by the
    members as the sequential retrain does. Two full batches: ResNet-18 on 12×12 images has
    1×1 maps whose BatchNorm amplifies float rounding chaotically over longer runs."""
    mine = dict(network={"class_path": "torchvision.models.resnet18"}, input_size=[12, 12])
    datamodule = make_datamodule(augment=False)
    ensemble = EnsembleTrain([SEEDS[0], 303], **model_kwargs(datamodule), **mine)
    make_trainer(tmp_path, limit_train_batches=2, enable_checkpointing=False,
                 limit_val_batches=0).fit(ensemble, train_dataloaders=bank_loader(
                     datamodule, [SEEDS[0], 303]))
    seed_everything(SEEDS[0])
    single_data = make_datamodule(augment=False, shuffle_seed=SEEDS[0])
    single = Train(train_on="retain", **model_kwargs(single_data), **mine)
    make_trainer(tmp_path, limit_train_batches=2, enable_checkpointing=False,
                 limit_val_batches=0).fit(single, datamodule=single_data)
    member, state = ensemble.member_state_dict(0), single.network.state_dict()
    assert member.keys() == state.keys()
    for name, value in state.items():
        torch.testing.assert_close(member[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert ensemble.member_network(1).head_path == "fc"
