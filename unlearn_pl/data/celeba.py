"""CelebA attributes (multilabel) and MUCAC, its multi-attribute setting of the DLFD paper."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.images import _decode_all, _existing, _FaceDataModule, _require

#: MUCAC's three attributes (gender, age, smiling) as CelebA names them.
CELEBA_ATTRIBUTES = ("Male", "Young", "Smiling")


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
