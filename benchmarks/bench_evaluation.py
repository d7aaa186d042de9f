"""Evaluation cost: the report's wall time vs one plain forward pass over the evaluated splits.

Usage: python benchmarks/bench_evaluation.py [--data configs/data/digits.yaml] [--arch ARCH]
       [--repeats 3] [--num-threads 2] [--output FILE]

Both are timed on the same network, data and threads, interleaved ``--repeats`` times (median):

* ``evaluate``: :func:`unlearn_pl.evaluation.evaluate`, what ``unlearn-pl test`` and the comparison
  runner compute: accuracy and loss on every split, the per-sample losses, the membership
  inference attack (10 logistic-regression fits), forgetting score and NoMUS, through a Lightning
  ``Trainer.test``;
* ``forward``: a bare ``torch.inference_mode`` loop over the same splits and batch size that only
  computes the logits.

The network's weights do not change the cost, so a freshly initialised one is used. Prints and
optionally writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml
from lightning.pytorch.cli import instantiate_class

import unlearn_pl  # noqa: F401  (torchvision shim)
from unlearn_pl.data import UnlearningDataModule
from unlearn_pl.evaluation import evaluate
from unlearn_pl.networks import Classifier, build_network
from unlearn_pl.utils import atomic_write_text

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def forward_pass(network: Classifier, datamodule: UnlearningDataModule) -> float:
    start = time.perf_counter()
    network.eval()
    with torch.inference_mode():
        for split in datamodule.eval_splits:
            for images, _, _ in datamodule.dataloader(split):
                network(images)
    return time.perf_counter() - start


def timed_evaluate(network: Classifier, datamodule: UnlearningDataModule) -> float:
    start = time.perf_counter()
    evaluate(network, datamodule)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=CONFIGS / "data" / "digits.yaml",
                        help="a data config (its data section is used)")
    parser.add_argument("--arch", default=None, help="network (default: the config's model arch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    config = yaml.safe_load(args.data.read_text())
    model = (config.get("model") or {}).get("init_args", {})
    arch = args.arch or model.get("arch", "resnet18")
    datamodule: UnlearningDataModule = instantiate_class((), config["data"])
    mean, std = datamodule.normalization
    network = build_network(arch, datamodule.num_classes, datamodule.num_channels,
                            small_input=model.get("small_input", False),
                            width=model.get("width", 1.0), mean=mean, std=std)
    forward_pass(network, datamodule)  # warm-up: data decoding caches, allocator
    evaluations, forwards = [], []
    for _ in range(args.repeats):
        evaluations.append(timed_evaluate(network, datamodule))
        forwards.append(forward_pass(network, datamodule))
    samples = {split: len(datamodule.splits[split][2]) for split in datamodule.eval_splits}
    result: dict[str, object] = {
        "data": str(args.data), "arch": arch, "splits": samples,
        "evaluate_seconds": statistics.median(evaluations),
        "forward_seconds": statistics.median(forwards),
        "ratio": statistics.median(evaluations) / statistics.median(forwards),
        "repeats": args.repeats, "threads": args.num_threads, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        atomic_write_text(args.output, text + "\n")
    return result


if __name__ == "__main__":
    main()
