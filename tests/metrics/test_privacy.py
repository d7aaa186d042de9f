"""Tests of unlearn_pl.metrics privacy tests against direct NumPy/SciPy implementations.

Signals are synthetic Gaussians where the answer is known; the ε-score is checked against a
NumPy port of the competition's metric.py (its 0.01 threshold grid, one example at a time).
"""

from __future__ import annotations

import json
import math
import os
import runpy
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve
from torch import Tensor
from torch.utils.data import DistributedSampler, TensorDataset

import unlearn_pl  # noqa: F401  # torchvision shim before torchmetrics
from tests.conftest import BENCHMARKS
from unlearn_pl.metrics import (
    RMIA,
    EpsilonScore,
    LiRA,
    RetrainLikeness,
    attack_summary,
    epsilon_points,
    epsilon_score,
    final_score,
    klom,
    lira_scores,
    logit_confidence,
    retrain_likeness,
    rmia_scores,
    tow,
)
from unlearn_pl.metrics import epsilon as epsilon_module

DELTA = 1e-5


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _t(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


# ------------------------------------------------------------------------ NumPy references


def np_z(target: np.ndarray, refs: np.ndarray, fixed: bool) -> np.ndarray:
    var = refs.var(axis=0, ddof=1)
    sigma = np.sqrt(var.mean()) if fixed else np.sqrt(var)
    return (target - refs.mean(axis=0)) / sigma


def np_rmia(tp: np.ndarray, rp: np.ndarray, ptp: np.ndarray, prp: np.ndarray, a: float,
            gamma: float) -> np.ndarray:
    ratio_x = tp / (0.5 * ((1 + a) * rp.mean(0) + 1 - a))
    ratio_z = ptp / (0.5 * ((1 + a) * prp.mean(0) + 1 - a))
    return (ratio_x[:, None] / ratio_z[None, :] > gamma).mean(axis=1)


def np_reference_epsilon(u: np.ndarray, r: np.ndarray, cap: float = 50.0) -> np.ndarray:
    """The competition's metric.py semantics, one example at a time, on its 0.01 grid."""
    out = np.empty(u.shape[1])
    for x in range(u.shape[1]):
        pos, neg = (r[:, x], u[:, x]) if np.median(r[:, x]) > np.median(u[:, x]) else (
            u[:, x], r[:, x])
        pd, nd = np.ptp(pos), np.ptp(neg)
        if min(pd, nd) / max(pd, nd) < 0.01:
            out[x] = cap
            continue
        lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
        t = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
        fpr_s, fnr_s = (neg[:, None] >= t).mean(0), (pos[:, None] < t).mean(0)
        peak, wide = (neg, pos) if pd >= nd else (pos, neg)
        w = min(pd, nd)
        r_min, r_max = peak.min() + w - 2.0, peak.max() + 2.0
        right = np.linspace(r_min, r_max, int(np.ceil((r_max - r_min) * 100)))
        left = np.concatenate([np.linspace(tr - w - 2.0, tr - w + 2.0, 400) for tr in right])
        right = np.repeat(right, 400)
        inside_wide, inside_peak = (((left <= s[:, None]) & (s[:, None] <= right)).mean(0)
                                    for s in (wide, peak))
        fpr = np.concatenate([inside_wide, fpr_s])
        fnr = np.concatenate([1 - inside_peak, fnr_s])
        with np.errstate(invalid="ignore", divide="ignore"):
            e = np.fmax(np.log(1 - DELTA - fpr) - np.log(fnr),
                        np.log(1 - DELTA - fnr) - np.log(fpr))
        e = np.where((fpr == 0) & (fnr == 0), np.inf, np.clip(e, 0, None))
        keep = ~np.isnan(e) & ~((fpr == 0) ^ (fnr == 0))
        out[x] = min(e[keep].max(), cap) if keep.any() else 0.0
    return out


def gapped_samples(rng: np.random.Generator, n: int, m: int, shift: float) -> tuple[
        np.ndarray, np.ndarray]:
    """N unlearned and N retrained values per example, all pooled values >= 0.03 apart, so the
    reference's 0.01 grid reaches every threshold an exact search does."""
    u, r = np.empty((n, m)), np.empty((n, m))
    for x in range(m):
        v = np.cumsum(0.03 + rng.exponential(0.25, 2 * n)) - 2.0
        order = np.argsort(rng.normal(size=2 * n) + shift * np.r_[np.ones(n), np.zeros(n)])
        r[:, x], u[:, x] = rng.permutation(v[order[:n]]), rng.permutation(v[order[n:]])
    return u, r


# ------------------------------------------------------------------------------ the signal


def test_logit_confidence_matches_softmax_formula() -> None:
    rng = _rng(0)
    logits, targets = rng.normal(0, 3, (50, 7)), rng.integers(0, 7, 50)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p_true = p[np.arange(50), targets]
    expected = np.log(p_true) - np.log(1 - p_true)
    phi = logit_confidence(_t(logits), _t(targets))
    np.testing.assert_allclose(phi.numpy(), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(torch.sigmoid(phi).numpy(), p_true, rtol=1e-10, atol=1e-12)
    # Saturated: softmax rounds p_y to 1, the logit form stays exact.
    saturated = logit_confidence(torch.tensor([[1000.0, 0.0, 0.0]]), torch.tensor([0]))
    assert saturated.item() == pytest.approx(1000.0 - math.log(2.0))

    labels = rng.integers(0, 2, (50, 5)).astype(float)
    q = 1 / (1 + np.exp(-logits[:, :5]))
    q_true = np.where(labels == 1, q, 1 - q)
    expected_ml = (np.log(q_true) - np.log(1 - q_true)).mean(1)
    phi_ml = logit_confidence(_t(logits[:, :5]), _t(labels), task="multilabel")
    np.testing.assert_allclose(phi_ml.numpy(), expected_ml, rtol=1e-9, atol=1e-9)


def test_logit_confidence_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="multiclass"):
        logit_confidence(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        logit_confidence(torch.zeros(4, 3), torch.zeros(4, 2), task="multilabel")
    with pytest.raises(ValueError, match="unknown task"):
        logit_confidence(torch.zeros(4, 3), torch.zeros(4), task="binary")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ ROC summary


def test_attack_summary_matches_sklearn_with_ties() -> None:
    rng = _rng(1)
    members = np.round(rng.normal(0.6, 1, 700), 1)  # rounding makes ties across the classes
    nonmembers = np.round(rng.normal(0, 1, 3000), 1)
    out = attack_summary(_t(members), _t(nonmembers))
    labels = np.r_[np.ones(700), np.zeros(3000)]
    scores = np.r_[members, nonmembers]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert out["auc"].item() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    for key, x in (("tpr_at_1pct_fpr", 0.01), ("tpr_at_0.1pct_fpr", 0.001)):
        assert out[key].item() == pytest.approx(tpr[np.where(fpr < x)[0][-1]], abs=1e-12)


# ------------------------------------------------------------------------------------ LiRA


def _bank(rng: np.random.Generator, m: int, k: int, shift: float = 0.0) -> tuple[
        np.ndarray, np.ndarray]:
    """Per-example means; references and a target drawn around them (target shifted)."""
    mu = rng.normal(0, 2, m)
    return mu + shift + rng.normal(size=m), mu + rng.normal(size=(k, m))


@pytest.mark.parametrize("fixed", [True, False, None])
def test_lira_scores_match_numpy(fixed: bool | None) -> None:
    target, refs = _bank(_rng(2), 500, 20)
    z = lira_scores(_t(target), _t(refs), fixed_variance=fixed)
    np.testing.assert_allclose(z.numpy(), np_z(target, refs, bool(fixed)), rtol=1e-10, atol=1e-12)


def test_lira_auc_at_chance_and_at_the_gaussian_value() -> None:
    k, delta_mu = 8, 1.0
    rng = _rng(3)
    for shift, expected_auc, expected_tpr in (
        (0.0, 0.5, 0.01),  # the target fits members no better than references: chance
        # z ~ N(Δ, 1 + 1/K) for members, N(0, 1 + 1/K) for non-members (μ estimated from K).
        (delta_mu, stats.norm.cdf(delta_mu / math.sqrt(2 * (1 + 1 / k))),
         stats.norm.sf(stats.norm.ppf(0.99) - delta_mu / math.sqrt(1 + 1 / k))),
    ):
        t_mem, r_mem = _bank(rng, 4000, k, shift)
        t_non, r_non = _bank(rng, 4000, k)
        z = lira_scores(_t(np.r_[t_mem, t_non]), _t(np.c_[r_mem, r_non]))
        out = attack_summary(z[:4000], z[4000:])
        assert out["auc"].item() == pytest.approx(expected_auc, abs=0.02)
        assert out["tpr_at_1pct_fpr"].item() == pytest.approx(expected_tpr, abs=0.02)


def test_retrain_likeness_sees_a_class_the_attack_cannot() -> None:
    """Class-wise, a network that forgot nothing fits forget and held-out samples of the class
    alike (attack at chance) but far from retrain (outside the band almost always)."""
    k, rng = 8, _rng(4)
    mu = rng.normal(-3, 1, 2000)  # retrain never learned the class: low confidence
    refs = mu + rng.normal(size=(k, 2000))
    original = mu + 6 + rng.normal(size=2000)  # forget and held-out both fitted
    z = lira_scores(_t(original), _t(refs))
    assert attack_summary(z[:1000], z[1000:])["auc"].item() == pytest.approx(0.5, abs=0.04)
    held_out_retrain = mu[:1000] + rng.normal(size=1000)
    out = retrain_likeness(_t(original[:1000]), _t(refs[:, :1000]), floor=_t(held_out_retrain))
    z_np = np_z(original[:1000], refs[:, :1000], fixed=True)
    np.testing.assert_allclose(out["z"].numpy(), z_np, rtol=1e-10, atol=1e-12)
    cut = stats.norm.ppf(0.975)
    assert out["outside"].item() == pytest.approx((np.abs(z_np) > cut).mean(), abs=1e-12)
    assert out["mean_abs_z"].item() == pytest.approx(np.abs(z_np).mean(), rel=1e-12)
    assert out["outside"].item() > 0.99
    # The floor: a held-out retrain lies outside at 2(1 − Φ(1.96 / √(1 + 1/K))), not 5 %.
    assert out["floor_outside"].item() == pytest.approx(
        2 * stats.norm.sf(cut / math.sqrt(1 + 1 / k)), abs=0.025)


# ------------------------------------------------------------------------------------ RMIA


@pytest.mark.parametrize(("a", "gamma"), [(0.3, 1.0), (0.0, 2.0), (1.0, 1.0)])
def test_rmia_matches_numpy(a: float, gamma: float) -> None:
    rng = _rng(5)
    tp, rp = rng.uniform(0.01, 1, 300), rng.uniform(0.01, 1, (3, 300))
    ptp, prp = rng.uniform(0.01, 1, 200), rng.uniform(0.01, 1, (3, 200))
    scores = rmia_scores(_t(tp), _t(rp), _t(ptp), _t(prp), a=a, gamma=gamma)
    np.testing.assert_array_equal(scores.numpy(), np_rmia(tp, rp, ptp, prp, a, gamma))


def test_rmia_separates_members_and_not_identical_ones() -> None:
    rng = _rng(6)
    for shift, low, high in ((0.0, 0.46, 0.54), (1.5, 0.7, 1.0)):
        t_mem, r_mem = _bank(rng, 2000, 2, shift)
        t_non, r_non = _bank(rng, 2000, 2)
        t_pop, r_pop = _bank(rng, 1000, 2)
        sig = lambda x: torch.sigmoid(_t(x))  # noqa: E731
        s = rmia_scores(sig(np.r_[t_mem, t_non]), sig(np.c_[r_mem, r_non]), sig(t_pop),
                        sig(r_pop))
        assert low < attack_summary(s[:2000], s[2000:])["auc"].item() < high


# ---------------------------------------------------------------------------------- ε-score


@pytest.mark.parametrize(("n", "shift", "seed"), [(4, 0.0, 7), (8, 1.0, 8), (8, 3.0, 9),
                                                  (16, 0.5, 10)])
def test_epsilon_equals_the_reference_port(n: int, shift: float, seed: int) -> None:
    u, r = gapped_samples(_rng(seed), n, 30, shift)
    out = epsilon_score(_t(u), _t(r))
    np.testing.assert_allclose(out["epsilon"].numpy(), np_reference_epsilon(u, r), atol=1e-12)


def test_epsilon_equals_the_reference_port_with_ties() -> None:
    rng = _rng(16)
    u, r = rng.integers(0, 4, (8, 40)) * 0.5, rng.integers(0, 6, (8, 40)) * 0.5
    out = epsilon_score(_t(u), _t(r))
    np.testing.assert_allclose(out["epsilon"].numpy(), np_reference_epsilon(u, r), atol=1e-12)


def test_epsilon_never_below_the_reference_grid_on_gaussians() -> None:
    """On raw Gaussians the 0.01 grid can miss a narrow gap; the exact search cannot."""
    rng = _rng(11)
    u, r = rng.normal(0.7, 1, (8, 60)), rng.normal(0, 1, (8, 60))
    ours, ref = epsilon_score(_t(u), _t(r))["epsilon"].numpy(), np_reference_epsilon(u, r)
    assert (ours >= ref - 1e-12).all()
    assert np.isclose(ours, ref, atol=1e-12).mean() >= 0.9


def test_epsilon_known_answers() -> None:
    # Best threshold: FPR = FNR = 1/4 (between 2 and 2.5), so ε = ln((3/4 − δ) / (1/4)).
    retrained = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).T
    out = epsilon_score(retrained + 1.5, retrained)
    assert out["epsilon"].item() == pytest.approx(math.log((0.75 - DELTA) / 0.25), abs=1e-12)
    assert out["points"].item() == 0.25 and out["resolvable_epsilon"].item() == 2.0

    same = torch.from_numpy(_rng(12).normal(size=(8, 40)))
    out = epsilon_score(same.clone(), same)  # identical samples: no threshold tells them apart
    assert out["epsilon"].abs().max().item() == 0.0 and out["forget_quality"].item() == 1.0
    out = epsilon_score(same + 100, same)  # perfectly separated
    assert (out["epsilon"] == 50.0).all() and out["forget_quality"].item() == 0.0
    peaky = torch.zeros(8, 40) + 1e-4 * torch.arange(8.0)[:, None]  # range 100x smaller
    assert (epsilon_score(peaky, same)["epsilon"] == 50.0).all()
    assert epsilon_score(same[:4], same[4:])["resolvable_epsilon"].item() == 2.0
    assert epsilon_score(torch.randn(16, 3), torch.randn(16, 3))["resolvable_epsilon"] == 3.0


def test_epsilon_points_buckets() -> None:
    eps = torch.tensor([0.0, 0.49, 0.5, 0.99, 1.0, 1.49, 1.5, 1.99, 2.0, 50.0])
    np.testing.assert_array_equal(epsilon_points(eps, 4).numpy(),
                                  [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0, 0])
    assert epsilon_points(torch.tensor([2.5]), 16).item() == 2 ** -5  # ceil(ln 15) = 3


def test_epsilon_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    u, r = torch.randn(8, 50, dtype=torch.float64), torch.randn(8, 50, dtype=torch.float64)
    whole = epsilon_score(u, r)["epsilon"]
    monkeypatch.setattr(epsilon_module, "_BLOCK", 1)  # one example per block
    assert torch.equal(epsilon_score(u, r)["epsilon"], whole)


# ------------------------------------------------------------------ final score, ToW, KLOM


def test_final_score_and_tow_match_numpy() -> None:
    assert final_score(0.5, torch.tensor([0.9, 0.8]), 0.9, 0.7, 0.8).item() == pytest.approx(
        0.5 * (0.85 / 0.9) * (0.7 / 0.8))
    rng = _rng(13)
    u, r = rng.uniform(0.6, 1, (5, 3)), rng.uniform(0.6, 1, (5, 3))
    out = tow(_t(u), _t(r))
    per_seed = np.prod(1 - np.abs(u - r), axis=1)
    low, high = stats.t.interval(0.95, 4, loc=per_seed.mean(), scale=stats.sem(per_seed))
    np.testing.assert_allclose(out["per_seed"].numpy(), per_seed, rtol=1e-10, atol=1e-12)
    assert (out["tow"].item(), out["ci_low"].item(), out["ci_high"].item()) == pytest.approx(
        (per_seed.mean(), low, high), rel=1e-10)
    assert math.isnan(tow(_t(u[0]), _t(r[0]))["ci_low"].item())  # one seed: no interval


def test_klom_matches_numpy_histograms() -> None:
    rng = _rng(14)
    u, r = rng.normal(0.5, 1, (20, 40)), rng.normal(0, 1.5, (20, 40))
    u[0, 0] = 500.0  # clipped to 100
    expected = []
    for x in range(40):
        a, b = np.clip(u[:, x], -100, 100), np.clip(r[:, x], -100, 100)
        edges = (min(a.min(), b.min()), max(a.max(), b.max()))
        p = np.histogram(a, bins=20, range=edges)[0] / 20
        q = np.histogram(b, bins=20, range=edges)[0] / 20
        expected.append(stats.entropy(p, np.where(p > 0, np.maximum(q, 1e-5), q)))
    np.testing.assert_allclose(klom(_t(u), _t(r)).numpy(), expected, rtol=1e-10)
    assert klom(_t(r), _t(r)).abs().max().item() < 1e-12


# --------------------------------------------------------------------------------- bad input


def test_too_few_networks_raise_before_work() -> None:
    phi = torch.randn(10)
    for refs in (torch.empty(0, 10), torch.randn(1, 10)):
        with pytest.raises(ValueError, match="at least 2 reference networks"):
            lira_scores(phi, refs)
    with pytest.raises(ValueError, match="at least 1 reference"):
        rmia_scores(phi.sigmoid(), torch.empty(0, 10), phi.sigmoid(), torch.empty(0, 10))
    with pytest.raises(ValueError, match="N >= 4"):
        epsilon_score(torch.randn(3, 10), torch.randn(3, 10))
    with pytest.raises(ValueError, match="N >= 4"):
        EpsilonScore().update(torch.arange(10), torch.randn(3, 10), torch.randn(3, 10))
    with pytest.raises(ValueError, match="at least 2 reference"):
        LiRA().update(torch.arange(10), phi, torch.randn(1, 10), split="forget")


def test_population_overlapping_the_scored_samples_raises() -> None:
    p = torch.rand(2, 10) * 0.9 + 0.05
    with pytest.raises(ValueError, match="population samples are also scored"):
        rmia_scores(p[0], p, p[1], p, scored_ids=torch.arange(10),
                    population_ids=torch.arange(9, 19))
    metric = RMIA()
    metric.update(torch.arange(5), torch.randn(5), torch.randn(2, 5), split="forget")
    metric.update(torch.arange(5), torch.randn(5), torch.randn(2, 5), split="heldout")
    metric.update(torch.arange(4, 9), torch.randn(5), torch.randn(2, 5), split="population")
    with pytest.raises(ValueError, match="population samples are also scored"):
        metric.compute()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_signals_raise(bad: float) -> None:
    phi, refs = torch.randn(10), torch.randn(4, 10)
    broken = phi.clone()
    broken[3] = bad
    calls = [
        lambda: lira_scores(broken, refs),
        lambda: lira_scores(phi, refs.where(torch.arange(10) != 2, bad)),
        lambda: retrain_likeness(broken, refs),
        lambda: rmia_scores(broken, refs.sigmoid(), phi.sigmoid(), refs.sigmoid()),
        lambda: epsilon_score(refs, refs.where(torch.arange(10) != 2, bad)),
        lambda: klom(refs.where(torch.arange(10) != 2, bad), refs),
        lambda: attack_summary(broken, phi),
        lambda: LiRA().update(torch.arange(10), broken, refs, split="forget"),
        lambda: RetrainLikeness().update(torch.arange(10), phi, refs, floor=broken),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="NaN or inf"):
            call()


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_invalid_arguments_raise() -> None:
    phi, refs = torch.randn(10), torch.randn(4, 10)
    with pytest.raises(ValueError, match="band"):
        retrain_likeness(phi, refs, band=1.0)
    with pytest.raises(ValueError, match="a must be in"):
        rmia_scores(phi.sigmoid(), refs.sigmoid(), phi.sigmoid(), refs.sigmoid(), a=1.5)
    with pytest.raises(ValueError, match="pass sigmoid"):
        rmia_scores(phi, refs, phi, refs)
    with pytest.raises(ValueError, match="same M"):
        lira_scores(phi, torch.randn(4, 9))
    with pytest.raises(ValueError, match="split must be one of"):
        LiRA().update(torch.arange(10), phi, refs, split="train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before any update"):
        LiRA().compute()
    with pytest.raises(ValueError, match="correctness"):
        EpsilonScore().update(torch.arange(10), refs, refs, split="retain")
    with pytest.raises(ValueError, match="fractions"):
        tow(torch.tensor([90.0, 80.0]), torch.tensor([0.9, 0.8]))
    metric = RetrainLikeness()
    metric.update(torch.arange(5), phi[:5], refs[:, :5], floor=phi[:5])
    metric.update(torch.arange(5, 10), phi[5:], refs[:, 5:])
    with pytest.raises(ValueError, match="every update or in none"):
        metric.compute()


# --------------------------------------------------------------------------------- metrics


def _table(seed: int = 15, k: int = 6, n: int = 5) -> dict[str, Tensor]:
    """One row per (split, sample): cached φ under a target, K references, N + N networks."""
    rng = _rng(seed)
    splits = np.r_[np.zeros(151), np.ones(150), np.full(100, 2)]  # forget, heldout, population
    ids = np.r_[np.arange(151), np.arange(150), np.arange(150, 250)]  # held-out id space shared
    m = splits.size
    target, refs = _bank(rng, m, k, 0.0)
    target[:151] += 0.8
    correct = rng.integers(0, 2, (2 * n, m)).astype(float)
    return {"split": _t(splits).long(), "ids": _t(ids).long(), "target": _t(target),
            "refs": _t(refs), "floor": _t(refs[0] + rng.normal(size=m)),
            "unlearned": _t(rng.normal(0.3, 1, (n, m))), "retrained": _t(rng.normal(0, 1, (n, m))),
            "correct": _t(correct)}


_SPLITS = {"lira": ("forget", "heldout", None), "rmia": ("forget", "heldout", "population"),
           "eps": ("forget", "retain", "test")}


def _feed(metrics: dict[str, object], table: dict[str, Tensor], rows: Tensor) -> None:
    t = table
    for batch in rows.split(64):
        for code in range(3):
            b = batch[t["split"][batch] == code]
            if b.numel() == 0:
                continue
            ids, target, refs = t["ids"][b], t["target"][b], t["refs"][:, b]
            for name in ("lira", "rmia"):
                split = _SPLITS[name][code]
                if split is not None:
                    metrics[name].update(ids, target, refs, split=split)  # type: ignore[attr-defined]
            if code == 0:
                metrics["likeness"].update(ids, target, refs, floor=t["floor"][b])  # type: ignore[attr-defined]
                metrics["eps"].update(ids, t["unlearned"][:, b], t["retrained"][:, b])  # type: ignore[attr-defined]
            else:
                n = t["unlearned"].shape[0]
                metrics["eps"].update(ids, t["correct"][:n, b], t["correct"][n:, b],  # type: ignore[attr-defined]
                                      split=_SPLITS["eps"][code])


def _metrics() -> dict[str, object]:
    return {"lira": LiRA(), "rmia": RMIA(), "likeness": RetrainLikeness(), "eps": EpsilonScore()}


def _results(metrics: dict[str, object]) -> dict[str, Tensor]:
    return {f"{name}/{key}": value for name, metric in metrics.items()
            for key, value in metric.compute().items()}  # type: ignore[attr-defined]


def test_metrics_over_shuffled_batches_equal_the_functions() -> None:
    t = _table()
    metrics = _metrics()
    order = torch.randperm(t["ids"].numel(), generator=torch.Generator().manual_seed(0))
    _feed(metrics, t, torch.cat([order, order[:7]]))  # seven samples seen twice
    out = _results(metrics)

    forget, held, pop = (t["split"] == c for c in range(3))
    scored = forget | held
    # Metrics sort by (split, id): held-out (code 0 in LiRA/RMIA) first, then forget.
    order_scored = torch.cat([held.nonzero()[:, 0], forget.nonzero()[:, 0]])
    z = np_z(t["target"][order_scored].numpy(), t["refs"][:, order_scored].numpy(), fixed=True)
    np.testing.assert_allclose(out["lira/scores"].numpy(), z, rtol=1e-10, atol=1e-12)
    member = np.r_[np.zeros(int(held.sum())), np.ones(int(forget.sum()))].astype(bool)
    assert out["lira/auc"].item() == pytest.approx(roc_auc_score(member, z), abs=1e-12)
    top = np.argsort(-z[member], kind="stable")[:16]  # ceil(151 / 10)
    np.testing.assert_array_equal(out["lira/exposed_ids"].numpy(),
                                  t["ids"][forget].numpy()[top])
    p = torch.sigmoid
    rmia = np_rmia(p(t["target"][order_scored]).numpy(), p(t["refs"][:, order_scored]).numpy(),
                   p(t["target"][pop]).numpy(), p(t["refs"][:, pop]).numpy(), 0.3, 1.0)
    np.testing.assert_allclose(out["rmia/scores"].numpy(), rmia, rtol=0, atol=1e-12)
    assert int(scored.sum()) == out["rmia/ids"].numel()

    z_f = np_z(t["target"][forget].numpy(), t["refs"][:, forget].numpy(), fixed=True)
    np.testing.assert_allclose(out["likeness/z"].numpy(), z_f, rtol=1e-10, atol=1e-12)
    eps = epsilon_score(t["unlearned"][:, forget], t["retrained"][:, forget])
    assert torch.equal(out["eps/epsilon"], eps["epsilon"])
    n, c = t["unlearned"].shape[0], t["correct"]
    acc = [c[rows][:, split].mean().item() for split in (held, pop) for rows in (slice(0, n),
                                                                              slice(n, None))]
    assert out["eps/final_score"].item() == pytest.approx(
        eps["forget_quality"].item() * acc[0] / acc[1] * acc[2] / acc[3], rel=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, table: dict[str, Tensor], expected: dict[str, Tensor],
                out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # The real sampler: shuffled, and padded with a repeat because the length is odd.
        dataset = TensorDataset(table["ids"])
        sampler: DistributedSampler[int] = DistributedSampler(dataset, num_replicas=2, rank=rank)
        metrics = _metrics()
        _feed(metrics, table, torch.tensor(list(sampler)))
        result = _results(metrics)
        for key, value in expected.items():
            assert torch.equal(result[key], value), (rank, key)
        torch.save(sorted(result), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process(tmp_path: Path) -> None:
    table = _table()
    assert table["ids"].numel() % 2 == 1
    metrics = _metrics()
    _feed(metrics, table, torch.arange(table["ids"].numel()))
    expected = _results(metrics)
    mp.spawn(_ddp_worker, args=(_free_port(), table, expected, str(tmp_path)), nprocs=2,
             join=True)
    for rank in range(2):  # the workers asserted; this proves both ran to the end
        assert torch.load(tmp_path / f"rank{rank}.pt") == sorted(expected)


def test_benchmark_script_writes_its_result(tmp_path: Path) -> None:
    main = runpy.run_path(str(BENCHMARKS / "bench_privacy.py"))["main"]
    output = tmp_path / "privacy.json"
    result = main(["--forget", "300", "--heldout", "300", "--population", "100", "--repeats",
                   "1", "--epsilon-networks", "4", "--output", str(output)])
    assert json.loads(output.read_text()) == result
    assert 0.5 < result["lira_auc"] < 1 and result["epsilon_score"]["examples"] == 300
