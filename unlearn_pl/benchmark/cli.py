"""``unlearn-pl-compare``: the comparison runner's command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from unlearn_pl.benchmark.results import _run_name, markdown_table, summarize
from unlearn_pl.benchmark.runner import _parse_shard, _shard_text, compare
from unlearn_pl.benchmark.runs import _is_rank_zero
from unlearn_pl.benchmark.settings import CONFIGS, CompareInputError

_NOISY_WARNINGS = (".*does not have many workers.*", ".*The number of training batches.*",
                   ".*LeafSpec.*",
                   ".*Checkpoint directory .* exists and is not empty.*",
                   # Frozen teachers and copies stay in eval mode on purpose (see base.py).
                   r".*module\(s\) in eval mode at the start of training.*",
                   # Closed-form methods (Fisher forgetting) train without an optimiser.
                   r".*returned `None`, this fit will run with no optimizer.*")



@contextlib.contextmanager
def quiet_runs(progress: bool = False) -> Iterator[None]:
    """Lightning's per-run messages down to warnings (unless ``progress``) and the warnings
    every run of a comparison or a tuning study would repeat silenced, for the block."""
    if not progress:
        for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for message in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


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
    parser.add_argument("--recipes", choices=("tuned", "paper"), default="tuned",
                        help="tuned (default): a method named by its config runs its tuned "
                             "recipe for the setting where configs/tuned/SETTING/NAME.yaml "
                             "exists (unlearn-pl-tune writes it); paper: the shipped configs")
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
    with quiet_runs(args.progress):
        try:
            rows = compare(args.setting, args.methods, args.seeds, args.workdir, args.output,
                           overrides, method_seeds=args.method_seeds,
                           references=args.references, trainer=args.trainer,
                           reference_epochs=args.reference_epochs,
                           num_threads=args.num_threads, progress=args.progress,
                           configs_dir=args.configs_dir, shard=args.shard,
                           reuse_runs=args.reuse_runs, recipes=args.recipes)
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
