"""unlearn-pl-tune: search spaces, the probe distance it minimises, and a whole study on tiny data
that never tests a trial and writes a config the CLI runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightning.pytorch import Trainer

from tests.conftest import DATA_CONFIG
from unlearn_pl.benchmark import CompareInputError
from unlearn_pl.benchmark.settings import CONFIGS
from unlearn_pl.benchmark.tune import (
    Dimension,
    _shipped_values,
    load_search_space,
    main,
    probe_distance,
    tune,
)
from unlearn_pl.cli import run_cli
from unlearn_pl.methods import FineTune


def test_dimensions_from_their_yaml_entries() -> None:
    lr = Dimension.from_spec("lr", {"low": 1e-4, "high": 0.1, "log": True})
    assert (lr.key, lr.low, lr.high, lr.log) == ("model.init_args.lr", 1e-4, 0.1, True)
    epochs = Dimension.from_spec("trainer.max_epochs", {"low": 1, "high": 5})
    assert epochs.key == "trainer.max_epochs" and isinstance(epochs.low, int)
    assert Dimension.from_spec("mix", {"choices": ["union", "max"]}).choices == ("union", "max")
    for bad, message in (({"low": 1}, "low and high"), ({"low": 2, "high": 1}, "low < high"),
                         ({"low": 0.0, "high": 1.0, "log": True}, "low > 0"),
                         ({"choices": []}, "empty")):
        with pytest.raises(ValueError, match=message):
            Dimension.from_spec("lr", bad)


def test_every_search_space_names_arguments_of_its_method() -> None:
    from unlearn_pl.benchmark import CONFIGS
    for path in sorted((CONFIGS / "search").glob("*.yaml")):
        space = load_search_space(path.stem)
        config = yaml.safe_load((CONFIGS / "methods" / path.stem).with_suffix(".yaml")
                                .read_text())
        module, name = config["model"]["class_path"].rsplit(".", 1)
        cls = getattr(__import__(module, fromlist=[name]), name)
        import inspect
        arguments = {p for c in cls.__mro__ if "__init__" in vars(c)
                     for p in inspect.signature(c.__init__).parameters}
        for dimension in space:
            if dimension.key.startswith("model.init_args."):
                assert dimension.key.removeprefix("model.init_args.") in arguments, \
                    (path.stem, dimension.key)


def _record(forget: float, retain: float, heldout: float, signal: list[float]) -> dict[str, Any]:
    return {"acc_forget": forget, "acc_retain": retain, "acc_unseen": heldout,
            "heldout_split": "unseen",
            "signals": {"forget": {"ids": list(range(len(signal))), "signal": signal}}}


def test_probe_distance_is_the_mean_of_the_gaps_and_the_excess_outside_the_band() -> None:
    retrain = _record(0.1, 0.9, 0.8, [0.0] * 4)
    trial = _record(0.5, 0.8, 0.8, [9.0, 9.0, 0.0, 0.0])  # half of the examples far outside
    bank = [_record(0, 0, 0, [v] * 4) for v in (-1.0, 1.0, -1.0, 1.0)]
    distance, parts = probe_distance(trial, retrain)
    assert distance == pytest.approx((0.4 + 0.1 + 0.0 + 0.0) / 4)
    distance, parts = probe_distance(trial, retrain, bank)
    assert parts["outside"] == 0.5 and parts["floor_outside"] == 0.0
    assert distance == pytest.approx((0.4 + 0.1 + 0.0 + 0.5) / 4)
    # A trial probing a subset of the references' forget samples is read at its own ids.
    subset = _record(0.5, 0.8, 0.8, [9.0, 0.0])
    subset["signals"]["forget"]["ids"] = [1, 3]
    assert probe_distance(subset, retrain, bank)[1]["outside"] == 0.5
    minimal = {k: v for k, v in trial.items() if k != "acc_retain"}  # probe without D_r
    assert probe_distance(minimal, retrain)[0] == pytest.approx((0.4 + 0.0) / 3)
    other = _record(0, 0, 0, [0.0] * 4)
    other["signals"]["forget"]["ids"] = [7, 8, 9, 10]
    with pytest.raises(ValueError, match="other forget samples"):
        probe_distance(trial, retrain, [*bank[:1], other])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 4-trial study of FineTune on tiny data, recording which modules were ever tested."""
    root = tmp_path_factory.mktemp("tune")
    data = root / "synthetic.yaml"
    data.write_text(DATA_CONFIG)
    tested: list[str] = []
    original_test = Trainer.test

    def spy(self: Trainer, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        tested.append(type(model).__name__)
        return original_test(self, model, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "test", spy)
        result = tune(str(data), "finetune", trials=4, split_seed=0, references=2,
                      workdir=root / "work", output=root / "tuned.yaml",
                      record=root / "study.json", num_threads=1)
    return dict(root=root, data=data, result=result, tested=tested)


def test_a_study_writes_its_best_trial_as_a_config_the_cli_runs(
        study: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    root, result = study["root"], study["result"]
    assert len(result["trials"]) == 4
    best = result["best"]
    completed = [t for t in result["trials"] if t["state"] == "COMPLETE"]
    assert best["value"] == min(t["value"] for t in completed)
    text = (root / "tuned.yaml").read_text()
    assert "unlearn-pl-tune" in text.splitlines()[0] and "split seed 0" in text
    assert f"{best['value']:.4f}" in text
    assert json.loads((root / "study.json").read_text())["best"]["params"] == best["params"]
    monkeypatch.setattr("sys.argv", ["unlearn-pl"])
    cli = run_cli(["--config", str(study["data"]), "--config", str(root / "tuned.yaml")],
                  run=False)
    assert isinstance(cli.model, FineTune)
    assert cli.model.hparams.lr == pytest.approx(best["params"]["model.init_args.lr"])
    assert cli.trainer.max_epochs == best["params"]["trainer.max_epochs"]


def test_the_first_trial_is_the_shipped_config(study: dict[str, Any]) -> None:
    shipped = yaml.safe_load((CONFIGS / "methods" / "finetune.yaml").read_text())
    first = study["result"]["trials"][0]
    assert first["shipped"] is True
    assert first["params"] == {"model.init_args.lr": shipped["model"]["init_args"]["lr"],
                               "trainer.max_epochs": shipped["trainer"]["max_epochs"]}
    assert not any(t.get("shipped") for t in study["result"]["trials"][1:])


def test_shipped_values_only_where_the_dimension_can_draw_them() -> None:
    space = [Dimension("model.init_args.lr", 1e-3, 0.1, log=True),
             Dimension("trainer.max_epochs", choices=(-1,)),
             Dimension("model.init_args.alpha", 0.8, 0.999),
             Dimension("trainer.max_steps", 50, 400)]
    config = {"model": {"init_args": {"lr": 0.05, "alpha": 0.5}},
              "trainer": {"max_epochs": 1, "max_steps": 200}}
    assert _shipped_values(config, space) == {"model.init_args.lr": 0.05,
                                              "trainer.max_steps": 200}


def test_no_trial_is_ever_tested(study: dict[str, Any]) -> None:
    # Only the cached references are tested (for the comparison runner's records); the trials'
    # objective comes from the validation probe.
    assert study["tested"] and "FineTune" not in study["tested"]
    parts = study["result"]["best"]["parts"]
    assert set(parts) == {"gap_forget", "gap_retain", "gap_retain_test", "outside",
                          "floor_outside"}


def test_bad_input_is_refused_before_any_training(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "synthetic.yaml"
    data.write_text(DATA_CONFIG)
    work = tmp_path / "work"
    for kwargs, message in (({"method": "original"}, "not an unlearning method"),
                            ({"method": "boundary_shrink_fast"}, "no search space"),
                            ({"method": "finetune", "trials": 0}, "at least one trial"),
                            ({"method": "finetune", "references": 1}, "at least 2")):
        with pytest.raises(CompareInputError, match=message):
            tune(str(data), workdir=work, **kwargs)  # type: ignore[arg-type]
    assert not work.exists()
    with pytest.raises(SystemExit) as exit_:
        main(["--setting", str(data), "--method", "nope", "--workdir", str(work)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("unlearn-pl-tune: error: unknown method")


def test_the_runner_runs_tuned_recipes_by_default_and_the_papers_on_request(
        study: dict[str, Any], tmp_path: Path) -> None:
    from unlearn_pl.benchmark import CONFIGS, compare
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    (configs / "tuned" / "synthetic").mkdir(parents=True, exist_ok=True)
    shutil.copy(study["root"] / "tuned.yaml", configs / "tuned" / "synthetic" / "finetune.yaml")
    tuned_lr = study["result"]["best"]["params"]["model.init_args.lr"]
    for recipes, lr in (("tuned", tuned_lr), ("paper", 0.01)):
        work = tmp_path / recipes
        rows = compare(str(study["data"]), ["finetune"], [0], workdir=study["root"] / "work",
                       output=work, references=0, configs_dir=configs, recipes=recipes,
                       num_threads=1, reuse_runs=False)
        row = next(r for r in rows if r["method"] == "finetune")
        # Compared on the split it was tuned on: marked as such, here and in results.md.
        assert row["recipe"] == ("tuned on this split" if recipes == "tuned" else "paper")
        assert ("ran on the split its recipe was tuned on" in (work / "results.md").read_text()
                ) == (recipes == "tuned")
        record = json.loads((study["root"] / "work" / "seed0" / "finetune" / "record.json")
                            .read_text())
        assert record["config"]["model"]["init_args"]["lr"] == pytest.approx(lr)
        assert ("Recipes: tuned" in (work / "results.md").read_text()) == (recipes == "tuned")


def test_trials_refused_for_the_network_are_recorded_and_the_study_goes_on(
        study: dict[str, Any], tmp_path: Path) -> None:
    from unlearn_pl.benchmark import CONFIGS
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    (configs / "search" / "cf_k.yaml").write_text(
        "k: {choices: [2, 99]}\ntrainer.max_epochs: {low: 1, high: 3}\n")
    record = tmp_path / "cf_k.json"
    result = tune(str(study["data"]), "cf_k", trials=6, references=0,
                  workdir=study["root"] / "work", output=tmp_path / "cf_k.yaml", record=record,
                  configs_dir=configs, num_threads=1, prune=False,
                  overrides=["--trainer.max_epochs=1"])  # fixed by the caller: not searched
    states = {t["params"]["model.init_args.k"]: t["state"] for t in result["trials"]}
    assert states == {2: "COMPLETE", 99: "FAIL"}
    failed = next(t for t in result["trials"] if t["state"] == "FAIL")
    assert "k must be between 1 and" in failed["error"]
    assert result["best"]["params"] == {"model.init_args.k": 2}
    (configs / "search" / "cf_k.yaml").write_text("k: {choices: [99]}\n")
    with pytest.raises(RuntimeError, match="no trial of cf_k completed"):
        tune(str(study["data"]), "cf_k", trials=2, references=0,
             workdir=study["root"] / "work", output=tmp_path / "none.yaml", record=record,
             configs_dir=configs, num_threads=1)
    assert json.loads(record.read_text())["best"] is None
    assert not (tmp_path / "none.yaml").exists()
