"""The ``unlearn-pl`` command: a LightningCLI over every method and datamodule.

Bad input is refused before anything is written: the constructors' own checks (``lr must be
positive``...) are reported as the one line they are, not inside jsonargparse's "Does not validate
against any of the Union subtypes", and the folders the run would write into are checked against
the original's and every other run's (:meth:`UnlearnCLI.check_before_writing`). A run refused
during setup leaves no folder behind, so the version numbers of later runs do not shift.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_info

import unlearn_pl
from unlearn_pl._compat import jsonargparse_function_class_paths
from unlearn_pl.callbacks import UnlearningReport
from unlearn_pl.data import UnlearningDataModule
from unlearn_pl.methods import UnlearningModule, available_methods
from unlearn_pl.networks import check_network_file

__all__ = ["EffectiveBatchInfo", "UnlearnCLI", "UnlearnInputError", "main", "run_cli"]

_PACKAGE = Path(unlearn_pl.__file__).resolve().parent
#: Files (and the ``checkpoints`` folder) a run writes into its log folder: a folder holding any of
#: them belongs to another run.
RUN_FILES = ("config.yaml", "splits.json", "metrics.csv", "hparams.yaml", "report.json",
             "report.md", "checkpoints")
#: What a run writes before its work starts; a refused run's new folder holding only these (and a
#: metrics.csv without rows) is removed.
_SETUP_FILES = ("config.yaml", "splits.json", "hparams.yaml")


class UnlearnInputError(ValueError):
    """Bad input found before any work started. ``unlearn-pl`` prints its message as one line
    and exits with status 2; :class:`UnlearnCLI` used from Python raises it."""


class EffectiveBatchInfo(Callback):
    """Logs, once on rank zero at the start of every fit, the samples each optimizer step sees:
    per-process batch × processes × ``accumulate_grad_batches``, for each training split. Under
    DDP every process takes its own batch, so the global batch is the world size times
    ``data.batch_size`` (which changes what a recipe does: divide the batch size by the world
    size to keep a single-process recipe)."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank_zero_info(self.message(trainer))

    @staticmethod
    def message(trainer: Trainer) -> str:
        loaders: Any = trainer.train_dataloader
        loaders = getattr(loaders, "iterables", loaders)  # a CombinedLoader of split loaders
        if not isinstance(loaders, Mapping):
            loaders = {"train": loaders}
        world, accumulate = trainer.world_size, trainer.accumulate_grad_batches
        parts = [f"{split} {loader.batch_size} x {world} x {accumulate} = "
                 f"{loader.batch_size * world * accumulate}"
                 for split, loader in loaders.items()
                 if isinstance(getattr(loader, "batch_size", None), int)]
        note = (f"; each of the {world} DDP processes takes its own batch: divide "
                "data.batch_size by the world size to keep a single-process recipe"
                if world > 1 else "")
        return ("effective global batch per optimizer step (per-process batch x processes x "
                f"accumulate_grad_batches): {', '.join(parts) or 'unknown'}{note}")


def _raised_in_package(error: BaseException) -> bool:
    """Whether ``error`` was raised by unlearn_pl's own code (not by this module)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    return path != Path(__file__).resolve() and path.is_relative_to(_PACKAGE)


def _own_error(error: BaseException) -> BaseException | None:
    """The check of ours (a ``ValueError`` or ``OSError`` raised in unlearn_pl) that ``error``
    wraps, e.g. inside jsonargparse's "Does not validate against any of the Union subtypes"."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ValueError | OSError) and _raised_in_package(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def _checkpoint_folder(trainer: Trainer, callback: Any) -> Path:
    """Where a ``ModelCheckpoint`` will write, resolved as Lightning resolves it at setup."""
    if callback.dirpath is not None:
        return Path(callback.dirpath)
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        version = logger.version if isinstance(logger.version, str) else \
            f"version_{logger.version}"
        return Path(save_dir, str(logger.name), version, "checkpoints")
    return Path(trainer.default_root_dir, "checkpoints")


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _only_setup_files(folder: Path) -> bool:
    for path in folder.rglob("*"):
        if path.is_dir():
            continue
        if path.name == "metrics.csv":
            with path.open() as handle:
                if sum(1 for _ in handle) > 1:  # logged rows: work was done
                    return False
        elif path.name not in _SETUP_FILES:
            return False
    return True


