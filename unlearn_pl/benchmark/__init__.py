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

from unlearn_pl.benchmark.cli import main
from unlearn_pl.benchmark.results import AUDIT_NUMBERS, METRICS, markdown_table, summarize
from unlearn_pl.benchmark.runner import compare
from unlearn_pl.benchmark.runs import bank_seed
from unlearn_pl.benchmark.settings import (
    CONFIGS,
    SETTINGS,
    CompareInputError,
    Setting,
    available_method_configs,
    available_settings,
    default_configs_dir,
    load_setting,
)

__all__ = ["AUDIT_NUMBERS", "CONFIGS", "METRICS", "SETTINGS", "CompareInputError", "Setting",
           "available_method_configs", "available_settings", "bank_seed", "compare",
           "default_configs_dir", "load_setting", "main", "markdown_table", "summarize"]
