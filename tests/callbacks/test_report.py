"""`unlearn-pl test` writes the unlearning report, through the real CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import seed_everything

from tests.conftest import NETWORK, SYNTHETIC, make_datamodule, make_trainer, model_kwargs
from unlearn_pl.callbacks import UnlearningReport
from unlearn_pl.cli import main
from unlearn_pl.evaluation import evaluate, load_checkpoint_for_evaluation
from unlearn_pl.methods import Train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# The synthetic world of tests/conftest.py, class 1 forgotten, as command-line options.
DATA = ["--data", "unlearn_pl.data.SyntheticDataModule", "--data.forget_classes", "[1]",
        *[a for k, v in SYNTHETIC.items() for a in (f"--data.{k}", _value(v))]]
TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def cli_fit(root: Path, epochs: int) -> str:
    """An original network trained on all training data through `unlearn-pl fit`."""
    main(["fit", *DATA, *TRAINER, "--model", "unlearn_pl.methods.Train",
          "--model.train_on", "full", "--model.lr", "0.05",
          *[a for k, v in NETWORK.items() for a in (f"--model.{k}", str(v))],
          "--trainer.max_epochs", str(epochs), "--trainer.limit_val_batches", "0",
          "--trainer.default_root_dir", str(root)])
    (checkpoint,) = (root / "checkpoints").glob("*.ckpt")
    return str(checkpoint)


def cli_test(root: Path, checkpoint: str, *extra: str) -> dict[str, Any]:
    main(["test", *DATA, *TRAINER, "--model", "unlearn_pl.methods.Train",
          "--model.arch", NETWORK["arch"], "--trainer.default_root_dir", str(root),
          "--ckpt_path", checkpoint, *extra])
    return json.loads((root / "report.json").read_text())


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when pytest's own arguments sit beside the args it is given.
    monkeypatch.setattr(sys, "argv", ["unlearn-pl"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An original trained through `unlearn-pl fit` (3 epochs) and a retrain reference (retain
    only, 2 epochs) with its report written by a plain `Trainer.test`."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["unlearn-pl"])
        original = cli_fit(root / "original", 3)
    seed_everything(0)
    datamodule = make_datamodule()
    retrain = Train(train_on="retain", lr=0.05, **model_kwargs(datamodule))
    make_trainer(root / "retrain", max_epochs=2, enable_checkpointing=False,
                 limit_val_batches=0).fit(retrain, datamodule=datamodule)
    retrain_ckpt = root / "retrain.ckpt"
    retrain.trainer.save_checkpoint(retrain_ckpt)
    report = UnlearningReport(print_table=False)
    make_trainer(root / "retrain_report", callbacks=[report]).test(
        Train.load_from_checkpoint(retrain_ckpt), datamodule=make_datamodule(), verbose=False)
    return {"original": original, "retrain": str(retrain_ckpt),
            "retrain_report": str(root / "retrain_report" / "report.json")}


def test_report_without_reference(runs: dict[str, Any]) -> None:
    report = json.loads(Path(runs["retrain_report"]).read_text())
    assert report["method"] == "Train" and report["hparams"]["train_on"] == "retain"
    assert report["reference"] is None and report["gaps"] is None
    saved = torch.load(runs["retrain"], weights_only=True)["unlearn_pl"]["fit_seconds"]
    assert report["metrics"]["fit_seconds"] == pytest.approx(saved) and saved > 0
    markdown = (Path(runs["retrain_report"]).parent / "report.md").read_text()
    assert "| metric | result |" in markdown and "reference" not in markdown
    assert f"| nomus | {report['metrics']['nomus']:.4f} |" in markdown


def test_cli_test_writes_the_report(runs: dict[str, Any], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    report = cli_test(tmp_path, runs["original"], "--report.reference", runs["retrain_report"])
    printed = capsys.readouterr().out

    datamodule = make_datamodule()
    expected = evaluate(runs["original"], datamodule)
    assert set(report["metrics"]) == set(expected)
    for key, value in expected.items():
        assert report["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    # The unlearning time is the checkpoint's, not the few milliseconds of the test run.
    saved = torch.load(runs["original"], weights_only=True)["unlearn_pl"]["fit_seconds"]
    assert report["metrics"]["fit_seconds"] == pytest.approx(saved) and saved > 0

    assert report["method"] == "Train"
    assert report["hparams"]["train_on"] == "full" and report["hparams"]["arch"] == "tiny_cnn"
    assert "_class_path" not in report["hparams"]
    assert report["forget_request"]["forget_classes"] == [1]
    assert report["dataset"]["mia_nonmember_split"] == "forget_test"
    assert report["dataset"]["split_sizes"] == {s: len(datamodule.splits[s][2])
                                                for s in datamodule.eval_splits}
    assert report["checkpoint"] == runs["original"]
    assert {"unlearn_pl", "torch", "lightning"} <= set(report["versions"])
    # The per-sample losses behind the plot are the ones the module averaged.
    for split in ("forget", "forget_test"):
        losses = report["losses"][split]
        assert len(losses) == report["dataset"]["split_sizes"][split]
        assert sum(losses) / len(losses) == pytest.approx(report["metrics"][f"loss_{split}"],
                                                          rel=1e-5)

    # Retrain's numbers beside the result, the gaps and the time ratio.
    result = report["metrics"]
    ref = json.loads(Path(runs["retrain_report"]).read_text())["metrics"]
    assert report["reference"]["metrics"] == ref and report["reference"]["method"] == "Train"
    gaps = report["gaps"]
    for key in [k for k in result if k != "fit_seconds"]:
        assert gaps[key] == pytest.approx(result[key] - ref[key]), key
    assert gaps["time_ratio"] == pytest.approx(result["fit_seconds"] / ref["fit_seconds"])
    headline = [k for k in result if k.startswith("acc_")] + ["forgetting_score"]
    assert gaps["avg_gap"] == pytest.approx(
        sum(abs(result[k] - ref[k]) for k in headline) / len(headline))

    markdown = (tmp_path / "report.md").read_text()
    row = (f"| acc_forget | {result['acc_forget']:.4f} | {ref['acc_forget']:.4f} | "
           f"{gaps['acc_forget']:+.4f} |")
    assert row in markdown and row in printed
    assert f"| fit_seconds | {result['fit_seconds']:.2f} | {ref['fit_seconds']:.2f} | " \
           f"×{gaps['time_ratio']:.3f} |" in markdown
    assert (tmp_path / "loss_distribution.png").read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_cli_checkpoint_reference(runs: dict[str, Any], tmp_path: Path) -> None:
    """A checkpoint reference is evaluated on the same data: retrain's report numbers."""
    report = cli_test(tmp_path, runs["original"], "--report.reference", runs["retrain"])
    ref = json.loads(Path(runs["retrain_report"]).read_text())["metrics"]
    assert report["reference"]["source"] == runs["retrain"]
    for key, value in ref.items():
        assert report["reference"]["metrics"][key] == pytest.approx(value, rel=1e-6), key
    result = report["metrics"]
    assert report["gaps"]["forgetting_score"] == pytest.approx(
        result["forgetting_score"] - ref["forgetting_score"])
    assert report["gaps"]["time_ratio"] == pytest.approx(
        result["fit_seconds"] / ref["fit_seconds"])
    assert (tmp_path / "loss_distribution.png").read_bytes()[:8] == PNG_MAGIC


