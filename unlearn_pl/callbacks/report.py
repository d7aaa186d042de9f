"""The unlearning report callback: every evaluation number of a test run, retrain's beside it,
the privacy audit's verdict and the plots."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor

from unlearn_pl.data import UnlearningDataModule
from unlearn_pl.evaluation.audit import audit_method
from unlearn_pl.evaluation.evaluate import (
    _check_finite,
    _datamodule,
    _evaluate,
    _TestRun,
    load_checkpoint_for_evaluation,
)
from unlearn_pl.evaluation.plots import plot_loss_distribution, plot_signal_against_references
from unlearn_pl.evaluation.render import FS_SCALE, reference_gaps, render_markdown
from unlearn_pl.methods.base import UnlearningModule
from unlearn_pl.networks import network_name
from unlearn_pl.utils import atomic_write_text
from unlearn_pl.utils import environment as _environment

__all__ = ["UnlearningReport"]

FORGET_REQUEST_KEYS = ("forget_classes", "forget_fraction", "forget_count", "forget_ids",
                       "forget_groups", "seed")
# Checkpoint hyperparameters the CLI adds for its own bookkeeping, not the method's settings.
_CLI_KEYS = ("_class_path", "_instantiator")


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready plain data (dicts, lists, str, numbers, bool, None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, Tensor):
        return _plain(value.tolist())
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def _class_path(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_report(path: str) -> bool:
    return Path(path).suffix == ".json"


class UnlearningReport(Callback):
    """Writes the unlearning report of a test run: ``report.json``, ``report.md`` and
    ``loss_distribution.png`` in the run's folder (``trainer.log_dir``, else
    ``default_root_dir``), and prints the Markdown table.

    ``unlearn-pl test`` always runs it (its options are ``--report.*``). The unlearning time in a
    test run comes from the checkpoint given with ``--ckpt_path``. The per-sample losses behind
    the plot are also stored in ``report.json`` (``losses``), so a later report can draw retrain's
    distribution beside its own.

    Args:
        reference: the retrain reference: its ``report.json``, or its checkpoint (then evaluated on
            the same datamodule, single process only). The report then shows the reference's
            numbers, the gaps (result − reference), ``avg_gap`` (mean absolute gap over the
            accuracies and the forgetting score) and ``time_ratio`` (fit_seconds over the
            reference's). It must be the same dataset and forget request.
        bank: retrain networks of other seeds on the same split (report.json or checkpoints,
            at least 2; needs ``reference``, which is not among them): the report then leads
            with the privacy audit's verdict (:func:`unlearn_pl.evaluation.audit_method`:
            retrain-likeness, LiRA and RMIA, each beside the reference as the target) and draws
            ``signal_vs_references.png``.
        bins: histogram bins of the loss plot.
        print_table: print the Markdown table at the end of the test run.
    """

    def __init__(self, reference: str | None = None, bank: list[str] | None = None,
                 bins: int = 40, print_table: bool = True) -> None:
        for path in [reference, *(bank or [])]:
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"{path} does not exist: pass the report.json or the "
                                        "checkpoint of a retrain run")
        if bank is not None and (reference is None or len(bank) < 2):
            raise ValueError("report.bank needs at least 2 retrain networks of other seeds and a "
                             "report.reference (the held-out retrain network the per-example "
                             "tests are read against)")
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        self.reference = reference
        self.bank = list(bank or [])
        self.bins = bins
        self.print_table = print_table
        self._run = _TestRun()
        self._given: dict[str, dict[str, Any]] = {}  # networks given as report.json, read early
        self.last_report: dict[str, Any] | None = None

    @property
    def _paths(self) -> list[str]:
        return [p for p in (self.reference, *self.bank) if p is not None]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "test":
            return
        checkpoints = [p for p in self._paths if not _is_report(p)]
        if checkpoints and trainer.world_size > 1:
            raise ValueError("reference and bank checkpoints are evaluated in a single process; "
                             "under DDP pass their report.json (from `unlearn-pl test`) instead")
        self._run.setup(trainer, pl_module, stage)
        # Read and checked on every rank before the test runs: a wrong file fails at once.
        datamodule = _datamodule(trainer)
        self._given = {p: self._read_report(p, datamodule) for p in self._paths if _is_report(p)}

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._run.on_test_start(trainer, pl_module)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        results = self._run.results(pl_module)
        _check_finite(results, type(pl_module).__name__)
        losses = self._run.losses(trainer, pl_module)  # synced: the same on every rank
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # log_dir broadcasts too
        self._write(trainer, pl_module, folder, results, losses)

    def _dataset_record(self, datamodule: UnlearningDataModule) -> dict[str, Any]:
        return {"class_path": _class_path(datamodule), "task": datamodule.task,
                "num_classes": datamodule.num_classes, "class_wise": datamodule.class_wise,
                "mia_nonmember_split": datamodule.mia_nonmember_split,
                "split_sizes": {s: len(datamodule.splits[s][2]) for s in datamodule.eval_splits},
                "hparams": _plain({k: v for k, v in dict(datamodule.hparams).items()
                                   if k not in _CLI_KEYS})}

    def _forget_request(self, datamodule: UnlearningDataModule) -> dict[str, Any]:
        return {k: _plain(datamodule.hparams.get(k)) for k in FORGET_REQUEST_KEYS}

    def _read_report(self, path: str, datamodule: UnlearningDataModule) -> dict[str, Any]:
        """A network given as its ``report.json``, checked against this run's dataset and
        request: ``{"source", "method", "metrics", "losses", "signals"}``."""
        try:
            other = json.loads(Path(path).read_text())
            metrics = {k: float(v) for k, v in other["metrics"].items()}
            dataset, request = other["dataset"], other["forget_request"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a report.json written by UnlearningReport "
                             f"({error!r})") from error
        mine = self._dataset_record(datamodule)
        mismatch = {name: (ours, theirs) for name, ours, theirs in (
            ("dataset", mine["class_path"], dataset.get("class_path")),
            ("split_sizes", mine["split_sizes"], dataset.get("split_sizes")),
            ("forget_request", self._forget_request(datamodule), request)) if ours != theirs}
        if mismatch:
            raise ValueError(f"{path} was evaluated on another dataset or forget request, so the "
                             f"comparison would be meaningless: {mismatch}")
        return {"source": path, "method": other.get("method", "unknown"), "metrics": metrics,
                "losses": other.get("losses"), "signals": other.get("signals"),
                "arch": network_name(other.get("hparams") or {})}

    def _network(self, path: str, trainer: Trainer) -> dict[str, Any]:
        """A given network's numbers: read from its report.json, or its checkpoint evaluated on
        this run's datamodule (in this process, on this run's device)."""
        if path in self._given:
            return self._given[path]
        module, method = load_checkpoint_for_evaluation(path)
        device = trainer.strategy.root_device
        kwargs: dict[str, Any] = {"precision": trainer.precision}
        if device.type == "cuda":
            kwargs.update(accelerator="gpu", devices=[device.index or 0])
        else:
            kwargs.update(accelerator=device.type if device.type == "mps" else "cpu", devices=1)
        metrics, losses, signals = _evaluate(module, _datamodule(trainer), kwargs)
        return {"source": path, "method": method, "metrics": metrics, "losses": losses,
                "signals": signals, "arch": network_name(module.hparams)}

    @staticmethod
    def _audit(results: Mapping[str, float], signals: Mapping[str, Any],
               reference: Mapping[str, Any], bank: list[dict[str, Any]], heldout: str,
               plot: Path, arch: str | None) -> dict[str, Any]:
        """The privacy audit of the result against the bank, read against the reference (a
        held-out retrain network), and its plot."""
        def network(record: Mapping[str, Any]) -> dict[str, Any]:
            if record.get("arch") not in (None, arch):
                raise ValueError(f"{record['source']} has architecture {record['arch']}, the "
                                 f"result {arch}: reference networks must share the result's "
                                 "architecture and recipe (retrain it with this config)")
            if not record.get("signals"):
                raise ValueError(f"{record['source']} holds no per-sample signals (a report.json "
                                 "of an older version): pass its checkpoint instead")
            return {**record["metrics"], "signals": record["signals"]}

        audit = audit_method([{**results, "signals": signals}], [network(b) for b in bank],
                             network(reference), heldout)
        run = audit.pop("runs")[0]
        references = torch.tensor([b["signals"]["forget"]["signal"] for b in bank])
        plot_signal_against_references(
            [("result", torch.tensor(signals["forget"]["signal"])),
             ("held-out retrain (the floor)",
              torch.tensor(reference["signals"]["forget"]["signal"]))], references, plot)
        return {**{k: v for k, v in audit.items() if not k.endswith("_std")},
                "most_exposed": run["most_exposed"], "bank": [b["source"] for b in bank]}

    @rank_zero_only
    def _write(self, trainer: Trainer, pl_module: LightningModule, folder: Path,
               results: dict[str, float], losses: dict[str, list[float]]) -> None:
        datamodule = _datamodule(trainer)
        module = cast(UnlearningModule, pl_module)  # _TestRun.results checked it evaluated
        hparams = {k: v for k, v in dict(pl_module.hparams).items() if k not in _CLI_KEYS}
        record: dict[str, Any] = {
            "method": type(pl_module).__name__,
            "class_path": _class_path(pl_module),
            "metrics": results,
            "scales": {"forgetting_score": FS_SCALE,
                       "nomus": "0.5*(held-out accuracy + (1 - forgetting_score)); held-out "
                                "accuracy = acc_retain_test (class-wise) else acc_unseen"},
            "hparams": _plain(hparams),
            "dataset": self._dataset_record(datamodule),
            "forget_request": self._forget_request(datamodule),
            "checkpoint": _plain(trainer.ckpt_path),
            # What was evaluated: the weights of a checkpoint, of the fit just run, of a network
            # given by the caller, or (Train only) the original's.
            "weights": getattr(pl_module, "weights_source", "unknown"),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {**_environment()["versions"], "python": platform.python_version()},
            "reference": None,
            "gaps": None,
            # Attacks too small to honour their test fold size: the numbers are coarse.
            "warnings": datamodule.small_sample_warnings(
                test_size=module.mia.test_size, balance=module.mia.balance),
        }
        panels = [(f"result: {record['method']} (MIA {results['mia']:.3f}, "
                   f"FS {results['forgetting_score']:.3f})", losses)]
        signals = self._run.signals(trainer, pl_module)
        folder.mkdir(parents=True, exist_ok=True)
        if self.reference is not None:
            reference = self._network(self.reference, trainer)
            record["reference"] = {k: reference[k] for k in ("source", "method", "metrics")}
            record["gaps"] = reference_gaps(results, reference["metrics"])
            if reference["losses"]:
                ref = reference["metrics"]
                panels.append((f"reference: {reference['method'].rsplit('.', 1)[-1]} "
                               f"(MIA {ref['mia']:.3f}, FS {ref['forgetting_score']:.3f})",
                               reference["losses"]))
            if self.bank:
                bank = [self._network(path, trainer) for path in self.bank]
                record["audit"] = self._audit(results, signals, reference, bank,
                                              f"acc_{datamodule.heldout_split}",
                                              folder / "signal_vs_references.png",
                                              network_name(module.hparams))
        # Rounded: the plots need the shape of the distributions, not the last bits.
        record["losses"] = {s: [float(f"{v:.6g}") for v in values] for s, values in losses.items()}
        record["signals"] = signals
        markdown = render_markdown(record)
        atomic_write_text(folder / "report.json", json.dumps(record, indent=1))
        atomic_write_text(folder / "report.md", markdown)
        plot_loss_distribution(panels, datamodule.mia_nonmember_split,
                               folder / "loss_distribution.png", self.bins)
        self.last_report = record
        if self.print_table:
            print(markdown)
