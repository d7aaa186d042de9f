"""Lightning callbacks: how a method trains mid-run (DLFD's dynamic forgetting) and the report
a test run writes."""

from unlearn_pl.callbacks.dynamic_forgetting import DynamicForgetting
from unlearn_pl.callbacks.report import UnlearningReport

__all__ = ["DynamicForgetting", "UnlearningReport"]
