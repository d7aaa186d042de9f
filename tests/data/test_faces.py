"""Face datasets: each on-disk format written in miniature, loaded through its datamodule."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from unlearn_pl.data import (
    CelebADataModule,
    FER2013DataModule,
    ForgetClasses,
    MUCACDataModule,
    MUFACDataModule,
    OlivettiDataModule,
    RAFDBDataModule,
    UTKFaceDataModule,
)
from unlearn_pl.data.celeba import load_celeba_data
from unlearn_pl.data.mufac import MUFAC_AGE_CLASSES, parse_mufac_family
from unlearn_pl.data.rafdb import RAFDB_EMOTIONS
from unlearn_pl.data.utkface import age_to_mufac_class, parse_utkface_name

SMALL = {"image_size": 8, "batch_size": 4}


def save_image(path: Path, seed: int, size: tuple[int, int] = (10, 10), mode: str = "RGB") -> None:
    """A small image whose colour depends on ``seed``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = (37 * seed % 256, 91 * seed % 256, 53 * seed % 256)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path, format="JPEG")


# ------------------------------------------------------------------------------------ MUFAC
MUFAC_TRAIN = [("F0001_AGE_D_18_a1.jpg", "a"), ("F0001_AGE_D_18_b1.jpg", "b"),
               ("F0001_AGE_M_45_e1.jpg", "e"), ("F0002_AGE_S_10_b1.jpg", "b"),
               ("F0002_AGE_F_50_f1.jpg", "f"), ("F0002_AGE_F_50_g1.jpg", "g"),
               ("F0003_AGE_GM_80_h1.jpg", "h"), ("F0003_AGE_GF_70_c1.jpg", "c")]
MUFAC_VAL = [("F0801_AGE_D_20_d1.jpg", "d"), ("F0801_AGE_M_40_e2.jpg", "e")]
MUFAC_TEST = [("F0851_AGE_S_12_b1.jpg", "b"), ("F0851_AGE_F_44_e1.jpg", "e"),
              ("F0851_AGE_D_6_a3.jpg", "a")]


