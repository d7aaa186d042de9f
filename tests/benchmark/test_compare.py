"""The comparison runner end to end on tiny synthetic data: files, numbers, reuse, spread."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from tests.conftest import DATA_CONFIG, FAST_FINETUNE
from unlearn_pl.benchmark import (
    CompareInputError,
    available_method_configs,
    available_settings,
    compare,
    main,
    markdown_table,
    summarize,
)
from unlearn_pl.benchmark.results import _spread
from unlearn_pl.data import SyntheticDataModule
from unlearn_pl.evaluation import evaluate

PLOTS = ("nomus.png", "forgetting_vs_accuracy.png", "time_ratio.png", "loss_histograms.png")
NUMBERS = ("acc_retain", "acc_forget", "acc_unseen", "acc_retain_test", "acc_forget_test", "mia",
           "forgetting_score", "nomus", "loss_forget", "loss_forget_test")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two runs of the same comparison (2 methods, 2 seeds): the second must reuse the cached
    original and retrain networks."""
    root = tmp_path_factory.mktemp("compare")
    data, fast = root / "synthetic.yaml", root / "finetune_fast.yaml"
    data.write_text(DATA_CONFIG)
    fast.write_text(FAST_FINETUNE)
    kwargs = dict(setting=str(data), methods=["finetune", str(fast)], seeds=[0, 1],
                  workdir=root / "work", overrides=["--data.init_args.eval_batch_size", "64"],
                  reference_epochs=4, num_threads=1)
    first = compare(output=root / "first", **kwargs)  # type: ignore[arg-type]
    checkpoints = sorted((root / "work").glob("seed*/*/*.ckpt"))
    mtimes = {p: p.stat().st_mtime_ns for p in checkpoints}
    second = compare(output=root / "second", **kwargs)  # type: ignore[arg-type]
    return dict(root=root, first=first, second=second, checkpoints=checkpoints, mtimes=mtimes,
                kwargs=kwargs)


def test_rows_hold_every_method_and_seed_with_their_networks_numbers(runs: dict) -> None:
    rows = runs["first"]
    assert [(r["method"], r["seed"]) for r in rows] == [
        (m, s) for m in ("original", "retrain", "finetune", "finetune_fast") for s in (0, 1)]
    for row in rows:
        # The networks' own numbers: a cached reference evaluated again gives its row, and the
        # per-sample losses are those the row's mean losses average (each sample once).
        if row["method"] in ("original", "retrain"):
            init_args = yaml.safe_load(DATA_CONFIG)["data"]["init_args"]
            datamodule = SyntheticDataModule(**{**init_args, "seed": row["seed"]})
            again = evaluate(row["checkpoint"], datamodule)
            for key in NUMBERS:
                assert row[key] == pytest.approx(again[key], abs=1e-6), (row["method"], key)
        losses = row["losses"]
        assert statistics.fmean(losses["forget"]) == pytest.approx(row["loss_forget"], abs=1e-5)
        assert statistics.fmean(losses["nonmember"]) == pytest.approx(row["loss_forget_test"],
                                                                     abs=1e-5)
        assert 0 < row["fit_seconds"] <= row["wall_seconds"]
        # validation runs once per epoch inside every fit: timed, and a part of the fit
        assert 0 < row["validation_seconds"] < row["fit_seconds"]
        retrain = next(r for r in rows if r["method"] == "retrain" and r["seed"] == row["seed"])
        assert row["time_ratio_to_retrain"] == pytest.approx(
            row["fit_seconds"] / retrain["fit_seconds"])
        assert row["losses"]["forget"] and row["losses"]["nonmember"]
        assert row["nonmember_split"] == "forget_test"  # class-wise: like compared with like
    by_key = {(r["method"], r["seed"]): r for r in rows}
    for seed in (0, 1):
        # Retrain never saw class 1; the original did. Fine-tuning starts from the original.
        assert by_key["retrain", seed]["acc_forget"] < by_key["original", seed]["acc_forget"]
        assert by_key["retrain", seed]["time_ratio_to_retrain"] == 1.0
    assert "FineTune" in by_key["finetune", 0]["class_path"]


