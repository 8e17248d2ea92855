"""The teacher pass: log-probs of the student's own response tokens under the privileged prompt.

Same weights as the student (methods.md), in one of four modes: `live` (the weights that generated the batch;
no extra memory), `periodic` (a frozen copy re-synced from the policy every `sync_every` steps; paper: 10),
`fixed` (the initial weights; for a LoRA policy the base model with the adapter disabled, no copy) or `ema` (a
copy moved toward the policy by `ema_rate` at every step: SDPO). Or, mode `external`, another model altogether
(OPD: rlsd_lab/external_teacher.py), held frozen and left out of checkpoints. It runs once
per rollout batch without gradients, encoding each teacher prompt once per group; when a full-vocabulary
divergence is needed it also keeps the teacher's last hidden states [B, T, H] (not B x T x V): the loss
projects them chunk by chunk.
"""

from __future__ import annotations

import torch

from rlsd_lab.choices import check_choice
from rlsd_lab.config import TEACHER_MODES
from rlsd_lab.logprobs import HiddenStates, TokenScorer, position_ids_from_mask
from rlsd_lab.models import has_adapter, initial_weights
from rlsd_lab.rollout.hf_engine import left_pad
from rlsd_lab.rollout.kv_cache import sampling_cache


class TeacherPass(torch.nn.Module):
    """Holds the frozen copy for `periodic`/`fixed`/`ema` (a submodule, so it moves with the policy and is
    checkpointed), or the external model (a submodule too, dropped from checkpoints by the RLModule).

    A LoRA policy's `fixed` teacher is a view of the policy (models.AdapterDisabled): nothing to hold or checkpoint.
    """

    def __init__(self, policy: torch.nn.Module, mode: str, sync_every: int = 10, ema_rate: float = 0.05,
                 external: torch.nn.Module | None = None):
        super().__init__()
        check_choice("teacher mode", mode, TEACHER_MODES)
        self.mode, self.sync_every, self.ema_rate = mode, sync_every, ema_rate
        if mode in ("periodic", "ema") and has_adapter(policy):
            raise ValueError(f"method.teacher.mode={mode} is not supported with model.lora.enabled=true: use fixed "
                             "(the base model, adapter disabled) or live")
        if (mode == "external") != (external is not None):
            raise ValueError("an external teacher model is given exactly when method.teacher.mode=external")
        self.frozen = external if mode == "external" else None if mode == "live" else initial_weights(policy)
        self.ema_step = 0  # the step the EMA copy last moved at

    def weights(self, policy: torch.nn.Module, step: int) -> torch.nn.Module:
        """The model to use as teacher at `step` (re-syncing the periodic copy when due, moving the EMA once per
        step: a resumed run continues it from the checkpointed copy)."""
        if self.mode == "live":
            return policy
        if self.mode == "periodic" and step > 0 and step % self.sync_every == 0:
            self.frozen.load_state_dict(policy.state_dict())
        if self.mode == "ema" and step > self.ema_step:
            with torch.no_grad():
                for teacher, current in zip(self.frozen.parameters(), policy.parameters()):
                    teacher.lerp_(current.detach(), self.ema_rate)
            self.ema_step = step
        return self.frozen

    @torch.no_grad()
    def run(self, teacher: torch.nn.Module, *, teacher_prompts: list[list[int]], response_ids: torch.Tensor,
            group_size: int, pad_id: int, scorer: TokenScorer, keep_hidden: bool
            ) -> tuple[torch.Tensor, HiddenStates | None]:
        """(teacher log-probs [B, T], HiddenStates or None) for `response_ids` after their teacher prompts.

        `teacher_prompts` holds one prompt per group: rows of `response_ids` come `group_size` at a time per
        prompt. Each teacher prompt is encoded once and its KV cache repeated for its group, then one pass over
        the responses continues from it.
        """
        device = response_ids.device
        prompt_ids, prompt_mask = (t.to(device) for t in left_pad(teacher_prompts, pad_id))
        rows, length = response_ids.shape
        was_training = teacher.training
        teacher.eval()
        decoder = teacher.get_decoder()
        cache = sampling_cache(teacher.config, prompt_ids.shape[1] + length, group_size)
        positions = position_ids_from_mask(prompt_mask)
        last_prompt_state = decoder(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                                    past_key_values=cache, use_cache=True).last_hidden_state[:, -1:]
        hidden = [last_prompt_state.repeat_interleave(group_size, dim=0)]  # predicts the first response token
        if length > 1:
            attention = torch.cat([prompt_mask.repeat_interleave(group_size, dim=0),
                                   torch.ones_like(response_ids[:, :-1])], dim=1)
            response_positions = (positions[:, -1:].repeat_interleave(group_size, dim=0) + 1
                                  + torch.arange(length - 1, device=device))
            hidden.append(decoder(input_ids=response_ids[:, :-1], attention_mask=attention,
                                  position_ids=response_positions, past_key_values=cache,
                                  use_cache=True).last_hidden_state)
        states = HiddenStates(torch.cat(hidden, dim=1), teacher.get_output_embeddings())
        logprobs = scorer.sampled(states, response_ids)
        teacher.train(was_training)
        return logprobs, (states if keep_hidden else None)