def write_mufac_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    # the released CSVs carry a leading unnamed index column
    lines = [",image_path,age_class"] + [f"{i},{name},{age}" for i, (name, age) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def mufac_root(tmp_path: Path) -> Path:
    root = tmp_path / "custom_korean_family_dataset_resolution_128"
    for split, rows in (("train", MUFAC_TRAIN), ("val", MUFAC_VAL), ("test", MUFAC_TEST)):
        for i, (name, _) in enumerate(rows):
            save_image(root / f"{split}_images" / name, i)
        write_mufac_csv(root / f"custom_{split}_dataset.csv", rows)
    return root


def test_mufac_forget_first_rows(mufac_root: Path) -> None:
    dm = MUFACDataModule(str(mufac_root), forget_first=3, **SMALL)
    dm.setup()
    data = dm.data
    assert data.task == "multiclass" and data.classes == list(MUFAC_AGE_CLASSES)
    assert data.train_images.shape == (8, 3, 8, 8) and data.train_images.dtype == torch.uint8
    assert data.train_targets.tolist() == [0, 1, 4, 1, 5, 6, 7, 2]
    assert data.train_groups.tolist() == [1, 1, 1, 2, 2, 2, 3, 3]
    assert data.test_groups.tolist() == [851] * 3
    assert data.test_targets.tolist() == [1, 4, 0]
    ids = dm.split_ids()
    assert ids["forget"] == [0, 1, 2] and ids["retain"] == [3, 4, 5, 6, 7]
    assert ids["unseen"] == [0, 1, 2]
    assert dm.eval_splits == ["retain", "forget", "unseen"]
    assert dm.mia_nonmember_split == "unseen"
    x, y, sample_ids = next(iter(dm.dataloader("forget", train=True)))
    assert x.shape == (3, 3, 8, 8) and 0 <= x.min() and x.max() <= 1
    pairs = sorted(zip(sample_ids.tolist(), y.tolist(), strict=True))
    assert pairs == [(0, 0), (1, 1), (2, 4)]
    # the recorded hyperparameters rebuild the same splits (checkpoint / CLI round trip)
    assert dm.hparams.forget_first == 3 and dm.hparams.root == str(mufac_root)
    assert MUFACDataModule(**dm.hparams).split_ids() == ids


def test_mufac_family_forgetting(mufac_root: Path) -> None:
    dm = MUFACDataModule(str(mufac_root), forget_groups=[2], **SMALL)
    dm.setup()
    assert dm.split_ids()["forget"] == [3, 4, 5]
    assert dm.split_ids()["retain"] == [0, 1, 2, 6, 7]
    # the held-out families are other people: evaluated against unseen people
    assert not dm.class_wise and dm.eval_splits == ["retain", "forget", "unseen"]
    assert dm.mia_nonmember_split == "unseen"


def test_mufac_held_out_val_and_native_size(mufac_root: Path) -> None:
    dm = MUFACDataModule(str(mufac_root), held_out="val", image_size=None, forget_count=2)
    dm.setup()
    assert dm.data.train_images.shape == (8, 3, 10, 10)
    assert dm.data.test_groups.tolist() == [801, 801]
    assert len(dm.split_ids()["unseen"]) == 2 and len(dm.split_ids()["forget"]) == 2


@pytest.mark.parametrize(("name", "family"), [
    ("F0001_AGE_D_18_a1.jpg", 1), ("f0123_AGE_M_40_e2.jpg", 123), ("F12.jpg", 12),
    ("F0851/F0851_AGE_S_12_b1.jpg", 851), ("images/F0042/img_001.jpg", 42),
    ("IMG_0001.jpg", None), ("FAM1_x.jpg", None), ("F00x_1.jpg", None)])
def test_parse_mufac_family(name: str, family: int | None) -> None:
    assert parse_mufac_family(name) == family


def test_mufac_errors(mufac_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="custom_train_dataset.csv.*ndb796"):
        MUFACDataModule(str(mufac_root / "nope"), forget_first=2)
    with pytest.raises(ValueError, match="exactly one forget request"):
        MUFACDataModule(str(mufac_root), forget_first=2, forget_fraction=0.5)
    with pytest.raises(ValueError, match="leaves no retain data"):
        MUFACDataModule(str(mufac_root), forget_first=8, **SMALL).setup()
    csv_path = mufac_root / "custom_train_dataset.csv"
    write_mufac_csv(csv_path, MUFAC_TRAIN[:2] + [("F0002_AGE_S_10_b1.jpg", "z")])
    with pytest.raises(ValueError, match=r"custom_train_dataset.csv:4: age_class 'z'"):
        MUFACDataModule(str(mufac_root), forget_count=1, **SMALL).setup()
    write_mufac_csv(csv_path, MUFAC_TRAIN[:2] + [("missing.jpg", "a")])
    with pytest.raises(FileNotFoundError, match=r"csv:4: image .*missing.jpg"):
        MUFACDataModule(str(mufac_root), forget_count=1, **SMALL).setup()
    (mufac_root / "train_images" / "F0002_broken.jpg").write_bytes(b"not an image")
    write_mufac_csv(csv_path, MUFAC_TRAIN[:2] + [("F0002_broken.jpg", "a")])
    with pytest.raises(ValueError, match="cannot decode image .*F0002_broken.jpg"):
        MUFACDataModule(str(mufac_root), forget_count=1, **SMALL).setup()
    save_image(mufac_root / "train_images" / "IMG_0001.jpg", 1)
    write_mufac_csv(csv_path, MUFAC_TRAIN[:2] + [("IMG_0001.jpg", "a")])
    with pytest.raises(ValueError, match=r"csv:4: cannot parse a family id from 'IMG_0001.jpg'"):
        MUFACDataModule(str(mufac_root), forget_count=1, **SMALL).setup()
    csv_path.write_text("path,age\nF0001_AGE_D_18_a1.jpg,a\n")
    with pytest.raises(ValueError, match="missing column"):
        MUFACDataModule(str(mufac_root), forget_count=1, **SMALL).setup()


# ----------------------------------------------------------------------------------- RAF-DB
RAF_LABELS = [("train_00001.jpg", 5), ("train_00002.jpg", 1), ("train_00003.jpg", 7),
              ("train_00004.jpg", 4), ("test_0001.jpg", 2), ("test_0002.jpg", 6)]


@pytest.fixture
def rafdb_root(tmp_path: Path) -> Path:
    root = tmp_path / "basic"
    for i, (name, _) in enumerate(RAF_LABELS):
        stem = name.removesuffix(".jpg")
        save_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", i)
        save_image(root / "Image" / "original" / name, i, size=(12, 16))
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    label_file.parent.mkdir(parents=True)
    label_file.write_text("".join(f"{name} {label}\n" for name, label in RAF_LABELS))
    return root


def test_rafdb_label_list(rafdb_root: Path) -> None:
    dm = RAFDBDataModule(str(rafdb_root), forget_fraction=0.5, **SMALL)
    dm.setup()
    data = dm.data
    assert data.classes == list(RAFDB_EMOTIONS) and dm.num_classes == 7
    assert data.train_targets.tolist() == [4, 0, 6, 3]
    assert data.test_targets.tolist() == [1, 5]
    assert data.train_images.shape == (4, 3, 8, 8) and data.train_groups is None
    assert data.extra["train_files"][0] == "train_00001_aligned.jpg"
    assert len(dm.split_ids()["forget"]) == 2 and len(dm.split_ids()["unseen"]) == 2
    original = RAFDBDataModule(str(rafdb_root), aligned=False, forget_count=1, **SMALL)
    assert original.data.train_images.shape == (4, 3, 8, 8)  # 12×16 photos centre-cropped


def test_rafdb_malformed_line(rafdb_root: Path) -> None:
    label_file = rafdb_root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "\ntrain_00005.jpg eight\n")
    with pytest.raises(ValueError, match=r"list_patition_label.txt:8: expected .*eight"):
        RAFDBDataModule(str(rafdb_root), forget_count=1, **SMALL).setup()
    label_file.write_text("val_00001.jpg 3\n")
    with pytest.raises(ValueError, match="neither 'train_' nor 'test_'"):
        RAFDBDataModule(str(rafdb_root), forget_count=1, **SMALL).setup()


