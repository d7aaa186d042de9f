"""Typed forget requests: each validates itself and selects the same samples as its plain 0.1
key, which still works for one release with a DeprecationWarning."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import SYNTHETIC, make_datamodule, make_trainer
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


# ------------------------------------------------------------------ the next request
def _first_run(tmp_path: Path, forget: Any) -> Path:
    """The splits.json the first request's run writes."""

    path = tmp_path / "first" / "splits.json"
    path.parent.mkdir()
    make_datamodule(forget=forget)._write_splits(path)
    return path


def test_a_follow_up_keeps_earlier_forgotten_samples_forgotten(tmp_path: Path) -> None:
    first = _first_run(tmp_path, ForgetCount(20))
    earlier = set(make_datamodule(forget=ForgetCount(20)).split_ids()["forget"])
    follow_up = make_datamodule(forget=ForgetCount(15), previous_requests=str(first))
    ids = follow_up.split_ids()
    # Drawn from what remains: 15 new samples, the 20 earlier ones still forgotten.
    assert earlier < set(ids["forget"]) and len(ids["forget"]) == 35
    assert not set(ids["retain"]) & set(ids["forget"])
    assert set(ids["retain"]) | set(ids["forget"]) == set(ids["train"])
    follow_up._write_splits(tmp_path / "splits.json")
    requests = follow_up.requests()
    assert [r["request"] for r in requests] == [{"forget_count": 20}, {"forget_count": 15}]
    assert set(requests[0]["ids"]) == earlier and len(requests[1]["ids"]) == 15
    assert requests[1]["time"] is not None
    # A third request reads the whole log.
    third = make_datamodule(forget=ForgetCount(5), previous_requests=str(tmp_path /
                                                                         "splits.json"))
    assert len(third.split_ids()["forget"]) == 40 and len(third.requests()) == 3


def test_class_wise_follow_up_divides_held_out_data_by_every_class(tmp_path: Path) -> None:
    first = _first_run(tmp_path, ForgetClasses([1]))
    splits = make_datamodule(forget=ForgetClasses([2]), previous_requests=str(first)).splits
    assert set(splits["forget"][1].tolist()) == {1, 2}
    assert set(splits["forget_test"][1].tolist()) == {1, 2}
    assert not {1, 2} & set(splits["retain_test"][1].tolist())


@pytest.mark.parametrize("first, second, message", [
    (ForgetClasses([1]), ForgetClasses([1, 3]), r"names classes \[1\] that earlier requests "
                                                "already forgot"),
    (ForgetClasses([1]), ForgetCount(5), "cannot follow \\['forget_classes'\\] requests"),
    (ForgetFraction(0.1), ForgetIds.of([0, 1, 2]), "names ids .* that earlier requests"),
    (ForgetCount(5), ForgetIds.of([10_000]), "out of range"),
])
def test_bad_follow_ups_are_refused_before_any_work(tmp_path: Path, first: Any, second: Any,
                                                    message: str) -> None:
    path = _first_run(tmp_path, first)
    if isinstance(second, ForgetIds) and second.ids == [0, 1, 2]:  # name the earlier ids
        earlier = make_datamodule(forget=first).split_ids()["forget"][:3]
        second = ForgetIds.of(earlier)
    with pytest.raises(ValueError, match=message):
        _ = make_datamodule(forget=second, previous_requests=str(path)).splits


def test_a_follow_up_needs_the_earlier_runs_data(tmp_path: Path) -> None:
    path = _first_run(tmp_path, ForgetCount(5))
    with pytest.raises(ValueError, match="seed 0, this one a SyntheticDataModule with seed 4"):
        make_datamodule(forget=ForgetCount(5), seed=4, previous_requests=str(path))
    with pytest.raises(ValueError, match="trained on other samples"):
        _ = make_datamodule(forget=ForgetCount(5), num_samples=150,
                            previous_requests=str(path)).splits
    with pytest.raises(FileNotFoundError, match="splits.json of the run that unlearned"):
        make_datamodule(forget=ForgetCount(5), previous_requests=str(tmp_path / "nope.json"))
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="is not the splits.json of an unlearn_pl run"):
        make_datamodule(forget=ForgetCount(5), previous_requests=str(tmp_path / "other.json"))
