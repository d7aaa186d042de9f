"""Forget requests: what a person asks to be forgotten, as one typed argument.

Each request validates itself when it is made and selects the training samples to forget
(:meth:`ForgetRequest.select`). In YAML a request is given as ``class_path`` / ``init_args``::

    data:
      class_path: unlearn_pl.data.DigitsDataModule
      init_args:
        forget:
          class_path: unlearn_pl.data.ForgetClasses
          init_args: {classes: [3]}

The datamodule keeps each request's plain form (:meth:`ForgetRequest.flat`, e.g.
``{"forget_classes": [3]}``) in its hyperparameters, so checkpoints hold plain values only.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from unlearn_pl.data.core import Task

__all__ = ["FollowUp", "ForgetClasses", "ForgetCount", "ForgetFirst", "ForgetFraction",
           "ForgetGroups", "ForgetIds", "ForgetRequest", "build_request", "read_id_file",
           "read_requests", "request_from_flat"]


class ForgetRequest:
    """Base class of forget requests.

    Subclasses set :attr:`key` (the datamodule's plain argument of the same request) and
    implement :meth:`_mask`.
    """

    #: The datamodule's plain (pre-0.2) argument of this request, e.g. ``forget_classes``.
    key: ClassVar[str]
    #: Whether it forgets whole classes (the held-out data is then split per class).
    class_wise: ClassVar[bool] = False

    def value(self) -> Any:
        """The request's plain value (what :attr:`key` takes)."""
        raise NotImplementedError

    def flat(self) -> dict[str, Any]:
        """``{key: value}``: the plain form the datamodule stores in its hyperparameters."""
        return {self.key: self.value()}

    def select(self, targets: Tensor, pool: Tensor, *, task: Task = "multiclass",
               num_classes: int, groups: Tensor | None = None, seed: int = 0) -> Tensor:
        """The sorted ids of the training samples to forget.

        Args:
            targets: targets of the whole training set.
            pool: ids of the training samples the network is trained on (the rest were carved
                off as held-out data and cannot be forgotten).
            task: multiclass or multilabel.
            num_classes: number of classes.
            groups: group/identity id per training sample (``ForgetGroups``).
            seed: seed of a random draw (``ForgetFraction``, ``ForgetCount``).

        Raises:
            ValueError: the request names classes, groups or ids that do not exist, or selects
                no sample, or every training sample.
        """
        in_pool = torch.zeros(len(targets), dtype=torch.bool)
        in_pool[pool] = True
        mask = self._mask(targets, pool, in_pool, task, num_classes, groups, seed)
        forget = mask.nonzero().flatten()
        if len(forget) == 0:
            raise ValueError("the forget request selects no training sample: check the classes, "
                             "ids, groups or fraction you asked to forget")
        if len(forget) == len(pool):
            raise ValueError("the forget request selects every training sample, which leaves no "
                             "retain data: forget a subset")
        return forget

    def _mask(self, targets: Tensor, pool: Tensor, in_pool: Tensor, task: Task,
              num_classes: int, groups: Tensor | None, seed: int) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value()!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.flat() == self.flat()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, json.dumps(self.value())))


def _ids_of(values: Any, name: str) -> list[int]:
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: name at least one {name.split('_')[1][:-1]} to "
                         "forget")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise ValueError(f"{name} must be integers, got {bad[0]!r}")
    return values


class ForgetClasses(ForgetRequest):
    """Forget every training sample of whole classes (class-wise unlearning).

    Args:
        classes: the class ids to forget.
    """

    key = "forget_classes"
    class_wise = True

    def __init__(self, classes: list[int]) -> None:
        self.classes = _ids_of(classes, "forget_classes")

    def value(self) -> list[int]:
        return list(self.classes)

    def _mask(self, targets: Tensor, pool: Tensor, in_pool: Tensor, task: Task,
              num_classes: int, groups: Tensor | None, seed: int) -> Tensor:
        if task != "multiclass":
            raise ValueError("forget_classes needs a multiclass task; for multilabel data use "
                             "forget_fraction, forget_count, forget_ids or forget_groups")
        bad = [c for c in self.classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"forget_classes {bad} out of range: the dataset has classes "
                             f"0..{num_classes - 1}")
        return in_pool & torch.isin(targets, torch.tensor(self.classes))


class ForgetGroups(ForgetRequest):
    """Forget every training sample of some groups (people, identities, families).

    Args:
        groups: the group ids to forget (the dataset's group/identity ids).
    """

    key = "forget_groups"

    def __init__(self, groups: list[int]) -> None:
        self.groups = _ids_of(groups, "forget_groups")

    def value(self) -> list[int]:
        return list(self.groups)

    def _mask(self, targets: Tensor, pool: Tensor, in_pool: Tensor, task: Task,
              num_classes: int, groups: Tensor | None, seed: int) -> Tensor:
        if groups is None:
            raise ValueError("forget_groups needs a dataset with group/identity ids; this one "
                             "has none: use forget_classes or forget_ids")
        unknown = sorted(set(self.groups) - set(groups[pool].tolist()))
        if unknown:
            raise ValueError(f"forget_groups {unknown[:10]} do not exist in the training data")
        return in_pool & torch.isin(groups, torch.tensor(self.groups))


