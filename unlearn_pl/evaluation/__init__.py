"""Evaluation beyond one network's numbers: the privacy audit against retrained references."""

from unlearn_pl.evaluation.audit import VERDICT_RULE, audit_method, distance_to_retrain

__all__ = ["VERDICT_RULE", "audit_method", "distance_to_retrain"]
