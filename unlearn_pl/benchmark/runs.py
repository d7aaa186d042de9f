"""One run of the comparison: the original and retrain references and the bank (trained or
reused from the fingerprinted cache), and the method runs, each through the ``unlearn-pl`` CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from unlearn_pl.benchmark.settings import REFERENCES, Setting
from unlearn_pl.cli import UnlearnCLI, run_cli
from unlearn_pl.evaluation import sample_losses, sample_signals
from unlearn_pl.evaluation.bank import train_bank
from unlearn_pl.utils import atomic_save_checkpoint, atomic_write_text

# Trainer keys that change what a reference network learns (the rest is logging and devices).
_RECIPE_TRAINER_KEYS = ("max_epochs", "max_steps", "precision", "devices", "num_nodes",
                        "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm")
# Data keys that only change evaluation speed, never the trained network or its test numbers.
_NON_RECIPE_DATA_KEYS = ("num_workers", "eval_batch_size", "eval_max_samples", "probe_splits",
                         "val_split")


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


def _run_args(ctx: _Context, method_configs: Path | tuple[Path, ...], seed: int, run_dir: Path,
              name: str, original: Path | None, method_seed: int | None = None) -> list[str]:
    own = seed if method_seed is None else method_seed
    configs = (method_configs,) if isinstance(method_configs, Path) else method_configs
    args = ["--config", str(ctx.trainer_config), "--config", str(ctx.data_config),
            *[a for config in configs for a in ("--config", str(config))],
            "--seed_everything", str(own),
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
        cli = run_cli(args, run=False)
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
    # A typed forget request and its flat 0.1 form are one recipe (one cache entry): the plain
    # form the datamodule keeps.
    data_args = config["data"]["init_args"]
    if data_args.pop("forget", None) is not None:
        data_args.update(cli.datamodule.forget_request.flat())  # type: ignore[attr-defined]
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


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """``torch`` on ``threads`` threads inside the block (``None``: as it is), then back."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
            atomic_save_checkpoint(cli.trainer, checkpoint)
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


def _method(ctx: _Context, name: str, config_path: tuple[Path, ...], seed: int, original: Path,
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