class _RandomDraw(ForgetRequest):
    def _count(self, pool: Tensor) -> int:
        raise NotImplementedError

    def _mask(self, targets: Tensor, pool: Tensor, in_pool: Tensor, task: Task,
              num_classes: int, groups: Tensor | None, seed: int) -> Tensor:
        count = self._count(pool)
        if count > len(pool):
            raise ValueError(f"forget_count {count} exceeds the {len(pool)} training samples")
        generator = torch.Generator().manual_seed(seed)
        chosen = pool[torch.randperm(len(pool), generator=generator)[:count]]
        mask = torch.zeros(len(targets), dtype=torch.bool)
        mask[chosen] = True
        return mask


class ForgetFraction(_RandomDraw):
    """Forget a seeded random share of the training samples (sample-wise unlearning).

    Args:
        fraction: the share in (0, 1), drawn with the datamodule's ``seed``.
    """

    key = "forget_fraction"

    def __init__(self, fraction: float) -> None:
        if not 0 < fraction < 1:
            raise ValueError(f"forget_fraction must lie in (0, 1), got {fraction}; use "
                             "forget_classes to forget whole classes")
        self.fraction = float(fraction)

    def value(self) -> float:
        return self.fraction

    def _count(self, pool: Tensor) -> int:
        return round(self.fraction * len(pool))


class ForgetCount(_RandomDraw):
    """Forget a seeded random number of training samples.

    Args:
        count: how many, drawn with the datamodule's ``seed``.
    """

    key = "forget_count"

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"forget_count must be at least 1, got {count}")
        self.count = int(count)

    def value(self) -> int:
        return self.count

    def _count(self, pool: Tensor) -> int:
        return self.count


class ForgetFirst(ForgetRequest):
    """Forget the first ``count`` training samples in the dataset's own order (MUFAC's fixed
    forget set).

    Args:
        count: how many.
    """

    key = "forget_first"

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"forget_first must be at least 1, got {count}")
        self.count = int(count)

    def value(self) -> int:
        return self.count

    def _mask(self, targets: Tensor, pool: Tensor, in_pool: Tensor, task: Task,
              num_classes: int, groups: Tensor | None, seed: int) -> Tensor:
        if self.count >= len(pool):
            raise ValueError(f"forget_first {self.count} leaves no retain data: the training "
                             f"set has {len(pool)} samples")
        mask = torch.zeros(len(targets), dtype=torch.bool)
        mask[pool.sort().values[: self.count]] = True
        return mask


class ForgetIds(ForgetRequest):
    """Forget the training samples a deletion-request file lists (:func:`read_id_file`).

    The file is read once, when the request is made: malformed ids fail before any data is
    read.

    Args:
        path: the file: a JSON list or integers separated by whitespace or commas.
    """

    key = "forget_ids"

    def __init__(self, path: str) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"forget_ids file {path} does not exist")
        self.path = str(path)
        self.ids = read_id_file(path)

    @classmethod
    def of(cls, ids: list[int]) -> ForgetIds:
        """The request of ids given in code rather than in a file."""
        request = cls.__new__(cls)
        request.path, request.ids = "<ids given in code>", [int(i) for i in ids]
        return request

    def value(self) -> str:
        return self.path

    def _mask(self, targets: Tensor, pool: Tensor, in_pool: Tensor, task: Task,
              num_classes: int, groups: Tensor | None, seed: int) -> Tensor:
        ids = self.ids
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"forget_ids lists ids {duplicates[:10]} more than once; list each "
                             "sample once")
        out_of_range = [i for i in ids if not 0 <= i < len(targets)]
        if out_of_range:
            raise ValueError(f"forget_ids {out_of_range[:10]} out of range: training sample ids "
                             f"are 0..{len(targets) - 1}")
        held_out = [i for i in ids if not in_pool[i]]
        if held_out:
            raise ValueError(f"forget_ids {held_out[:10]} are unknown training samples: they "
                             "belong to the held-out (unseen) split carved from train; see "
                             "splits.json for the ids the network was trained on")
        mask = torch.zeros(len(targets), dtype=torch.bool)
        mask[torch.tensor(ids, dtype=torch.long)] = True
        return mask


