"""Checkpoints written by release 0.1.0 (``tests/data/fixtures``, made at commit 659ce49 with
the flat ``forget_classes`` request) still load and evaluate to the numbers 0.1.0 gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearn_pl.data import ForgetClasses, SyntheticDataModule
from unlearn_pl.evaluation import evaluate
from unlearn_pl.methods import FineTune, Train

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"


def test_a_0_1_0_checkpoint_loads_and_evaluates_as_it_did() -> None:
    record = json.loads((FIXTURES / "finetune_0.1.0.json").read_text())
    path = FIXTURES / "finetune_0.1.0.ckpt"
    assert torch.load(path, weights_only=True)["hyper_parameters"]["lr"] == 0.05
    module = FineTune.load_from_checkpoint(path, weights_only=True)  # its original is elsewhere
    assert module.weights_source == "checkpoint"
    Train.load_from_checkpoint(FIXTURES / "original_0.1.0.ckpt", weights_only=True)
    # The same split through the typed request the flat one became.
    request = record["datamodule"]
    classes = request.pop("forget_classes")
    now = evaluate(path, SyntheticDataModule(forget=ForgetClasses(classes), **request))
    for key, value in record["evaluation"].items():
        if key != "fit_seconds":
            assert now[key] == pytest.approx(value, abs=1e-6), key
    assert now["fit_seconds"] == pytest.approx(record["evaluation"]["fit_seconds"])
