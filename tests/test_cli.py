"""Every shipped config runs through the real CLI on tiny data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from unlearn_pl.cli import main

CONFIGS = REPO / "configs"
METHOD_CONFIGS = sorted((CONFIGS / "methods").glob("*.yaml"))
SYNTHETIC_DATA = ["--data", "unlearn_pl.data.SyntheticDataModule", "--data.num_samples", "96",
                  "--data.num_test", "64", "--data.image_size", "12", "--data.forget_classes",
                  "[1]", "--data.augment", "false"]
TINY = ["--model.init_args.arch", "tiny_cnn", "--model.init_args.width", "0.5"]


def quiet(root: Path) -> list[str]:
    return ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root), "--trainer.accelerator", "cpu"]


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--version"])
    assert "unlearn_pl 0.1.0" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    assert "--model" in capsys.readouterr().out


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "unlearn_pl", "--version"],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0 and "unlearn_pl" in result.stdout


@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: p.stem)
def test_method_config_runs_fast_dev_run(config: Path, original_ckpt: str,
                                         tmp_path: Path) -> None:
    args = ["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config", str(config),
            *SYNTHETIC_DATA, *TINY, "--trainer.fast_dev_run", "true", *quiet(tmp_path)]
    if config.stem not in ("original", "retrain"):
        args += ["--model.init_args.original", original_ckpt]
    main(args)


@pytest.mark.parametrize("trainer", ["cpu", "bf16", "ddp"])
def test_trainer_configs_run(trainer: str, tmp_path: Path) -> None:
    extra = ["--trainer.devices", "1"] if trainer == "ddp" else []
    configs = ["--config", str(CONFIGS / "trainer" / f"{trainer}.yaml")]
    if trainer == "bf16":
        configs = ["--config", str(CONFIGS / "trainer" / "cpu.yaml"), *configs]
    main(["fit", *configs, "--config", str(CONFIGS / "methods" / "original.yaml"),
          *SYNTHETIC_DATA, *TINY, "--trainer.fast_dev_run", "true", *quiet(tmp_path), *extra])


def _data_config_available(config: Path) -> bool:
    """Whether the data a config names exists here (digits is embedded)."""
    import yaml

    root = yaml.safe_load(config.read_text())["data"]["init_args"].get("root")
    return root is None or (REPO / root).exists()


DATA_CONFIGS = sorted((CONFIGS / "data").glob("*.yaml"))
FAST_DATA = {"digits", "olivetti"}


@pytest.mark.parametrize("config", [
    pytest.param(p, marks=[] if p.stem in FAST_DATA else [pytest.mark.slow])
    for p in DATA_CONFIGS], ids=lambda p: p.stem)
def test_data_config_runs_fast_dev_run(config: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if not _data_config_available(config):
        pytest.skip(f"the data of {config.name} is not on this machine")
    monkeypatch.chdir(REPO)  # data configs name ../shared/data relative to the repository
    main(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
          str(CONFIGS / "methods" / "original.yaml"), "--config", str(config),
          "--trainer.fast_dev_run", "true", *quiet(tmp_path)])


def test_fit_then_test_resume_and_report_time(tmp_path: Path) -> None:
    common = ["--config", str(CONFIGS / "trainer" / "cpu.yaml"), "--config",
              str(CONFIGS / "methods" / "original.yaml"), *SYNTHETIC_DATA, *TINY,
              *quiet(tmp_path), "--trainer.logger.init_args.version", "0",
              "--model.init_args.scheduler", "none"]  # a one-cycle schedule cannot be extended
    main(["fit", *common, "--trainer.max_epochs", "1"])
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 0 and state["unlearn_pl"]["fit_seconds"] > 0
    main(["fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", str(last)])
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 1
    # both timers continue across the resume instead of restarting from zero
    for key in ("fit_seconds", "validation_seconds"):
        assert resumed["unlearn_pl"][key] >= state["unlearn_pl"][key]
    assert resumed["unlearn_pl"]["fit_seconds"] > state["unlearn_pl"]["fit_seconds"]
    main(["test", *common, "--ckpt_path", str(last)])


def test_original_checkpoint_is_never_overwritten(original_ckpt: str, tmp_path: Path) -> None:
    before = Path(original_ckpt).read_bytes()
    with pytest.raises(ValueError, match="must never be overwritten"):
        main(["fit", "--config", str(CONFIGS / "methods" / "finetune.yaml"), *SYNTHETIC_DATA,
              *TINY, "--model.init_args.original", original_ckpt, "--trainer.max_epochs", "1",
              "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir",
              str(tmp_path), "--trainer.callbacks+=ModelCheckpoint",
              "--trainer.callbacks.dirpath", str(Path(original_ckpt).parent)])
    assert Path(original_ckpt).read_bytes() == before


def test_bad_original_is_refused_before_training(tmp_path: Path) -> None:
    # jsonargparse reports the constructor's FileNotFoundError inside its own ValueError
    with pytest.raises((FileNotFoundError, ValueError), match="missing.ckpt does not exist"):
        main(["fit", "--config", str(CONFIGS / "methods" / "finetune.yaml"), *SYNTHETIC_DATA,
              *TINY, "--model.init_args.original", str(tmp_path / "missing.ckpt"),
              "--trainer.default_root_dir", str(tmp_path)])