class FollowUp(ForgetRequest):
    """A request made after earlier ones, applied to the network they produced: the samples
    they forgot stay forgotten (out of retain, in the forget set that is audited), and a
    random draw (``ForgetFraction``, ``ForgetCount``) is drawn from what remains.

    The forget split is the union of every request; the retrain reference of a follow-up is
    trained without all of them.

    Args:
        request: the new request.
        earlier: the earlier requests in order, as :func:`read_requests` gives them
            (``{"request": {key: value}, "ids": [...], ...}``).
        trained_on: the ids the earlier runs' networks were trained on (their ``train`` split),
            checked against this run's.
    """

    def __init__(self, request: ForgetRequest, earlier: Sequence[Mapping[str, Any]],
                 trained_on: Sequence[int]) -> None:
        kinds = {_kind(entry["request"]) for entry in earlier}
        if kinds != {_kind(request.flat())}:
            raise ValueError(f"a {type(request).__name__} cannot follow {sorted(kinds)} "
                             "requests: successive requests must all forget classes, all "
                             "groups, or all samples (fraction, count, ids, first)")
        self.request = request
        self.earlier = [dict(entry) for entry in earlier]
        self.forgotten = sorted({int(i) for entry in earlier for i in entry["ids"]})
        self.trained_on = [int(i) for i in trained_on]
        self.key = request.key  # type: ignore[misc]
        self.class_wise = request.class_wise  # type: ignore[misc]

    def value(self) -> Any:
        return self.request.value()

    def flat(self) -> dict[str, Any]:
        """The cumulative classes or groups for class- and group-wise requests (the held-out
        data is divided by them); the new request's plain form otherwise."""
        flat = self.request.flat()
        if self.key in ("forget_classes", "forget_groups"):
            return {self.key: sorted({*self._earlier_values(), *flat[self.key]})}
        return flat

    def select(self, targets: Tensor, pool: Tensor, *, task: Task = "multiclass",
               num_classes: int, groups: Tensor | None = None, seed: int = 0) -> Tensor:
        if sorted(pool.tolist()) != sorted(self.trained_on):
            raise ValueError("the earlier requests were unlearned from a network trained on "
                             "other samples (another dataset, seed or unseen_fraction): give "
                             "this run the data config of the earlier run (its config.yaml)")
        again = sorted(set(self.request.value()) & set(self._earlier_values())) \
            if self.key in ("forget_classes", "forget_groups") else \
            sorted(set(getattr(self.request, "ids", [])) & set(self.forgotten))
        if again:
            what = self.key.split("_")[1]
            raise ValueError(f"the request names {what} {again[:10]} that earlier requests "
                             f"already forgot: ask only for new {what}")
        forgotten = torch.tensor(self.forgotten, dtype=torch.long)
        remaining = pool[~torch.isin(pool, forgotten)]
        new = self.request.select(targets, remaining, task=task, num_classes=num_classes,
                                  groups=groups, seed=seed)
        return torch.cat([forgotten, new]).unique().sort().values

    def _earlier_values(self) -> list[Any]:
        return [v for entry in self.earlier for v in entry["request"].get(self.key, [])]


def _kind(flat: Mapping[str, Any]) -> str:
    key = next(iter(flat))
    return key if key in ("forget_classes", "forget_groups") else "samples"


def read_requests(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The requests a run's ``splits.json`` lists, in order (``{"request": {key: value},
    "ids": [...], "time": ..., "checkpoint": ...}``), and the record itself.

    A ``splits.json`` written before 0.3 lists no requests: its one request is read from its
    hyperparameters and forget split.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a ``splits.json`` of an unlearn_pl run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"previous_requests file {path} does not exist: give the "
                                "splits.json of the run that unlearned the earlier request "
                                "(in its log folder, beside config.yaml)")
    try:
        record = json.loads(path.read_text())
        splits = record["splits"]
        requests = record.get("requests")
        if requests is None:
            flat = {k: v for k, v in record["hparams"].items() if k in FLAT_KEYS and v is not None}
            requests = [{"request": flat, "ids": splits["forget"], "time": None,
                         "checkpoint": None}]
        for entry in requests:
            if not (isinstance(entry["request"], dict) and len(entry["request"]) == 1
                    and entry["request"].keys() <= set(FLAT_KEYS)):
                raise ValueError(f"unknown request {entry['request']!r}")
            entry["ids"] = [int(i) for i in entry["ids"]]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not the splits.json of an unlearn_pl run ({error}): give "
                         "the splits.json in the earlier run's log folder") from None
    return requests, record


_BY_KEY: dict[str, Any] = {  # key -> request class (each takes its one value)
    cls.key: cls for cls in (ForgetClasses, ForgetGroups, ForgetFraction, ForgetCount,
                             ForgetFirst, ForgetIds)}
FLAT_KEYS = tuple(_BY_KEY)


