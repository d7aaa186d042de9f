"""The benchmark scripts run and report consistent numbers (their timings are not asserted)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BENCHMARKS


def script(name: str) -> Any:
    return runpy.run_path(str(BENCHMARKS / name))["main"]


def test_evaluation_cost_on_digits(tmp_path: Path) -> None:
    output = tmp_path / "evaluation.json"
    result = script("bench_evaluation.py")(["--repeats", "1", "--num-threads", "1",
                                            "--output", str(output)])
    assert json.loads(output.read_text()) == result
    assert result["splits"]["forget"] > 0 and result["arch"] == "tiny_cnn"
    # the report runs the same forward passes and more (metrics, the attack)
    assert result["evaluate_seconds"] > result["forward_seconds"] > 0
    assert result["ratio"] == pytest.approx(result["evaluate_seconds"]
                                            / result["forward_seconds"])


def test_dlfd_monitoring_needs_a_finished_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        script("bench_dlfd_monitoring.py")([str(tmp_path)])
