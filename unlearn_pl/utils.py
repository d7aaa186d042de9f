"""Small shared helpers: atomic output files (text, torch objects, figures), the record of the
environment a result was measured in, and per-sample seeded random generators."""

from __future__ import annotations

import os
import platform
import tempfile
from importlib import metadata
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


_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def sample_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by hashing integer ``keys`` (a seed, an epoch, a sample id...).

    Every sample gets its own stream, so a draw never depends on batch composition, order,
    device or DDP rank, and a resumed run redraws exactly what an uninterrupted one drew.
    """
    state = 0
    for key in keys:
        state = _splitmix64(state ^ (int(key) & _MASK))
    return torch.Generator().manual_seed(state)


def environment(command: list[str] | None = None) -> dict[str, Any]:
    """The environment a result was measured in: package versions, Python, machine, CPU count,
    torch threads and GPU (and ``command`` when given), as plain values."""
    versions: dict[str, str | None] = {}
    for package in ("unlearn_pl", "torch", "torchvision", "lightning", "torchmetrics",
                    "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    record: dict[str, Any] = {} if command is None else {"command": list(command)}
    return {**record, "versions": versions, "python": platform.python_version(),
            "machine": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def atomic_save_checkpoint(trainer: Any, path: str | os.PathLike[str]) -> Path:
    """``trainer.save_checkpoint`` through a temporary name and an atomic rename: every rank
    takes part (Lightning's rank 0 writes), rank 0 renames, then all ranks meet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(temporary, weights_only=False)
    if trainer.is_global_zero:
        os.replace(temporary, path)
    trainer.strategy.barrier()
    return path
