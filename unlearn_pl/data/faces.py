"""Face datasets of the DLFD setting: MUFAC, RAF-DB, CelebA / MUCAC and UTKFace.

Each dataset has a loader function that returns :class:`~unlearn_pl.data.core.ImageData` and a
datamodule that owns the forget request. None of these datasets can be downloaded
automatically (their licences ask users to request or fetch them by hand), so every datamodule
checks its ``root`` when constructed and names the layout it expects and where to get it.

Faces are decoded once into ``uint8`` memory at ``image_size`` (default 128, the face resolution
of MUFAC and DLFD, Choi & Na, AAAI 2025), as 3-channel images. Non-square photos (CelebA's
aligned 178×218 crops, RAF-DB's original photos) are centre-cropped to a square first, so faces
are not squashed.

Identity-disjoint held-out splits. MUFAC's, MUCAC's and CelebA's official held-out splits contain
other people than the training split. A ``forget_groups`` request on such data cannot be
measured on held-out photos of the same people (there are none), so these datamodules evaluate it
like the MUFAC benchmark does: splits ``retain``, ``forget``, ``unseen``, and the membership
attack compares the forgotten people with unseen people (``mia_nonmember_split == "unseen"``).
Where the held-out split does hold photos of forgotten groups, ``retain_test`` and
``forget_test`` are built as usual.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.datamodule import UnlearningDataModule
from unlearn_pl.data.sources import IMAGE_SUFFIXES, decode_image, read_image_folders

__all__ = [
    "CELEBA_ATTRIBUTES",
    "MUFAC_AGE_CLASSES",
    "RAFDB_EMOTIONS",
    "UTKFACE_AGE_EDGES",
    "CelebADataModule",
    "MUCACDataModule",
    "MUFACDataModule",
    "RAFDBDataModule",
    "UTKFaceDataModule",
    "age_to_mufac_class",
    "load_celeba_data",
    "load_mufac_data",
    "load_rafdb_data",
    "load_utkface_data",
    "parse_mufac_family",
    "parse_utkface_name",
]

#: MUFAC's eight age groups, classes 0–7 (CSV letters a–h), as the benchmark names them.
MUFAC_AGE_CLASSES = ("0-6", "7-12", "13-19", "20-30", "31-45", "46-55", "56-66", "67-80")
_MUFAC_LETTERS = "abcdefgh"

#: RAF-DB's basic emotions in label order: file label 1 → class 0, …, 7 → class 6.
RAFDB_EMOTIONS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")

#: Inclusive upper ages of the first seven MUFAC-style age bins applied to UTKFace ages:
#: 0-6, 7-12, 13-19, 20-30, 31-45, 46-55, 56-66, then 67+ (MUFAC's a–h; its "h" ends at 80, while
#: UTKFace reaches 116, so the last bin is open).
UTKFACE_AGE_EDGES = (6, 12, 19, 30, 45, 55, 66)

#: MUCAC's three attributes (gender, age, smiling) as CelebA names them.
CELEBA_ATTRIBUTES = ("Male", "Young", "Smiling")

ImageSource = bytes | Path


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


# ------------------------------------------------------------------------------------ MUFAC
_FAMILY_FILE = re.compile(r"F(\d+)(?=[_.\-]|$)", re.IGNORECASE)
_FAMILY_FOLDER = re.compile(r"F(\d+)", re.IGNORECASE)


def parse_mufac_family(image_path: str) -> int | None:
    """The family (household) number of a MUFAC image, or ``None`` when the path names none.

    MUFAC names images ``F<family>_AGE_<member>_<age>_<group><n>.jpg``, e.g.
    ``F0001_AGE_D_18_a1.jpg`` is family 1. The family is the ``F`` + digits token that starts
    the file name (case-insensitive, any number of digits, followed by ``_``, ``.``, ``-`` or
    the end of the name); if the file name has none, a folder of the path named exactly
    ``F<digits>`` (the layout of the AI Hub originals, ``F0001/...``) is used.

    Args:
        image_path: the ``image_path`` column of a MUFAC CSV (a file name or relative path).
    """
    parts = re.split(r"[\\/]", image_path.strip())
    match = _FAMILY_FILE.match(parts[-1])
    if match:
        return int(match.group(1))
    for folder in reversed(parts[:-1]):
        match = _FAMILY_FOLDER.fullmatch(folder)
        if match:
            return int(match.group(1))
    return None


def _read_mufac_csv(csv_path: Path, image_dir: Path) -> tuple[list[Path], Tensor, Tensor | None]:
    """Image paths, age classes and family ids (``None`` if no row names a family) of a CSV."""
    paths: list[Path] = []
    targets: list[int] = []
    families: list[int | None] = []
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image_path", "age_class"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; a MUFAC CSV has "
                             f"the columns image_path and age_class, got {reader.fieldnames}")
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            name = (row["image_path"] or "").strip()
            letter = (row["age_class"] or "").strip().lower()
            if not name:
                raise ValueError(f"{where}: empty image_path")
            if len(letter) != 1 or letter not in _MUFAC_LETTERS:
                raise ValueError(f"{where}: age_class {row['age_class']!r} is not one of the "
                                 "letters a-h")
            paths.append(_existing(image_dir / name, where))
            targets.append(_MUFAC_LETTERS.index(letter))
            families.append(parse_mufac_family(name))
    if not paths:
        raise ValueError(f"{csv_path} lists no image")
    unparsed = [i for i, family in enumerate(families) if family is None]
    if len(unparsed) == len(families):
        groups = None
    elif unparsed:
        raise ValueError(f"{csv_path}:{unparsed[0] + 2}: cannot parse a family id from "
                         f"{paths[unparsed[0]].name!r} (expected a name like "
                         "F0001_AGE_D_18_a1.jpg) while other rows have one")
    else:
        groups = torch.tensor(families, dtype=torch.long)
    return paths, torch.tensor(targets, dtype=torch.long), groups


def load_mufac_data(root: str | os.PathLike[str], *, train_csv: str = "custom_train_dataset.csv",
                    val_csv: str = "custom_val_dataset.csv",
                    test_csv: str = "custom_test_dataset.csv", train_dir: str = "train_images",
                    val_dir: str = "val_images", test_dir: str = "test_images",
                    held_out: Literal["test", "val"] = "test", channels: int | None = 3,
                    size: int | None = 128) -> ImageData:
    """MUFAC, the Korean family age dataset (Choi & Na, "Towards Machine Unlearning Benchmarks:
    Forgetting the Personal Identities in Facial Recognition Systems", arXiv:2311.02240).

    About 13,000 faces of 900 families, 8 age groups. Sample ids follow the row order of the
    training CSV (row 1 after the header is id 0), so "the first N rows" are ids ``0..N-1``.
    Group id = family number parsed from the file name (:func:`parse_mufac_family`).

    Args:
        root: the folder holding the CSVs and image folders.
        train_csv: training CSV, columns ``image_path`` and ``age_class`` (letters a–h →
            classes 0–7).
        val_csv: validation CSV, same columns.
        test_csv: test CSV, same columns.
        train_dir: image folder of ``train_csv``, under ``root``.
        val_dir: image folder of ``val_csv``, under ``root``.
        test_dir: image folder of ``test_csv``, under ``root``.
        held_out: which held-out CSV becomes the ``unseen`` split. The benchmark's
            :math:`\\mathcal{D}_{unseen}` (the attack's non-members) is ``test``
            (families F0851–F0900); its reported test accuracy is measured on ``val``
            (F0801–F0850). Both are families never trained on.
        channels: 3 (RGB) or 1; ``None`` keeps each file's mode.
        size: side of the square images after resizing (MUFAC is stored at 128).
    """
    root = Path(root)
    csv_name, dir_name = (test_csv, test_dir) if held_out == "test" else (val_csv, val_dir)
    train_paths, train_targets, train_groups = _read_mufac_csv(root / train_csv, root / train_dir)
    test_paths, test_targets, test_groups = _read_mufac_csv(root / csv_name, root / dir_name)
    return ImageData(
        _decode_all([(p, str(p)) for p in train_paths], channels, size, str(root / train_dir)),
        train_targets, list(MUFAC_AGE_CLASSES),
        _decode_all([(p, str(p)) for p in test_paths], channels, size, str(root / dir_name)),
        test_targets, train_groups=train_groups, test_groups=test_groups,
        extra={"train_files": [p.name for p in train_paths],
               "test_files": [p.name for p in test_paths]})


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


# --------------------------------------------------------------------------- CelebA / MUCAC
def _read_name_table(path: Path, what: str) -> dict[str, int]:
    """``<image> <int>`` lines (CelebA's partition and identity files)."""
    table: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            table[parts[0]] = int(parts[1])
        except ValueError:
            raise ValueError(f"{path}:{number}: expected '<image name> <{what}>' such as "
                             f"'000001.jpg 0', got {line.strip()!r}") from None
    return table


_ATTRIBUTE_VALUES = frozenset(("-1", "0", "1"))


def _read_celeba_attributes(path: Path,
                            attributes: Sequence[str]) -> tuple[list[str], list[str], Tensor]:
    """Image names, all attribute names and 0/1 targets ``N×len(attributes)`` of an attribute
    file: line 1 the image count, line 2 the attribute names, then ``<image> <±1 per name>``."""
    lines = path.read_text().splitlines()
    if len(lines) < 3:
        raise ValueError(f"{path}: expected a count line, a line of attribute names, then one "
                         "line per image")
    names = lines[1].split()
    unknown = [a for a in attributes if a not in names]
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; {path.name} has {names}")
    if not attributes:
        raise ValueError("attributes is empty: name at least one CelebA attribute")
    columns = [names.index(a) + 1 for a in attributes]
    images: list[str] = []
    rows: list[list[int]] = []
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path}:{number}: expected an image name and {len(names)} "
                             f"attribute values, got {len(parts)} fields")
        if not _ATTRIBUTE_VALUES.issuperset(parts[1:]):
            bad = sorted(set(parts[1:]) - _ATTRIBUTE_VALUES)
            raise ValueError(f"{path}:{number}: attribute values must be -1/1 (or 0/1), got "
                             f"{bad}")
        images.append(parts[0])
        rows.append([int(parts[c] == "1") for c in columns])
    try:
        count = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise ValueError(f"{path}:1: expected the number of images, got {lines[0]!r}") from None
    if count != len(images):
        raise ValueError(f"{path}: line 1 announces {count} images but {len(images)} follow; "
                         "the file looks truncated or edited")
    return images, names, torch.tensor(rows, dtype=torch.float32)


def load_celeba_data(root: str | os.PathLike[str], *,
                     attributes: Sequence[str] = CELEBA_ATTRIBUTES,
                     attr_file: str = "list_attr_celeba.txt",
                     image_dir: str = "img_align_celeba",
                     partition_file: str | None = "list_eval_partition.txt",
                     identity_file: str | None = "identity_CelebA.txt",
                     held_out: Literal["test", "val"] = "test",
                     identity_split: tuple[int, int] | None = None,
                     max_samples: int | None = None, channels: int | None = 3,
                     size: int | None = 128) -> ImageData:
    """CelebA face attributes as a multilabel task (Liu, Luo, Wang & Tang, "Deep Learning Face
    Attributes in the Wild", ICCV 2015); with CelebA-HQ's files, MUCAC (Choi & Na,
    arXiv:2311.02240).

    Targets are ``float32`` 0/1 labels ``N×L`` for the chosen ``attributes`` (``-1`` → 0);
    ``classes`` are the attribute names. Sample ids follow the attribute file's row order.

    Held-out split, in order of precedence:

    * ``identity_split=(first, held_out_from)``: train on identities in
      ``[first, held_out_from)``, hold out identities ``>= held_out_from``; identities below
      ``first`` are left out (MUCAC: ``(190, 1627)``, its validation people are ids < 190).
    * ``partition_file`` when it exists (CelebA: 0 train, 1 val, 2 test; ``held_out`` picks 2
      or 1). CelebA's partition puts different people in each split.
    * otherwise none: the datamodule carves ``unseen_fraction`` of train off.

    Args:
        root: the CelebA folder.
        attributes: attribute names to predict; default MUCAC's gender, age and smiling.
        attr_file: the attribute file under ``root``.
        image_dir: the image folder under ``root``.
        partition_file: the split file under ``root`` (used when present), or ``None``.
        identity_file: ``<image> <identity>`` lines under ``root`` (used when present): group
            ids for identity forgetting.
        held_out: official split used as the held-out set when partitioning by file.
        identity_split: ``(first, held_out_from)`` identity bounds, see above.
        max_samples: read at most this many images per split (the first in file order):
            CelebA has 202,599 images, about 10 GB at 128×128.
        channels: 3 (RGB) or 1; ``None`` keeps each file's mode.
        size: side of the square images (aligned 178×218 photos are centre-cropped first).
    """
    root = Path(root)
    attr_path = root / attr_file
    images, _, targets = _read_celeba_attributes(attr_path, attributes)
    identity_path = root / identity_file if identity_file else None
    groups = None
    if identity_path is not None and identity_path.is_file():
        identities = _read_name_table(identity_path, "identity")
        missing = [name for name in images if name not in identities]
        if missing:
            raise ValueError(f"{identity_path} has no identity for {missing[:5]} "
                             f"({len(missing)} images of {attr_path.name})")
        groups = torch.tensor([identities[name] for name in images], dtype=torch.long)
    all_rows = torch.ones(len(images), dtype=torch.bool)
    test_rows: Tensor | None = None
    if identity_split is not None:
        first, held_out_from = identity_split
        if groups is None:
            raise FileNotFoundError(f"identity_split needs the identity file {identity_path}")
        if not first < held_out_from:
            raise ValueError(f"identity_split {tuple(identity_split)} must be (first, "
                             "held_out_from) with first < held_out_from")
        train_rows = (groups >= first) & (groups < held_out_from)
        test_rows = groups >= held_out_from
    elif partition_file and (root / partition_file).is_file():
        partition = _read_name_table(root / partition_file, "partition 0/1/2")
        missing = [name for name in images if name not in partition]
        if missing:
            raise ValueError(f"{root / partition_file} has no partition for {missing[:5]}")
        split_of = torch.tensor([partition[name] for name in images])
        train_rows = split_of == 0
        test_rows = split_of == (2 if held_out == "test" else 1)
    else:
        train_rows = all_rows

    def pick(rows: Tensor) -> Tensor:
        ids = rows.nonzero().flatten()
        return ids[:max_samples] if max_samples is not None else ids

    def read(ids: Tensor, split: str) -> Tensor:
        where = f"{attr_path} ({split})"
        items = [(_existing(root / image_dir / images[i], where), images[i]) for i in ids]
        return _decode_all(items, channels, size, f"{root / image_dir} ({split})")

    train_ids = pick(train_rows)
    if len(train_ids) == 0:
        raise ValueError(f"no training image selected from {attr_path}: check identity_split "
                         "or the partition file")
    data = ImageData(read(train_ids, "train"), targets[train_ids], list(attributes),
                     train_groups=groups[train_ids] if groups is not None else None,
                     task="multilabel", extra={"train_files": [images[i] for i in train_ids]})
    if test_rows is not None:
        test_ids = pick(test_rows)
        if len(test_ids) == 0:
            raise ValueError(f"no held-out image selected from {attr_path}: check "
                             "identity_split or the partition file")
        data.test_images, data.test_targets = read(test_ids, "held-out"), targets[test_ids]
        data.test_groups = groups[test_ids] if groups is not None else None
        data.extra["test_files"] = [images[i] for i in test_ids]
    return data


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


class MUFACDataModule(_FaceDataModule):
    """MUFAC age classification (8 groups), the DLFD / MUFAC benchmark (Choi & Na,
    arXiv:2311.02240; DLFD: Choi & Na, AAAI 2025).

    Layout under ``root`` (the unzipped ``custom_korean_family_dataset_resolution_128``)::

        custom_train_dataset.csv  custom_val_dataset.csv  custom_test_dataset.csv
        train_images/  val_images/  test_images/

    Group ids are family numbers (``F0001_...jpg`` → 1), so ``forget_groups: [1, 2]`` forgets
    every photo of families F0001 and F0002. The benchmark's own request is
    ``forget_first: 1500``: the first 1,500 rows of the training CSV (ids ``0..1499``, the CSV
    is ordered by family), exactly as the MUFAC and DLFD code slice ``[:1500]``. Both are
    evaluated like the benchmark: the held-out families are other people, so the attack
    compares the forget set with ``unseen`` (the ``custom_test`` CSV by default, see
    ``held_out``).

    Args:
        root: the dataset folder.
        held_out: ``test`` (MUFAC's unseen set, the default) or ``val`` as the ``unseen``
            split.
        train_csv: training CSV under ``root``.
        val_csv: validation CSV under ``root``.
        test_csv: test CSV under ``root``.
        train_dir: image folder of ``train_csv`` under ``root``.
        val_dir: image folder of ``val_csv`` under ``root``.
        test_dir: image folder of ``test_csv`` under ``root``.
        **kwargs: :class:`~unlearn_pl.data.datamodule.UnlearningDataModule` options
            (``image_size`` defaults to 128, ``num_channels`` to 3).
    """

    def __init__(self, root: str,
                 held_out: Literal["test", "val"] = "test",
                 train_csv: str = "custom_train_dataset.csv",
                 val_csv: str = "custom_val_dataset.csv",
                 test_csv: str = "custom_test_dataset.csv", train_dir: str = "train_images",
                 val_dir: str = "val_images", test_dir: str = "test_images",
                 **kwargs: Any) -> None:
        layout = (f"<root>/{train_csv} and <root>/{test_csv if held_out == 'test' else val_csv}"
                  f" (columns image_path, age_class a-h) with images in <root>/{train_dir}/ "
                  f"and <root>/{test_dir if held_out == 'test' else val_dir}/")
        source = ("the MUFAC link in https://github.com/ndb796/MachineUnlearning "
                  "(custom_korean_family_dataset_resolution_128.zip)")
        _require(Path(root), "MUFAC", layout, source)
        _require(Path(root) / train_csv, "MUFAC training CSV", layout, source)
        _require(Path(root) / (test_csv if held_out == "test" else val_csv),
                 "MUFAC held-out CSV", layout, source)
        super().__init__(**kwargs)
        self.root = root
        self.files: dict[str, Any] = dict(
            held_out=held_out, train_csv=train_csv, val_csv=val_csv, test_csv=test_csv,
            train_dir=train_dir, val_dir=val_dir, test_dir=test_dir)

    def load(self) -> ImageData:
        return load_mufac_data(self.root, channels=self.hparams["num_channels"],
                               size=self.hparams["image_size"], **self.files)


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


class CelebADataModule(_FaceDataModule):
    """CelebA attributes as a multilabel task (Liu et al., ICCV 2015); default attributes are
    MUCAC's gender, age and smiling (``Male``, ``Young``, ``Smiling``).

    Layout under ``root``: ``list_attr_celeba.txt``, ``img_align_celeba/``, optionally
    ``list_eval_partition.txt`` (else the unseen split is carved from train) and
    ``identity_CelebA.txt`` (group ids: forget people with ``forget_groups``). See
    :func:`load_celeba_data` for every option. Multilabel data supports ``forget_fraction``,
    ``forget_count``, ``forget_ids`` and ``forget_groups`` (not ``forget_classes``).

    Args:
        root: the CelebA folder.
        attributes: attribute names to predict.
        attr_file: the attribute file under ``root``.
        image_dir: the image folder under ``root``.
        partition_file: the split file under ``root`` (used when present), or ``None``.
        identity_file: the identity file under ``root`` (used when present), or ``None``.
        held_out: official split (``test`` or ``val``) used as the held-out set.
        identity_split: ``(first, held_out_from)`` identity bounds of the training and held-out
            people (MUCAC's protocol); overrides the partition file.
        max_samples: read at most this many images per split (CelebA is 202,599 images).
        **kwargs: :class:`~unlearn_pl.data.datamodule.UnlearningDataModule` options
            (``image_size`` defaults to 128, ``num_channels`` to 3).
    """

    dataset_name = "CelebA"
    source = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (research use)"

    def __init__(self, root: str, attributes: Sequence[str] = CELEBA_ATTRIBUTES,
                 attr_file: str = "list_attr_celeba.txt", image_dir: str = "img_align_celeba",
                 partition_file: str | None = "list_eval_partition.txt",
                 identity_file: str | None = "identity_CelebA.txt",
                 held_out: Literal["test", "val"] = "test",
                 identity_split: tuple[int, int] | None = None, max_samples: int | None = None,
                 **kwargs: Any) -> None:
        layout = (f"<root>/{attr_file} (line 1: image count, line 2: attribute names, then "
                  f"'<image> <-1/1 ...>'), images in <root>/{image_dir}/, optional "
                  f"<root>/{partition_file} and <root>/{identity_file}")
        source = self.source
        _require(Path(root), self.dataset_name, layout, source)
        _require(Path(root) / attr_file, f"{self.dataset_name} attribute file", layout, source)
        _require(Path(root) / image_dir, f"{self.dataset_name} image folder", layout, source)
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, got {max_samples}")
        super().__init__(**kwargs)
        self.root = root
        self.options: dict[str, Any] = dict(
            attributes=tuple(attributes), attr_file=attr_file, image_dir=image_dir,
            partition_file=partition_file, identity_file=identity_file, held_out=held_out,
            identity_split=tuple(identity_split) if identity_split else None,
            max_samples=max_samples)

    def load(self) -> ImageData:
        return load_celeba_data(self.root, channels=self.hparams["num_channels"],
                                size=self.hparams["image_size"], **self.options)


class MUCACDataModule(CelebADataModule):
    """MUCAC, CelebA-HQ's 30,000 faces with identities, multilabel gender / age / smiling
    (Choi & Na, arXiv:2311.02240), read from the ``CelebAMask-HQ`` folder.

    The benchmark's split: train on identities 190–1626, hold out identities >= 1627 (unseen
    people); its forget set is identities 190–1249, i.e. ``forget_groups`` = those ids. The
    attribute file is CelebAMask-HQ's ``CelebAMask-HQ-attribute-anno.txt``, which the MUCAC
    code reads under the name ``CelebA-HQ-attribute.txt``; ``CelebA-HQ-identity.txt`` comes
    from https://github.com/ndb796/CelebA-HQ-Face-Identity-and-Attributes-Recognition-PyTorch.

    Args:
        root: the ``CelebAMask-HQ`` folder.
        attr_file: the attribute file under ``root`` (MUCAC's name by default).
        image_dir: the image folder under ``root`` (MUCAC's name by default).
        identity_file: the identity file under ``root`` (MUCAC's name by default).
        partition_file: the split file under ``root``; ``None`` (MUCAC splits by identity).
        identity_split: ``(first, held_out_from)`` identity bounds (MUCAC's ``(190, 1627)``).
        **kwargs: further :class:`CelebADataModule` options.
    """

    dataset_name = "MUCAC"
    source = ("CelebAMask-HQ (https://github.com/switchablenorms/CelebAMask-HQ) and the identity "
              "file of https://github.com/ndb796/CelebA-HQ-Face-Identity-and-Attributes-"
              "Recognition-PyTorch")

    def __init__(self, root: str, attr_file: str = "CelebA-HQ-attribute.txt",
                 image_dir: str = "CelebA-HQ-img", identity_file: str = "CelebA-HQ-identity.txt",
                 partition_file: str | None = None,
                 identity_split: tuple[int, int] | None = (190, 1627), **kwargs: Any) -> None:
        super().__init__(root, attr_file=attr_file, image_dir=image_dir,
                         identity_file=identity_file, partition_file=partition_file,
                         identity_split=identity_split, **kwargs)


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
