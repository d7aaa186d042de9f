"""Datamodules of concrete datasets: each only says how to read its data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.datamodule import UnlearningDataModule
from unlearn_pl.data.sources import (
    load_digits_data,
    load_olivetti_data,
    make_synthetic_data,
    read_image_folders,
)


def _require_path(path: str | None, what: str, where: str) -> Path:
    if path is None or not Path(path).exists():
        raise FileNotFoundError(f"{what} not found at {path!r}. {where}")
    return Path(path)


class DigitsDataModule(UnlearningDataModule):
    """scikit-learn's embedded handwritten digits: 1,797 real 8×8 grayscale images, 10 classes,
    no download needed (the quickstart's data). A fifth is carved off as unseen data."""

    def __init__(self, batch_size: int = 64, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, **kwargs)

    def load(self) -> ImageData:
        return load_digits_data()

    def train_transform(self) -> Callable[[Tensor], Tensor] | None:
        # Flipped digits are other digits; a one-pixel shift is the safe augmentation.
        return v2.RandomCrop(8, padding=1)


class SyntheticDataModule(UnlearningDataModule):
    """Tiny learnable images generated in code, for tests and smoke runs."""

    def __init__(self, num_samples: int = 256, num_classes: int = 4, image_size: int = 16,
                 channels: int = 3, num_test: int = 128, num_groups: int | None = None,
                 multilabel: bool = False, batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.synthetic = dict(num_samples=num_samples, num_classes=num_classes,
                              image_size=image_size, channels=channels, num_test=num_test,
                              num_groups=num_groups, multilabel=multilabel)

    def load(self) -> ImageData:
        return make_synthetic_data(seed=0, **self.synthetic)  # type: ignore[arg-type]


class ImageFolderDataModule(UnlearningDataModule):
    """Images in ``<root>/<split>/<class>/*.jpg`` folders, or the same inside a ``.tar.gz``.

    Args:
        root: the folder or archive.
        train_split: name of the training folder.
        test_split: name of the held-out folder, or ``None`` to carve ``unseen_fraction`` of
            train off as unseen data.
        val_split: name of a validation folder, or ``None``: the held-out data of the
            validation probe (training-time decisions then never see ``test_split``).
    """

    def __init__(self, root: str, train_split: str = "train", test_split: str | None = "test",
                 val_split: str | None = None, **kwargs: Any) -> None:
        _require_path(root, "image folder", "Point root at a folder (or .tar.gz) holding "
                      f"{train_split}/<class>/<image> files.")
        if val_split is not None and test_split is None:
            raise ValueError(f"val_split {val_split!r} needs a test_split: without one the "
                             "held-out data is carved from train, and the validation folder "
                             "would be the only held-out data; pass it as test_split instead")
        super().__init__(**kwargs)
        self.root, self.train_split = root, train_split
        self.test_split, self.val_split = test_split, val_split

    def load(self) -> ImageData:
        names = tuple(n for n in (self.train_split, self.test_split, self.val_split) if n)
        read = read_image_folders(self.root, names, channels=self.hparams.num_channels,
                                  size=self.hparams.image_size)
        train_images, train_targets, classes = read[self.train_split]
        test_images, test_targets, _ = read[self.test_split] if self.test_split else (None,) * 3
        val_images, val_targets, _ = read[self.val_split] if self.val_split else (None,) * 3
        return ImageData(train_images, train_targets, classes, test_images, test_targets,
                         val_images=val_images, val_targets=val_targets)


class CIFAR10DataModule(UnlearningDataModule):
    """CIFAR-10 (Krizhevsky 2009), Boundary Unlearning's setting (class-wise forgetting).

    ``root`` is either the image-folder layout (``cifar10/{train,test}/<class>/*.jpg``, folder or
    ``.tar.gz``, as in ``../shared/data/cifar10.tar.gz``) or a torchvision download folder; with
    ``download=True`` torchvision fetches the original pickles there.
    """

    torchvision_name = "CIFAR10"

    def __init__(self, root: str, download: bool = False, **kwargs: Any) -> None:
        if download:
            Path(root).mkdir(parents=True, exist_ok=True)
        elif not Path(root).exists():
            raise FileNotFoundError(
                f"{self.torchvision_name} not found at {root!r}: pass download=True to let "
                "torchvision fetch it, or point root at an extracted copy or the .tar.gz "
                "(e.g. ../shared/data/cifar10.tar.gz)")
        super().__init__(**kwargs)
        self.root, self.download = root, download

    def load(self) -> ImageData:
        if not self.download and _is_image_folder(Path(self.root)):
            read = read_image_folders(self.root, ("train", "test"))
            (xtr, ytr, classes), (xte, yte, _) = read["train"], read["test"]
            return ImageData(xtr, ytr, classes, xte, yte)
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.torchvision_name)
        train = cls(self.root, train=True, download=self.download)
        test = cls(self.root, train=False, download=self.download)
        return ImageData(_as_images(train.data), torch.as_tensor(train.targets),
                         list(train.classes), _as_images(test.data),
                         torch.as_tensor(test.targets))


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 through torchvision (``download=True``) or an image-folder copy."""

    torchvision_name = "CIFAR100"


class MNISTDataModule(CIFAR10DataModule):
    """MNIST through torchvision (``download=True``) or an image-folder copy."""

    torchvision_name = "MNIST"

    def train_transform(self) -> Callable[[Tensor], Tensor] | None:
        return v2.RandomCrop(28, padding=2)


class FER2013DataModule(ImageFolderDataModule):
    """FER2013 facial expressions (Goodfellow et al. 2013): 48×48 grayscale, 7 emotions, the
    official train / PublicTest (``validation``) / PrivateTest (``test``) splits in folders or a
    ``.tar.gz``. The stand-in for RAF-DB in DLFD's sample-wise setting; set ``num_channels: 3``
    for ImageNet-style networks.

    Args:
        root: the folder or archive.
        val_split: the validation folder, held-out data of the validation probe (the test split
            is then only evaluated at test); ``None`` for a copy without one (the probe then
            draws from the test split).
    """

    def __init__(self, root: str, val_split: str | None = "validation", **kwargs: Any) -> None:
        super().__init__(root, train_split="train", test_split="test", val_split=val_split,
                         **kwargs)


class OlivettiDataModule(UnlearningDataModule):
    """Olivetti faces: 40 people × 10 photos, identity recognition; forget people with
    ``forget_classes`` (identity = class = group). ``unseen_fraction`` of each person's photos
    (default 0.2: 2 of 10) is held out.

    Args:
        root: ``olivettifaces.mat`` or the folder holding it.
    """

    def __init__(self, root: str, batch_size: int = 32, **kwargs: Any) -> None:
        path = Path(root) / "olivettifaces.mat" if Path(root).is_dir() else Path(root)
        _require_path(str(path), "olivettifaces.mat", "Point root at the file or its folder "
                      "(e.g. ../shared/data/olivetti).")
        super().__init__(batch_size=batch_size, **kwargs)
        self.path = path

    def load(self) -> ImageData:
        return load_olivetti_data(self.path)


def _is_image_folder(root: Path) -> bool:
    if root.is_file():
        return root.name.endswith((".tar", ".tar.gz", ".tgz"))
    return any(p.is_dir() for p in (root / "train", root / "cifar10" / "train"))


def _as_images(array: Any) -> Tensor:
    tensor = torch.as_tensor(np.asarray(array))
    if tensor.dim() == 3:  # N×H×W grayscale
        tensor = tensor[:, None]
    elif tensor.shape[-1] in (1, 3):  # N×H×W×C
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor.to(torch.uint8).contiguous()