@pytest.mark.parametrize("archive", [False, True])
def test_rafdb_folders(tmp_path: Path, archive: bool) -> None:
    root = tmp_path / "DATASET"
    for i, (split, label) in enumerate([("train", 1), ("train", 4), ("train", 4), ("test", 1),
                                        ("test", 7)]):
        save_image(root / split / str(label) / f"{split}_{i}.jpg", i, mode="L")
    if archive:
        with tarfile.open(tmp_path / "raf.tar.gz", "w:gz") as tar:
            tar.add(root, arcname="DATASET")
        root = tmp_path / "raf.tar.gz"
    dm = RAFDBDataModule(str(root), forget_count=1, **SMALL)
    dm.setup()
    # folders 1-7 keep RAF-DB's ids and names although 2, 3, 5 and 6 are absent
    assert dm.data.classes == list(RAFDB_EMOTIONS)
    assert dm.data.train_targets.tolist() == [0, 3, 3]
    assert dm.data.test_targets.tolist() == [0, 6]
    assert dm.data.train_images.shape == (3, 3, 8, 8)  # grayscale files read as RGB


# ----------------------------------------------------------------------------- CelebA/MUCAC
CELEBA_NAMES = ["5_o_Clock_Shadow", "Male", "Smiling", "Young", "Eyeglasses"]
CELEBA_ROWS = [[-1, 1, 1, -1, -1], [1, 1, -1, 1, -1], [-1, -1, 1, 1, 1], [-1, -1, -1, 1, -1],
               [1, 1, 1, 1, -1], [-1, -1, -1, -1, 1], [-1, 1, -1, 1, -1], [-1, -1, 1, -1, -1]]
CELEBA_PARTITION = [0, 0, 0, 0, 0, 1, 2, 2]
CELEBA_IDENTITY = [10, 10, 11, 11, 12, 13, 20, 21]


