"""The torchvision compatibility shim: imports work, and it is a no-op where ops load."""

from __future__ import annotations

import subprocess
import sys

import torch

from unlearn_pl import _compat


def test_torchvision_imports_in_a_fresh_interpreter() -> None:
    # A fresh process: the shim must run before lightning/torchmetrics import torchvision.
    code = ("import unlearn_pl, lightning, torchvision;"
            "from torchvision.transforms import v2; from torchvision.models import resnet18;"
            "print(resnet18(num_classes=3).fc.out_features)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
    assert "does not exist" not in result.stderr


def test_processes_that_import_lightning_first_work_too() -> None:
    # ddp_spawn workers unpickle lightning before unlearn_pl: the torch.backends entry point
    # applies the shim at `import torch`.
    result = subprocess.run([sys.executable, "-c", "import lightning, torchvision; print('ok')"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_shim_defines_schemas_only_when_ops_are_missing() -> None:
    defined = _compat.ensure_torchvision_importable()
    # Either torchvision's own library loaded (nothing defined) or our schemas exist.
    assert hasattr(torch.ops.torchvision, "nms")
    assert defined == (_compat._torchvision_lib is not None)
    # Idempotent: a second call changes nothing and does not raise on re-definition.
    assert _compat.ensure_torchvision_importable() == defined


def test_shim_is_harmless_when_the_library_loads(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(_compat, "_torchvision_lib", None)
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    assert _compat.ensure_torchvision_importable() is False
    assert _compat._torchvision_lib is None


def test_a_function_class_path_takes_command_line_overrides(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # jsonargparse 4.53 re-parses the module's config when a later argument changes it, and
    # fails on a function class_path inside init_args unless the shim is applied (run_cli does).
    from tests.conftest import REPO
    from unlearn_pl.cli import run_cli

    monkeypatch.setattr(sys, "argv", ["unlearn-pl"])
    config = tmp_path / "net.yaml"
    config.write_text("model:\n  init_args:\n    network:\n      class_path: "
                      "torchvision.models.resnet18\n      init_args: {num_classes: 10}\n")
    cli = run_cli(["fit", "--config", str(REPO / "configs" / "methods" / "original.yaml"),
                   "--config", str(REPO / "configs" / "data" / "digits.yaml"), "--config",
                   str(config), "--model.init_args.lr", "0.123", "--data.init_args.num_channels",
                   "3", "--trainer.fast_dev_run", "true",
                   "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path),
                   "--trainer.enable_progress_bar", "false"])
    assert cli.model.hparams.lr == 0.123  # type: ignore[attr-defined]
    assert cli.model.network.head_path == "fc"  # type: ignore[attr-defined]
