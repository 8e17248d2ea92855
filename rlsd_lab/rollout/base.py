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


class RolloutEngine(ABC):
    """Samples responses for a list of tokenised prompts."""

    @abstractmethod
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> RolloutBatch: ...

    def sync_weights(self, model) -> None:
        """Engines holding their own copy of the policy (vLLM) load `model`'s current weights; the HF engine samples
        from the trainer's model itself."""
