"""The membership inference attack, forgetting score and NoMUS as ``torchmetrics`` metrics
(DDP-exact by sample id); the attack itself is :mod:`unlearn_pl.metrics.attack`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# Importing this submodule has run unlearn_pl/__init__, whose torchvision shim torchmetrics needs.
from torchmetrics import Metric

from unlearn_pl.metrics.attack import (  # noqa: F401  (re-exported)
    _C,
    _binary_auc,
    _Feature,
    _fit_logistic_1d,
    _Task,
    _test_counts,
    attack_features,
    balance_membership,
    forgetting_score,
    membership_inference_attack,
    nomus,
)
from unlearn_pl.metrics.samples import _cat_state, _once_per_key

__all__ = ["ForgettingScore", "MembershipInferenceAttack", "NoMUS", "attack_features",
           "balance_membership", "forgetting_score", "membership_inference_attack", "nomus"]

class _AttackStates(Metric):
    """List states of the attack's inputs, shared by the MIA metrics and :class:`NoMUS`."""

    is_differentiable = False
    full_state_update = False

    features: list[Tensor]
    membership: list[Tensor]
    ids: list[Tensor]

    def __init__(
        self,
        n_splits: int = 10,
        test_size: float = 0.1,
        seed: int = 0,
        balance: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if n_splits < 1:
            raise ValueError(f"n_splits must be >= 1, got {n_splits}")
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size must be in (0, 1), got {test_size}")
        self.n_splits = n_splits
        self.test_size = test_size
        self.seed = seed
        self.balance = balance
        self.add_state("features", default=[], dist_reduce_fx="cat")
        self.add_state("membership", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Accumulate like :meth:`update`; returns nothing.

        An attack on one batch is meaningless (and raises when the batch lacks a class), so
        unlike most metrics ``forward`` computes no batch value.
        """
        self.update(*args, **kwargs)

    def _update_attack(self, features: Tensor, membership: Tensor, ids: Tensor | None) -> None:
        if features.ndim != 1 or membership.shape != features.shape:
            raise ValueError(
                "features and membership must be 1-D of the same length, got "
                f"{tuple(features.shape)} and {tuple(membership.shape)}"
            )
        if ids is not None and ids.shape != features.shape:
            raise ValueError(f"ids must have shape {tuple(features.shape)}, got {tuple(ids.shape)}")
        # float64 so the metric gives exactly what the functional gives on the same input; long
        # membership because every backend all-gathers it (gloo has no bool).
        self.features.append(features.detach().to(torch.float64))
        self.membership.append(membership.detach().long())
        if ids is not None:
            self.ids.append(ids.detach().long())

    def _gathered(self) -> tuple[Tensor, Tensor]:
        # After a DDP sync the list states are single tensors, and a state no rank appended to
        # is an empty float tensor: test for samples by size, restore the integer dtypes.
        features = _cat_state(self.features)
        if features.numel() == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any update")
        membership = _cat_state(self.membership).long()
        ids = _cat_state(self.ids).long()
        if ids.numel() == 0:
            return features, membership
        if ids.numel() != features.numel():
            raise ValueError("ids must be given in every update or in none")
        keys, kept = _once_per_key(torch.stack([membership, ids], dim=1), features)
        return kept, keys[:, 0]

    def _attack(self) -> dict[str, Tensor]:
        features, membership = self._gathered()
        result = membership_inference_attack(
            features,
            membership,
            n_splits=self.n_splits,
            test_size=self.test_size,
            seed=self.seed,
            balance=self.balance,
        )
        result["forgetting_score"] = forgetting_score(result["accuracy"])
        return result


class MembershipInferenceAttack(_AttackStates):
    """Membership inference attack of the MUFAC benchmark / DLFD as a torchmetrics metric.

    Accumulates per-sample attack features (see :func:`attack_features`) of members (forget set
    D_f) and non-members (unseen D_u) over batches and ranks, then runs
    :func:`membership_inference_attack` on all of them. Pass the samples' dataset ``ids`` when the
    data come through a DDP sampler: repeated (membership, id) pairs, the sampler's padding, are
    counted once, which keeps the DDP value equal to the single-process value exactly. ``forward``
    only accumulates.

    Args:
        n_splits: Number of stratified shuffle splits.
        test_size: Fraction of each class held out per split.
        seed: Seed of the balancing and of the splits.
        balance: Balance members and non-members before the attack (the DLFD code does not).
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> import torch
        >>> mia = MembershipInferenceAttack()
        >>> g = torch.Generator().manual_seed(0)
        >>> mia.update(torch.rand(200, generator=g), torch.arange(200) % 2)
        >>> sorted(mia.compute())
        ['accuracy', 'auc', 'forgetting_score']
    """

    higher_is_better: bool | None = None

    def update(self, features: Tensor, membership: Tensor, ids: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            features: Attack feature per sample, ``(B,)``.
            membership: 1 for members (forget set), 0 for non-members (unseen), ``(B,)``.
            ids: Dataset index per sample, ``(B,)``; give them in every update or in none.
        """
        self._update_attack(features, membership, ids)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """Attack all accumulated samples.

        Returns:
            ``"accuracy"`` and ``"auc"`` of :func:`membership_inference_attack` and
            ``"forgetting_score"`` (:func:`forgetting_score`).
        """
        return self._attack()


class ForgettingScore(MembershipInferenceAttack):
    """Forgetting score (:func:`forgetting_score`, paper scale) as a loggable scalar metric.

    Same inputs as :class:`MembershipInferenceAttack`. Lower means the forget set looks more like
    unseen data; retrain's own score is the reference, not 0.
    """

    higher_is_better: bool | None = False

    def compute(self) -> Tensor:  # type: ignore[override]
        """Returns the forgetting score of all accumulated samples."""
        return self._attack()["forgetting_score"]


class NoMUS(_AttackStates):
    """NoMUS of the MUFAC benchmark, ``0.5 * (test accuracy + (1 - FS))``.

    Accumulates the correctness of predictions on test/unseen samples and the attack inputs of
    :class:`MembershipInferenceAttack`, in any combination per ``update`` call. NoMUS alone rewards
    a forgetting score below retrain's: log retrain's accuracy and forgetting score beside it.

    Args:
        n_splits: Number of stratified shuffle splits of the attack.
        test_size: Fraction of each class held out per split.
        seed: Seed of the balancing and of the splits.
        balance: Balance members and non-members before the attack.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better: bool | None = True

    correct: Tensor
    total: Tensor

    def __init__(
        self,
        n_splits: int = 10,
        test_size: float = 0.1,
        seed: int = 0,
        balance: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            n_splits=n_splits, test_size=test_size, seed=seed, balance=balance, **kwargs
        )
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        correct: Tensor | None = None,
        features: Tensor | None = None,
        membership: Tensor | None = None,
        ids: Tensor | None = None,
    ) -> None:
        """Add test-accuracy outcomes, attack inputs, or both.

        Args:
            correct: Per test/unseen sample, whether the prediction is right, ``(B,)`` bool.
            features: Attack feature per sample, ``(B,)``; needs ``membership``.
            membership: 1 for members (forget set), 0 for non-members (unseen).
            ids: Dataset index per attack sample, for DDP de-duplication.
        """
        if correct is not None:
            self.correct += correct.detach().long().sum()
            self.total += correct.numel()
        if (features is None) != (membership is None):
            raise ValueError("features and membership must be given together")
        if features is not None and membership is not None:
            self._update_attack(features, membership, ids)

    def compute(self) -> Tensor:
        """Returns NoMUS from the accumulated test accuracy and forgetting score."""
        if int(self.total) == 0:
            raise ValueError("NoMUS.compute() needs test-accuracy outcomes (update(correct=...))")
        accuracy = self.correct.to(torch.float32) / self.total
        return nomus(accuracy, self._attack()["forgetting_score"].to(accuracy.device))
