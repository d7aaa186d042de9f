"""The comparison runner: every method beside the original and the retrain reference.

``unlearn-pl-compare --setting digits`` is the quickstart's whole job: for a setting (a data
config, ``configs/data/<setting>.yaml``, or the path of one) and each seed it

1. trains, or reuses from ``--workdir``, the **original** network (trained on D) and the
   **retrain** reference (the same recipe on D_r only), from ``configs/methods/original.yaml`` and
   ``retrain.yaml``;
2. runs every method config (``configs/methods/<name>.yaml``; ``--methods all`` finds them by glob)
   from the original's checkpoint through the same :class:`~unlearn_pl.cli.UnlearnCLI` the
   ``unlearn-pl`` command uses, then ``trainer.fit`` and ``trainer.test``;
3. times every fit (the module's ``fit_seconds`` and an outer wall clock) and divides by
   retrain's;
4. writes ``results.csv``, ``results.json``, ``results.md`` and four plots into ``--output`` and
   prints the Markdown table (mean ± sample standard deviation over seeds).

Seed ``k`` sets ``--seed_everything k``, the data's split seed (``--data.init_args.seed k``: the
sample-wise forget set and the carved unseen split change with it) and the method's own seed
(``--model.init_args.seed k``), so the spread over seeds covers all three.
``--method-seeds m ...`` instead runs every method once per method seed ``m``
(``--seed_everything m``, ``--model.init_args.seed m`` and ``--data.init_args.shuffle_seed m``:
the batch order, the attack's subsampling and the method's own randomness) against the same
split, original and retrain of each seed: the spread of the unlearning run alone, without
training new references. Extra arguments
(``--trainer.accelerator gpu``, ``--trainer.precision bf16-mixed``, ``--data.*``, ``--model.*``)
are passed on unchanged to **every** run, original and retrain included, so the comparison stays
like for like when it is scaled up.

Cache: ``<workdir>/seed<k>/{original,retrain}/<kind>-<fingerprint>.ckpt`` with a ``.json`` record
beside it (the config it was trained with, its test numbers, its per-sample losses, its time).
The fingerprint covers the data and model configs, the seed and the parts of the trainer config
that change the result (epochs, steps, precision, devices, accumulation, clipping); a different
config trains a new checkpoint beside the old one, so a cached original is never overwritten.
Checkpoints and records are written atomically. A method run keeps its record in
``<workdir>/seed<k>/<method>[-mseed<m>]/record.json`` with its fingerprint; ``--reuse-runs``
reuses it when the fingerprint matches (off by default: a plain invocation times fresh runs).

``--shard I/N`` splits the work (references, bank members, method runs) across the N tasks of a
job array sharing one ``--workdir``: each does its share through the cache and prints what it
did; the same command without ``--shard`` and with ``--reuse-runs`` then assembles the results
(:func:`compare`'s ``shard``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, NamedTuple

import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from unlearn_pl.cli import UnlearnCLI
from unlearn_pl.data import UnlearningDataModule
from unlearn_pl.evaluation import VERDICT_RULE, audit_method, sample_losses, sample_signals
from unlearn_pl.evaluation.bank import train_bank
from unlearn_pl.methods import UnlearningModule, available_methods
from unlearn_pl.utils import atomic_save_figure, atomic_write_text

__all__ = ["SETTINGS", "CompareInputError", "Setting", "available_method_configs",
           "available_settings", "compare", "default_configs_dir", "main", "markdown_table",
           "summarize"]

# The shipped configs: package data of unlearn_pl (unlearn_pl/configs; the top-level configs/ of a
# checkout is a symlink to it), so an installed wheel finds them as an editable install does.
CONFIGS = Path(str(resources.files("unlearn_pl") / "configs"))
REFERENCES = ("original", "retrain")
# Every number of a row, in table order; the class-wise ones only exist for class-wise requests.
METRICS = ("acc_retain", "acc_forget", "acc_unseen", "acc_retain_test", "acc_forget_test", "mia",
           "forgetting_score", "nomus", "fit_seconds", "time_ratio_to_retrain")
EXTRA_NUMBERS = ("mia_auc", "wall_seconds", "validation_seconds", "loss_retain", "loss_forget",
                 "loss_unseen", "loss_retain_test", "loss_forget_test")
# The privacy audit's numbers of a row (with --references K): unlearn_pl.evaluation.audit.
AUDIT_NUMBERS = ("distance_to_retrain", "outside_band", "floor_outside_band", "mean_abs_z",
                 "lira_auc", "floor_lira_auc", "lira_tpr_1pct", "floor_lira_tpr_1pct",
                 "rmia_auc", "floor_rmia_auc", "rmia_tpr_1pct", "floor_rmia_tpr_1pct",
                 "loss_auc", "loss_tpr_1pct",
                 "epsilon_forget_quality", "retrain_epsilon_forget_quality",
                 "epsilon_final_score")
# Trainer keys that change what a reference network learns (the rest is logging and devices).
_RECIPE_TRAINER_KEYS = ("max_epochs", "max_steps", "precision", "devices", "num_nodes",
                        "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm")
# Data keys that only change evaluation speed, never the trained network or its test numbers.
_NON_RECIPE_DATA_KEYS = ("num_workers", "eval_batch_size", "eval_max_samples", "probe_splits",
                         "val_split")
_NOISY_WARNINGS = (".*does not have many workers.*", ".*The number of training batches.*",
                   ".*LeafSpec.*",
                   ".*Checkpoint directory .* exists and is not empty.*",
                   # Frozen teachers and copies stay in eval mode on purpose (see base.py).
                   r".*module\(s\) in eval mode at the start of training.*",
                   # Closed-form methods (Fisher forgetting) train without an optimiser.
                   r".*returned `None`, this fit will run with no optimizer.*")


class CompareInputError(ValueError):
    """An unknown setting, method or trainer config, or bad seeds: raised before any training."""


@dataclass(frozen=True)
class Setting:
    """How a named setting is run beyond its data config.

    Args:
        reference_epochs: epochs of the original and retrain networks (``None``: the epochs of
            ``configs/methods/original.yaml`` / ``retrain.yaml``).
        num_threads: torch intra-op threads for the whole run (``None``: torch's default).
        overrides: arguments added to every run of the setting.
        method_overrides: extra arguments per method config name.
        references: the reference bank's size when ``--references`` is not given (0: no
            privacy audit).
        ensemble_bank: train a seed's missing bank members as one ensemble
            (:func:`~unlearn_pl.evaluation.bank.train_bank`); ``False``: one run each, which is
            faster for large networks on a CPU (grouped convolutions there cost more than the
            separate ones they replace).
        note: why the setting differs from the plain configs, shown in ``results.md``.
    """

    reference_epochs: int | None = None
    num_threads: int | None = None
    references: int = 0
    ensemble_bank: bool = True
    overrides: tuple[str, ...] = ()
    method_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    note: str = ""


# On the large settings every baseline gets about one pass over D_r (the configs' own 2-5 epochs
# would take over an hour per setting on a 2-core CPU): an equal budget, the same for every
# method, stated in results.md. Methods that already do at most one pass keep their configs.
ONE_PASS_BUDGET: Mapping[str, tuple[str, ...]] = {
    name: ("--trainer.max_epochs", "1") for name in
    ("finetune", "cf_k", "eu_k", "neggrad_plus", "random_labels", "amnesiac")} | {
    # one max pass over D_f, then one min pass over D_r
    "scrub": ("--trainer.max_epochs", "2", "--model.init_args.msteps", "1"),
    # UNSIR: impair and repair are its two epochs, each on a retain subset: unchanged.
}
# On the small settings one epoch has fewer than dlfd_fast's 25 batches between checks: check
# every 5, as configs/methods/dlfd.yaml does, so the dynamic forgetting strategy can act.
SMALL_DATA_CHECKS: Mapping[str, tuple[str, ...]] = {
    "dlfd_fast": ("--trainer.val_check_interval", "5")}
ONE_PASS_NOTE = ("baselines that train on D_r capped at one pass (SCRUB: one max and one min "
                 "pass)")

SETTINGS: dict[str, Setting] = {
    # The quickstart: ~15 epochs give the width-2 tiny CNN ~97 % test accuracy in seconds. One
    # thread: for a network this small, a second OpenMP thread costs more in synchronisation than
    # it saves, and on a busy 2-core machine it made training 10× slower (75 vs 6 ms per step).
    # The quickstart audits every method against 8 retrains of other seeds (trained as one
    # ensemble: about 20 s here), so its table leads with the verdict.
    "digits": Setting(reference_epochs=15, num_threads=1, method_overrides=SMALL_DATA_CHECKS,
                      references=8,
                      note="tiny_cnn (width 2), 15 reference epochs, 1 torch thread; "
                           "dlfd_fast checks every 5 steps"),
    # Boundary Unlearning's setting, resnet18 at 32×32 (configs/data/cifar10.yaml). Its bank
    # members train one by one: on 2 CPU threads a step of two resnet18 as one vmapped ensemble
    # took 8.1 s against 2 × 2.5 s for the two networks apart (batch 128; the resnet18 settings
    # below likewise).
    "cifar10": Setting(reference_epochs=10, method_overrides=ONE_PASS_BUDGET,
                       ensemble_bank=False,
                       note="resnet18, 10 reference epochs; " + ONE_PASS_NOTE),
    # DLFD's sample-wise setting (10 % of FER2013 train), resnet18 at 48×48. Without
    # augmentation: with it, the 10-epoch original fitted its training set no better than the test
    # set (63.8 % vs 60.5 %, forgetting score 0.004), so there was no membership to forget; the
    # papers' originals memorise their training data (MUFAC's forgetting score 0.385).
    "fer2013": Setting(reference_epochs=8, overrides=("--data.init_args.augment", "false"),
                       ensemble_bank=False,
                       method_overrides=ONE_PASS_BUDGET,
                       note="resnet18, 8 reference epochs, no augmentation; " + ONE_PASS_NOTE),
    # 320 training faces, resnet18 with the standard stem (configs/data/olivetti.yaml): an
    # epoch takes about 3 s here; 30 epochs is a first budget, not a tuned one.
    # Fisher with 40 classes is 40 backward passes per sample (over 4 minutes here): one
    # sampled class per sample instead (an unbiased estimate of the same diagonal).
    "olivetti": Setting(reference_epochs=30, ensemble_bank=False,
                        method_overrides={**SMALL_DATA_CHECKS,
                                          "fisher": ("--model.init_args.fisher_classes",
                                                     "sampled")},
                        note="resnet18, 30 reference epochs; Fisher with one sampled "
                             "class per sample; dlfd_fast checks every 5 steps"),
}


# --------------------------------------------------------------------------- discovery
def default_configs_dir() -> Path:
    """The folder of the shipped configs (``data/``, ``methods/``, ``trainer/``): inside the
    installed package, and the same files as a checkout's top-level ``configs/``. Copy it to
    edit the configs or to give ``unlearn-pl fit --config`` their paths."""
    return CONFIGS


def available_settings(configs_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the data configs in ``configs/data`` (each one is a setting)."""
    return sorted(p.stem for p in (Path(configs_dir or CONFIGS) / "data").glob("*.yaml"))


