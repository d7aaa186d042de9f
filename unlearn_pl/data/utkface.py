"""UTKFace ages, genders and races, read from the file names."""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from pathlib import Path
from typing import Any, Literal

import torch

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.images import (
    ImageSource,
    _decode_all,
    _FaceDataModule,
    _iter_image_files,
    _require,
)
from unlearn_pl.data.mufac import MUFAC_AGE_CLASSES

#: Inclusive upper ages of the first seven MUFAC-style age bins applied to UTKFace ages:
#: 0-6, 7-12, 13-19, 20-30, 31-45, 46-55, 56-66, then 67+ (MUFAC's a–h; its "h" ends at 80, while
#: UTKFace reaches 116, so the last bin is open).
UTKFACE_AGE_EDGES = (6, 12, 19, 30, 45, 55, 66)


# --------------------------------------------------------------------------------- UTKFace
_UTKFACE_NAME = re.compile(r"(\d{1,3})_(\d+)_(?:(\d+)_)?")


def parse_utkface_name(name: str) -> tuple[int, int, int | None]:
    """``(age, gender, race)`` from a UTKFace file name ``[age]_[gender]_[race]_[date].jpg``.

    Gender is 0 (male) or 1 (female). A few released files lack the race field
    (``39_1_20170116174525125.jpg.chip.jpg``): then race is ``None``.

    Raises:
        ValueError: the name does not start with ``<age>_<gender 0/1>_``.
    """
    base = re.split(r"[\\/]", name)[-1]
    match = _UTKFACE_NAME.match(base)
    if match is None or match.group(2) not in ("0", "1"):
        raise ValueError(f"cannot parse UTKFace labels from {name!r}: expected "
                         "[age]_[gender 0/1]_[race]_[date].jpg such as "
                         "26_0_2_20170104023102422.jpg.chip.jpg")
    race = match.group(3)
    # a 17-digit date right after the gender is the date, not a race (files without race)
    if race is not None and len(race) > 1:
        race = None
    return int(match.group(1)), int(match.group(2)), int(race) if race is not None else None


def age_to_mufac_class(age: int) -> int:
    """MUFAC-style age group 0–7 of an age in years (bins :data:`UTKFACE_AGE_EDGES`)."""
    if age < 0:
        raise ValueError(f"age must be >= 0, got {age}")
    return bisect_left(UTKFACE_AGE_EDGES, age)


def load_utkface_data(root: str | os.PathLike[str], *,
                      label: Literal["age", "gender"] = "age", channels: int | None = 3,
                      size: int | None = 128) -> ImageData:
    """UTKFace (Zhang, Song & Qi, "Age Progression/Regression by Conditional Adversarial
    Autoencoder", CVPR 2017): labels live in the file names ``[age]_[gender]_[race]_[date].jpg``.

    ``label="age"`` bins ages into 8 MUFAC-style groups: 0-6, 7-12, 13-19, 20-30, 31-45, 46-55,
    56-66, 67+ (MUFAC's a–h); ``label="gender"``: 0 male, 1 female. There is no official split,
    so the datamodule carves the unseen split from train. Images are read from every folder
    under ``root`` (e.g. ``UTKFace/`` or ``crop_part1/``) or from a ``.tar.gz``, sorted by path.

    Args:
        root: a folder of UTKFace images or the ``.tar.gz`` archive.
        label: ``age`` (8 groups) or ``gender`` (2 classes).
        channels: 3 (RGB) or 1; ``None`` keeps each file's mode.
        size: side of the square images after resizing.
    """
    root = Path(root)
    items: list[tuple[ImageSource, str]] = []
    targets: list[int] = []
    for name, data in _iter_image_files(root):
        age, gender, _ = parse_utkface_name(name)
        targets.append(age_to_mufac_class(age) if label == "age" else gender)
        items.append((data, name))
    if not items:
        raise FileNotFoundError(f"no UTKFace image (*.jpg) found under {root}")
    classes = (list(MUFAC_AGE_CLASSES[:-1]) + ["67+"] if label == "age"
               else ["male", "female"])
    return ImageData(_decode_all(items, channels, size, str(root)), torch.tensor(targets),
                     classes, extra={"train_files": [name for _, name in items]})


class UTKFaceDataModule(_FaceDataModule):
    """UTKFace (Zhang, Song & Qi, CVPR 2017) age groups or gender from the file names; no
    official split, so ``unseen_fraction`` of the images is carved off as unseen data.

    Args:
        root: a folder of ``[age]_[gender]_[race]_[date].jpg`` images (searched recursively) or
            the ``.tar.gz`` archive.
        label: ``age`` (8 MUFAC-style groups, see :data:`UTKFACE_AGE_EDGES`) or ``gender``.
        **kwargs: :class:`~unlearn_pl.data.datamodule.UnlearningDataModule` options
            (``image_size`` defaults to 128, ``num_channels`` to 3).
    """

    def __init__(self, root: str, label: Literal["age", "gender"] = "age",
                 **kwargs: Any) -> None:
        _require(Path(root), "UTKFace",
                 "a folder (or .tar.gz) of [age]_[gender]_[race]_[date].jpg images",
                 "https://susanqq.github.io/UTKFace/ (non-commercial research use)")
        if label not in ("age", "gender"):
            raise ValueError(f"label must be 'age' or 'gender', got {label!r}")
        super().__init__(**kwargs)
        self.root, self.label = root, label

    def load(self) -> ImageData:
        return load_utkface_data(self.root, label=self.label,
                                 channels=self.hparams["num_channels"],
                                 size=self.hparams["image_size"])
