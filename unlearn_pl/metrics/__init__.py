"""Evaluation metrics: the MUFAC / DLFD membership inference attack, forgetting score and NoMUS,
and the per-sample values every evaluation reads."""

from unlearn_pl.metrics.epsilon import (
    EpsilonScore,
    epsilon_points,
    epsilon_score,
    final_score,
    klom,
    tow,
)
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
from unlearn_pl.metrics.privacy import (
    RMIA,
    LiRA,
    RetrainLikeness,
    attack_summary,
    lira_scores,
    logit_confidence,
    retrain_likeness,
    rmia_scores,
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
    # Per-example privacy tests against reference networks (privacy.py, epsilon.py).
    "EpsilonScore",
    "LiRA",
    "RMIA",
    "RetrainLikeness",
    "attack_summary",
    "epsilon_points",
    "epsilon_score",
    "final_score",
    "klom",
    "lira_scores",
    "logit_confidence",
    "retrain_likeness",
    "rmia_scores",
    "tow",
]
