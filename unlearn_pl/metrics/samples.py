"""Per-sample evaluation values keyed by sample id: the one collector every evaluation reads."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from unlearn_pl.metrics.mia import _cat_state, _once_per_key

__all__ = ["PerSampleValues"]


class PerSampleValues(Metric):
    """Per-sample values (e.g. correctness and loss) of one evaluation split, keyed by sample id.

    ``compute`` returns every sample once, sorted by id: under DDP each rank's values are
    gathered and the repeats a distributed sampler pads the last batch with are dropped, so
    means over the result are the single-process means exactly. Where two ranks' evaluations of
    a repeated sample differ in the last bits (other batch composition), the smallest value of
    each column is kept, which does not depend on the order ranks are gathered in.

    Args:
        names: the names of the values given to :meth:`update`, in order.
        **kwargs: :class:`torchmetrics.Metric` arguments.
    """

    is_differentiable = False
    full_state_update = False

    ids: list[Tensor]
    values: list[Tensor]

    def __init__(self, names: tuple[str, ...] = ("correct", "loss"), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"names must be distinct and not empty, got {names}")
        self.names = tuple(names)
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, ids: Tensor, *values: Tensor) -> None:  # type: ignore[override]
        """Add one batch: ``ids`` ``(B,)`` and one ``(B,)`` tensor per name."""
        if len(values) != len(self.names):
            raise ValueError(f"expected {len(self.names)} value tensors {self.names}, got "
                             f"{len(values)}")
        columns = torch.stack([v.detach().reshape(-1).to(torch.float64) for v in values], 1)
        if columns.shape[0] != ids.numel():
            raise ValueError(f"ids hold {ids.numel()} samples, the values {columns.shape[0]}")
        if not bool(torch.isfinite(columns).all()):
            raise ValueError("per-sample values are not finite (NaN/inf): the network's outputs "
                             "diverged")
        self.ids.append(ids.detach().reshape(-1).long())
        self.values.append(columns)

    def compute(self) -> dict[str, Tensor]:
        """``{"ids": sorted unique ids, name: value per id, ...}`` (float64, on the CPU)."""
        ids = _cat_state(self.ids).long().cpu()
        if ids.numel() == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any update")
        values = _cat_state(self.values).to("cpu", torch.float64).reshape(ids.numel(), -1)
        unique, kept = _once_per_key(ids, values)
        return {"ids": unique, **{name: kept[:, i] for i, name in enumerate(self.names)}}
