"""Per-example privacy tests of an unlearned network against reference networks.

Each forget example's signal under the unlearned network is compared with the distribution of
that example's signal under reference networks that never saw it (the "bank"): offline LiRA
(Carlini et al. 2022), offline RMIA (Zarifzadeh et al. 2024) and the retrain-likeness z-test, the
one-network counterpart of the ε-score in :mod:`unlearn_pl.metrics.epsilon`. Functions work on
tensors on any device, vectorised over examples; the metrics accumulate cached signals by sample
id, so a DDP run gives the single-process result exactly.

Shapes: one network's signals are ``(M,)`` over ``M`` examples; a bank of ``K`` networks is
``(K, M)``, networks first.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from unlearn_pl.metrics.attack import _binary_auc
from unlearn_pl.metrics.samples import _cat_state, _once_per_key

__all__ = [
    "LiRA",
    "RMIA",
    "RetrainLikeness",
    "attack_summary",
    "lira_scores",
    "logit_confidence",
    "retrain_likeness",
    "rmia_scores",
]

# Below this many references one variance pooled over examples beats per-example estimates
# (Carlini et al. 2022, offline LiRA with ``fix_variance``).
_PER_EXAMPLE_VARIANCE_FROM = 16


def _check_finite(name: str, x: Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: {bad} of {x.numel()} values are NaN or inf; the network's "
                         "outputs diverged or the signal cache is incomplete, recompute them")


def _bank(target: Tensor, references: Tensor, min_k: int, what: str) -> tuple[Tensor, Tensor]:
    """Validate one network's ``(M,)`` signals and a ``(K, M)`` bank; float64 copies."""
    if target.ndim != 1 or references.ndim != 2 or references.shape[1] != target.shape[0]:
        raise ValueError(f"{what}: target must be (M,) and references (K, M) with the same M, "
                         f"got {tuple(target.shape)} and {tuple(references.shape)}")
    if references.shape[0] < min_k:
        raise ValueError(f"{what} needs at least {min_k} reference networks, got "
                         f"{references.shape[0]}; train more references (retrain seeds)")
    if target.numel() == 0:
        raise ValueError(f"{what}: no examples given")
    _check_finite(f"{what} target signals", target)
    _check_finite(f"{what} reference signals", references)
    return target.detach().double(), references.detach().double()


def logit_confidence(logits: Tensor, targets: Tensor,
                     task: Literal["multiclass", "multilabel"] = "multiclass") -> Tensor:
    """Logit-scaled true-class confidence φ, the per-example signal of every test here.

    Multiclass: ``φ = log p_y − log(1 − p_y) = z_y − logsumexp_{k≠y} z_k`` (Carlini et al. 2022,
    Sec. IV-C), computed from the logits without forming ``p``, so it stays finite for saturated
    networks. Multilabel: the mean over labels of the binary form ``(2 t_l − 1) z_l``. Note
    ``sigmoid(φ) = p_y`` exactly (multiclass), which is how :class:`RMIA` reads the same cache.

    Args:
        logits: Network outputs, ``(N, C)`` with ``C ≥ 2`` (multiclass) or ``(N, L)``.
        targets: Class indices ``(N,)`` or 0/1 labels ``(N, L)``.
        task: ``"multiclass"`` or ``"multilabel"``.

    Returns:
        Detached ``(N,)`` tensor, float32 or the logits' wider float dtype.
    """
    logits = logits.detach()
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if task == "multiclass":
        if targets.shape != logits.shape[:1] or logits.shape[1] < 2:
            raise ValueError(f"multiclass needs logits (N, C >= 2) and targets (N,), got "
                             f"{tuple(logits.shape)} and {tuple(targets.shape)}")
        true = torch.nn.functional.one_hot(targets.long(), logits.shape[1]).bool()
        others = logits.masked_fill(true, -math.inf).logsumexp(dim=1)
        return logits[true] - others
    if task == "multilabel":
        if targets.shape != logits.shape:
            raise ValueError(f"multilabel targets must have the logits' shape "
                             f"{tuple(logits.shape)}, got {tuple(targets.shape)}")
        return ((2 * targets.to(logits.dtype) - 1) * logits).mean(dim=1)
    raise ValueError(f"unknown task {task!r}; use 'multiclass' or 'multilabel'")


