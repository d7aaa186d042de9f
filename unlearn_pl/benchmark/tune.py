"""Tuned recipes: a method's decisive hyperparameters searched with Optuna against the retrain
reference of one forget request, on the validation probe only.

``unlearn-pl-tune --setting digits --method scrub --trials 30`` trains (or reuses, from the
comparison runner's cache) the original, the retrain network and a bank of K retrains of the
tuning split (``--split-seed``), then runs one ``unlearn-pl`` fit per trial from the original,
with hyperparameters drawn from ``configs/search/<method>.yaml`` (the first trial: the method
config's own values, where the space holds them). A trial's objective is its
distance to retrain on the **validation probe** (:func:`probe_distance`): the mean of the
absolute gaps in forget, retain and held-out accuracy (the held-out samples being the validation
split's, never the test split's) and of the excess fraction of forget examples outside the
bank's central 95 % band of their logit-scaled confidence over the retrain network's. Trials
whose intermediate accuracy gaps fall behind the others' median are pruned. The best trial is
written as a complete method config, ``configs/tuned/<setting>/<method>.yaml``, whose header
names the command, the split seed and the objective reached. Report it on another split seed:
``unlearn-pl-compare --setting digits --methods configs/tuned/digits/scrub.yaml --seeds 1``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from unlearn_pl.benchmark.cli import quiet_runs
from unlearn_pl.benchmark.runs import (
    _bank,
    _build,
    _Context,
    _reference,
    _reference_run,
    _run_args,
    _torch_threads,
)
from unlearn_pl.benchmark.settings import (
    CONFIGS,
    TUNED_ON,
    CompareInputError,
    _bank_size,
    _resolve_methods,
    _resolve_setting,
    _resolve_trainer,
    load_setting,
)
from unlearn_pl.callbacks.probe import fit_check
from unlearn_pl.cli import UnlearnInputError
from unlearn_pl.evaluation.audit import distance_to_retrain
from unlearn_pl.evaluation.evaluate import sample_signals
from unlearn_pl.methods import available_methods
from unlearn_pl.metrics.privacy import retrain_likeness
from unlearn_pl.utils import atomic_write_text, environment

__all__ = ["Dimension", "load_search_space", "main", "probe_distance", "tune"]

#: A trial that fails with one of these is recorded as failed and the study goes on: the method
#: diverged, or the drawn values are refused for this network (e.g. CF-k's k beyond its blocks).
FAILED_TRIAL = (FloatingPointError, UnlearnInputError)


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: an ``unlearn-pl`` argument (``model.init_args.lr``,
    ``trainer.max_epochs``) and its range (``low``/``high``, integers if both are, ``log``
    scale) or its ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @classmethod
    def from_spec(cls, key: str, spec: Mapping[str, Any]) -> Dimension:
        """A dimension from its YAML entry; a key without a section is a model argument."""
        if not key.startswith(("model.", "trainer.", "data.")):
            key = f"model.init_args.{key}"
        if "choices" in spec:
            choices = tuple(spec["choices"])
            if not choices:
                raise ValueError(f"search dimension {key}: choices is empty")
            return cls(key, choices=choices)
        try:
            low, high = spec["low"], spec["high"]
        except (KeyError, TypeError):
            raise ValueError(f"search dimension {key}: give low and high (and log), or "
                             f"choices; got {spec!r}") from None
        if not low < high or (spec.get("log") and low <= 0):
            raise ValueError(f"search dimension {key}: need low < high (and low > 0 on a log "
                             f"scale), got low={low}, high={high}")
        return cls(key, low, high, bool(spec.get("log", False)))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this dimension can draw."""
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, int | float) and not isinstance(value, bool) \
            and self.low <= value <= self.high  # type: ignore[operator]

    def suggest(self, trial: Any) -> Any:
        """Draw the value for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.key, self.low, self.high, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high),  # type: ignore[arg-type]
                                   log=self.log)


def load_search_space(method: str, configs_dir: Path = CONFIGS) -> list[Dimension]:
    """The search space of a method config (``configs/search/<method>.yaml``)."""
    path = configs_dir / "search" / f"{method}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (configs_dir / "search").glob("*.yaml"))
        raise CompareInputError(f"no search space for {method!r} ({path}): write one, or tune "
                                f"one of {known}")
    spec = yaml.safe_load(path.read_text()) or {}
    return [Dimension.from_spec(key, value) for key, value in spec.items()]


def _arg(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict | bool) or value is None \
        else str(value)


def _validate(cli: Any) -> dict[str, Any]:
    """The validation probe's numbers and forget-set signals of the network the CLI holds."""
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    model = cli.model
    nonmember = cli.datamodule.mia_nonmember_split
    return {**model.last_evaluation, "heldout_split": cli.datamodule.heldout_split,
            "signals": {"forget": sample_signals(model, nonmember)["forget"]}}


