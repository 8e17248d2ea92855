"""Scoring response tokens under a causal LM: the one place that projects hidden states to the vocabulary.

Only [B, T] results are kept: each chunk's [B, chunk, V] logits live for one chunk, and under autograd the chunk
is recomputed in backward (activation checkpointing), so no B x T x V tensor is ever stored. That matters at
real vocabularies (150k); the embedded model has 99 tokens. `TokenScorer` binds the sampling temperature and the
chunk size once; every consumer (the update, the teacher pass, the diagnostics, the credit) goes through its
`over_chunks` loop.
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


class HiddenStates(NamedTuple):
    """A model's last hidden states at the response positions (the state at t-1 predicts token t), and the head
    that projects them to the vocabulary."""

    hidden_B_T_H: torch.Tensor  # [B, T, H]
    head: torch.nn.Module

    def rows(self, rows: torch.Tensor) -> HiddenStates:
        return HiddenStates(self.hidden_B_T_H[rows], self.head)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as the rollout engine used them."""
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


def response_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int):
    """[B, T, H] last hidden states whose projections predict the last `response_length` tokens.

    With gradients, through the whole model's forward: under fsdp (rlsd_lab/sharding.py) that forward gathers the
    embedding, final norm and head, which the chunks then project with. It projects only the last position
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
    return hidden[:, -response_length - 1:-1]


def response_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int
                    ) -> HiddenStates:
    return HiddenStates(response_hidden(model, input_ids, attention_mask, response_length),
                        model.get_output_embeddings())


class TokenScorer:
    """Log-probs, entropies and divergences of response tokens at `temperature`, `chunk_size` positions at a time.

    The temperature divides the logits exactly as the sampler did, so the ratio to the rollout log-probs is 1.
    """

    def __init__(self, temperature: float = 1.0, chunk_size: int = 256):
        self.temperature, self.chunk_size = temperature, chunk_size

    def vocab_logprobs(self, states: HiddenStates, window: slice) -> torch.Tensor:
        """[B, chunk, V] log-probs of the positions in `window`."""
        return torch.log_softmax(states.head(states.hidden_B_T_H[:, window]).float() / self.temperature, dim=-1)

    def over_chunks(self, score_chunk: Callable[[slice], tuple[torch.Tensor, ...]], length: int,
                    *, checkpointed: bool = False) -> list[torch.Tensor]:
        """`score_chunk(window)` for each window of `chunk_size` positions out of `length`, its [B, chunk] outputs
        concatenated into [B, length] ones. `checkpointed`: each chunk is recomputed in backward, not stored."""
        pieces = []
        for start in range(0, length, self.chunk_size):
            window = slice(start, start + self.chunk_size)
            pieces.append(checkpoint(score_chunk, window, use_reentrant=False) if checkpointed
                          else score_chunk(window))
        return [torch.cat(column, dim=1) for column in zip(*pieces)]

    def score(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int,
              teacher: HiddenStates | None = None, divergence: Callable | None = None) -> ResponseScores:
        """log P(y_t), entropy and, with a `teacher`, divergence(student_V, teacher_V) for the last
        `response_length` tokens of `input_ids`; with gradients when autograd is on."""
        student = response_states(model, input_ids, attention_mask, response_length)
        targets = input_ids[:, -response_length:]
        divergence = divergence if teacher is not None else None

        def score_chunk(window):
            logprobs = self.vocab_logprobs(student, window)
            sampled = logprobs.gather(-1, targets[:, window, None]).squeeze(-1)
            entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
            if divergence is None:
                return sampled, entropy
            with torch.no_grad():
                teacher_logprobs = self.vocab_logprobs(teacher, window)
            return sampled, entropy, divergence(logprobs, teacher_logprobs)

        columns = self.over_chunks(score_chunk, response_length, checkpointed=torch.is_grad_enabled())
        return ResponseScores(columns[0], columns[1], columns[2] if divergence is not None else None)

    @torch.no_grad()
    def sampled(self, states: HiddenStates, targets: torch.Tensor) -> torch.Tensor:
        """[B, T] log P(targets) from hidden states, without gradients."""
        return self.over_chunks(lambda window: (self.vocab_logprobs(states, window).gather(
            -1, targets[:, window, None]).squeeze(-1),), targets.shape[1])[0]

    @torch.no_grad()
    def kl(self, student: HiddenStates, teacher: HiddenStates, response_mask: torch.Tensor) -> float:
        """Mean over response tokens of KL(P_S || P_T), full vocabulary."""
        def kl_chunk(window):
            s, t = self.vocab_logprobs(student, window), self.vocab_logprobs(teacher, window)
            return ((s.exp() * (s - t)).sum(-1) * response_mask[:, window],)

        total = float(self.over_chunks(kl_chunk, response_mask.shape[1])[0].sum())
        return total / max(float(response_mask.sum()), 1.0)

    def divergence_at_sampled(self, divergence: Callable, student: HiddenStates, teacher: HiddenStates,
                              targets: torch.Tensor, sampled_logprobs: torch.Tensor) -> torch.Tensor:
        """[B, T] divergence(student_V, teacher_V) as a function of `sampled_logprobs` alone: the student's
        distribution is fixed except at the sampled token, whose log-prob is `sampled_logprobs` (with its grad).
        Its derivative is the divergence's with respect to log P_S(y_t), the divergence's credit of that token."""
        def chunk(window):
            with torch.no_grad():
                s, t = self.vocab_logprobs(student, window), self.vocab_logprobs(teacher, window)
            s = s.scatter(-1, targets[:, window, None], sampled_logprobs[:, window, None])
            return (divergence(s, t),)

        return self.over_chunks(chunk, targets.shape[1])[0]


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int,
                      temperature: float = 1.0, chunk_size: int = 256) -> ResponseScores:
    """`TokenScorer(temperature, chunk_size).score(...)`: log-probs and entropy of the last `response_length`
    tokens, for callers that score once."""
    return TokenScorer(temperature, chunk_size).score(model, input_ids, attention_mask, response_length)
