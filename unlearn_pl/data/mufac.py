"""MUFAC (Machine Unlearning for Facial Age Classifier): Korean faces in eight age groups."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.images import _decode_all, _existing, _FaceDataModule, _require

#: MUFAC's eight age groups, classes 0–7 (CSV letters a–h), as the benchmark names them.
MUFAC_AGE_CLASSES = ("0-6", "7-12", "13-19", "20-30", "31-45", "46-55", "56-66", "67-80")


_MUFAC_LETTERS = "abcdefgh"


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
