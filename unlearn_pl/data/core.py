"""In-memory image data: what every dataset source produces and every split is cut from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

Task = Literal["multiclass", "multilabel"]


@dataclass
class ImageData:
    """A decoded dataset held in memory as uint8, so 2 cores are not spent decoding every epoch.

    Args:
        train_images: ``uint8`` tensor ``N×C×H×W`` of the training set (the data the original
            network was trained on; the forget set is drawn from it).
        train_targets: ``int64`` class ids ``N`` (multiclass) or ``float32`` 0/1 labels ``N×L``
            (multilabel).
        classes: a name per class (multiclass) or per label (multilabel).
        test_images: the official held-out split, or ``None`` to carve one from train.
        test_targets: targets of ``test_images``.
        train_groups: optional identity/group id per training sample (a person, a family), for
            forget requests that remove every sample of some groups.
        test_groups: group ids of the held-out samples, where known.
        val_images: an official validation split (FER2013's PublicTest), or ``None``: the
            held-out data of the validation probe, so that decisions made during training
            (DLFD's switch, checkpoint selection) never see the test split.
        val_targets: targets of ``val_images``.
        val_groups: group ids of the validation samples, where known.
        task: ``"multiclass"`` or ``"multilabel"``.
    """

    train_images: Tensor
    train_targets: Tensor
    classes: list[str]
    test_images: Tensor | None = None
    test_targets: Tensor | None = None
    train_groups: Tensor | None = None
    test_groups: Tensor | None = None
    val_images: Tensor | None = None
    val_targets: Tensor | None = None
    val_groups: Tensor | None = None
    task: Task = "multiclass"
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images", "val_images"):
            images = getattr(self, name)
            if images is not None and (images.dtype != torch.uint8 or images.dim() != 4):
                raise ValueError(f"{name} must be a uint8 N×C×H×W tensor, got "
                                 f"{images.dtype} of shape {tuple(images.shape)}")
        if len(self.train_images) != len(self.train_targets):
            raise ValueError("train_images and train_targets differ in length: "
                             f"{len(self.train_images)} vs {len(self.train_targets)}")
        for split in ("test", "val"):
            if (getattr(self, f"{split}_images") is None) != (
                    getattr(self, f"{split}_targets") is None):
                raise ValueError(f"give both {split}_images and {split}_targets, or neither")
        if self.val_images is not None and self.test_images is None:
            raise ValueError("val_images without test_images: give the validation split as the "
                             "held-out (test) split instead")

    @property
    def num_channels(self) -> int:
        return int(self.train_images.shape[1])


class ImageTensorDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Samples of an in-memory split as ``(image in [0, 1], target, sample id)``.

    The sample id is the index into the training set (or into the held-out set for held-out
    splits), so metrics and split files can name exactly which samples were seen.

    Args:
        images: ``uint8`` tensor ``N×C×H×W``.
        targets: targets aligned with ``images``.
        ids: the sample id of each row.
        transform: applied to the float image in pixel space [0, 1] (augmentation only in
            training loaders).
    """

    def __init__(self, images: Tensor, targets: Tensor, ids: Tensor,
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        self.images = images
        self.targets = targets
        self.ids = ids
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        image = self.images[index].float().div_(255)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index], self.ids[index]
