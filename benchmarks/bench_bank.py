"""A bank of K retrain networks: one ensemble (:func:`unlearn_pl.evaluation.bank.train_bank`)
vs K sequential ``Train(train_on="retain")`` fits, side by side in one process.

Usage: python benchmarks/bench_bank.py [--references 8] [--epochs 15] [--rounds 2]
       [--num-threads 1] [--runner] [--output benchmarks/results/bank_bench.json]

The digits setting of the comparison runner (``DigitsDataModule(forget_classes=[3],
batch_size=64)``, ``tiny_cnn`` width 2, lr 0.05 one-cycle, 15 epochs, one torch thread), bank
member ``m`` of seed 0 with its own seed ``1_000_000 + m`` (init, batch order, augmentation), as
``unlearn_pl.benchmark.bank_seed`` gives it. Each way ends with K evaluated networks: test numbers
and per-sample signals, and a checkpoint per network.

* ``bank``: one :class:`~unlearn_pl.evaluation.bank.EnsembleTrain` fit, then K evaluations;
* ``bank_processes``: the same split over ``cpu_count // threads`` processes at once
  (``train_bank(processes=...)``, what the runner does on a CPU);
* ``sequential_runner``: per member, what the runner's ``_reference`` runs minus the CLI: a
  ``Trainer`` with ``configs/trainer/cpu.yaml``'s settings (CSV logs, a checkpoint every epoch,
  the validation probe every epoch, as the retrain config runs it), fit, test, a checkpoint;
* ``sequential_lean``: the same fits without the per-epoch validation, logs and checkpoints
  (what a bank needs), then the same evaluation and checkpoint: the strictest baseline.

The machine may be busy (other jobs): the three run in every round, in a rotating order, and
the load average is recorded around each; times are per round and their median. ``--runner``
also times, in every round, one ``unlearn_pl.benchmark.compare(..., references=2)`` call
(original, retrain and 2 bank members through the CLI: the runner's own wall time per network,
CLI included). ``compute_floor`` times the bare training step of the K networks (forward,
backward, SGD) both ways on the same batches: K separate networks one after the other, and the
stacked ensemble under ``vmap``; no speedup can exceed what the other costs of a sequential run
leave above that floor. Prints and writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

import unlearn_pl  # noqa: F401  (torchvision shim)
from unlearn_pl.data import DigitsDataModule
from unlearn_pl.evaluation import evaluate, sample_signals
from unlearn_pl.evaluation.bank import train_bank
from unlearn_pl.methods import Train
from unlearn_pl.utils import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
RECIPE: dict[str, Any] = dict(train_on="retain", arch="tiny_cnn", width=2.0, lr=0.05,
                              scheduler="onecycle")
KEYS = ("acc_retain", "acc_forget", "acc_retain_test", "acc_forget_test", "mia")


def bank_seed(seed: int, member: int) -> int:
    """``unlearn_pl.benchmark.bank_seed`` (not imported: the runner is not needed here)."""
    return 1_000_000 + 1_000 * seed + member


def datamodule(shuffle_seed: int | None = None) -> DigitsDataModule:
    return DigitsDataModule(forget_classes=[3], batch_size=64, seed=0, shuffle_seed=shuffle_seed)


def sequential_member(seed: int, epochs: int, root: Path, runner: bool) -> dict[str, Any]:
    """One retrain fit with its own seed, evaluated, checkpointed."""
    seed_everything(seed, verbose=False)
    data = datamodule(shuffle_seed=seed)
    module = Train(**RECIPE, num_classes=data.num_classes, in_channels=data.num_channels,
                   normalization=data.normalization, task=data.task, seed=seed)
    kwargs: dict[str, Any] = dict(accelerator="cpu", devices=1, max_epochs=epochs,
                                  num_sanity_val_steps=0, enable_progress_bar=False,
                                  enable_model_summary=False, default_root_dir=str(root))
    if runner:  # configs/trainer/cpu.yaml, validation as the retrain config runs it
        kwargs.update(log_every_n_steps=10, logger=CSVLogger(str(root), name="logs"),
                      callbacks=[ModelCheckpoint(save_last=True)])
    else:
        kwargs.update(logger=False, enable_checkpointing=False, limit_val_batches=0)
    trainer = Trainer(**kwargs)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    fit = time.perf_counter() - start
    if runner:
        trainer.test(module, datamodule=data, verbose=False)
        results = dict(module.last_evaluation)
    else:
        results = evaluate(module, data)
    trainer.save_checkpoint(root / "member.ckpt")
    return {**{k: results[k] for k in KEYS}, "fit_seconds": fit, "seed": seed,
            "signals": sample_signals(module, data.mia_nonmember_split)}


def run_sequential(seeds: list[int], epochs: int, runner: bool) -> dict[str, Any]:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_bank_") as scratch:
        members = [sequential_member(s, epochs, Path(scratch) / str(s), runner) for s in seeds]
    return {"seconds": time.perf_counter() - start, "members": members}


def run_bank(seeds: list[int], epochs: int, processes: int = 1) -> dict[str, Any]:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_bank_") as scratch:
        records = train_bank(datamodule(), len(seeds), seeds, epochs, recipe=RECIPE,
                             checkpoints=[Path(scratch) / f"member{s}.ckpt" for s in seeds],
                             trainer_kwargs={"accelerator": "cpu"}, processes=processes)
    members = [{**{k: r[k] for k in KEYS}, "fit_seconds": r["fit_seconds"],
                "seed": r["member_seed"], "signals": r["signals"]} for r in records]
    return {"seconds": time.perf_counter() - start, "members": members,
            "fit_seconds": records[0]["bank_fit_seconds"]}


def signal_matrix(members: list[dict[str, Any]], key: str) -> torch.Tensor:
    return torch.tensor([m["signals"][key]["signal"] for m in members], dtype=torch.float64)


def summary(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy over members (mean, std) and the per-example spread of the signal."""
    out: dict[str, Any] = {}
    for key in KEYS:
        values = [m[key] for m in members]
        out[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values)}
    for key in ("forget", "nonmember"):
        spread = signal_matrix(members, key).std(0)  # per example, over members
        out[f"signal_spread_{key}"] = {"mean": float(spread.mean()),
                                       "median": float(spread.median())}
    return out


