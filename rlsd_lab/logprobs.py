"""Log-probs of given response tokens under a causal LM, projected to the vocabulary chunk by chunk.

Only [B, T] results are kept: each chunk's [B, chunk, V] logits live for one chunk, and under autograd the chunk
is recomputed in backward (activation checkpointing), so no B x T x V tensor is ever stored. That matters at
real vocabularies (150k); the embedded model has 99 tokens. The same chunk loop evaluates a full-vocabulary
teacher-student divergence when one is asked for (OPSD), from the teacher's stored hidden states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.utils.checkpoint import checkpoint


class ResponseScores(NamedTuple):
    logprobs: torch.Tensor  # [B, T] log P(y_t)
    entropy: torch.Tensor  # [B, T]
    divergence: torch.Tensor | None  # [B, T] when a divergence was asked for


class TeacherStates(NamedTuple):
    """The teacher's last hidden states at the response positions, and the head that projects them."""

    hidden: torch.Tensor  # [B, T, H]
    head: torch.nn.Module


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as the rollout engine used them."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def response_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int):
    """[B, T, H] last hidden states whose projections predict the last `response_length` tokens.

    With gradients, through the whole model's forward: under fsdp (rlsd_lab/sharding.py) that forward gathers the
    embedding, final norm and head, which the chunks below then project with. It projects only the last position
    (`logits_to_keep=1`), and collecting the layer outputs costs no memory: backward keeps them anyway. Without
    gradients they would pile up, so the decoder alone runs (under fsdp inside `gathered`). No KV cache: a scoring
    pass never reuses one, and gradient checkpointing drops it (with a warning) anyway.
    """
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
              "position_ids": position_ids_from_mask(attention_mask), "use_cache": False}
    if torch.is_grad_enabled():
        hidden = model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]  # the normalised one
    else:
        hidden = model.get_decoder()(**inputs).last_hidden_state
    return hidden[:, -response_length - 1:-1]  # the state at t-1 predicts token t


def vocab_logprobs(head: torch.nn.Module, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.log_softmax(head(hidden).float() / temperature, dim=-1)


@torch.no_grad()
def sampled_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float,
                     chunk_size: int) -> torch.Tensor:
    """[B, T] log P(targets) from hidden states, chunk by chunk, without gradients."""
    return torch.cat([vocab_logprobs(head, hidden[:, s:s + chunk_size], temperature)
                      .gather(-1, targets[:, s:s + chunk_size, None]).squeeze(-1)
                      for s in range(0, targets.shape[1], chunk_size)], dim=1)


def _chunk_scores(hidden, targets, head, temperature, teacher_hidden, teacher_head, divergence_fn):
    logprobs = vocab_logprobs(head, hidden, temperature)
    sampled = logprobs.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
    if divergence_fn is None:
        return sampled, entropy
    with torch.no_grad():
        teacher = vocab_logprobs(teacher_head, teacher_hidden, temperature)
    return sampled, entropy, divergence_fn(logprobs, teacher)


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int,
                      temperature: float = 1.0, chunk_size: int = 256, teacher: TeacherStates | None = None,
                      divergence_fn: Callable | None = None) -> ResponseScores:
    """log P(y_t), entropy and optionally divergence_fn(student, teacher) for the last `response_length` tokens.

    `temperature` divides the logits exactly as the sampler did, so the ratio to the rollout log-probs is 1.
    """
    hidden = response_hidden(model, input_ids, attention_mask, response_length)
    targets = input_ids[:, -response_length:]
    head = model.get_output_embeddings()
    pieces: list[tuple] = []
    for start in range(0, response_length, chunk_size):
        window = slice(start, start + chunk_size)
        teacher_hidden = teacher.hidden[:, window] if teacher is not None else None
        args = (hidden[:, window], targets[:, window], head, temperature, teacher_hidden,
                teacher.head if teacher is not None else None, divergence_fn)
        pieces.append(checkpoint(_chunk_scores, *args, use_reentrant=False) if torch.is_grad_enabled()
                      else _chunk_scores(*args))
    columns = list(zip(*pieces))
    divergence = torch.cat(columns[2], dim=1) if divergence_fn is not None else None
    return ResponseScores(torch.cat(columns[0], dim=1), torch.cat(columns[1], dim=1), divergence)
