"""Named settings of the comparison runner (``configs/settings/<name>.yaml``) and the discovery
of its data, method and trainer configs."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

CONFIGS = Path(str(resources.files("unlearn_pl") / "configs"))
REFERENCES = ("original", "retrain")


class CompareInputError(ValueError):
    """An unknown setting, method or trainer config, or bad seeds: raised before any training."""


@dataclass(frozen=True)
class Setting:
    """How a named setting is run beyond its data config: the fields of
    ``configs/settings/<name>.yaml``.

    Args:
        reference_epochs: epochs of the original and retrain networks (``None``: the epochs of
            ``configs/methods/original.yaml`` / ``retrain.yaml``).
        num_threads: torch intra-op threads for the whole run (``None``: torch's default).
        overrides: arguments added to every run of the setting.
        method_overrides: extra arguments per method config name.
        references: the reference bank's size when ``--references`` is not given (0: no
            privacy audit).
        ensemble_bank: train a seed's missing bank members as one ensemble
            (:func:`~unlearn_pl.evaluation.bank.train_bank`); ``False``: one run each, which is
            faster for large networks on a CPU (grouped convolutions there cost more than the
            separate ones they replace).
        note: why the setting differs from the plain configs, shown in ``results.md``.
    """

    reference_epochs: int | None = None
    num_threads: int | None = None
    references: int = 0
    ensemble_bank: bool = True
    overrides: tuple[str, ...] = ()
    method_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    note: str = ""

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Setting:
        """A setting from its YAML file (``configs/settings/<name>.yaml``: the fields above;
        argument lists as YAML lists of strings)."""
        raw = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CompareInputError(f"setting file {path}: unknown key(s) {unknown}; the keys "
                                    f"are {sorted(known)}")
        overrides = raw.get("method_overrides") or {}
        return cls(**{**raw, "overrides": tuple(str(a) for a in raw.get("overrides") or ()),
                      "method_overrides": {name: tuple(str(a) for a in args)
                                           for name, args in overrides.items()}})


def load_setting(setting: str, configs_dir: str | os.PathLike[str] | None = None) -> Setting:
    """The named setting (``<configs_dir>/settings/<setting>.yaml``), or the plain configs'
    defaults (:class:`Setting`) for a data config path or a name without a settings file."""
    path = Path(configs_dir or CONFIGS) / "settings" / f"{setting}.yaml"
    return Setting.from_yaml(path) if not _is_yaml_path(setting) and path.is_file() else Setting()


# --------------------------------------------------------------------------- discovery
def default_configs_dir() -> Path:
    """The folder of the shipped configs (``data/``, ``methods/``, ``trainer/``): inside the
    installed package, and the same files as a checkout's top-level ``configs/``. Copy it to
    edit the configs or to give ``unlearn-pl fit --config`` their paths."""
    return CONFIGS


def available_settings(configs_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the data configs in ``configs/data`` (each one is a setting)."""
    return sorted(p.stem for p in (Path(configs_dir or CONFIGS) / "data").glob("*.yaml"))