def twins(bank: list[dict[str, Any]], sequential: list[dict[str, Any]]) -> dict[str, Any]:
    """Member k of the bank against sequential member k (same seed): they should be the same
    network to float tolerance, drifting apart only by rounding over the steps."""
    out: dict[str, Any] = {}
    for key in ("forget", "nonmember"):
        a, b = signal_matrix(bank, key), signal_matrix(sequential, key)
        out[f"max_abs_signal_diff_{key}"] = float((a - b).abs().max())
        out[f"median_abs_signal_diff_{key}"] = float((a - b).abs().median())
    out["max_abs_acc_retain_test_diff"] = max(abs(x["acc_retain_test"] - y["acc_retain_test"])
                                              for x, y in zip(bank, sequential, strict=True))
    return out


def compute_floor(references: int, repeats: int = 3, steps: int = 20) -> dict[str, Any]:
    """Milliseconds per training step of the K networks (batch 64 of 8×8 digits each): K
    separate networks in turn vs the stacked ensemble, interleaved, median of ``repeats``."""
    from torch.nn import functional as F

    from unlearn_pl.evaluation.bank import EnsembleTrain, member_losses

    data = datamodule()
    kwargs: dict[str, Any] = dict(arch="tiny_cnn", width=2.0, num_classes=data.num_classes,
                                  in_channels=data.num_channels,
                                  normalization=data.normalization)
    ensemble = EnsembleTrain(list(range(references)), **kwargs).train()
    stacked = torch.optim.SGD(ensemble.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    singles = [Train(train_on="retain", **kwargs).network.train() for _ in range(references)]
    optimizers = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                  for n in singles]
    images = torch.rand(references, 64, data.num_channels, 8, 8)
    targets = torch.randint(0, data.num_classes, (references, 64))

    def ensemble_step() -> None:
        loss = member_losses(ensemble(images), targets).sum()
        stacked.zero_grad()
        loss.backward()
        stacked.step()

    def sequential_step() -> None:
        for k, (network, optimizer) in enumerate(zip(singles, optimizers, strict=True)):
            loss = F.cross_entropy(network(images[k]), targets[k])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def timed(step: Any) -> float:
        for _ in range(3):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps * 1000

    times: dict[str, list[float]] = {"sequential_ms": [], "ensemble_ms": []}
    for _ in range(repeats):
        times["sequential_ms"].append(timed(sequential_step))
        times["ensemble_ms"].append(timed(ensemble_step))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {**medians, "ratio_ensemble_to_sequential":
            medians["ensemble_ms"] / medians["sequential_ms"],
            "all": {k: [round(t, 2) for t in v] for k, v in times.items()}}


