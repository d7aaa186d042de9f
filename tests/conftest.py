"""Shared fixtures and helpers: tiny synthetic data made in code, a small trained original
network, and where the real data of the ``slow`` tests lives.

The tests mirror the package (``tests/methods``, ``tests/data``, ...); a test module never
imports another one: what two modules share lives here.

Real data (``../shared/data`` next to the checkout by default) is found through, in order,
``pytest --shared-data PATH``, the environment variable ``UNLEARN_PL_SHARED_DATA``, the default.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

import unlearn_pl  # noqa: F401  (torchvision shim before lightning)
from unlearn_pl.data import ForgetClasses, SyntheticDataModule
from unlearn_pl.data.requests import FLAT_KEYS, request_from_flat
from unlearn_pl.methods import Train, UnlearningModule

# Tiny tensors: one thread is faster and does not fight DDP worker processes for the 2 cores.
torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SHARED_DATA_ENV = "UNLEARN_PL_SHARED_DATA"
DEFAULT_SHARED_DATA = REPO.parent / "shared" / "data"
# Lightning's log levels as imported, restored after every test (restore_lightning_log_levels).
LIGHTNING_LOG_LEVELS = {name: logging.getLogger(name).level
                        for name in ("lightning", "lightning.pytorch", "lightning.fabric")}

# The tiny world every method test runs in: 4 classes of 12×12 images, class 1 forgotten.
SYNTHETIC = dict(num_samples=192, num_classes=4, image_size=12, channels=3, num_test=96,
                 augment=False, batch_size=32, eval_batch_size=64, seed=0)
NETWORK = dict(arch="tiny_cnn", width=0.5)
# The same world as a data config for the comparison runner.
DATA_CONFIG = """\
data:
  class_path: unlearn_pl.data.SyntheticDataModule
  init_args:
    num_samples: 192
    num_classes: 4
    image_size: 12
    num_test: 96
    augment: false
    batch_size: 32
    eval_batch_size: 96
    forget:
      class_path: unlearn_pl.data.ForgetClasses
      init_args: {classes: [1]}
model:
  init_args:
    arch: tiny_cnn
    width: 0.5
"""
# A second method: the shipped fine-tune with another learning rate, as a user would write it.
FAST_FINETUNE = """\
model:
  class_path: unlearn_pl.methods.FineTune
  init_args:
    lr: 0.05
trainer:
  max_epochs: 1
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--shared-data", metavar="PATH", default=None,
                     help=f"folder of the real datasets the slow tests read (default: "
                          f"${SHARED_DATA_ENV}, else {DEFAULT_SHARED_DATA})")


def shared_data_dir(option: str | None = None) -> Path:
    """The folder of the real datasets: ``option`` (``--shared-data``), else the environment
    variable ``UNLEARN_PL_SHARED_DATA``, else ``<repo>/../shared/data``."""
    chosen = option or os.environ.get(SHARED_DATA_ENV)
    return Path(chosen).expanduser().resolve() if chosen else DEFAULT_SHARED_DATA


def config_data_root(root: str, shared: Path) -> Path:
    """Where a data config's ``root`` lies here: the shipped configs name the real data as
    ``../shared/data/...`` (relative to the repository), which is looked up in ``shared``
    (:func:`shared_data_dir`); any other relative root is relative to the repository."""
    path = Path(root).expanduser()
    if path.is_absolute():
        return path
    if path.parts[:3] == ("..", "shared", "data"):
        return shared.joinpath(*path.parts[3:])
    return REPO / path


@pytest.fixture(scope="session")
def shared_data(pytestconfig: pytest.Config) -> Path:
    """Where the real data lives (see :func:`shared_data_dir`); tests skip what is not there."""
    return shared_data_dir(pytestconfig.getoption("--shared-data"))


def make_datamodule(**overrides: Any) -> SyntheticDataModule:
    """Synthetic datamodule; a class-wise request (class 1) unless another is given, as a
    typed ``forget`` request or, for brevity here, its plain key (``forget_classes=[2]``),
    which this helper turns into the typed request."""
    kwargs = {**SYNTHETIC, **overrides}
    flat = [k for k in overrides if k in FLAT_KEYS]
    if len(flat) == 1:
        key = flat[0]
        kwargs["forget"] = (request_from_flat(key, kwargs.pop(key)) if key != "forget_ids"
                            or kwargs[key] is not None else kwargs.pop(key))
    elif "forget" not in overrides and not flat:
        kwargs["forget"] = ForgetClasses([1])
    return SyntheticDataModule(**kwargs)


def model_kwargs(datamodule: SyntheticDataModule) -> dict[str, Any]:
    """What the CLI links from the datamodule into the model, plus the tiny network."""
    return dict(num_classes=datamodule.num_classes, in_channels=datamodule.num_channels,
                normalization=datamodule.normalization, task=datamodule.task, **NETWORK)


def make_trainer(root: Path, **overrides: Any) -> Trainer:
    kwargs: dict[str, Any] = dict(accelerator="cpu", devices=1, logger=False,
                                  enable_progress_bar=False, enable_model_summary=False,
                                  default_root_dir=str(root), num_sanity_val_steps=0,
                                  max_epochs=1)
    kwargs.update(overrides)
    return Trainer(**kwargs)


class Interrupt(Callback):
    """Stops a run after ``epochs`` epochs, as a crash or a pre-empted job would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def build_method(cls: type[UnlearningModule], original: str,
                 datamodule: Any) -> UnlearningModule:
    """A method on the tiny network: ``Train`` on the retain set, any other from ``original``."""
    kwargs = model_kwargs(datamodule)
    if cls is Train:
        return cls(train_on="retain", **kwargs)
    return cls(original=original, **kwargs)


@pytest.fixture(scope="session")
def original_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny original network trained on the synthetic training set (a Lightning checkpoint)."""
    root = tmp_path_factory.mktemp("original")
    seed_everything(0)
    datamodule = make_datamodule()
    model = Train(train_on="full", lr=0.05, **model_kwargs(datamodule))
    trainer = make_trainer(root, max_epochs=8, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(model, datamodule=datamodule)
    path = root / "original.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture
def datamodule_factory() -> Callable[..., SyntheticDataModule]:
    return make_datamodule


@pytest.fixture(autouse=True)
def restore_lightning_log_levels() -> Iterator[None]:
    """After each test, Lightning's loggers are back at their levels of the session's start:
    ``unlearn-pl-compare``'s ``main`` (also run by module-scoped fixtures) quiets them to WARNING
    for the rest of the process, which would hide the INFO messages a later test in the same
    process (or pytest-xdist worker) looks for."""
    yield
    for name, level in LIGHTNING_LOG_LEVELS.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(autouse=True)
def fresh_master_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own free port for DDP: Lightning keeps MASTER_PORT in the environment,
    and reusing a port a previous test just closed fails with EADDRINUSE."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MASTER_PORT", str(port))