class UnlearnCLI(LightningCLI):
    """LightningCLI with the datamodule's dataset properties linked into the model, so a config
    never repeats the number of classes, channels, normalisation or task, with the
    :class:`~unlearn_pl.callbacks.UnlearningReport` callback always on (options ``--report.*``), so
    every ``unlearn-pl test`` writes its report, and :class:`EffectiveBatchInfo` on every fit.

    Before anything is written (right after the classes are built; a command run only) a run is
    refused (:class:`UnlearnInputError`) when it would write into the folder of the original
    checkpoint or of the checkpoint under test, into a folder holding another run's files
    (unless it resumes that run from one of its checkpoints), when a fit would train nothing
    (``max_epochs``, ``max_steps`` or ``limit_train_batches`` 0), or when a fit of an unlearning
    method names no original checkpoint or a missing one. A run refused during setup
    (by the module's or datamodule's own checks) has the folders it created removed, when they
    hold nothing but the files every run writes first (config.yaml, splits.json, hparams.yaml),
    and its error is an :class:`UnlearnInputError` too.
    """

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        for source, target in (("num_classes", "num_classes"), ("num_channels", "in_channels"),
                               ("normalization", "normalization"), ("task", "task"),
                               ("input_size", "input_size")):
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}",
                                  apply_on="instantiate")
        parser.add_lightning_class_args(UnlearningReport, "report")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as error:
            own = _own_error(error)
            if own is None:
                raise
            raise UnlearnInputError(str(own)) from own
        self.trainer.callbacks.append(EffectiveBatchInfo())  # type: ignore[attr-defined]
        if self.subcommand is not None and self.trainer.is_global_zero:
            # Other DDP ranks are started by rank zero once it has passed these checks.
            self.check_before_writing(self.subcommand)

    # ----------------------------------------------------------------- checks
    def _ckpt_path(self, subcommand: str) -> str | None:
        value = self.config[subcommand].get("ckpt_path")
        return None if value is None else str(value)

    def output_folders(self, subcommand: str) -> dict[str, Path]:
        """The folders this run writes into: its log folder (config.yaml, splits.json, metrics,
        report) and, for a fit, each checkpoint folder."""
        trainer = self.trainer
        folders = {"log folder": Path(trainer.log_dir or trainer.default_root_dir).resolve()}
        if subcommand == "fit":
            for number, callback in enumerate(trainer.checkpoint_callbacks):
                name = "checkpoint folder" + (f" {number + 1}" if number else "")
                folders[name] = _checkpoint_folder(trainer, callback).resolve()
        return folders

    def check_before_writing(self, subcommand: str) -> None:
        """Refuse, before anything is written, a run that would modify another run's files or
        a fit that would train nothing. Raises :class:`UnlearnInputError`."""
        trainer, model = self.trainer, self.model
        if subcommand == "fit":
            for name, value in (("max_epochs", trainer.max_epochs),
                                ("max_steps", trainer.max_steps),
                                ("limit_train_batches", trainer.limit_train_batches)):
                if value == 0:
                    raise UnlearnInputError(
                        f"trainer.{name} is 0: the fit would train nothing and write no "
                        f"checkpoint. Give --trainer.{name} a positive value (to evaluate a "
                        "checkpoint without training, use `unlearn-pl test --ckpt_path ...`)")
        original = getattr(model, "hparams", {}).get("original")
        if subcommand == "fit" and original is not None:
            try:
                check_network_file(original)  # the loader's own check and message
            except (OSError, ValueError) as error:
                raise UnlearnInputError(str(error)) from error
        if subcommand == "fit" and isinstance(model, UnlearningModule):
            try:
                model.check_original_given()  # the module's own check, before anything is written
            except ValueError as error:
                raise UnlearnInputError(str(error)) from error
        ckpt_path = self._ckpt_path(subcommand)
        others = [("the original checkpoint", original)] if original is not None else []
        if subcommand != "fit" and ckpt_path is not None and Path(ckpt_path).is_file():
            others.append(("the checkpoint under test", ckpt_path))
        folders = self.output_folders(subcommand)
        for what, checkpoint in others:
            path = Path(checkpoint).resolve()
            for kind, folder in folders.items():
                # A checkpoint in a run's checkpoints/ folder: that whole run folder is another
                # run's; a checkpoint anywhere else: its own folder.
                if (_is_inside(folder, path.parent.parent) if path.parent.name == "checkpoints"
                        else folder == path.parent):
                    raise UnlearnInputError(
                        f"this run would write into {folder} (its {kind}), the run folder of "
                        f"{what} {checkpoint}, whose files must never be modified: give this run "
                        "its own folder (--trainer.logger.init_args.version NAME, or another "
                        "--trainer.default_root_dir or checkpoint dirpath)")
        resuming = subcommand == "fit" and ckpt_path is not None and (
            ckpt_path in ("last", "hpc") or any(_is_inside(Path(ckpt_path).resolve(), folder)
                                                for folder in folders.values()))
        if resuming:
            return  # this run continues from its own checkpoint, in its own folders
        for kind, folder in folders.items():
            if not folder.is_dir():
                continue
            if kind.startswith("checkpoint"):
                found = sorted(p.name for p in folder.glob("*.ckpt"))
            else:
                found = sorted(name for name in RUN_FILES if (folder / name).exists())
            if found:
                raise UnlearnInputError(
                    f"{folder} (this run's {kind}) already holds another run's files "
                    f"({', '.join(found)}), which this run would overwrite: give this run a new "
                    "--trainer.logger.init_args.version NAME (or another "
                    "--trainer.default_root_dir or checkpoint dirpath), delete that folder, or "
                    "resume that run with --ckpt_path one of its checkpoints")

    # ------------------------------------------------------------------- run
    def _run_subcommand(self, subcommand: str) -> None:
        new: list[tuple[Path, Path]] = []  # (a folder this run creates, its existing ancestor)
        for folder in self.output_folders(subcommand).values():
            existing = folder
            while not existing.exists():
                existing = existing.parent
            if existing != folder:
                new.append((folder, existing))
        try:
            super()._run_subcommand(subcommand)
        except BaseException as error:
            # A run refused during setup must not leave a folder that shifts later versions:
            # its own folders go if they hold only what every run writes first, then the
            # parents it created if they are left empty (never another run's files).
            if self.trainer.is_global_zero:
                for folder, existing in new:
                    if folder.is_dir() and _only_setup_files(folder):
                        shutil.rmtree(folder, ignore_errors=True)
                    parent = folder.parent
                    while parent != existing and _is_inside(parent, existing):
                        try:
                            parent.rmdir()  # only when empty
                        except OSError:
                            break
                        parent = parent.parent
            own = _own_error(error)
            if own is not None and self._before_work():
                # A check of ours at setup (the module holds only the original's weights, the
                # checkpoint was unlearned for another request...): one line, like the others.
                raise UnlearnInputError(str(own)) from own
            raise

    def _before_work(self) -> bool:
        """Whether the run stopped before its first training step or evaluation batch."""
        trainer = self.trainer
        loops = (trainer.fit_loop.epoch_loop, trainer.validate_loop, trainer.test_loop,
                 trainer.predict_loop)
        return trainer.global_step == 0 and all(
            loop.batch_progress.total.completed == 0 for loop in loops)


def run_cli(args: list[str] | None = None, run: bool = True) -> UnlearnCLI:
    """Run ``unlearn-pl`` with ``args`` (default: the command line) and return the CLI object
    (its ``trainer``, ``model`` and ``datamodule``); with ``run=False`` only build them (what
    the comparison runner does before its own fit and test)."""
    available_methods()  # import every method so class_path names resolve
    jsonargparse_function_class_paths()
    return UnlearnCLI(UnlearningModule, UnlearningDataModule, subclass_mode_model=True,
                      subclass_mode_data=True, args=args, run=run,
                      auto_configure_optimizers=False, save_config_kwargs={"overwrite": True})


def main(args: list[str] | None = None) -> None:
    """Entry point of ``unlearn-pl`` and ``python -m unlearn_pl``. Bad input is reported as one
    line on stderr (``unlearn-pl: error: ...``) with exit status 2, before any work."""
    if "--version" in (sys.argv[1:] if args is None else args):
        print(f"unlearn_pl {unlearn_pl.__version__}")
        return
    try:
        run_cli(args)
    except UnlearnInputError as error:
        print(f"unlearn-pl: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
