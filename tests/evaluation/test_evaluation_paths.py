"""Every way of obtaining a module evaluates the weights it holds, and nothing else.

Fit, ``Trainer.test(ckpt_path=...)``, ``load_from_checkpoint``, ``evaluate(path)`` and
``export_network`` + a plain network give identical numbers for every method; evaluation refuses
weights that are not a result and checkpoints of another forget request; the validation probe
never sees a test sample; DDP counts every sample once.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import NETWORK, REPO, make_datamodule, make_trainer, model_kwargs
from unlearn_pl.cli import main
from unlearn_pl.evaluation import evaluate
from unlearn_pl.methods import Train, UnlearningModule, available_methods
from unlearn_pl.networks import build_network

METHODS = available_methods()
UNLEARNING = sorted(name for name, cls in METHODS.items() if cls.requires_original)
# Numbers that depend only on the weights and the data (not on the run's wall time).
TIMELESS = ("fit_seconds",)


def _numbers(results: dict[str, float]) -> dict[str, float]:
    return {k.removeprefix("test/"): v for k, v in results.items()
            if k.removeprefix("test/") not in TIMELESS}


def _test(module: UnlearningModule, tmp_path: Path, **kwargs: Any) -> dict[str, float]:
    trainer = make_trainer(tmp_path / "test", enable_checkpointing=False)
    trainer.test(module, datamodule=make_datamodule(), verbose=False, **kwargs)
    return _numbers(module.last_evaluation)


def _fit(name: str, original: str, tmp_path: Path) -> tuple[UnlearningModule, Path]:
    seed_everything(0)
    datamodule = make_datamodule()
    module = METHODS[name](original=original, **model_kwargs(datamodule))
    trainer = make_trainer(tmp_path / "fit", max_epochs=1, limit_train_batches=2,
                           limit_val_batches=0,
                           callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    trainer.fit(module, datamodule=datamodule)
    return module, tmp_path / "ckpt" / "last.ckpt"


@pytest.mark.parametrize("name", UNLEARNING)
def test_every_path_evaluates_the_unlearned_weights(name: str, original_ckpt: str,
                                                    tmp_path: Path) -> None:
    # The original lives in its own folder so that it can be deleted afterwards.
    original = tmp_path / "original" / "original.ckpt"
    original.parent.mkdir()
    shutil.copy(original_ckpt, original)
    fitted, checkpoint = _fit(name, str(original), tmp_path)
    expected = _test(fitted, tmp_path)
    weights = {k: v.clone() for k, v in fitted.network.state_dict().items()}
    kwargs = model_kwargs(make_datamodule())

    # The unlearned network differs from the original on the forget set (else the paths
    # below could not be told apart).
    original_numbers = _numbers(evaluate(original_ckpt, make_datamodule()))
    assert original_numbers != expected

    # `unlearn-pl test --ckpt_path`: a fresh module built on the original, then the checkpoint.
    fresh = METHODS[name](original=str(original), **kwargs)
    assert _test(fresh, tmp_path, ckpt_path=str(checkpoint)) == expected
    # The report's own loader, and a plain network from export_network.
    assert _numbers(evaluate(checkpoint, make_datamodule())) == expected
    network = build_network(NETWORK["arch"], kwargs["num_classes"], kwargs["in_channels"],
                            width=NETWORK["width"])
    network.load_state_dict(torch.load(fitted.export_network(tmp_path / "network.pt"),
                                       weights_only=True))
    assert _numbers(evaluate(network, make_datamodule())) == expected

    # load_from_checkpoint, with the original deleted: the checkpoint holds every weight.
    original.unlink()
    loaded = METHODS[name].load_from_checkpoint(checkpoint)
    for key, value in weights.items():
        torch.testing.assert_close(loaded.network.state_dict()[key], value, rtol=0, atol=0)
    assert _test(loaded, tmp_path) == expected
    # ... and Trainer.test(ckpt_path) on a module whose original is gone, or not given.
    for original_arg in (str(original), None):
        module = METHODS[name](original=original_arg, **kwargs)
        assert _test(module, tmp_path, ckpt_path=str(checkpoint)) == expected


@pytest.mark.parametrize("name", ["FineTune", "SCRUB"])
def test_a_method_holding_the_original_is_not_evaluated(name: str, original_ckpt: str,
                                                        tmp_path: Path) -> None:
    module = METHODS[name](original=original_ckpt, **model_kwargs(make_datamodule()))
    assert module.weights_source == "original"
    with pytest.raises(ValueError, match="holds the original network's weights"):
        _test(module, tmp_path)
    untrained = METHODS[name](**model_kwargs(make_datamodule()))
    with pytest.raises(ValueError, match="randomly initialised weights"):
        _test(untrained, tmp_path)


@pytest.mark.parametrize("name", UNLEARNING)
def test_methods_refuse_to_fit_without_an_original(name: str, tmp_path: Path) -> None:
    datamodule = make_datamodule()
    module = METHODS[name](**model_kwargs(datamodule))
    trainer = make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(ValueError, match="set model.init_args.original"):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 0


def test_a_checkpoint_refuses_another_forget_request(original_ckpt: str, tmp_path: Path) -> None:
    _, checkpoint = _fit("FineTune", original_ckpt, tmp_path)
    other = make_datamodule(forget_classes=[2])
    message = r"unlearned for the forget request \{'forget_classes': \[1\].*\[2\]"
    with pytest.raises(ValueError, match=message):
        evaluate(checkpoint, other)
    module = METHODS["FineTune"].load_from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path).test(module, datamodule=other, verbose=False)
    fresh = METHODS["FineTune"](original=original_ckpt, **model_kwargs(other))
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path).test(fresh, datamodule=other, ckpt_path=str(checkpoint),
                                    verbose=False)
    # The original was trained on everything: any request may evaluate it.
    assert evaluate(original_ckpt, other)["acc_forget"] > 0


# ---------------------------------------------------------------- validation probe
class ProbeIds(Callback):
    """Records the sample ids of every validation batch, per probe split."""

    def __init__(self) -> None:
        self.ids: dict[str, set[int]] = {}

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        split = trainer.datamodule.val_splits[dataloader_idx]  # type: ignore[attr-defined]
        self.ids.setdefault(split, set()).update(batch[2].tolist())


@pytest.mark.parametrize("request_kwargs", [
    {"forget_classes": [1]}, {"forget_fraction": 0.25},
    {"num_groups": 6, "forget_groups": [0, 4]},
    {"num_test": None, "forget_classes": [1]}], ids=["class", "sample", "group", "carved"])
def test_no_test_sample_reaches_a_val_metric(request_kwargs: dict[str, Any],
                                             tmp_path: Path) -> None:
    datamodule = make_datamodule(**request_kwargs)
    held_out = {"unseen", "retain_test", "forget_test"}
    test_ids = set().union(*(set(datamodule.split_ids()[s]) for s in held_out
                             if s in datamodule.splits))
    probe = ProbeIds()
    module = Train(train_on="full", **model_kwargs(datamodule))
    make_trainer(tmp_path, limit_train_batches=1, callbacks=[probe]).fit(
        module, datamodule=datamodule)
    assert set(probe.ids) == set(datamodule.val_splits)
    for split, ids in probe.ids.items():
        if split in held_out:
            assert ids == set(datamodule.split_ids()[f"validation/{split}"])
            assert not ids & test_ids, f"test samples reached val/ on {split}"
    if datamodule.class_wise:  # the forgotten classes or groups are in both
        assert probe.ids["forget_test"] and datamodule.split_ids()["forget_test"]
    # The test numbers do come from the test split, and splits.json records both.
    record = (tmp_path / "splits.json").read_text()
    assert '"validation/unseen"' in record and '"validation_ids_index"' in record


# ---------------------------------------------------------------- DDP
def test_ddp_counts_every_sample_once(original_ckpt: str, tmp_path: Path) -> None:
    # 97 held-out samples: every split of odd size somewhere, so DDP pads.
    def numbers(**trainer_kwargs: Any) -> dict[str, float]:
        datamodule = make_datamodule(num_test=97, eval_batch_size=16)
        trainer = make_trainer(tmp_path / str(len(trainer_kwargs)), **trainer_kwargs)
        results = trainer.test(Train.load_from_checkpoint(original_ckpt),
                               datamodule=datamodule, verbose=False)[0]
        return _numbers(results)

    sizes = [len(ids) for ids in make_datamodule(num_test=97).split_ids().values()]
    assert any(size % 2 for size in sizes)
    single = numbers()
    double = numbers(strategy="ddp_spawn", devices=2)
    assert set(single) == set(double)
    for key, value in single.items():
        assert double[key] == value, key


# ---------------------------------------------------------------- the CLI
CLI_DATA = ["--data", "unlearn_pl.data.SyntheticDataModule", "--data.num_samples", "192",
            "--data.num_test", "96", "--data.image_size", "12", "--data.augment", "false",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--model.init_args.arch", "tiny_cnn",
            "--model.init_args.width", "0.5"]


def _cli(subcommand: str, root: Path, *extra: str, forget: str = "[1]") -> None:
    main([subcommand, "--config", str(REPO / "configs" / "methods" / "finetune.yaml"),
          *CLI_DATA, "--data.forget_classes", forget, "--trainer.default_root_dir", str(root),
          "--trainer.logger", "false", *extra])


def test_cli_test_evaluates_the_checkpoint_without_its_original(
        original_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.argv", ["unlearn-pl"])
    original = tmp_path / "original" / "original.ckpt"
    original.parent.mkdir()
    shutil.copy(original_ckpt, original)
    _cli("fit", tmp_path / "fit", "--model.init_args.original", str(original),
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2")
    (checkpoint,) = (tmp_path / "fit" / "checkpoints").glob("*.ckpt")
    expected = _numbers(evaluate(checkpoint, make_datamodule()))

    # A method config tested without a checkpoint would report the original as the result:
    # refused as one line (exit 2), writing no report and leaving no folder.
    with pytest.raises(SystemExit) as refused:
        _cli("test", tmp_path / "no_ckpt", "--model.init_args.original", str(original))
    assert refused.value.code == 2
    assert capsys.readouterr().err.startswith(
        "unlearn-pl: error: FineTune holds the original network's weights")
    assert not (tmp_path / "no_ckpt").exists()
    # Another forget request than the checkpoint's is refused, naming both.
    with pytest.raises(SystemExit):
        _cli("test", tmp_path / "other", "--ckpt_path", str(checkpoint), forget="[2]")
    assert re.search(r"unlearned for the forget request \{'forget_classes': \[1\].*\[2\]",
                     capsys.readouterr().err)

    original.unlink()  # the unlearned checkpoint holds every weight it needs
    for extra in ([], ["--model.init_args.original", "null"]):
        root = tmp_path / f"test{len(extra)}"
        _cli("test", root, "--ckpt_path", str(checkpoint), *extra)
        report = json.loads((root / "report.json").read_text())
        assert report["weights"] == "checkpoint"
        assert {k: report["metrics"][k] for k in expected} == expected
