"""Deprecated: the optimal-transport distance moved to :mod:`unlearn_pl.losses`."""

import warnings

from unlearn_pl.losses.ot import OTMethod, cosine_cost, ot_distance

warnings.warn("unlearn_pl.ot is deprecated and will be removed in 0.3: import from "
              "unlearn_pl.losses", DeprecationWarning, stacklevel=2)

__all__ = ["OTMethod", "cosine_cost", "ot_distance"]
