"""Lightning callbacks: how a method trains mid-run (DLFD's dynamic forgetting, SalUn's saliency
mask, usable with any method), when it stops (:class:`StopWhenForgotten`) and the report a test
run writes."""

from unlearn_pl.callbacks.dynamic_forgetting import DynamicForgetting
from unlearn_pl.callbacks.report import UnlearningReport
from unlearn_pl.callbacks.stopping import StopWhenForgotten
from unlearn_pl.methods.saliency import SaliencyMask

__all__ = ["DynamicForgetting", "SaliencyMask", "StopWhenForgotten", "UnlearningReport"]
