"""Your own data: any map-style ``Dataset`` of ``(image, target)``, or a CSV / JSON list of
image files and labels.

The images are decoded once into one ``uint8`` tensor when they fit in ``in_memory_mb``
(as every built-in dataset is, so 2 cores are not spent decoding every epoch), and are
streamed (decoded from the dataset each time a sample is read) when they do not.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from unlearn_pl.data.core import ImageData, LazyImages
from unlearn_pl.data.datamodule import UnlearningDataModule
from unlearn_pl.data.images import decode_image
from unlearn_pl.data.splits import _convert_channels

#: Decoded data up to this size (MiB) is held in memory; larger data is streamed.
DEFAULT_IN_MEMORY_MB = 4096


def as_image(image: Any, where: str) -> Tensor:
    """One image as ``uint8`` ``C×H×W``: a PIL image, a ``uint8`` array or tensor (``H×W``,
    ``H×W×C`` arrays, ``C×H×W`` tensors) or a float tensor in [0, 1] (``C×H×W``).

    Raises:
        ValueError: anything else, naming the sample.
    """
    if isinstance(image, Image.Image):
        return TF.pil_to_tensor(image.convert("RGB" if image.mode not in ("L", "RGB")
                                              else image.mode))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"{where}: a numpy image must be uint8 H×W or H×W×C, got "
                             f"{image.dtype} of shape {image.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()
    if isinstance(image, Tensor):
        if image.dim() == 2:
            image = image[None]
        if image.dim() != 3:
            raise ValueError(f"{where}: an image tensor must be C×H×W, got shape "
                             f"{tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image
        if image.is_floating_point():
            if image.min() < 0 or image.max() > 1:
                raise ValueError(f"{where}: a float image must lie in [0, 1] (pixel space, not "
                                 f"normalised), got values in [{float(image.min()):.3g}, "
                                 f"{float(image.max()):.3g}]: drop the Normalize transform")
            return image.mul(255).round().to(torch.uint8)
    raise ValueError(f"{where}: the image is a {type(image).__name__}; give a PIL image, a "
                     "uint8 array or tensor, or a float tensor in [0, 1]")


def _fit(image: Tensor, channels: int | None, size: int | None) -> Tensor:
    if channels is not None and image.shape[0] != channels:  # as every built-in dataset
        image = _convert_channels(image[None], channels)[0]
    if size is not None and tuple(image.shape[-2:]) != (size, size):
        image = TF.resize(image, [size, size], antialias=True)
    return image.contiguous()


def _sample(dataset: Dataset[Any], index: int, where: str) -> tuple[Any, Any]:
    item = dataset[index]
    if not (isinstance(item, tuple | list) and len(item) == 2):
        got = (f"a {len(item)}-tuple" if isinstance(item, tuple | list)
               else f"a {type(item).__name__}")
        raise ValueError(f"{where}[{index}] is {got}, not (image, target): wrap the dataset so "
                         "that it returns (image, target), without a normalising transform")
    return item[0], item[1]


def _target(target: Any, where: str) -> Tensor:
    if isinstance(target, bool) or isinstance(target, Tensor) and target.dtype == torch.bool:
        raise ValueError(f"{where}: the target is a bool; give a class id or a 0/1 label vector")
    value = torch.as_tensor(np.asarray(target))
    if value.dim() == 0 and not value.is_floating_point():
        return value.long()
    if value.dim() == 1:  # multilabel: one 0/1 entry per label
        return value.float()
    raise ValueError(f"{where}: the target {target!r} is neither a class id nor a 1-D vector "
                     "of 0/1 labels")


class _Reader:
    """Decodes row ``i`` of a dataset (picklable, for loader workers)."""

    def __init__(self, dataset: Dataset[Any], name: str, channels: int | None,
                 size: int | None) -> None:
        self.dataset, self.name, self.channels, self.size = dataset, name, channels, size

    def __call__(self, index: int) -> Tensor:
        image, _ = _sample(self.dataset, index, self.name)
        return _fit(as_image(image, f"{self.name}[{index}]"), self.channels, self.size)


def read_dataset(dataset: Dataset[Any], name: str, channels: int | None = None,
                 size: int | None = None, in_memory_mb: float = DEFAULT_IN_MEMORY_MB
                 ) -> tuple[Tensor, Tensor]:
    """``(images, targets)`` of a map-style dataset: images ``uint8`` ``N×C×H×W`` in memory
    when they fit in ``in_memory_mb``, else a :class:`~unlearn_pl.data.core.LazyImages` that
    decodes them when read; targets ``int64`` (or ``float32`` 0/1 ``N×L`` for multilabel).

    A dataset with a ``targets`` attribute of its length (torchvision's) gives its targets
    without decoding an image.

    Raises:
        ValueError: an empty dataset, a sample that is not ``(image, target)``, or images of
            different shapes (without ``image_size``).
    """
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ValueError(f"{name} is a {type(dataset).__name__}, not a map-style Dataset (with "
                         "__getitem__ and __len__)")
    count = len(dataset)  # type: ignore[arg-type]
    if count == 0:
        raise ValueError(f"{name} is empty")
    reader = _Reader(dataset, name, channels, size)
    first = reader(0)
    stream = count * first.numel() > in_memory_mb * 2**20
    known = getattr(dataset, "targets", None)
    decoded: list[Tensor] = []
    if stream and known is not None and len(known) == count:
        targets = [_target(t, f"{name}[{i}]") for i, t in enumerate(known)]
    else:
        targets = []
        for index in range(count):
            image, target = _sample(dataset, index, name)
            targets.append(_target(target, f"{name}[{index}]"))
            if not stream:
                decoded.append(_fit(as_image(image, f"{name}[{index}]"), channels, size))
    images: Any
    if stream:
        images = LazyImages(reader, torch.arange(count), tuple(first.shape))  # type: ignore[arg-type]
    else:
        shapes = sorted({tuple(i.shape) for i in decoded})
        if len(shapes) > 1:
            raise ValueError(f"images of {name} differ in shape {shapes[:3]}; set image_size "
                             "(and num_channels) to read them at one size")
        images = torch.stack(decoded)
    if len({tuple(t.shape) for t in targets}) > 1:
        raise ValueError(f"the targets of {name} mix class ids and label vectors")
    return cast(Tensor, images), torch.stack(targets)


def _describe(dataset: Any) -> str | None:
    if dataset is None or isinstance(dataset, str):
        return dataset
    return f"{type(dataset).__module__}.{type(dataset).__qualname__} ({len(dataset)} samples)"


class DatasetDataModule(UnlearningDataModule):
    """Any map-style ``torch.utils.data.Dataset`` returning ``(image, target)``; a sample's id
    is its index.

    Images may be PIL images, ``uint8`` arrays or tensors, or float tensors in [0, 1] (pixel
    space: no normalising transform; the network normalises); targets class ids, or 0/1 label
    vectors for multilabel data. In YAML the datasets are ``class_path`` / ``init_args``
    (e.g. ``torchvision.datasets.ImageFolder``); the hyperparameters keep their class and
    size only.

    Args:
        train: the training set the original network was trained on.
        test: the held-out set, or ``None`` to carve ``unseen_fraction`` of train off.
        val: a validation set (the held-out data of the validation probe), or ``None`` to
            carve ``val_fraction`` of the held-out data off.
        classes: a name per class (or label); default the dataset's ``classes`` attribute,
            else the ids.
        groups: a group (person, identity) id per training sample, for ``ForgetGroups``.
        in_memory_mb: decoded data up to this size is held in memory as ``uint8``; larger
            data is streamed: decoded from the dataset whenever a sample is read.
    """

    not_hyperparameters: ClassVar[tuple[str, ...]] = ("train", "test", "val")

    def __init__(self, train: Dataset, test: Dataset | None = None,
                 val: Dataset | None = None, classes: list[str] | None = None,
                 groups: list[int] | None = None,
                 in_memory_mb: float = DEFAULT_IN_MEMORY_MB, **kwargs: Any) -> None:
        if val is not None and test is None:
            raise ValueError("val without test: give the validation set as test instead")
        if in_memory_mb < 0:
            raise ValueError(f"in_memory_mb must be >= 0, got {in_memory_mb}")
        if groups is not None and len(groups) != len(train):  # type: ignore[arg-type]
            raise ValueError(f"groups has {len(groups)} ids for {len(train)} training samples")  # type: ignore[arg-type]
        super().__init__(**kwargs)
        self.datasets = {"train": train, "test": test, "val": val}
        self.hparams.update({k: _describe(v) for k, v in self.datasets.items()})
        self.classes, self.groups, self.in_memory_mb = classes, groups, in_memory_mb

    def load(self) -> ImageData:
        channels, size = self.hparams.num_channels, self.hparams.image_size
        read = {name: read_dataset(dataset, name, channels, size, self.in_memory_mb)
                for name, dataset in self.datasets.items() if dataset is not None}
        train_images, train_targets = read["train"]
        multilabel = train_targets.dim() == 2
        classes = self.classes or getattr(self.datasets["train"], "classes", None) or [
            str(i) for i in range(train_targets.shape[1] if multilabel
                                  else int(train_targets.max()) + 1)]
        for name, (_, targets) in read.items():
            if not multilabel and int(targets.max()) >= len(classes):
                raise ValueError(f"{name} has class id {int(targets.max())} but there are "
                                 f"{len(classes)} classes: give every class name (classes)")
        test = read.get("test", (None, None))
        val = read.get("val", (None, None))
        groups = torch.tensor(self.groups) if self.groups is not None else None
        return ImageData(train_images, train_targets, list(classes), test[0], test[1],
                         train_groups=groups, val_images=val[0], val_targets=val[1],
                         task="multilabel" if multilabel else "multiclass")


class FileListDataset(Dataset[tuple[Tensor, int]]):
    """Image files and labels listed in a CSV file (columns ``path`` and ``label``, optionally
    ``group``) or a JSON list of ``{"path": ..., "label": ...}`` objects; relative paths are
    read from ``root`` (default the list's folder). Labels are class names or ids.

    Args:
        path: the list.
        root: the folder relative paths start from.
        classes: the class names, in id order (default: the sorted labels of this list).
    """

    def __init__(self, path: str, root: str | None = None,
                 classes: Sequence[str] | None = None) -> None:
        rows = _read_list(Path(path))
        base = Path(root) if root is not None else Path(path).parent
        self.files = [Path(r["path"]) if Path(r["path"]).is_absolute() else base / r["path"]
                      for r in rows]
        missing = [str(f) for f in self.files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{path} lists {len(missing)} image(s) that do not exist, "
                                    f"e.g. {missing[:3]}: fix the paths or root")
        labels = [str(r["label"]) for r in rows]
        self.classes = list(classes) if classes is not None else sorted(
            set(labels), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
        unknown = sorted(set(labels) - set(self.classes))
        if unknown:
            raise ValueError(f"{path} has labels {unknown[:5]} that are not among the training "
                             f"classes {self.classes[:10]}")
        ids = {label: index for index, label in enumerate(self.classes)}
        self.targets = [ids[label] for label in labels]
        self.groups = ([int(r["group"]) for r in rows] if all(r.get("group") not in (None, "")
                                                                for r in rows) else None)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return decode_image(self.files[index], str(self.files[index]), None, None), \
            self.targets[index]


def _read_list(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"file list {path} does not exist")
    fix = ("a CSV file with a header row naming the columns path and label (and optionally "
           "group), or a JSON list of {\"path\": ..., \"label\": ...}")
    try:
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text())
        else:
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} cannot be read ({error}): it must be {fix}") from None
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, dict) and r.get("path") and r.get("label") not in (None, "")
            for r in rows):
        raise ValueError(f"{path} must be {fix}, with a path and a label on every row")
    return rows


class FileListDataModule(DatasetDataModule):
    """Images listed with their labels in CSV or JSON files (:class:`FileListDataset`); a
    ``group`` column feeds ``ForgetGroups``.

    Args:
        train: the training list.
        test: the held-out list, or ``None`` to carve ``unseen_fraction`` of train off.
        val: a validation list, or ``None``.
        root: the folder relative paths start from (default: each list's folder).
        in_memory_mb: see :class:`DatasetDataModule`.
    """

    def __init__(self, train: str, test: str | None = None, val: str | None = None,
                 root: str | None = None, in_memory_mb: float = DEFAULT_IN_MEMORY_MB,
                 **kwargs: Any) -> None:
        train_set = FileListDataset(train, root)
        sets = {name: FileListDataset(path, root, train_set.classes) if path else None
                for name, path in (("test", test), ("val", val))}
        super().__init__(train_set, sets["test"], sets["val"], classes=train_set.classes,
                         groups=train_set.groups, in_memory_mb=in_memory_mb, **kwargs)
        self.hparams.update(train=train, test=test, val=val)


