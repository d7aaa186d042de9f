"""Your own data: a map-style Dataset or a CSV / JSON file list, in memory or streamed, and
refused with the fix when its samples are not (image, target)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from unlearn_pl.data import (
    DatasetDataModule,
    FileListDataModule,
    ForgetCount,
    ForgetGroups,
    LazyImages,
)


class Images(Dataset):
    """A user's dataset: ``n`` random 10×10 images in the given form, 3 classes."""

    def __init__(self, n: int = 60, form: str = "pil", size: int = 10) -> None:
        generator = torch.Generator().manual_seed(n)
        self.pixels = (torch.rand(n, size, size, 3, generator=generator) * 255).byte()
        self.form, self.targets = form, [i % 3 for i in range(n)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Any:
        pixels = self.pixels[index]
        image = {"pil": lambda: Image.fromarray(pixels.numpy()),
                 "numpy": lambda: pixels.numpy(),
                 "uint8": lambda: pixels.permute(2, 0, 1),
                 "float": lambda: pixels.permute(2, 0, 1).float() / 255,
                 "normalised": lambda: pixels.permute(2, 0, 1).float() / 255 - 0.5,
                 "triple": lambda: pixels}[self.form]()
        if self.form == "triple":
            return image, self.targets[index], index
        return image, self.targets[index]


@pytest.mark.parametrize("form", ["pil", "numpy", "uint8", "float"])
def test_images_of_every_form_become_the_same_samples(form: str) -> None:
    datamodule = DatasetDataModule(Images(form=form), Images(30, form), forget=ForgetCount(6))
    images = datamodule.data.train_images
    assert images.dtype == torch.uint8 and tuple(images.shape) == (60, 3, 10, 10)
    torch.testing.assert_close(images, Images().pixels.permute(0, 3, 1, 2))
    assert datamodule.num_classes == 3 and datamodule.input_size == [10, 10]
    assert datamodule.hparams["train"].endswith("Images (60 samples)")  # plain, not the object


def test_streamed_data_gives_the_samples_held_in_memory() -> None:
    held = DatasetDataModule(Images(), Images(30), forget=ForgetCount(6))
    streamed = DatasetDataModule(Images(), Images(30), forget=ForgetCount(6), in_memory_mb=0)
    assert isinstance(streamed.data.train_images, LazyImages)
    assert held.split_ids() == streamed.split_ids()
    assert held.normalization == streamed.normalization
    for split in ("retain", "forget", "unseen"):
        a, b = held.dataset(split), streamed.dataset(split)
        for index in (0, len(a) - 1):
            torch.testing.assert_close(a[index][0], b[index][0])
    batch = next(iter(streamed.dataloader("retain", batch_size=8)))
    assert batch[0].shape == (8, 3, 10, 10)


@pytest.mark.parametrize("form, message", [
    ("normalised", "must lie in \\[0, 1\\].*drop the Normalize transform"),
    ("triple", r"train\[0\] is a 3-tuple, not \(image, target\)"),
])
def test_samples_other_than_image_and_target_are_refused(form: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _ = DatasetDataModule(Images(form=form), forget=ForgetCount(6)).data


def test_images_of_different_sizes_need_an_image_size() -> None:
    class Mixed(Images):
        def __getitem__(self, index: int) -> Any:
            image, target = super().__getitem__(index)
            return (image.resize((12, 12)) if index == 5 else image), target

    with pytest.raises(ValueError, match="differ in shape.*set image_size"):
        _ = DatasetDataModule(Mixed(), forget=ForgetCount(6)).data
    data = DatasetDataModule(Mixed(), forget=ForgetCount(6), image_size=8).data
    assert tuple(data.train_images.shape) == (60, 3, 8, 8)


def _write_images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    names = []
    for index in range(count):
        name = f"img{index}.png"
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(folder / name)
        names.append(name)
    return names


def test_a_csv_list_with_groups_serves_a_group_request(tmp_path: Path) -> None:
    names = _write_images(tmp_path / "images", 40)
    rows = ["path,label,group"] + [f"images/{n},{['happy', 'sad'][i % 2]},{i // 4}"
                                   for i, n in enumerate(names[:32])]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "test.json").write_text(json.dumps(
        [{"path": f"images/{n}", "label": "sad"} for n in names[32:]]))
    datamodule = FileListDataModule(str(tmp_path / "train.csv"), str(tmp_path / "test.json"),
                                    forget=ForgetGroups([0, 1]))
    assert datamodule.data.classes == ["happy", "sad"]
    assert datamodule.split_ids()["forget"] == list(range(8))  # groups 0 and 1: rows 0-7
    assert datamodule.hparams["train"] == str(tmp_path / "train.csv")
    assert datamodule.data.train_images.shape[1] == 1  # grayscale files stay grayscale


@pytest.mark.parametrize("content, message", [
    ("file,label\nimages/img0.png,a\n", "header row naming the columns path and label"),
    ("path,label\nimages/missing.png,a\n", "lists 1 image.* that do not exist"),
])
def test_bad_file_lists_are_refused(tmp_path: Path, content: str, message: str) -> None:
    _write_images(tmp_path / "images", 1)
    (tmp_path / "train.csv").write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        FileListDataModule(str(tmp_path / "train.csv"), forget=ForgetCount(1))


def test_label_vectors_make_a_multilabel_task() -> None:
    class Labels(Images):
        def __getitem__(self, index: int) -> Any:
            image, target = super().__getitem__(index)
            return image, torch.tensor([target == 0, target == 1, True]).float()

    datamodule = DatasetDataModule(Labels(), forget=ForgetCount(6))
    assert datamodule.task == "multilabel" and datamodule.num_classes == 3
    assert datamodule.data.train_targets.shape == (60, 3)
    assert datamodule.data.classes == ["0", "1", "2"]
