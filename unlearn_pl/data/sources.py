"""Loaders that turn datasets on disk (or embedded in packages) into :class:`ImageData`."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from unlearn_pl.data.core import ImageData

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def decode_image(data: bytes | str | os.PathLike[str], name: str, channels: int | None,
                 size: int | None) -> Tensor:
    """Decode one image file into a ``uint8`` ``C×H×W`` tensor.

    Args:
        data: the file's bytes or its path.
        name: the file name, for the error message.
        channels: 1 (grayscale) or 3 (RGB) to convert to, ``None`` to keep L/RGB as stored.
        size: resize to ``size×size`` once at load time, ``None`` to keep the stored size.

    Raises:
        ValueError: the file is not a decodable image; the message names the file.
    """
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            mode = {1: "L", 3: "RGB"}.get(channels or 0, "L" if img.mode in ("L", "1", "I;16")
                                          else "RGB")
            img = img.convert(mode)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot decode image {name}: {error}. "
                         "Remove or replace the file.") from error
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _walk_folder(root: Path) -> Iterator[tuple[str, bytes | Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


def _walk_archive(archive: Path) -> Iterator[tuple[str, bytes | Path]]:
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                yield member.name, handle.read()


def read_image_folders(root: str | os.PathLike[str], splits: tuple[str, ...],
                       channels: int | None = None, size: int | None = None,
                       known_classes: Collection[str] = ()
                       ) -> dict[str, tuple[Tensor, Tensor, list[str]]]:
    """Read ``<root>/<split>/<class>/<image>`` folders, from a directory or a ``.tar.gz``.

    Class folders sort alphabetically into class ids (as ``torchvision``'s ``ImageFolder``), and
    images sort by name within a class, so the same files always give the same sample ids. A
    ``.tar``/``.tar.gz`` archive is read in place: no extraction step is needed. Inside an
    archive (or a folder) the splits may sit one level down (``cifar10/train/...``).

    The first of ``splits`` is the training split: its class folders are the classes. A class
    folder found only in another split (``test/`` or ``validation/``) is refused, since it would
    add a class the network is never trained on, silently; unless it is one of
    ``known_classes``, a dataset's fixed label set (RAF-DB's folders ``1``-``7``).

    Returns:
        ``{split: (uint8 images N×C×H×W, int64 targets, class names)}``.

    Raises:
        FileNotFoundError: a split has no ``<split>/<class>/<image>`` files.
        ValueError: a class folder of a held-out split has no training images, or images of a
            split differ in shape.
    """
    root = Path(root)
    files: dict[str, dict[str, list[tuple[str, bytes | Path]]]] = {s: {} for s in splits}
    walk = _walk_archive(root) if root.is_file() else _walk_folder(root)
    for name, data in walk:
        parts = name.split("/")
        if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            continue
        split, label = parts[-3], parts[-2]
        if split in files:
            files[split].setdefault(label, []).append((name, data))
    out: dict[str, tuple[Tensor, Tensor, list[str]]] = {}
    for split, by_class in files.items():
        if not by_class:
            raise FileNotFoundError(
                f"no '{split}/<class>/<image>' files found under {root}; expected the layout "
                f"<root>/{split}/<class>/*.jpg (see ../shared/data/README.md)")
    train_split = splits[0]
    held_out_known = {c for f in files.values() for c in f if c in set(known_classes)}
    classes = sorted(set(files[train_split]) | held_out_known)
    for split, by_class in files.items():
        extra = sorted(set(by_class) - set(classes))
        if extra:
            folders = [by_class[label][0][0].rsplit("/", 1)[0] for label in extra]
            raise ValueError(
                f"class folder(s) {folders[:5]} under {root} have no counterpart with images in "
                f"the training split '{train_split}' (its classes are {classes[:10]}"
                f"{' ...' if len(classes) > 10 else ''}): a class only in '{split}' would be "
                "one the network never learns. Remove or rename the folder(s) to a training "
                f"class, or add training images under {train_split}/<class>/")
    for split, by_class in files.items():
        images, targets = [], []
        for label, items in sorted(by_class.items()):
            for name, data in sorted(items, key=lambda item: item[0]):
                images.append(decode_image(data if isinstance(data, bytes) else str(data),
                                           name, channels, size))
                targets.append(classes.index(label))
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) > 1:
            raise ValueError(f"images under {root}/{split} differ in shape {sorted(shapes)[:3]}; "
                             "set image_size to resize them to one size")
        out[split] = (torch.stack(images), torch.tensor(targets, dtype=torch.long), classes)
    return out


def load_digits_data() -> ImageData:
    """scikit-learn's bundled handwritten digits (1,797 real 8×8 images, 10 classes).

    Embedded in the scikit-learn package, so it works offline: the quickstart's default data.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]
    return ImageData(images, torch.from_numpy(digits.target).long(),
                     classes=[str(d) for d in range(10)])


