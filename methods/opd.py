"""OPD: on-policy distillation from an external, stronger teacher (Agarwal et al., GKD, arXiv 2306.13649; the
seed's "OPD"). The teacher is a separate frozen model with the student's vocabulary and no reference in its prompt
(rlsd_lab/external_teacher.py); it scores the student's own samples token by token.

`form: sampled_token` (default): A_hat_t = log pi_T(y_t) - log pi_S(y_t), the per-token reverse KL as a per-token
advantage (no discount, as in Thinking Machines' recipe), inside the shared clipped surrogate. `form: divergence`:
full-vocabulary JSD_beta on the student's tokens, OPSD's divergence code, projected chunk by chunk. This is OPSD's
machinery with another teacher, so the class is OPSD's with the external-teacher defaults; the difference the
RLSD paper draws (Fig. 3c) is in the curves: the on-policy teacher-student KL keeps falling for OPD.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.base import MethodConfig, register_objective, teacher_field
from methods.opsd import FORMS, OPSD, DistillationConfig
from rlsd_lab.config import TeacherConfig, choice


@dataclass
class OPDConfig(MethodConfig, DistillationConfig):
    form: str = choice("sampled_token", FORMS)
    teacher: TeacherConfig = teacher_field("external", "none")


@register_objective("opd", OPDConfig)
class OPD(OPSD):
    def __init__(self, cfg, loss_cfg):
        if cfg.teacher.mode != "external":
            raise ValueError(f"method=opd distills an external teacher: method.teacher.mode must be external, got "
                             f"{cfg.teacher.mode} (a privileged teacher of the policy's own weights is method=opsd)")
        super().__init__(cfg, loss_cfg)