def available_method_configs(configs_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the method configs in ``configs/methods``, without the original and retrain
    references (they are always run)."""
    found = (p.stem for p in (Path(configs_dir or CONFIGS) / "methods").glob("*.yaml"))
    return sorted(name for name in found if name not in REFERENCES)


def _is_yaml_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) and Path(value).is_file()


def _resolve_setting(setting: str, configs_dir: Path) -> tuple[str, Path]:
    if _is_yaml_path(setting):
        return Path(setting).stem, Path(setting).resolve()
    path = configs_dir / "data" / f"{setting}.yaml"
    if not path.is_file():
        raise CompareInputError(f"unknown setting {setting!r}: choose one of "
                                f"{available_settings(configs_dir)} or give the path of a data "
                                "config YAML file")
    return setting, path


def _resolve_method(name: str, known: Sequence[str], configs_dir: Path) -> Path | None:
    if _is_yaml_path(name):
        return Path(name).resolve()
    return configs_dir / "methods" / f"{name}.yaml" if name in known else None


def _resolve_methods(methods: Sequence[str], configs_dir: Path) -> dict[str, tuple[Path, ...]]:
    """``{name: config files}`` of the methods asked for: a shipped config's name, a config's
    path, ``all``, or ``BASE+OVERRIDE.yaml[+...]``, configs composed in order (a sweep's small
    override files on a shipped config; the name is the last part's)."""
    known = available_method_configs(configs_dir)
    names: list[str] = []
    for method in methods:
        names.extend(known if method == "all" else [method])
    resolved: dict[str, tuple[Path, ...]] = {}
    unknown = []
    for name in names:
        if name in REFERENCES:
            raise CompareInputError(f"{name!r} is not an unlearning method: the original and "
                                    "retrain references are always run; choose among "
                                    + ", ".join(known))
        parts = [_resolve_method(part, known, configs_dir) for part in name.split("+")]
        if any(part is None for part in parts):
            unknown.append(name)
            continue
        resolved.setdefault(Path(name.split("+")[-1]).stem,
                            tuple(part for part in parts if part is not None))
    if unknown:
        raise CompareInputError(f"unknown method(s) {unknown}: choose among {known}, 'all', "
                                "the path of a method config YAML file, or BASE+OVERRIDE.yaml")
    for paths in resolved.values():
        class_path = None
        for path in paths:
            model = (yaml.safe_load(path.read_text()) or {}).get("model")
            class_path = model.get("class_path", class_path) if isinstance(model, dict) else \
                class_path
        if class_path is None:
            raise CompareInputError(f"method config {' + '.join(map(str, paths))} has no "
                                    "model.class_path: a method config names its "
                                    "UnlearningModule class (see configs/methods/finetune.yaml)")
    return resolved


def _bank_size(spec: Setting, references: int | None) -> int:
    """K, the retrain networks of a seed's bank: ``references``, or the setting's default;
    refused when it cannot give a per-example test (1, or negative)."""
    references = spec.references if references is None else references
    if references == 1 or references < 0:
        raise CompareInputError(f"--references {references}: the audit needs a bank of at least "
                                "2 retrain networks (0: no bank)")
    return references


#: How a tuned config's header names the split it was tuned on (``unlearn-pl-tune`` writes it).
TUNED_ON = "Tuned on split seed"


def tuned_split_seed(path: Path) -> int | None:
    """The split seed a tuned config was tuned on, from its header (``None``: not named)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        found = re.search(rf"{TUNED_ON} (-?\d+)", line)
        if found:
            return int(found.group(1))
    return None


def _tuned_recipes(method_configs: dict[str, tuple[Path, ...]], setting: str,
                   configs_dir: Path) -> tuple[dict[str, tuple[Path, ...]], list[str]]:
    """The methods asked for by a shipped config's name, each replaced by its tuned recipe for
    the setting where one exists (``configs/tuned/<setting>/<name>.yaml``, written by
    ``unlearn-pl-tune``); paths and composed configs stay as given. Returns the configs and the
    names that now run a tuned recipe."""
    tuned_dir = configs_dir / "tuned" / setting
    out, tuned = dict(method_configs), []
    for name, paths in method_configs.items():
        recipe = tuned_dir / f"{name}.yaml"
        if paths == (configs_dir / "methods" / f"{name}.yaml",) and recipe.is_file():
            out[name] = (recipe,)
            tuned.append(name)
    return out, tuned


def _resolve_trainer(trainer: str, configs_dir: Path) -> Path:
    if _is_yaml_path(trainer):
        return Path(trainer).resolve()
    path = configs_dir / "trainer" / f"{trainer}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (configs_dir / "trainer").glob("*.yaml"))
        raise CompareInputError(f"unknown trainer config {trainer!r}: choose one of {names} or "
                                "give the path of a trainer config YAML file")
    return path


#: The shipped settings, ``configs/settings/*.yaml`` by name.
SETTINGS: Mapping[str, Setting] = {p.stem: Setting.from_yaml(p)
                                   for p in sorted((CONFIGS / "settings").glob("*.yaml"))}
