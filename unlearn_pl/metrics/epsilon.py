"""Distribution-level tests over N unlearned and N retrained networks: the ε-score, ToW, KLOM.

The ε-score is the estimator of the NeurIPS 2023 unlearning competition (Triantafillou et al.
2024, ``google-deepmind/unlearning_evaluation`` ``metric.py``), vectorised over examples and
device-agnostic. Shapes: ``(N, M)``, networks first, one column per forget example.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from unlearn_pl.metrics.privacy import _check_finite, _SignalStates

__all__ = [
    "DELTA",
    "EPSILON_CAP",
    "EpsilonScore",
    "epsilon_points",
    "epsilon_score",
    "final_score",
    "klom",
    "tow",
]

#: δ of the (ε, δ) test in the competition's metric.
DELTA = 1e-5
#: The largest ε reported (the reference's ``EPSILON_CAP``); points reach 0 long before.
EPSILON_CAP = 50.0
# Double-threshold window of the reference: right threshold within ±2 of the peakier sample's
# maximum, interval length within ±2 of its range.
_BUFFER = 2.0
# Ranges differing by more than 100× count as ε = cap (the reference's "very peaky" case).
_PEAKY_RATIO = 0.01
# Elements per (rows, T, T) block of the double-threshold search: bounds memory, any M.
_BLOCK = 2**20


def _pair(unlearned: Tensor, retrained: Tensor, min_n: int, what: str) -> tuple[Tensor, Tensor]:
    if unlearned.ndim != 2 or unlearned.shape != retrained.shape or unlearned.shape[1] == 0:
        raise ValueError(f"{what}: unlearned and retrained must both be (N, M), M > 0, got "
                         f"{tuple(unlearned.shape)} and {tuple(retrained.shape)}")
    if unlearned.shape[0] < min_n:
        raise ValueError(f"{what} needs N >= {min_n} unlearned and retrained networks, got "
                         f"{unlearned.shape[0]}; run more seeds of both")
    _check_finite(f"{what} unlearned signals", unlearned)
    _check_finite(f"{what} retrained signals", retrained)
    return unlearned.detach().double(), retrained.detach().double()


def _median(x: Tensor) -> Tensor:
    """Median over dim 0, the mean of the two middle values for even counts (``np.median``)."""
    s = x.sort(dim=0).values
    return 0.5 * (s[(x.shape[0] - 1) // 2] + s[x.shape[0] // 2])


def _threshold_epsilon(fp: Tensor, fn: Tensor, n: int, delta: float) -> Tensor:
    """ε of each threshold from false-positive/negative counts out of ``n``; ``-inf`` = ignored.

    Both rates 0: perfect separation, ``inf``. Exactly one 0: ignored (too few networks to
    tell). Otherwise ``max(log(1 − δ − FPR) − log FNR, log(1 − δ − FNR) − log FPR)`` over the
    terms whose first logarithm is defined, clipped at 0.
    """
    fpr, fnr = fp.double() / n, fn.double() / n
    nan = torch.full_like(fpr, math.nan)
    t1 = torch.where(fpr < 1 - delta, torch.log(1 - delta - fpr) - torch.log(fnr), nan)
    t2 = torch.where(fnr < 1 - delta, torch.log(1 - delta - fnr) - torch.log(fpr), nan)
    eps = torch.fmax(t1, t2).clamp_min(0)
    ignored = ((fp == 0) ^ (fn == 0)) | torch.isnan(eps)
    eps = torch.where(ignored, torch.full_like(eps, -math.inf), eps)
    return torch.where((fp == 0) & (fn == 0), torch.full_like(eps, math.inf), eps)


def _epsilon_rows(pos: Tensor, neg: Tensor, delta: float) -> Tensor:
    """Uncapped ε per row of ``(m, N)`` samples; ``pos`` has the larger median."""
    m, n = pos.shape
    t = 2 * n
    v, order = torch.cat([pos, neg], dim=1).sort(dim=1, stable=True)  # all thresholds, (m, T)
    # Counts of pos/neg values below each threshold from one sort: exclusive (<) counts are
    # read at the first of a run of equal values, inclusive (<=) counts at its last.
    is_pos = (order < n).long()
    at = torch.arange(t, device=v.device).expand(m, t)
    starts = torch.ones_like(v, dtype=torch.bool)
    starts[:, 1:] = v[:, 1:] != v[:, :-1]
    ends = starts.roll(-1, dims=1)
    ends[:, -1] = True
    first = torch.where(starts, at, 0).cummax(dim=1).values  # index of the run's first value
    last = torch.where(ends, at, t - 1).flip(1).cummin(dim=1).values.flip(1)
    incl = is_pos.cumsum(dim=1)
    lt_pos, le_pos = (incl - is_pos).gather(1, first), incl.gather(1, last)
    lt_neg, le_neg = first - lt_pos, last + 1 - le_pos

    # ε depends only on the two counts (fp, fn): one lookup in an (n + 1)² table, whose extra
    # last entry -inf stands for "not a threshold of the family".
    counts = torch.arange(n + 1, device=v.device)
    table = _threshold_epsilon(counts[:, None], counts[None, :], n, delta).flatten()
    table = torch.cat([table, table.new_full((1,), -math.inf)])
    sentinel = table.numel() - 1

    # Single thresholds, "positive if φ >= t": every rate pair of a grid on [min, max].
    single = table[(n - lt_neg) * (n + 1) + lt_pos].amax(dim=1)

    # Double thresholds, "the peakier sample if t_l <= φ <= t_r", for every interval [v_i, v_j]:
    # fp = #wide in it = le_wide[j] - lt_wide[i], fn = n - (le_peak[j] - lt_peak[i]).
    range_pos, range_neg = pos.amax(1) - pos.amin(1), neg.amax(1) - neg.amin(1)
    swap = (range_pos >= range_neg)[:, None]
    lt_peak, lt_wide = torch.where(swap, lt_neg, lt_pos), torch.where(swap, lt_pos, lt_neg)
    le_peak, le_wide = torch.where(swap, le_neg, le_pos), torch.where(swap, le_pos, le_neg)
    # The reference searches t_r in [min_peak + w − 2, max_peak + 2] and t_l in
    # [t_r − w − 2, t_r − w + 2] (w: the peakier range). [v_i, v_j] is reachable iff some t_r in
    # [v_j, next_j) and t_l in (prev_i, v_i] satisfy that; prev/next: the neighbouring distinct
    # values. Conditions that always hold (prev < v < next, r_lo < r_hi) are left out.
    w = torch.minimum(range_pos, range_neg)[:, None]
    peak = torch.where(swap, neg, pos)
    r_lo = peak.amin(1, keepdim=True) + w - _BUFFER
    r_hi = peak.amax(1, keepdim=True) + _BUFFER
    inf = torch.full_like(v, math.inf)
    prev = torch.where(first > 0, v.gather(1, (first - 1).clamp_min(0)), -inf)
    nxt = torch.where(last < t - 1, v.gather(1, (last + 1).clamp_max(t - 1)), inf)
    # Conditions on i or j alone push that row's or column's index past the sentinel.
    far = 2 * table.numel()
    ok_i = (r_lo <= v + w + _BUFFER) & (prev + w - _BUFFER < r_hi)
    ok_j = (v <= r_hi) & (r_lo < nxt)
    index_i = torch.where(ok_i, n - lt_wide * (n + 1) + lt_peak, far)[:, :, None]
    index_j = torch.where(ok_j, le_wide * (n + 1) - le_peak, far)[:, None, :]
    vi, vj = v[:, :, None], v[:, None, :]
    pair = ((vi <= vj) & (vj <= vi + w[:, :, None] + _BUFFER)
            & ((prev + w - _BUFFER)[:, :, None] < nxt[:, None, :]))
    index = torch.where(pair, (index_i + index_j).clamp(0, sentinel), sentinel)
    best = torch.maximum(single, table[index].amax(dim=(1, 2)))
    return torch.where(best == -math.inf, torch.zeros_like(best), best)  # nothing resolvable


def epsilon_points(epsilon: Tensor, num_networks: int) -> Tensor:
    """Competition points per example: ε in ``[0, ½)`` → 1, ``[½, 1)`` → ½, ``[1, 1½)`` → ¼, …

    Zero at or above the largest ε that ``num_networks`` resolve, ``ceil(ln(N − 1))``.

    Args:
        epsilon: Per-example ε ≥ 0.
        num_networks: ``N``, the unlearned (and retrained) networks per example (≥ 2).

    Returns:
        Points, float64, ``epsilon``'s shape.
    """
    if num_networks < 2:
        raise ValueError(f"num_networks must be >= 2, got {num_networks}")
    resolvable = math.ceil(math.log(num_networks - 1))
    epsilon = epsilon.double()
    points = 0.5 ** torch.floor(2 * epsilon)
    return torch.where(epsilon < resolvable, points, torch.zeros_like(points))


def epsilon_score(unlearned: Tensor, retrained: Tensor, delta: float = DELTA,
                  cap: float = EPSILON_CAP) -> dict[str, Tensor]:
    """Per-example ε and forget quality of the NeurIPS 2023 unlearning competition.

    Per example, the sample with the larger median is "positive". ε is the largest, over
    single thresholds ("positive if φ ≥ t") and the reference's window of double thresholds
    ("peakier sample if t_l ≤ φ ≤ t_r"), of the per-threshold ε of the competition's
    ``metric.py`` (see ``_threshold_epsilon``), capped at ``cap``; ranges differing by over
    100× give ``cap``. Thresholds are searched exactly (every interval of the pooled values)
    where the reference scans a 0.01 grid, whose ε can be lower where that grid misses a gap.

    Args:
        unlearned: φ of each forget example under ``N ≥ 4`` unlearned networks, ``(N, M)``.
        retrained: φ under ``N`` retrained networks, ``(N, M)``.
        delta: δ of the (ε, δ) test.
        cap: Largest ε reported.

    Returns:
        ``"epsilon"`` and ``"points"`` ``(M,)``, ``"forget_quality"`` F (mean points) and
        ``"resolvable_epsilon"`` ``ceil(ln(N − 1))``, float64.
    """
    if not 0.0 < delta < 1.0 or not cap > 0:
        raise ValueError(f"need 0 < delta < 1 and cap > 0, got delta={delta}, cap={cap}")
    u, r = _pair(unlearned, retrained, 4, "epsilon score")
    n = u.shape[0]
    retrain_positive = _median(r) > _median(u)
    pos = torch.where(retrain_positive, r, u).T.contiguous()
    neg = torch.where(retrain_positive, u, r).T.contiguous()
    rows = max(1, _BLOCK // (2 * n) ** 2)
    blocks = zip(pos.split(rows), neg.split(rows), strict=True)
    eps = torch.cat([_epsilon_rows(p, q, delta) for p, q in blocks])
    ranges = torch.stack([pos.amax(1) - pos.amin(1), neg.amax(1) - neg.amin(1)])
    peaky = ranges.amin(0) / ranges.amax(0) < _PEAKY_RATIO  # 0/0 (both constant) is not peaky
    eps = torch.where(peaky, torch.full_like(eps, cap), eps.clamp(0, cap))
    points = epsilon_points(eps, n)
    resolvable = torch.tensor(float(math.ceil(math.log(n - 1))), dtype=torch.float64)
    return {"epsilon": eps, "points": points, "forget_quality": points.mean(),
            "resolvable_epsilon": resolvable.to(eps.device)}


def final_score(forget_quality: Tensor | float, retain_accuracy: Tensor | float,
                retrain_retain_accuracy: Tensor | float, test_accuracy: Tensor | float,
                retrain_test_accuracy: Tensor | float) -> Tensor:
    """Competition final score ``F × (RA_u / RA_r) × (TA_u / TA_r)``.

    Args:
        forget_quality: F of :func:`epsilon_score`.
        retain_accuracy: Retain accuracy of the unlearned networks (scalar or one per network;
            averaged).
        retrain_retain_accuracy: Retain accuracy of the retrained networks.
        test_accuracy: Test accuracy of the unlearned networks.
        retrain_test_accuracy: Test accuracy of the retrained networks.

    Returns:
        The score, a float64 scalar.
    """
    values = [torch.as_tensor(x, dtype=torch.float64).mean() for x in (
        forget_quality, retain_accuracy, retrain_retain_accuracy, test_accuracy,
        retrain_test_accuracy)]
    if any(not 0.0 <= float(x) <= 1.0 for x in values) or float(values[2]) * float(values[4]) == 0:
        raise ValueError("forget quality and accuracies must lie in [0, 1] (fractions, not %), "
                         "and the retrained accuracies be > 0")
    f, ra, rra, ta, rta = values
    return f * (ra / rra) * (ta / rta)


def tow(unlearned_accuracy: Tensor, retrain_accuracy: Tensor,
        confidence: float = 0.95) -> dict[str, Tensor]:
    """Tug of War (Zhao et al., NeurIPS 2024): ``Π_d (1 − |acc_u,d − acc_r,d|)`` per seed.

    ``d`` runs over the splits given (forget, retain and test in the paper). The interval is
    Student's t over seeds; with one seed its bounds are NaN.

    Args:
        unlearned_accuracy: Accuracies in ``[0, 1]``, ``(S, D)`` for ``S`` seeds, or ``(D,)``.
        retrain_accuracy: Retrain's, ``(S, D)`` (paired by seed) or ``(D,)``.
        confidence: Coverage of the interval, in ``(0, 1)``.

    Returns:
        ``"tow"`` (mean over seeds), ``"per_seed"`` ``(S,)``, ``"ci_low"``, ``"ci_high"``.
    """
    u = torch.as_tensor(unlearned_accuracy, dtype=torch.float64)
    r = torch.as_tensor(retrain_accuracy, dtype=torch.float64)
    u = u[None] if u.ndim == 1 else u
    if u.ndim != 2 or r.shape not in (u.shape, u.shape[1:]) or not 0 < confidence < 1:
        raise ValueError(f"need unlearned (S, D) or (D,), retrain (S, D) or (D,) and "
                         f"0 < confidence < 1, got {tuple(u.shape)}, {tuple(r.shape)}, "
                         f"{confidence}")
    if bool(((u < 0) | (u > 1) | (r < 0) | (r > 1) | u.isnan() | r.isnan()).any()):
        raise ValueError("accuracies must lie in [0, 1] (fractions, not %)")
    per_seed = (1 - (u - r).abs()).prod(dim=1)
    mean, s = per_seed.mean(), per_seed.numel()
    half = torch.tensor(math.nan, dtype=torch.float64)
    if s > 1:
        from scipy.stats import t  # scipy ships with scikit-learn, a dependency

        half = float(t.ppf(0.5 + confidence / 2, s - 1)) * per_seed.std() / math.sqrt(s)
    return {"tow": mean, "per_seed": per_seed, "ci_low": mean - half, "ci_high": mean + half}


def klom(unlearned: Tensor, retrained: Tensor, bins: int = 20, eps: float = 1e-5,
         clip: float = 100.0) -> Tensor:
    """KLOM (Georgiev et al., ICLR 2025): per example, ``KL(unlearned ‖ retrained)`` of histograms.

    Direction and binning follow ``unlearning_bench/eval.py`` (``kl_from_margins``): values
    clipped to ``±clip``, ``bins`` equal bins over the pooled range of the example, empty
    retrained bins where the unlearned one is not raised to ``eps`` and renormalised. Its
    "margin" ``z_y − logsumexp_{k≠y} z_k`` is φ, so pass the cached φ. The largest value lands
    in the last bin (``np.histogram``; the reference's ``np.digitize`` drops it). Swap the
    arguments for the other direction.

    Args:
        unlearned: Signals under unlearned networks, ``(N_u, M)``.
        retrained: Signals under retrained networks, ``(N_r, M)``.
        bins: Number of bins.
        eps: Floor of an empty retrained bin.
        clip: Values are clipped to ``[−clip, clip]``.

    Returns:
        KLOM per example, float64 ``(M,)``; 0 = same histogram.
    """
    if (unlearned.ndim != 2 or retrained.ndim != 2 or unlearned.shape[1] != retrained.shape[1]
            or unlearned.shape[1] == 0 or min(unlearned.shape[0], retrained.shape[0]) < 1):
        raise ValueError(f"KLOM needs unlearned (N_u, M) and retrained (N_r, M) with N >= 1, "
                         f"got {tuple(unlearned.shape)} and {tuple(retrained.shape)}")
    if bins < 1 or not eps > 0 or not clip > 0:
        raise ValueError(f"need bins >= 1, eps > 0, clip > 0; got {bins}, {eps}, {clip}")
    _check_finite("KLOM unlearned signals", unlearned)
    _check_finite("KLOM retrained signals", retrained)
    u = unlearned.detach().double().clamp(-clip, clip).T.contiguous()  # (M, N_u)
    r = retrained.detach().double().clamp(-clip, clip).T.contiguous()
    start = torch.minimum(u.amin(1), r.amin(1))[:, None]
    end = torch.maximum(u.amax(1), r.amax(1))[:, None]
    end = torch.where(start >= end, start + 1, end)
    steps = torch.arange(bins + 1, dtype=torch.float64, device=u.device) / bins
    edges = torch.cat([(start + (end - start) * steps)[:, :-1], end], dim=1).contiguous()

    def histogram(x: Tensor) -> Tensor:
        index = (torch.searchsorted(edges, x, right=True) - 1).clamp(0, bins - 1)
        counts = torch.zeros(x.shape[0], bins, dtype=torch.float64, device=x.device)
        return counts.scatter_add_(1, index, torch.ones_like(x)) / x.shape[1]

    p, q = histogram(u), histogram(r)
    q = torch.where(p > 0, q.clamp_min(eps), q)
    q = q / q.sum(dim=1, keepdim=True)
    terms = torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p))
    return terms.sum(dim=1)


class EpsilonScore(_SignalStates):
    """The competition's ε-score and final score, accumulated by sample id (DDP-exact).

    ``split="forget"``: φ of forget examples under the ``N`` unlearned and ``N`` retrained
    networks. ``"retain"``/``"test"``: each network's correctness (0/1) on those samples, for
    the final score. ``compute`` returns :func:`epsilon_score`'s dict plus ``"ids"`` of the
    forget examples and, once retain and test were given, ``"retain_accuracy_ratio"``,
    ``"test_accuracy_ratio"`` and ``"final_score"``.

    Args:
        delta: δ of the (ε, δ) test.
        cap: Largest ε reported.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    higher_is_better: bool | None = True
    splits = ("forget", "retain", "test")

    def __init__(self, delta: float = DELTA, cap: float = EPSILON_CAP, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < delta < 1.0 or not cap > 0:
            raise ValueError(f"need 0 < delta < 1 and cap > 0, got delta={delta}, cap={cap}")
        self.delta, self.cap = delta, cap

    def update(self, ids: Tensor, unlearned: Tensor, retrained: Tensor,  # type: ignore[override]
               split: Literal["forget", "retain", "test"] = "forget") -> None:
        """Add a batch: ``ids`` ``(B,)``, unlearned and retrained values, each ``(N, B)``."""
        _pair(unlearned, retrained, 4, "EpsilonScore")
        if split != "forget":
            both = torch.cat([unlearned, retrained])
            if not bool(((both == 0) | (both == 1)).all()):
                raise ValueError(f"split={split!r} takes correctness (0/1) per network and "
                                 "sample, not signals")
        self._add(ids, split, [unlearned.T, retrained.T])

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        ids, codes, rows = self._gathered()
        n = rows.shape[1] // 2
        forget = codes == 0
        if not bool(forget.any()):
            raise ValueError("EpsilonScore needs forget signals: update(..., split='forget')")
        out = epsilon_score(rows[forget, :n].T, rows[forget, n:].T, self.delta, self.cap)
        out["ids"] = ids[forget]
        if bool((codes == 1).any()) and bool((codes == 2).any()):
            (ra, rra), (ta, rta) = ((rows[codes == c, :n].mean(), rows[codes == c, n:].mean())
                                    for c in (1, 2))
            out["retain_accuracy_ratio"], out["test_accuracy_ratio"] = ra / rra, ta / rta
            out["final_score"] = final_score(out["forget_quality"], ra, rra, ta, rta)
        return out
