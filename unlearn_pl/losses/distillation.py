"""Knowledge-distillation divergence shared by the teacher-student methods (SCRUB, Bad
Teaching)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                    multilabel: bool = False) -> Tensor:
    """Per-sample KL(teacher ‖ student) of temperature-softened predictions (Hinton et al. 2015).

    Multiclass: ``KL(softmax(t/T) ‖ softmax(s/T))`` summed over classes. Multilabel: the KL of
    the independent Bernoulli predictions ``sigmoid(t/T)`` and ``sigmoid(s/T)`` of each label,
    averaged over labels (as the task loss averages its per-label BCE). Computed in float32.
    The caller applies any ``T²`` factor.

    Args:
        student_logits: ``N×C`` logits of the network being trained.
        teacher_logits: ``N×C`` logits of the reference (no gradient is taken through them).
        temperature: softening temperature ``T > 0``.
        multilabel: per-label sigmoid instead of a softmax over classes.

    Returns:
        ``N`` non-negative divergences.
    """
    student = student_logits.float() / temperature
    teacher = teacher_logits.detach().float() / temperature
    if multilabel:
        p_teacher = torch.sigmoid(teacher)
        kl = (p_teacher * (F.logsigmoid(teacher) - F.logsigmoid(student))
              + (1 - p_teacher) * (F.logsigmoid(-teacher) - F.logsigmoid(-student)))
        return kl.mean(1)
    return F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), reduction="none",
                    log_target=True).sum(1)
