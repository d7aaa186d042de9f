"""Every shipped config runs through the real CLI on tiny data, and the CLI refuses bad input
before anything is written."""

from __future__ import annotations

import csv
import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import SingleDeviceStrategy

from tests.conftest import REPO, config_data_root
from unlearn_pl.cli import UnlearnInputError, main, run_cli

CONFIGS = REPO / "configs"
# The shipped method configs and the tuned recipes (configs/tuned/<setting>/).
METHOD_CONFIGS = [*sorted((CONFIGS / "methods").glob("*.yaml")),
                  *sorted((CONFIGS / "tuned").glob("*/*.yaml"))]
SYNTHETIC_DATA = ["--data", "unlearn_pl.data.SyntheticDataModule", "--data.num_samples", "96",
                  "--data.num_test", "64", "--data.image_size", "12", "--data.forget_classes",
                  "[1]", "--data.augment", "false"]
TINY = ["--model.init_args.arch", "tiny_cnn", "--model.init_args.width", "0.5"]


def quiet(root: Path) -> list[str]:
    return ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root), "--trainer.accelerator", "cpu"]


def network_weights(source: LightningModule | str | Path) -> dict[str, torch.Tensor]:
    """The network's floating-point weights, from a module or a Lightning checkpoint."""
    if isinstance(source, str | Path):
        state = torch.load(source, weights_only=True)["state_dict"]
        state = {k.removeprefix("network."): v for k, v in state.items()
                 if k.startswith("network.")}
    else:
        state = source.network.state_dict()
    return {k: v.detach().float() for k, v in state.items() if v.is_floating_point()}


def files_and_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command, expect the one-line refusal (status 2) and return its message."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("unlearn-pl: error: "), first
    return first


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when pytest's own arguments sit beside the args it is given.
    monkeypatch.setattr(sys, "argv", ["unlearn-pl"])


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--version"])
    assert "unlearn_pl 0.2.0" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    assert "--model" in capsys.readouterr().out


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "unlearn_pl", "--version"],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0 and "unlearn_pl" in result.stdout


@pytest.mark.parametrize("config", METHOD_CONFIGS,
                         ids=lambda p: str(p.relative_to(CONFIGS).with_suffix("")))
def test_method_config_runs_fast_dev_run(config: Path, original_ckpt: str,
                                         tmp_path: Path) -> None:
    args = ["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config", str(config),
            *SYNTHETIC_DATA, *TINY, "--trainer.fast_dev_run", "true", *quiet(tmp_path)]
    trains = config.stem in ("original", "retrain")
    if not trains:
        args += ["--model.init_args.original", original_ckpt]
    k = (yaml.safe_load(config.read_text())["model"].get("init_args") or {}).get("k")
    if k is not None and k > 2:  # a recipe of resnet18's blocks; the tiny network has 3
        args += ["--model.init_args.k", "2"]
    cli = run_cli(args)
    trainer, model = cli.trainer, cli.model
    assert trainer.state.finished
    assert model.hparams.original == (None if trains else original_ckpt)
    # the config's method ran its fit and the evaluation logged its numbers
    assert type(model).__name__ == yaml.safe_load(config.read_text())["model"][
        "class_path"].rsplit(".", 1)[-1]
    assert {"val/nomus", "val/forgetting_score", "val/acc_forget"} <= set(trainer.callback_metrics)
    if trains:
        assert trainer.global_step == 1  # one optimizer step on the one fast_dev_run batch
    elif getattr(model, "dampened", None) == 0:  # SSD found no parameter to dampen: allowed
        assert model.applied
    else:  # the unlearning moved the weights away from the original's
        original, after = network_weights(original_ckpt), network_weights(model)
        assert any(not torch.equal(original[k], after[k]) for k in original if k in after)