def test_reference_from_another_request_is_refused(runs: dict[str, Any], tmp_path: Path) -> None:
    other = json.loads(Path(runs["retrain_report"]).read_text())
    other["forget_request"]["forget_classes"] = [2]
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    module, _ = load_checkpoint_for_evaluation(runs["original"])
    trainer = make_trainer(tmp_path / "run", callbacks=[UnlearningReport(reference=str(path))])
    with pytest.raises(ValueError, match="another dataset or forget request"):
        trainer.test(module, datamodule=make_datamodule(), verbose=False)
    assert not (tmp_path / "run" / "report.json").exists()


def test_missing_reference_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="retrain run"):
        UnlearningReport(reference=str(tmp_path / "nowhere.json"))


def test_small_attacks_are_warned_in_the_report_files(original_ckpt: str, tmp_path: Path) -> None:
    for count, warned in ((6, True), (40, False)):
        report = UnlearningReport(print_table=False)
        make_trainer(tmp_path / str(count), callbacks=[report]).test(
            Train.load_from_checkpoint(original_ckpt), datamodule=make_datamodule(
                forget_count=count), verbose=False)
        record = json.loads((tmp_path / str(count) / "report.json").read_text())
        markdown = (tmp_path / str(count) / "report.md").read_text()
        assert bool(record["warnings"]) == warned
        if warned:
            assert f"{count} members" in record["warnings"][0]
            assert f"- warning: {record['warnings'][0]}" in markdown


def test_the_old_report_module_still_imports_with_a_warning() -> None:
    import importlib

    import unlearn_pl.report as old

    with pytest.warns(DeprecationWarning, match="unlearn_pl.evaluation"):
        importlib.reload(old)
    assert old.evaluate is evaluate and old.UnlearningReport is UnlearningReport
