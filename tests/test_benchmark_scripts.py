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


def test_successive_requests_against_the_retrain_without_both(original_ckpt: str,
                                                              tmp_path: Path) -> None:
    from tests.conftest import DATA_CONFIG

    data = tmp_path / "data.yaml"
    data.write_text(DATA_CONFIG)
    output = tmp_path / "successive.json"
    result = script("bench_successive.py")([
        "--original", original_ckpt, "--data", str(data), "--count", "6", "--methods",
        "finetune", "--method-seeds", "0", "--reference-epochs", "1", "--workdir",
        str(tmp_path / "runs"), "--output", str(output)])
    assert json.loads(output.read_text()) == result
    run = result["methods"]["finetune"]["runs"][0]
    # The second request is audited with the first: 12 forgotten samples, as at once.
    assert run["a"]["forget_size"] == 6 and run["b"]["forget_size"] == 12
    assert result["retrain_ab"]["forget_size"] == run["once"]["forget_size"] == 12
    requests = json.loads(Path(run["b"]["splits"]).read_text())["requests"]
    assert [r["checkpoint"] for r in requests] == [run["a"]["checkpoint"],
                                                   run["b"]["checkpoint"]]
    gap = result["methods"]["finetune"]["successive_gap"]["acc_forget"]["mean"]
    assert gap == pytest.approx(run["b"]["test"]["acc_forget"]
                                - result["retrain_ab"]["test"]["acc_forget"])
