"""Compatibility shims applied once, when :mod:`unlearn_pl` is imported."""

from __future__ import annotations

import importlib.util
import os


def torch_autoload() -> None:
    """Entry point of the ``torch.backends`` plugin group (called by ``import torch``).

    Never raises: a failure here must not break ``import torch`` for unrelated code; importing
    ``unlearn_pl`` applies the shim again and surfaces any real problem.
    """
    try:
        ensure_torchvision_importable()
    except Exception:  # noqa: BLE001
        pass
    # (Defined before ``import torch``: when ``import unlearn_pl`` is what imports torch, torch
    # calls this while this module is still initialising; the package import applies it then.)


import torch  # noqa: E402

# Ops whose fake (meta) kernels torchvision registers at import time; without their schemas the
# import fails with "operator torchvision::nms does not exist".
_TORCHVISION_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_torchvision_lib: torch.library.Library | None = None


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work when its compiled ops do not match the installed torch.

    The PyPI torchvision wheel is built against a CUDA torch; with the CPU torch its ``_C``
    library fails to load and torchvision's import then dies registering fake kernels for ops
    that were never defined. When (and only when) the library cannot be loaded, define the
    schemas of those ops so the import succeeds. Detection, segmentation and other code that
    really calls the compiled ops stays unavailable; nothing in unlearn_pl uses them.

    Harmless where torchvision's ops load: then nothing is defined. Must run before anything
    imports torchvision (torchmetrics and lightning do), which is why ``unlearn_pl/__init__``
    calls it first.

    Returns:
        ``True`` if the schemas had to be defined, ``False`` otherwise.
    """
    global _torchvision_lib
    if _torchvision_lib is not None:
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = list(spec.submodule_search_locations)[0]
    libraries = [f for f in os.listdir(folder) if f.startswith("_C.") and not f.endswith(".py")]
    for name in libraries:
        try:
            torch.ops.load_library(os.path.join(folder, name))
            return False
        except (OSError, RuntimeError):
            continue
    _torchvision_lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
    for schema in _TORCHVISION_OP_SCHEMAS.values():
        _torchvision_lib.define(schema)
    return True



def jsonargparse_function_class_paths() -> None:
    """Let a config give a function with its own ``init_args`` as a ``class_path`` inside a
    module's ``init_args`` (``network: {class_path: torchvision.models.resnet50, init_args:
    {num_classes: 10}}``) and still take command-line overrides of the module.

    jsonargparse 4.53, re-parsing such a config when a later argument changes the module
    (``--model.init_args.original ...``), passes ``linked_targets`` on to
    ``add_function_arguments``, which does not take it, and the parse fails. The wrapper drops
    it; jsonargparse applies ``linked_targets`` itself afterwards. Applied by the CLI, once;
    nothing is changed where ``add_function_arguments`` takes the argument.
    """
    import functools
    import inspect

    import jsonargparse

    for cls in (jsonargparse.ArgumentParser, *jsonargparse.ArgumentParser.__mro__[1:]):
        original = cls.__dict__.get("add_function_arguments")
        if original is None or getattr(original, "_drops_linked_targets", False):
            continue
        parameters = inspect.signature(original).parameters
        if "linked_targets" in parameters or any(p.kind is p.VAR_KEYWORD
                                                 for p in parameters.values()):
            continue

        def add_function_arguments(self, function, *args, linked_targets=None,  # type: ignore[no-untyped-def]
                                   __original=original, **kwargs):
            return __original(self, function, *args, **kwargs)

        functools.update_wrapper(add_function_arguments, original)
        add_function_arguments._drops_linked_targets = True  # type: ignore[attr-defined]
        setattr(cls, "add_function_arguments", add_function_arguments)  # noqa: B010
