"""One training step (forward and backward) of two resnet18 at 32×32, batch 128: as one vmapped
ensemble (:class:`~unlearn_pl.evaluation.ensemble.StackedNetworks`) and as two networks apart.

Usage: python benchmarks/bench_ensemble_step.py [--threads 2] [--repeats 3]
Prints the seconds of each repeat; the last is the steady state.
"""

from __future__ import annotations

import argparse
import time

import torch

from unlearn_pl.evaluation.ensemble import StackedNetworks
from unlearn_pl.networks import build_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    networks = [build_network("resnet18", 10, 3, True) for _ in range(2)]
    ensemble = StackedNetworks(networks)
    ensemble.train()
    images = torch.rand(2, 128, 3, 32, 32)
    for _ in range(args.repeats):
        start = time.perf_counter()
        ensemble(images).sum().backward()
        print(f"ensemble of 2: {time.perf_counter() - start:.2f} s")
    for _ in range(args.repeats):
        start = time.perf_counter()
        networks[0](images[0]).sum().backward()
        print(f"one network: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
