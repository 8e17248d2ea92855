"""A KV cache for sampling: one buffer per layer sized for the whole rollout, prompts prefilled once per group.

`DynamicCache` concatenates every layer's keys and values at every decoding step (quadratic copying), and
sampling G responses per prompt normally prefills each prompt G times. This layer writes into a preallocated
buffer and returns a view of its filled part, and its first write (the prefill of the distinct prompts) is
repeated G times into the buffer.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    def __init__(self, capacity: int, repeats: int):
        super().__init__()
        self.capacity, self.repeats, self.length = capacity, repeats, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        batch, heads, _, dim = key_states.shape
        self.key_buffer = key_states.new_empty(batch * self.repeats, heads, self.capacity, dim)
        self.value_buffer = value_states.new_empty(batch * self.repeats, heads, self.capacity, dim)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if not self.is_initialized:
            # The prefill attends over its own (distinct-prompt) batch; the buffer keeps each prompt G times.
            self.lazy_initialization(key_states, value_states)
            self.key_buffer[:, :, :end] = key_states.repeat_interleave(self.repeats, dim=0)
            self.value_buffer[:, :, :end] = value_states.repeat_interleave(self.repeats, dim=0)
            self._expose(end)
            return key_states, value_states
        self.key_buffer[:, :, self.length:end] = key_states
        self.value_buffer[:, :, self.length:end] = value_states
        self._expose(end)
        return self.keys, self.values

    def _expose(self, end: int) -> None:
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]


def sampling_cache(config, capacity: int, repeats: int) -> DynamicCache:
    """A cache for `capacity` positions whose prefill batch is repeated `repeats` times."""
    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer(capacity, repeats) for _ in cache.layers]
    return cache
