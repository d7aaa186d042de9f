"""The datamodule: forget requests, deterministic splits, loaders, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import make_datamodule, make_trainer
from unlearn_pl.data import (
    DigitsDataModule,
    ImageFolderDataModule,
    SyntheticDataModule,
    UnlearningDataModule,
    read_image_folders,
)
from unlearn_pl.data.core import ImageData
from unlearn_pl.data.datamodule import EpochShuffleSampler


def test_class_wise_splits_partition_the_data() -> None:
    dm = make_datamodule(forget_classes=[1, 2])
    splits = dm.splits
    forget, retain, train = (set(splits[s][2].tolist()) for s in ("forget", "retain", "train"))
    assert forget | retain == train and not forget & retain
    assert set(splits["forget"][1].tolist()) == {1, 2}
    assert not set(splits["retain"][1].tolist()) & {1, 2}
    assert set(splits["forget_test"][1].tolist()) == {1, 2}
    assert not set(splits["retain_test"][1].tolist()) & {1, 2}
    assert dm.eval_splits == ["retain", "forget", "unseen", "retain_test", "forget_test"]
    assert dm.mia_nonmember_split == "forget_test"


@pytest.mark.parametrize("request_", [{"forget_fraction": 0.2}, {"forget_count": 17}])
def test_sample_wise_splits_are_deterministic_for_a_seed(request_: dict) -> None:
    first = make_datamodule(**request_, seed=3).split_ids()
    again = make_datamodule(**request_, seed=3).split_ids()
    other = make_datamodule(**request_, seed=4).split_ids()
    assert first == again
    assert first["forget"] != other["forget"]
    expected = request_.get("forget_count", round(0.2 * 192))
    assert len(first["forget"]) == expected
    assert make_datamodule(**request_).mia_nonmember_split == "unseen"


def test_forget_ids_file_and_groups(tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("5\n9\n100\n")
    dm = make_datamodule(forget_ids=str(ids_file))
    assert dm.split_ids()["forget"] == [5, 9, 100]
    grouped = make_datamodule(num_groups=6, forget_groups=[0, 4])
    groups = grouped.data.train_groups
    assert set(groups[grouped.splits["forget"][2]].tolist()) == {0, 4}
    assert not set(groups[grouped.splits["retain"][2]].tolist()) & {0, 4}


def test_unseen_is_carved_from_train_when_there_is_no_held_out_split() -> None:
    dm = DigitsDataModule(forget_classes=[3], seed=0)
    ids = dm.split_ids()
    held_out = ids["unseen"] + ids["validation/unseen"]
    assert not set(held_out) & set(ids["train"])
    assert len(held_out) + len(ids["train"]) == 1797
    assert abs(len(held_out) / 1797 - 0.2) < 0.01


def test_splits_are_written_next_to_the_run(tmp_path: Path) -> None:
    dm = make_datamodule()
    trainer = make_trainer(tmp_path)
    dm.trainer = trainer
    dm.setup("fit")
    record = json.loads((tmp_path / "splits.json").read_text())
    assert record["splits"]["forget"] == dm.split_ids()["forget"]
    assert record["hparams"]["forget_classes"] == [1]


def test_epoch_shuffle_is_a_function_of_seed_and_epoch() -> None:
    sampler = EpochShuffleSampler(50, seed=1)
    sampler.set_epoch(2)
    first = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) != first
    sampler.set_epoch(2)
    assert list(sampler) == first and sorted(first) == list(range(50))


def test_shuffle_seed_changes_the_batch_order_and_not_the_split() -> None:
    def run(**kwargs: int) -> tuple[dict, list[int]]:
        dm = make_datamodule(forget_fraction=0.25, seed=3, **kwargs)
        order = [i for batch in dm.dataloader("retain", train=True) for i in batch[2].tolist()]
        return dm.split_ids(), order

    split, order = run()
    assert run(shuffle_seed=3) == (split, order)  # the default is the split's seed
    other_split, other_order = run(shuffle_seed=7)
    assert other_split == split
    assert other_order != order and sorted(other_order) == sorted(order)


def test_combined_train_loader_counts_epochs_over_the_chosen_split() -> None:
    dm = make_datamodule(forget_fraction=0.25, batch_size=16)
    by_forget = dm.train_loaders(("retain", "forget"), "forget")
    by_retain = dm.train_loaders(("retain", "forget"), "retain")
    assert len(list(iter(by_forget))) == len(dm.dataloader("forget", train=True))
    assert len(list(iter(by_retain))) == len(dm.dataloader("retain", train=True))
    batch, _, _ = next(iter(by_retain))
    assert set(batch) == {"retain", "forget"}


def test_evaluation_loaders_never_augment_and_probe_is_bounded() -> None:
    dm = make_datamodule(augment=True, eval_max_samples=10)
    images, _, _ = dm.splits["validation/unseen"]
    loader = dm.val_dataloader()[2]
    x, _, ids = next(iter(loader))
    assert len(loader.dataset) == 10
    assert [next(iter(dm.val_dataloader()[2]))[2].tolist()] == [ids.tolist()]  # same probe
    torch.testing.assert_close(x, images[_positions(dm, ids)].float() / 255)
    # The test stage: every evaluation split whole, then RMIA's population, the validation
    # split's held-out samples (never a test sample).
    assert dm.test_splits == [*dm.eval_splits, "population"]
    test_ids = [d.dataset.ids.tolist() for d in dm.test_dataloader()]
    assert test_ids[:-1] == [dm.splits[s][2].tolist() for s in dm.eval_splits]
    assert test_ids[-1] == dm.splits["validation/unseen"][2].tolist()
    assert not set(test_ids[-1]) & set(dm.splits["unseen"][2].tolist())


def _positions(dm: UnlearningDataModule, ids: torch.Tensor) -> torch.Tensor:
    all_ids = dm.splits["validation/unseen"][2].tolist()
    return torch.tensor([all_ids.index(i) for i in ids.tolist()])


@pytest.mark.parametrize("kwargs, message", [
    ({"forget_classes": [7]}, "out of range"),
    ({"forget_classes": []}, "is empty"),
    ({"forget_fraction": 1.5}, r"\(0, 1\)"),
    ({"forget_fraction": 0.0}, r"\(0, 1\)"),
    ({"forget_classes": [0, 1, 2, 3]}, "every training sample"),
    ({"batch_size": 0, "forget_classes": [1]}, "batch_size must be at least 1"),
    ({"forget_classes": [1], "forget_fraction": 0.1}, "exactly one forget request"),
    ({"forget_count": 10_000}, "exceeds"),
])
def test_bad_requests_fail_before_any_work(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticDataModule(**{"num_samples": 64, "num_test": 32, **kwargs}).setup("fit")


def test_empty_forget_set_is_rejected() -> None:
    # class 3 exists in the label space but no training sample has it
    dm = SyntheticDataModule(num_samples=64, num_test=32, forget_classes=[3])
    targets = dm.data.train_targets
    targets[targets == 3] = 0
    with pytest.raises(ValueError, match="selects no training sample"):
        dm.setup("fit")


@pytest.mark.parametrize("content, message", [
    ("1\n2\n2\n", "more than once"),
    ("1\n99999\n", "out of range"),
    ("1\nabc\n", "not an integer"),
])
def test_bad_id_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        make_datamodule(forget_ids=str(path)).setup("fit")


def test_ids_of_carved_held_out_samples_are_unknown(tmp_path: Path) -> None:
    dm = DigitsDataModule(forget_count=5)
    held = dm.split_ids()["unseen"][:2]
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(map(str, held)))
    with pytest.raises(ValueError, match="unknown training samples"):
        DigitsDataModule(forget_ids=str(path)).setup("fit")


def test_missing_paths_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="forget_ids file"):
        make_datamodule(forget_ids=str(tmp_path / "nope.txt"))
    with pytest.raises(FileNotFoundError, match="image folder"):
        ImageFolderDataModule(root=str(tmp_path / "nope"), forget_classes=[0])


def _write_folder(root: Path, broken: bool = False,
                  splits: tuple[str, ...] = ("train", "test")) -> None:
    for green, split in enumerate(splits):  # the green channel tells the splits apart
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (40 * i, 100 * green, 0)).save(folder / f"{i}.png")
    if broken:
        (root / "train" / "cat" / "9.png").write_bytes(b"not an image")


def test_image_folder_reads_folders(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    dm = ImageFolderDataModule(root=str(tmp_path), forget_classes=[1])
    assert dm.num_classes == 2 and dm.data.train_images.shape == (8, 3, 8, 8)
    assert dm.data.train_targets.tolist() == [0] * 4 + [1] * 4


def test_undecodable_image_is_named(tmp_path: Path) -> None:
    _write_folder(tmp_path, broken=True)
    with pytest.raises(ValueError, match=r"cannot decode image .*9\.png"):
        read_image_folders(tmp_path, ("train",))


@pytest.mark.parametrize("forget", [{"forget_classes": [1]}, {"forget_count": 2}])
def test_validation_split_feeds_the_probe_and_test_keeps_the_test_split(
        tmp_path: Path, forget: dict) -> None:
    _write_folder(tmp_path, splits=("train", "validation", "test"))
    dm = ImageFolderDataModule(root=str(tmp_path), val_split="validation", augment=False,
                               **forget)

    def green(loader: object) -> set[int]:
        return {round(float(images[:, 1].max()) * 255)  # images in [0, 1]
                for images, _, _ in loader}  # type: ignore[attr-defined]

    held_out = ["unseen"] + (["retain_test", "forget_test"] if "forget_classes" in forget else [])
    assert [s for s in dm.val_splits if s in held_out] == held_out
    validation = dict(zip(dm.val_splits, dm.val_dataloader(), strict=True))
    test = dict(zip(dm.test_splits, dm.test_dataloader(), strict=True))
    for split in held_out:
        assert green(validation[split]) == {100}, split  # the validation folder
        assert green(test[split]) == {200}, split  # the test folder
    assert green(test["population"]) == {100}  # RMIA's population: the validation folder
    assert green(validation["forget"]) == green(test["forget"]) == {0}  # train
    assert dm.split_ids()["validation/unseen"] == list(range(8))
    # Without a validation folder the probe draws from the test split, as before.
    plain = ImageFolderDataModule(root=str(tmp_path), augment=False, **forget)
    probe = dict(zip(plain.val_splits, plain.val_dataloader(), strict=True))
    assert green(probe["unseen"]) == {200}


def test_validation_split_needs_a_test_split(tmp_path: Path) -> None:
    _write_folder(tmp_path, splits=("train", "validation"))
    with pytest.raises(ValueError, match="needs a test_split"):
        ImageFolderDataModule(root=str(tmp_path), test_split=None, val_split="validation",
                              forget_classes=[1])
    # a validation folder without the forgotten class cannot measure forgetting
    (tmp_path / "test" / "dog").mkdir(parents=True)
    (tmp_path / "test" / "cat").mkdir()
    for label in ("cat", "dog"):
        Image.new("RGB", (8, 8)).save(tmp_path / "test" / label / "0.png")
    shutil.rmtree(tmp_path / "validation" / "dog")
    dm = ImageFolderDataModule(root=str(tmp_path), val_split="validation", forget_classes=[1])
    with pytest.raises(ValueError, match="validation split has no sample .*val_split: null"):
        dm.setup()
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="val_images without test_images"):
        ImageData(images, torch.zeros(2, dtype=torch.long), ["a"], val_images=images,
                  val_targets=torch.zeros(2, dtype=torch.long))