def test_result_files_and_table(runs: dict) -> None:
    output = runs["root"] / "first"
    for name in ("results.csv", "results.json", "results.md", *PLOTS):
        assert (output / name).stat().st_size > 0, name
    assert not list(output.glob(".*.tmp"))  # atomic writes leave no temporary behind
    assert (output / "nomus.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (output / "results.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines[1:]] == [
        "original", "retrain", "finetune", "finetune_fast"]
    assert "±" in lines[2] and "mean ± sample standard deviation over seeds 0, 1" in table
    csv_lines = (output / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("setting,method,seed,method_seed,recipe,reused,acc_retain,")
    assert len(csv_lines) == 1 + 8
    record = json.loads((output / "results.json").read_text())
    assert len(record["rows"]) == 8 and "losses" not in record["rows"][0]
    assert record["environment"]["versions"]["torch"]


def test_second_run_reuses_cached_references(runs: dict) -> None:
    assert len(runs["checkpoints"]) == 4  # original and retrain for each of 2 seeds
    for path, mtime in runs["mtimes"].items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    second = {(r["method"], r["seed"]): r for r in runs["second"]}
    first = {(r["method"], r["seed"]): r for r in runs["first"]}
    for seed in (0, 1):
        for kind in ("original", "retrain"):
            assert second[kind, seed]["reused"] and not first[kind, seed]["reused"]
            assert second[kind, seed]["fit_seconds"] == first[kind, seed]["fit_seconds"]
            assert second[kind, seed]["acc_forget"] == first[kind, seed]["acc_forget"]
        assert not second["finetune", seed]["reused"]
    assert sorted(runs["root"].glob("work/seed*/*/*.ckpt")) == runs["checkpoints"]
    # The fingerprint leaves out arguments at None, so a release that adds an optional
    # argument (default None) still finds the references cached by an older one.
    for record in [p.with_suffix(".json") for p in runs["checkpoints"]]:
        config = json.loads(record.read_text())["config"]
        for part in ("data", "model"):
            values = config[part]["init_args"]
            assert values and None not in values.values(), (record, part)


def test_changed_recipe_trains_beside_the_cache_without_overwriting(runs: dict) -> None:
    kwargs = {**runs["kwargs"], "seeds": [0], "methods": [], "reference_epochs": 1}
    rows = compare(output=runs["root"] / "third", **kwargs)
    assert [r["method"] for r in rows] == ["original", "retrain"]
    assert not any(r["reused"] for r in rows)
    for path, mtime in runs["mtimes"].items():
        assert path.stat().st_mtime_ns == mtime
    assert len(list(runs["root"].glob("work/seed0/original/*.ckpt"))) == 2


def test_summary_mean_and_sample_std_over_seeds(runs: dict) -> None:
    rows = runs["first"]
    summary = {entry["method"]: entry for entry in summarize(rows)}
    assert list(summary) == ["original", "retrain", "finetune", "finetune_fast"]
    for method, entry in summary.items():
        for key in ("acc_retain", "nomus", "fit_seconds"):
            values = [r[key] for r in rows if r["method"] == method]
            assert entry[key] == pytest.approx(statistics.fmean(values))
            assert entry[f"{key}_std"] == pytest.approx(statistics.stdev(values))
    record = json.loads((runs["root"] / "first" / "results.json").read_text())
    assert record["summary"][2]["nomus"] == pytest.approx(summary["finetune"]["nomus"])


def test_markdown_cells_and_single_seed() -> None:
    rows = [{"method": "m", "seed": s, "acc_retain": v, "fit_seconds": 2.0 + s}
            for s, v in ((0, 0.5), (1, 0.7))]
    assert "| m | 0.600 ± 0.141 | 2.5 ± 0.7 |" in markdown_table(summarize(rows))
    single = summarize(rows[:1])
    assert single[0]["acc_retain_std"] is None
    assert "| m | 0.500 | 2.0 |" in markdown_table(single)
    nan_row = [{"method": "m", "seed": 0, "acc_retain": math.nan}]
    assert "acc_retain" not in summarize(nan_row)[0]


def test_table_footer_names_the_seeds_of_its_runs() -> None:
    def rows(seeds: list[int], own: list[int]) -> list[dict]:
        # references run with their split's seed; the method once per method seed
        return [*({"method": kind, "seed": s, "method_seed": s} for s in seeds
                  for kind in ("original", "retrain")),
                *({"method": "m", "seed": s, "method_seed": o} for s in seeds for o in own)]
    assert _spread(rows([0], [0])) == "seed 0"
    assert _spread(rows([0, 1], [0, 1])) == "mean ± sample standard deviation over seeds 0, 1"
    # one run per method on split 1 with method seed 0: no spread, and method seed 1 was not run
    one = _spread(rows([1], [0]))
    assert one.startswith("seed 1 (split, original and retrain), method seed 0")
    assert "±" not in one
    both = _spread(rows([1], [0, 2]))
    assert "seeds 1 (split, original and retrain) × method seeds 0, 2 " in both


def test_unknown_names_fail_before_training(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert {"digits", "cifar10"} <= set(available_settings())
    assert "finetune" in available_method_configs()
    assert not {"original", "retrain"} & set(available_method_configs())
    work = tmp_path / "work"
    with pytest.raises(CompareInputError, match="choose one of .*digits"):
        compare("no_such_setting", ["finetune"], [0], work)
    with pytest.raises(CompareInputError, match=r"unknown method\(s\) \['nope'\].*finetune"):
        compare("digits", ["finetune", "nope"], [0], work)
    with pytest.raises(CompareInputError, match="always run"):
        compare("digits", ["retrain"], [0], work)
    with pytest.raises(CompareInputError, match="unknown trainer config"):
        compare("digits", ["finetune"], [0], work, trainer="tpu")
    with pytest.raises(CompareInputError, match="distinct seeds"):
        compare("digits", ["finetune"], [0, 0], work)
    with pytest.raises(CompareInputError, match="distinct method seeds"):
        compare("digits", ["finetune"], [0], work, method_seeds=[1, 1])
    assert not work.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["--setting", "digits", "--methods", "nope", "--workdir", str(work)])
    assert exit_info.value.code == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
    assert not work.exists()


def test_method_seeds_repeat_the_unlearning_run_against_the_same_references(
        runs: dict) -> None:
    fast = str(runs["root"] / "finetune_fast.yaml")
    output = runs["root"] / "method_seeds"
    kwargs = {**runs["kwargs"], "seeds": [0], "methods": [fast]}
    rows = compare(output=output, method_seeds=[0, 5], **kwargs)
    assert [(r["method"], r["seed"], r["method_seed"]) for r in rows] == [
        ("original", 0, 0), ("retrain", 0, 0), ("finetune_fast", 0, 0), ("finetune_fast", 0, 5)]
    assert rows[0]["reused"] and rows[1]["reused"]  # no new references
    for path, mtime in runs["mtimes"].items():
        assert path.stat().st_mtime_ns == mtime
    work = runs["root"] / "work" / "seed0"
    configs = {own: yaml.safe_load(next((work / d).glob("**/config.yaml")).read_text())
               for own, d in ((0, "finetune_fast"), (5, "finetune_fast-mseed5"))}
    assert (work / "finetune_fast-mseed5" / "record.json").is_file()
    for own, config in configs.items():
        assert config["seed_everything"] == own and config["model"]["init_args"]["seed"] == own
        assert config["data"]["init_args"]["seed"] == 0
    splits = [json.loads(next((work / d).glob("**/splits.json")).read_text())
              for d in ("finetune_fast", "finetune_fast-mseed5")]
    assert splits[0]["splits"] == splits[1]["splits"]  # the same split for both runs
    assert splits[1]["hparams"]["shuffle_seed"] == 5  # in another batch order
    assert rows[2]["losses"]["forget"] != rows[3]["losses"]["forget"]  # another batch order
    entry = summarize(rows)[2]
    assert entry["method_seeds"] == [0, 5] and entry["nomus_std"] is not None
    assert entry["nomus"] == pytest.approx((rows[2]["nomus"] + rows[3]["nomus"]) / 2)
    assert "seeds 0 (split, original and retrain) × method seeds 0, 5" in (
        output / "results.md").read_text()
    assert "--method-seeds 0 5" in " ".join(
        json.loads((output / "results.json").read_text())["environment"]["command"])


def test_a_failing_method_is_reported_and_the_others_still_run(runs: dict) -> None:
    broken = runs["root"] / "broken.yaml"
    broken.write_text(FAST_FINETUNE.replace("lr: 0.05", "lr: -1.0"))
    output = runs["root"] / "broken_out"
    kwargs = {**runs["kwargs"], "seeds": [0], "methods": [str(broken), "finetune"]}
    rows = compare(output=output, **kwargs)
    by_method = {r["method"]: r for r in rows}
    assert "lr must be positive" in by_method["broken"]["error"]
    assert "nomus" not in by_method["broken"]
    assert "error" not in by_method["finetune"] and "nomus" in by_method["finetune"]
    assert by_method["original"]["reused"]
    table = (output / "results.md").read_text()
    assert "| broken | failed |" in table and "**broken failed**" in table


def test_dlfd_fast_switches_on_the_quickstart_setting(tmp_path: Path) -> None:
    """The digits setting has fewer batches per epoch than dlfd_fast's check interval; the
    setting's override must let the dynamic forgetting strategy check and switch."""
    compare(setting="digits", methods=["dlfd_fast"], seeds=[0], workdir=tmp_path / "work",
            output=tmp_path / "out", reference_epochs=2, num_threads=1, references=0)
    (metrics,) = (tmp_path / "work").glob("seed0/dlfd_fast/**/metrics.csv")
    header, *rows = [line.split(",") for line in metrics.read_text().splitlines()]
    column = header.index("dynamic_forgetting/switch_step")
    assert [row[column] for row in rows if row[column]]  # it switched
