"""scikit-learn's embedded digits (1,797 real 8×8 handwritten digits; the quickstart)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.datamodule import UnlearningDataModule


def load_digits_data() -> ImageData:
    """scikit-learn's bundled handwritten digits (1,797 real 8×8 images, 10 classes).

    Embedded in the scikit-learn package, so it works offline: the quickstart's default data.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]
    return ImageData(images, torch.from_numpy(digits.target).long(),
                     classes=[str(d) for d in range(10)])


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
