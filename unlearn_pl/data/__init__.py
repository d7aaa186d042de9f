"""Datasets, forget requests and splits."""

from unlearn_pl.data.celeba import CelebADataModule, MUCACDataModule
from unlearn_pl.data.cifar import CIFAR10DataModule, CIFAR100DataModule, MNISTDataModule
from unlearn_pl.data.core import ImageData, ImageTensorDataset, LazyImages
from unlearn_pl.data.datamodule import UnlearningDataModule
from unlearn_pl.data.dataset import DatasetDataModule, FileListDataModule, FileListDataset
from unlearn_pl.data.digits import DigitsDataModule, load_digits_data
from unlearn_pl.data.fer2013 import FER2013DataModule
from unlearn_pl.data.image_folder import ImageFolderDataModule
from unlearn_pl.data.images import decode_image, read_image_folders
from unlearn_pl.data.mufac import MUFACDataModule
from unlearn_pl.data.olivetti import OlivettiDataModule, load_olivetti_data
from unlearn_pl.data.rafdb import RAFDBDataModule
from unlearn_pl.data.requests import (
    FollowUp,
    ForgetClasses,
    ForgetCount,
    ForgetFirst,
    ForgetFraction,
    ForgetGroups,
    ForgetIds,
    ForgetRequest,
    read_id_file,
    resolve_forget_set,
)
from unlearn_pl.data.synthetic import SyntheticDataModule, make_synthetic_data
from unlearn_pl.data.utkface import UTKFaceDataModule

__all__ = [
    "CelebADataModule",
    "MUCACDataModule",
    "MUFACDataModule",
    "RAFDBDataModule",
    "UTKFaceDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DatasetDataModule",
    "DigitsDataModule",
    "FER2013DataModule",
    "FileListDataModule",
    "FileListDataset",
    "FollowUp",
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
    "LazyImages",
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
