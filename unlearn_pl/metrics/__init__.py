"""Evaluation metrics: the MUFAC / DLFD membership inference attack, forgetting score and NoMUS,
and the per-sample values every evaluation reads."""

from unlearn_pl.metrics.mia import (
    ForgettingScore,
    MembershipInferenceAttack,
    NoMUS,
    attack_features,
    balance_membership,
    forgetting_score,
    membership_inference_attack,
    nomus,
)
from unlearn_pl.metrics.samples import PerSampleValues

__all__ = [
    "ForgettingScore",
    "MembershipInferenceAttack",
    "NoMUS",
    "PerSampleValues",
    "attack_features",
    "balance_membership",
    "forgetting_score",
    "membership_inference_attack",
    "nomus",
]
