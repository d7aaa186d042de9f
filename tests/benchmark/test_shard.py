"""The comparison split into shards (``--shard I/N``) and assembled (``--reuse-runs``), on tiny
synthetic data: every unit is trained once across the shards, the assembling run trains nothing
and gives a single run's numbers, a changed method config runs again."""

from __future__ import annotations

import contextlib
import io
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import DATA_CONFIG, FAST_FINETUNE
from unlearn_pl.benchmark import AUDIT_NUMBERS, METRICS, CompareInputError, compare, main
from unlearn_pl.benchmark import cli as cli_module
from unlearn_pl.benchmark import runs as runs_module

SEEDS, METHOD_SEEDS, BANK = (0, 1), (0, 1), 2
# Every number but the times: those of reused units are the sharded runs' own.
EXACT = [k for k in (*METRICS, "mia_auc", "loss_forget", "loss_retain")
         if k not in ("fit_seconds", "time_ratio_to_retrain")]
# The unsharded run trains its bank as one ensemble, the shards member by member: the same
# networks to float tolerance (unlearn_pl.evaluation.bank), so the audit agrees to tolerance.
CLOSE = AUDIT_NUMBERS


@contextlib.contextmanager
def counting_fits(fits: list[str]) -> Iterator[None]:
    """Record the run folder of every fit (reference, bank member or method) the runner starts;
    bank members trained together as one ensemble count once each."""
    fit_and_test, train_bank = runs_module._fit_and_test, runs_module.train_bank

    def counted(cli: Any) -> dict[str, Any]:
        fits.append(str(Path(cli.trainer.default_root_dir)))
        return fit_and_test(cli)

    def counted_bank(*args: Any, checkpoints: list[Path], **kwargs: Any) -> Any:
        fits.extend(str(Path(c).parent) for c in checkpoints)
        return train_bank(*args, checkpoints=checkpoints, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs_module, "_fit_and_test", counted)
        patch.setattr(runs_module, "train_bank", counted_bank)
        yield


