"""The unlearning report: every evaluation number of a run, retrain's beside it, and the plot.

:func:`evaluate` runs the test stage of :class:`~unlearn_pl.methods.UnlearningModule` (accuracy
on D_r, D_f, D_u and, class-wise, Dr_test / Df_test; the MUFAC / DLFD membership inference attack;
the forgetting score ``2·|MIA − 0.5|`` on the paper's scale; NoMUS; the unlearning time) on any
network, module or checkpoint and returns the numbers the CLI logs.

:class:`UnlearningReport` is the callback ``unlearn-pl test`` always runs: it writes
``report.json``, ``report.md`` and ``loss_distribution.png`` into the run's folder. The plot is
the one DLFD (Choi & Na, AAAI 2025) uses to show that an unlearned model looks like retraining:
density histograms of the per-sample loss of the forget set (members) and of held-out non-members,
the attack's only feature. Given a retrain ``reference``, the report shows retrain's numbers beside
the result with the gaps and the time ratio, because NoMUS alone rewards a forgetting score below
retrain's.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import platform
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor

import unlearn_pl
from unlearn_pl.data import UnlearningDataModule
from unlearn_pl.evaluation.audit import VERDICT_RULE, audit_method
from unlearn_pl.evaluation.plots import plot_signal_against_references
from unlearn_pl.methods.base import UnlearningModule
from unlearn_pl.networks import Classifier, load_network_weights
from unlearn_pl.utils import atomic_save_figure, atomic_write_text

__all__ = ["UnlearningReport", "evaluate", "load_checkpoint_for_evaluation"]

FORGET_REQUEST_KEYS = ("forget_classes", "forget_fraction", "forget_count", "forget_ids",
                       "forget_groups", "seed")
FS_SCALE = ("2*|MIA - 0.5| (paper scale, 0 = the attacker cannot tell); the DLFD and MUFAC code "
            "print |MIA - 0.5|, half of it")
# Checkpoint hyperparameters the CLI adds for its own bookkeeping, not the method's settings.
_CLI_KEYS = ("_class_path", "_instantiator")


# ------------------------------------------------------------------ helpers
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


def _check_finite(results: Mapping[str, float], what: str) -> None:
    bad = {k: v for k, v in results.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"{what}: non-finite evaluation results {bad}; the network's outputs "
                         "are not finite (a diverged model), so there is nothing to report")


def _is_report(path: str) -> bool:
    return Path(path).suffix == ".json"


def _datamodule(trainer: Trainer) -> UnlearningDataModule:
    datamodule = getattr(trainer, "datamodule", None)
    if not isinstance(datamodule, UnlearningDataModule):
        raise RuntimeError("the unlearning evaluation needs an UnlearningDataModule: it names the "
                           "forget, retain and unseen splits")
    return datamodule


def check_evaluation_splits(datamodule: UnlearningDataModule) -> None:
    """Raise a clear error when a split the evaluation needs holds no sample.

    An empty split would otherwise surface as a NaN mean with a warning, or an attack error naming
    neither the split nor the fix.
    """
    empty = [s for s in datamodule.eval_splits if len(datamodule.splits[s][2]) == 0]
    if empty:
        raise ValueError(f"evaluation split(s) {empty} hold no sample: accuracy and the "
                         "membership inference attack need samples in every split; check the "
                         "forget request and the held-out data of the dataset")


def _versions() -> dict[str, str]:
    found = {"unlearn_pl": unlearn_pl.__version__, "python": platform.python_version()}
    for package in ("torch", "lightning", "torchmetrics", "torchvision"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def sample_losses(module: UnlearningModule, splits: Sequence[str]) -> dict[str, list[float]]:
    """The per-sample losses of ``splits`` in the module's last evaluation: every sample once (the
    repeats DDP pads with dropped), in id order, equal on every rank. The report, its plot and the
    comparison runner all read them from here.

    Raises:
        RuntimeError: the module has not evaluated these splits.
    """
    missing = [s for s in splits if s not in module.last_samples]
    if missing:
        raise RuntimeError(f"{type(module).__name__} has no per-sample values of {missing}: "
                           "run Trainer.test first")
    return {s: module.last_samples[s]["loss"].tolist() for s in splits}


def sample_signals(module: UnlearningModule, nonmember: str) -> dict[str, Any]:
    """The per-sample logit-scaled confidence of the forget split and of the attack's
    non-member split in the module's last evaluation, by sample id (rounded to 6 decimals):
    ``{"forget": {"ids", "signal"}, "nonmember": {...}}``, what the privacy audit reads."""
    out = {}
    for key, split in (("forget", "forget"), ("nonmember", nonmember)):
        samples = module.last_samples[split]
        out[key] = {"ids": samples["ids"].tolist(),
                    "signal": [round(v, 6) for v in samples["signal"].tolist()]}
    return out


class _TestRun(Callback):
    """Checks the evaluation splits before a test run starts and hands over the evaluation the
    module computed in this run (never a stale one from an earlier run)."""

    def __init__(self) -> None:
        self._previous: object = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "test":
            check_evaluation_splits(_datamodule(trainer))

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Identity of the module's previous evaluation, to tell a fresh one from a stale one.
        self._previous = getattr(pl_module, "last_evaluation", None)

    def results(self, pl_module: LightningModule) -> dict[str, float]:
        """The evaluation the module computed in this test run."""
        results = getattr(pl_module, "last_evaluation", None)
        if results is None or results is self._previous:
            raise RuntimeError(f"{type(pl_module).__name__} produced no test evaluation "
                               "(UnlearningModule.on_test_epoch_end sets last_evaluation)")
        return dict(results)

    def losses(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, list[float]]:
        """Per-sample losses of the forget split and of the attack's non-member split."""
        nonmember = _datamodule(trainer).mia_nonmember_split
        return sample_losses(pl_module, ("forget", nonmember))  # type: ignore[arg-type]

    def signals(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Per-sample signals of the forget split and the attack's non-members."""
        nonmember = _datamodule(trainer).mia_nonmember_split
        return sample_signals(pl_module, nonmember)  # type: ignore[arg-type]


# ------------------------------------------------------------------ evaluate
def load_checkpoint_for_evaluation(path: str | os.PathLike[str]) -> tuple[UnlearningModule, str]:
    """A checkpoint of any method as a plain :class:`UnlearningModule` ready for evaluation.

    Evaluation depends only on the network and the base hyperparameters (task, attack feature and
    seed), so the checkpoint's network weights are loaded into a base module: this works for every
    method, including ones whose class is not importable here. The unlearning time and the forget
    set the checkpoint was unlearned for are restored from it (evaluating it on another forget
    request is refused), and its original is never read.

    Args:
        path: a Lightning checkpoint written by an unlearn_pl run.

    Returns:
        ``(module, method)``, the method's class path as the CLI recorded it, or ``"unknown"``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an unlearn_pl Lightning checkpoint, or its network does not
            load (e.g. a widened head saved mid-run).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not hparams or "arch" not in hparams:
        raise ValueError(f"{path} is not a Lightning checkpoint of an unlearn_pl run (it has no "
                         "network hyperparameters); pass a checkpoint or a report.json")
    accepted = inspect.signature(UnlearningModule.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in accepted and k != "original"}
    module = UnlearningModule(**kwargs)
    load_network_weights(module.network, Path(path), kwargs["arch"])
    module.restore_record(checkpoint)
    return module, str(hparams.get("_class_path", "unknown"))


def _as_module(network_or_module: Classifier | UnlearningModule | str | os.PathLike[str],
               datamodule: UnlearningDataModule) -> UnlearningModule:
    if isinstance(network_or_module, UnlearningModule):
        return network_or_module
    if isinstance(network_or_module, str | os.PathLike):
        return load_checkpoint_for_evaluation(network_or_module)[0]
    if not isinstance(network_or_module, Classifier):
        raise TypeError("evaluate() takes a Classifier, an UnlearningModule or a checkpoint path, "
                        f"got {type(network_or_module).__name__}")
    network = network_or_module
    if network.num_classes != datamodule.num_classes:
        raise ValueError(f"the network has {network.num_classes} outputs but the dataset has "
                         f"{datamodule.num_classes} classes")
    # The placeholder tiny_cnn is replaced at once; only the evaluation settings are kept.
    module = UnlearningModule(arch="tiny_cnn", num_classes=network.num_classes,
                              in_channels=network.normalize.get_buffer("mean").shape[1],
                              task=datamodule.task, width=0.1)
    module.network = network
    module.weights_source = "given"
    return module


def _evaluate(network_or_module: Classifier | UnlearningModule | str | os.PathLike[str],
              datamodule: UnlearningDataModule, trainer_kwargs: dict[str, Any] | None
              ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    module = _as_module(network_or_module, datamodule)
    collector = _TestRun()
    kwargs: dict[str, Any] = dict(devices=1, logger=False, enable_checkpointing=False,
                                  enable_progress_bar=False, enable_model_summary=False)
    kwargs.update(trainer_kwargs or {})
    kwargs["callbacks"] = [*list(kwargs.get("callbacks") or []), collector]
    previous_trainer = datamodule.trainer
    with tempfile.TemporaryDirectory(prefix="unlearn_pl_eval_") as scratch:
        # The datamodule writes splits.json into the run folder: keep it out of the caller's cwd.
        kwargs.setdefault("default_root_dir", scratch)
        trainer = Trainer(**kwargs)
        if trainer.world_size > 1:
            # Spawned workers would keep the results; the report callback gathers over ranks.
            raise ValueError("evaluate() runs in one process; evaluate on several devices with "
                             "`unlearn-pl test` and read its report.json")
        try:
            trainer.test(module, datamodule=datamodule, verbose=False)
        finally:
            datamodule.trainer = previous_trainer
        losses = collector.losses(trainer, module)
        signals = collector.signals(trainer, module)
    results = collector.results(module)
    _check_finite(results, type(module).__name__)
    return results, losses, signals


def evaluate(network_or_module: Classifier | UnlearningModule | str | os.PathLike[str],
             datamodule: UnlearningDataModule, *,
             trainer_kwargs: dict[str, Any] | None = None) -> dict[str, float]:
    """Evaluate a network, module or checkpoint on a datamodule's full test splits.

    Runs ``Trainer.test`` (eval mode, test transform, full splits) and returns what the CLI logs,
    without the ``test/`` prefix: ``acc_{retain,forget,unseen}`` (and, class-wise,
    ``acc_{retain,forget}_test``), the matching ``loss_*``, ``mia`` and ``mia_auc`` (members D_f,
    non-members D_u, or Df_test for class-wise requests), ``forgetting_score`` (paper scale
    ``2·|MIA − 0.5|``), ``nomus`` and ``fit_seconds`` (0 for a plain network).

    Args:
        network_or_module: a plain :class:`~unlearn_pl.networks.Classifier` (wrapped in a base
            :class:`UnlearningModule` with the dataset's task and the default attack settings),
            any :class:`UnlearningModule`, or the path of a checkpoint (see
            :func:`load_checkpoint_for_evaluation`).
        datamodule: the dataset and forget request.
        trainer_kwargs: overrides of the evaluation ``Trainer`` (default: one device, no logger,
            no checkpoints, a scratch ``default_root_dir``).

    Returns:
        ``{name: value}`` as plain floats.

    Raises:
        ValueError: an empty evaluation split, too few forget or non-member samples for the
            attack, or non-finite outputs.
    """
    return _evaluate(network_or_module, datamodule, trainer_kwargs)[0]


# ------------------------------------------------------------------ the report
def _gaps(results: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float | None]:
    """Result minus reference for every shared number, the average gap and the time ratio."""
    diffs = {k: results[k] - reference[k] for k in results
             if k in reference and k != "fit_seconds"}
    headline = [k for k in diffs if k.startswith("acc_") or k == "forgetting_score"]
    gaps: dict[str, float | None] = dict(diffs)
    gaps["avg_gap"] = sum(abs(diffs[k]) for k in headline) / len(headline) if headline else None
    mine, theirs = results.get("fit_seconds", 0.0), reference.get("fit_seconds", 0.0)
    if mine > 0 and theirs > 0:
        gaps["time_ratio"] = mine / theirs
    else:
        gaps["time_ratio"] = None
        warnings.warn(f"time ratio left out: fit_seconds is {mine} for the result and {theirs} "
                      "for the reference (0 means the checkpoint holds no unlearning time)",
                      stacklevel=2)
    return gaps


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if name == "fit_seconds" else f"{value:.4f}"


def _audit_lines(audit: Mapping[str, Any] | None) -> list[str]:
    """The privacy audit's verdict and numbers beside the held-out retrain network's."""
    if not audit:
        return []
    exposed = audit["most_exposed"]
    pairs = ", ".join(f"{i} ({z:+.1f})" for i, z in zip(exposed["ids"][:10], exposed["z"][:10],
                                                        strict=True))
    return ["", f"**Verdict: {audit['verdict']}** (distance to retrain "
            f"{audit['distance']:.3f}; {len(audit['bank'])} retrain networks of other seeds as "
            "references; rule: " + VERDICT_RULE + ")", "",
            "| per-example test | result | held-out retrain |", "|---|---:|---:|",
            f"| forget examples outside the references' 95 % band | {audit['outside']:.3f} | "
            f"{audit['floor_outside']:.3f} |",
            f"| mean abs z | {audit['mean_abs_z']:.2f} | {audit['floor_mean_abs_z']:.2f} |",
            f"| LiRA AUC (forget vs held-out) | {audit['lira_auc']:.3f} | "
            f"{audit['floor_lira_auc']:.3f} |",
            f"| LiRA TPR at 1 % FPR | {audit['lira_tpr_1pct']:.3f} | "
            f"{audit['floor_lira_tpr_1pct']:.3f} |", "",
            f"- most exposed forget examples (id, LiRA z): {pairs}"]


def render_markdown(record: Mapping[str, Any]) -> str:
    """The Markdown table of a ``report.json`` record."""
    results: dict[str, float] = record["metrics"]
    reference = record.get("reference")
    request = ", ".join(f"{k}={v}" for k, v in record["forget_request"].items()
                        if v is not None and k != "seed")
    dataset = record["dataset"]
    lines = [f"# Unlearning report: {record['method']}", "",
             f"- dataset: `{dataset['class_path']}` ({dataset['task']}, "
             f"{dataset['num_classes']} classes); request: {request} "
             f"(seed {record['forget_request'].get('seed')})",
             f"- MIA members: forget; non-members: {dataset['mia_nonmember_split']}; "
             f"forgetting_score = {FS_SCALE}",
             f"- evaluated: the {record.get('weights', 'unknown')} weights; checkpoint: "
             f"{record.get('checkpoint')}; written {record['timestamp']}"]
    lines += [f"- warning: {warning}" for warning in record.get("warnings", [])]
    lines += _audit_lines(record.get("audit"))
    if reference is None:
        lines += ["", "| metric | result |", "|---|---:|"]
        lines += [f"| {k} | {_format(k, v)} |" for k, v in results.items()]
        return "\n".join(lines) + "\n"
    gaps = record["gaps"]
    ref_metrics = reference["metrics"]
    lines += [f"- reference: {reference['method']} from `{reference['source']}`; gap = result "
              "− reference; avg_gap = mean |gap| over the accuracies and the forgetting score",
              "", "| metric | result | reference | gap |", "|---|---:|---:|---:|"]
    for k, v in results.items():
        if k == "fit_seconds":
            ratio = gaps.get("time_ratio")
            gap = "–" if ratio is None else f"×{ratio:.3f}"
        else:
            gap = "–" if gaps.get(k) is None else f"{gaps[k]:+.4f}"
        lines.append(f"| {k} | {_format(k, v)} | {_format(k, ref_metrics.get(k))} | {gap} |")
    lines.append(f"| avg_gap | | | {_format('avg_gap', gaps.get('avg_gap'))} |")
    return "\n".join(lines) + "\n"


def plot_loss_distribution(panels: list[tuple[str, dict[str, list[float]]]], non_member: str,
                           path: Path, bins: int = 40) -> None:
    """Density histograms of the per-sample loss of forget vs non-member samples, one panel per
    model (the result, and retrain when known), on shared bins, written atomically to ``path``.

    The bins span the smallest loss to the 99.5th percentile of all samples; larger losses are
    drawn in the last bin so a few outliers do not squash the plot.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    every = torch.tensor([x for _, losses in panels for v in losses.values() for x in v],
                         dtype=torch.float64)
    lower = float(every.min()) if every.numel() else 0.0
    upper = float(torch.quantile(every, 0.995)) if every.numel() else 1.0
    upper = max(upper, lower + 1e-6)
    edges = torch.linspace(lower, upper, bins + 1).tolist()
    figure = Figure(figsize=(5.0 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, losses) in zip(axes, panels, strict=True):
        for split, label, color in (("forget", "forget (members)", "tab:red"),
                                    (non_member, f"{non_member} (non-members)", "tab:blue")):
            values = [min(v, upper) for v in losses.get(split, [])]
            if values:
                ax.hist(values, bins=edges, density=True, alpha=0.5, color=color, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("per-sample loss")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    atomic_save_figure(figure, path)


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
            retrain-likeness and LiRA, each beside the reference as the target) and draws
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
                "losses": other.get("losses"), "signals": other.get("signals")}

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
                "signals": signals}

    @staticmethod
    def _audit(results: Mapping[str, float], signals: Mapping[str, Any],
               reference: Mapping[str, Any], bank: list[dict[str, Any]], heldout: str,
               plot: Path) -> dict[str, Any]:
        """The privacy audit of the result against the bank, read against the reference (a
        held-out retrain network), and its plot."""
        def network(record: Mapping[str, Any]) -> dict[str, Any]:
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
            "versions": _versions(),
            "reference": None,
            "gaps": None,
            # Attacks too small to honour their test fold size: the numbers are coarse.
            "warnings": datamodule.small_sample_warnings(
                test_size=pl_module.mia.test_size, balance=pl_module.mia.balance),
        }
        panels = [(f"result: {record['method']} (MIA {results['mia']:.3f}, "
                   f"FS {results['forgetting_score']:.3f})", losses)]
        signals = self._run.signals(trainer, pl_module)
        folder.mkdir(parents=True, exist_ok=True)
        if self.reference is not None:
            reference = self._network(self.reference, trainer)
            record["reference"] = {k: reference[k] for k in ("source", "method", "metrics")}
            record["gaps"] = _gaps(results, reference["metrics"])
            if reference["losses"]:
                ref = reference["metrics"]
                panels.append((f"reference: {reference['method'].rsplit('.', 1)[-1]} "
                               f"(MIA {ref['mia']:.3f}, FS {ref['forgetting_score']:.3f})",
                               reference["losses"]))
            if self.bank:
                bank = [self._network(path, trainer) for path in self.bank]
                record["audit"] = self._audit(results, signals, reference, bank,
                                              f"acc_{datamodule.heldout_split}",
                                              folder / "signal_vs_references.png")
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
