"""The teacher pass: log-probs of the student's own response tokens under the privileged prompt.

Same weights as the student (methods.md), in one of three modes: `live` (the weights that generated the batch;
no extra memory), `periodic` (a frozen copy re-synced from the policy every `sync_every` steps; paper: 10) or
`fixed` (the initial weights). It runs once per rollout batch without gradients; when a full-vocabulary
divergence is needed it also keeps the teacher's last hidden states [B, T, H] (not B x T x V): the loss
projects them chunk by chunk.
"""

from __future__ import annotations

import copy

import torch

from rlsd_lab.choices import check_choice
from rlsd_lab.logprobs import TeacherStates, response_hidden, sampled_logprobs
from rlsd_lab.rollout.hf_engine import left_pad

TEACHER_MODES = ("live", "periodic", "fixed")


class TeacherPass(torch.nn.Module):
    """Holds the frozen copy for `periodic`/`fixed` (a submodule, so it moves with the policy and is checkpointed)."""

    def __init__(self, policy: torch.nn.Module, mode: str, sync_every: int = 10):
        super().__init__()
        check_choice("teacher mode", mode, TEACHER_MODES)
        self.mode, self.sync_every = mode, sync_every
        self.frozen = None if mode == "live" else copy.deepcopy(policy).eval().requires_grad_(False)

    def weights(self, policy: torch.nn.Module, step: int) -> torch.nn.Module:
        """The model to use as teacher at `step` (re-syncing the periodic copy when due)."""
        if self.mode == "live":
            return policy
        if self.mode == "periodic" and step > 0 and step % self.sync_every == 0:
            self.frozen.load_state_dict(policy.state_dict())
        return self.frozen

    @torch.no_grad()
    def run(self, teacher: torch.nn.Module, teacher_prompts: list[list[int]], response_ids: torch.Tensor,
            pad_id: int, temperature: float, chunk_size: int, keep_hidden: bool):
        """(teacher log-probs [B, T], TeacherStates or None) for `response_ids` after each teacher prompt."""
        prompt_ids, prompt_mask = left_pad(teacher_prompts, pad_id)
        device = response_ids.device
        input_ids = torch.cat([prompt_ids.to(device), response_ids], dim=1)
        attention = torch.cat([prompt_mask.to(device), torch.ones_like(response_ids)], dim=1)
        length = response_ids.shape[1]
        was_training = teacher.training
        teacher.eval()
        hidden = response_hidden(teacher, input_ids, attention, length)
        head = teacher.get_output_embeddings()
        logprobs = sampled_logprobs(head, hidden, response_ids, temperature, chunk_size)
        teacher.train(was_training)
        return logprobs, (TeacherStates(hidden, head) if keep_hidden else None)