def run_runner(epochs: int) -> dict[str, Any]:
    """One comparison-runner call with a bank of 2 (no method): the CLI's per-network time."""
    from unlearn_pl.benchmark import compare

    with tempfile.TemporaryDirectory(prefix="bench_bank_runner_") as scratch:
        start = time.perf_counter()
        compare("digits", methods=[], seeds=[0], workdir=Path(scratch) / "work",
                output=Path(scratch) / "out", references=2, reference_epochs=epochs)
        seconds = time.perf_counter() - start
        records = [json.loads(p.read_text()) for p in
                   sorted((Path(scratch) / "work").rglob("bank/*/*.json"))]
    return {"seconds": seconds, "networks": 4, "seconds_per_network": seconds / 4,
            "bank_fit_wall_seconds": [r.get("wall_seconds") for r in records]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--runner", action="store_true",
                        help="also time compare(..., references=2) through the CLI")
    parser.add_argument("--output", type=Path, default=RESULTS / "bank_bench.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    seeds = [bank_seed(0, m) for m in range(args.references)]
    # The runner's way on a CPU: the members split over one process per core's thread budget.
    processes = min((os.cpu_count() or 1) // args.num_threads, args.references // 2)
    runs: dict[str, list[dict[str, Any]]] = {"bank": [], "sequential_lean": [],
                                             "sequential_runner": []}
    if processes > 1:
        runs["bank_processes"] = []
    if args.runner:
        runs["runner_cli"] = []
    order = list(runs)
    for round_ in range(args.rounds):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            load_before = os.getloadavg()[0]
            if name.startswith("bank"):
                run = run_bank(seeds, args.epochs, processes if name == "bank_processes" else 1)
            elif name == "runner_cli":
                try:
                    run = run_runner(args.epochs)
                except Exception as error:  # the runner is context, not the measurement
                    print(f"runner_cli failed: {type(error).__name__}: {error}", flush=True)
                    del runs["runner_cli"]
                    order.remove("runner_cli")
                    continue
                # per network, scaled to the bank's K: what K sequential CLI runs cost
                run["seconds"] = run["seconds_per_network"] * args.references
            else:
                run = run_sequential(seeds, args.epochs, runner=name == "sequential_runner")
            run.update(round=round_, load_before=load_before, load_after=os.getloadavg()[0])
            runs[name].append(run)
            print(f"round {round_} {name}: {run['seconds']:.1f} s "
                  f"(load {load_before:.1f} -> {run['load_after']:.1f})", flush=True)
    seconds = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    per_round = {name: [round(r["seconds"], 2) for r in rs] for name, rs in runs.items()}
    last = {name: rs[-1]["members"] for name, rs in runs.items() if "members" in rs[-1]}
    result: dict[str, Any] = {
        "benchmark": "bank of K retrain networks: one ensemble vs K sequential fits",
        "setting": "digits (forget class 3), tiny_cnn width 2, batch 64, lr 0.05 one-cycle",
        "references": args.references, "epochs": args.epochs, "rounds": args.rounds,
        "seeds": seeds, "threads": args.num_threads,
        "seconds_median": seconds, "seconds_per_round": per_round,
        "speedup_vs_sequential_runner": seconds["sequential_runner"] / seconds["bank"],
        "speedup_vs_sequential_lean": seconds["sequential_lean"] / seconds["bank"],
        "speedup_per_round_vs_runner": [round(s / b, 2) for s, b in zip(
            per_round["sequential_runner"], per_round["bank"], strict=True)],
        "speedup_per_round_vs_lean": [round(s / b, 2) for s, b in zip(
            per_round["sequential_lean"], per_round["bank"], strict=True)],
        **({"bank_processes": processes,
            "processes_speedup_vs_sequential_runner":
                seconds["sequential_runner"] / seconds["bank_processes"],
            "processes_speedup_vs_sequential_lean":
                seconds["sequential_lean"] / seconds["bank_processes"],
            **({"processes_speedup_vs_runner_cli":
                seconds["runner_cli"] / seconds["bank_processes"]} if "runner_cli" in runs
               else {})} if "bank_processes" in runs else {}),
        **({"speedup_vs_runner_cli": seconds["runner_cli"] / seconds["bank"],
            "runner_cli_seconds_per_network": [round(r["seconds_per_network"], 2)
                                               for r in runs["runner_cli"]]}
           if "runner_cli" in runs else {}),
        "bank_fit_seconds": [round(r["fit_seconds"], 2) for r in runs["bank"]],
        "sequential_lean_fit_seconds": [round(sum(m["fit_seconds"] for m in r["members"]), 2)
                                        for r in runs["sequential_lean"]],
        "load_average": {name: [(round(r["load_before"], 2), round(r["load_after"], 2))
                                for r in rs] for name, rs in runs.items()},
        "members": {name: summary(members) for name, members in last.items()},
        "member_accuracy": {name: [{k: round(m[k], 4) for k in KEYS} for m in members]
                            for name, members in last.items()},
        "bank_vs_sequential_twins": twins(last["bank"], last["sequential_lean"]),
        "compute_floor": compute_floor(args.references),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        atomic_write_text(args.output, text + "\n")
    return result


if __name__ == "__main__":
    main()