def attack_summary(member_scores: Tensor, nonmember_scores: Tensor) -> dict[str, Tensor]:
    """ROC summary of a membership score (higher = more member-like).

    AUC counts ties one half. TPR at FPR ``x`` is the largest TPR of a threshold whose FPR is
    strictly below ``x`` (the LiRA code's ``tpr[fpr < x][-1]``); with fewer than ``1/x``
    non-members no false positive is allowed.

    Args:
        member_scores: Scores of members (the forget set), ``(n1,)``.
        nonmember_scores: Scores of non-members (held-out samples), ``(n0,)``.

    Returns:
        ``"auc"``, ``"tpr_at_1pct_fpr"`` and ``"tpr_at_0.1pct_fpr"`` (float64 scalars).
    """
    for name, s in (("member_scores", member_scores), ("nonmember_scores", nonmember_scores)):
        if s.ndim != 1 or s.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-D tensor, got {tuple(s.shape)}")
        _check_finite(name, s)
    pos, neg = member_scores.detach().double(), nonmember_scores.detach().double()
    neg_desc = neg.sort(descending=True).values
    n0 = neg.numel()
    out = {"auc": _binary_auc(neg[None], pos[None])[0]}
    for key, fpr in (("tpr_at_1pct_fpr", 0.01), ("tpr_at_0.1pct_fpr", 0.001)):
        # The most false positives k with k / n0 < fpr, in the same float arithmetic as sklearn.
        k = int((torch.arange(n0 + 1, dtype=torch.float64) / n0 < fpr).sum()) - 1
        out[key] = (pos > neg_desc[k]).double().mean()
    return out


def _scale(references: Tensor, fixed_variance: bool | None) -> Tensor:
    """Per-example (``(M,)``) or pooled (scalar) standard deviation of a ``(K, M)`` bank."""
    if fixed_variance is None:
        fixed_variance = references.shape[0] < _PER_EXAMPLE_VARIANCE_FROM
    variance = references.var(dim=0)  # unbiased, per example
    sigma = variance.mean().sqrt() if fixed_variance else variance.sqrt()
    return sigma.clamp_min(torch.finfo(sigma.dtype).tiny)


def lira_scores(target: Tensor, references: Tensor, fixed_variance: bool | None = None) -> Tensor:
    """Offline LiRA statistic ``z = (φ_target − μ) / σ`` per example (Carlini et al. 2022, Alg. 1).

    ``μ`` is the mean of the references' signals for that example; ``σ`` their standard
    deviation, per example or pooled over examples (root of the mean per-example variance; the
    LiRA code's ``np.std`` over everything also counts the spread between examples). Carlini's
    one-sided offline score is ``Λ = Φ(z)``; ``z`` ranks the same without saturating at 1.

    Args:
        target: φ of each example under the attacked network, ``(M,)``.
        references: φ under ``K ≥ 2`` networks that never trained on the examples, ``(K, M)``.
        fixed_variance: Pool σ over examples; ``None``: pooled when ``K < 16``.

    Returns:
        ``z``, float64 ``(M,)``: large when the target fits the example better than references.
    """
    target, references = _bank(target, references, 2, "LiRA")
    return (target - references.mean(dim=0)) / _scale(references, fixed_variance)


