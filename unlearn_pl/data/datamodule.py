"""The unlearning datamodule: the dataset, the forget request, and every split."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from unlearn_pl.data.core import ImageData, ImageTensorDataset, LazyImages, Task
from unlearn_pl.data.requests import (
    FLAT_KEYS,
    FollowUp,
    ForgetRequest,
    build_request,
    read_requests,
    request_from_flat,
)
from unlearn_pl.data.splits import (  # noqa: F401  (re-exported: their home until 0.2)
    HELD_OUT_SPLITS,
    MIN_ATTACK_SAMPLES,
    POPULATION_SPLIT,
    TRAIN_SPLITS,
    VALIDATION_PREFIX,
    EpochShuffleSampler,
    _convert_channels,
    _generator,
    _processed_epochs,
    make_splits,
)
from unlearn_pl.utils import atomic_write_text

#: Images a streamed dataset's normalisation statistics are estimated from.
STATISTICS_SAMPLE = 2048


class UnlearningDataModule(LightningDataModule):
    """Owns a dataset, the forget request and every split, and builds the loaders a method needs.

    Splits (``eval_splits`` lists those of a run):
        ``train`` (everything trained on: retain + forget), ``retain``, ``forget``, ``unseen``
        (held-out data never trained on: the official test split, or ``unseen_fraction`` of train
        carved off with ``seed``), and for class-wise or group-wise requests ``retain_test`` /
        ``forget_test`` (the held-out samples of the remaining vs forgotten classes or groups).
        The validation probe (every ``val/`` metric, so every decision made while training)
        evaluates ``validation/unseen`` (and ``validation/*_test``) instead: the dataset's own
        validation split, or ``val_fraction`` of the held-out data carved off and removed from
        the test splits. No test sample ever reaches a ``val/`` metric.

    One forget request, ``forget``: a :class:`~unlearn_pl.data.ForgetClasses`,
    :class:`~unlearn_pl.data.ForgetFraction`, :class:`~unlearn_pl.data.ForgetCount`,
    :class:`~unlearn_pl.data.ForgetIds` (a deletion-request file of training sample ids),
    :class:`~unlearn_pl.data.ForgetGroups` or :class:`~unlearn_pl.data.ForgetFirst`. The flat
    ``forget_*`` arguments of 0.1 still work, with a ``DeprecationWarning``, until 0.3.
    Split ids are written to ``splits.json`` in the run's log folder so a user can audit what was
    forgotten. Subclasses implement :meth:`load`.

    Args:
        batch_size: training batch size (retain, or the only training split).
        eval_batch_size: batch size of evaluation loaders.
        forget_batch_size: batch size of the forget loader when a method trains on retain and
            forget together; default ``batch_size``.
        num_workers: loader worker processes.
        forget: the forget request (:mod:`unlearn_pl.data.requests`).
        forget_classes: deprecated, ``ForgetClasses(classes)``.
        forget_fraction: deprecated, ``ForgetFraction(fraction)``.
        forget_count: deprecated, ``ForgetCount(count)``.
        forget_first: deprecated, ``ForgetFirst(count)``.
        forget_ids: deprecated, ``ForgetIds(path)``.
        forget_groups: deprecated, ``ForgetGroups(groups)``.
        seed: seed of every random choice of the splits, and of the training batch order
            unless ``shuffle_seed`` is given.
        shuffle_seed: seed of the training batch order; default ``seed``. Another value repeats
            a run on the same split in another order (``unlearn-pl-compare --method-seeds``).
        unseen_fraction: share of train carved off as unseen data when the dataset has no
            official held-out split.
        val_fraction: share of the held-out data carved off (seeded, stratified by class, or by
            group for ``forget_groups``) as the validation split when the dataset has none of
            its own (``ImageData.val_images``: FER2013's PublicTest); the test splits keep the
            rest.
        eval_max_samples: per-split bound of the validation probe (seeded subset), which keeps
            mid-training checks cheap; ``None`` evaluates full splits. Test always uses full splits.
        probe_splits: the splits of the validation probe: ``all`` (every evaluation split) or
            ``minimal``, only those the forgetting score and NoMUS need (``forget``, the attack's
            non-member split and the held-out accuracy's split). Minimal drops ``retain``
            (sample-wise) or ``retain`` and ``unseen`` (class-wise): cheaper online monitoring
            (DLFD's dynamic forgetting), no ``val/acc_retain``. Test always uses every split.
        augment: augment training loaders (evaluation never is). Each sample's augmentation
            is a function of ``shuffle_seed``, the epoch, the pass over the loader and the
            sample id only (:class:`EpochShuffleSampler`), so a resumed run is bit-exact, with
            any number of workers and under DDP.
        num_channels: convert images to 1 or 3 channels (grayscale faces for ImageNet networks).
        image_size: resize images once at load time.
        normalization: per-channel ``[mean, std]`` the network normalises with (e.g.
            ImageNet's for a network trained with it); default: the training images'
            statistics.
        previous_requests: the ``splits.json`` of the run that unlearned the earlier
            request(s), for a request made after them (the method's ``original`` is then that
            run's checkpoint): the samples they forgot stay forgotten
            (:class:`~unlearn_pl.data.requests.FollowUp`), and this run's ``splits.json`` lists
            every request in order (``requests``: ids, time, the checkpoint it produced).
    """

    #: Arguments of a subclass kept out of the hyperparameters (objects such as a Dataset:
    #: checkpoints hold plain values only); the subclass records a plain form of them.
    not_hyperparameters: ClassVar[tuple[str, ...]] = ()

    if TYPE_CHECKING:  # Lightning types it as a MutableMapping; it is an attribute dict.
        @property
        def hparams(self) -> Any: ...

    def __init__(self, *, forget: ForgetRequest | None = None, batch_size: int = 128,
                 eval_batch_size: int = 512,
                 forget_batch_size: int | None = None, num_workers: int = 0,
                 forget_classes: list[int] | None = None, forget_fraction: float | None = None,
                 forget_count: int | None = None, forget_ids: str | None = None,
                 forget_groups: list[int] | None = None, forget_first: int | None = None,
                 seed: int = 0, shuffle_seed: int | None = None,
                 unseen_fraction: float = 0.2, val_fraction: float = 0.2,
                 eval_max_samples: int | None = None,
                 probe_splits: Literal["all", "minimal"] = "all",
                 augment: bool = True, num_channels: Literal[1, 3] | None = None,
                 image_size: int | None = None,
                 normalization: list[list[float]] | None = None,
                 previous_requests: str | None = None) -> None:
        super().__init__()
        flat = {"forget_classes": forget_classes, "forget_fraction": forget_fraction,
                "forget_count": forget_count, "forget_ids": forget_ids,
                "forget_groups": forget_groups, "forget_first": forget_first}
        given = [name for name, value in flat.items() if value is not None]
        if (forget is None) == (not given) or len(given) > 1:
            raise ValueError("give exactly one forget request, as forget: {class_path: "
                             "unlearn_pl.data.ForgetClasses, init_args: {classes: [3]}} (or "
                             "ForgetFraction, ForgetCount, ForgetIds, ForgetGroups, ForgetFirst); "
                             f"got {(['forget'] if forget is not None else []) + given or 'none'}")
        if forget is not None:
            forget = build_request(forget)  # also its YAML form, read by a script
        else:
            forget = request_from_flat(given[0], flat[given[0]])  # validates it
            warnings.warn(f"the flat forget request {given[0]}: is deprecated and will be "
                          "removed in 0.3; give it as forget: {class_path: unlearn_pl.data."
                          f"{type(forget).__name__}, init_args: ...}}", DeprecationWarning,
                          stacklevel=2)
        self.forget_request = forget
        self._follow_up: FollowUp | None = None
        if previous_requests is not None:
            earlier, record = read_requests(previous_requests)
            if record.get("datamodule") != type(self).__name__ or \
                    record.get("hparams", {}).get("seed") != seed:
                raise ValueError(f"{previous_requests} is a {record.get('datamodule')} run with "
                                 f"seed {record.get('hparams', {}).get('seed')}, this one a "
                                 f"{type(self).__name__} with seed {seed}: a follow-up request "
                                 "needs the earlier run's data config (its config.yaml)")
            self._follow_up = FollowUp(forget, earlier, record["splits"]["train"])
        self._request: dict[str, str | None] = {"time": None, "checkpoint": None}
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                            ("forget_batch_size", forget_batch_size),
                            ("eval_max_samples", eval_max_samples),
                            ("image_size", image_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if probe_splits not in ("all", "minimal"):
            raise ValueError(f"probe_splits must be 'all' or 'minimal', got {probe_splits!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0 < unseen_fraction < 1:
            raise ValueError(f"unseen_fraction must lie in (0, 1), got {unseen_fraction}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        # Kept out of the logger: Lightning refuses to merge a module's and a datamodule's
        # hyperparameters that share a key with different values (``seed``: the method's own
        # seed need not be the split's). The run's config.yaml and splits.json hold them all,
        # and the checkpoint still saves them.
        self.save_hyperparameters(ignore=["forget", *self.not_hyperparameters], logger=False)
        # The request's plain form is what the hyperparameters (and checkpoints) keep, set
        # after the fact: a subclass's frame (its **kwargs) would pass None for each.
        self.hparams.update({key: None for key in FLAT_KEYS} | forget.flat())
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.forget_batch_size = forget_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_seed = seed if shuffle_seed is None else shuffle_seed
        self.eval_max_samples = eval_max_samples
        self.probe_splits = probe_splits
        self.augment = augment
        self._data: ImageData | None = None
        self._splits: dict[str, tuple[Tensor, Tensor, Tensor]] | None = None
        self._restored_epoch: int | None = None  # from a resumed checkpoint, see _fit_epoch

    # ---------------------------------------------------------------- dataset
    def load(self) -> ImageData:
        """Read the dataset. Subclasses implement this; it is called once and cached."""
        raise NotImplementedError(f"{type(self).__name__} must implement load()")

    @property
    def data(self) -> ImageData:
        if self._data is None:
            data = self.load()
            channels = self.hparams.num_channels
            if channels is not None and channels != data.num_channels:
                data.train_images = _convert_channels(data.train_images, channels)
                if data.test_images is not None:
                    data.test_images = _convert_channels(data.test_images, channels)
            self._data = data
        return self._data

    @property
    def num_classes(self) -> int:
        """Number of classes (multiclass) or labels (multilabel)."""
        return len(self.data.classes)

    @property
    def num_channels(self) -> int:
        return self.data.num_channels

    @property
    def task(self) -> Task:
        return self.data.task

    @property
    def input_size(self) -> list[int]:
        """``[height, width]`` of the images."""
        return [int(v) for v in self.data.train_images.shape[-2:]]

    @property
    def normalization(self) -> list[list[float]]:
        """Per-channel ``[mean, std]`` the network normalises with: the ``normalization``
        given (the statistics your network was trained with), else those of the training
        images in [0, 1], as plain floats."""
        given = self.hparams.get("normalization")
        if given is not None:
            if len(given) != 2 or any(len(v) != self.num_channels for v in given):
                raise ValueError(f"normalization must be [mean, std] with {self.num_channels} "
                                 f"value(s) each (one per channel), got {given}")
            if any(v <= 0 for v in given[1]):
                raise ValueError(f"normalization std must be positive, got {given[1]}")
            return [[float(v) for v in given[0]], [float(v) for v in given[1]]]
        stored: Tensor | LazyImages = self.data.train_images
        if isinstance(stored, LazyImages):  # streamed: a seeded sample, not a pass over all
            stored = stored.sample(STATISTICS_SAMPLE)
        images = stored.float().div(255)
        mean = images.mean(dim=(0, 2, 3))
        std = images.std(dim=(0, 2, 3)).clamp(min=1e-3)
        return [[round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]]

    # ----------------------------------------------------------------- splits
    @property
    def class_wise(self) -> bool:
        """Whether the held-out data is divided into ``retain_test`` / ``forget_test``: for
        ``forget_classes``, and for ``forget_groups`` when the held-out data holds samples of the
        forgotten groups (an official split of other people is compared as ``unseen`` instead).
        """
        return "forget_test" in self.splits

    @property
    def eval_splits(self) -> list[str]:
        splits = ["retain", "forget", "unseen"]
        return splits + (["retain_test", "forget_test"] if self.class_wise else [])

    @property
    def test_splits(self) -> list[str]:
        """The splits of the test stage: ``eval_splits`` and :data:`POPULATION_SPLIT` (the
        validation split's held-out samples, ``validation/unseen``)."""
        return [*self.eval_splits, POPULATION_SPLIT]

    @property
    def val_splits(self) -> list[str]:
        """The splits of the validation probe (``probe_splits``), in ``eval_splits`` order."""
        if self.probe_splits == "all":
            return self.eval_splits
        needed = {"forget", self.mia_nonmember_split, self.heldout_split}
        return [split for split in self.eval_splits if split in needed]

    @property
    def heldout_split(self) -> str:
        """The split of the held-out accuracy of the remaining data (NoMUS's test accuracy):
        ``retain_test`` for class-wise requests, else ``unseen``."""
        return "retain_test" if self.class_wise else "unseen"

    @property
    def mia_nonmember_split(self) -> str:
        """The split whose samples the attack treats as non-members: for class-wise requests the
        held-out samples of the forgotten classes (like compared with like), else ``unseen``."""
        return "forget_test" if self.class_wise else "unseen"

    @property
    def splits(self) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """``{split: (images, targets, ids)}``; computed once, deterministically from ``seed``."""
        if self._splits is None:
            self._splits = make_splits(self.data, self._follow_up or self.forget_request,
                                       seed=self.seed,
                                       unseen_fraction=self.hparams.unseen_fraction,
                                       val_fraction=self.hparams.val_fraction)
        return self._splits

    @property
    def has_official_validation(self) -> bool:
        """Whether the dataset has a validation split of its own (FER2013's PublicTest); else
        ``val_fraction`` of the held-out data is carved off as the validation split."""
        return self.data.val_images is not None and self.data.val_targets is not None

    def split_ids(self) -> dict[str, list[int]]:
        """Sample ids of every split (training ids index the training set; ``unseen`` and the
        ``*_test`` splits index the held-out set, or the training set when carved from it;
        ``validation/*`` splits index the dataset's validation set, or the held-out set's index
        when carved from it: ``validation_ids_index`` in ``splits.json``)."""
        return {name: ids.tolist() for name, (_, _, ids) in self.splits.items()}

    def setup(self, stage: str | None = None) -> None:
        _ = self.splits  # resolve (and validate) the request before any work starts
        if self.trainer is not None and stage != "predict":
            self._check_attack_sizes(stage)  # a run would attack: refuse one that cannot
        if self.trainer is not None:
            folder = self.trainer.log_dir or self.trainer.default_root_dir
            self._write_splits(Path(folder) / "splits.json")

    def _attack_sizes(self, stage: str) -> dict[str, tuple[int, int]]:
        """``{where: (members, non-members)}`` the membership inference attack will see: in the
        test (every sample of ``forget`` and ``mia_nonmember_split``) and, for ``fit`` /
        ``validate`` with validation on, in the validation probe (its sources, bounded by
        ``eval_max_samples``)."""
        def size(split: str, bound: int | None = None) -> int:
            n = len(self.splits[split][2]) if split in self.splits else 0
            return n if bound is None else min(n, bound)

        nonmember = self.mia_nonmember_split
        sizes = {"test": (size("forget"), size(nonmember))}
        trainer = self.trainer
        probing = stage in ("fit", "validate", None) and not (
            trainer is not None and stage == "fit" and not trainer.limit_val_batches)
        if probing:
            bound = self.eval_max_samples
            sizes["validation probe"] = (size(self.probe_source("forget"), bound),
                                         size(self.probe_source(nonmember), bound))
        return sizes

    def _check_attack_sizes(self, stage: str | None) -> None:
        """Refuse, before any training, a run whose membership inference attack cannot run: it
        needs at least 2 members (forget samples) and 2 non-members. Only at the setup of a run
        (a trainer attached): a datamodule used on its own to inspect splits attacks nothing."""
        nonmember = self.mia_nonmember_split
        for where, (members, non_members) in self._attack_sizes(stage or "fit").items():
            if min(members, non_members) >= MIN_ATTACK_SAMPLES:
                continue
            bounded = where != "test" and self.eval_max_samples is not None and \
                self.eval_max_samples < MIN_ATTACK_SAMPLES
            if bounded:
                fix = f"set eval_max_samples to at least {MIN_ATTACK_SAMPLES} (or null)"
            elif members < MIN_ATTACK_SAMPLES:
                fix = (f"forget at least {MIN_ATTACK_SAMPLES} training samples (e.g. "
                       f"forget_count: {MIN_ATTACK_SAMPLES}, more ids, classes or groups)")
            elif where != "test":
                fix = (f"give the validation split more {nonmember} samples (a larger "
                       "val_fraction, or a validation split of the dataset's own)")
            else:
                fix = (f"give the {nonmember} split more held-out samples (a larger "
                       "unseen_fraction, another held-out split) or change the forget request")
            raise ValueError(
                f"the membership inference attack ({where}) would get {members} forget "
                f"sample(s) (members) and {non_members} {nonmember} sample(s) (non-members); it "
                f"needs at least {MIN_ATTACK_SAMPLES} of each (one to fit, one to test): {fix}")

    def small_sample_warnings(self, test_size: float = 0.1, balance: bool = True,
                              stage: str = "test") -> list[str]:
        """Warnings about evaluations too small to be precise, for the run's report: where the
        membership inference attack cannot honour ``test_size`` (fewer than ``1 / test_size``
        samples per class: each test fold then holds one member and one non-member, or the
        fold size is clamped), with the counts. ``stage`` ``"test"`` covers the test's attack,
        ``"fit"`` also the validation probe's. Empty when every attack is large enough.

        Args:
            test_size: the attack's ``test_size`` (``MembershipInferenceAttack.test_size``).
            balance: the attack's ``balance``: members and non-members are subsampled to the
                smaller count first.
            stage: ``"test"`` or ``"fit"``.
        """
        from unlearn_pl.metrics.attack import _test_counts

        out = []
        for where, (members, non_members) in self._attack_sizes(stage).items():
            if min(members, non_members) < MIN_ATTACK_SAMPLES:
                continue  # setup refuses these runs
            if balance:
                members = non_members = min(members, non_members)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _test_counts(non_members, members, test_size)
            out += [f"{where}: {w.message}" for w in caught]
        return out

    def requests(self) -> list[dict[str, Any]]:
        """Every request in order, this one last: ``{"request": {key: value}, "ids": [...],
        "time": ..., "checkpoint": ...}`` with the ids each one added to the forget set, when it
        was made and the checkpoint its run produced (filled when a fit ends)."""
        follow_up = self._follow_up
        earlier = follow_up.earlier if follow_up is not None else []
        forgotten = set(follow_up.forgotten) if follow_up is not None else set()
        new = [i for i in self.split_ids()["forget"] if i not in forgotten]
        return [*earlier, {"request": self.forget_request.flat(), "ids": new, **self._request}]

    @rank_zero_only
    def _write_splits(self, path: Path) -> None:
        held_out = "test" if self.data.test_images is not None else "train"
        validation = "validation" if self.has_official_validation else held_out
        if self._request["time"] is None:
            self._request["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = {"held_out_ids_index": held_out, "validation_ids_index": validation,
                  "datamodule": type(self).__name__, "hparams": dict(self.hparams),
                  "requests": self.requests(), "splits": self.split_ids()}
        atomic_write_text(path, json.dumps(record))
        self._splits_file = path

    def teardown(self, stage: str) -> None:
        """After a fit: record in ``splits.json`` the checkpoint the run produced (its last
        checkpoint, else the first checkpoint callback's best)."""
        callbacks = getattr(self.trainer, "checkpoint_callbacks", []) if self.trainer else []
        produced = next((c.last_model_path for c in callbacks if c.last_model_path), None) or \
            next((c.best_model_path for c in callbacks if c.best_model_path), None)
        path = getattr(self, "_splits_file", None)
        if stage == "fit" and produced and path is not None:
            self._request["checkpoint"] = str(Path(produced).resolve())
            self._write_splits(path)

    # ---------------------------------------------------------------- loaders
    def train_transform(self) -> Callable[[Tensor], Tensor] | None:
        """Augmentation of training loaders: padded random crop and horizontal flip (CIFAR
        style). Subclasses override for data where flips are wrong (digits)."""
        size = self.data.train_images.shape[-1]
        return v2.Compose([v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect"),
                           v2.RandomHorizontalFlip()])

    def dataset(self, split: str, *, train: bool = False,
                max_samples: int | None = None) -> ImageTensorDataset:
        """The dataset of one split; ``train`` adds augmentation; ``max_samples`` takes a seeded
        subset (the same one every time)."""
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; this run has {sorted(self.splits)}")
        images, targets, ids = self.splits[split]
        if max_samples is not None and len(ids) > max_samples:
            keep = torch.randperm(len(ids), generator=_generator(self.seed + 1))[:max_samples]
            images, targets, ids = images[keep], targets[keep], ids[keep]
        transform = self.train_transform() if train and self.augment else None
        # Augmentation seeded per (shuffle seed, epoch, draw, sample id): see dataloader().
        return ImageTensorDataset(images, targets, ids, transform,
                                  seed=self.shuffle_seed if transform is not None else None)

    def dataloader(self, split: str, *, train: bool = False, batch_size: int | None = None,
                   shuffle: bool | None = None, max_samples: int | None = None) -> DataLoader:
        """A loader over one split; methods that need an extra pass (Fisher, noise learning)
        use it directly."""
        dataset = self.dataset(split, train=train, max_samples=max_samples)
        shuffle = train if shuffle is None else shuffle
        augmented = dataset.transform is not None
        # An augmented loader always gets the sampler: it carries the epoch to the dataset.
        sampler = EpochShuffleSampler(len(dataset), self.shuffle_seed, epoch=self._fit_epoch(),
                                      shuffle=shuffle, tag_epoch=augmented) \
            if shuffle or augmented else None
        return DataLoader(dataset, batch_size=batch_size or (self.batch_size if train
                                                              else self.eval_batch_size),
                          sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def _fit_epoch(self) -> int:
        """The epoch a fit is at: the one Lightning passes to ``set_epoch``; 0 outside a fit.

        A resumed fit may build (and, with workers, prefetch from) its training loaders before
        Lightning restores its loops (``estimated_stepping_batches`` for a per-step schedule
        does), so the epoch saved in the checkpoint (:meth:`state_dict`) counts too."""
        trainer = self.trainer
        if trainer is None:
            return 0
        epoch = _processed_epochs(trainer)
        if trainer.ckpt_path is not None and self._restored_epoch is not None:
            epoch = max(epoch, self._restored_epoch)
        return epoch

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the epoch Lightning will pass to ``set_epoch`` when resuming
        from this checkpoint (see :meth:`_fit_epoch`)."""
        if self.trainer is None:
            return {}
        return {"fit_epoch": _processed_epochs(self.trainer)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_epoch = state_dict.get("fit_epoch")

    def train_loaders(self, splits: Sequence[str], epoch_split: str) -> CombinedLoader:
        """Training loaders of ``splits`` combined into dict batches ``{split: (x, y, ids)}``;
        one epoch is one pass over ``epoch_split``: shorter splits are cycled, longer ones are
        cut short (and reshuffled every epoch)."""
        loaders = {s: self.dataloader(s, train=True, batch_size=self.forget_batch_size
                                      if s == "forget" and len(splits) > 1 else self.batch_size)
                   for s in splits}
        if epoch_split not in loaders:
            raise ValueError(f"epoch_split {epoch_split!r} is not among the training splits "
                             f"{list(splits)}")
        lengths = {s: len(loader) for s, loader in loaders.items()}
        mode: Literal["max_size_cycle", "min_size"]
        if lengths[epoch_split] >= max(lengths.values()):
            mode = "max_size_cycle"
        elif lengths[epoch_split] <= min(lengths.values()):
            mode = "min_size"
        else:
            raise ValueError(f"epoch_split {epoch_split!r} must be the longest or the shortest "
                             f"loader, got lengths {lengths}")
        return CombinedLoader(loaders, mode=mode)

    def train_dataloader(self) -> CombinedLoader:
        module = self.trainer.lightning_module if self.trainer is not None else None
        splits = getattr(module, "train_splits", ("train",))
        epoch_split = getattr(module, "epoch_split", splits[0])
        return self.train_loaders(splits, epoch_split)

    def probe_source(self, split: str) -> str:
        """The split whose data the validation probe evaluates as ``split``: the validation
        split's ``unseen`` / ``*_test`` parts for held-out splits, so no decision made during
        training sees the test split (never a fallback to it); ``split`` itself for the training
        splits."""
        return f"{VALIDATION_PREFIX}{split}" if split in HELD_OUT_SPLITS else split

    def val_dataloader(self) -> list[DataLoader]:
        return [self.dataloader(self.probe_source(s), max_samples=self.eval_max_samples)
                for s in self.val_splits]

    def test_source(self, split: str) -> str:
        """The split whose data the test stage evaluates as ``split``: ``split`` itself, and the
        validation split's held-out samples as :data:`POPULATION_SPLIT`."""
        return self.probe_source("unseen") if split == POPULATION_SPLIT else split

    def test_dataloader(self) -> list[DataLoader]:
        return [self.dataloader(self.test_source(s)) for s in self.test_splits]

    def predict_dataloader(self) -> DataLoader:
        return self.dataloader("unseen")