def available_method_configs(configs_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the method configs in ``configs/methods``, without the original and retrain
    references (they are always run)."""
    found = (p.stem for p in (Path(configs_dir or CONFIGS) / "methods").glob("*.yaml"))
    return sorted(name for name in found if name not in REFERENCES)


def _is_yaml_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) and Path(value).is_file()


def _resolve_setting(setting: str, configs_dir: Path) -> tuple[str, Path]:
    if _is_yaml_path(setting):
        return Path(setting).stem, Path(setting).resolve()
    path = configs_dir / "data" / f"{setting}.yaml"
    if not path.is_file():
        raise CompareInputError(f"unknown setting {setting!r}: choose one of "
                                f"{available_settings(configs_dir)} or give the path of a data "
                                "config YAML file")
    return setting, path


def _resolve_methods(methods: Sequence[str], configs_dir: Path) -> dict[str, Path]:
    known = available_method_configs(configs_dir)
    names: list[str] = []
    for method in methods:
        names.extend(known if method == "all" else [method])
    resolved: dict[str, Path] = {}
    unknown = []
    for name in names:
        if name in REFERENCES:
            raise CompareInputError(f"{name!r} is not an unlearning method: the original and "
                                    "retrain references are always run; choose among "
                                    + ", ".join(known))
        if _is_yaml_path(name):
            resolved.setdefault(Path(name).stem, Path(name).resolve())
        elif name in known:
            resolved.setdefault(name, configs_dir / "methods" / f"{name}.yaml")
        else:
            unknown.append(name)
    if unknown:
        raise CompareInputError(f"unknown method(s) {unknown}: choose among {known}, 'all', or "
                                "give the path of a method config YAML file")
    for path in resolved.values():
        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config.get("model"), dict) or "class_path" not in config["model"]:
            raise CompareInputError(f"method config {path} has no model.class_path: a method "
                                    "config names its UnlearningModule class (see "
                                    "configs/methods/finetune.yaml)")
    return resolved


def _resolve_trainer(trainer: str, configs_dir: Path) -> Path:
    if _is_yaml_path(trainer):
        return Path(trainer).resolve()
    path = configs_dir / "trainer" / f"{trainer}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (configs_dir / "trainer").glob("*.yaml"))
        raise CompareInputError(f"unknown trainer config {trainer!r}: choose one of {names} or "
                                "give the path of a trainer config YAML file")
    return path


# --------------------------------------------------------------------------- one run
def _per_sample(trainer: Trainer, model: LightningModule) -> dict[str, Any]:
    """The per-sample values of the last test, from the module's own evaluation (each sample
    once): the losses of forget and the attack's non-members (the loss histograms' data), and
    the logit-scaled confidence of the same samples by id (the privacy audit's signal)."""
    nonmember = trainer.datamodule.mia_nonmember_split  # type: ignore[attr-defined]
    losses = sample_losses(model, ("forget", nonmember))  # type: ignore[arg-type]
    return {"nonmember_split": nonmember,
            "losses": {"forget": [round(v, 6) for v in losses["forget"]],
                       "nonmember": [round(v, 6) for v in losses[nonmember]]},
            "signals": sample_signals(model, nonmember)}  # type: ignore[arg-type]


@dataclass
class _Context:
    setting: str
    data_config: Path
    trainer_config: Path
    configs_dir: Path
    workdir: Path
    spec: Setting
    overrides: list[str]
    reference_epochs: int | None
    progress: bool
    reuse_runs: bool = False
    shard: tuple[int, int] | None = None


def _logger_args(trainer_config: Path, run_dir: Path) -> list[str]:
    config = yaml.safe_load(trainer_config.read_text()) or {}
    logger = (config.get("trainer") or {}).get("logger")
    args = ["--trainer.default_root_dir", str(run_dir)]
    if isinstance(logger, dict) and "class_path" in logger:
        args += ["--trainer.logger.init_args.save_dir", str(run_dir),
                 "--trainer.logger.init_args.name", "logs"]
    return args


def _run_args(ctx: _Context, method_config: Path, seed: int, run_dir: Path,
              name: str, original: Path | None, method_seed: int | None = None) -> list[str]:
    own = seed if method_seed is None else method_seed
    args = ["--config", str(ctx.trainer_config), "--config", str(ctx.data_config),
            "--config", str(method_config), "--seed_everything", str(own),
            "--data.init_args.seed", str(seed), "--model.init_args.seed", str(own),
            *(["--data.init_args.shuffle_seed", str(own)] if own != seed else []),
            "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", str(ctx.progress).lower(),
            "--trainer.enable_model_summary", str(ctx.progress).lower(),
            *_logger_args(ctx.trainer_config, run_dir)]
    if original is not None:
        args += ["--model.init_args.original", str(original)]
    if name in REFERENCES and ctx.reference_epochs is not None:
        args += ["--trainer.max_epochs", str(ctx.reference_epochs)]
    return [*args, *ctx.spec.overrides, *ctx.spec.method_overrides.get(name, ()), *ctx.overrides]


def _build(args: list[str], progress: bool) -> UnlearnCLI:
    with warnings.catch_warnings():
        # `args` is the whole command here; the caller's own sys.argv is not meant for it.
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        cli = UnlearnCLI(UnlearningModule, UnlearningDataModule, subclass_mode_model=True,
                         subclass_mode_data=True, args=args, run=False,
                         auto_configure_optimizers=False, save_config_kwargs={"overwrite": True})
    for callback in cli.trainer.callbacks:  # type: ignore[attr-defined]
        if hasattr(callback, "print_table") and not progress:
            callback.print_table = False  # a per-run report table would bury the comparison's
    return cli


def _plain_config(cli: UnlearnCLI) -> dict[str, Any]:
    """The run's parsed config as plain JSON data, data and model arguments left at ``None``
    dropped: an argument left at None is the same recipe as an argument that did not exist yet,
    so a new optional argument must not invalidate every cached network."""
    config = json.loads(json.dumps(cli.config.as_dict(), default=str))
    for part in (config.setdefault("data", {}), config.setdefault("model", {})):
        part["init_args"] = {k: v for k, v in part.get("init_args", {}).items() if v is not None}
    return config


def _digest(config: Mapping[str, Any]) -> str:
    """The short hash that names a fingerprinted config (cache file names, records)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _fingerprint_config(cli: UnlearnCLI) -> dict[str, Any]:
    config = _plain_config(cli)
    data, model = config["data"], config["model"]
    for key in _NON_RECIPE_DATA_KEYS:
        data["init_args"].pop(key, None)
    trainer = config.get("trainer") or {}
    return {"seed_everything": config.get("seed_everything"), "data": data, "model": model,
            "trainer": {k: trainer.get(k) for k in _RECIPE_TRAINER_KEYS}}


def _method_fingerprint(cli: UnlearnCLI) -> dict[str, Any]:
    """What a method run's result depends on: its whole parsed config but where it logs and how
    loudly, the data loader workers and the config files' paths (their content is in). Fuller
    than a reference's fingerprint: a method's mid-fit decisions (DLFD's switch) see the probe
    and the validation schedule. The original is named by its file name, whose digest
    fingerprints the original's own recipe, so a moved or remounted workdir still matches."""
    config = _plain_config(cli)
    config.pop("config", None)
    trainer = config.get("trainer") or {}
    for key in ("default_root_dir", "logger", "enable_progress_bar", "enable_model_summary"):
        trainer.pop(key, None)
    (config.get("report") or {}).pop("print_table", None)
    config["data"]["init_args"].pop("num_workers", None)
    model_args = config["model"]["init_args"]
    if model_args.get("original"):
        model_args["original"] = Path(model_args["original"]).name
    return config


def _fit_and_test(cli: UnlearnCLI) -> dict[str, Any]:
    trainer, model = cli.trainer, cli.model
    start = time.perf_counter()
    trainer.fit(model, datamodule=cli.datamodule)
    wall = time.perf_counter() - start
    trainer.test(model, datamodule=cli.datamodule, verbose=False)
    evaluation = dict(model.last_evaluation)  # type: ignore[attr-defined]
    return {**evaluation, "fit_seconds": float(model.fit_seconds), "wall_seconds": wall,
            "validation_seconds": float(model.validation_seconds),
            "class_path": f"{type(model).__module__}.{type(model).__name__}",
            **_per_sample(trainer, model), "log_dir": trainer.log_dir}


def _test_only(cli: UnlearnCLI) -> dict[str, Any]:
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    evaluation = dict(cli.model.last_evaluation)  # type: ignore[attr-defined]
    return {**evaluation, **_per_sample(cli.trainer, cli.model),
            "log_dir": cli.trainer.log_dir}


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def bank_seed(seed: int, member: int) -> int:
    """The own seed (initialisation, batch order) of reference ``member`` of seed ``seed``'s
    bank: far from the seeds and method seeds a user gives."""
    return 1_000_000 + 1_000 * seed + member


def _reference_run(ctx: _Context, kind: str, seed: int, member: int | None
                   ) -> tuple[list[str], UnlearnCLI, dict[str, Any], Path]:
    """The arguments, built CLI, fingerprinted config and cache checkpoint path of a reference
    network (``member``: of the seed's bank, with its own seed :func:`bank_seed`)."""
    run_dir = ctx.workdir / f"seed{seed}" / (kind if member is None else f"bank/{kind}{member}")
    own = None if member is None else bank_seed(seed, member)
    run_args = _run_args(ctx, ctx.configs_dir / "methods" / f"{kind}.yaml", seed, run_dir, kind,
                         None, own)
    cli = _build(run_args, ctx.progress)
    config = _fingerprint_config(cli)
    return run_args, cli, config, run_dir / f"{kind}-{_digest(config)}.ckpt"


def _current(record: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether a cached record is of this config and holds every per-sample signal the audit
    reads (forget, non-members and RMIA's population; older records lack the population)."""
    return record.get("config") == config and "population" in record.get("signals", {})


def _reference(ctx: _Context, kind: str, seed: int, member: int | None = None, *,
               claim: bool = False, wait: bool = False) -> tuple[dict[str, Any], Path]:
    """Train or reuse the original (``kind="original"``) or retrain network of one seed, or
    (``member``) a network of its reference bank: the retrain recipe on the same split with its
    own seed (:func:`bank_seed`). ``claim``: mark the training with a claim file that other
    shards wait on; ``wait``: wait while another shard's claim on this network lives."""
    label = kind if member is None else f"{kind} bank {member}"
    run_args, cli, config, checkpoint = _reference_run(ctx, kind, seed, member)
    record_path = checkpoint.with_suffix(".json")
    claim_path = checkpoint.with_name(f".{checkpoint.name}.claim")
    if wait and not checkpoint.is_file():
        _wait_for_claim(ctx, claim_path, f"seed {seed} {label}")
    with _claim(ctx, claim_path, claim and not checkpoint.is_file()):
        if record_path.is_file() and checkpoint.is_file():
            record = json.loads(record_path.read_text())
            if _current(record, config):
                _say(ctx, f"seed {seed} {label}: reused {checkpoint}")
                return {**record, "reused": True}, checkpoint
        if checkpoint.is_file():
            # Written atomically but its record is missing (a run stopped in between) or older
            # than the per-sample signals it needs: evaluate the checkpoint, not train over it.
            test_cli = _build([*run_args, "--model.init_args.original", str(checkpoint)],
                              ctx.progress)
            record = _test_only(test_cli)
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
            record["fit_seconds"] = float(saved.get("unlearn_pl", {}).get("fit_seconds",
                                                                          math.nan))
            record["wall_seconds"] = math.nan
            record["class_path"] = config["model"].get("class_path")
            reused = True
        else:
            _say(ctx, f"seed {seed} {label}: training ({config['trainer']['max_epochs']} "
                      "epochs)")
            record = _fit_and_test(cli)
            # Every rank takes part in save_checkpoint (rank 0 writes): one temporary name.
            temporary = checkpoint.with_name(f".{checkpoint.name}.tmp")
            cli.trainer.save_checkpoint(temporary)
            if _is_rank_zero():
                os.replace(temporary, checkpoint)
            cli.trainer.strategy.barrier()
            reused = False
        record = {**record, "config": config, "checkpoint": str(checkpoint)}
        if _is_rank_zero():
            atomic_write_text(record_path, json.dumps(record))
    _say(ctx, f"seed {seed} {label}: fit {record['fit_seconds']:.1f} s -> {checkpoint}")
    return {**record, "reused": reused}, checkpoint


#: Trainer settings of the retrain recipe that the bank's ensemble fit keeps.
_BANK_TRAINER_KEYS = ("accelerator", "precision", "max_steps", "accumulate_grad_batches",
                      "gradient_clip_val", "gradient_clip_algorithm")


def _bank_processes(cli: UnlearnCLI, members: int) -> int:
    """Processes to train ``members`` bank members in on a CPU: one per ``torch`` thread
    budget that fits the cores (a setting on 1 thread uses every core), at least 2 members
    each; 1 on other accelerators."""
    if not isinstance(cli.trainer.accelerator, CPUAccelerator):
        return 1
    return max(1, min((os.cpu_count() or 1) // torch.get_num_threads(), members // 2))


def _bank(ctx: _Context, seed: int, references: int) -> list[dict[str, Any]]:
    """Seed ``seed``'s reference bank: members cached in the workdir are reused
    (:func:`_reference`); two or more missing ones are trained at once as one ensemble
    (:func:`unlearn_pl.evaluation.bank.train_bank`: member ``m`` is the retrain run of seed
    :func:`bank_seed` to float tolerance; on a CPU split over :func:`_bank_processes`
    processes) and cached where :func:`_reference` caches them (the
    checkpoint and record named by their fingerprint). A recipe on several devices or with
    clipping by norm trains its members one by one."""
    missing: list[tuple[int, UnlearnCLI, dict[str, Any], Path]] = []
    for member in range(references):
        _, cli, config, checkpoint = _reference_run(ctx, "retrain", seed, member)
        if not checkpoint.is_file():
            missing.append((member, cli, config, checkpoint))
    trained: dict[int, dict[str, Any]] = {}
    first = missing[0][1] if missing else None
    if first is not None and len(missing) >= 2 and ctx.spec.ensemble_bank and \
            first.trainer.world_size == 1 and (
            not first.trainer.gradient_clip_val
            or first.trainer.gradient_clip_algorithm == "value"):
        trainer_config = first.config["trainer"]
        epochs = int(first.trainer.max_epochs)  # type: ignore[arg-type]
        _say(ctx, f"seed {seed} bank: training members {[m for m, *_ in missing]} as one "
                  f"ensemble ({epochs} epochs)")
        records = train_bank(first.datamodule, len(missing),  # type: ignore[arg-type]
                             [bank_seed(seed, m) for m, *_ in missing], epochs,
                             recipe=dict(first.model.hparams),
                             checkpoints=[c for *_, c in missing],
                             trainer_kwargs={k: trainer_config[k] for k in _BANK_TRAINER_KEYS
                                             if trainer_config.get(k) is not None},
                             processes=_bank_processes(first, len(missing)))
        for (member, _, config, checkpoint), record in zip(missing, records, strict=True):
            record = {**record, "config": config, "checkpoint": str(checkpoint)}
            if _is_rank_zero():
                atomic_write_text(checkpoint.with_suffix(".json"), json.dumps(record))
            _say(ctx, f"seed {seed} retrain bank {member}: fit {record['fit_seconds']:.1f} s "
                      f"(its share) -> {checkpoint}")
            trained[member] = {**record, "reused": False}
    return [trained[m] if m in trained else _reference(ctx, "retrain", seed, m)[0]
            for m in range(references)]


# A shard training a reference it owns (a unit of its share) marks it with a claim file beside
# the checkpoint and touches it every _CLAIM_BEAT_S seconds; another shard that needs the
# network (a method run needs its seed's original) waits while the claim lives, then reuses it.
# A claim whose mtime has not moved for _CLAIM_STALE_S seconds of the waiter's own clock (no
# clock shared between machines needed) is a dead shard's: the waiter trains the network itself.
_CLAIM_BEAT_S = 30.0
_CLAIM_STALE_S = 600.0
_CLAIM_POLL_S = 5.0


@contextlib.contextmanager
def _claim(ctx: _Context, path: Path, enabled: bool) -> Any:
    """Hold a claim file on a network while it trains (rank 0 only; removed on exit)."""
    if not enabled or not _is_rank_zero():
        yield
        return
    shard = "unsharded" if ctx.shard is None else f"shard {ctx.shard[0]}/{ctx.shard[1]}"
    atomic_write_text(path, json.dumps({"host": platform.node(), "pid": os.getpid(),
                                        "shard": shard, "started": time.time()}))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(_CLAIM_BEAT_S):
            with contextlib.suppress(OSError):
                os.utime(path)

    heartbeat = threading.Thread(target=beat, name="unlearn-pl-claim", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        path.unlink(missing_ok=True)


def _wait_for_claim(ctx: _Context, path: Path, label: str) -> None:
    """Return once the claim at ``path`` is gone (its network is trained) or stale."""
    seen: int | None = None
    since = time.monotonic()
    while True:
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime != seen:
            if seen is None:
                holder = ""
                with contextlib.suppress(OSError, ValueError, LookupError):
                    holder = " ({shard} on {host}, pid {pid})".format(
                        **json.loads(path.read_text()))
                _say(ctx, f"{label}: waiting for the shard training it{holder}")
            seen, since = mtime, time.monotonic()
        elif time.monotonic() - since > _CLAIM_STALE_S:
            _say(ctx, f"{label}: its claim {path} has not moved for {_CLAIM_STALE_S:.0f} s; "
                      "training it here")
            return
        time.sleep(_CLAIM_POLL_S)


def _method(ctx: _Context, name: str, config_path: Path, seed: int, original: Path,
            method_seed: int) -> dict[str, Any]:
    """One method run. Its ``record.json`` keeps the run's fingerprint
    (:func:`_method_fingerprint`); with ``reuse_runs`` a record with the same fingerprint is
    reused instead of running again."""
    label = name if method_seed == seed else f"{name}-mseed{method_seed}"
    run_dir = ctx.workdir / f"seed{seed}" / label
    cli = _build(_run_args(ctx, config_path, seed, run_dir, name, original, method_seed),
                 ctx.progress)
    config = _method_fingerprint(cli)
    record_path = run_dir / "record.json"
    if ctx.reuse_runs and record_path.is_file():
        with contextlib.suppress(ValueError):
            record = json.loads(record_path.read_text())
            if _current(record, config):
                _say(ctx, f"seed {seed} {label}: reused {record_path}")
                return {**record, "reused": True}
    record = _fit_and_test(cli)
    record = {**record, "fingerprint": _digest(config), "config": config}
    if _is_rank_zero():
        atomic_write_text(record_path, json.dumps(record))
    _say(ctx, f"seed {seed} {label}: fit {record['fit_seconds']:.1f} s")
    return {**record, "reused": False}


def _say(ctx: _Context, message: str) -> None:
    if _is_rank_zero():
        print(f"[{ctx.setting}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- summary
def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (n − 1) over the runs of each method (its seeds, and
    method seeds where there are several), per method, in the order methods first appear.
    ``std`` is ``None`` for a single run; numbers missing from a setting (``acc_retain_test`` in
    sample-wise settings) are left out."""
    order: list[str] = []
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["method"] not in groups:
            order.append(row["method"])
            groups[row["method"]] = []
        groups[row["method"]].append(row)
    summary = []
    for method in order:
        group = groups[method]
        entry: dict[str, Any] = {"method": method, "seeds": [r["seed"] for r in group],
                                 "method_seeds": [_method_seed(r) for r in group]}
        errors = [f"{_run_name(r)}: {r['error']}" for r in group if r.get("error")]
        if errors:
            entry["errors"] = errors
        # One verdict per split seed: it is over that seed's method seeds together.
        split_seeds = {r["seed"] for r in group}
        verdicts = sorted({f"{r['verdict']} (seed {r['seed']})" if len(split_seeds) > 1
                           else r["verdict"] for r in group if r.get("verdict")})
        if verdicts:
            entry["verdicts"] = verdicts
        for key in (*METRICS, *EXTRA_NUMBERS, *AUDIT_NUMBERS):
            values = [float(r[key]) for r in group
                      if r.get(key) is not None and not math.isnan(float(r[key]))]
            if not values:
                continue
            entry[key] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        summary.append(entry)
    return summary


def _method_seed(row: Mapping[str, Any]) -> int:
    return int(row.get("method_seed", row["seed"]))


def _run_name(row: Mapping[str, Any]) -> str:
    """``seed 0``, or ``seed 0 method seed 2`` for a run with its own method seed."""
    own = _method_seed(row)
    return f"seed {row['seed']}" + (f" method seed {own}" if own != row["seed"] else "")


_COLUMNS = (("acc_retain", "D_r acc"), ("acc_forget", "D_f acc"), ("acc_unseen", "D_u acc"),
            ("acc_retain_test", "Dr_test acc"), ("acc_forget_test", "Df_test acc"),
            ("mia", "MIA"), ("forgetting_score", "FS"), ("nomus", "NoMUS"),
            ("fit_seconds", "time (s)"), ("time_ratio_to_retrain", "time / retrain"))
# The audit's columns lead the table when there is a bank: the distance to retrain first.
_AUDIT_COLUMNS = (("distance_to_retrain", "distance to retrain"),
                  ("outside_band", "outside retrain band"), ("mean_abs_z", "mean abs z"),
                  ("lira_auc", "LiRA AUC"), ("lira_tpr_1pct", "LiRA TPR@1%FPR"),
                  ("rmia_auc", "RMIA AUC"), ("rmia_tpr_1pct", "RMIA TPR@1%FPR"),
                  ("epsilon_forget_quality", "ε-score F"))


def _by_distance(summary: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Retrain first, then every other method by its distance to retrain (the audit's), those
    without one (failed runs) last; the given order when nothing was audited."""
    if not any("distance_to_retrain" in entry for entry in summary):
        return list(summary)
    return sorted(summary, key=lambda e: (e["method"] != "retrain",
                                          e.get("distance_to_retrain", math.inf)))


def markdown_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """The comparison as a Markdown table: one row per method, ``mean ± std`` when there is more
    than one run. With a privacy audit the distance to retrain and the per-example tests come
    first and methods are ordered by that distance (retrain's own row is the held-out retrain
    network's: the floor); otherwise original and retrain first, as :func:`compare` orders
    them."""
    columns = [(k, t) for k, t in (*_AUDIT_COLUMNS, *_COLUMNS)
               if any(k in entry for entry in summary)]
    lines = ["| method | " + " | ".join(t for _, t in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for entry in _by_distance(summary):
        cells = []
        for key, _ in columns:
            if key not in entry:
                cells.append("failed" if entry.get("errors") else "–")
                continue
            digits = 1 if key == "fit_seconds" else 2 if key == "time_ratio_to_retrain" else 3
            cell = f"{entry[key]:.{digits}f}"
            if entry.get(f"{key}_std") is not None:
                cell += f" ± {entry[f'{key}_std']:.{digits}f}"
            cells.append(cell)
        lines.append(f"| {entry['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots
# Method colours; green and grey are kept for retrain and the original.
_PALETTE = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink",
            "tab:olive", "tab:cyan", "navy", "gold", "teal", "magenta", "black", "salmon")


def _plot(rows: Sequence[Mapping[str, Any]], summary: Sequence[Mapping[str, Any]],
          output: Path, setting: str) -> list[Path]:
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state, no display needed

    by_method = {entry["method"]: entry for entry in summary}
    names = list(by_method)
    colours = ["tab:gray" if n == "original" else "tab:green" if n == "retrain" else "tab:blue"
               for n in names]
    paths = []

    def bars(key: str, title: str, ylabel: str, filename: str, log: bool = False) -> None:
        figure = Figure(figsize=(max(5.0, 0.7 * len(names) + 2), 3.8), layout="constrained")
        ax = figure.subplots()
        means = [by_method[n].get(key, math.nan) for n in names]
        errors = [by_method[n].get(f"{key}_std") or 0.0 for n in names]
        ax.bar(names, means, yerr=errors if any(errors) else None, color=colours, capsize=3)
        if "retrain" in by_method and key in by_method["retrain"]:
            ax.axhline(by_method["retrain"][key], color="tab:green", linestyle="--", linewidth=1,
                       label="retrain")
            ax.legend()
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{title} ({setting})")
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelrotation=45)
        paths.append(output / filename)
        atomic_save_figure(figure, paths[-1], dpi=100)

    bars("nomus", "NoMUS per method", "NoMUS", "nomus.png")
    bars("time_ratio_to_retrain", "Unlearning time relative to retrain", "fit time / retrain's",
         "time_ratio.png", log=True)

    accuracy = "acc_retain_test" if any("acc_retain_test" in e for e in summary) else "acc_unseen"
    figure = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = figure.subplots()
    for index, name in enumerate(names):
        entry = by_method[name]
        if accuracy not in entry or "forgetting_score" not in entry:
            continue
        marker, colour, size = (("*", "tab:green", 16) if name == "retrain" else
                                ("s", "tab:gray", 8) if name == "original" else
                                ("o", _PALETTE[index % len(_PALETTE)], 7))
        ax.errorbar(entry[accuracy], entry["forgetting_score"],
                    xerr=entry.get(f"{accuracy}_std"), yerr=entry.get("forgetting_score_std"),
                    fmt=marker, color=colour, markersize=size, capsize=2, label=name)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if "retrain" in by_method and accuracy in by_method["retrain"]:
        ax.axvline(by_method["retrain"][accuracy], color="tab:green", linestyle=":", linewidth=1)
        ax.axhline(by_method["retrain"]["forgetting_score"], color="tab:green", linestyle=":",
                   linewidth=1)
    ax.set_xlabel(f"test accuracy ({accuracy})")
    ax.set_ylabel("forgetting score 2·|MIA − 0.5|")
    ax.set_title(f"Forgetting vs accuracy ({setting}); ★ = retrain, the target", fontsize=10)
    paths.append(output / "forgetting_vs_accuracy.png")
    atomic_save_figure(figure, paths[-1], dpi=100)

    losses: dict[str, dict[str, list[float]]] = {}
    nonmember = "unseen"
    for row in rows:
        pooled = losses.setdefault(row["method"], {"forget": [], "nonmember": []})
        for key in pooled:
            pooled[key].extend(row.get("losses", {}).get(key, []))
        nonmember = row.get("nonmember_split", nonmember)
    every = sorted(v for pooled in losses.values() for part in pooled.values() for v in part)
    if every:
        top = max(every[min(len(every) - 1, int(0.99 * len(every)))], 1e-3)
        columns = min(4, len(losses))
        rows_ = math.ceil(len(losses) / columns)
        figure = Figure(figsize=(3.2 * columns, 2.6 * rows_), layout="constrained")
        axes = figure.subplots(rows_, columns, squeeze=False)
        for ax, (name, pooled) in zip(axes.flat, losses.items(), strict=False):
            bins = [top * i / 40 for i in range(41)]
            for key, label, colour in (("forget", "forget (members)", "tab:red"),
                                       ("nonmember", f"{nonmember} (non-members)", "tab:blue")):
                values = [min(v, top) for v in pooled[key]]
                if values:
                    ax.hist(values, bins=bins, density=True, alpha=0.5, color=colour, label=label)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("per-sample loss", fontsize=8)
        for ax in list(axes.flat)[len(losses):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        figure.suptitle(f"Forget vs {nonmember} loss ({setting}; the MIA's feature)")
        paths.append(output / "loss_histograms.png")
        atomic_save_figure(figure, paths[-1], dpi=100)
    return paths


# --------------------------------------------------------------------------- files
def _row(setting: str, method: str, seed: int, record: Mapping[str, Any],
         method_seed: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"setting": setting, "method": method, "seed": seed,
                           "method_seed": seed if method_seed is None else method_seed,
                           "reused": bool(record.get("reused", False))}
    for key in (*METRICS, *EXTRA_NUMBERS, *AUDIT_NUMBERS):
        if key in record:
            row[key] = float(record[key])
    for key in ("class_path", "log_dir", "checkpoint", "nonmember_split", "losses", "signals",
                "most_exposed", "verdict", "error"):
        if record.get(key) is not None:
            row[key] = record[key]
    return row


def _environment(command: Sequence[str]) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in ("unlearn_pl", "torch", "lightning", "torchmetrics", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"command": list(command), "versions": versions, "python": platform.python_version(),
            "machine": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _write_results(rows: list[dict[str, Any]], output: Path, setting: str, spec: Setting,
                   environment: Mapping[str, Any]) -> dict[str, Path]:
    output.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    numbers = [{k: v for k, v in row.items() if k not in ("losses", "signals")} for row in rows]
    present = [k for k in (*METRICS, *EXTRA_NUMBERS, *AUDIT_NUMBERS)
               if any(k in row for row in numbers)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["setting", "method", "seed", "method_seed", "reused",
                                     *present,
                                     "verdict", "class_path", "log_dir", "checkpoint", "error"],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(numbers)
    files = {"csv": atomic_write_text(output / "results.csv", buffer.getvalue())}
    files["json"] = atomic_write_text(output / "results.json", json.dumps(
        {"setting": setting, "environment": dict(environment), "rows": numbers,
         "summary": summary}, indent=1))
    seeds = sorted({row["seed"] for row in rows})
    own = sorted({_method_seed(row) for row in rows})
    if own != seeds:
        spread = ("mean ± sample standard deviation over the runs of each method: seeds "
                  + ", ".join(map(str, seeds)) + " (split, original and retrain) × method seeds "
                  + ", ".join(map(str, own)) + " (the unlearning run's batch order and own "
                  "randomness, against the same references)")
    elif len(seeds) > 1:
        spread = "mean ± sample standard deviation over seeds " + ", ".join(map(str, seeds))
    else:
        spread = f"seed {seeds[0]}"
    text = (f"# Comparison: {setting}\n\n{markdown_table(summary)}\n"
            f"{spread}. Accuracies in [0, 1]; FS = forgetting score 2·|MIA − 0.5| (paper scale, "
            "0 = the attacker cannot tell forget from non-member samples); NoMUS = "
            "0.5·(test accuracy + 1 − FS), test accuracy = Dr_test for class-wise requests, "
            "D_u otherwise; time = the fit's wall-clock seconds (module `fit_seconds`), "
            "time / retrain = its ratio to retrain's fit.\n"
            + "".join(f"\n**{e['method']} failed** ({error[:300]})\n" for e in summary
                      for error in e.get("errors", []))
            + _audit_text(summary)
            + (f"\nSetting: {spec.note}.\n" if spec.note else "")
            + f"\nCommand: `{' '.join(environment['command'])}`\n")
    files["md"] = atomic_write_text(output / "results.md", text)
    for path in _plot(rows, summary, output, setting):
        files[path.stem] = path
    return files


def _audit_text(summary: Sequence[Mapping[str, Any]]) -> str:
    """The verdicts and how to read the audit's columns, when there was a bank."""
    if not any("verdicts" in entry for entry in summary):
        return ""
    lines = ["", "Privacy audit against a bank of retrain networks of other seeds (the same "
             "split): distance to retrain = mean of the absolute accuracy gaps (forget, retain, "
             "held-out) and of the excess of forget examples outside the bank's central 95 % "
             "band of each example's logit-scaled confidence over a held-out retrain network's "
             "(retrain's row); mean abs z = mean over forget examples of the distance of "
             "their signal from the bank's mean in the bank's standard deviations (retrain's "
             "row: the held-out retrain network's); LiRA = offline LiRA, members forget, "
             "non-members held-out; ε-score F = the competition's forget quality of the "
             "method's N runs against N bank networks (retrain's row: N bank networks against "
             f"N others, the best reachable with N networks). Verdict rule: {VERDICT_RULE}.",
             ""]
    for entry in _by_distance(summary):
        for verdict in entry.get("verdicts", []):
            lines.append(f"- **{entry['method']}**: {verdict}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- shards
class _Unit(NamedTuple):
    """One unit of the runner's work: a reference network or one method run."""

    kind: str  # "original", "retrain", "bank" or "method"
    seed: int
    member: int | None = None
    method: str | None = None
    method_seed: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "bank":
            return f"retrain bank {self.member} seed {self.seed}"
        if self.kind == "method":
            own = "" if self.method_seed == self.seed else f" method seed {self.method_seed}"
            return f"{self.method} seed {self.seed}{own}"
        return f"{self.kind} seed {self.seed}"


def _work_units(seeds: Sequence[int], references: int, methods: Sequence[str],
                method_seeds: Sequence[int] | None) -> list[_Unit]:
    """Every unit of a comparison, in the order ``--shard I/N`` deals them out (unit ``i`` to
    shard ``i mod N``): the originals of all seeds, the retrain networks of all seeds, the bank
    members (seed by seed, member by member), then the method runs (seed by seed, each method
    in the order given, each method seed). References lead so that every shard trains its
    share of them first, and the originals, which method runs start from, are the very first
    units of the first shards."""
    units = [_Unit("original", seed) for seed in seeds]
    units += [_Unit("retrain", seed) for seed in seeds]
    units += [_Unit("bank", seed, member) for seed in seeds for member in range(references)]
    units += [_Unit("method", seed, method=method, method_seed=own) for seed in seeds
              for method in methods for own in (method_seeds if method_seeds is not None
                                                else [seed])]
    return units


def _parse_shard(shard: str | Sequence[int]) -> tuple[int, int]:
    """``"I/N"`` or ``(I, N)`` → ``(I, N)`` with ``0 <= I < N``, else :class:`CompareInputError`."""
    if isinstance(shard, str):
        parts = shard.strip().split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise CompareInputError(f"--shard {shard!r}: give I/N, this shard's index I and the "
                                    "number of shards N, with 0 <= I < N (e.g. 0/8)")
        shard = (int(parts[0]), int(parts[1]))
    values = tuple(shard)
    if (len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                    for v in values)):
        raise CompareInputError(f"shard {shard!r}: give (I, N), two integers")
    index, count = values
    if count < 1 or not 0 <= index < count:
        raise CompareInputError(f"--shard {index}/{count}: need 0 <= I < N, N shards numbered "
                                "0 ... N-1 (e.g. 0/8 ... 7/8)")
    return index, count


def _run_shard(ctx: _Context, units: Sequence[_Unit],
               method_configs: Mapping[str, Path]) -> list[dict[str, Any]]:
    """Do this shard's share of ``units`` (its reference units first, as they are ordered), each
    trained or reused through the cache; a method run whose seed's original is not this
    shard's unit waits for the shard training it (its claim) or trains it if nobody is."""
    assert ctx.shard is not None
    index, count = ctx.shard
    mine = [(i, unit) for i, unit in enumerate(units) if i % count == index]
    _say(ctx, f"shard {index}/{count}: {len(mine)} of {len(units)} units")
    originals: dict[int, Path] = {}
    rows: list[dict[str, Any]] = []
    for position, unit in mine:
        if unit.kind != "method":
            member = unit.member if unit.kind == "bank" else None
            kind = "retrain" if unit.kind == "bank" else unit.kind
            record, checkpoint = _reference(ctx, kind, unit.seed, member, claim=True)
            if unit.kind == "original":
                originals[unit.seed] = checkpoint
            row = _row(ctx.setting, unit.kind, unit.seed, record)
        else:
            assert unit.method is not None and unit.method_seed is not None
            if unit.seed not in originals:
                originals[unit.seed] = _reference(ctx, "original", unit.seed, wait=True)[1]
            try:
                record = _method(ctx, unit.method, method_configs[unit.method], unit.seed,
                                 originals[unit.seed], unit.method_seed)
            except Exception as error:  # one failing run must not lose the others'
                record = {"error": f"{type(error).__name__}: {error}"}
                _say(ctx, f"{unit.label}: FAILED {record['error']}")
            row = _row(ctx.setting, unit.method, unit.seed, record, unit.method_seed)
        rows.append({**row, "unit": unit.label, "unit_index": position,
                     "shard": f"{index}/{count}"})
    return rows


def _shard_text(rows: Sequence[Mapping[str, Any]], shard: tuple[int, int]) -> str:
    """What a sharded invocation did, one line per unit."""
    lines = [f"shard {shard[0]}/{shard[1]}: {len(rows)} units"]
    for row in rows:
        status = ("FAILED" if row.get("error") else "reused" if row.get("reused")
                  else "ran" if row["method"] not in ("original", "retrain", "bank")
                  else "trained")
        lines.append(f"  unit {row['unit_index']:>4}  {status:<8} {row['unit']}"
                     + (f": {row['error']}" if row.get("error") else ""))
    lines.append("when every shard is done: the same command without --shard, with "
                 "--reuse-runs, reuses every unit and writes the results")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points
def compare(setting: str, methods: Sequence[str] = ("all",), seeds: Sequence[int] = (0,),
            workdir: str | os.PathLike[str] | None = None,
            output: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (), *,
            method_seeds: Sequence[int] | None = None, references: int | None = None,
            trainer: str = "cpu", reference_epochs: int | None = None,
            num_threads: int | None = None, progress: bool = False,
            configs_dir: str | os.PathLike[str] | None = None,
            shard: str | tuple[int, int] | None = None,
            reuse_runs: bool = False) -> list[dict[str, Any]]:
    """Run the comparison of ``methods`` against the original and retrain references.

    Args:
        setting: a data config name in ``configs/data`` (``digits``, ``cifar10``, ``fer2013``,
            ``olivetti``) or the path of a data config YAML file.
        methods: method config names in ``configs/methods``, ``"all"`` (every one but
            original and retrain), or paths of method config YAML files.
        seeds: seeds; each trains its own original and retrain (cached in ``workdir``).
        workdir: cache and run folder; default ``runs/compare/<setting>``.
        output: where the result files go; default ``runs/compare/<setting>``.
        overrides: extra ``unlearn-pl`` arguments given to every run (original and retrain
            included), e.g. ``["--trainer.accelerator", "gpu", "--trainer.precision",
            "bf16-mixed"]``.
        method_seeds: run every method once per method seed (its ``--seed_everything``,
            ``--model.init_args.seed`` and ``--data.init_args.shuffle_seed``) against each
            seed's split and references, in
            ``<workdir>/seed<k>/<method>-mseed<m>`` (``<method>`` when ``m`` is the seed
            itself); default: one run per seed with that seed.
        references: K, the size of each seed's reference bank: K more retrain networks (the
            retrain recipe on the same split, own seeds :func:`bank_seed`, cached in
            ``<workdir>/seed<k>/bank``) that the privacy audit reads every method's per-example
            signals against (:func:`unlearn_pl.evaluation.audit_method`); with N ≥ 4 method
            seeds and K ≥ N also the ε-score (K ≥ 2N: retrain's own beside it). 0: no audit;
            default: the setting's (:attr:`Setting.references`: 8 for digits, else 0).
        trainer: trainer config name in ``configs/trainer`` or a path.
        reference_epochs: epochs of original and retrain; default the setting's
            (:data:`SETTINGS`), else the reference configs' own.
        num_threads: torch threads during the run; default the setting's.
        progress: show Lightning's progress bars and model summaries.
        configs_dir: the ``configs`` folder (default: the shipped configs,
            :func:`default_configs_dir`).
        shard: ``(I, N)`` or ``"I/N"``: do only shard ``I``'s share of the work, for a job
            array of ``N`` tasks (or ``N`` GPUs) with one shared ``workdir``. The work units,
            numbered in this order, are the originals of all seeds, the retrain networks of
            all seeds, the bank members (seed by seed, member by member), then the method
            runs (seed by seed, method by method, method seed by method seed); shard ``I``
            does the units whose number ``i`` has ``i mod N == I``, its references first. A
            method run needs its seed's original: if another shard is training it (a claim
            file beside the checkpoint, touched every 30 s), the shard waits for it; if nobody
            is (the claim is gone or has not moved for 10 minutes), it trains it itself.
            Training is seeded and every write atomic, so a race at worst does that work twice
            (on a GPU, not bit-exact, a method run may then start from a twin of the cached
            original). Each fit keeps the trainer config's own devices and strategy. A
            sharded call writes no results into ``output``: it returns (and the command
            prints) one row per unit it did, with ``unit``, ``unit_index`` and ``shard``. When
            every shard is done, the same call without ``shard`` and with ``reuse_runs``
            reuses every unit and writes the results, the audit and the plots.
        reuse_runs: reuse a method run whose ``record.json`` (in its run folder) was written
            by a run of the same fingerprint (its whole config but logging, data workers and
            the config files' paths; the original by its digest-named checkpoint) instead of
            running it again. Off by default, so a plain call times fresh runs; reuse trusts
            that the code has not changed since the record was written. References are always
            reused.

    Returns:
        One row per method, seed and method seed (original and retrain first): every number
        (:data:`METRICS` and losses, MIA AUC, wall seconds), ``reused`` (a cached reference,
        or with ``reuse_runs`` a reused method run), the run's ``log_dir`` / ``checkpoint`` and
        the per-sample ``losses``. A method whose run raised has no numbers and an ``error``
        instead; the others still run (the command line then exits with status 1 after
        writing the results). With ``shard``: the rows of that shard's units, unaudited.

    Raises:
        CompareInputError: an unknown setting, method or trainer config, or no seed (or a
            repeated one), or a repeated method seed, or a shard outside ``0 <= I < N``;
            raised before any training.
    """
    configs = Path(configs_dir or CONFIGS)
    name, data_config = _resolve_setting(setting, configs)
    method_configs = _resolve_methods(methods, configs)
    trainer_config = _resolve_trainer(trainer, configs)
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareInputError(f"give one or more distinct seeds, got {seeds}")
    if method_seeds is not None and (not method_seeds
                                     or len(set(method_seeds)) != len(method_seeds)):
        raise CompareInputError(f"give one or more distinct method seeds, got "
                                f"{list(method_seeds)}")
    spec = SETTINGS.get(name, Setting()) if not _is_yaml_path(setting) else Setting()
    references = spec.references if references is None else references
    if references == 1 or references < 0:
        raise CompareInputError(f"--references {references}: the audit needs a bank of at least "
                                "2 retrain networks (0 skips it)")
    shard = _parse_shard(shard) if shard is not None else None
    workdir = Path(workdir or Path("runs") / "compare" / name)
    output = Path(output or Path("runs") / "compare" / name)
    ctx = _Context(name, data_config, trainer_config, configs, workdir, spec, list(overrides),
                   reference_epochs if reference_epochs is not None else spec.reference_epochs,
                   progress, reuse_runs, shard)
    available_methods()  # import every method so class_path names resolve
    threads = num_threads if num_threads is not None else spec.num_threads
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        environment = _environment(["unlearn-pl-compare", "--setting", setting, "--methods",
                                    *methods, "--seeds", *map(str, seeds),
                                    *(["--method-seeds", *map(str, method_seeds)]
                                      if method_seeds is not None else []),
                                    *(["--references", str(references)] if references else []),
                                    "--trainer", trainer,
                                    *(["--reference-epochs", str(reference_epochs)]
                                      if reference_epochs is not None else []),
                                    *(["--num-threads", str(num_threads)]
                                      if num_threads is not None else []),
                                    *(["--shard", f"{shard[0]}/{shard[1]}"] if shard else []),
                                    *(["--reuse-runs"] if reuse_runs else []),
                                    *overrides])
        if shard is not None:
            return _run_shard(ctx, _work_units(seeds, references, list(method_configs),
                                               method_seeds), method_configs)
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            original, checkpoint = _reference(ctx, "original", seed)
            retrain, _ = _reference(ctx, "retrain", seed)
            bank = _bank(ctx, seed, references)
            seed_rows = [_row(name, "original", seed, original),
                         _row(name, "retrain", seed, retrain)]
            for method, config_path in method_configs.items():
                for own in method_seeds if method_seeds is not None else [seed]:
                    try:
                        record = _method(ctx, method, config_path, seed, checkpoint, own)
                    except Exception as error:  # one failing run must not lose the others'
                        record = {"error": f"{type(error).__name__}: {error}"}
                        _say(ctx, f"seed {seed} {method} (method seed {own}): FAILED "
                                  f"{record['error']}")
                    seed_rows.append(_row(name, method, seed, record, own))
            for row in seed_rows:
                if "fit_seconds" in row:
                    row["time_ratio_to_retrain"] = row["fit_seconds"] / retrain["fit_seconds"]
            if bank:
                _audit(seed_rows, bank, retrain)
            rows.extend(seed_rows)
        rows.sort(key=lambda r: (["original", "retrain", *method_configs].index(r["method"]),
                                 seeds.index(r["seed"]), r["method_seed"]))
        if _is_rank_zero():
            _write_results(rows, output, name, spec, environment)
    finally:
        torch.set_num_threads(previous_threads)
    return rows


# The audit's per-run keys under other names in a row.
_AUDIT_ROW_KEYS = {"outside": "outside_band", "floor_outside": "floor_outside_band"}


def _audit(rows: Sequence[dict[str, Any]], bank: Sequence[Mapping[str, Any]],
           retrain: Mapping[str, Any]) -> None:
    """Add each method's privacy audit against the bank to its rows of one seed (in place)."""
    heldout = "acc_retain_test" if "acc_retain_test" in retrain else "acc_unseen"
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "signals" in row:
            groups.setdefault(row["method"], []).append(row)
    for group in groups.values():
        audit = audit_method(group, bank, retrain, heldout)
        epsilon = audit["epsilon"] or {}
        for row, run in zip(group, audit["runs"], strict=True):
            row.update({_AUDIT_ROW_KEYS.get(k, k): v for k, v in run.items()
                        if _AUDIT_ROW_KEYS.get(k, k) in (*AUDIT_NUMBERS, "most_exposed")},
                       distance_to_retrain=audit["distance"], verdict=audit["verdict"])
            for key, name in (("forget_quality", "epsilon_forget_quality"),
                              ("retrain_forget_quality", "retrain_epsilon_forget_quality"),
                              ("final_score", "epsilon_final_score")):
                if key in epsilon:
                    row[name] = epsilon[key]
    # Retrain's own row shows retrain against itself (N bank networks against N others).
    against_itself = [r["retrain_epsilon_forget_quality"] for r in rows
                      if "retrain_epsilon_forget_quality" in r]
    for row in rows:
        if row["method"] == "retrain" and against_itself:
            row["epsilon_forget_quality"] = against_itself[0]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlearn-pl-compare", allow_abbrev=False,
        description="Compare unlearning methods with the original and retrain references: "
                    "train or reuse both, run every method through the unlearn-pl CLI code, "
                    "write results.{csv,json,md} and plots, print the table. Any other "
                    "argument (--trainer.*, --data.*, --model.*) is passed on to every run.",
        epilog="example: unlearn-pl-compare --setting digits --methods all --seeds 0 1 2")
    parser.add_argument("--setting", default="digits",
                        help="data config name in configs/data (digits, cifar10, fer2013, "
                             "olivetti) or a data config path (default: digits)")
    parser.add_argument("--methods", nargs="*", default=["all"],
                        help="method config names in configs/methods, 'all' (default), or "
                             "paths; none: only original and retrain")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="seeds of the split, original and retrain (and, by default, of "
                             "each method's run)")
    parser.add_argument("--method-seeds", nargs="+", type=int, default=None,
                        help="run every method once per method seed against each seed's split "
                             "and references: the spread of the unlearning run alone")
    parser.add_argument("--references", type=int, default=None,
                        help="K: train a bank of K more retrain networks per seed and audit "
                             "every method's per-example signals against it (retrain-likeness, "
                             "LiRA; with --method-seeds N >= 4 and K >= N the ε-score); 0: no "
                             "audit (default: the setting's, 8 for digits, else 0)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="do only shard I's share of the work (I = 0 ... N-1), e.g. "
                             "--shard $SLURM_ARRAY_TASK_ID/8 in a job array sharing one "
                             "--workdir: work units in the order originals, retrains, bank "
                             "members, method runs (each by seed), unit i to shard i mod N; a "
                             "shard writes the cache and prints what it did, no results; then "
                             "run the same command without --shard, with --reuse-runs")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="reuse a method run whose record.json has the same fingerprint "
                             "(config) instead of running it again (default: every method runs "
                             "afresh, so its time is this invocation's)")
    parser.add_argument("--workdir", default=None,
                        help="cache of original/retrain and runs (default runs/compare/SETTING)")
    parser.add_argument("--output", default=None,
                        help="results folder (default runs/compare/SETTING)")
    parser.add_argument("--trainer", default="cpu",
                        help="trainer config name in configs/trainer or a path (default cpu)")
    parser.add_argument("--reference-epochs", type=int, default=None,
                        help="epochs of original and retrain (default: the setting's)")
    parser.add_argument("--num-threads", type=int, default=None,
                        help="torch threads (default: the setting's, else torch's)")
    parser.add_argument("--configs-dir", default=None,
                        help=f"the configs folder (default: the shipped configs, {CONFIGS})")
    parser.add_argument("--progress", action="store_true",
                        help="show progress bars and Lightning's messages")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``unlearn-pl-compare``."""
    parser = _parser()
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    stray = [a for a in overrides if a.startswith("-") and not a.startswith("--")
             and not a.lstrip("-").replace(".", "").isdigit()]
    if stray:
        parser.error(f"unrecognised arguments {stray}")
    if not args.progress:
        for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for message in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        try:
            rows = compare(args.setting, args.methods, args.seeds, args.workdir, args.output,
                           overrides, method_seeds=args.method_seeds,
                           references=args.references, trainer=args.trainer,
                           reference_epochs=args.reference_epochs,
                           num_threads=args.num_threads, progress=args.progress,
                           configs_dir=args.configs_dir, shard=args.shard,
                           reuse_runs=args.reuse_runs)
        except CompareInputError as error:
            parser.error(str(error))
    failed = [f"{r['method']} ({_run_name(r)}): {r['error']}" for r in rows if r.get("error")]
    if args.shard is not None:
        if _is_rank_zero():
            print(_shard_text(rows, _parse_shard(args.shard)))
    elif _is_rank_zero():
        output = Path(args.output or Path("runs") / "compare" / Path(args.setting).stem)
        print(markdown_table(summarize(rows)))
        print(f"results: {output.resolve()}/results.{{md,csv,json}} and plots")
        for failure in failed:
            print(f"FAILED {failure}", file=sys.stderr)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
