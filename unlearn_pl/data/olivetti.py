"""The Olivetti faces (40 people × 10 photos; identity = class)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn_pl.data.core import ImageData
from unlearn_pl.data.datamodule import UnlearningDataModule
from unlearn_pl.data.images import _require_path


def load_olivetti_data(path: str | os.PathLike[str]) -> ImageData:
    """The Olivetti (ORL/AT&T) faces: 40 people × 10 photos of 64×64, identity = class = group.

    Reads the MATLAB file ``olivettifaces.mat`` (variable ``faces``, 4096 × 400, column-major),
    the format scikit-learn's fetcher also reads. Credit AT&T Laboratories Cambridge.
    """
    from scipy.io import loadmat

    faces = loadmat(str(path))["faces"]
    images = faces.T.reshape(400, 64, 64).transpose(0, 2, 1)
    if images.dtype != np.uint8:
        images = np.clip(images * (255.0 if images.max() <= 1 else 1.0), 0, 255).astype(np.uint8)
    identity = torch.arange(400) // 10
    return ImageData(torch.from_numpy(np.ascontiguousarray(images))[:, None], identity.clone(),
                     classes=[f"person_{i}" for i in range(40)], train_groups=identity.clone())


class OlivettiDataModule(UnlearningDataModule):
    """Olivetti faces: 40 people × 10 photos, identity recognition; forget people with
    ``forget_classes`` (identity = class = group). ``unseen_fraction`` of each person's photos
    (default 0.2: 2 of 10) is held out.

    Args:
        root: ``olivettifaces.mat`` or the folder holding it.
    """

    def __init__(self, root: str, batch_size: int = 32, **kwargs: Any) -> None:
        path = Path(root) / "olivettifaces.mat" if Path(root).is_dir() else Path(root)
        _require_path(str(path), "olivettifaces.mat", "Point root at the file or its folder "
                      "(e.g. ../shared/data/olivetti).")
        super().__init__(batch_size=batch_size, **kwargs)
        self.path = path

    def load(self) -> ImageData:
        return load_olivetti_data(self.path)
