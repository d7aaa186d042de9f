"""torchvision's CIFAR-10, CIFAR-100 and MNIST."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.datamodule import UnlearningDataModule
from unlearn_pl.data.images import _as_images, _is_image_folder, read_image_folders


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
