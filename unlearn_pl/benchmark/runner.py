"""The comparison runner's entry point in Python, :func:`compare`, and its shards
(``--shard I/N``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from unlearn_pl.benchmark.results import _audit, _row, _write_results
from unlearn_pl.benchmark.runs import (
    _bank,
    _Context,
    _is_rank_zero,
    _method,
    _reference,
    _say,
    _torch_threads,
)
from unlearn_pl.benchmark.settings import (
    CONFIGS,
    CompareInputError,
    _bank_size,
    _resolve_methods,
    _resolve_setting,
    _resolve_trainer,
    _tuned_recipes,
    load_setting,
    tuned_split_seed,
)
from unlearn_pl.methods import available_methods
from unlearn_pl.utils import environment as environment_record


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
               method_configs: Mapping[str, tuple[Path, ...]]) -> list[dict[str, Any]]:
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
            reuse_runs: bool = False,
            recipes: Literal["tuned", "paper"] = "tuned") -> list[dict[str, Any]]:
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
            (``configs/settings/<setting>.yaml``), else the reference configs' own.
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
        recipes: ``tuned``: a method asked for by its shipped config's name runs its tuned
            recipe for the setting where ``unlearn-pl-tune`` wrote one
            (``configs/tuned/<setting>/<name>.yaml``), the shipped (paper) config otherwise;
            ``paper``: always the shipped config. Each row records its ``recipe``.
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
    if recipes not in ("tuned", "paper"):
        raise CompareInputError(f"recipes must be 'tuned' or 'paper', got {recipes!r}")
    tuned: dict[str, int | None] = {}  # method -> the split seed its recipe was tuned on
    if recipes == "tuned":
        method_configs, names = _tuned_recipes(method_configs, name, configs)
        tuned = {m: tuned_split_seed(method_configs[m][0]) for m in names}
        for method, tuned_on in tuned.items():
            if tuned_on in seeds and _is_rank_zero():
                print(f"[{name}] warning: {method}'s tuned recipe ({method_configs[method][0]}) "
                      f"was tuned on split seed {tuned_on}, one of the seeds compared: its "
                      "rows there are marked 'tuned on this split' and say little about the "
                      "recipe (compare on other seeds, or --recipes paper)", file=sys.stderr)
    trainer_config = _resolve_trainer(trainer, configs)
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareInputError(f"give one or more distinct seeds, got {seeds}")
    if method_seeds is not None and (not method_seeds
                                     or len(set(method_seeds)) != len(method_seeds)):
        raise CompareInputError(f"give one or more distinct method seeds, got "
                                f"{list(method_seeds)}")
    spec = load_setting(setting, configs)
    references = _bank_size(spec, references)
    shard = _parse_shard(shard) if shard is not None else None
    workdir = Path(workdir or Path("runs") / "compare" / name)
    output = Path(output or Path("runs") / "compare" / name)
    ctx = _Context(name, data_config, trainer_config, configs, workdir, spec, list(overrides),
                   reference_epochs if reference_epochs is not None else spec.reference_epochs,
                   progress, reuse_runs, shard)
    available_methods()  # import every method so class_path names resolve
    with _torch_threads(num_threads if num_threads is not None else spec.num_threads):
        environment = environment_record(["unlearn-pl-compare", "--setting", setting, "--methods",
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
                                    *(["--recipes", recipes] if recipes != "tuned" else []),
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
                    row = _row(name, method, seed, record, own)
                    row["recipe"] = "paper" if method not in tuned else (
                        "tuned on this split" if tuned[method] == seed else "tuned")
                    seed_rows.append(row)
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
    return rows
