"""Issue 14, "bad input found while trying it": each case fails before any work with a message
naming the problem and the fix, and augmented runs resume bit-exactly."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from tests.conftest import make_datamodule, make_trainer, model_kwargs
from unlearn_pl.data import ImageFolderDataModule, SyntheticDataModule, read_image_folders
from unlearn_pl.data.datamodule import EpochShuffleSampler
from unlearn_pl.data.requests import read_id_file
from unlearn_pl.methods import NegGradPlus, Train
from unlearn_pl.networks import build_network, check_network_file, load_network_weights

VALID = "Lightning checkpoint written by an unlearn_pl run"


# ------------------------------------------------------------------ 1. unreadable original
def _bad_originals(folder: Path) -> dict[str, Path]:
    good = folder / "good.pt"
    torch.save(build_network("tiny_cnn", 4).state_dict(), good)
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) // 2], "text": b"epoch,loss\n0,1.5\n",
             "random": os.urandom(4096), "random_pickle": b"\x80\x02" + os.urandom(4096),
             "empty": b""}
    paths = {}
    for name, content in cases.items():
        paths[name] = folder / f"{name}.ckpt"
        paths[name].write_bytes(content)
    torch.save({"weights": [1, 2]}, folder / "not_tensors.pt")
    paths["not_tensors"] = folder / "not_tensors.pt"
    return paths


@pytest.mark.parametrize("case", ["truncated", "text", "random", "random_pickle", "empty",
                                  "not_tensors"])
def test_unreadable_original_names_the_file_and_a_valid_one(tmp_path: Path, case: str) -> None:
    path = _bad_originals(tmp_path)[case]
    with pytest.raises(ValueError) as error:
        load_network_weights(build_network("tiny_cnn", 4), path)
    message = str(error.value)
    assert str(path) in message and VALID in message and "export_network" in message
    assert "weights_only" not in message  # never advise the unsafe weights_only=False


def test_cheap_check_refuses_non_torch_files_before_reading_them(tmp_path: Path) -> None:
    paths = _bad_originals(tmp_path)
    for case in ("text", "random", "empty"):
        with pytest.raises(ValueError, match=f"{case}.ckpt .*{VALID}"):
            check_network_file(paths[case])
    assert check_network_file(tmp_path / "good.pt") == tmp_path / "good.pt"


def test_directory_as_original_is_named_as_a_directory(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(build_network("tiny_cnn", 4).state_dict(), tmp_path / "run" / "checkpoints" /
               "last.ckpt")
    with pytest.raises(IsADirectoryError, match=r"is a directory.*holds .*last\.ckpt.*"
                                                  f"{VALID}"):
        load_network_weights(build_network("tiny_cnn", 4), tmp_path / "run")


@pytest.mark.parametrize("case", ["truncated", "text", "directory"])
def test_bad_original_fails_before_training(tmp_path: Path, case: str) -> None:
    if case == "directory":
        path = tmp_path / "run"
        path.mkdir()
    else:
        path = _bad_originals(tmp_path)[case]
    datamodule = make_datamodule(forget_fraction=0.25)
    trainer = make_trainer(tmp_path / "out", enable_checkpointing=False)
    with pytest.raises((ValueError, IsADirectoryError), match=f"{path.name}.* {VALID}"):
        module = NegGradPlus(original=str(path), **model_kwargs(datamodule))
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 0


# ------------------------------------------------------- 2. too few samples for the attack
@pytest.mark.parametrize("kwargs, fix", [
    ({"forget_count": 1}, "forget_count: 2"),
    ({"forget_count": 8, "eval_max_samples": 1}, "eval_max_samples to at least 2"),
])
def test_attack_with_too_few_samples_fails_at_setup(tmp_path: Path, kwargs: dict,
                                                   fix: str) -> None:
    datamodule = make_datamodule(**kwargs)
    datamodule.setup("fit")  # on its own (inspecting splits) a datamodule attacks nothing
    datamodule.trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match=f"needs at least 2 of each.*{fix}"):
        datamodule.setup("fit")


def test_too_few_non_members_name_the_held_out_split(tmp_path: Path) -> None:
    datamodule = SyntheticDataModule(num_samples=64, num_test=1, forget_count=8)
    datamodule.trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match=r"and [01] unseen sample\(s\) \(non-members\).*: give "
                                         "the .*split more"):
        datamodule.setup("fit")


def test_too_few_forget_samples_fail_before_the_first_epoch(tmp_path: Path) -> None:
    datamodule = make_datamodule(forget_count=1)
    module = Train(train_on="retain", **model_kwargs(datamodule))
    trainer = make_trainer(tmp_path, enable_checkpointing=False)
    with pytest.raises(ValueError, match="1 forget sample"):
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 0


def test_probe_bound_is_only_checked_when_validation_runs(tmp_path: Path) -> None:
    datamodule = make_datamodule(forget_count=8, eval_max_samples=1)
    datamodule.trainer = make_trainer(tmp_path, limit_val_batches=0)
    datamodule.setup("fit")  # no validation probe: nothing to refuse
    datamodule.setup("test")  # the test uses every sample


def test_small_sample_warnings_match_the_attack() -> None:
    datamodule = make_datamodule(forget_count=4)
    datamodule.setup("fit")
    test = datamodule.small_sample_warnings()
    assert len(test) == 1 and test[0].startswith("test: ")
    assert "4 members and 4 non-members" in test[0] and "test_size=0.1" in test[0]
    both = datamodule.small_sample_warnings(stage="fit")
    assert [w.split(":")[0] for w in both] == ["test", "validation probe"]
    assert datamodule.small_sample_warnings(test_size=0.5) == []  # 2 per fold: honoured
    assert make_datamodule(forget_count=40).small_sample_warnings() == []
    # The attack itself warns with the same text.
    from unlearn_pl.metrics import membership_inference_attack
    with pytest.warns(UserWarning) as caught:
        membership_inference_attack(torch.rand(8), torch.arange(8) % 2)
    assert str(caught[0].message) in test[0]


# ---------------------------------------------------------------- 3. non-integer sample ids
@pytest.mark.parametrize("content, value", [
    ("[0, 4.9, 5]", "4.9"),
    ("[0, true, 5]", "true"),
    ("[0, 5.0]", "5.0"),
    ('[0, "5"]', '"5"'),
    ("[0, [5]]", "[5]"),
    ("0\n4.9\n5\n", "'4.9'"),
    ("0\n1e3\n", "'1e3'"),
    ("0, 0x10", "'0x10'"),
])
def test_non_integer_ids_are_refused(tmp_path: Path, content: str, value: str) -> None:
    path = tmp_path / "ids.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"{path}.* holds {re.escape(value)}, which is not an "
                                         "integer sample id"):
        read_id_file(path)
    with pytest.raises(ValueError, match="not an integer sample id"):  # at construction
        make_datamodule(forget_ids=str(path))


@pytest.mark.parametrize("content, message", [("", "holds no sample id"),
                                              ("[0, 1", "not valid JSON")])
def test_empty_or_broken_id_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_id_file(path)


def test_integer_ids_in_every_format(tmp_path: Path) -> None:
    for content in ("[5, 9, 100]", "5\n9\n100\n", "5, 9, +100", " 5 9\n100 "):
        path = tmp_path / "ids.txt"
        path.write_text(content)
        assert read_id_file(path) == [5, 9, 100]


# ------------------------------------------------------ 4. classes only in held-out folders
def _folders(root: Path, layout: dict[str, tuple[str, ...]]) -> None:
    for split, labels in layout.items():
        for label in labels:
            (root / split / label).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / split / label / f"{i}.png")


@pytest.mark.parametrize("split", ["test", "validation"])
def test_class_only_in_a_held_out_folder_is_refused(tmp_path: Path, split: str) -> None:
    layout = {"train": ("cat", "dog"), "test": ("cat", "dog"), "validation": ("cat", "dog")}
    layout[split] = ("bird", "cat", "dog")
    _folders(tmp_path, layout)
    dm = ImageFolderDataModule(root=str(tmp_path), val_split="validation", forget_classes=[1])
    with pytest.raises(ValueError, match=rf"\['{split}/bird'\].*only in '{split}'.*Remove or "
                                         "rename"):
        _ = dm.data


def test_class_missing_from_a_held_out_folder_is_fine(tmp_path: Path) -> None:
    _folders(tmp_path, {"train": ("bird", "cat", "dog"), "test": ("cat", "dog")})
    read = read_image_folders(tmp_path, ("train", "test"))
    assert read["test"][2] == ["bird", "cat", "dog"]
    assert read["test"][1].tolist() == [1] * 3 + [2] * 3


# ------------------------------------------------------ 5. augmentation resumes bit-exactly
class _StopAfter(Callback):
    """Stops a run after ``epochs`` epochs, as a killed job would (its last.ckpt survives)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def _augmented_run(tmp_path: Path, method: str, folder: str, stop_after: int | None = None,
                   ckpt_path: str | None = None, **data: Any) -> dict[str, torch.Tensor]:
    seed_everything(0)  # a fresh process: the global RNG starts over after a kill
    datamodule = make_datamodule(**{"augment": True, **data})
    kwargs = model_kwargs(datamodule)
    if method == "train":
        module: LightningModule = Train(train_on="full", **kwargs)
    else:  # retain + a cycled forget loader
        original = tmp_path / "original.pt"
        if not original.exists():
            torch.save(Train(**kwargs).network.state_dict(), original)
        module = NegGradPlus(original=str(original), alpha=0.9, **kwargs)
    callbacks: list[Callback] = [ModelCheckpoint(dirpath=tmp_path / folder, save_last=True)]
    if stop_after is not None:
        callbacks.append(_StopAfter(stop_after))
    trainer = make_trainer(tmp_path, max_epochs=3, limit_train_batches=3, limit_val_batches=0,
                           callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return {k: v.detach().clone() for k, v in module.network.state_dict().items()}


CYCLED = {"forget_count": 8, "forget_batch_size": 4}  # the forget loader cycles in an epoch


@pytest.mark.parametrize("method, data", [
    ("train", {"forget_classes": [1]}),
    ("neggrad_plus", CYCLED),
    # Worker processes prefetch the first batches when the loader is built: for Train's
    # per-step schedule that is before Lightning restores its loops and calls set_epoch.
    ("train", {"forget_classes": [1], "num_workers": 1}),
    ("train", {"forget_classes": [1], "num_workers": 1, "augment": False}),
    ("neggrad_plus", {**CYCLED, "num_workers": 1}),
])
def test_augmented_run_resumes_bit_exactly(tmp_path: Path, method: str, data: dict) -> None:
    straight = _augmented_run(tmp_path, method, "straight", **data)
    _augmented_run(tmp_path, method, "first", stop_after=1, **data)
    resumed = _augmented_run(tmp_path, method, "second",
                             ckpt_path=str(tmp_path / "first" / "last.ckpt"), **data)
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


def test_augmentation_is_a_function_of_seed_epoch_draw_and_sample() -> None:
    datamodule = make_datamodule(forget_fraction=0.25, augment=True)
    dataset = datamodule.dataset("retain", train=True)
    assert dataset.seed == datamodule.shuffle_seed

    def image(position: int, epoch: int, draw: int = 0) -> torch.Tensor:
        return dataset[(position, epoch, draw)][0]

    torch.manual_seed(1)
    first = image(3, epoch=2)
    before = torch.get_rng_state()
    torch.manual_seed(2)  # another global RNG state: the same augmentation
    assert torch.equal(image(3, epoch=2), first)
    torch.manual_seed(1)
    image(3, epoch=2)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left as it was
    images = torch.stack([image(p, epoch=2) for p in range(16)])
    assert not torch.equal(torch.stack([image(p, epoch=3) for p in range(16)]), images)
    assert not torch.equal(torch.stack([image(p, epoch=2, draw=1) for p in range(16)]), images)


def test_sampler_counts_draws_within_an_epoch() -> None:
    sampler = EpochShuffleSampler(6, seed=1, epoch=2, tag_epoch=True)
    first, second = list(sampler), list(sampler)  # a short loader cycled within epoch 2
    assert [i for i, _, _ in first] == [i for i, _, _ in second]  # the epoch's order
    assert {(e, d) for _, e, d in first} == {(2, 0)} and {(e, d) for _, e, d in second} == {(2, 1)}
    sampler.set_epoch(2)  # Lightning's call after workers prefetched the first draw
    assert {d for _, _, d in sampler} == {2}
    sampler.set_epoch(3)
    assert {(e, d) for _, e, d in sampler} == {(3, 0)}
    plain = EpochShuffleSampler(6, seed=1, shuffle=False, tag_epoch=True)
    assert [i for i, _, _ in plain] == list(range(6))


def test_augmented_batches_are_the_same_under_ddp_sharding_and_workers() -> None:
    """Each sample gets the augmentation of a single process whatever rank (Lightning's
    DistributedSamplerWrapper around the sampler) or loader worker draws it."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from torch.utils.data import DataLoader

    datamodule = make_datamodule(forget_fraction=0.25, augment=True, batch_size=8)
    loader = datamodule.dataloader("retain", train=True)
    loader.sampler.set_epoch(1)  # type: ignore[attr-defined]
    single = {int(i): x for xs, _, ids in loader for x, i in zip(xs, ids, strict=True)}
    sharded: dict[int, torch.Tensor] = {}
    for rank in (0, 1):  # each rank's process builds its own loader
        sampler = datamodule.dataloader("retain", train=True).sampler
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=False)
        wrapper.set_epoch(1)  # forwarded to the EpochShuffleSampler
        workers = DataLoader(loader.dataset, batch_size=8, sampler=wrapper, num_workers=rank)
        for xs, _, ids in workers:
            sharded.update({int(i): x for x, i in zip(xs, ids, strict=True)})
    assert sharded.keys() == single.keys()
    for sample, x in single.items():
        assert torch.equal(sharded[sample], x), sample
