"""Tests of unlearn_pl.metrics against scikit-learn, the reference the MUFAC / DLFD code runs."""

from __future__ import annotations

import math
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score
from threadpoolctl import threadpool_limits
from torch import Tensor
from torch.utils.data import DistributedSampler, TensorDataset

import unlearn_pl  # noqa: F401  # torchvision shim; nothing above imports torchmetrics
from unlearn_pl.metrics import (
    ForgettingScore,
    MembershipInferenceAttack,
    NoMUS,
    attack,
    attack_features,
    balance_membership,
    forgetting_score,
    membership_inference_attack,
    nomus,
)
from unlearn_pl.metrics.attack import _binary_auc, _fit_logistic_1d


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _losses(kind: str, n_members: int, n_non_members: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Per-sample losses shaped like real ones: members (trained on) have smaller losses."""
    torch.manual_seed(seed)  # torch.distributions samples from the global generator
    if kind == "gamma":  # a model that overfits moderately: gamma-like loss distributions
        members = torch.distributions.Gamma(1.0, 4.0).sample((n_members,))
        non_members = torch.distributions.Gamma(1.5, 2.0).sample((n_non_members,))
    elif kind == "identical":  # perfect forgetting: the attacker has nothing to go on
        members = torch.distributions.Gamma(1.2, 2.0).sample((n_members,))
        non_members = torch.distributions.Gamma(1.2, 2.0).sample((n_non_members,))
    elif kind == "separated":  # memorised members: losses near 0, unseen losses far above
        members = 0.05 * torch.rand(n_members)
        non_members = 2.0 + torch.rand(n_non_members)
    elif kind == "heavy":  # a few huge losses, as on mislabelled or hard unseen samples
        members = torch.distributions.LogNormal(-2.0, 1.5).sample((n_members,))
        non_members = torch.distributions.LogNormal(-1.0, 2.0).sample((n_non_members,))
    elif kind == "weak":  # nearly forgotten: an attack accuracy of about 0.52
        members = torch.distributions.Gamma(1.0, 2.2).sample((n_members,))
        non_members = torch.distributions.Gamma(1.0, 2.0).sample((n_non_members,))
    elif kind == "ties":  # confident predictions' losses stop at float32's resolution: ties
        members = torch.distributions.LogNormal(-10.0, 5.0).sample((n_members,))
        non_members = torch.distributions.LogNormal(-6.0, 5.0).sample((n_non_members,))
        members, non_members = members.clamp_min(2.0**-23), non_members.clamp_min(2.0**-23)
    else:
        raise ValueError(kind)
    features = torch.cat([members, non_members])
    membership = torch.cat([torch.ones(n_members), torch.zeros(n_non_members)]).long()
    return features, membership


def _sklearn_mia(features: Tensor, membership: Tensor, n_splits: int, seed: int) -> float:
    """The MUFAC / DLFD ``simple_mia``: LogisticRegression() scored by cross_val_score."""
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=0.1, random_state=seed)
    # Its OpenMP threads spin against each other on a busy machine (5x slower here).
    with threadpool_limits(1):
        scores = cross_val_score(
            LogisticRegression(),
            features.numpy().reshape(-1, 1),
            membership.numpy().astype(int),
            cv=cv,
            scoring="accuracy",
        )
    return float(scores.mean())


# --------------------------------------------------------------------------- attack_features


def test_attack_features_multiclass() -> None:
    logits = torch.randn(6, 4, generator=_gen(0), dtype=torch.float64)
    logits[0, 1] = -math.inf  # a saturated class must not turn the entropy into NaN
    targets = torch.tensor([0, 1, 2, 3, 0, 2])
    p = logits.softmax(1)

    loss = attack_features(logits, targets, "loss")
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, reduction="none").float())
    entropy = attack_features(logits, targets, "entropy")
    finite = torch.where(p > 0, p * p.log(), torch.zeros_like(p))
    torch.testing.assert_close(entropy, -finite.sum(1).float())
    assert torch.isfinite(entropy).all()
    confidence = attack_features(logits, targets, "confidence")
    torch.testing.assert_close(confidence, p[torch.arange(6), targets].float())
    for feature in (loss, entropy, confidence):
        assert feature.dtype == torch.float32 and feature.shape == (6,)


def test_attack_features_multilabel() -> None:
    logits = torch.randn(5, 3, generator=_gen(1), dtype=torch.float64) * 4
    targets = (torch.rand(5, 3, generator=_gen(2)) > 0.5).float()
    p = logits.sigmoid()

    expected_loss = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean(1)
    torch.testing.assert_close(
        attack_features(logits, targets, "loss", "multilabel"), expected_loss.float()
    )
    expected_entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean(1)
    torch.testing.assert_close(
        attack_features(logits, targets, "entropy", "multilabel"), expected_entropy.float()
    )
    expected_confidence = torch.where(targets.bool(), p, 1 - p).mean(1)
    torch.testing.assert_close(
        attack_features(logits, targets, "confidence", "multilabel"), expected_confidence.float()
    )


def test_attack_features_rejects_bad_shapes() -> None:
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="multiclass targets"):
        attack_features(logits, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="multilabel targets"):
        attack_features(logits, torch.zeros(4), task="multilabel")
    with pytest.raises(ValueError, match="unknown feature"):
        attack_features(logits, torch.zeros(4), feature="margin")  # type: ignore[arg-type]


# ------------------------------------------------------------- agreement with scikit-learn


@pytest.mark.parametrize("kind", ["gamma", "identical", "separated", "heavy"])
def test_logistic_fit_matches_sklearn(kind: str) -> None:
    features, membership = _losses(kind, 1500, 2000)
    x = features.double().numpy().reshape(-1, 1)
    # Tight tolerance: the default lbfgs stops early; the optimum itself is what must agree.
    reference = LogisticRegression(tol=1e-12, max_iter=100_000).fit(x, membership.numpy())
    w, b = _fit_logistic_1d(features.double()[None], membership.double()[None])
    expected = torch.tensor(
        [reference.coef_.item(), reference.intercept_.item()], dtype=torch.float64
    )
    torch.testing.assert_close(torch.cat([w, b]), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("gamma", None), ("identical", 0.5), ("separated", 1.0), ("heavy", None)],
)
def test_attack_accuracy_matches_sklearn(kind: str, expected: float | None) -> None:
    # Unbalanced on purpose: scikit-learn gets the same balanced subsample through the public
    # helper. The splits differ between the implementations, so the means are compared over many
    # splits (50 x 600 test samples) where their sampling noise is far below 0.01; the bias is
    # held much tighter by test_attack_mean_over_seeds_matches_sklearn.
    features, membership = _losses(kind, 3000, 4000, seed=1)
    ours = membership_inference_attack(features, membership, n_splits=50, seed=3)
    balanced_x, balanced_m = balance_membership(features, membership, seed=3)
    assert int(balanced_m.sum()) == int((~balanced_m).sum()) == 3000
    theirs = _sklearn_mia(balanced_x, balanced_m, n_splits=50, seed=3)
    assert ours["accuracy"].item() == pytest.approx(theirs, abs=0.01)
    if expected is not None:
        assert ours["accuracy"].item() == pytest.approx(expected, abs=0.02)
    # Members have the smaller losses, so the fitted weight is negative and the attack's scores
    # rank like the negated loss: the mean test-fold AUC estimates its whole-data AUC. With
    # identical distributions the weight's sign is a coin flip per split and the AUC is 0.5.
    reference_auc = 0.5 if kind == "identical" else roc_auc_score(balanced_m, -balanced_x)
    assert ours["auc"].item() == pytest.approx(reference_auc, abs=0.01)


@pytest.mark.parametrize("kind", ["weak", "heavy", "ties"])
def test_fit_predicts_like_default_lbfgs_on_its_folds(kind: str) -> None:
    # The reference is LogisticRegression() as the papers ran it: lbfgs on the raw loss, stopping
    # at tol=1e-4 (after 3-14 iterations here), not at the optimum Newton reaches. It stops close
    # enough: on its own folds its test predictions are the optimum's, but for a sample that
    # lies on the threshold in a rare split, either way (no convergence or tie bias).
    features, membership = _losses(kind, 2015, 3556, seed=5)
    x, y = balance_membership(features, membership, seed=5)
    cv = StratifiedShuffleSplit(n_splits=20, test_size=0.1, random_state=5)
    folds = list(cv.split(x.numpy(), y.numpy()))
    with threadpool_limits(1):
        theirs = cross_val_score(
            LogisticRegression(), x.numpy()[:, None], y.numpy().astype(int), cv=folds
        )
    train, test = (torch.from_numpy(np.stack(fold)) for fold in zip(*folds, strict=True))
    w, b = _fit_logistic_1d(x[train], y[train].double())
    ours = ((w[:, None] * x[test] + b[:, None] > 0) == y[test]).double().mean(1)
    difference = ours - torch.from_numpy(theirs)
    assert float(difference.abs().max()) <= 1.001 / test.shape[1]
    assert int((difference != 0).sum()) <= 2, difference


def _fold_noise(x: Tensor, y: Tensor, train_x: Tensor, train_y: Tensor) -> Tensor:
    """Per split, a fixed classifier's test-fold accuracy minus its expectation (a control variate).

    Most of the split-to-split spread of the attack's accuracy is which samples land in the test
    fold, and a fixed classifier (the logistic fit on all of ``x``) sees the same draw. Given the
    fold's class counts its expected test accuracy is known exactly, because both implementations
    draw each class's test samples uniformly; subtracting this difference from the attack's
    accuracy keeps the mean, fold sizes included, and removes most of the spread. Each test fold
    is the rest of the data, in both implementations.

    Args:
        x, y: All attacked features, float64 ``(N,)``, and membership, bool ``(N,)``.
        train_x, train_y: The train folds, ``(S, N_train)``.
    """
    w, b = _fit_logistic_1d(x[None], y[None].double())
    right, train_right = (w * x + b > 0) == y, (w * train_x + b > 0) == train_y
    n = torch.stack([(~y).sum(), y.sum()])
    n_right = torch.stack([(right & ~y).sum(), (right & y).sum()])
    n_test = n - torch.stack([(~train_y).sum(1), train_y.sum(1)], 1)
    test_right = n_right - torch.stack(
        [(train_right & ~train_y).sum(1), (train_right & train_y).sum(1)], 1
    )
    return (test_right.sum(1) - (n_test * (n_right / n)).sum(1)) / n_test.sum(1)


def test_attack_mean_over_seeds_matches_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 14: over a few seeds the attack read ~0.003 below scikit-learn. The two draw different
    # splits, so per seed their difference spreads by ~0.009 (10 splits of ~400 test samples) and
    # a bias of that size hides in the spread. Here both sides subtract the control variate above
    # (per-seed spread ~0.001), the seeds differ between cases (shared seeds put the splits on
    # the same ranks of every distribution and correlate their errors), and the mean difference
    # over 40 seeds is held to 0.001 (each case's over 10 seeds to 0.0015): their standard errors
    # are ~0.00013 (checked below) and 0.0002-0.0004, so a bias of 0.002 fails while an unbiased
    # attack passes by 4 or more standard errors. The counts are the face-age ones.
    calls: list[tuple[Tensor, Tensor]] = []

    def recording_fit(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        calls.append((x, y.bool()))
        return _fit_logistic_1d(x, y)

    monkeypatch.setattr(attack, "_fit_logistic_1d", recording_fit)
    differences = {}
    for k, (kind, balance) in enumerate(
        [("gamma", True), ("weak", True), ("heavy", True), ("gamma", False)]
    ):
        features, membership = _losses(kind, 2015, 3556, seed=k)
        per_seed = []
        for seed in range(100 * k, 100 * k + 10):
            calls.clear()
            ours = membership_inference_attack(features, membership, seed=seed, balance=balance)
            ((train_x, train_y),) = calls
            if balance:
                x, y = balance_membership(features, membership, seed=seed)
            else:
                x, y = features.double(), membership.bool()
            ours_adjusted = ours["accuracy"].double() - _fold_noise(x, y, train_x, train_y).mean()

            cv = StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=seed)
            folds = list(cv.split(x.numpy(), y.numpy()))
            with threadpool_limits(1):  # see _sklearn_mia
                theirs = cross_val_score(
                    LogisticRegression(), x.numpy()[:, None], y.numpy().astype(int), cv=folds
                ).mean()
            train = torch.from_numpy(np.stack([fold for fold, _ in folds]))
            theirs_adjusted = theirs - _fold_noise(x, y, x[train], y[train]).mean()
            per_seed.append(ours_adjusted - theirs_adjusted)
        differences[(kind, balance)] = torch.stack(per_seed)

    pooled = torch.cat(list(differences.values()))
    standard_error = float(pooled.std()) / math.sqrt(pooled.numel())
    summary = {case: round(float(d.mean()), 5) for case, d in differences.items()}
    assert abs(float(pooled.mean())) < 0.001, summary
    for case, d in differences.items():
        assert abs(float(d.mean())) < 0.0015, (case, summary)
    assert standard_error < 2e-4, f"too little power: {standard_error:.5f} {summary}"


def test_attack_draws_each_class_test_fold_uniformly(monkeypatch: pytest.MonkeyPatch) -> None:
    # The control variate above assumes uniform test folds, and would absorb most of a bias of the
    # draw itself (e.g. ties of the random keys broken towards small losses), so the draw is
    # checked here. Feature = 2 * rank + membership: the train folds tell every sample's rank.
    calls: list[Tensor] = []

    def recording_fit(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        calls.append(x)
        return _fit_logistic_1d(x, y)

    monkeypatch.setattr(attack, "_fit_logistic_1d", recording_fit)
    n, n_splits, n_test = 500, 2000, 50
    membership = torch.arange(2 * n) % 2
    membership_inference_attack(
        membership + 2 * (torch.arange(2 * n) // 2), membership, n_splits=n_splits, seed=0
    )
    (train_x,) = calls
    in_train = torch.bincount(train_x.long().flatten(), minlength=2 * n).reshape(n, 2)
    in_test = (n_splits - in_train).double()  # (rank, class): splits that held it out
    assert bool((in_test.sum(0) == n_splits * n_test).all())
    rank = (torch.arange(n, dtype=torch.float64)[:, None] + 0.5) / n
    # Mean rank of the test samples: 0.5 +- 0.0009 (hypergeometric spread over the splits).
    mean_rank = (in_test * rank).sum(0) / in_test.sum(0)
    torch.testing.assert_close(
        mean_rank, torch.full((2,), 0.5, dtype=torch.float64), atol=0.004, rtol=0
    )
    # And per tenth of the ranks (a U or a bump): a share of 0.1 +- 0.0009 of the test samples.
    share = in_test.reshape(10, n // 10, 2).sum(1) / in_test.sum(0)
    torch.testing.assert_close(share, torch.full_like(share, 0.1), atol=0.004, rtol=0)


def test_binary_auc_matches_sklearn_with_ties() -> None:
    g = _gen(4)
    neg = torch.randint(0, 8, (3, 40), generator=g).double()  # many ties on purpose
    pos = torch.randint(2, 10, (3, 30), generator=g).double()
    ours = _binary_auc(neg, pos)
    for row in range(3):
        labels = np.r_[np.zeros(40), np.ones(30)]
        scores = np.r_[neg[row].numpy(), pos[row].numpy()]
        assert ours[row].item() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


# ----------------------------------------------------------------------- balancing, invariances


def test_balancing_measures_instead_of_reporting_the_majority_floor() -> None:
    # 100 forget samples against 10,000 unseen ones, same distribution: nothing to detect.
    features, membership = _losses("identical", 100, 10_000, seed=5)
    unbalanced = membership_inference_attack(features, membership, balance=False)
    balanced = membership_inference_attack(features, membership, balance=True)
    # Without balancing the attack predicts "non-member" always: accuracy = 10000 / 10100.
    assert unbalanced["accuracy"].item() > 0.98
    assert balanced["accuracy"].item() == pytest.approx(0.5, abs=0.15)


def test_result_ignores_sample_order_and_depends_on_seed() -> None:
    features, membership = _losses("gamma", 500, 700, seed=6)
    perm = torch.randperm(features.numel(), generator=_gen(7))
    first = membership_inference_attack(features, membership)
    shuffled = membership_inference_attack(features[perm], membership[perm].bool())
    assert first == shuffled
    other_seed = membership_inference_attack(features, membership, seed=1)
    assert other_seed["accuracy"] != first["accuracy"]


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_features_raise(bad: float) -> None:
    features, membership = _losses("gamma", 50, 50)
    features[[3, 60]] = bad
    kind = "NaN" if math.isnan(bad) else "inf"
    with pytest.raises(ValueError, match=f"2 {kind} .*diverged"):
        membership_inference_attack(features, membership)


def test_empty_class_raises_naming_it() -> None:
    features = torch.rand(30)
    with pytest.raises(ValueError, match="no members"):
        membership_inference_attack(features, torch.zeros(30))
    with pytest.raises(ValueError, match="no non-members"):
        membership_inference_attack(features, torch.ones(30))


def test_too_few_samples() -> None:
    features = torch.tensor([0.0, 0.1, 0.2, 10.0, 11.0, 12.0])
    with pytest.raises(ValueError, match="at least 2 members"):
        membership_inference_attack(features, torch.tensor([1, 0, 0, 0, 0, 0]))
    # 3 per class: a 10 % test fold would hold 0.3 samples; the rule is one per class, warned.
    with pytest.warns(UserWarning, match="only 3 members and 3 non-members"):
        result = membership_inference_attack(features, torch.tensor([1, 1, 1, 0, 0, 0]))
    assert result["accuracy"].item() == 1.0  # separable: every test sample is classified right
    with pytest.raises(ValueError, match="at least 2 members"):
        # balancing is applied first: 1 member leaves 1 non-member
        membership_inference_attack(torch.rand(50), (torch.arange(50) == 0).long())


def test_invalid_arguments_raise() -> None:
    features, membership = _losses("gamma", 20, 20)
    with pytest.raises(ValueError, match="only 0"):
        membership_inference_attack(features, membership * 2)
    with pytest.raises(ValueError, match="test_size"):
        membership_inference_attack(features, membership, test_size=1.0)
    with pytest.raises(ValueError, match="n_splits"):
        membership_inference_attack(features, membership, n_splits=0)
    with pytest.raises(ValueError, match="1-D"):
        membership_inference_attack(features[:, None], membership)


# -------------------------------------------------------------- forgetting score and NoMUS


def test_forgetting_score_and_nomus_values() -> None:
    assert forgetting_score(0.5).item() == 0.0
    assert forgetting_score(0.75).item() == pytest.approx(0.5)
    assert forgetting_score(0.25).item() == pytest.approx(0.5)  # below chance leaks too
    assert forgetting_score(torch.tensor(1.0)).item() == 1.0
    # Published MUFAC numbers (DLFD, Table 1): retrain 0.608 / 0.110, DLFD 0.620 / 0.056.
    assert nomus(0.608, 0.110).item() == pytest.approx(0.749)
    assert nomus(0.620, 0.056).item() == pytest.approx(0.782)


# ---------------------------------------------------------------------------------- metrics


def test_metric_over_batches_equals_functional() -> None:
    features, membership = _losses("gamma", 800, 900, seed=8)
    perm = torch.randperm(features.numel(), generator=_gen(9))
    metric = MembershipInferenceAttack(n_splits=7, seed=2)
    for chunk in perm.split(128):
        assert metric(features[chunk], membership[chunk]) is None  # forward only accumulates
    result = metric.compute()
    expected = membership_inference_attack(features, membership, n_splits=7, seed=2)
    assert result["accuracy"] == expected["accuracy"] and result["auc"] == expected["auc"]
    assert result["forgetting_score"] == forgetting_score(expected["accuracy"])

    score = ForgettingScore(n_splits=7, seed=2)
    score.update(features, membership)
    assert score.compute() == result["forgetting_score"]

    metric.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics' own "compute before update" warning
        with pytest.raises(ValueError, match="before any update"):
            metric.compute()


def test_metric_deduplicates_by_membership_and_id() -> None:
    features, membership = _losses("gamma", 300, 300, seed=10)
    ids = torch.cat([torch.arange(300), torch.arange(300)])  # same ids in both sets: distinct
    metric = MembershipInferenceAttack()
    metric.update(features, membership, ids)
    repeat = torch.arange(0, 600, 7)  # padded repeats, as a DDP sampler adds
    metric.update(features[repeat], membership[repeat], ids[repeat])
    expected = membership_inference_attack(features, membership)
    assert metric.compute() == {
        **expected,
        "forgetting_score": forgetting_score(expected["accuracy"]),
    }

    without_ids = MembershipInferenceAttack()
    without_ids.update(
        torch.cat([features, features[repeat]]), torch.cat([membership, membership[repeat]])
    )
    assert without_ids.compute()["accuracy"] != expected["accuracy"]  # repeats do count there

    mixed = MembershipInferenceAttack()
    mixed.update(features[:10], membership[:10], ids[:10])
    mixed.update(features[10:], membership[10:])
    with pytest.raises(ValueError, match="every update or in none"):
        mixed.compute()


def test_nomus_metric() -> None:
    features, membership = _losses("gamma", 400, 400, seed=11)
    metric = NoMUS()
    metric.update(correct=torch.tensor([True, True, False, True]))
    metric.update(features=features, membership=membership, correct=torch.tensor([True]))
    fs = forgetting_score(membership_inference_attack(features, membership)["accuracy"])
    assert metric.compute() == nomus(torch.tensor(4 / 5), fs)
    with pytest.raises(ValueError, match="together"):
        metric.update(features=features)
    no_accuracy = NoMUS()
    no_accuracy.update(features=features, membership=membership)
    with pytest.raises(ValueError, match="test-accuracy"):
        no_accuracy.compute()


# --------------------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(
    rank: int,
    port: int,
    features: Tensor,
    membership: Tensor,
    correct: Tensor,
    expected: dict[str, Tensor],
    out_dir: str,
) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # The real sampler: shuffled, and padded with repeats because the length is odd.
        dataset = TensorDataset(torch.arange(features.numel()))
        sampler: DistributedSampler[int] = DistributedSampler(dataset, num_replicas=2, rank=rank)
        indices = torch.tensor(list(sampler))
        mia, nomus_metric = MembershipInferenceAttack(), NoMUS()
        for batch in indices.split(64):
            mia.update(features[batch], membership[batch], ids=batch)
            nomus_metric.update(features=features[batch], membership=membership[batch], ids=batch)
        # Accuracy outcomes are split without padding, as a sum over the test set should be.
        nomus_metric.update(correct=correct[rank::2])
        result = {**mia.compute(), "nomus": nomus_metric.compute()}
        for key, value in expected.items():
            assert torch.equal(result[key], value), (rank, key, result[key], value)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_equals_single_process(tmp_path: Path) -> None:
    features, membership = _losses("gamma", 700, 601, seed=12)  # 1301 samples: one is padded
    correct = torch.rand(500, generator=_gen(13)) > 0.3
    reference = MembershipInferenceAttack()
    reference.update(features, membership)
    single_nomus = NoMUS()
    single_nomus.update(correct=correct, features=features, membership=membership)
    expected = {**reference.compute(), "nomus": single_nomus.compute()}

    mp.spawn(
        _ddp_worker,
        args=(_free_port(), features, membership, correct, expected, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    for rank in range(2):  # the workers asserted; this proves both ran to the end
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert all(torch.equal(result[key], value) for key, value in expected.items())
