"""Reading images: decoding files and archives into ``uint8`` tensors, image-folder datasets,
and the base of the face datamodules."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from unlearn_pl.data.datamodule import UnlearningDataModule

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


ImageSource = bytes | Path


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


def _require_path(path: str | None, what: str, where: str) -> Path:
    if path is None or not Path(path).exists():
        raise FileNotFoundError(f"{what} not found at {path!r}. {where}")
    return Path(path)


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


# --------------------------------------------------------------------------------- decoding
def _decode_face(data: ImageSource, name: str, channels: int | None, size: int | None) -> Tensor:
    """Decode one face; a non-square image is centre-cropped to a square before resizing."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError):  # undecodable: decode_image names the file
        width = height = 0
    if size is None or width == height:
        return decode_image(data if isinstance(data, bytes) else str(data), name, channels, size)
    image = decode_image(data if isinstance(data, bytes) else str(data), name, channels, None)
    side = min(image.shape[-2:])
    image = TF.center_crop(image, [side, side])
    return TF.resize(image, [size, size], antialias=True)


def _decode_all(items: Sequence[tuple[ImageSource, str]], channels: int | None,
                size: int | None, where: str) -> Tensor:
    """Decode ``(data, name)`` items in order into one ``uint8`` ``N×C×H×W`` tensor.

    JPEG decoding releases the GIL, so a few threads cut the one-off load time of large sets.
    """
    if not items:
        raise ValueError(f"no images to read in {where}")
    workers = min(8, os.cpu_count() or 1, len(items))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda item: _decode_face(item[0], item[1], channels, size),
                               items))
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(f"images of {where} differ in shape {sorted(shapes)[:3]}; set "
                         "image_size (and num_channels) to read them at one size")
    return torch.stack(images)


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {path} does not exist")
    return path


def _iter_image_files(root: Path) -> Iterator[tuple[str, ImageSource]]:
    """``(relative name, path or bytes)`` of every image under a folder or in a tar archive,
    sorted by name so the same files always give the same sample ids."""
    if root.is_file():
        with tarfile.open(root) as tar:
            found = []
            for member in tar:
                if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                    handle = tar.extractfile(member)
                    assert handle is not None
                    found.append((member.name, handle.read()))
        yield from sorted(found, key=lambda item: item[0])
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
            yield path.relative_to(root).as_posix(), path


def _require(path: Path, what: str, layout: str, source: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {str(path)!r}. Expected layout: {layout}. "
                                f"Get the data from {source}.")


# ------------------------------------------------------------------------------ datamodules
class _FaceDataModule(UnlearningDataModule):
    """Shared behaviour of the face datamodules: 128×128 RGB by default, mild face
    augmentation, and identity requests on identity-disjoint held-out data evaluated against
    unseen people (see the module docstring).

    ``image_size`` and ``num_channels`` are declared here rather than set with
    ``kwargs.setdefault``: LightningCLI passes every argument explicitly, so only a default in
    the signature reaches CLI runs (and shows in ``--help``).
    """

    def __init__(self, *, image_size: int | None = 128, num_channels: Literal[1, 3] | None = 3,
                 **kwargs: Any) -> None:
        super().__init__(image_size=image_size, num_channels=num_channels, **kwargs)

    def train_transform(self) -> Callable[[Tensor], Tensor] | None:
        """A mild random resized crop (85–100 % of the area, near-square) and a horizontal
        flip: faces stay centred and upright, as in the MUFAC and DLFD training recipes."""
        size = int(self.data.train_images.shape[-1])
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.85, 1.0), ratio=(0.95, 1.05), antialias=True),
            v2.RandomHorizontalFlip(),
        ])
