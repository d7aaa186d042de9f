"""Losses and distances that several methods share: the distillation divergence (SCRUB, Bad
Teaching) and the optimal-transport distance between feature batches (DLFD)."""

from unlearn_pl.losses.distillation import distillation_kl
from unlearn_pl.losses.ot import OTMethod, cosine_cost, ot_distance

__all__ = ["OTMethod", "cosine_cost", "distillation_kl", "ot_distance"]
