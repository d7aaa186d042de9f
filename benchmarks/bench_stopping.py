"""StopWhenForgotten on real data: where each method stops, what it keeps, and what the
monitoring costs, beside the same method run to the end of its recipe.

Usage: python benchmarks/bench_stopping.py --original CKPT [--data configs/data/digits.yaml]
       [--methods finetune neggrad ...] [--every 5] [--seed 0] [--output FILE]
       [--budget 1] [--extra=--data.init_args.eval_max_samples=500 ...]

CKPT is the original network of the data config (for digits, the runner's cached one:
``benchmarks/runs/<workdir>/seed0/original/original-*.ckpt``). Every method runs twice
through the ``unlearn-pl`` CLI on one torch thread, with a validation check every ``--every``
training steps (0: the run's own schedule) and the ``--extra`` CLI arguments: once as
its config says, and once with ``--config configs/callbacks/stop_when_forgotten.yaml`` (the
callback with its defaults, four checks per epoch on a bounded probe; with ``--every``, the
callback alone, ``--trainer.callbacks+=StopWhenForgotten``) and ``--budget`` times the config's
epochs (a method that forgets too slowly can go on until it has
forgotten; one that damages the network is rolled back). Each run is then tested (the test
split, never seen by the callback). Recorded per run: the fit's wall time, the wall time of the
validation checks inside it (``validation_seconds``, the monitoring cost) and its share, the
callback's stop step and reason, and the test accuracies.
Prints and writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from unlearn_pl.cli import run_cli
from unlearn_pl.utils import atomic_write_text, environment

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ["finetune", "neggrad", "neggrad_plus", "random_labels", "boundary_shrink", "scrub",
           "salun", "delete", "l1_sparse", "msg"]
KEYS = ("acc_retain", "acc_forget", "acc_retain_test", "acc_forget_test", "acc_unseen",
        "forgetting_score")


def run(method: str, args: argparse.Namespace, root: Path, stop: bool) -> dict[str, Any]:
    """One fit and test of ``method``, with or without the callback."""
    argv = ["fit", "--config", str(REPO / "configs" / "trainer" / "cpu.yaml"),
            "--config", str(args.data), "--config", str(REPO / "configs" / "methods" /
                                                        f"{method}.yaml"),
            "--model.init_args.original", str(args.original),
            "--data.init_args.seed", str(args.seed),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root)]
    if stop and not args.every:
        argv += ["--config", str(REPO / "configs" / "callbacks" / "stop_when_forgotten.yaml")]
    elif args.every:
        argv += ["--trainer.val_check_interval", str(args.every),
                 "--trainer.check_val_every_n_epoch", "null"]
        if stop:
            argv.append("--trainer.callbacks+=unlearn_pl.callbacks.StopWhenForgotten")
    argv += args.extra
    if stop:
        config = yaml.safe_load((REPO / "configs" / "methods" / f"{method}.yaml").read_text())
        epochs = config.get("trainer", {}).get("max_epochs", 1)
        argv += ["--trainer.max_epochs", str(args.budget * epochs)]
    cli = run_cli(argv)
    module, trainer = cli.model, cli.trainer
    fit, validation = module.fit_seconds, module.validation_seconds
    steps = trainer.global_step
    callback = next((c for c in trainer.callbacks if type(c).__name__ == "StopWhenForgotten"),
                    None)
    tested = trainer.test(module, datamodule=cli.datamodule, verbose=False)[0]
    return {"fit_seconds": round(fit, 3), "validation_seconds": round(validation, 3),
            "monitoring_share": round(validation / fit, 4) if fit else None, "steps": steps,
            "stopped": getattr(callback, "stopped", None),
            "stop_step": getattr(callback, "stop_step", None),
            "start_accuracy": getattr(callback, "start_accuracy", None),
            "test": {k: round(float(tested[f"test/{k}"]), 4) for k in KEYS
                     if f"test/{k}" in tested}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=REPO / "configs" / "data" / "digits.yaml")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=1)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--extra", action="append", default=[],
                        help="an unlearn-pl argument for every run, e.g. "
                             "--extra=--data.init_args.eval_max_samples=500")
    parser.add_argument("--output", type=Path, default=RESULTS / "stopping.json")
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    results: dict[str, Any] = {
        "benchmark": "StopWhenForgotten (defaults) vs the same recipe run to its end",
        "data": str(args.data.resolve().relative_to(REPO)) if args.data.resolve().is_relative_to(
            REPO) else str(args.data), "split_seed": args.seed,
        "check_every_steps": args.every or "each epoch", "extra": args.extra,
        "budget": args.budget,
        "threads": args.num_threads, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            pair = {kind: run(method, args, Path(tmp) / f"{method}-{kind}", stop)
                    for kind, stop in (("recipe", False), ("stopped", True))}
            results["methods"][method] = pair
            print(method, json.dumps(pair), flush=True)
    results["environment"] = environment()
    atomic_write_text(args.output, json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