def request_from_flat(key: str, value: Any) -> ForgetRequest:
    """The typed request of a plain ``forget_*`` argument, e.g. ``("forget_classes", [3])``."""
    if key not in _BY_KEY:
        raise ValueError(f"unknown forget request {key!r}: one of {list(FLAT_KEYS)}")
    return _BY_KEY[key](value)


def build_request(config: ForgetRequest | Mapping[str, Any]) -> ForgetRequest:
    """A request from its YAML form ``{"class_path": ..., "init_args": {...}}`` (a bare class
    name such as ``ForgetClasses`` is looked up here), or the request itself."""
    if isinstance(config, ForgetRequest):
        return config
    if not isinstance(config, Mapping) or "class_path" not in config:
        raise ValueError(f"a forget request is a ForgetRequest or {{class_path, init_args}}, got "
                         f"{config!r}; e.g. {{class_path: unlearn_pl.data.ForgetClasses, "
                         "init_args: {classes: [3]}}")
    path = str(config["class_path"])
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name, None) if module else \
        {c.__name__: c for c in _BY_KEY.values()}.get(name)
    if not (isinstance(cls, type) and issubclass(cls, ForgetRequest)):
        raise ValueError(f"{path} is not a forget request: use one of "
                         f"{sorted(c.__name__ for c in _BY_KEY.values())}")
    return cls(**dict(config.get("init_args") or {}))


def read_id_file(path: str | os.PathLike[str]) -> list[int]:
    """Read sample ids from a deletion-request file: a JSON list or integers separated by
    whitespace or commas (one per line is the usual form).

    Every id must be written as an integer: ``4.9``, ``5.0``, ``1e3``, ``true`` or ``"5"`` are
    refused (naming the value and the file), never rounded or cast to a sample.
    """
    fix = "write one integer sample id per line, or a JSON list of integers"
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError as error:
        raise ValueError(f"forget_ids file {path} is not a text file ({error}); {fix}") from None
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"forget_ids file {path} starts like a JSON list but is not valid "
                             f"JSON ({error}); {fix}") from None
        # bool is a subclass of int: ``true`` would silently become sample 1.
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise ValueError(f"forget_ids file {path} holds {json.dumps(bad[0])}, which is not an "
                             f"integer sample id ({len(bad)} such value(s)); {fix}")
        ids = list(values)
    else:
        tokens = text.replace(",", " ").split()
        bad = [t for t in tokens if not re.fullmatch(r"[+-]?[0-9]+", t)]
        if bad:
            raise ValueError(f"forget_ids file {path} holds {bad[0]!r}, which is not an integer "
                             f"sample id ({len(bad)} such value(s)); {fix}")
        ids = [int(t) for t in tokens]
    if not ids:
        raise ValueError(f"forget_ids file {path} holds no sample id; {fix}")
    return ids


def resolve_forget_set(targets: Tensor, pool: Tensor, *, task: Task = "multiclass",
                       num_classes: int, groups: Tensor | None = None,
                       forget_classes: Sequence[int] | None = None,
                       forget_fraction: float | None = None, forget_count: int | None = None,
                       forget_ids: Sequence[int] | None = None,
                       forget_groups: Sequence[int] | None = None,
                       forget_first: int | None = None, seed: int = 0) -> Tensor:
    """Turn a plain forget request into the sorted ids of the training samples to forget
    (:meth:`ForgetRequest.select <unlearn_pl.data.requests.ForgetRequest.select>` of its typed
    request; ``forget_ids`` here are the ids themselves, not a file).

    Args:
        targets: targets of the whole training set.
        pool: ids of the training samples the network is trained on.
        task: multiclass or multilabel (class-wise requests need classes).
        num_classes: number of classes.
        groups: group/identity id per training sample, for ``forget_groups``.
        forget_classes: the request's classes; or one of the next five.
        forget_fraction: a seeded random share.
        forget_count: a seeded random number.
        forget_ids: training sample ids.
        forget_groups: group ids.
        forget_first: the first N in the dataset's order.
        seed: seed of the random sample-wise draw.

    Raises:
        ValueError: not exactly one request, or one that names classes, groups or ids that do
            not exist, or selects no sample, or every training sample.
    """
    given: dict[str, Any] = {k: v for k, v in (("forget_classes", forget_classes),
                               ("forget_fraction", forget_fraction),
                               ("forget_count", forget_count), ("forget_groups", forget_groups),
                               ("forget_first", forget_first)) if v is not None}
    if forget_ids is not None:
        given["forget_ids"] = forget_ids
    if len(given) != 1:
        raise ValueError(f"give exactly one forget request, got {sorted(given) or 'none'}")
    ((key, value),) = given.items()
    request = (ForgetIds.of(list(value)) if key == "forget_ids"
               else request_from_flat(key, value))
    return request.select(targets, pool, task=task, num_classes=num_classes, groups=groups,
                          seed=seed)
