"""Lightning callbacks: how a method trains mid-run (DLFD's dynamic forgetting, SalUn's saliency
mask, usable with any method) and the report a test run writes."""

from unlearn_pl.callbacks.dynamic_forgetting import DynamicForgetting
from unlearn_pl.callbacks.report import UnlearningReport
from unlearn_pl.methods.saliency import SaliencyMask

__all__ = ["DynamicForgetting", "SaliencyMask", "UnlearningReport"]