def probe_distance(trial: Mapping[str, Any], retrain: Mapping[str, Any],
                   bank: Sequence[Mapping[str, Any]] = ()) -> tuple[float, dict[str, float]]:
    """A network's distance to retrain on the validation probe (no test sample): the mean of
    the absolute gaps in ``acc_forget``, ``acc_retain`` (where the probe has it) and the
    held-out accuracy of the remaining data (the validation split's) to the retrain network's,
    and, with a bank of
    retrains, of the excess of forget examples outside the bank's central 95 % band over the
    retrain network's own fraction (:func:`unlearn_pl.evaluation.audit.distance_to_retrain`).

    Args:
        trial: the network's validation numbers (``acc_*``, ``heldout_split`` and, with a
            bank, ``signals.forget``).
        retrain: the retrain network's, the same keys.
        bank: the bank networks', ``signals.forget`` of the same samples.

    Returns:
        ``(distance, parts)``: the gaps and, with a bank, ``outside`` and ``floor_outside``.
    """
    heldout = retrain["heldout_split"]
    # A probe of fewer splits (``probe_splits: minimal``) has no retain accuracy: that gap is
    # left out; forget and held-out ones are always there.
    gaps = {split: float(trial[f"acc_{split}"]) - float(retrain[f"acc_{split}"])
            for split in ("forget", "retain", heldout)
            if f"acc_{split}" in trial or split != "retain"}
    parts: dict[str, float] = {f"gap_{k}": v for k, v in gaps.items()}
    excess = 0.0
    if bank:
        ids = trial["signals"]["forget"]["ids"]
        rows = []
        for network in (retrain, *bank):
            # The trial's probe may be a seeded subset of the references' (eval_max_samples).
            signal = dict(zip(network["signals"]["forget"]["ids"],
                              network["signals"]["forget"]["signal"], strict=True))
            if not set(ids) <= signal.keys():
                raise ValueError("the retrain networks were validated on other forget samples "
                                 "than the trial: the same data config and split seed are "
                                 "needed")
            rows.append(torch.tensor([signal[i] for i in ids], dtype=torch.float64))
        likeness = retrain_likeness(
            torch.tensor(trial["signals"]["forget"]["signal"], dtype=torch.float64),
            torch.stack(rows[1:]), floor=rows[0])
        parts["outside"] = float(likeness["outside"])
        parts["floor_outside"] = float(likeness["floor_outside"])
        excess = parts["outside"] - parts["floor_outside"]
    return distance_to_retrain(gaps, excess), parts


class _Pruning(Callback):
    """Reports a trial's accuracy gaps to retrain at every validation check of its fit and
    stops it when Optuna's pruner says so."""

    def __init__(self, trial: Any, retrain: Mapping[str, Any]) -> None:
        self.trial, self.retrain = trial, retrain
        self.pruned = False

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not fit_check(trainer):
            return
        results = {k.removeprefix("val/"): float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith("val/acc_")}
        if not all(f"acc_{s}" in results for s in ("forget", self.retrain["heldout_split"])):
            return
        value, _ = probe_distance({**results, "heldout_split": self.retrain["heldout_split"]},
                                  self.retrain)
        self.trial.report(value, trainer.global_step)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def _merged_config(paths: Sequence[Path]) -> dict[str, Any]:
    """The method config files composed in order (mappings merged, lists replaced), as
    ``unlearn-pl --config A --config B`` reads them."""
    def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        for key, value in extra.items():
            base[key] = merge(dict(base.get(key) or {}), value) \
                if isinstance(value, Mapping) and isinstance(base.get(key), Mapping) else value
        return base

    config: dict[str, Any] = {}
    for path in paths:
        config = merge(config, yaml.safe_load(path.read_text()) or {})
    return config


def _shipped_values(config: Mapping[str, Any], space: Sequence[Dimension]) -> dict[str, Any]:
    """The method config's own values of the searched dimensions, where the dimension can draw
    them: the study's first trial, so that a tuned recipe is never worse on the tuning split
    than the config it started from."""
    values = {}
    for dimension in space:
        node: Any = config
        for part in dimension.key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if dimension.contains(node):
            values[dimension.key] = node
    return values


