"""The membership inference attack as plain functions: per-sample features, balancing, the
cross-validated one-feature logistic regression, the forgetting score and NoMUS.

The attack is the one of the MUFAC benchmark (Choi & Na, "Towards Machine Unlearning Benchmarks:
Forgetting the Personal Identities in Facial Recognition Systems") that DLFD (Choi & Na, AAAI 2025)
evaluates with: one per-sample feature (the cross-entropy loss), members = the forget set D_f,
non-members = unseen data D_u, a logistic regression scored by stratified shuffle-split
cross-validation (10 splits, 10 % test), MIA accuracy = mean over the splits. Their code runs
scikit-learn's ``LogisticRegression()`` inside ``cross_val_score`` with a
``StratifiedShuffleSplit``; this module re-implements that pipeline in plain, vectorised torch so
it runs inside a Lightning loop with no scikit-learn at run time, and agrees with it: the mean
accuracy over seeds is the same to within 0.001 (tested; no bias measurable, issue 14).

Two deliberate differences from the authors' code, both documented where they apply:

* members and non-members are balanced before the attack (the DLFD code does not, so its attack
  collapses to the majority class and reports that class's share, a floor, not a measurement);
* the forgetting score is on the papers' scale, twice the code's (see :func:`forgetting_score`).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["attack_features", "balance_membership", "forgetting_score",
           "membership_inference_attack", "nomus"]

_Feature = Literal["loss", "entropy", "confidence"]
_Task = Literal["multiclass", "multilabel"]

# scikit-learn's LogisticRegression() default inverse regularisation strength.
_C = 1.0
_MAX_NEWTON_STEPS = 100
_MAX_HALVINGS = 50


def attack_features(
    logits: Tensor,
    targets: Tensor,
    feature: _Feature = "loss",
    task: _Task = "multiclass",
) -> Tensor:
    """Per-sample feature the membership inference attack sees.

    The MUFAC benchmark and DLFD use ``"loss"`` (per-sample cross-entropy); ``"entropy"`` and
    ``"confidence"`` are the other common single-feature attacks.

    Args:
        logits: Network outputs, ``(N, C)``.
        targets: ``"multiclass"``: class indices ``(N,)``; ``"multilabel"``: 0/1 floats ``(N, L)``.
        feature: ``"loss"``: cross-entropy (multilabel: mean BCE-with-logits over labels);
            ``"entropy"``: entropy of the softmax (multilabel: mean binary entropy);
            ``"confidence"``: probability of the true class (multilabel: mean probability of the
            true value of each label).
        task: ``"multiclass"`` or ``"multilabel"``.

    Returns:
        Detached float32 tensor of shape ``(N,)``.

    Raises:
        ValueError: On shapes that do not match ``task`` or an unknown ``feature``/``task``.
    """
    # Autocast may hand over bf16/fp16 logits; the attack must not depend on that precision.
    logits = logits.detach().float()
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if task == "multiclass":
        if targets.shape != logits.shape[:1]:
            raise ValueError(
                f"multiclass targets must be (N,) = {tuple(logits.shape[:1])}, "
                f"got {tuple(targets.shape)}"
            )
        targets = targets.long()
        log_p = F.log_softmax(logits, dim=1)
        if feature == "loss":
            out = F.nll_loss(log_p, targets, reduction="none")
        elif feature == "entropy":
            p = log_p.exp()
            # 0 * log 0 = 0: a -inf logit would otherwise turn the entropy into NaN.
            out = -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=1)
        elif feature == "confidence":
            out = log_p.gather(1, targets[:, None]).squeeze(1).exp()
        else:
            raise ValueError(f"unknown feature {feature!r}")
    elif task == "multilabel":
        if targets.shape != logits.shape:
            raise ValueError(
                f"multilabel targets must have the logits' shape {tuple(logits.shape)}, "
                f"got {tuple(targets.shape)}"
            )
        targets = targets.float()
        if feature == "loss":
            out = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
        elif feature == "entropy":
            # logsigmoid keeps log p and log(1 - p) finite for saturated logits.
            log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
            out = -(log_p.exp() * log_p + log_q.exp() * log_q).mean(dim=1)
        elif feature == "confidence":
            p = torch.sigmoid(logits)
            out = (targets * p + (1 - targets) * (1 - p)).mean(dim=1)
        else:
            raise ValueError(f"unknown feature {feature!r}")
    else:
        raise ValueError(f"unknown task {task!r}")
    return out.float()


def _split_by_membership(features: Tensor, membership: Tensor) -> tuple[Tensor, Tensor]:
    """Validate the inputs and return (non-member, member) features, each sorted, float64, CPU.

    Sorting makes the result a function of the two multisets alone, so the order in which DDP
    ranks gather their samples cannot change it. The attack runs on the CPU so that the value does
    not depend on the device either.
    """
    if features.ndim != 1 or membership.shape != features.shape:
        raise ValueError(
            "features and membership must be 1-D of the same length, got "
            f"{tuple(features.shape)} and {tuple(membership.shape)}"
        )
    features = features.detach().to("cpu", torch.float64)
    membership = membership.detach().cpu()
    finite = torch.isfinite(features)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(features).sum())
        n_inf = int(torch.isinf(features).sum())
        raise ValueError(
            f"membership inference attack: {n_nan} NaN and {n_inf} inf features out of "
            f"{features.numel()}; the model diverged (non-finite outputs), so there is nothing "
            "meaningful to attack"
        )
    if membership.dtype != torch.bool:
        if not bool(((membership == 0) | (membership == 1)).all()):
            raise ValueError("membership must hold only 0 (non-member) and 1 (member)")
        membership = membership == 1
    members = features[membership].sort().values
    non_members = features[~membership].sort().values
    if members.numel() == 0:
        raise ValueError("membership inference attack: no members (forget-set samples) given")
    if non_members.numel() == 0:
        raise ValueError("membership inference attack: no non-members (unseen samples) given")
    return non_members, members


def _balance(
    non_members: Tensor, members: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Subsample the larger class to the size of the smaller one (seeded, order kept)."""
    n = min(non_members.numel(), members.numel())

    def take(x: Tensor) -> Tensor:
        if x.numel() == n:
            return x
        keep = torch.randperm(x.numel(), generator=generator)[:n].sort().values
        return x[keep]

    return take(non_members), take(members)