def cache_files(work: Path) -> dict[Path, int]:
    """Checkpoints and records of the cache, with their mtimes."""
    files = [*work.glob("seed*/*/*.ckpt"), *work.glob("seed*/bank/*/*.ckpt"),
             *work.glob("seed*/*/*.json"), *work.glob("seed*/bank/*/*.json")]
    return {path: path.stat().st_mtime_ns for path in files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One unsharded run in its own workdir; shards 0/2 (Python) and 1/2 (command line) in a
    shared workdir, one after the other; then the assembling --reuse-runs run."""
    root = tmp_path_factory.mktemp("shard")
    data, fast = root / "synthetic.yaml", root / "finetune_fast.yaml"
    data.write_text(DATA_CONFIG)
    fast.write_text(FAST_FINETUNE)
    kwargs: dict[str, Any] = dict(setting=str(data), methods=[str(fast)], seeds=list(SEEDS),
                                  method_seeds=list(METHOD_SEEDS), references=BANK,
                                  reference_epochs=2, num_threads=1)
    fits: dict[str, list[str]] = {name: [] for name in ("single", "shard0", "shard1",
                                                         "assemble")}
    with counting_fits(fits["single"]):
        single = compare(workdir=root / "single", output=root / "single_out", **kwargs)
    work = root / "work"
    with counting_fits(fits["shard0"]):
        shard0 = compare(workdir=work, output=root / "out", shard=(0, 2), **kwargs)
    after_shard0 = cache_files(work)
    printed = io.StringIO()
    with counting_fits(fits["shard1"]), contextlib.redirect_stdout(printed):
        main(["--setting", str(data), "--methods", str(fast), "--seeds", "0", "1",
              "--method-seeds", "0", "1", "--references", str(BANK), "--reference-epochs", "2",
              "--num-threads", "1", "--workdir", str(work), "--output", str(root / "out"),
              "--shard", "1/2"])
    after_shards = cache_files(work)
    sharded_output_written = (root / "out").exists()
    with counting_fits(fits["assemble"]):
        assembled = compare(workdir=work, output=root / "out", reuse_runs=True, **kwargs)
    return dict(root=root, work=work, fast=fast, kwargs=kwargs, fits=fits, single=single,
                shard0=shard0, printed=printed.getvalue(), after_shard0=after_shard0,
                after_shards=after_shards, assembled=assembled,
                sharded_output_written=sharded_output_written)


def expected_units(work: Path) -> list[str]:
    """The run folder of every unit, sorted."""
    folders = []
    for seed in SEEDS:
        here = work / f"seed{seed}"
        folders += [here / "original", here / "retrain",
                    *(here / "bank" / f"retrain{member}" for member in range(BANK)),
                    *(here / ("finetune_fast" if own == seed else f"finetune_fast-mseed{own}")
                      for own in METHOD_SEEDS)]
    return sorted(map(str, folders))


def test_shards_train_every_unit_exactly_once(runs: dict[str, Any]) -> None:
    fits = runs["fits"]
    units = expected_units(runs["work"])
    assert len(units) == 2 + 2 + 2 * BANK + 4 == 12
    # Across the two shards every unit's fit ran exactly once; an unsharded run does the same.
    assert sorted(fits["shard0"] + fits["shard1"]) == units
    assert sorted(fits["single"]) == expected_units(runs["root"] / "single")
    # Shard 0 has units 0, 2, 4, ...: seed 0's original (unit 0) but not seed 1's (unit 1);
    # its run of seed 1 (method seed 0, unit 10) needed seed 1's original and trained it, so
    # shard 1 found its own unit 1 cached.
    assert [row["unit_index"] for row in runs["shard0"]] == [0, 2, 4, 6, 8, 10]
    assert [row["unit"] for row in runs["shard0"]] == [
        "original seed 0", "retrain seed 0", "retrain bank 0 seed 0", "retrain bank 0 seed 1",
        "finetune_fast seed 0", "finetune_fast seed 1 method seed 0"]
    assert str(runs["work"] / "seed1" / "original") in fits["shard0"]
    assert "unit    1  reused   original seed 1" in runs["printed"]
    assert "unit   11  ran      finetune_fast seed 1" in runs["printed"]
    # What shard 0 wrote, shard 1 did not write again; a shard writes no results.
    for path, mtime in runs["after_shard0"].items():
        assert runs["after_shards"][path] == mtime, f"{path} was rewritten"
    assert len([p for p in runs["after_shards"] if p.suffix == ".ckpt"]) == 2 + 2 + 2 * BANK
    assert len([p for p in runs["after_shards"] if p.name == "record.json"]) == 4
    assert not runs["sharded_output_written"]
    assert not list(runs["work"].rglob("*.claim")) and not list(runs["work"].rglob("*.tmp"))


def test_the_assembling_run_trains_nothing_and_gives_a_single_runs_numbers(
        runs: dict[str, Any]) -> None:
    assert runs["fits"]["assemble"] == []
    assembled, single = runs["assembled"], runs["single"]
    assert all(row["reused"] for row in assembled)
    assert not any(row["reused"] for row in single)
    key = [(r["method"], r["seed"], r["method_seed"]) for r in assembled]
    assert key == [(r["method"], r["seed"], r["method_seed"]) for r in single]
    assert len(key) == 2 * 2 + 2 * 2  # original, retrain per seed; 2 method seeds per seed
    for mine, theirs in zip(assembled, single, strict=True):
        for number in EXACT:
            assert mine.get(number) == theirs.get(number), (mine["method"], number)
        for number in CLOSE:
            assert mine.get(number) == pytest.approx(theirs.get(number), rel=1e-4, abs=1e-6), (
                mine["method"], number)
        assert mine["losses"] == theirs["losses"] and mine["verdict"] == theirs["verdict"]
        assert mine["fit_seconds"] > 0 and "time_ratio_to_retrain" in mine
        assert {"acc_forget", "acc_retain_test", "mia", "nomus", "lira_auc", "outside_band",
                "distance_to_retrain"} <= set(mine)
    assert "distance_to_retrain" in assembled[-1]
    output = runs["root"] / "out"
    assert (output / "results.md").is_file() and (output / "loss_histograms.png").is_file()
    assert "--reuse-runs" in (output / "results.md").read_text()
    # The shards' files are still the cache's: assembling rewrote none of them.
    assert cache_files(runs["work"]) == runs["after_shards"]


def test_reuse_runs_runs_a_changed_method_again(runs: dict[str, Any]) -> None:
    # A shard started again (a requeued task) with --reuse-runs redoes nothing.
    fits: list[str] = []
    with counting_fits(fits):
        again = compare(workdir=runs["work"], output=runs["root"] / "out", shard=(0, 2),
                        reuse_runs=True, **runs["kwargs"])
    assert fits == [] and len(again) == 6 and all(row["reused"] for row in again)
    kwargs = {**runs["kwargs"], "seeds": [0], "method_seeds": None, "references": 0}
    # The same config at another path has the same fingerprint: reused.
    moved = runs["root"] / "moved" / "finetune_fast.yaml"
    moved.parent.mkdir()
    shutil.copy(runs["fast"], moved)
    with counting_fits(fits):
        rows = compare(workdir=runs["work"], output=runs["root"] / "moved_out",
                       reuse_runs=True, **{**kwargs, "methods": [str(moved)]})
    assert fits == [] and rows[-1]["reused"]
    # Another learning rate: the record's fingerprint no longer matches, the method runs again.
    changed = runs["root"] / "changed" / "finetune_fast.yaml"
    changed.parent.mkdir()
    changed.write_text(FAST_FINETUNE.replace("lr: 0.05", "lr: 0.02"))
    with counting_fits(fits):
        rows = compare(workdir=runs["work"], output=runs["root"] / "changed_out",
                       reuse_runs=True, **{**kwargs, "methods": [str(changed)]})
    assert fits == [str(runs["work"] / "seed0" / "finetune_fast")]
    assert not rows[-1]["reused"] and rows[0]["reused"]  # the original is still the cached one
    assert rows[-1]["losses"] != runs["single"][4]["losses"]


@pytest.mark.parametrize("shard", [(2, 2), (0, 0), (-1, 2), (3, 2), "2/2", "0/0", "1/2/3", "a/2",
                                   "-1/2", "1", "", (0,), (0.0, 2)])
def test_bad_shards_are_refused_before_any_work(shard: Any, tmp_path: Path) -> None:
    with pytest.raises(CompareInputError, match="shard"):
        compare("digits", ["finetune"], [0], tmp_path / "work", shard=shard)
    assert not (tmp_path / "work").exists()


def test_a_bad_shard_on_the_command_line_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("2/2", "0/0", "one/two"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--setting", "digits", "--methods", "finetune", "--workdir",
                  str(tmp_path / "work"), "--shard", value])
        assert exit_info.value.code == 2
        assert "--shard" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    assert "--reuse-runs" in cli_module._parser().format_help()


def test_a_shard_waits_on_a_live_claim_and_not_on_a_dead_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(runs_module, "_CLAIM_POLL_S", 0.02)
    monkeypatch.setattr(runs_module, "_CLAIM_STALE_S", 0.6)
    monkeypatch.setattr(runs_module, "_CLAIM_BEAT_S", 0.05)
    ctx: Any = SimpleNamespace(setting="t", shard=(0, 2))
    claim = tmp_path / ".original-abc.ckpt.claim"
    runs_module._wait_for_claim(ctx, claim, "nothing claimed")  # returns at once
    # A live claim: held (and touched) by a training "shard" for 0.9 s, longer than the
    # staleness limit, so only its heartbeat keeps the waiter waiting.
    def train() -> None:
        with runs_module._claim(ctx, claim, True):
            time.sleep(0.9)

    holder = threading.Thread(target=train)
    holder.start()
    while not claim.exists():
        time.sleep(0.01)
    start = time.monotonic()
    runs_module._wait_for_claim(ctx, claim, "seed 0 original")
    assert time.monotonic() - start > 0.6
    holder.join()
    assert not claim.exists()
    assert "waiting for the shard training it (shard 0/2 on" in capsys.readouterr().err
    # A dead shard's claim (never touched again) is given up after the staleness limit.
    claim.write_text("{}")
    start = time.monotonic()
    runs_module._wait_for_claim(ctx, claim, "seed 0 original")
    assert 0.6 <= time.monotonic() - start < 5
    assert "training it here" in capsys.readouterr().err
