"""Two deletion requests one after the other, against one request of both sizes at once.

Usage: python benchmarks/bench_successive.py --original CKPT [--data configs/data/olivetti.yaml]
       [--count 16] [--methods finetune dlfd_fast] [--method-seeds 0 1 2]
       [--reference-epochs 30] [--workdir DIR] [--output FILE]

Request A forgets ``--count`` seeded random training samples of the original; request B,
``--count`` more, is applied to A's result (``data.previous_requests`` = A's ``splits.json``,
``model.original`` = A's checkpoint). Each is compared with the retrain reference trained
without both (``retrain_ab``). Beside them, one request of ``2 × --count`` samples unlearned
from the original, with its own retrain (``retrain_once``). Every method runs once per method
seed (the training batch order, ``data.shuffle_seed``); each fit is tested on the test split.
Recorded: the test accuracies, the population attack's forgetting score, the gaps to the
matching retrain and the fit seconds. Prints and writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from unlearn_pl.cli import run_cli
from unlearn_pl.utils import atomic_write_text, environment

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("acc_retain", "acc_forget", "acc_unseen", "forgetting_score")
# The Olivetti setting's own override (configs/settings/olivetti.yaml): 10 batches an epoch.
OVERRIDES = {"dlfd_fast": ["--trainer.val_check_interval", "5"]}


def fit(name: str, args: argparse.Namespace, root: Path, request: list[str],
        extra: list[str]) -> dict[str, Any]:
    """One fit of a method (or of retrain) and its test; the checkpoint and splits.json it
    wrote."""
    argv = ["fit", "--config", str(REPO / "configs" / "trainer" / "cpu.yaml"),
            "--config", str(args.data), "--config", str(REPO / "configs" / "methods" /
                                                        f"{name}.yaml"),
            *request, *OVERRIDES.get(name, []), *extra,
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root)]
    cli = run_cli(argv)
    trainer, module = cli.trainer, cli.model
    tested = trainer.test(module, datamodule=cli.datamodule, verbose=False)[0]
    checkpoint = cli.datamodule.requests()[-1]["checkpoint"]  # what splits.json records
    return {"test": {k: round(float(tested[f"test/{k}"]), 4) for k in KEYS},
            "fit_seconds": round(module.fit_seconds, 2), "checkpoint": checkpoint,
            "splits": str(Path(trainer.log_dir or root) / "splits.json"),
            "forget_size": len(cli.datamodule.splits["forget"][2])}


def count(n: int) -> list[str]:
    return ["--data.init_args.forget", "unlearn_pl.data.ForgetCount",
            "--data.init_args.forget.count", str(n)]


def gaps(run: dict[str, Any], retrain: dict[str, Any]) -> dict[str, float]:
    return {k: round(run["test"][k] - retrain["test"][k], 4) for k in KEYS}


def summary(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r["gaps"][key] for r in runs]
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=REPO / "configs" / "data" / "olivetti.yaml")
    parser.add_argument("--count", type=int, default=16, help="samples per request")
    parser.add_argument("--methods", nargs="+", default=["finetune", "dlfd_fast"])
    parser.add_argument("--method-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--reference-epochs", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "runs" /
                        "successive")
    parser.add_argument("--output", type=Path, default=RESULTS / "successive_olivetti.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    original = ["--model.init_args.original", str(args.original.resolve())]
    epochs = ["--trainer.max_epochs", str(args.reference_epochs)]
    work = args.workdir
    given = sys.argv[1:] if argv is None else argv
    results: dict[str, Any] = {"command": "python benchmarks/bench_successive.py " +
                               " ".join(given), "environment": environment(),
                               "count": args.count, "methods": {}}
    first: dict[str, Any] | None = None
    for method in args.methods:
        rows = []
        for seed in args.method_seeds:
            shuffle = ["--data.init_args.shuffle_seed", str(seed)]
            root = work / method / f"seed{seed}"
            a = fit(method, args, root / "a", count(args.count), [*original, *shuffle])
            b = fit(method, args, root / "b", count(args.count),
                    ["--data.init_args.previous_requests", a["splits"],
                     "--model.init_args.original", a["checkpoint"], *shuffle])
            once = fit(method, args, root / "once", count(2 * args.count),
                       [*original, *shuffle])
            first = first or a
            rows.append({"seed": seed, "a": a, "b": b, "once": once})
        results["methods"][method] = rows
    assert first is not None
    retrain_ab = fit("retrain", args, work / "retrain_ab", count(args.count),
                     ["--data.init_args.previous_requests", first["splits"], *epochs])
    retrain_once = fit("retrain", args, work / "retrain_once", count(2 * args.count), epochs)
    results["retrain_ab"], results["retrain_once"] = retrain_ab, retrain_once
    for method, rows in results["methods"].items():
        successive = [{"gaps": gaps(r["b"], retrain_ab)} for r in rows]
        once = [{"gaps": gaps(r["once"], retrain_once)} for r in rows]
        results["methods"][method] = {
            "runs": rows,
            "successive_gap": {k: summary(successive, k) for k in KEYS},
            "once_gap": {k: summary(once, k) for k in KEYS},
            "successive_fit_seconds": round(statistics.mean(
                r["a"]["fit_seconds"] + r["b"]["fit_seconds"] for r in rows), 2),
            "once_fit_seconds": round(statistics.mean(r["once"]["fit_seconds"] for r in rows),
                                      2)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(results, indent=1))
    print(json.dumps({m: {k: v for k, v in r.items() if k != "runs"}
                      for m, r in results["methods"].items()}, indent=1))
    return results


if __name__ == "__main__":
    main()
