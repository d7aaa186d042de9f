"""Method configs composed as BASE+OVERRIDE.yaml: a sweep's small override on a shipped config
runs as the full config would."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearn_pl.benchmark import CONFIGS, CompareInputError
from unlearn_pl.benchmark.runs import _run_args
from unlearn_pl.benchmark.settings import _resolve_methods


def test_an_override_is_composed_on_its_base(tmp_path: Path) -> None:
    override = tmp_path / "finetune_lr02.yaml"
    override.write_text("model:\n  init_args:\n    lr: 0.02\n")
    resolved = _resolve_methods([f"finetune+{override}"], CONFIGS)
    assert resolved == {"finetune_lr02": (CONFIGS / "methods" / "finetune.yaml", override)}
    # Both files reach the CLI, the base first, so the override's values win.
    class Ctx:  # the fields _run_args reads
        trainer_config, data_config = CONFIGS / "trainer/cpu.yaml", CONFIGS / "data/digits.yaml"
        progress, reference_epochs, overrides = False, None, []

        class spec:  # noqa: N801
            overrides: tuple[str, ...] = ()
            method_overrides: dict = {}

    args = _run_args(Ctx(), resolved["finetune_lr02"], 0, tmp_path / "run", "finetune_lr02",
                     None)  # type: ignore[arg-type]
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert configs[-2:] == [str(CONFIGS / "methods" / "finetune.yaml"), str(override)]
    # An override alone names no method class: refused before any work, naming the fix.
    with pytest.raises(CompareInputError, match="no model.class_path"):
        _resolve_methods([str(override)], CONFIGS)
    with pytest.raises(CompareInputError, match="BASE\\+OVERRIDE"):
        _resolve_methods(["finetune+nonexistent"], CONFIGS)
