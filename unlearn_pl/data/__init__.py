"""Datasets, forget requests and splits."""

from unlearn_pl.data.core import ImageData, ImageTensorDataset
from unlearn_pl.data.datamodule import UnlearningDataModule, resolve_forget_set
from unlearn_pl.data.datasets import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FER2013DataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    OlivettiDataModule,
    SyntheticDataModule,
)
from unlearn_pl.data.faces import (
    CelebADataModule,
    MUCACDataModule,
    MUFACDataModule,
    RAFDBDataModule,
    UTKFaceDataModule,
)
from unlearn_pl.data.requests import (
    ForgetClasses,
    ForgetCount,
    ForgetFirst,
    ForgetFraction,
    ForgetGroups,
    ForgetIds,
    ForgetRequest,
    read_id_file,
)
from unlearn_pl.data.sources import (
    decode_image,
    load_digits_data,
    load_olivetti_data,
    make_synthetic_data,
    read_image_folders,
)

__all__ = [
    "CelebADataModule",
    "MUCACDataModule",
    "MUFACDataModule",
    "RAFDBDataModule",
    "UTKFaceDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FER2013DataModule",
    "ForgetClasses",
    "ForgetCount",
    "ForgetFirst",
    "ForgetFraction",
    "ForgetGroups",
    "ForgetIds",
    "ForgetRequest",
    "ImageData",
    "ImageFolderDataModule",
    "ImageTensorDataset",
    "MNISTDataModule",
    "OlivettiDataModule",
    "SyntheticDataModule",
    "UnlearningDataModule",
    "decode_image",
    "load_digits_data",
    "load_olivetti_data",
    "make_synthetic_data",
    "read_id_file",
    "read_image_folders",
    "resolve_forget_set",
]
