"""The privacy audit of one method: its networks against a bank of retrain networks.

Every network is given as a record of its test numbers and its per-sample signals (the
logit-scaled confidence φ of :func:`~unlearn_pl.metrics.privacy.logit_confidence`) on the forget
set and on the attack's held-out non-members, keyed by sample id: what
:class:`~unlearn_pl.methods.UnlearningModule` keeps in ``last_samples`` and the comparison runner
stores in its records. The bank's networks (the retrain recipe with other seeds on the same split)
never saw either set; the split's own retrain network, which is not in the bank, is the floor
every per-example test is read against (what an exact unlearner gets). The bank is retrains of
other seeds, not networks on random halves of D_r: the question is whether a network could be a
retrain, so the reference distribution must be the retrain recipe's (networks on half the data
are less confident everywhere and would flag exact retrains too).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from unlearn_pl.metrics.epsilon import epsilon_score, final_score
from unlearn_pl.metrics.privacy import attack_summary, lira_scores, retrain_likeness, rmia_scores

__all__ = ["VERDICT_RULE", "audit_method", "distance_to_retrain"]

#: Smallest differences the verdict counts, whatever the seeds' spread.
ACCURACY_TOLERANCE = 0.02
SIGNAL_TOLERANCE = 0.05
VERDICT_RULE = (
    "indistinguishable from retrain when, over the method's runs, every accuracy gap to retrain "
    f"(forget, retain, held-out) is within max(2 std, {ACCURACY_TOLERANCE}) (std: of the "
    "method's runs, or of the retrain networks if larger), and the fraction of "
    "forget examples outside the bank's central 95 % band, the LiRA AUC, the RMIA AUC (where "
    "the records hold the population's signals) and (with a bank of 2N) "
    f"the ε-score's forget quality are within max(2 std, {SIGNAL_TOLERANCE}) of a held-out "
    "retrain network's; otherwise the verdict names what gives the method away")


def _signal(record: Mapping[str, Any], key: str) -> tuple[list[int], Tensor]:
    try:
        part = record["signals"][key]
        return list(part["ids"]), torch.tensor(part["signal"], dtype=torch.float64)
    except (KeyError, TypeError) as error:
        raise ValueError(f"a record has no per-sample signals of {key!r} ({error!r}): evaluate "
                         "it again with this version (unlearn-pl-compare re-tests such cached "
                         "references)") from error


def _aligned(target: Mapping[str, Any], bank: Sequence[Mapping[str, Any]],
             key: str) -> tuple[list[int], Tensor, Tensor]:
    """``(ids, target signal (M,), bank signals (K, M))``, refusing a bank of another split."""
    ids, signal = _signal(target, key)
    rows = []
    for reference in bank:
        other_ids, other = _signal(reference, key)
        if other_ids != ids:
            raise ValueError(f"a reference network was evaluated on other {key} samples than the "
                             "audited one (another split or forget request): train the bank on "
                             "the same data config and seed")
        rows.append(other)
    return ids, signal, torch.stack(rows)


def _attack(out: dict[str, Any], name: str, member: Tensor, nonmember: Tensor) -> None:
    summary = attack_summary(member, nonmember)
    out[f"{name}_auc"] = float(summary["auc"])
    out[f"{name}_tpr_1pct"] = float(summary["tpr_at_1pct_fpr"])


def _rmia(target: Mapping[str, Any], bank: Sequence[Mapping[str, Any]], member: Tensor,
          bank_member: Tensor, nonmember: Tensor, bank_nonmember: Tensor
          ) -> tuple[Tensor, Tensor]:
    """Offline RMIA scores (``a`` = 0.3) of the members and non-members under ``target``, the
    population being the validation split's held-out samples (disjoint from the scored
    ones by construction; their ids index another set, so they are not compared)."""
    _, population, bank_population = _aligned(target, bank, "population")
    population, bank_population = torch.sigmoid(population), torch.sigmoid(bank_population)

    def scores(signal: Tensor, references: Tensor) -> Tensor:
        return rmia_scores(torch.sigmoid(signal), torch.sigmoid(references), population,
                           bank_population)

    return scores(member, bank_member), scores(nonmember, bank_nonmember)


def _per_run(target: Mapping[str, Any], bank: Sequence[Mapping[str, Any]],
             floor: Mapping[str, Any]) -> dict[str, Any]:
    ids, forget, bank_forget = _aligned(target, bank, "forget")
    _, nonmember, bank_nonmember = _aligned(target, bank, "nonmember")
    _, floor_forget = _signal(floor, "forget")
    _, floor_nonmember = _signal(floor, "nonmember")
    likeness = retrain_likeness(forget, bank_forget, floor=floor_forget)
    out: dict[str, Any] = {"outside": float(likeness["outside"]),
                           "mean_abs_z": float(likeness["mean_abs_z"]),
                           "floor_outside": float(likeness["floor_outside"]),
                           "floor_mean_abs_z": float(likeness["floor_mean_abs_z"])}
    with_population = all("population" in r.get("signals", {}) for r in (target, floor, *bank))
    lira = {}
    for prefix, network, member, nonmember_ in (("", target, forget, nonmember),
                                                ("floor_", floor, floor_forget, floor_nonmember)):
        lira[prefix] = lira_scores(member, bank_forget)
        _attack(out, f"{prefix}lira", lira[prefix], lira_scores(nonmember_, bank_nonmember))
        if with_population:
            _attack(out, f"{prefix}rmia", *_rmia(network, bank, member, bank_forget, nonmember_,
                                                 bank_nonmember))
        # The population attack's feature alone: its one-feature logistic regression ranks
        # samples as the loss does, so this is its ROC (AUC and TPR at a low FPR).
        losses = network.get("losses", {})
        if "forget" in losses and "nonmember" in losses:
            _attack(out, f"{prefix}loss", -torch.tensor(losses["forget"], dtype=torch.float64),
                    -torch.tensor(losses["nonmember"], dtype=torch.float64))
    # The most exposed decile of the forget set: the largest LiRA statistics.
    z = lira[""]
    top = z.argsort(descending=True)[: max(1, len(ids) // 10)]
    out["most_exposed"] = {"ids": [ids[i] for i in top.tolist()],
                           "z": [round(float(z[i]), 4) for i in top.tolist()]}
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def distance_to_retrain(gaps: Mapping[str, float], excess_outside: float) -> float:
    """The number methods are ordered by: the mean of the absolute accuracy gaps to retrain
    (forget, retain, held-out) and of the excess fraction of forget examples outside the
    bank's band over a held-out retrain network's (0 when below it)."""
    parts = [abs(v) for v in gaps.values()] + [max(0.0, excess_outside)]
    return statistics.fmean(parts)


def audit_method(runs: Sequence[Mapping[str, Any]], bank: Sequence[Mapping[str, Any]],
                 retrain: Mapping[str, Any], heldout_key: str) -> dict[str, Any]:
    """Audit the runs of one method (its method seeds on one split) against a bank.

    Per run: the retrain-likeness test of its forget examples (fraction outside the bank's
    central 95 % band, mean |z|), offline LiRA and (where the records hold the population's
    signals) offline RMIA (members forget, non-members held-out; AUC, TPR at 1 % FPR), and the
    population attack's loss feature thresholded, each beside the same numbers for ``retrain``
    as the target; the most exposed decile. Over runs: the accuracy gaps to retrain (the mean
    over retrain and the bank), with N ≥ 4 runs and a bank of N the ε-score's forget quality
    and final score (and, with a bank of 2N, retrain's own forget quality against the other
    half), the distance to retrain and a verdict (:data:`VERDICT_RULE`).

    Args:
        runs: records of the method's networks.
        bank: records of K ≥ 2 retrain networks of other seeds on the same split.
        retrain: the record of the split's retrain network (not in the bank).
        heldout_key: the held-out accuracy's key (``acc_retain_test`` or ``acc_unseen``).

    Returns:
        ``{"runs": [per run], name: mean, f"{name}_std": std, "gaps", "distance", "verdict",
        "epsilon"}`` (``epsilon`` is ``None`` without enough networks).

    Raises:
        ValueError: no runs, a bank of fewer than 2, records without signals, or a bank of
            another split.
    """
    if not runs:
        raise ValueError("audit_method needs at least one run of the method")
    if len(bank) < 2:
        raise ValueError(f"the audit needs a bank of at least 2 retrain networks, got {len(bank)}:"
                         " pass --references 2 or more")
    per_run = [_per_run(run, bank, retrain) for run in runs]
    out: dict[str, Any] = {"runs": per_run}
    for key in per_run[0]:
        if key != "most_exposed":
            out[key], out[f"{key}_std"] = _mean_std([r[key] for r in per_run])
    references = [retrain, *bank]
    accuracy_keys = {"forget": "acc_forget", "retain": "acc_retain", "heldout": heldout_key}
    gaps, spread = {}, {}
    for name, key in accuracy_keys.items():
        mine, std = _mean_std([float(r[key]) for r in runs])
        retrained = [float(r[key]) for r in references]
        gaps[name] = mine - statistics.fmean(retrained)
        # The seeds' spread: the method's runs', or retrain's own over its seeds if larger (one
        # retrain network differs from the others' mean by that much without being told apart).
        spread[name] = max(std or 0.0, statistics.stdev(retrained))
    out["gaps"] = gaps
    out["distance"] = distance_to_retrain(gaps, out["outside"] - out["floor_outside"])
    out["epsilon"] = _epsilon(runs, bank, heldout_key)
    out["verdict"] = _verdict(out, spread)
    return out


def _epsilon(runs: Sequence[Mapping[str, Any]], bank: Sequence[Mapping[str, Any]],
             heldout_key: str) -> dict[str, float] | None:
    n = len(runs)
    if n < 4 or len(bank) < n:
        return None
    _, _, unlearned = _aligned(runs[0], runs, "forget")
    _, _, retrained = _aligned(runs[0], bank[:n], "forget")
    score = epsilon_score(unlearned, retrained)
    result = {"n": n, "forget_quality": float(score["forget_quality"]),
              "resolvable_epsilon": float(score["resolvable_epsilon"]),
              "final_score": float(final_score(
                  score["forget_quality"], torch.tensor([r["acc_retain"] for r in runs]),
                  torch.tensor([r["acc_retain"] for r in bank[:n]]),
                  torch.tensor([r[heldout_key] for r in runs]),
                  torch.tensor([r[heldout_key] for r in bank[:n]])))}
    if len(bank) >= 2 * n:  # retrain against itself: the best a method can score here
        _, _, other = _aligned(runs[0], bank[n:2 * n], "forget")
        result["retrain_forget_quality"] = float(epsilon_score(other, retrained)["forget_quality"])
    return result


def _verdict(audit: Mapping[str, Any], spread: Mapping[str, float]) -> str:
    """One line: indistinguishable from retrain, or what gives the method away."""
    tells = []
    for name, gap in audit["gaps"].items():
        if abs(gap) > max(2 * spread[name], ACCURACY_TOLERANCE):
            what = "held-out" if name == "heldout" else name
            tells.append(f"{what} accuracy {gap:+.3f} from retrain")

    def beyond(key: str, what: str, fmt: str) -> None:
        mine, floor, std = audit[key], audit[f"floor_{key}"], audit.get(f"{key}_std") or 0.0
        if mine - floor > max(2 * std, SIGNAL_TOLERANCE):
            tells.append(f"{what} {mine:{fmt}} (held-out retrain {floor:{fmt}})")

    beyond("outside", "forget examples outside the retrain band", ".0%")
    beyond("lira_auc", "LiRA AUC", ".3f")
    if "rmia_auc" in audit:
        beyond("rmia_auc", "RMIA AUC", ".3f")
    epsilon = audit.get("epsilon")
    if epsilon and "retrain_forget_quality" in epsilon:
        if epsilon["retrain_forget_quality"] - epsilon["forget_quality"] > SIGNAL_TOLERANCE:
            tells.append(f"ε-score forget quality {epsilon['forget_quality']:.3f} (retrain "
                         f"against itself {epsilon['retrain_forget_quality']:.3f})")
    if not tells:
        return "indistinguishable from retrain within the seeds' spread"
    return "told apart by " + "; ".join(tells)
