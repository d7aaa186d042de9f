"""Per-sample evaluation values keyed by sample id: the one collector every evaluation reads."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["PerSampleValues"]


def _cat_state(state: list[Tensor] | Tensor) -> Tensor:
    if isinstance(state, list) and not state:
        return torch.empty(0)
    return dim_zero_cat(state)


def _once_per_key(keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Each distinct key (a row of ``keys``, ``(N,)`` or ``(N, k)``) once, in sorted order, with
    the smallest of its values (per column of ``values``, ``(N,)`` or ``(N, C)``).

    A DDP sampler pads the last batch with repeats, which would otherwise count twice and make the
    DDP value differ from the single-process one. Repeats evaluated on another rank may differ in
    the last bits (another batch composition); the minimum, unlike "first", does not depend on
    the order the ranks are gathered in.
    """
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)
    index = inverse.view(-1, *([1] * (values.ndim - 1))).expand_as(values)
    kept = values.new_full((unique.shape[0], *values.shape[1:]), math.inf).scatter_reduce(
        0, index, values, reduce="amin")
    return unique, kept


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
