"""The external teacher of on-policy distillation (OPD): a separate, frozen, stronger model that scores the
student's own samples token by token. No reference in its prompt: it simply knows more.

`method.teacher.model` names a local transformers directory; when it is null, `method.teacher.embedded` (a model
config, conf/model/tiny_teacher.yaml) is built once and cached like the base policy, its premise (greedy accuracy
>= 0.95 on student prompts) proven at build time. Distillation compares the two models' distributions token by
token, so the vocabularies must be the same: a teacher with another one is refused before training, naming both.
"""

from __future__ import annotations

from pathlib import Path

from rlsd_lab.bootstrap import embedded_task, ensure_base_policy
from rlsd_lab.models import load_policy, weights_dtype


def external_teacher_path(teacher_cfg, task_cfg) -> Path:
    if teacher_cfg.model:
        return Path(teacher_cfg.model)
    if teacher_cfg.embedded is None:
        raise ValueError("method.teacher.mode=external needs method.teacher.model (a local transformers directory) or "
                         "method.teacher.embedded (a model config such as conf/model/tiny_teacher.yaml)")
    return ensure_base_policy(teacher_cfg.embedded, embedded_task(task_cfg))


def vocabulary_problem(student_tokenizer, teacher_tokenizer, student_model, teacher_model) -> str | None:
    """Why the teacher's vocabulary cannot be distilled into the student's, or None when it can."""
    sizes = (len(student_tokenizer), len(teacher_tokenizer))
    if sizes[0] != sizes[1] or student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        return (f"the external teacher's vocabulary ({sizes[1]} tokens) differs from the student's ({sizes[0]} "
                "tokens): token-level distillation needs the same tokenizer")
    rows = tuple(model.get_output_embeddings().weight.shape[0] for model in (student_model, teacher_model))
    if rows[0] != rows[1]:
        return (f"the external teacher's output layer has {rows[1]} rows, the student's {rows[0]}: the same tokenizer, "
                "but padded differently, so the full-vocabulary distributions do not line up")
    return None


def load_external_teacher(teacher_cfg, task_cfg, student_model, student_tokenizer, accelerator: str):
    """The frozen teacher model (eval mode, no gradients), after the vocabulary check."""
    dtype = weights_dtype(teacher_cfg.dtype, accelerator, frozen=True, key="method.teacher.dtype")
    path = external_teacher_path(teacher_cfg, task_cfg)
    model, tokenizer = load_policy(path, dtype)
    problem = vocabulary_problem(student_tokenizer, tokenizer, student_model, model)
    if problem:
        raise ValueError(f"method.teacher.model={path}: {problem}")
    return model.eval().requires_grad_(False)
