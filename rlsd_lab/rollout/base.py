"""What every rollout engine takes and returns, so that the trainer never depends on which engine ran."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy decoding. `n` samples are drawn per prompt (G in GRPO)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class RolloutBatch:
    """B = prompts x n rows. Prompts are left-padded, responses right-padded, so prompt+response is contiguous.

    `logprobs` are the sampling log-probs of the sampled tokens under the temperature-scaled full softmax
    (before top-p filtering), i.e. exactly what the trainer recomputes; 0 where `response_mask` is 0.
    """

    prompt_ids: torch.Tensor  # [B, P] long
    prompt_mask: torch.Tensor  # [B, P] long
    response_ids: torch.Tensor  # [B, T] long
    response_mask: torch.Tensor  # [B, T] float, 1 up to and including the stop token (eos)
    logprobs: torch.Tensor  # [B, T] float
    finished: torch.Tensor  # [B] bool, True when a stop token was produced within max_new_tokens

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        response_attention = torch.ones_like(self.response_ids)  # pads after eos are never read as context
        return torch.cat([self.prompt_mask, response_attention], dim=1)

    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(dim=1)

    def rows(self, index) -> RolloutBatch:
        return RolloutBatch(self.prompt_ids[index], self.prompt_mask[index], self.response_ids[index],
                            self.response_mask[index], self.logprobs[index], self.finished[index])


def concat_rollouts(batches: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """One batch of the rows of `batches`, prompts left-padded and responses right-padded to the widest (positions
    come from the attention mask, so extra left padding changes no log-prob)."""
    prompt_width = max(b.prompt_ids.shape[1] for b in batches)
    response_width = max(b.response_ids.shape[1] for b in batches)

    def left(t: torch.Tensor, value) -> torch.Tensor:
        return torch.nn.functional.pad(t, (prompt_width - t.shape[1], 0), value=value)

    def right(t: torch.Tensor, value) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, response_width - t.shape[1]), value=value)

    return RolloutBatch(torch.cat([left(b.prompt_ids, pad_id) for b in batches]),
                        torch.cat([left(b.prompt_mask, 0) for b in batches]),
                        torch.cat([right(b.response_ids, pad_id) for b in batches]),
                        torch.cat([right(b.response_mask, 0) for b in batches]),
                        torch.cat([right(b.logprobs, 0) for b in batches]),
                        torch.cat([b.finished for b in batches]))


class RolloutEngine(ABC):
    """Samples responses for a list of tokenised prompts."""

    @abstractmethod
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch: ...

    def sync_weights(self, model) -> None:
        """Engines holding their own copy of the policy (vLLM) load `model`'s current weights; the HF engine samples
        from the trainer's model itself."""
