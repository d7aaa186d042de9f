"""FER2013 facial expressions (48×48 grayscale; PublicTest as validation, PrivateTest as test)."""

from __future__ import annotations

from typing import Any

from unlearn_pl.data.image_folder import ImageFolderDataModule


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
