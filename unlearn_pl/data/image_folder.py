"""Any dataset laid out as image folders (``train/<class>/*``, ``test/<class>/*``) or their
archive."""

from __future__ import annotations

from typing import Any

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.datamodule import UnlearningDataModule
from unlearn_pl.data.images import _require_path, read_image_folders


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
