"""The evaluation behind every report: what it measures, on which samples, and how it fails."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import NETWORK, make_datamodule, make_trainer
from unlearn_pl.data import SyntheticDataModule
from unlearn_pl.data.core import ImageData
from unlearn_pl.evaluation import evaluate
from unlearn_pl.methods import Train
from unlearn_pl.metrics import attack_features, membership_inference_attack
from unlearn_pl.networks import Classifier, build_network, load_network_weights


def original_network(original_ckpt: str, datamodule: SyntheticDataModule) -> Classifier:
    network = build_network(NETWORK["arch"], datamodule.num_classes, datamodule.num_channels,
                            width=NETWORK["width"])
    load_network_weights(network, original_ckpt, NETWORK["arch"])
    return network.eval()


@torch.no_grad()
def outputs(network: Classifier, datamodule: SyntheticDataModule,
            split: str) -> tuple[torch.Tensor, torch.Tensor]:
    network.eval()
    pairs = [(network(x), y) for x, y, _ in datamodule.dataloader(split)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def assert_same_numbers(a: dict[str, float], b: dict[str, float],
                        skip: tuple[str, ...] = ()) -> None:
    assert set(a) == set(b)
    for key in set(a) - set(skip):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key


def test_network_module_and_checkpoint_give_the_same_evaluation(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    module = Train.load_from_checkpoint(original_ckpt)
    by_module = evaluate(module, datamodule)
    by_network = evaluate(module.network, datamodule)
    by_path = evaluate(original_ckpt, datamodule)

    expected = {f"{kind}_{split}" for kind in ("acc", "loss") for split in datamodule.eval_splits}
    assert set(by_module) == expected | {"mia", "mia_auc", "forgetting_score", "nomus",
                                         "fit_seconds"}
    assert_same_numbers(by_module, by_path)
    assert_same_numbers(by_module, by_network, skip=("fit_seconds",))
    saved = torch.load(original_ckpt, weights_only=True)["unlearn_pl"]["fit_seconds"]
    assert by_module["fit_seconds"] == by_path["fit_seconds"] == pytest.approx(saved)
    assert saved > 0 and by_network["fit_seconds"] == 0.0
    # Against a hand computation on the full, untransformed splits.
    for split in datamodule.eval_splits:
        logits, targets = outputs(module.network, datamodule, split)
        assert by_module[f"acc_{split}"] == pytest.approx(
            (logits.argmax(1) == targets).float().mean().item(), abs=1e-6)
        assert by_module[f"loss_{split}"] == pytest.approx(
            nn.functional.cross_entropy(logits, targets).item(), rel=1e-5)
    assert by_module["forgetting_score"] == pytest.approx(2 * abs(by_module["mia"] - 0.5))
    assert by_module["nomus"] == pytest.approx(
        0.5 * (by_module["acc_retain_test"] + 1 - by_module["forgetting_score"]))


@pytest.mark.parametrize(("request_kwargs", "non_members"), [
    ({"forget_classes": [1]}, "forget_test"), ({"forget_fraction": 0.25}, "unseen")])
def test_attack_non_members(original_ckpt: str, request_kwargs: dict, non_members: str) -> None:
    """Class-wise requests attack the forget set against held-out samples of the forgotten
    classes (like against like); sample-wise requests against all unseen data."""
    datamodule = make_datamodule(**request_kwargs)
    network = original_network(original_ckpt, datamodule)
    result = evaluate(network, datamodule)
    if non_members == "forget_test":
        assert set(datamodule.splits["forget_test"][1].tolist()) == {1}
    features, membership = [], []
    for split, member in (("forget", 1), (non_members, 0)):
        logits, targets = outputs(network, datamodule, split)
        features.append(attack_features(logits, targets))
        membership.append(torch.full((len(targets),), member))
    attack = membership_inference_attack(torch.cat(features), torch.cat(membership), seed=0)
    assert result["mia"] == pytest.approx(float(attack["accuracy"]), abs=1e-6)
    assert result["mia_auc"] == pytest.approx(float(attack["auc"]), abs=1e-6)


def test_evaluation_is_in_eval_mode_and_repeatable(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    network = original_network(original_ckpt, datamodule)
    plain = evaluate(network, datamodule)
    # Dropout (p=0.5) changes every output in train mode; tiny_cnn's BatchNorm would update its
    # running statistics in train mode.
    network.features = nn.Sequential(network.features, nn.Dropout(0.5))
    network.train()
    state = {k: v.clone() for k, v in network.state_dict().items()}
    first = evaluate(network, datamodule)
    second = evaluate(network, datamodule)
    assert first == second
    assert_same_numbers(first, plain)
    for key, value in network.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_evaluation_never_augments(original_ckpt: str) -> None:
    augmented = make_datamodule(augment=True)
    plain = make_datamodule(augment=False)
    network = original_network(original_ckpt, plain)
    # The augmenting datamodule really augments its training loaders...
    assert augmented.dataset("retain", train=True).transform is not None
    # ...but no evaluation loader, and the numbers are those of the plain data.
    loaders = [*augmented.val_dataloader(), *augmented.test_dataloader()]
    assert all(loader.dataset.transform is None for loader in loaders)
    assert evaluate(network, augmented) == evaluate(network, plain)


def test_validation_probe_is_a_fixed_subset_and_test_uses_full_splits() -> None:
    def probe_ids(datamodule: SyntheticDataModule) -> list[list[int]]:
        return [loader.dataset.ids.tolist() for loader in datamodule.val_dataloader()]

    datamodule = make_datamodule(eval_max_samples=10)
    first = probe_ids(datamodule)
    assert probe_ids(datamodule) == first
    assert probe_ids(make_datamodule(eval_max_samples=10)) == first
    for split, ids in zip(datamodule.eval_splits, first, strict=True):
        full = datamodule.splits[datamodule.probe_source(split)][2].tolist()
        assert len(ids) == min(10, len(full)) and set(ids) <= set(full)
    for split, loader in zip(datamodule.test_splits, datamodule.test_dataloader(), strict=True):
        source = datamodule.test_source(split)
        assert loader.dataset.ids.tolist() == datamodule.splits[source][2].tolist()


@pytest.mark.parametrize("request_", [{"forget_classes": [1]}, {"forget_fraction": 0.25}])
def test_minimal_probe_keeps_the_forgetting_numbers_and_test_keeps_every_split(
        original_ckpt: str, tmp_path: Path, request_: dict) -> None:
    module = Train.load_from_checkpoint(original_ckpt)
    numbers = {}
    for probe in ("all", "minimal"):
        datamodule = make_datamodule(eval_max_samples=20, probe_splits=probe, **request_)
        trainer = make_trainer(tmp_path / probe)
        trainer.validate(module, datamodule=datamodule, verbose=False)
        numbers[probe] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        trainer.test(module, datamodule=datamodule, verbose=False)
        assert set(module.last_evaluation) >= {f"acc_{s}" for s in datamodule.eval_splits}
    class_wise = "forget_classes" in request_
    assert datamodule.val_splits == (["forget", "retain_test", "forget_test"] if class_wise
                                     else ["forget", "unseen"])
    dropped = {"val/acc_retain", "val/loss_retain"} | (
        {"val/acc_unseen", "val/loss_unseen"} if class_wise else set())
    assert set(numbers["all"]) - set(numbers["minimal"]) == dropped
    for key in ("val/forgetting_score", "val/mia", "val/nomus", "val/acc_forget"):
        assert numbers["minimal"][key] == pytest.approx(numbers["all"][key]), key
    with pytest.raises(ValueError, match="probe_splits"):
        make_datamodule(probe_splits="retain")


# ------------------------------------------------------------------ bad input
def test_too_few_forget_samples_for_the_attack(original_ckpt: str) -> None:
    datamodule = make_datamodule(forget_count=1)
    with pytest.raises(ValueError, match="1 forget sample.*needs at least 2 of each"):
        evaluate(original_network(original_ckpt, datamodule), datamodule)


def test_few_forget_samples_give_a_warned_coarse_attack(original_ckpt: str) -> None:
    datamodule = make_datamodule(forget_count=6)
    with pytest.warns(UserWarning, match="coarse"):
        result = evaluate(original_network(original_ckpt, datamodule), datamodule)
    assert all(math.isfinite(v) for v in result.values())


def test_empty_forget_request(original_ckpt: str, tmp_path: Path) -> None:
    ids = tmp_path / "forget.txt"
    ids.write_text("")
    with pytest.raises(ValueError, match="holds no sample id"):  # before any data is read
        make_datamodule(forget_ids=str(ids))


class NoHeldOutData(SyntheticDataModule):
    """Synthetic data whose official held-out split is empty."""

    def load(self) -> ImageData:
        data = super().load()
        assert data.test_images is not None and data.test_targets is not None
        data.test_images, data.test_targets = data.test_images[:0], data.test_targets[:0]
        return data


def test_empty_unseen_split(original_ckpt: str) -> None:
    datamodule = NoHeldOutData(num_samples=192, num_classes=4, image_size=12, num_test=96,
                               forget_fraction=0.25, augment=False)
    with pytest.raises(ValueError, match=r"0 unseen sample\(s\) \(non-members\)"):
        evaluate(original_network(original_ckpt, datamodule), datamodule)


def test_wrong_class_count(original_ckpt: str) -> None:
    datamodule = make_datamodule()
    network = build_network("tiny_cnn", datamodule.num_classes + 1, 3, width=0.5)
    with pytest.raises(ValueError, match="5 outputs but the dataset has 4 classes"):
        evaluate(network, datamodule)


@pytest.mark.parametrize(("poison", "message"), [
    ({"bias": slice(None), "value": math.nan}, "NaN"),
    ({"bias": 1, "value": -math.inf}, "non-finite per-sample losses"),  # the forgotten class
    ({"bias": 0, "value": -math.inf}, "non-finite per-sample losses"),  # a retained class
])
def test_non_finite_outputs(original_ckpt: str, poison: dict, message: str) -> None:
    datamodule = make_datamodule()
    network = original_network(original_ckpt, datamodule)
    with torch.no_grad():
        network.classifier.bias[poison["bias"]] = poison["value"]
    with pytest.raises(ValueError, match=message):
        evaluate(network, datamodule)



def test_evaluate_refuses_several_processes(original_ckpt: str) -> None:
    """Spawned ranks would keep the results to themselves; ``unlearn-pl test`` is the way."""
    datamodule = make_datamodule()
    network = original_network(original_ckpt, datamodule)
    with pytest.raises(ValueError, match="one process"):
        evaluate(network, datamodule, trainer_kwargs={"strategy": "ddp_spawn", "devices": 2,
                                                      "accelerator": "cpu"})