def _with_params(config: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in params.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def tune(setting: str, method: str, trials: int = 30, *, timeout: float | None = None,
         split_seed: int = 0, references: int | None = None, workdir: str | Path | None = None,
         output: str | Path | None = None, record: str | Path | None = None,
         trainer: str = "cpu", num_threads: int | None = None, sampler_seed: int = 0,
         prune: bool = True, configs_dir: str | Path | None = None,
         overrides: Sequence[str] = (), command: str | None = None) -> dict[str, Any]:
    """Tune one method config on one forget request; write the best trial as a config.

    Args:
        setting: a data config name or path, as for :func:`unlearn_pl.benchmark.compare`.
        method: a method config name (its search space is ``configs/search/<method>.yaml``).
        trials: most trials; fewer when ``timeout`` runs out first.
        timeout: the study's time budget in seconds (``None``: none).
        split_seed: the tuning split (forget request A); report the recipe on another.
        references: K retrain networks of the tuning split in the bank (0: accuracy gaps
            only; else at least 2; default: the setting's, 8 for digits).
        workdir: the cache of original, retrain and bank (default
            ``runs/compare/<setting>``, the comparison runner's, so both reuse them).
        output: the tuned config (default ``configs/tuned/<setting>/<method>.yaml``).
        record: the study's JSON record (default ``<workdir>/tuning/<method>.json``).
        trainer: trainer config name or path.
        num_threads: torch threads (default: the setting's).
        sampler_seed: seed of Optuna's TPE sampler.
        prune: stop trials whose intermediate accuracy gaps trail the median (Optuna's
            ``MedianPruner``).
        configs_dir: the configs folder (default: the shipped configs).
        overrides: extra ``unlearn-pl`` arguments for every run.
        command: the command line to name in the tuned config's header.

    Returns:
        The study's record: the best parameters and objective, every trial, the time spent.

    Raises:
        CompareInputError: an unknown setting, method or trainer config, a missing or bad
            search space, too few trials or references; before any training.
    """
    import optuna  # the `tune` extra

    configs = Path(configs_dir or CONFIGS)
    name, data_config = _resolve_setting(setting, configs)
    (method_name, method_paths), = _resolve_methods([method], configs).items()
    trainer_config = _resolve_trainer(trainer, configs)
    spec = load_setting(setting, configs)
    references = _bank_size(spec, references)
    if trials < 1:
        raise CompareInputError(f"--trials {trials}: give at least one trial")
    try:
        space = load_search_space(method_name, configs)
    except ValueError as error:
        raise CompareInputError(str(error)) from error
    # What the setting fixes for this method (its budget) or the caller gives stays fixed.
    fixed = {a.removeprefix("--").split("=", 1)[0]
             for a in (*spec.method_overrides.get(method_name, ()), *overrides)
             if a.startswith("--")}
    space = [d for d in space if d.key not in fixed]
    if not space:
        raise CompareInputError(f"every searched argument of {method_name} is fixed by the "
                                "setting or the extra arguments: nothing to tune")
    method_config = _merged_config(method_paths)
    workdir = Path(workdir or Path("runs") / "compare" / name)
    output = Path(output or Path("configs") / "tuned" / name / f"{method_name}.yaml")
    record_path = Path(record or workdir / "tuning" / f"{method_name}.json")
    ctx = _Context(name, data_config, trainer_config, configs, workdir, spec, list(overrides),
                   spec.reference_epochs, False)
    available_methods()
    started = time.perf_counter()
    with _torch_threads(num_threads if num_threads is not None else spec.num_threads):
        _, original = _reference(ctx, "original", split_seed)
        _reference(ctx, "retrain", split_seed)  # trained or reused, as the runner's
        _bank(ctx, split_seed, references)
        references_val = []
        for member in [None, *range(references)]:
            run_args, *_, checkpoint = _reference_run(ctx, "retrain", split_seed, member)
            references_val.append(_validate(_build(
                [*run_args, "--model.init_args.original", str(checkpoint)], False)))
        retrain_val, bank_val = references_val[0], references_val[1:]
        reference_seconds = time.perf_counter() - started

        def objective(trial: Any) -> float:
            params = {d.key: d.suggest(trial) for d in space}
            with tempfile.TemporaryDirectory(dir=workdir) as run_dir:
                args = _run_args(ctx, method_paths, split_seed, Path(run_dir), method_name,
                                 original)
                args += [a for key, value in params.items()
                         for a in (f"--{key}", _arg(value))]
                try:
                    cli = _build(args, False)
                    pruning = _Pruning(trial, retrain_val)
                    cli.trainer.callbacks.append(pruning)  # type: ignore[attr-defined]
                    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
                except FAILED_TRIAL as error:  # recorded; the study goes on
                    trial.set_user_attr("error", f"{type(error).__name__}: {error}")
                    raise
                if pruning.pruned:
                    raise optuna.TrialPruned()
                result = _validate(cli)
                fit_seconds = float(cli.model.fit_seconds)
            distance, parts = probe_distance(result, retrain_val, bank_val)
            trial.set_user_attr("parts", parts)
            trial.set_user_attr("fit_seconds", fit_seconds)
            return distance

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="minimize", sampler=optuna.samplers.TPESampler(seed=sampler_seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5) if prune
            else optuna.pruners.NopPruner())
        shipped = _shipped_values(method_config, space)
        if shipped:
            study.enqueue_trial(shipped, user_attrs={"shipped": True})
        study.optimize(objective, n_trials=trials, timeout=timeout, catch=FAILED_TRIAL)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    seconds = time.perf_counter() - started
    command = command or shlex.join(["unlearn-pl-tune", "--setting", setting, "--method",
                                     method, "--trials", str(trials), "--split-seed",
                                     str(split_seed), "--references", str(references)])
    best = study.best_trial if completed else None
    result = {"setting": name, "method": method_name, "split_seed": split_seed,
              "references": references, "command": command, "output": str(output),
              "best": None if best is None else {
                  "number": best.number, "value": best.value, "params": best.params,
                  **best.user_attrs},
              "seconds": seconds, "reference_seconds": reference_seconds,
              "trials": [{"number": t.number, "state": t.state.name, "value": t.value,
                          "params": t.params, **t.user_attrs} for t in study.trials],
              "retrain": {k: v for k, v in retrain_val.items() if k != "signals"},
              "environment": environment()}
    atomic_write_text(record_path, json.dumps(result, indent=1, default=float) + "\n")
    if best is None:
        raise RuntimeError(f"no trial of {method_name} completed ({len(study.trials)} pruned or "
                           f"failed, see {record_path}): widen or move the search space")
    against = f"and a bank of {references} retrains" if references else \
        "(accuracy gaps only, no bank)"
    header = (f"# Tuned {method_name} for the {name} setting: {command}\n"
              f"# {TUNED_ON} {split_seed} (its forget request only; report it on "
              f"another seed) against its retrain network {against}, on the validation "
              "probe.\n"
              f"# Objective (distance to retrain on the probe): {best.value:.4f} at trial "
              f"{best.number} of {len(study.trials)} ({len(completed)} completed); "
              f"{seconds - reference_seconds:.0f} s of trials, {reference_seconds:.0f} s "
              "training or validating the references.\n"
              f"# Searched: {', '.join(d.key for d in space)}.\n")
    config = _with_params(method_config, best.params)
    atomic_write_text(output, header + yaml.safe_dump(config, sort_keys=False))
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlearn-pl-tune", allow_abbrev=False,
        description="Tune a method's decisive hyperparameters with Optuna against the retrain "
                    "reference of one forget request, on the validation probe only; write the "
                    "best trial as a method config. Any other argument (--trainer.*, --data.*, "
                    "--model.*) is passed on to every run.",
        epilog="example: unlearn-pl-tune --setting digits --method scrub --trials 30")
    parser.add_argument("--setting", default="digits", help="data config name or path")
    parser.add_argument("--method", required=True,
                        help="method config name (its search space: configs/search/NAME.yaml)")
    parser.add_argument("--trials", type=int, default=30, help="most trials (default 30)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="time budget of the study in seconds (default: none)")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="the tuning split's seed (default 0); report on another")
    parser.add_argument("--references", type=int, default=None,
                        help="retrain networks in the tuning split's bank (default: the "
                             "setting's, 8 for digits; 0: accuracy gaps only)")
    parser.add_argument("--workdir", default=None,
                        help="cache of original, retrain and bank (default runs/compare/SETTING)")
    parser.add_argument("--output", default=None,
                        help="tuned config (default configs/tuned/SETTING/METHOD.yaml)")
    parser.add_argument("--record", default=None,
                        help="the study's JSON (default WORKDIR/tuning/METHOD.json)")
    parser.add_argument("--trainer", default="cpu", help="trainer config name or path")
    parser.add_argument("--num-threads", type=int, default=None, help="torch threads")
    parser.add_argument("--sampler-seed", type=int, default=0, help="TPE sampler seed")
    parser.add_argument("--no-prune", action="store_true", help="run every trial to its end")
    parser.add_argument("--configs-dir", default=None, help="the configs folder")
    parser.add_argument("--progress", action="store_true",
                        help="show progress bars and Lightning's messages")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``unlearn-pl-tune``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = _parser().parse_known_args(argv)
    try:
        with quiet_runs(args.progress):
            result = tune(args.setting, args.method, args.trials, timeout=args.timeout,
                          split_seed=args.split_seed, references=args.references,
                          workdir=args.workdir, output=args.output, record=args.record,
                          trainer=args.trainer, num_threads=args.num_threads,
                          sampler_seed=args.sampler_seed, prune=not args.no_prune,
                          configs_dir=args.configs_dir, overrides=overrides,
                          command=shlex.join(["unlearn-pl-tune", *argv]))
    except CompareInputError as error:
        print(f"unlearn-pl-tune: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    best = result["best"]
    print(f"best of {len(result['trials'])} trials: distance {best['value']:.4f} with "
          f"{best['params']} -> {result['output']} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