def retrain_likeness(target: Tensor, references: Tensor, band: float = 0.95,
                     fixed_variance: bool | None = None,
                     floor: Tensor | None = None) -> dict[str, Tensor]:
    """Where each example's signal falls in the references' distribution of it (a z-test).

    ``z`` as in :func:`lira_scores`; an example is outside the references' central ``band`` when
    ``|z| > Φ⁻¹((1 + band) / 2)``. Unlike a membership attack, which compares forget with
    held-out samples of the same classes, this sees a class that was never forgotten. Report it
    beside ``floor``: a held-out retrain network (not in the bank), whose fraction is what an
    exact unlearner gets, not ``1 − band``.

    Args:
        target: φ of each forget example under the unlearned network, ``(M,)``.
        references: φ under ``K ≥ 2`` retrain networks, ``(K, M)``.
        band: Central probability of the references' band, in ``(0, 1)``.
        fixed_variance: As in :func:`lira_scores`.
        floor: φ under a held-out retrain network, ``(M,)``.

    Returns:
        ``"z"`` ``(M,)``, ``"outside"`` (fraction outside the band), ``"mean_abs_z"``; with
        ``floor`` also ``"floor_z"``, ``"floor_outside"`` and ``"floor_mean_abs_z"``.
    """
    if not 0.0 < band < 1.0:
        raise ValueError(f"band must be in (0, 1), e.g. 0.95, got {band}")
    if floor is not None and floor.shape != target.shape:
        raise ValueError(f"floor must have the target's shape {tuple(target.shape)}, got "
                         f"{tuple(floor.shape)}")
    cut = torch.special.ndtri(torch.tensor(0.5 + band / 2, dtype=torch.float64))
    out: dict[str, Tensor] = {}
    for prefix, signal in (("", target), ("floor_", floor)):
        if signal is None:
            continue
        z = lira_scores(signal, references, fixed_variance)
        out |= {f"{prefix}z": z, f"{prefix}outside": (z.abs() > cut.to(z.device)).double().mean(),
                f"{prefix}mean_abs_z": z.abs().mean()}
    return out


def rmia_scores(target_p: Tensor, reference_p: Tensor, population_target_p: Tensor,
                population_reference_p: Tensor, a: float = 0.3, gamma: float = 1.0,
                scored_ids: Tensor | None = None,
                population_ids: Tensor | None = None) -> Tensor:
    """Offline RMIA score per example (Zarifzadeh, Liu & Shokri, ICML 2024, Eq. 4 and App. B).

    ``p(x) = ½[(1 + a)·mean_ref p(x|θ_ref) + (1 − a)]``, ``ratio(x) = p(x|θ) / p(x)``, and the
    score is the fraction of population samples ``z`` with ``ratio(x) / ratio(z) > γ``.

    Args:
        target_p: True-class probability of each scored example under the target, ``(M,)``.
        reference_p: The same under ``K ≥ 1`` reference networks, ``(K, M)``.
        population_target_p: Target's true-class probability of population samples, ``(P,)``.
        population_reference_p: The references' probabilities of them, ``(K, P)``.
        a: Offline coefficient in ``[0, 1]`` (the paper's default 0.3; tune on a paired model).
        gamma: Likelihood-ratio threshold ``γ > 0``.
        scored_ids: Ids of scored samples in the population's id space (e.g. the held-out
            ones); one shared with ``population_ids`` is an error.
        population_ids: Ids of the population samples.

    Returns:
        Scores in ``[0, 1]``, float64 ``(M,)``; higher = more member-like.
    """
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"RMIA offline coefficient a must be in [0, 1] (paper: 0.3), got {a}")
    if not gamma > 0:
        raise ValueError(f"RMIA gamma must be > 0 (paper: 1), got {gamma}")
    target, refs = _bank(target_p, reference_p, 1, "RMIA")
    pop, pop_refs = _bank(population_target_p, population_reference_p, 1, "RMIA population")
    if pop_refs.shape[0] != refs.shape[0]:
        raise ValueError(f"RMIA: {refs.shape[0]} references for the scored samples but "
                         f"{pop_refs.shape[0]} for the population; use the same networks")
    if scored_ids is not None and population_ids is not None:
        shared = torch.isin(population_ids, scored_ids)
        if bool(shared.any()):
            raise ValueError(f"RMIA: {int(shared.sum())} population samples are also scored "
                             f"(e.g. id {int(population_ids[shared][0])}); draw the population "
                             "from samples disjoint from the scored non-members")
    for name, p in (("probabilities", target), ("reference probabilities", refs),
                    ("population probabilities", pop), ("population refs", pop_refs)):
        if bool(((p < 0) | (p > 1)).any()):
            raise ValueError(f"RMIA {name} must lie in [0, 1]; pass sigmoid(φ), not φ")

    def ratio(p: Tensor, p_refs: Tensor) -> Tensor:
        return p / (0.5 * ((1 + a) * p_refs.mean(dim=0) + (1 - a)))

    ratio_z = ratio(pop, pop_refs).sort().values
    # ratio(x) / ratio(z) > γ  ⇔  ratio(z) < ratio(x) / γ: count by binary search, O(M log P).
    below = torch.searchsorted(ratio_z, (ratio(target, refs) / gamma).contiguous(), side="left")
    return below.double() / ratio_z.numel()