def write_celeba(root: Path, image_names: list[str], attr_file: str, image_dir: str,
                 identity_file: str | None, identities: list[int],
                 partition: list[int] | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [str(len(image_names)), " ".join(CELEBA_NAMES)]
    lines += [f"{name}  " + "  ".join(f"{v:2d}" for v in row)
              for name, row in zip(image_names, CELEBA_ROWS, strict=True)]
    (root / attr_file).write_text("\n".join(lines) + "\n")
    for i, name in enumerate(image_names):
        save_image(root / image_dir / name, i, size=(12, 16))  # CelebA's aligned crops are tall
    if identity_file:
        (root / identity_file).write_text(
            "".join(f"{n} {g}\n" for n, g in zip(image_names, identities, strict=True)))
    if partition is not None:
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{n} {p}\n" for n, p in zip(image_names, partition, strict=True)))
    return root


@pytest.fixture
def celeba_root(tmp_path: Path) -> Path:
    return write_celeba(tmp_path / "celeba", [f"{i:06d}.jpg" for i in range(1, 9)],
                        "list_attr_celeba.txt", "img_align_celeba", "identity_CelebA.txt",
                        CELEBA_IDENTITY, CELEBA_PARTITION)


def expected_targets(rows: list[int]) -> list[list[float]]:
    columns = [CELEBA_NAMES.index(a) for a in ("Male", "Young", "Smiling")]
    return [[float(CELEBA_ROWS[r][c] == 1) for c in columns] for r in rows]


def test_celeba_multilabel_identity_forgetting(celeba_root: Path) -> None:
    dm = CelebADataModule(str(celeba_root), forget_groups=[11], **SMALL)
    dm.setup()
    data = dm.data
    assert dm.task == "multilabel" and data.classes == ["Male", "Young", "Smiling"]
    assert data.train_targets.dtype == torch.float32
    assert data.train_targets.tolist() == expected_targets([0, 1, 2, 3, 4])
    assert data.test_targets.tolist() == expected_targets([6, 7])
    assert data.train_images.shape == (5, 3, 8, 8)
    assert data.train_groups.tolist() == [10, 10, 11, 11, 12]
    assert data.test_groups.tolist() == [20, 21]
    assert dm.split_ids()["forget"] == [2, 3]
    assert dm.eval_splits == ["retain", "forget", "unseen"]  # held-out people differ
    _, y, _ = next(iter(dm.dataloader("forget")))
    assert y.shape == (2, 3)
    assert len(CelebADataModule(str(celeba_root), held_out="val", forget_count=1,
                                **SMALL).data.test_targets) == 1


def test_celeba_forget_groups_seen_in_held_out(tmp_path: Path) -> None:
    identities = [10, 10, 11, 11, 12, 13, 11, 21]  # held-out image 7 shows person 11
    root = write_celeba(tmp_path / "celeba", [f"{i:06d}.jpg" for i in range(1, 9)],
                        "list_attr_celeba.txt", "img_align_celeba", "identity_CelebA.txt",
                        identities, CELEBA_PARTITION)
    dm = CelebADataModule(str(root), forget_groups=[11], **SMALL)
    dm.setup()
    assert dm.class_wise and dm.mia_nonmember_split == "forget_test"
    assert dm.split_ids()["forget_test"] == [0] and dm.split_ids()["retain_test"] == [1]


def test_celeba_subset_carve_and_sample_requests(celeba_root: Path) -> None:
    data = load_celeba_data(celeba_root, max_samples=3, attributes=["Eyeglasses"], size=8)
    assert data.train_targets.shape == (3, 1) and data.test_targets.shape == (2, 1)
    assert data.extra["train_files"] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    dm = CelebADataModule(str(celeba_root), partition_file=None, identity_file=None,
                          forget_fraction=0.25, unseen_fraction=0.25, **SMALL)
    dm.setup()
    ids = dm.split_ids()
    assert dm.data.test_images is None and dm.data.train_groups is None
    held_out = ids["unseen"] + ids["validation/unseen"]
    assert len(held_out) == 2 and len(ids["train"]) == 6 and len(ids["forget"]) == 2
    assert not set(held_out) & set(ids["train"])
    with pytest.raises(ValueError, match="needs a multiclass task"):
        CelebADataModule(str(celeba_root), forget_classes=[0], **SMALL).setup()


def test_celeba_errors(celeba_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="list_attr_celeba.txt.*mmlab"):
        CelebADataModule(str(celeba_root / "nope"), forget_count=1)
    with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['Blond'\]; .*'Male'"):
        CelebADataModule(str(celeba_root), attributes=["Male", "Blond"], forget_count=1,
                         **SMALL).setup()
    attr = celeba_root / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join(lines[:4] + [lines[4] + " 1"] + lines[5:]) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_celeba.txt:5: expected .* 7 fields"):
        CelebADataModule(str(celeba_root), forget_count=1, **SMALL).setup()
    attr.write_text("\n".join(lines[:4] + [lines[4].replace("-1", " x", 1)] + lines[5:]))
    with pytest.raises(ValueError, match=r"list_attr_celeba.txt:5: attribute values"):
        CelebADataModule(str(celeba_root), forget_count=1, **SMALL).setup()
    attr.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="announces 8 images but 7 follow"):
        CelebADataModule(str(celeba_root), forget_count=1, **SMALL).setup()


