"""Time LiRA, RMIA and retrain-likeness on 20,000 forget + 20,000 held-out samples, 16 references.

Run: ``python benchmarks/bench_privacy.py [--repeats 3] [--num-threads 1] [--output FILE]``.
Writes ``benchmarks/results/privacy_bench.json`` and prints it. Signals are synthetic cached φ
(what a reference bank stores); the timed part is each metric's ``compute()`` after all batches
were added (de-duplication by sample id included), the target being under 1 s for the three on
2 CPU cores. The ε-score over ``N`` unlearned and ``N`` retrained networks on the forget set is
timed too, separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import unlearn_pl  # noqa: F401  # torchvision shim, before torchmetrics is imported
from unlearn_pl.metrics import RMIA, LiRA, RetrainLikeness, epsilon_score

RESULTS = Path(__file__).resolve().parent / "results" / "privacy_bench.json"


def _signals(args: argparse.Namespace, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-example means, K references around them, a target that fits forget samples better."""
    sizes = {"forget": args.forget, "heldout": args.heldout, "population": args.population}
    out = {}
    for split, m in sizes.items():
        mu = 2 * torch.randn(m, generator=g)
        out[f"{split}_refs"] = mu + torch.randn(args.references, m, generator=g)
        out[f"{split}_target"] = mu + torch.randn(m, generator=g) + (split == "forget") * 0.5
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--forget", type=int, default=20_000)
    parser.add_argument("--heldout", type=int, default=20_000)
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--references", type=int, default=16)
    parser.add_argument("--epsilon-networks", type=int, default=16, help="N; 0 skips it")
    parser.add_argument("--repeats", type=int, default=3)
    # One thread by default: on a shared 2-core machine two threads mostly wait for each other.
    parser.add_argument("--num-threads", type=int, default=1, help="0: torch's default")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    s = _signals(args, torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"lira": [], "rmia": [], "retrain_likeness": [], "update": []}
    results: dict[str, dict[str, torch.Tensor]] = {}
    for _ in range(args.repeats):
        # Fresh metrics per repeat: compute() caches its value until the next update.
        metrics = {"lira": LiRA(), "rmia": RMIA(), "retrain_likeness": RetrainLikeness()}
        start = time.perf_counter()
        for split in ("forget", "heldout", "population"):
            target, refs = s[f"{split}_target"], s[f"{split}_refs"]
            for ids in torch.arange(target.numel()).split(args.batch_size):
                if split != "population":
                    metrics["lira"].update(ids, target[ids], refs[:, ids], split=split)
                metrics["rmia"].update(ids + (args.heldout if split == "population" else 0),
                                       target[ids], refs[:, ids], split=split)
                if split == "forget":
                    metrics["retrain_likeness"].update(ids, target[ids], refs[:, ids])
        times["update"].append(time.perf_counter() - start)
        for name, metric in metrics.items():
            start = time.perf_counter()
            results[name] = metric.compute()
            times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(t) for name, t in times.items()}
    result: dict[str, object] = {
        "benchmark": "privacy metrics compute (LiRA, RMIA, retrain-likeness)",
        "forget": args.forget, "heldout": args.heldout, "population": args.population,
        "references": args.references,
        "compute_s": round(median["lira"] + median["rmia"] + median["retrain_likeness"], 4),
        "median_s": {name: round(t, 4) for name, t in median.items()},
        "times_s": {name: [round(x, 4) for x in t] for name, t in times.items()},
        "lira_auc": round(results["lira"]["auc"].item(), 4),
        "rmia_auc": round(results["rmia"]["auc"].item(), 4),
        "outside_band": round(results["retrain_likeness"]["outside"].item(), 4),
    }
    if args.epsilon_networks:
        g = torch.Generator().manual_seed(1)
        n, m = args.epsilon_networks, args.forget
        unlearned = torch.randn(n, m, generator=g, dtype=torch.float64) + 0.3
        retrained = torch.randn(n, m, generator=g, dtype=torch.float64)
        start = time.perf_counter()
        score = epsilon_score(unlearned, retrained)
        result["epsilon_score"] = {"networks": n, "examples": m,
                                   "seconds": round(time.perf_counter() - start, 4),
                                   "forget_quality": round(score["forget_quality"].item(), 4)}
    result |= {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "load_average_1min": round(os.getloadavg()[0], 2),
               "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
