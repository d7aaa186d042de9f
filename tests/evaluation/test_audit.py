"""The privacy audit of a method against a bank of retrain networks, on signals whose answer is
known, and end to end through the comparison runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import DATA_CONFIG, make_datamodule, make_trainer, model_kwargs
from unlearn_pl.benchmark import compare
from unlearn_pl.callbacks import UnlearningReport
from unlearn_pl.evaluation import audit_method
from unlearn_pl.methods import Train

M = 200  # forget (and held-out) examples


def record(forget: torch.Tensor, nonmember: torch.Tensor, acc_forget: float = 0.0,
           ids: list[int] | None = None,
           population: torch.Tensor | None = None) -> dict[str, Any]:
    """A network's record: its accuracies, per-sample signals and losses (any decreasing function
    of the signal will do), as the runner stores them."""
    ids = list(range(M)) if ids is None else ids
    out = {"acc_forget": acc_forget, "acc_retain": 0.98, "acc_retain_test": 0.95,
           "signals": {"forget": {"ids": ids, "signal": forget.tolist()},
                       "nonmember": {"ids": list(range(1000, 1000 + M)),
                                     "signal": nonmember.tolist()}},
           "losses": {"forget": (-forget).tolist(), "nonmember": (-nonmember).tolist()}}
    if population is not None:
        out["signals"]["population"] = {"ids": list(range(M)), "signal": population.tolist()}
    return out


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """Per-example means of the signal under networks that never saw the example; every
    retrain-like network draws around them with spread 1."""
    generator = torch.Generator().manual_seed(0)
    mean_forget = torch.randn(M, generator=generator) * 3
    mean_nonmember = torch.randn(M, generator=generator) * 3
    mean_population = torch.randn(M, generator=generator) * 3

    def retrain_like(shift: float = 0.0) -> dict[str, Any]:
        return record(mean_forget + shift + torch.randn(M, generator=generator),
                      mean_nonmember + torch.randn(M, generator=generator),
                      acc_forget=0.9 if shift else 0.0,
                      population=mean_population + torch.randn(M, generator=generator))

    return {"bank": [retrain_like() for _ in range(8)], "retrain": retrain_like(),
            "retrain_like": retrain_like, "like": [retrain_like() for _ in range(4)],
            "remembering": [retrain_like(shift=5.0) for _ in range(4)]}


def test_a_retrain_like_method_is_indistinguishable(world: dict[str, Any]) -> None:
    audit = audit_method(world["like"], world["bank"], world["retrain"], "acc_retain_test")
    # About 5 % of a Gaussian falls outside its central 95 % band, for method and floor alike.
    assert 0.0 < audit["outside"] < 0.12 and 0.0 < audit["floor_outside"] < 0.12
    assert abs(audit["lira_auc"] - 0.5) < 0.07 and abs(audit["rmia_auc"] - 0.5) < 0.07
    assert audit["verdict"] == "indistinguishable from retrain within the seeds' spread"
    # N = 4 runs and a bank of 8 = 2N: the ε-score of the method and of retrain against itself.
    epsilon = audit["epsilon"]
    assert epsilon["n"] == 4 and epsilon["resolvable_epsilon"] == 2.0
    assert abs(epsilon["forget_quality"] - epsilon["retrain_forget_quality"]) < 0.15


def test_a_remembering_method_is_told_apart_and_why(world: dict[str, Any]) -> None:
    audit = audit_method(world["remembering"], world["bank"], world["retrain"],
                         "acc_retain_test")
    assert audit["outside"] > 0.95 and audit["lira_auc"] > 0.95 and audit["rmia_auc"] > 0.9
    # Per example the attacks see what the population attack's loss threshold barely does.
    assert audit["loss_auc"] < audit["rmia_auc"] and audit["loss_auc"] < audit["lira_auc"]
    assert audit["epsilon"]["forget_quality"] < 0.05 < audit["epsilon"]["retrain_forget_quality"]
    assert audit["verdict"].startswith("told apart by forget accuracy +0.900")
    assert all(tell in audit["verdict"]
               for tell in ("outside the retrain band", "LiRA AUC", "RMIA AUC"))
    like = audit_method(world["like"], world["bank"], world["retrain"], "acc_retain_test")
    assert audit["distance"] > like["distance"] + 0.4  # (0.9 + 0 + 0 + 0.9) / 4
    # The most exposed decile names the forget examples the attack sees best.
    exposed = audit["runs"][0]["most_exposed"]
    assert len(exposed["ids"]) == M // 10 and exposed["z"] == sorted(exposed["z"], reverse=True)


def test_bad_banks_are_refused(world: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="at least 2 retrain networks"):
        audit_method(world["like"], world["bank"][:1], world["retrain"], "acc_retain_test")
    other = record(torch.zeros(M), torch.zeros(M), ids=list(range(1, M + 1)))
    with pytest.raises(ValueError, match="other forget samples"):
        audit_method(world["like"], [*world["bank"][:2], other], world["retrain"],
                     "acc_retain_test")
    with pytest.raises(ValueError, match="no per-sample signals"):
        audit_method([{"acc_forget": 0.0}], world["bank"], world["retrain"], "acc_retain_test")


def test_the_runner_audits_every_method_against_a_cached_bank(tmp_path: Path) -> None:
    data = tmp_path / "synthetic.yaml"
    data.write_text(DATA_CONFIG)
    kwargs: dict[str, Any] = dict(setting=str(data), methods=["finetune"], seeds=[0],
                                  workdir=tmp_path / "work", references=2, reference_epochs=2,
                                  num_threads=1)
    rows = compare(output=tmp_path / "out", **kwargs)
    bank = sorted((tmp_path / "work" / "seed0" / "bank").glob("retrain*/*.ckpt"))
    assert len(bank) == 2
    by_method = {row["method"]: row for row in rows}
    for row in rows:
        assert {"outside_band", "lira_auc", "rmia_auc", "loss_auc", "distance_to_retrain",
                "verdict"} <= set(row)
        # RMIA's population is the validation split's held-out samples: never a scored one.
        signals = row["signals"]
        assert not set(signals["population"]["ids"]) & set(signals["nonmember"]["ids"])
    # Retrain as the target is the floor itself.
    assert by_method["retrain"]["outside_band"] == by_method["retrain"]["floor_outside_band"]
    # With N = 4 method seeds and a bank of 2N: the ε-score, and retrain's own against itself.
    epsilon = compare(output=tmp_path / "epsilon", **{**kwargs, "references": 8,
                                                      "method_seeds": [0, 1, 2, 3]})
    by_method = {row["method"]: row for row in epsilon}
    assert by_method["retrain"]["epsilon_forget_quality"] == \
        by_method["finetune"]["retrain_epsilon_forget_quality"]
    assert "ε-score F" in (tmp_path / "epsilon" / "results.md").read_text()
    table = (tmp_path / "out" / "results.md").read_text()
    assert table.splitlines()[2].startswith("| method | distance to retrain |")
    assert "| RMIA AUC |" in table.splitlines()[2]
    assert table.splitlines()[4].startswith("| retrain |")
    assert "- **finetune**: " in table
    assert "verdict" in json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]
    # The bank is cached: a second run trains nothing new.
    mtimes = [path.stat().st_mtime_ns for path in bank]
    compare(output=tmp_path / "again", **kwargs)
    assert [path.stat().st_mtime_ns for path in bank] == mtimes
    with pytest.raises(ValueError, match="at least 2 retrain networks"):
        compare(output=tmp_path / "bad", **{**kwargs, "references": 1})


def test_the_report_leads_with_the_audit_verdict(original_ckpt: str, tmp_path: Path) -> None:
    def retrain(seed: int) -> str:
        torch.manual_seed(seed)
        datamodule = make_datamodule(shuffle_seed=seed)
        module = Train(train_on="retain", lr=0.05, **model_kwargs(datamodule))
        trainer = make_trainer(tmp_path / f"retrain{seed}", max_epochs=3,
                               enable_checkpointing=False, limit_val_batches=0)
        trainer.fit(module, datamodule=datamodule)
        trainer.save_checkpoint(tmp_path / f"retrain{seed}.ckpt")
        return str(tmp_path / f"retrain{seed}.ckpt")

    bank = [retrain(seed) for seed in (1, 2, 3)]
    report = UnlearningReport(reference=retrain(4), bank=bank, print_table=False)
    make_trainer(tmp_path / "report", callbacks=[report]).test(
        Train.load_from_checkpoint(original_ckpt), datamodule=make_datamodule(), verbose=False)
    record = json.loads((tmp_path / "report" / "report.json").read_text())
    markdown = (tmp_path / "report" / "report.md").read_text()
    # The original remembers the forgotten class: the audit tells it apart from retrain.
    assert record["audit"]["verdict"].startswith("told apart by forget accuracy")
    assert record["audit"]["outside"] > record["audit"]["floor_outside"]
    assert markdown.index("**Verdict: told apart") < markdown.index("| metric |")
    assert (tmp_path / "report" / "signal_vs_references.png").stat().st_size > 0
    # The report keeps its signals, so it can serve as a reference or bank member later.
    assert len(record["signals"]["forget"]["signal"]) == record["dataset"]["split_sizes"]["forget"]
    with pytest.raises(ValueError, match="at least 2 retrain networks"):
        UnlearningReport(reference=bank[0], bank=bank[:1])
    # References of another architecture are refused, naming both.
    wider = Train(train_on="retain", **{**model_kwargs(make_datamodule()), "arch": "allcnn"})
    wider_trainer = make_trainer(tmp_path / "wider", max_epochs=1, limit_train_batches=1,
                                 enable_checkpointing=False, limit_val_batches=0)
    wider_trainer.fit(wider, datamodule=make_datamodule())
    wider_trainer.save_checkpoint(tmp_path / "wider.ckpt")
    report = UnlearningReport(reference=bank[0], bank=[bank[1], str(tmp_path / "wider.ckpt")],
                              print_table=False)
    with pytest.raises(ValueError, match="has architecture allcnn, the result tiny_cnn"):
        make_trainer(tmp_path / "bad", callbacks=[report]).test(
            Train.load_from_checkpoint(original_ckpt), datamodule=make_datamodule(),
            verbose=False)


def test_retrain_is_not_told_apart_by_its_own_seeds_spread(world: dict[str, Any]) -> None:
    # One retrain network whose held-out accuracy sits 3 points from the bank's mean, inside the
    # bank's own spread (std 0.03): the spread of a single run is unknown, retrain's is not.
    bank = [{**reference, "acc_retain_test": 0.95 + 0.03 * (-1) ** i}
            for i, reference in enumerate(world["bank"])]
    retrain = {**world["retrain"], "acc_retain_test": 0.92}
    audit = audit_method([retrain], bank, world["retrain"], "acc_retain_test")
    assert abs(audit["gaps"]["heldout"]) > 0.02
    assert audit["verdict"] == "indistinguishable from retrain within the seeds' spread"
