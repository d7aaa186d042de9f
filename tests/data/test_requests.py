"""Typed forget requests: each validates itself and selects the same samples as its plain 0.1
key, which still works for one release with a DeprecationWarning."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import SYNTHETIC, make_trainer
from unlearn_pl.cli import UnlearnCLI
from unlearn_pl.data import (
    ForgetClasses,
    ForgetCount,
    ForgetFirst,
    ForgetFraction,
    ForgetGroups,
    ForgetIds,
    SyntheticDataModule,
)
from unlearn_pl.data.requests import build_request


def _ids_file(tmp_path: Path) -> str:
    path = tmp_path / "ids.txt"
    path.write_text("5\n9\n100\n")
    return str(path)


CASES = [  # (typed request, its plain key and value)
    (lambda p: ForgetClasses([1, 2]), "forget_classes", lambda p: [1, 2]),
    (lambda p: ForgetFraction(0.1), "forget_fraction", lambda p: 0.1),
    (lambda p: ForgetCount(7), "forget_count", lambda p: 7),
    (lambda p: ForgetFirst(5), "forget_first", lambda p: 5),
    (lambda p: ForgetIds(_ids_file(p)), "forget_ids", _ids_file),
    (lambda p: ForgetGroups([0, 4]), "forget_groups", lambda p: [0, 4]),
]


@pytest.mark.parametrize(("typed", "key", "value"), CASES, ids=[c[1] for c in CASES])
def test_typed_and_plain_requests_select_the_same_samples(tmp_path: Path, typed: Any,
                                                          key: str, value: Any) -> None:
    base = {**SYNTHETIC, "num_groups": 6}
    new = SyntheticDataModule(forget=typed(tmp_path), **base)
    with pytest.warns(DeprecationWarning, match=f"{key}: is deprecated.*forget: "):
        old = SyntheticDataModule(**{key: value(tmp_path)}, **base)
    assert new.split_ids() == old.split_ids()
    # The hyperparameters hold the plain form only (checkpoints stay weights_only-loadable).
    assert dict(new.hparams) == dict(old.hparams) and "forget" not in new.hparams
    assert new.hparams[key] == value(tmp_path)
    # The YAML form a script reads is accepted too.
    request = typed(tmp_path)
    as_yaml = {"class_path": f"unlearn_pl.data.{type(request).__name__}",
               "init_args": dict(vars(request))}
    as_yaml["init_args"].pop("ids", None)
    assert build_request(as_yaml) == request


def test_bad_requests_are_refused_before_any_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="forget_fraction must lie in"):
        ForgetFraction(1.5)
    with pytest.raises(ValueError, match="forget_classes is empty: name at least one class"):
        ForgetClasses([])
    with pytest.raises(ValueError, match="must be integers"):
        ForgetGroups([1.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="forget_count must be at least 1"):
        ForgetCount(0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ForgetIds(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="give exactly one forget request"):
        SyntheticDataModule(forget=ForgetCount(3), forget_classes=[1], **SYNTHETIC)
    with pytest.raises(ValueError, match="give exactly one forget request"):
        SyntheticDataModule(**SYNTHETIC)
    with pytest.raises(ValueError, match="is not a forget request"):
        build_request({"class_path": "unlearn_pl.data.SyntheticDataModule"})


def test_the_cli_takes_a_typed_request_from_yaml(tmp_path: Path) -> None:
    """class_path / init_args in YAML, through a DataModule subclass's **kwargs: the split is
    class-wise and the checkpoint's hyperparameters are plain."""
    config = tmp_path / "data.yaml"
    config.write_text("""\
data:
  class_path: unlearn_pl.data.SyntheticDataModule
  init_args:
    num_samples: 96
    num_classes: 4
    image_size: 12
    num_test: 48
    forget:
      class_path: unlearn_pl.data.ForgetClasses
      init_args: {classes: [2]}
model:
  class_path: unlearn_pl.methods.Train
  init_args: {arch: tiny_cnn, width: 0.5}
""")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = UnlearnCLI(args=["--config", str(config), "--trainer.logger", "false"],
                         run=False)
    assert not [w for w in caught if "forget request" in str(w.message)]  # typed: no warning
    datamodule = cli.datamodule
    assert datamodule.forget_request == ForgetClasses([2])
    assert datamodule.hparams.forget_classes == [2] and datamodule.class_wise
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(cli.model, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    saved = torch.load(tmp_path / "model.ckpt", weights_only=True)
    assert saved["datamodule_hyper_parameters"]["forget_classes"] == [2]