def balance_membership(
    features: Tensor, membership: Tensor, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The balanced data :func:`membership_inference_attack` fits with ``balance=True``.

    The larger of the member/non-member sets is subsampled (seeded) to the size of the smaller.
    The DLFD code attacks the unbalanced data, where a logistic regression on one weak feature
    predicts the majority class and the "MIA accuracy" is that class's share (0.5196 on RAF-DB):
    a floor, not a measurement. Balancing keeps 0.5 meaning "cannot tell".

    Args:
        features: Attack features, ``(N,)``.
        membership: 1/True for members (forget set), 0/False for non-members (unseen data).
        seed: Seed of the subsampling.

    Returns:
        ``(features, membership)``: float64 features on the CPU, non-members first, each class
        sorted by feature value, and the matching boolean membership.

    Raises:
        ValueError: On non-finite features, an empty class or malformed inputs.
    """
    non_members, members = _split_by_membership(features, membership)
    generator = torch.Generator().manual_seed(seed)
    non_members, members = _balance(non_members, members, generator)
    membership_out = torch.cat(
        [
            torch.zeros(non_members.numel(), dtype=torch.bool),
            torch.ones(members.numel(), dtype=torch.bool),
        ]
    )
    return torch.cat([non_members, members]), membership_out


def _logistic_objective(w: Tensor, b: Tensor, x: Tensor, y: Tensor, lam: float) -> Tensor:
    z = w[:, None] * x + b[:, None]
    # log(1 + exp(-z)) for members, log(1 + exp(z)) for non-members, written so that nothing
    # cancels or is cut off (softplus returns z itself above 20, zeroing well-fitted terms).
    margin = (1 - 2 * y) * z
    return torch.logaddexp(torch.zeros_like(margin), margin).sum(dim=1) + 0.5 * lam * w * w


def _fit_logistic_1d(x: Tensor, y: Tensor, c: float = _C) -> tuple[Tensor, Tensor]:
    """L2-penalised logistic regression on one feature, one fit per row, by damped Newton.

    Minimises ``sum_i log(1 + exp(z_i)) - y_i z_i + w^2 / (2 C)`` with ``z = w x + b`` and an
    unpenalised intercept: the objective of scikit-learn's ``LogisticRegression()`` (lbfgs, C=1),
    which is strictly convex, so Newton reaches the same optimum (more exactly than lbfgs' default
    tolerance). Two parameters per fit make the Hessian a 2x2 solved in closed form, so all
    cross-validation splits are fitted at once.

    Args:
        x: Features, float64 ``(S, N)``.
        y: 0/1 labels, float64 ``(S, N)``.
        c: Inverse regularisation strength of the weight.

    Returns:
        ``(w, b)``, each ``(S,)``.
    """
    lam = 1.0 / c
    n_fits = x.shape[0]
    w = x.new_zeros(n_fits)
    b = x.new_zeros(n_fits)
    f = _logistic_objective(w, b, x, y, lam)
    for _ in range(_MAX_NEWTON_STEPS):
        z = w[:, None] * x + b[:, None]
        p = torch.sigmoid(z)
        r = p - y
        h = p * (1 - p)
        g_w = (r * x).sum(1) + lam * w
        g_b = r.sum(1)
        h_ww = (h * x * x).sum(1) + lam
        h_wb = (h * x).sum(1)
        h_bb = h.sum(1)
        # Positive definite (lam > 0 and h > 0); the clamp only guards saturated sigmoids.
        det = (h_ww * h_bb - h_wb * h_wb).clamp_min(torch.finfo(x.dtype).tiny)
        d_w = (h_bb * g_w - h_wb * g_b) / det
        d_b = (h_ww * g_b - h_wb * g_w) / det
        decrease = g_w * d_w + g_b * d_b  # >= 0: Newton's direction is a descent direction
        # Backtracking (Armijo): from w = b = 0 a full Newton step can overshoot on widely spread
        # features; halving is per fit, so one hard split does not slow the others.
        t = torch.ones_like(w)
        pending = torch.ones_like(w, dtype=torch.bool)
        f_new = f
        for _ in range(_MAX_HALVINGS):
            f_try = _logistic_objective(w - t * d_w, b - t * d_b, x, y, lam)
            # The relative slack absorbs rounding once the step is at machine precision.
            ok = f_try <= f - 1e-4 * t * decrease + 1e-13 * f.abs()
            f_new = torch.where(pending & ok, f_try, f_new)
            pending = pending & ~ok
            if not bool(pending.any()):
                break
            t = torch.where(pending, t * 0.5, t)
        t = torch.where(pending, torch.zeros_like(t), t)  # no acceptable step: already optimal
        step_w, step_b = t * d_w, t * d_b
        w, b, f = w - step_w, b - step_b, torch.where(pending, f, f_new)
        small_w = step_w.abs() <= 1e-10 * (1 + w.abs())
        small_b = step_b.abs() <= 1e-10 * (1 + b.abs())
        if bool((small_w & small_b).all()):
            break
    return w, b


def _binary_auc(scores_neg: Tensor, scores_pos: Tensor) -> Tensor:
    """ROC-AUC per row, ties counted one half (Mann-Whitney U), for ``(S, n0)`` vs ``(S, n1)``."""
    neg = scores_neg.sort(dim=1).values.contiguous()
    pos = scores_pos.contiguous()
    below = torch.searchsorted(neg, pos, side="left")
    at_or_below = torch.searchsorted(neg, pos, side="right")
    wins = below.to(torch.float64) + 0.5 * (at_or_below - below).to(torch.float64)
    return wins.sum(1) / (neg.shape[1] * pos.shape[1])


def _test_counts(n_non: int, n_mem: int, test_size: float) -> tuple[int, int]:
    """Per-class test-fold sizes under the small-sample rule of membership_inference_attack."""
    if min(n_non, n_mem) < 2:
        raise ValueError(
            f"membership inference attack needs at least 2 members and 2 non-members (one to "
            f"fit, one to test), got {n_mem} members and {n_non} non-members"
        )
    # ceil per class, so both folds stay balanced when the classes are (StratifiedShuffleSplit
    # takes ceil over both classes; see membership_inference_attack); clamped so both folds hold
    # each class.
    t_non, t_mem = (min(math.ceil(test_size * n), n - 1) for n in (n_non, n_mem))
    # Below 1 / test_size samples a class gets one test sample, more than test_size asks for.
    if (
        test_size * min(n_non, n_mem) < 1
        or t_non < math.ceil(test_size * n_non)
        or t_mem < math.ceil(test_size * n_mem)
    ):
        warnings.warn(
            f"membership inference attack on only {n_mem} members and {n_non} non-members: "
            f"test_size={test_size} cannot be honoured, each test fold holds {t_mem} members "
            f"and {t_non} non-members instead; the accuracy is coarse",
            stacklevel=3,
        )
    return t_non, t_mem


def membership_inference_attack(
    features: Tensor,
    membership: Tensor,
    n_splits: int = 10,
    test_size: float = 0.1,
    seed: int = 0,
    balance: bool = True,
) -> dict[str, Tensor]:
    """Logistic-regression membership inference attack of the MUFAC benchmark / DLFD.

    Re-implements DLFD's and MUFAC's ``simple_mia``: scikit-learn ``LogisticRegression()`` (L2,
    C=1, unpenalised intercept) on the one feature, scored by ``cross_val_score`` over a
    ``StratifiedShuffleSplit(n_splits=10, test_size=0.1)``. The logistic regressions of all splits
    are fitted at once by Newton's method in float64, to the optimum; scikit-learn's lbfgs stops at
    ``tol=1e-4`` (3-14 iterations on raw losses), close enough that on the same folds its test
    predictions are the optimum's but for a sample on the threshold in a rare split. Each split
    holds out ``ceil(test_size * n_class)`` samples of each class, drawn uniformly from torch's
    generator, so individual splits differ from scikit-learn's while the mean agrees: over many
    seeds on 2,015 members and 3,556 non-members (a face-age forget set), balanced or not, the
    mean accuracy is scikit-learn's on the same data to within 0.0005 (per seed of 10 splits the
    two differ by about 0.009 from the splits alone, so compare means over many seeds).

    StratifiedShuffleSplit instead holds out ``ceil(test_size * N)`` samples of both classes
    together and shares them out by largest remainder. On balanced data with an odd test fold it
    puts the extra training sample in one class and the extra test sample in the other, so an
    attack without signal, which leans to the training majority, reads below 0.5: about 0.42 with
    15 members, 0.46 with 25, 0.49 with 55 (this function: 0.50), a gap that shrinks like
    ``1 / n`` (0.006 with 105 members, below 0.001 with 2,015). Balanced folds keep 0.5 meaning
    "cannot tell". Without balancing the means agreed at every size measured (15 to 2,015
    members).

    The result depends only on the multisets of member and non-member features (they are sorted
    first) and on ``seed``, not on their order or device.

    Small samples: fewer than 2 members or non-members (after balancing) raise ``ValueError``;
    when ``test_size`` cannot give every test fold at least one sample of each class and leave one
    to fit (e.g. fewer than 10 per class at 10 %), the test fold is set to what works (at least one
    per class, at most all but one) and a ``UserWarning`` names the counts.

    Args:
        features: One attack feature per sample, ``(N,)`` (see :func:`attack_features`).
        membership: 1/True for members (forget set D_f), 0/False for non-members (unseen D_u).
        n_splits: Number of random stratified train/test splits.
        test_size: Fraction of each class held out per split.
        seed: Seed of the balancing subsample and of the splits.
        balance: Subsample the larger class to the size of the smaller first (see
            :func:`balance_membership`). ``False`` reproduces the DLFD code, whose attack on
            unbalanced data reports the majority-class share.

    Returns:
        ``{"accuracy": mean test accuracy over splits, "auc": mean ROC-AUC of the attack's
        decision scores on the test folds}``, float32 scalars on ``features``' device.

    Raises:
        ValueError: On NaN/inf features (a diverged model), an empty member or non-member set,
            fewer than 2 samples in a class, malformed membership, or invalid ``n_splits`` /
            ``test_size``.
    """
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    device = features.device
    non_members, members = _split_by_membership(features, membership)
    generator = torch.Generator().manual_seed(seed)
    if balance:
        non_members, members = _balance(non_members, members, generator)
    t_non, t_mem = _test_counts(non_members.numel(), members.numel(), test_size)

    def split(x: Tensor, n_test: int) -> tuple[Tensor, Tensor]:
        perm = torch.rand(n_splits, x.numel(), generator=generator).argsort(dim=1)
        shuffled = x[perm]
        return shuffled[:, n_test:], shuffled[:, :n_test]

    train_non, test_non = split(non_members, t_non)
    train_mem, test_mem = split(members, t_mem)
    x = torch.cat([train_non, train_mem], dim=1)
    y = torch.cat([torch.zeros_like(train_non), torch.ones_like(train_mem)], dim=1)
    w, b = _fit_logistic_1d(x, y)

    z_non = w[:, None] * test_non + b[:, None]
    z_mem = w[:, None] * test_mem + b[:, None]
    # scikit-learn predicts the positive class only for a strictly positive decision value.
    correct = (z_mem > 0).sum(1) + (z_non <= 0).sum(1)
    accuracy = (correct.to(torch.float64) / (t_non + t_mem)).mean()
    auc = _binary_auc(z_non, z_mem).mean()
    return {
        "accuracy": accuracy.to(device=device, dtype=torch.float32),
        "auc": auc.to(device=device, dtype=torch.float32),
    }


def forgetting_score(mia_accuracy: Tensor | float) -> Tensor:
    """Forgetting score of the MUFAC benchmark / DLFD, ``FS = 2 * |MIA - 0.5|``.

    0 means the attacker cannot tell forget-set samples from unseen ones, 1 that it always can.
    This is the **paper scale** (the DLFD and MUFAC papers'), and every forgetting score in
    unlearn_pl (logged metrics, reports, thresholds, tables) is on it. The DLFD and MUFAC *code*
    prints and thresholds ``|MIA - 0.5|``, half of this, so double thresholds taken from that
    code: DLFD's switch threshold 0.15 on MUFAC is 0.30 here (the default of
    :class:`~unlearn_pl.callbacks.DynamicForgetting`), its 0.23 on RAF-DB is 0.46.

    Args:
        mia_accuracy: MIA accuracy in ``[0, 1]``.

    Returns:
        The forgetting score, a tensor.
    """
    return 2 * (torch.as_tensor(mia_accuracy) - 0.5).abs()


def nomus(accuracy: Tensor | float, forgetting_score: Tensor | float) -> Tensor:
    """NoMUS (normalised machine unlearning score) of the MUFAC benchmark.

    ``0.5 * (accuracy + (1 - FS))`` with test accuracy and the forgetting score FS. NoMUS
    alone rewards a forgetting score below retrain's (retrain's own FS is not 0), so always
    report retrain's accuracy, FS and NoMUS beside it.

    Args:
        accuracy: Test (unseen) accuracy in ``[0, 1]``.
        forgetting_score: Forgetting score (paper scale, see :func:`forgetting_score`).

    Returns:
        NoMUS in ``[0, 1]``, a tensor.
    """
    return 0.5 * (torch.as_tensor(accuracy) + (1 - torch.as_tensor(forgetting_score)))
