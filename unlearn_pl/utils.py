"""Small shared helpers: atomic output files (text, torch objects, figures)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic_replace(path: str | os.PathLike[str], write: Any, mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    return _atomic_replace(path, lambda handle: handle.write(text), "w")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` through a temporary file and an atomic rename."""
    return _atomic_replace(path, lambda handle: torch.save(obj, handle), "wb")


def atomic_save_figure(figure: Any, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG through a temporary file and an atomic rename."""
    return _atomic_replace(path, lambda handle: figure.savefig(handle, format="png", dpi=dpi),
                           "wb")
