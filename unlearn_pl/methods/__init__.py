"""Unlearning methods: one :class:`UnlearningModule` subclass each."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from unlearn_pl.methods.bad_teaching import BadTeaching
from unlearn_pl.methods.base import UnlearningModule
from unlearn_pl.methods.boundary import BoundaryExpanding, BoundaryShrink
from unlearn_pl.methods.competition import CT, MSG
from unlearn_pl.methods.delete import DELETE
from unlearn_pl.methods.dlfd import DLFD
from unlearn_pl.methods.finetune import FineTune
from unlearn_pl.methods.fisher import FisherForgetting
from unlearn_pl.methods.l1_sparse import L1Sparse
from unlearn_pl.methods.last_k import CFk, EUk
from unlearn_pl.methods.neggrad import NegGrad, NegGradPlus
from unlearn_pl.methods.random_labels import Amnesiac, RandomLabels
from unlearn_pl.methods.salun import SalUn
from unlearn_pl.methods.scrub import SCRUB
from unlearn_pl.methods.ssd import SSD
from unlearn_pl.methods.train import Train
from unlearn_pl.methods.unsir import UNSIR


def available_methods() -> dict[str, type[UnlearningModule]]:
    """Every concrete :class:`UnlearningModule` in this package, discovered by import, keyed by
    class name (tests run each through the same checks without listing them)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[UnlearningModule]] = {}
    stack = list(UnlearningModule.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        public = not cls.__name__.startswith("_")  # private bases and mixins are no methods
        if cls.__module__.startswith(__name__) and public and not inspect.isabstract(cls):
            found[cls.__name__] = cls
    return dict(sorted(found.items()))


__all__ = ["CT", "DELETE", "DLFD", "MSG", "EUk", "SCRUB", "SSD", "UNSIR", "Amnesiac", "BadTeaching",
           "BoundaryExpanding", "BoundaryShrink", "CFk", "FineTune", "FisherForgetting",
           "L1Sparse", "NegGrad", "NegGradPlus", "RandomLabels", "SalUn", "Train",
           "UnlearningModule", "available_methods"]
