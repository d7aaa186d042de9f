"""Synthetic images made in code (tests and examples)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.datamodule import UnlearningDataModule


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


class SyntheticDataModule(UnlearningDataModule):
    """Tiny learnable images generated in code, for tests and smoke runs."""

    def __init__(self, num_samples: int = 256, num_classes: int = 4, image_size: int = 16,
                 channels: int = 3, num_test: int = 128, num_groups: int | None = None,
                 multilabel: bool = False, batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.synthetic = dict(num_samples=num_samples, num_classes=num_classes,
                              image_size=image_size, channels=channels, num_test=num_test,
                              num_groups=num_groups, multilabel=multilabel)

    def load(self) -> ImageData:
        return make_synthetic_data(seed=0, **self.synthetic)  # type: ignore[arg-type]