@pytest.mark.parametrize("way", ["config", "callback"])
@pytest.mark.parametrize("method", ["neggrad", "random_labels"])
def test_one_config_line_stops_a_method_once_the_class_is_forgotten(
        method: str, way: str, original_ckpt: str, tmp_path: Path) -> None:
    line = (["--config", str(CONFIGS / "callbacks" / "stop_when_forgotten.yaml")]
            if way == "config" else ["--trainer.callbacks+=unlearn_pl.callbacks.StopWhenForgotten",
                                     "--trainer.val_check_interval", "1",
                                     "--trainer.check_val_every_n_epoch", "null"])
    args = ["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
            str(CONFIGS / "methods" / f"{method}.yaml"), *line, *SYNTHETIC_DATA, *TINY,
            "--model.init_args.original", original_ckpt, "--model.init_args.lr", "0.05",
            "--trainer.max_epochs", "20", *quiet(tmp_path)]
    trainer = run_cli(args).trainer
    stop = next(c for c in trainer.callbacks if type(c).__name__ == "StopWhenForgotten")
    assert stop.stopped == "forgotten" and stop.monitor == "val/acc_forget"
    assert trainer.callback_metrics["val/acc_forget"] <= 0.02
    assert trainer.global_step == stop.stop_step < 20 * trainer.num_training_batches


@pytest.mark.parametrize("trainer_kind", ["cpu", "bf16"])
def test_trainer_configs_run(trainer_kind: str, tmp_path: Path) -> None:
    configs = ["--config", str(CONFIGS / "trainer" / "cpu.yaml")]
    if trainer_kind == "bf16":
        configs += ["--config", str(CONFIGS / "trainer" / "bf16.yaml")]

    cli = run_cli(["fit", *configs, "--config", str(CONFIGS / "methods" / "original.yaml"),
                   *SYNTHETIC_DATA, *TINY, "--trainer.max_epochs", "1",
                   "--trainer.limit_train_batches", "2", "--trainer.logger.init_args.version",
                   "run", *quiet(tmp_path)])
    trainer = cli.trainer
    assert isinstance(trainer.accelerator, CPUAccelerator)
    assert isinstance(trainer.strategy, SingleDeviceStrategy) and trainer.world_size == 1
    assert trainer.precision == ("bf16-mixed" if trainer_kind == "bf16" else "32-true")
    assert trainer.limit_train_batches == 2 and trainer.global_step == 2
    run = tmp_path / "lightning_logs" / "run"
    for name in ("config.yaml", "splits.json", "metrics.csv", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == ("bf16-mixed" if trainer_kind == "bf16" else None)
    with (run / "metrics.csv").open() as handle:
        logged = [row for row in csv.DictReader(handle) if row.get("val/nomus")]
    assert len(logged) == 1 and 0.0 <= float(logged[0]["val/nomus"]) <= 1.0


def test_bf16_config_computes_in_bfloat16(tmp_path: Path) -> None:
    cli = run_cli(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
                   str(CONFIGS / "trainer" / "bf16.yaml"), "--config",
                   str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA, *TINY,
                   "--trainer.fast_dev_run", "true", *quiet(tmp_path)])
    images = torch.randn(2, 3, 12, 12)
    with cli.trainer.precision_plugin.forward_context():
        assert cli.model(images).dtype == torch.bfloat16


