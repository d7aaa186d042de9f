"""In-memory image data: what every dataset source produces and every split is cut from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

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


def augmentation_seed(seed: int, epoch: int, draw: int, sample_id: int) -> int:
    """The seed of one sample's augmentation: a 63-bit mix (SplitMix64 finaliser) of the
    shuffle seed, the epoch, the pass over the loader within the epoch and the sample id."""
    mask = (1 << 64) - 1
    state = 0
    for value in (seed, epoch, draw, sample_id):
        state = (state ^ (value & mask)) * 0x9E3779B97F4A7C15 & mask
        state ^= state >> 30
        state = state * 0xBF58476D1CE4E5B9 & mask
        state ^= state >> 27
        state = state * 0x94D049BB133111EB & mask
        state ^= state >> 31
    return state >> 1


#: What a sampler of augmented loaders yields: ``(index, epoch, draw)``; ``draw`` counts the
#: passes over the loader within the epoch (a cycled short loader is drawn several times).
AugmentedIndex = tuple[int, int, int]


class ImageTensorDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Samples of an in-memory split as ``(image in [0, 1], target, sample id)``.

    The sample id is the index into the training set (or into the held-out set for held-out
    splits), so metrics and split files can name exactly which samples were seen.

    Reproducible augmentation: with ``seed`` set and an index ``(index, epoch, draw)`` (what
    :class:`~unlearn_pl.data.datamodule.EpochShuffleSampler` yields for augmented loaders),
    the transform draws from torch's global CPU generator seeded with
    :func:`augmentation_seed` of ``(seed, epoch, draw, sample id)``, and the global generator
    is restored afterwards. A sample's augmentation is then a function of those four numbers
    only: the same after a resume, with any number of loader workers, and on any DDP rank
    (the index travels with the epoch to the worker process). Transforms must draw their
    randomness from torch's global CPU generator, as torchvision's transforms do.

    Args:
        images: ``uint8`` tensor ``N×C×H×W``.
        targets: targets aligned with ``images``.
        ids: the sample id of each row.
        transform: applied to the float image in pixel space [0, 1] (augmentation only in
            training loaders).
        seed: seed of reproducible augmentation (the shuffle seed); ``None`` draws from the
            global generator as it stands (also for plain integer indices).
    """

    def __init__(self, images: Tensor, targets: Tensor, ids: Tensor,
                 transform: Callable[[Tensor], Tensor] | None = None,
                 seed: int | None = None) -> None:
        self.images = images
        self.targets = targets
        self.ids = ids
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int | AugmentedIndex) -> tuple[Tensor, Tensor, Tensor]:
        key = None
        if isinstance(index, tuple):
            index, epoch, draw = index
            key = (epoch, draw)
        image = self.images[index].float().div_(255)
        if self.transform is not None:
            if self.seed is None or key is None:
                image = self.transform(image)
            else:
                sample_seed = augmentation_seed(self.seed, *key, int(self.ids[index]))
                # Only the CPU generator (torch.manual_seed would also reseed CUDA's), restored
                # afterwards so the training's own random draws are untouched; get/set_state
                # costs ~1 µs where fork_rng costs ~8 µs, next to a transform's 100-1000 µs.
                generator = torch.default_generator
                state = generator.get_state()
                generator.manual_seed(sample_seed)
                try:
                    image = self.transform(image)
                finally:
                    generator.set_state(state)
        return image, self.targets[index], self.ids[index]


class LazyImages:
    """Images of a dataset decoded when read: what stands in for the ``uint8`` ``N×C×H×W``
    tensor of :class:`ImageData` when the decoded dataset would not fit in memory.

    Indexing with an integer decodes that image (``uint8`` ``C×H×W``); indexing with ids, a
    mask or a slice gives the view of those rows, decoding nothing; :meth:`float` decodes the
    rows of a view (a batch).

    Args:
        read: decodes row ``i`` of the source into a ``uint8`` ``C×H×W`` tensor.
        rows: the source rows of this view.
        shape: ``(C, H, W)`` of every image.
    """

    dtype = torch.uint8

    def __init__(self, read: Callable[[int], Tensor], rows: Tensor,
                 shape: tuple[int, int, int]) -> None:
        self.read, self.rows, self.image_shape = read, rows, tuple(shape)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.image_shape))

    def dim(self) -> int:
        return 4

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int) or (isinstance(key, Tensor) and key.dim() == 0):
            row = int(self.rows[int(key)])
            image = self.read(row)
            if tuple(image.shape) != self.image_shape:
                raise ValueError(f"image {row} has shape "
                                 f"{tuple(image.shape)}, the others {self.image_shape}: set "
                                 "image_size (and num_channels) to read them at one size")
            return image
        return LazyImages(self.read, self.rows[key], self.image_shape)  # type: ignore[arg-type]

    def float(self) -> Tensor:
        """The rows decoded, as ``float32`` ``N×C×H×W`` in [0, 255]."""
        return torch.stack([self[i] for i in range(len(self))]).float()

    def sample(self, count: int, seed: int = 0) -> LazyImages:
        """A seeded subset of ``count`` rows (all when there are fewer)."""
        if len(self) <= count:
            return self
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return self[keep.sort().values]