def test_mucac_identity_split(tmp_path: Path) -> None:
    identities = [5, 190, 191, 1249, 1250, 1626, 1627, 3000]
    root = write_celeba(tmp_path / "CelebAMask-HQ", [f"{i}.jpg" for i in range(8)],
                        "CelebA-HQ-attribute.txt", "CelebA-HQ-img", "CelebA-HQ-identity.txt",
                        identities, partition=None)
    dm = MUCACDataModule(str(root), forget_groups=[190, 191, 1249], **SMALL)
    dm.setup()
    assert dm.data.train_groups.tolist() == [190, 191, 1249, 1250, 1626]
    assert dm.data.test_groups.tolist() == [1627, 3000]
    assert dm.data.extra["train_files"] == ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"]
    assert dm.split_ids()["forget"] == [0, 1, 2] and dm.split_ids()["retain"] == [3, 4]
    assert dm.mia_nonmember_split == "unseen"
    with pytest.raises(ValueError, match="do not exist in the training data"):
        MUCACDataModule(str(root), forget_groups=[5], **SMALL).setup()


# ---------------------------------------------------------------------------------- UTKFace
UTK_FILES = {"1_0_0_20161219140623097.jpg.chip.jpg": (0, 0), "8_1_0_20170109204351455.jpg": (1, 1),
             "15_0_1_20170116174525125.jpg.chip.jpg": (2, 0),
             "25_1_2_20170104023102422.jpg.chip.jpg": (3, 1),
             "40_0_3_20170119180048739.jpg.chip.jpg": (4, 0),
             "50_1_4_20170120134921760.jpg.chip.jpg": (5, 1),
             "60_0_0_20170111182452832.jpg.chip.jpg": (6, 0),
             "part2/90_1_1_20170110140321587.jpg.chip.jpg": (7, 1),
             "part2/39_1_20170116174525125.jpg.chip.jpg": (4, 1),
             "part2/20_0_2_20170116174525126.jpg.chip.jpg": (3, 0)}


@pytest.mark.parametrize("archive", [False, True])
def test_utkface(tmp_path: Path, archive: bool) -> None:
    root = tmp_path / "UTKFace"
    for i, name in enumerate(UTK_FILES):
        save_image(root / name, i)
    (root / "README.txt").write_text("not an image: ignored")
    if archive:
        with tarfile.open(tmp_path / "UTKFace.tar.gz", "w:gz") as tar:
            tar.add(root, arcname="UTKFace")
        root = tmp_path / "UTKFace.tar.gz"
    for label, column in (("age", 0), ("gender", 1)):
        dm = UTKFaceDataModule(str(root), label=label, forget_count=2, unseen_fraction=0.2,
                               **SMALL)
        dm.setup()
        data = dm.data
        files = [f.removeprefix("UTKFace/") for f in data.extra["train_files"]]
        assert sorted(files) == sorted(UTK_FILES)
        assert data.train_targets.tolist() == [UTK_FILES[f][column] for f in files]
        assert dm.num_classes == (8 if label == "age" else 2)
        assert data.test_images is None and data.train_images.shape == (10, 3, 8, 8)
        ids = dm.split_ids()
        assert not set(ids["unseen"]) & set(ids["train"]) and len(ids["forget"]) == 2
    assert dm.data.classes == ["male", "female"]