class RankWitness(Callback):
    """Each DDP process writes which rank of how many it was, and its process id."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"world_size": trainer.world_size, "pid": os.getpid()}))


def test_ddp_config_runs_two_cpu_processes(tmp_path: Path) -> None:
    """configs/trainer/ddp.yaml as shipped (strategy ddp) on 2 CPU processes through the real
    command: two ranks train, no metric is logged unsynchronised (Lightning's sync_dist warning),
    and the effective global batch (per-process batch x processes x accumulation) is logged."""
    command = [sys.executable, "-m", "unlearn_pl", "fit", "--config",
               str(CONFIGS / "trainer" / "ddp.yaml"), "--config",
               str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA, *TINY,
               "--data.batch_size", "16", "--trainer.devices", "2",
               "--trainer.accumulate_grad_batches", "2", "--trainer.max_epochs", "1",
               "--trainer.limit_train_batches", "2", "--trainer.num_sanity_val_steps", "0",
               "--trainer.logger.init_args.version", "ddp",
               "--trainer.callbacks+=tests.test_cli.RankWitness", *quiet(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["pid"] != ranks[1]["pid"]
    output = result.stdout + result.stderr
    assert "sync_dist" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if "effective global batch" in line]
    assert len(lines) == 1, output[-3000:]  # once, on rank zero
    assert "train 16 x 2 x 2 = 64" in lines[0]
    run = tmp_path / "lightning_logs" / "ddp"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    with (run / "metrics.csv").open() as handle:
        assert any(row.get("val/nomus") for row in csv.DictReader(handle))


def test_single_process_fit_logs_its_global_batch(original_ckpt: str, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("lightning.pytorch")  # does not propagate to caplog's root
    logger.addHandler(caplog.handler)
    try:
        run_cli(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
                 str(CONFIGS / "methods" / "neggrad_plus.yaml"), *SYNTHETIC_DATA, *TINY,
                 "--data.batch_size", "8", "--data.forget_batch_size", "4",
                 "--trainer.fast_dev_run", "true", *quiet(tmp_path),
                 "--model.init_args.original", original_ckpt])
    finally:
        logger.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if "effective global batch" in r.getMessage()]
    assert len(lines) == 1 and "retain 8 x 1 x 1 = 8, forget 4 x 1 x 1 = 4" in lines[0]


def _data_config_root(config: Path, shared_data: Path) -> Path | None:
    """Where the data a config names lies here (``../shared/data/...`` in the ``--shared-data``
    folder); None for embedded data (digits)."""
    root = yaml.safe_load(config.read_text())["data"]["init_args"].get("root")
    return None if root is None else config_data_root(root, shared_data)


DATA_CONFIGS = sorted((CONFIGS / "data").glob("*.yaml"))
FAST_DATA = {"digits", "olivetti"}


@pytest.mark.parametrize("config", [
    pytest.param(p, marks=[] if p.stem in FAST_DATA else [pytest.mark.slow])
    for p in DATA_CONFIGS], ids=lambda p: p.stem)
def test_data_config_runs_fast_dev_run(config: Path, tmp_path: Path, shared_data: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = _data_config_root(config, shared_data)
    if root is not None and not root.exists():
        pytest.skip(f"the data of {config.name} is not on this machine ({root})")
    monkeypatch.chdir(REPO)  # data configs name their data relative to the repository
    where = [] if root is None else ["--data.init_args.root", str(root)]
    cli = run_cli(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
                   str(CONFIGS / "methods" / "original.yaml"), "--config", str(config),
                   *where, "--trainer.fast_dev_run", "true", *quiet(tmp_path)])
    data = yaml.safe_load(config.read_text())["data"]
    datamodule, model = cli.datamodule, cli.model
    assert f"{type(datamodule).__module__}.{type(datamodule).__name__}".endswith(
        data["class_path"].rsplit(".", 1)[-1])
    # the dataset's properties reached the model, and one real batch went through it
    assert model.hparams.num_classes == datamodule.num_classes
    assert model.hparams.in_channels == datamodule.num_channels
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert "val/nomus" in cli.trainer.callback_metrics
    request = {k: v for k, v in data["init_args"].items() if k.startswith("forget_")
               and k != "forget_batch_size"}
    for key, value in request.items():
        assert datamodule.hparams[key] == value
    assert len(datamodule.splits["forget"][2]) > 0


def test_fit_then_test_resume_and_report_time(tmp_path: Path) -> None:
    common = ["--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
              str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA, *TINY,
              *quiet(tmp_path), "--model.init_args.scheduler", "none"]  # one-cycle cannot extend
    main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.logger.init_args.version", "0"])
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 0 and state["unlearn_pl"]["fit_seconds"] > 0
    # resuming continues the same run in its own folder
    main(["fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", str(last),
          "--trainer.logger.init_args.version", "0"])
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 1
    # both timers continue across the resume instead of restarting from zero
    for key in ("fit_seconds", "validation_seconds"):
        assert resumed["unlearn_pl"][key] >= state["unlearn_pl"][key]
    assert resumed["unlearn_pl"]["fit_seconds"] > state["unlearn_pl"]["fit_seconds"]
    fit_files = files_and_bytes(tmp_path / "lightning_logs" / "version_0")
    main(["test", *common, "--ckpt_path", str(last)])  # its own folder: the next version
    report = json.loads((tmp_path / "lightning_logs" / "version_1" / "report.json").read_text())
    assert report["checkpoint"] == str(last)
    assert report["metrics"]["fit_seconds"] == pytest.approx(resumed["unlearn_pl"]["fit_seconds"])
    assert files_and_bytes(tmp_path / "lightning_logs" / "version_0") == fit_files


def _train_an_original_run(root: Path) -> Path:
    """An original trained through the CLI into root/lightning_logs/original."""
    main(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
          str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA, *TINY,
          "--trainer.max_epochs", "1", "--trainer.logger.init_args.version", "original",
          *quiet(root)])
    run = root / "lightning_logs" / "original"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.csv").is_file()
    return run


def test_run_into_the_originals_folder_is_refused_before_writing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _train_an_original_run(tmp_path)
    before = files_and_bytes(tmp_path)
    original = str(run / "checkpoints" / "last.ckpt")
    unlearn = ["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
               str(CONFIGS / "methods" / "finetune.yaml"), *SYNTHETIC_DATA, *TINY,
               "--model.init_args.original", original, "--trainer.max_epochs", "1",
               *quiet(tmp_path)]
    # the logger's folder is the original's run folder
    message = refused([*unlearn, "--trainer.logger.init_args.version", "original"], capsys)
    assert "run folder of the original checkpoint" in message and "never be modified" in message
    # only the checkpoint folder points there
    message = refused([*unlearn, "--trainer.logger.init_args.version", "mine",
                       "--trainer.callbacks.dirpath", str(run / "checkpoints")], capsys)
    assert "checkpoint folder" in message
    # the test of the original, reporting into its folder
    message = refused(["test", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
                       str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA, *TINY,
                       "--ckpt_path", original, "--trainer.logger.init_args.version", "original",
                       *quiet(tmp_path)], capsys)
    assert "checkpoint under test" in message
    assert files_and_bytes(tmp_path) == before  # byte-identical, nothing added


def test_run_into_another_runs_folder_is_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = _train_an_original_run(tmp_path)
    before = files_and_bytes(tmp_path)
    message = refused(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
                       str(CONFIGS / "methods" / "retrain.yaml"), *SYNTHETIC_DATA, *TINY,
                       "--trainer.max_epochs", "1", "--trainer.logger.init_args.version",
                       "original", *quiet(tmp_path)], capsys)
    assert f"{run} (this run's log folder) already holds another run's files" in message
    assert files_and_bytes(tmp_path) == before


def test_original_checkpoint_is_never_overwritten(original_ckpt: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    before = files_and_bytes(Path(original_ckpt).parent)
    message = refused(["fit", "--config", str(CONFIGS / "methods" / "finetune.yaml"),
                       *SYNTHETIC_DATA, *TINY, "--model.init_args.original", original_ckpt,
                       "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
                       "--trainer.default_root_dir", str(tmp_path),
                       "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath",
                       str(Path(original_ckpt).parent)], capsys)
    assert "must never be modified" in message
    assert files_and_bytes(Path(original_ckpt).parent) == before
    assert not any(tmp_path.iterdir())


def test_bad_original_is_refused_before_training(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    message = refused(["fit", "--config", str(CONFIGS / "methods" / "finetune.yaml"),
                       *SYNTHETIC_DATA, *TINY, "--model.init_args.original",
                       str(tmp_path / "missing.ckpt"), "--trainer.default_root_dir",
                       str(tmp_path / "run")], capsys)
    assert "missing.ckpt does not exist" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", ["max_epochs", "max_steps", "limit_train_batches"])
def test_fit_that_trains_nothing_is_refused(option: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    message = refused(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
                       str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA, *TINY,
                       f"--trainer.{option}", "0", *quiet(tmp_path / "runs")], capsys)
    assert f"trainer.{option} is 0: the fit would train nothing" in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--model.init_args.lr", "-1", "lr must be positive, got -1.0"),
    ("--data.batch_size", "0", "batch_size must be at least 1, got 0"),
])
def test_constructor_errors_come_first(option: str, value: str, expected: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = ["fit", "--config", str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA,
            *TINY, option, value, "--trainer.default_root_dir", str(tmp_path / "run")]
    assert refused(args, capsys) == f"unlearn-pl: error: {expected}"
    with pytest.raises(UnlearnInputError) as error:  # the CLI used from Python
        run_cli(args)
    assert str(error.value).splitlines()[0] == expected
    assert "Union" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_run_refused_during_setup_leaves_no_folder(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The report's reference is checked in setup, after the logger made the run's folder and
    the datamodule wrote splits.json: the refused run removes them, so the next run is
    version_0 as if the refused one never happened."""
    checkpoint = str(_train_an_original_run(tmp_path / "original") / "checkpoints" / "last.ckpt")
    reference = tmp_path / "other_request.json"
    reference.write_text(json.dumps({"metrics": {}, "dataset": {"class_path": "elsewhere"},
                                     "forget_request": {"forget_classes": [2]}}))
    common = ["--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
              str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA, *TINY,
              *quiet(tmp_path / "runs"), "--ckpt_path", checkpoint]
    with pytest.raises(SystemExit) as refused:  # one line, like the construction checks
        main(["test", *common, "--report.reference", str(reference)])
    assert refused.value.code == 2
    assert "another dataset or forget request" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    main(["test", *common])
    assert [p.name for p in (tmp_path / "runs" / "lightning_logs").iterdir()] == ["version_0"]
    assert (tmp_path / "runs" / "lightning_logs" / "version_0" / "report.json").is_file()


def _readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    block = text[text.index("## Using it"):]
    block = block[:block.index("\n\n", block.index("    unlearn-pl"))]
    lines = [line.strip() for line in block.splitlines() if line.startswith("    ")]
    joined = " ".join(line for line in lines if not line.startswith("#"))
    return [shlex.split("unlearn-pl" + c.replace("\\", " ")) for c in
            joined.split("unlearn-pl")[1:]]


def test_readme_commands_use_only_files_earlier_commands_write() -> None:
    """Every path the README's "Using it" commands pass in (original, checkpoint, reference)
    is one an earlier command writes: a fit writes checkpoints/last.ckpt into its log folder, a
    test writes report.json; and no two commands share a folder."""
    written: set[str] = set()
    folders: list[str] = []
    commands = _readme_commands()
    assert len(commands) == 4
    for command in commands:
        options = dict(zip(command[2::2], command[3::2], strict=False))
        for key in ("--model.init_args.original", "--ckpt_path", "--report.reference"):
            if key in options:
                assert options[key] in written, f"{key} {options[key]} is written by no " \
                    "earlier command"
        for config in [v for k, v in zip(command, command[1:], strict=False) if k == "--config"]:
            assert (REPO / config).is_file(), config
        folder = f"runs/lightning_logs/{options['--trainer.logger.init_args.version']}"
        assert folder not in folders
        folders.append(folder)
        written.add(f"{folder}/checkpoints/last.ckpt" if command[1] == "fit"
                    else f"{folder}/report.json")


def test_a_second_request_unlearns_the_first_ones_result(original_ckpt: str,
                                                        tmp_path: Path) -> None:
    data = [arg for arg in SYNTHETIC_DATA if arg not in ("--data.forget_classes", "[1]")]
    common = ["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
              str(CONFIGS / "methods" / "finetune.yaml"), *data, *TINY,
              "--trainer.max_epochs", "1", "--trainer.logger.init_args.version", "run"]
    run_cli([*common, "--data.forget", "unlearn_pl.data.ForgetClasses",
             "--data.forget.classes", "[1]", "--model.init_args.original", original_ckpt,
             *quiet(tmp_path / "first")])
    first = tmp_path / "first" / "lightning_logs" / "run"
    produced = json.loads((first / "splits.json").read_text())["requests"]
    assert produced[0]["checkpoint"] == str((first / "checkpoints" / "last.ckpt").resolve())
    cli = run_cli([*common, "--data.forget", "unlearn_pl.data.ForgetClasses",
                   "--data.forget.classes", "[2]", "--data.previous_requests",
                   str(first / "splits.json"), "--model.init_args.original",
                   produced[0]["checkpoint"], *quiet(tmp_path / "second")])
    second = tmp_path / "second" / "lightning_logs" / "run"
    record = json.loads((second / "splits.json").read_text())
    assert [r["request"] for r in record["requests"]] == [{"forget_classes": [1]},
                                                          {"forget_classes": [2]}]
    assert record["requests"][0] == produced[0]
    assert record["requests"][1]["checkpoint"] == str((second / "checkpoints" /
                                                       "last.ckpt").resolve())
    targets = cli.datamodule.splits["forget"][1]
    assert set(targets.tolist()) == {1, 2}  # both requests are audited
    assert not {1, 2} & set(cli.datamodule.splits["retain"][1].tolist())


@pytest.mark.parametrize("network, message", [
    ('{"class_path": "torchvision.models.no_such_net"}', "unknown network class path"),
    ('{"class_path": "torch.nn.Flatten"}', "found no final linear classifier"),
])
def test_unusable_network_is_refused_before_anything_is_written(
        network: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = refused(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
                     str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA,
                     "--model.init_args.network", network, *quiet(tmp_path)], capsys)
    assert message in first
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
