"""unlearn_pl: machine unlearning of image classifiers as PyTorch Lightning modules."""

from unlearn_pl._compat import ensure_torchvision_importable

ensure_torchvision_importable()  # before lightning/torchmetrics import torchvision

__version__ = "0.2.0"
