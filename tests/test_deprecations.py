"""The 0.1 import paths still work for one release, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(("old", "new", "name"), [
    ("unlearn_pl.compare", "unlearn_pl.benchmark", "compare"),
    ("unlearn_pl.ot", "unlearn_pl.losses", "ot_distance"),
    ("unlearn_pl.report", "unlearn_pl.callbacks", "UnlearningReport"),
])
def test_old_modules_warn_and_reexport(old: str, new: str, name: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
