"""RAF-DB basic emotions (seven classes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.images import (
    _decode_all,
    _existing,
    _FaceDataModule,
    _require,
    read_image_folders,
)

#: RAF-DB's basic emotions in label order: file label 1 → class 0, …, 7 → class 6.
RAFDB_EMOTIONS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


# ---------------------------------------------------------------------------------- RAF-DB
_RAFDB_LABELS = Path("EmoLabel") / "list_patition_label.txt"  # sic: RAF-DB's own spelling


def _read_rafdb_list(root: Path, aligned: bool, channels: int | None,
                     size: int | None) -> ImageData:
    label_file = root / _RAFDB_LABELS
    splits: dict[str, tuple[list[Path], list[int]]] = {"train": ([], []), "test": ([], [])}
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{label_file}:{number}"
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7:
            raise ValueError(f"{where}: expected '<image name> <label 1-7>' such as "
                             f"'train_00001.jpg 5', got {line.strip()!r}")
        name, label = parts[0], int(parts[1])
        split = name.split("_", 1)[0]
        if split not in splits:
            raise ValueError(f"{where}: image name {name!r} starts with neither 'train_' nor "
                             "'test_', so its split is unknown")
        stem = Path(name).stem
        path = (root / "Image" / "aligned" / f"{stem}_aligned.jpg" if aligned
                else root / "Image" / "original" / name)
        splits[split][0].append(_existing(path, where))
        splits[split][1].append(label - 1)
    for split, (paths, _) in splits.items():
        if not paths:
            raise ValueError(f"{label_file} lists no '{split}_' image")
    (train_paths, train_labels), (test_paths, test_labels) = splits["train"], splits["test"]
    return ImageData(
        _decode_all([(p, str(p)) for p in train_paths], channels, size, f"{root} (train)"),
        torch.tensor(train_labels), list(RAFDB_EMOTIONS),
        _decode_all([(p, str(p)) for p in test_paths], channels, size, f"{root} (test)"),
        torch.tensor(test_labels),
        extra={"train_files": [p.name for p in train_paths],
               "test_files": [p.name for p in test_paths]})


def load_rafdb_data(root: str | os.PathLike[str], *,
                    layout: Literal["auto", "list", "folders"] = "auto", aligned: bool = True,
                    channels: int | None = 3, size: int | None = 128) -> ImageData:
    """RAF-DB basic emotions, 7 classes (Li, Deng & Du, "Reliable Crowdsourcing and Deep
    Locality-Preserving Learning for Expression Recognition in the Wild", CVPR 2017).

    Two layouts:

    * ``list``, the authors' release: ``EmoLabel/list_patition_label.txt`` with lines
      ``train_00001.jpg 5`` (labels 1–7 = surprise, fear, disgust, happiness, sadness, anger,
      neutral → classes 0–6; the ``train_``/``test_`` prefix gives the split), images in
      ``Image/aligned/train_00001_aligned.jpg`` (``aligned=True``) or
      ``Image/original/train_00001.jpg``.
    * ``folders``, the common re-packaging DLFD reads with ``ImageFolder``:
      ``train/<label>/*.jpg`` and ``test/<label>/*.jpg`` (a folder or ``.tar.gz``, splits may sit
      one level down). Folders named ``1``–``7`` keep RAF-DB's label ids and emotion names;
      other names sort alphabetically into class ids.

    Args:
        root: the dataset folder (or, for ``folders``, a ``.tar.gz``).
        layout: ``auto`` picks ``list`` when the label file exists, else ``folders``.
        aligned: read the 100×100 aligned faces instead of the original photos (``list``).
        channels: 3 (RGB) or 1; ``None`` keeps each file's mode.
        size: side of the square images after resizing.
    """
    root = Path(root)
    if layout == "list" or (layout == "auto" and (root / _RAFDB_LABELS).is_file()):
        return _read_rafdb_list(root, aligned, channels, size)
    # Folders 1-7 are RAF-DB's fixed labels: one may hold only test images.
    read = read_image_folders(root, ("train", "test"), channels=channels, size=size,
                              known_classes=[str(label) for label in range(1, 8)])
    (train_images, train_targets, classes), (test_images, test_targets, _) = (read["train"],
                                                                             read["test"])
    if set(classes) <= {str(label) for label in range(1, 8)}:
        # keep RAF-DB's label ids even when a folder is absent
        to_raf = torch.tensor([int(name) - 1 for name in classes])
        train_targets, test_targets = to_raf[train_targets], to_raf[test_targets]
        classes = list(RAFDB_EMOTIONS)
    return ImageData(train_images, train_targets, classes, test_images, test_targets)


class RAFDBDataModule(_FaceDataModule):
    """RAF-DB basic emotions, 7 classes (Li, Deng & Du, CVPR 2017), DLFD's sample-wise
    setting (its code forgets a seeded 30 % of train: ``forget_fraction: 0.3``).

    Layout: the authors' ``EmoLabel/list_patition_label.txt`` + ``Image/aligned/`` (or
    ``Image/original/``), or ``train/<label>/*.jpg`` + ``test/<label>/*.jpg`` folders (or a
    ``.tar.gz`` of them); see :func:`load_rafdb_data`.

    Args:
        root: the dataset folder or archive.
        layout: ``auto``, ``list`` or ``folders``.
        aligned: read ``Image/aligned`` (100×100 aligned faces) rather than ``Image/original``.
        **kwargs: :class:`~unlearn_pl.data.datamodule.UnlearningDataModule` options
            (``image_size`` defaults to 128, ``num_channels`` to 3).
    """

    def __init__(self, root: str, layout: Literal["auto", "list", "folders"] = "auto",
                 aligned: bool = True, **kwargs: Any) -> None:
        _require(Path(root), "RAF-DB",
                 "<root>/EmoLabel/list_patition_label.txt with <root>/Image/aligned/*_aligned.jpg"
                 ", or <root>/train/<label>/*.jpg and <root>/test/<label>/*.jpg",
                 "the authors (http://www.whdeng.cn/RAF/model1.html, research licence on request)")
        if layout == "list" and not (Path(root) / _RAFDB_LABELS).is_file():
            raise FileNotFoundError(f"RAF-DB label list {Path(root) / _RAFDB_LABELS} not found; "
                                    "use layout='folders' for train/<label>/ folders")
        super().__init__(**kwargs)
        self.root, self.layout, self.aligned = root, layout, aligned

    def load(self) -> ImageData:
        return load_rafdb_data(self.root, layout=self.layout, aligned=self.aligned,
                               channels=self.hparams["num_channels"],
                               size=self.hparams["image_size"])