class _SignalStates(Metric):
    """Cached signals keyed by (split, sample id): one row per sample, de-duplicated at compute.

    A DDP sampler pads the last batch with repeats; they are counted once, keeping the smallest
    value of each column (independent of the order ranks are gathered in), and rows come back
    sorted by (split, id), so compute sees exactly the single-process input.
    """

    is_differentiable = False
    full_state_update = False
    splits: tuple[str, ...] = ("all",)

    ids: list[Tensor]
    split_codes: list[Tensor]
    rows: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("split_codes", default=[], dist_reduce_fx="cat")
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Accumulate like ``update``; a per-batch value would be meaningless, so none."""
        self.update(*args, **kwargs)

    def _add(self, ids: Tensor, split: str, columns: list[Tensor]) -> None:
        if split not in self.splits:
            raise ValueError(f"split must be one of {self.splits}, got {split!r}")
        if ids.ndim != 1 or any(c.shape[0] != ids.numel() for c in columns):
            raise ValueError(f"ids must be (B,) and each signal have B = {ids.numel()} columns, "
                             f"got ids {tuple(ids.shape)}, signals "
                             f"{[tuple(c.shape) for c in columns]}")
        rows = torch.cat([c.detach().double().reshape(ids.numel(), -1) for c in columns], dim=1)
        if self.rows and self.rows[0].shape[1] != rows.shape[1]:
            raise ValueError(f"every update must give the same networks: {rows.shape[1]} "
                             f"columns now, {self.rows[0].shape[1]} before")
        self.ids.append(ids.detach().long())
        self.split_codes.append(torch.full_like(ids.detach().long(), self.splits.index(split)))
        self.rows.append(rows)

    def _gathered(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(ids, split codes, rows)`` with each (split, id) once, sorted by (split, id)."""
        ids = _cat_state(self.ids).long()
        if ids.numel() == 0:
            raise ValueError(f"{type(self).__name__}.compute() called before any update")
        codes = _cat_state(self.split_codes).long()
        rows = _cat_state(self.rows).double().reshape(ids.numel(), -1)
        # One integer key per (split, id), ordered by split then id (a 1-D unique is fast).
        low = ids.min()
        span = ids.max() - low + 1
        keys, kept = _once_per_key(codes * span + (ids - low), rows)
        return keys % span + low, keys // span, kept


def _attack_report(scores: Tensor, ids: Tensor, member: Tensor) -> dict[str, Tensor]:
    """Attack summary, per-example scores and the forget set's most exposed decile."""
    out = attack_summary(scores[member], scores[~member])
    forget_scores, forget_ids = scores[member], ids[member]
    decile = (int(member.sum()) + 9) // 10  # ceil(n / 10) in integers
    order = forget_scores.argsort(descending=True, stable=True)[:decile]
    return {**out, "scores": scores, "ids": ids, "member": member,
            "exposed_ids": forget_ids[order], "exposed_scores": forget_scores[order]}


