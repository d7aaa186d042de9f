"""DLFD's monitoring overhead: our bounded online MIA probe vs the authors' per-batch full-set MIA.

Usage: python benchmarks/bench_dlfd_monitoring.py RUN_DIR [--checks 2] [--output FILE]

RUN_DIR is a DLFD run of ``unlearn-pl-compare`` (it holds ``record.json``; the run's saved
``config.yaml`` gives the data and the original checkpoint). Measured side by side:

* ours: the wall time of every validation run inside DLFD's fit (``validation_seconds``, the
  probe of ``data.eval_max_samples`` samples per split, every ``val_check_interval`` steps),
  as a share of the fit's wall time;
* the authors' code: after **every** training batch it evaluates the network on the full
  retain, forget and validation sets and fits the attack. One such check is timed here
  (``--checks`` times, median) on the same data and network (the original: the cost does not
  depend on the weights) and multiplied by DLFD's number of training steps: the cost that
  monitoring would have added to the same run.

Prints and writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.cli import instantiate_class

import unlearn_pl  # noqa: F401  (torchvision shim)
from unlearn_pl.evaluation import evaluate
from unlearn_pl.utils import atomic_write_text


def load_run(run: Path) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    """``(record, log_dir, config)`` of a finished ``unlearn-pl-compare`` run folder: its
    ``record.json``, the Lightning log folder it names and the ``config.yaml`` saved there."""
    record_file = run / "record.json"
    if not record_file.is_file():
        raise FileNotFoundError(f"{record_file} not found: give the folder of a finished run of "
                                "unlearn-pl-compare (e.g. runs/compare/fer2013/seed0/dlfd)")
    record = json.loads(record_file.read_text())
    log_dir = Path(record["log_dir"])
    return record, log_dir, yaml.safe_load((log_dir / "config.yaml").read_text())


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a DLFD run folder of unlearn-pl-compare")
    parser.add_argument("--checks", type=int, default=2, help="full-set checks to time")
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    try:
        record, log_dir, config = load_run(args.run)
    except FileNotFoundError as error:
        parser.error(str(error))
    checkpoints = sorted((log_dir / "checkpoints").glob("last*.ckpt"))
    if not checkpoints or "validation_seconds" not in record:
        parser.error(f"{args.run} has no last checkpoint or no validation_seconds: rerun DLFD "
                     "with this version of unlearn-pl-compare")
    steps = int(torch.load(checkpoints[-1], map_location="cpu", weights_only=True)["global_step"])
    torch.set_num_threads(args.num_threads)

    datamodule = instantiate_class((), config["data"])
    original = config["model"]["init_args"]["original"]
    seconds = []
    for _ in range(args.checks):
        start = time.perf_counter()
        evaluate(original, datamodule)  # full retain, forget and held-out sets + the attack
        seconds.append(time.perf_counter() - start)
    per_check = statistics.median(seconds)

    fit, ours = float(record["fit_seconds"]), float(record["validation_seconds"])
    training = fit - ours
    authors = per_check * steps
    result = {
        "training_steps": steps, "fit_seconds": fit, "training_seconds": training,
        "ours_monitoring_seconds": ours, "ours_share_of_fit": ours / fit,
        "full_set_check_seconds": per_check, "full_set_check_samples": sum(
            len(datamodule.splits[s][2]) for s in ("retain", "forget", "unseen")),
        "authors_monitoring_seconds": authors,
        "authors_share_of_fit": authors / (training + authors),
        "speedup_of_monitoring": authors / ours if ours > 0 else float("inf"),
        "threads": args.num_threads,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        atomic_write_text(args.output, text + "\n")
    return result


if __name__ == "__main__":
    main()
