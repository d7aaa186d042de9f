"""Is the forgetting of DLFD's OT phase in BatchNorm's running statistics or in the weights?

Usage: python benchmarks/dlfd_bn_probe.py RUN_DIR CHECKPOINT_NAME

RUN_DIR is a DLFD run of ``unlearn-pl-compare`` (``record.json`` names its log folder);
CHECKPOINT_NAME a checkpoint in its ``checkpoints/`` (e.g. ``best-nomus-step=20.ckpt``).
Validates, on the run's probe (``eval_max_samples`` = 1000 per split), the original, that
checkpoint, and that checkpoint with the original's BatchNorm running statistics put back.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from bench_dlfd_monitoring import load_run  # this folder (run as a script)
from lightning.pytorch import Trainer
from lightning.pytorch.cli import instantiate_class

import unlearn_pl  # noqa: F401  (torchvision shim)
from unlearn_pl.evaluation import load_checkpoint_for_evaluation
from unlearn_pl.methods import UnlearningModule

KEYS = ("acc_retain", "acc_forget", "acc_unseen", "forgetting_score", "nomus")


def probe(module: UnlearningModule, datamodule: object) -> dict[str, float]:
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: round(module.last_evaluation[k], 3) for k in KEYS}


def main(run: Path, checkpoint_name: str) -> None:
    torch.set_num_threads(2)
    _, log_dir, config = load_run(run)
    config["data"]["init_args"]["eval_max_samples"] = 1000
    datamodule = instantiate_class((), config["data"])
    original = load_checkpoint_for_evaluation(config["model"]["init_args"]["original"])[0]
    checkpoint = log_dir / "checkpoints" / checkpoint_name
    step = load_checkpoint_for_evaluation(checkpoint)[0]
    swapped = load_checkpoint_for_evaluation(checkpoint)[0]
    state = swapped.network.state_dict()
    state.update({k: v for k, v in original.network.state_dict().items() if "running_" in k})
    swapped.network.load_state_dict(state)
    for name, module in (("original", original), (checkpoint_name, step),
                         (f"{checkpoint_name} + original BatchNorm statistics", swapped)):
        print(json.dumps({"model": name, **probe(module, datamodule)}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