def load_olivetti_data(path: str | os.PathLike[str]) -> ImageData:
    """The Olivetti (ORL/AT&T) faces: 40 people × 10 photos of 64×64, identity = class = group.

    Reads the MATLAB file ``olivettifaces.mat`` (variable ``faces``, 4096 × 400, column-major),
    the format scikit-learn's fetcher also reads. Credit AT&T Laboratories Cambridge.
    """
    from scipy.io import loadmat

    faces = loadmat(str(path))["faces"]
    images = faces.T.reshape(400, 64, 64).transpose(0, 2, 1)
    if images.dtype != np.uint8:
        images = np.clip(images * (255.0 if images.max() <= 1 else 1.0), 0, 255).astype(np.uint8)
    identity = torch.arange(400) // 10
    return ImageData(torch.from_numpy(np.ascontiguousarray(images))[:, None], identity.clone(),
                     classes=[f"person_{i}" for i in range(40)], train_groups=identity.clone())


def make_synthetic_data(num_samples: int = 256, num_classes: int = 4, image_size: int = 16,
                        channels: int = 3, num_test: int = 128, seed: int = 0,
                        num_groups: int | None = None, multilabel: bool = False) -> ImageData:
    """Tiny learnable images made in code, for tests: each class is a noisy smooth template.

    Args:
        num_samples: training samples.
        num_classes: classes (multiclass) or binary labels (multilabel).
        image_size: side of the square images.
        channels: image channels.
        num_test: held-out samples (0 to carve the held-out split from train).
        seed: generator seed; the same seed always gives the same data.
        num_groups: if set, each sample gets a group id (an "identity") in ``[0, num_groups)``.
        multilabel: targets are ``num_classes`` independent 0/1 labels instead of one class.
    """
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(num_classes, channels, 4, 4, generator=generator)
    templates = F.interpolate(low, size=image_size, mode="bilinear", align_corners=False)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        if multilabel:
            labels = (torch.rand(n, num_classes, generator=generator) < 0.5).float()
            mix = labels @ templates.flatten(1) / labels.sum(1, keepdim=True).clamp(min=1)
            clean = mix.view(n, channels, image_size, image_size)
            targets = labels
        else:
            targets = torch.randint(num_classes, (n,), generator=generator)
            clean = templates[targets]
        noisy = clean + 0.15 * torch.randn(clean.shape, generator=generator)
        return (noisy.clamp(0, 1) * 255).round().to(torch.uint8), targets

    train_images, train_targets = draw(num_samples)
    test_images, test_targets = draw(num_test) if num_test else (None, None)
    groups = (torch.randint(num_groups, (num_samples,), generator=generator)
              if num_groups else None)
    return ImageData(train_images, train_targets, [f"class_{i}" for i in range(num_classes)],
                     test_images, test_targets, train_groups=groups,
                     task="multilabel" if multilabel else "multiclass")