class LiRA(_SignalStates):
    """Offline LiRA against a bank of ``K`` reference networks (see :func:`lira_scores`).

    Feed each batch's cached signals with ``split="forget"`` (members) or ``"heldout"``
    (non-members no reference saw). ``compute`` returns :func:`attack_summary` of the ``z``
    scores, ``"scores"``/``"ids"``/``"member"`` per example (sorted by split, then id) and the
    forget set's most exposed decile (``"exposed_ids"``, ``"exposed_scores"``). Report the same
    with a held-out retrain network as target: that, not 0.5, is the floor.

    Args:
        fixed_variance: Pool σ over examples; ``None``: pooled when ``K < 16``.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better: bool | None = False
    splits = ("heldout", "forget")

    def __init__(self, fixed_variance: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fixed_variance = fixed_variance

    def update(self, ids: Tensor, target: Tensor, references: Tensor,  # type: ignore[override]
               split: Literal["forget", "heldout"]) -> None:
        """Add a batch: ``ids`` ``(B,)``, φ under the target ``(B,)`` and the bank ``(K, B)``."""
        _bank(target, references, 2, "LiRA")
        self._add(ids, split, [target[:, None], references.T])

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        ids, codes, rows = self._gathered()
        z = lira_scores(rows[:, 0], rows[:, 1:].T, self.fixed_variance)
        return _attack_report(z, ids, codes == 1)


class RMIA(_SignalStates):
    """Offline RMIA with a population set (see :func:`rmia_scores`), fed cached φ.

    Splits: ``"forget"`` (members), ``"heldout"`` (non-members) and ``"population"`` (samples in
    no training set). ``p = sigmoid(φ)`` is the true-class probability. Held-out and population
    ids must index the same dataset; a shared id is an error. ``compute`` returns what
    :class:`LiRA` does, with RMIA scores.

    Args:
        a: Offline coefficient in ``[0, 1]``.
        gamma: Likelihood-ratio threshold.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better: bool | None = False
    splits = ("heldout", "forget", "population")

    def __init__(self, a: float = 0.3, gamma: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= a <= 1.0 or not gamma > 0:
            raise ValueError(f"need 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
        self.a, self.gamma = a, gamma

    def update(self, ids: Tensor, target: Tensor, references: Tensor,  # type: ignore[override]
               split: Literal["forget", "heldout", "population"]) -> None:
        """Add a batch: ``ids`` ``(B,)``, φ under the target ``(B,)`` and the bank ``(K, B)``."""
        _bank(target, references, 1, "RMIA")
        self._add(ids, split, [target[:, None], references.T])

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        ids, codes, rows = self._gathered()
        p = torch.sigmoid(rows)
        scored, pop = codes != 2, codes == 2
        if not bool(pop.any()):
            raise ValueError("RMIA needs population samples: update(..., split='population')")
        scores = rmia_scores(p[scored, 0], p[scored, 1:].T, p[pop, 0], p[pop, 1:].T,
                             self.a, self.gamma, ids[codes == 0], ids[pop])
        return _attack_report(scores, ids[scored], codes[scored] == 1)


class RetrainLikeness(_SignalStates):
    """The retrain-likeness z-test of :func:`retrain_likeness`, accumulated by sample id.

    Feed forget examples' φ under the unlearned network, the bank and, optionally, a held-out
    retrain network (``floor``, in every update or in none). ``compute`` returns the dict of
    :func:`retrain_likeness` plus ``"ids"``.

    Args:
        band: Central probability of the references' band.
        fixed_variance: Pool σ over examples; ``None``: pooled when ``K < 16``.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better: bool | None = False

    def __init__(self, band: float = 0.95, fixed_variance: bool | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < band < 1.0:
            raise ValueError(f"band must be in (0, 1), e.g. 0.95, got {band}")
        self.band, self.fixed_variance = band, fixed_variance

    def update(self, ids: Tensor, target: Tensor, references: Tensor,  # type: ignore[override]
               floor: Tensor | None = None) -> None:
        """Add a batch: ``ids`` ``(B,)``, φ ``(B,)``, bank ``(K, B)``, optional floor ``(B,)``."""
        _bank(target, references, 2, "retrain-likeness")
        if floor is not None:
            _check_finite("retrain-likeness floor signals", floor)
        floor_column = torch.full_like(target, math.nan) if floor is None else floor
        self._add(ids, "all", [target[:, None], floor_column[:, None], references.T])

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        ids, _, rows = self._gathered()
        has_floor = ~torch.isnan(rows[:, 1])
        if bool(has_floor.any()) and not bool(has_floor.all()):
            raise ValueError("give floor signals in every update or in none")
        floor = rows[:, 1] if bool(has_floor.all()) else None
        out = retrain_likeness(rows[:, 0], rows[:, 2:].T, self.band, self.fixed_variance, floor)
        return {**out, "ids": ids}