def test_utkface_labels_and_errors(tmp_path: Path) -> None:
    assert parse_utkface_name("26_0_2_20170104023102422.jpg.chip.jpg") == (26, 0, 2)
    assert parse_utkface_name("x/61_1_20170109142408075.jpg.chip.jpg") == (61, 1, None)
    edges = {0: 0, 6: 0, 7: 1, 12: 1, 13: 2, 19: 2, 20: 3, 30: 3, 31: 4, 45: 4, 46: 5, 55: 5,
             56: 6, 66: 6, 67: 7, 116: 7}
    assert {age: age_to_mufac_class(age) for age in edges} == edges
    for bad in ("face.jpg", "26_2_0_20170104023102422.jpg", "26.jpg"):
        with pytest.raises(ValueError, match="cannot parse UTKFace"):
            parse_utkface_name(bad)
    save_image(tmp_path / "faces" / "25_0_1_20170104023102422.jpg", 1)
    save_image(tmp_path / "faces" / "selfie.jpg", 2)
    with pytest.raises(ValueError, match="selfie.jpg"):
        UTKFaceDataModule(str(tmp_path / "faces"), forget_count=1, **SMALL).setup()
    with pytest.raises(ValueError, match="label must be"):
        UTKFaceDataModule(str(tmp_path / "faces"), label="race", forget_count=1)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ common
@pytest.mark.parametrize(("cls", "expected"), [
    (MUFACDataModule, "custom_train_dataset.csv"), (RAFDBDataModule, "list_patition_label.txt"),
    (CelebADataModule, "img_align_celeba"), (MUCACDataModule, "CelebA-HQ-img"),
    (UTKFaceDataModule, r"\[age\]_\[gender\]")])
def test_missing_root_names_layout_and_source(tmp_path: Path, cls: type, expected: str) -> None:
    with pytest.raises(FileNotFoundError, match=f"(?s){expected}.*Get the data from"):
        cls(str(tmp_path / "absent"), forget_count=1)


def test_face_defaults_and_augmentation(mufac_root: Path) -> None:
    dm = MUFACDataModule(str(mufac_root), forget_first=2, batch_size=4)
    assert dm.hparams.image_size == 128 and dm.hparams.num_channels == 3
    assert dm.data.train_images.shape[1:] == (3, 128, 128)
    transform = dm.train_transform()
    image = dm.data.train_images[0].float() / 255
    out = transform(image)
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
    x, _, _ = next(iter(dm.dataloader("retain", train=True)))
    assert x.shape == (4, 3, 128, 128)


# ------------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_fer2013_real_counts(shared_data: Path) -> None:
    archive = shared_data / "fer2013.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not available")
    dm = FER2013DataModule(str(archive), forget_fraction=0.1, num_channels=3)
    dm.setup()
    ids = dm.split_ids()
    assert len(ids["train"]) == 28_709 and len(ids["unseen"]) == 3_589
    # the probe's held-out data is PublicTest, test's PrivateTest: equal sizes, other images
    assert len(ids["validation/unseen"]) == 3_589 and dm.probe_source("unseen") != "unseen"
    assert not torch.equal(dm.data.val_images, dm.data.test_images)
    assert dm.num_classes == 7 and dm.data.classes == ["angry", "disgust", "fear", "happy",
                                                       "neutral", "sad", "surprise"]
    assert dm.data.train_images.shape[1:] == (3, 48, 48)
    assert len(ids["forget"]) == round(0.1 * 28_709)
    assert len(ids["retain"]) + len(ids["forget"]) == 28_709
    assert set(dm.data.train_targets.unique().tolist()) == set(range(7))


@pytest.mark.slow
def test_olivetti_real_identity_forgetting(shared_data: Path) -> None:
    folder = shared_data / "olivetti"
    if not (folder / "olivettifaces.mat").is_file():
        pytest.skip(f"{folder} not available")
    dm = OlivettiDataModule(str(folder), forget=ForgetClasses([0, 1, 2, 3]))
    dm.setup()
    data = dm.data
    assert data.train_images.shape == (400, 1, 64, 64)
    assert dm.num_classes == 40 and len(data.train_groups.unique()) == 40
    ids = dm.split_ids()
    targets = data.train_targets
    assert len(ids["forget"]) == 4 * 8 and set(targets[ids["forget"]].tolist()) == {0, 1, 2, 3}
    assert not set(targets[ids["retain"]].tolist()) & {0, 1, 2, 3}
    # Two held-out photos per person: one carved off as validation (val_fraction), one for test.
    assert len(ids["forget_test"]) == 4 and len(ids["retain_test"]) == 36
    assert len(ids["validation/forget_test"]) == 4 and len(ids["validation/retain_test"]) == 36
    assert dm.mia_nonmember_split == "forget_test"
